//! Extended attributes of any file type, addressed as
//! `/proc/self/fd/DIRFD/NAME` with the non-following `l*xattr` calls: this
//! works for symlinks and device nodes (which cannot be opened safely) and
//! for names deeper than PATH_MAX, since the path is always short. An
//! entry given by its own descriptor (empty name) uses the `f*xattr` calls.
//! Listing, done for every file by scans and surveys, uses
//! `listxattrat(2)` from the directory descriptor where the kernel has it.

use super::{cname, raw};
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU8, Ordering};

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

/// Whether the kernel has `listxattrat(2)` (Linux 6.13): unknown until
/// first tried, then yes or no for the process.
static LIST_AT: AtomicU8 = AtomicU8::new(0);
const LIST_AT_UNKNOWN: u8 = 0;
const LIST_AT_YES: u8 = 1;
const LIST_AT_NO: u8 = 2;

/// `listxattrat(2)`'s number where it is 465 (the generic table, shared
/// by the architectures below; alpha and mips number it otherwise and use
/// the /proc path). The libc crate does not name it yet.
const SYS_LISTXATTRAT: Option<libc::c_long> = if cfg!(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "powerpc64",
    target_arch = "s390x",
    target_arch = "loongarch64"
)) {
    Some(465)
} else {
    None
};

/// Lists `name` in `dir` with `listxattrat(2)`, without following a
/// symlink: a lookup from the directory descriptor, where the /proc path
/// costs a walk through procfs and its magic link (about 40% more per
/// file, and a survey or scan lists every file). None where the kernel
/// (or a seccomp filter) does not offer the call.
fn list_at(dir: BorrowedFd, name: &std::ffi::CStr, buf: &mut [u8]) -> Option<isize> {
    let number = SYS_LISTXATTRAT?;
    if LIST_AT.load(Ordering::Relaxed) == LIST_AT_NO {
        return None;
    }
    let n = unsafe {
        libc::syscall(
            number,
            raw(dir),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
        )
    } as isize;
    if n < 0 {
        let errno = io::Error::last_os_error().raw_os_error();
        if matches!(errno, Some(libc::ENOSYS | libc::EPERM)) {
            if LIST_AT.load(Ordering::Relaxed) == LIST_AT_UNKNOWN {
                LIST_AT.store(LIST_AT_NO, Ordering::Relaxed);
            }
            return None;
        }
    }
    LIST_AT.store(LIST_AT_YES, Ordering::Relaxed);
    Some(n)
}

/// The raw name list of `name` in `dir` (NUL-separated): by
/// `listxattrat(2)` where the kernel has it, else as [`Target`] says.
fn raw_names_at(dir: BorrowedFd, name: &[u8]) -> io::Result<Vec<u8>> {
    if !name.is_empty() {
        let c = cname(name)?;
        let mut unsupported = false;
        let r = growing_list(|buf| {
            list_at(dir, &c, buf).unwrap_or_else(|| {
                unsupported = true;
                -1
            })
        });
        if !unsupported {
            return r;
        }
    }
    raw_names(&Target::new(dir, name)?)
}

/// The raw name list of `t` (NUL-separated).
fn raw_names(t: &Target) -> io::Result<Vec<u8>> {
    growing_list(|buf| t.list(buf))
}

/// Calls a list call with a buffer grown until the list fits; no list
/// where the file system has no extended attributes.
fn growing_list(mut list: impl FnMut(&mut [u8]) -> isize) -> io::Result<Vec<u8>> {
    let mut names = vec![0u8; 4096];
    loop {
        let n = list(&mut names);
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
    let raw = raw_names_at(dir, name)?;
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
    let names = raw_names_at(dir, name)?;
    let mut out = Vec::new();
    if names.is_empty() {
        return Ok(out);
    }
    let t = Target::new(dir, name)?;
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
