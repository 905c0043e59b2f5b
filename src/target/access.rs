//! Reaching entries of a target that a non-root owner has made read-only
//! or unreadable: what an apply may open up (its own entries only), for
//! both finishes.

use crate::fsx;
use anyhow::Result;
use std::io;
use std::os::fd::BorrowedFd;

/// Whether the process may change an entry owned by `uid` without help.
pub fn ours(uid: u32) -> bool {
    static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let euid = *EUID.get_or_init(fsx::euid);
    euid == 0 || uid == euid
}

/// Runs `op` on `name` in `dir`; if it fails for want of permission and
/// the entry is ours, adds the owner bits `add` and tries once more.
pub fn with_access<T>(
    dir: BorrowedFd,
    name: &[u8],
    add: u32,
    mut op: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    match op() {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) && !fsx::is_root() => {
            let st = fsx::stat_at(dir, name)?;
            if !ours(st.st_uid) {
                return Err(e);
            }
            fsx::chmod_at(dir, name, (st.st_mode & 0o7777) | add)?;
            op()
        }
        r => r,
    }
}

/// Gives the owner write permission on a directory it needs to change.
pub fn make_writable(dir: BorrowedFd) -> Result<()> {
    if fsx::is_root() {
        return Ok(());
    }
    let st = fsx::fstat(dir)?;
    if st.st_mode & 0o200 == 0 && ours(st.st_uid) {
        fsx::chmod_at(dir, b"", (st.st_mode & 0o7777) | 0o200)?;
    }
    Ok(())
}
