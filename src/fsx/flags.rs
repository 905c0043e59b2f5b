//! Linux inode flags (`chattr`/`lsattr`: `FS_IOC_GETFLAGS`/`SETFLAGS`) and
//! the project id (`FS_IOC_FSGETXATTR`/`FSSETXATTR`).
//!
//! Only regular files and directories carry them here: reading a flag
//! needs an open descriptor, and opening a device or fifo is not something
//! a dump may do. The bits are [`crate::fileflags`]'s.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

pub use crate::fileflags::*;

/// The kernel's `struct fsxattr` (linux/fs.h), 28 bytes.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

const FS_IOC_FSGETXATTR: libc::c_ulong =
    nix::request_code_read!(b'X', 31, std::mem::size_of::<FsXattr>()) as libc::c_ulong;
const FS_IOC_FSSETXATTR: libc::c_ulong =
    nix::request_code_write!(b'X', 32, std::mem::size_of::<FsXattr>()) as libc::c_ulong;

/// Whether an error means the file system has no such flags (not a
/// failure of this file).
pub fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTTY | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS)
    )
}

/// The recorded flags of an open file or directory; 0 where the file
/// system has none.
pub fn get(fd: BorrowedFd) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int (the kernel's ABI, despite
    // the `long` in the request code) into `v`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS as _, &mut v) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if unsupported(&e) { Ok(0) } else { Err(e) };
    }
    Ok(v as u32 & RECORDED)
}

/// Sets the recorded flags of an open file or directory to `flags`,
/// keeping the file system's own bits as they are.
pub fn set(fd: BorrowedFd, flags: u32) -> io::Result<()> {
    let mut v: libc::c_int = 0;
    // SAFETY: as in `get`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS as _, &mut v) } < 0 {
        let e = io::Error::last_os_error();
        // No flags at all on this file system: only "none" can be set.
        return if unsupported(&e) && flags == 0 {
            Ok(())
        } else {
            Err(e)
        };
    }
    let want = (v as u32 & !RECORDED) | (flags & RECORDED);
    if want == v as u32 {
        return Ok(());
    }
    let w = want as libc::c_int;
    // SAFETY: FS_IOC_SETFLAGS reads one int from `w`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_SETFLAGS as _, &w) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The project id of an open file or directory; 0 where the file system
/// has none.
pub fn project(fd: BorrowedFd) -> io::Result<u32> {
    let mut x = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR fills the 28-byte struct.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR as _, &mut x) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if unsupported(&e) { Ok(0) } else { Err(e) };
    }
    Ok(x.projid)
}

/// Sets the project id of an open file or directory (its other extended
/// attributes kept); nothing to do when it already has it.
pub fn set_project(fd: BorrowedFd, projid: u32) -> io::Result<()> {
    let mut x = FsXattr::default();
    // SAFETY: as in `project`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR as _, &mut x) } < 0 {
        let e = io::Error::last_os_error();
        return if unsupported(&e) && projid == 0 {
            Ok(())
        } else {
            Err(e)
        };
    }
    if x.projid == projid {
        return Ok(());
    }
    x.projid = projid;
    // SAFETY: FS_IOC_FSSETXATTR reads the struct.
    if unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR as _, &x) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens the entry `name` of `dir` to read or set its flags (`None` for an
/// empty name: `dir` itself is meant). Never follows a symlink and never
/// blocks on a fifo swapped in.
pub fn open_at(
    dir: BorrowedFd,
    name: &[u8],
    is_dir: bool,
) -> io::Result<Option<std::os::fd::OwnedFd>> {
    if name.is_empty() {
        return Ok(None);
    }
    let fd = if is_dir {
        super::open_dir(dir, name)?
    } else {
        super::openat(
            dir,
            name,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
            0,
        )?
    };
    Ok(Some(fd))
}

/// The flags and project id of the entry `name` of `dir` (a regular file
/// or, with `is_dir`, a directory; `dir` itself for an empty name).
pub fn read_at(dir: BorrowedFd, name: &[u8], is_dir: bool) -> io::Result<(u32, u32)> {
    use super::AsFdBorrow;
    let owned = open_at(dir, name, is_dir)?;
    let fd = owned.as_ref().map(|f| f.as_fd_borrow()).unwrap_or(dir);
    Ok((get(fd)?, project(fd)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_codes_match_linux() {
        // linux/fs.h on x86_64 and arm64: _IOR('X', 31, struct fsxattr).
        assert_eq!(FS_IOC_FSGETXATTR, 0x801c_581f);
        assert_eq!(FS_IOC_FSSETXATTR, 0x401c_5820);
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
    }
}
