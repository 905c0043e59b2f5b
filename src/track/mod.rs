//! The change tracker (`snapdump track`).
pub mod bpf;
pub mod btf;
pub mod kernel;
pub mod programs;

use anyhow::{Context, Result};

/// The mount id of the mount holding `path` (statx `STATX_MNT_ID`).
pub fn mount_id(path: &std::path::Path) -> Result<u64> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))?;
    // SAFETY: statx writes only into `buf`, a zeroed statx the size it expects.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a writable statx buffer.
    let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_MNT_ID, &mut buf) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("cannot stat {}", path.display()));
    }
    Ok(buf.stx_mnt_id)
}
