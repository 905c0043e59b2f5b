//! Extended attributes of any file type, addressed as
//! `/proc/self/fd/DIRFD/NAME` with the non-following `l*xattr` calls: this
//! works for symlinks and device nodes (which cannot be opened safely) and
//! for names deeper than PATH_MAX, since the path is always short.

use super::{cname, raw};
use std::io;
use std::os::fd::BorrowedFd;

fn proc_path(dir: BorrowedFd, name: &[u8]) -> io::Result<std::ffi::CString> {
    let mut p = format!("/proc/self/fd/{}", raw(dir)).into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name);
    }
    cname(&p)
}

/// Reads all extended attributes of `name` in `dir` (or of `dir` itself when
/// `name` is empty), sorted by name. Attributes the caller may not read are
/// simply not listed by the kernel.
pub fn list(dir: BorrowedFd, name: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let p = proc_path(dir, name)?;
    let mut names = vec![0u8; 4096];
    let n = loop {
        let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr() as *mut _, names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for xn in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let cn = cname(xn)?;
        let mut val = vec![0u8; 256];
        loop {
            let m = unsafe { libc::lgetxattr(p.as_ptr(), cn.as_ptr(), val.as_mut_ptr() as *mut _, val.len()) };
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
    let p = proc_path(dir, name)?;
    let k = cname(key)?;
    let r = unsafe { libc::lsetxattr(p.as_ptr(), k.as_ptr(), value.as_ptr() as *const _, value.len(), 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
