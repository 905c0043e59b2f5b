//! Extended attributes of any file type, addressed as
//! `/proc/self/fd/DIRFD/NAME` with the non-following `l*xattr` calls: this
//! works for symlinks and device nodes (which cannot be opened safely) and
//! for names deeper than PATH_MAX, since the path is always short. An
//! entry given by its own descriptor (empty name) uses the `f*xattr` calls.

use super::{cname, raw};
use std::io;
use std::os::fd::BorrowedFd;

fn proc_path(dir: BorrowedFd, name: &[u8]) -> io::Result<std::ffi::CString> {
    let mut p = format!("/proc/self/fd/{}/", raw(dir)).into_bytes();
    p.extend_from_slice(name);
    cname(&p)
}

/// The calls for one target: by descriptor when `name` is empty (the
/// `l*` calls would act on the /proc magic link itself), else by path.
enum Target {
    Fd(i32),
    Path(std::ffi::CString),
}

impl Target {
    fn new(dir: BorrowedFd, name: &[u8]) -> io::Result<Target> {
        Ok(if name.is_empty() {
            Target::Fd(raw(dir))
        } else {
            Target::Path(proc_path(dir, name)?)
        })
    }
    fn list(&self, buf: &mut [u8]) -> isize {
        let (p, n) = (buf.as_mut_ptr() as *mut libc::c_char, buf.len());
        match self {
            Target::Fd(fd) => unsafe { libc::flistxattr(*fd, p, n) },
            Target::Path(c) => unsafe { libc::llistxattr(c.as_ptr(), p, n) },
        }
    }
    fn get(&self, key: &std::ffi::CStr, buf: &mut [u8]) -> isize {
        let (p, n) = (buf.as_mut_ptr() as *mut libc::c_void, buf.len());
        match self {
            Target::Fd(fd) => unsafe { libc::fgetxattr(*fd, key.as_ptr(), p, n) },
            Target::Path(c) => unsafe { libc::lgetxattr(c.as_ptr(), key.as_ptr(), p, n) },
        }
    }
    fn remove(&self, key: &std::ffi::CStr) -> i32 {
        match self {
            Target::Fd(fd) => unsafe { libc::fremovexattr(*fd, key.as_ptr()) },
            Target::Path(c) => unsafe { libc::lremovexattr(c.as_ptr(), key.as_ptr()) },
        }
    }
    fn set(&self, key: &std::ffi::CStr, value: &[u8]) -> i32 {
        let (p, n) = (value.as_ptr() as *const libc::c_void, value.len());
        match self {
            Target::Fd(fd) => unsafe { libc::fsetxattr(*fd, key.as_ptr(), p, n, 0) },
            Target::Path(c) => unsafe { libc::lsetxattr(c.as_ptr(), key.as_ptr(), p, n, 0) },
        }
    }
}

/// The raw name list of `t` (NUL-separated).
fn raw_names(t: &Target) -> io::Result<Vec<u8>> {
    let mut names = vec![0u8; 4096];
    loop {
        let n = t.list(&mut names);
        if n >= 0 {
            names.truncate(n as usize);
            return Ok(names);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    }
}

/// The names of the extended attributes of `name` in `dir`, sorted (one
/// system call where `list` needs one per attribute).
pub fn names(dir: BorrowedFd, name: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let t = Target::new(dir, name)?;
    let raw = raw_names(&t)?;
    let mut out: Vec<Vec<u8>> = raw
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| s.to_vec())
        .collect();
    out.sort();
    Ok(out)
}

/// Reads all extended attributes of `name` in `dir` (or of `dir` itself when
/// `name` is empty), sorted by name. Attributes the caller may not read are
/// simply not listed by the kernel.
pub fn list(dir: BorrowedFd, name: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let t = Target::new(dir, name)?;
    let names = raw_names(&t)?;
    let mut out = Vec::new();
    for xn in names.split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let cn = cname(xn)?;
        let mut val = vec![0u8; 256];
        loop {
            let m = t.get(&cn, &mut val);
            if m >= 0 {
                val.truncate(m as usize);
                out.push((xn.to_vec(), val));
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) if val.len() < 1 << 20 => val.resize(val.len() * 4, 0),
                // Removed between list and get: nothing to record.
                Some(libc::ENODATA) => break,
                _ => return Err(e),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Sets one extended attribute without following symlinks.
pub fn set(dir: BorrowedFd, name: &[u8], key: &[u8], value: &[u8]) -> io::Result<()> {
    let t = Target::new(dir, name)?;
    let k = cname(key)?;
    if t.set(&k, value) < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes one extended attribute without following symlinks; one that is
/// not there is not an error.
pub fn remove(dir: BorrowedFd, name: &[u8], key: &[u8]) -> io::Result<()> {
    let t = Target::new(dir, name)?;
    let k = cname(key)?;
    if t.remove(&k) < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENODATA) {
            return Err(e);
        }
    }
    Ok(())
}
