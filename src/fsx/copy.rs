//! Copies a file's contents into another file: by cloning its extents
//! (`FICLONE`: xfs, btrfs, bcachefs; the copy shares blocks until either
//! side is written), or else by an in-kernel copy of its data regions
//! (`copy_file_range`), leaving its holes holes. Used where a file must
//! become a separate inode before it is changed (an atomic incremental
//! apply changes a private copy, never the file the old tree still shows).
//! Hand-written: std's `fs::copy` neither clones first nor keeps holes.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// How a copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// The extents were shared (no data moved).
    Cloned,
    /// The data regions were copied.
    Copied,
}

/// Makes `dst` (an empty file open for writing) hold exactly the bytes of
/// `src` (open for reading), `size` bytes long.
pub fn clone_or_copy(src: BorrowedFd, dst: BorrowedFd, size: u64) -> io::Result<CopyKind> {
    // SAFETY: FICLONE takes the source descriptor as its argument and
    // touches no memory of ours.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE as _, src.as_raw_fd()) };
    if r == 0 {
        return Ok(CopyKind::Cloned);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP)
        | Some(libc::ENOTTY)
        | Some(libc::EINVAL)
        | Some(libc::EXDEV)
        | Some(libc::EPERM)
        | Some(libc::ENOSYS) => {}
        _ => return Err(e),
    }
    let mut pos: u64 = 0;
    while pos < size {
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(src.as_raw_fd(), pos as i64, libc::SEEK_DATA) };
        let (start, end) = if data < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::ENXIO) => break, // only a hole is left
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => (pos, size),
                _ => return Err(io::Error::last_os_error()),
            }
        } else {
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(src.as_raw_fd(), data, libc::SEEK_HOLE) };
            if hole < 0 {
                return Err(io::Error::last_os_error());
            }
            (data as u64, (hole as u64).min(size))
        };
        copy_range(src, dst, start, end)?;
        pos = end.max(start + 1);
    }
    crate::fsx::ftruncate(dst, size)?;
    Ok(CopyKind::Copied)
}

/// Copies bytes `[start, end)` of `src` to the same offsets of `dst`.
fn copy_range(src: BorrowedFd, dst: BorrowedFd, start: u64, end: u64) -> io::Result<()> {
    let mut off_in = start as i64;
    let mut off_out = start as i64;
    while (off_in as u64) < end {
        let want = ((end - off_in as u64) as usize).min(1 << 30);
        // SAFETY: both offsets are ours; the kernel updates them.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EXDEV) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
                    return copy_by_hand(src, dst, off_in as u64, end);
                }
                _ => return Err(e),
            }
        }
        if n == 0 {
            break; // the source is shorter than it was: the rest stays a hole
        }
    }
    Ok(())
}

/// The plain read/write loop, for file systems without copy_file_range.
fn copy_by_hand(src: BorrowedFd, dst: BorrowedFd, mut off: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while off < end {
        let want = ((end - off) as usize).min(buf.len());
        let n = crate::fsx::pread_full(src, &mut buf[..want], off)?;
        if n == 0 {
            break;
        }
        crate::fsx::pwrite_all(dst, &buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::fd::AsFd;

    #[test]
    fn a_sparse_file_is_copied_with_its_holes_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(dir.path().join("a")).unwrap();
        f.write_all(&[7u8; 10_000]).unwrap();
        f.seek(SeekFrom::Start(5 << 20)).unwrap();
        f.write_all(b"tail").unwrap();
        f.set_len((6 << 20) + 3).unwrap();
        drop(f);
        let src = std::fs::File::open(dir.path().join("a")).unwrap();
        let dst = std::fs::File::create(dir.path().join("b")).unwrap();
        let size = src.metadata().unwrap().len();
        clone_or_copy(src.as_fd(), dst.as_fd(), size).unwrap();
        drop(dst);
        assert_eq!(
            std::fs::read(dir.path().join("a")).unwrap(),
            std::fs::read(dir.path().join("b")).unwrap()
        );
    }
}
