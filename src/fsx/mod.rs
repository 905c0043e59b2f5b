//! File-system primitives, all relative to an open directory descriptor.
//!
//! Paths are never joined into one string for a system call: names may sit
//! deeper than PATH_MAX, and every component is opened with `O_NOFOLLOW`, so
//! a symlink planted in a tree (or in a stream) is never followed.

pub mod copy;
pub mod dirstack;
pub mod flags;
pub mod xattr;

use crate::tree::{Attrs, Kind, Time};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A NUL-terminated copy of a name for system calls; names never hold NUL
/// (checked when read), so this cannot fail on valid input.
pub fn cname(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Opens `name` in `dir` with `flags | O_CLOEXEC`, retrying on EINTR.
pub fn openat(dir: BorrowedFd, name: &[u8], flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let c = cname(name)?;
    loop {
        let fd =
            unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
        if fd >= 0 {
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Opens a subdirectory without following symlinks, and without updating
/// its access time where the kernel allows (reading a directory would).
pub fn open_dir(dir: BorrowedFd, name: &[u8]) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    match openat(dir, name, flags | libc::O_NOATIME, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => openat(dir, name, flags, 0),
        r => r,
    }
}

/// Opens a directory given by an ordinary path (the source root, a target).
pub fn open_dir_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = cname(path.as_os_str().as_bytes())?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let mut fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_NOATIME) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
        fd = unsafe { libc::open(c.as_ptr(), flags) };
    }
    let fd = check(fd)?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `path` (close-on-exec) with `flags`.
pub fn open_path(path: &std::path::Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = cname(path.as_os_str().as_bytes())?;
    let fd = check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The `*at` flags that act on `name` in a directory without following a
/// symlink, or on the directory itself when `name` is empty.
fn nofollow_flags(name: &[u8]) -> libc::c_int {
    libc::AT_SYMLINK_NOFOLLOW
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        }
}

/// `fstatat` without following symlinks; an empty name stats `dir` itself.
pub fn stat_at(dir: BorrowedFd, name: &[u8]) -> io::Result<libc::stat> {
    let c = cname(name)?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let flags = nofollow_flags(name);
    check(unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

/// `fstat` of an open descriptor.
pub fn fstat(fd: BorrowedFd) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// The kind and attributes of a `stat` result.
pub fn attrs_of(st: &libc::stat) -> (Option<Kind>, Attrs) {
    let t = |s: i64, n: i64| Time {
        sec: s,
        nsec: n.clamp(0, 999_999_999) as u32,
    };
    (
        Kind::from_mode(st.st_mode),
        Attrs {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            atime: t(st.st_atime, st.st_atime_nsec),
            mtime: t(st.st_mtime, st.st_mtime_nsec),
            ctime: t(st.st_ctime, st.st_ctime_nsec),
        },
    )
}

/// Reads a symlink's target.
pub fn readlink_at(dir: BorrowedFd, name: &[u8]) -> io::Result<Vec<u8>> {
    let c = cname(name)?;
    let mut buf = vec![0u8; 4097];
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr() as *mut _,
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Lists the names in a directory (without "." and ".."), sorted bytewise so
/// dumps of the same tree are laid out the same way.
pub fn read_dir_names(dir: BorrowedFd) -> io::Result<Vec<Vec<u8>>> {
    Ok(read_dir_typed(dir)?.into_iter().map(|(n, _)| n).collect())
}

/// The entries of an open directory (without `.` and `..`), sorted, each
/// with its kind where the file system's listing gives it (`d_type`; None
/// for DT_UNKNOWN): telling whether a name still holds what it held needs
/// no stat then.
pub fn read_dir_typed(dir: BorrowedFd) -> io::Result<Vec<(Vec<u8>, Option<Kind>)>> {
    use nix::dir::Type;
    let dup = check(unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    let mut d = nix::dir::Dir::from_fd(dup).map_err(io::Error::from)?;
    let mut out = Vec::new();
    for ent in d.iter() {
        let ent = ent.map_err(io::Error::from)?;
        let n = ent.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        let kind = ent.file_type().map(|t| match t {
            Type::Fifo => Kind::Fifo,
            Type::CharacterDevice => Kind::CharDev,
            Type::Directory => Kind::Dir,
            Type::BlockDevice => Kind::BlockDev,
            Type::File => Kind::File,
            Type::Symlink => Kind::Symlink,
            Type::Socket => Kind::Socket,
        });
        out.push((n.to_vec(), kind));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The data regions of an open regular file as block runs
/// `(first_block, block_count)`, found with SEEK_DATA/SEEK_HOLE so holes in
/// sparse files are neither read nor stored.
pub fn data_runs(fd: BorrowedFd, size: u64, bs: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut pos: i64 = 0;
    let raw = fd.as_raw_fd();
    while (pos as u64) < size {
        let data = unsafe { libc::lseek(raw, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENXIO) => break,
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                    // No hole support: the whole file is data.
                    return Ok(vec![(0, size.div_ceil(bs))]);
                }
                _ => return Err(e),
            }
        }
        let hole = unsafe { libc::lseek(raw, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let start = (data as u64 / bs).min(size.div_ceil(bs));
        let end = (hole as u64).min(size).div_ceil(bs);
        if end > start {
            match runs.last_mut() {
                Some(last) if last.0 + last.1 >= start => last.1 = last.1.max(end - last.0),
                _ => runs.push((start, end - start)),
            }
        }
        pos = hole.max(data + 1);
    }
    Ok(runs)
}

/// Reads exactly `buf.len()` bytes at `off`, or fewer at end of file; returns
/// how many were read.
pub fn pread_full(fd: BorrowedFd, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf[done..].as_mut_ptr() as *mut _,
                buf.len() - done,
                (off + done as u64) as i64,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(done)
}

/// Writes all of `buf` at `off`.
pub fn pwrite_all(fd: BorrowedFd, buf: &[u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                buf[done..].as_ptr() as *const _,
                buf.len() - done,
                (off + done as u64) as i64,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// Creates a directory.
pub fn mkdir_at(dir: BorrowedFd, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cname(name)?;
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) }).map(|_| ())
}

/// Creates a special file (fifo, socket node, device).
pub fn mknod_at(dir: BorrowedFd, name: &[u8], mode: u32, rdev: u64) -> io::Result<()> {
    let c = cname(name)?;
    check(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), mode, rdev) }).map(|_| ())
}

/// Creates a symlink `name` in `dir` pointing at `target`.
pub fn symlink_at(target: &[u8], dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    let t = cname(target)?;
    let c = cname(name)?;
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) }).map(|_| ())
}

/// Makes `new_name` in `new_dir` another name of `old_name` in `old_dir`
/// (never following a symlink).
pub fn link_at(
    old_dir: BorrowedFd,
    old_name: &[u8],
    new_dir: BorrowedFd,
    new_name: &[u8],
) -> io::Result<()> {
    let o = cname(old_name)?;
    let n = cname(new_name)?;
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
            0,
        )
    })
    .map(|_| ())
}

/// Removes a non-directory (`dir == false`) or an empty directory.
pub fn unlink_at(dir: BorrowedFd, name: &[u8], is_dir: bool) -> io::Result<()> {
    let c = cname(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) }).map(|_| ())
}

/// Removes `name` in `dir` and, if it is a directory, everything below it,
/// without following symlinks.
pub fn remove_tree_at(dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    // Most entries are not directories: unlink first and look only when
    // that says it is one (EISDIR; EPERM where a kernel says that), which
    // saves a stat per file of a large tree.
    match unlink_at(dir, name, false) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR | libc::EPERM)) => {}
        r => return r,
    }
    let st = stat_at(dir, name)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return unlink_at(dir, name, false);
    }
    // A read-only directory cannot have entries removed; open it up first.
    let _ = chmod_at(dir, name, 0o700);
    let sub = open_dir(dir, name)?;
    for n in read_dir_names(sub.as_fd_borrow())? {
        remove_tree_at(sub.as_fd_borrow(), &n)?;
    }
    unlink_at(dir, name, true)
}

/// Changes ownership without following symlinks.
pub fn chown_at(dir: BorrowedFd, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let c = cname(name)?;
    let flags = nofollow_flags(name);
    check(unsafe { libc::fchownat(dir.as_raw_fd(), c.as_ptr(), uid, gid, flags) }).map(|_| ())
}

/// Changes permissions of a non-symlink (`fchmodat` cannot act on links, and
/// Linux symlinks have no permissions of their own).
pub fn chmod_at(dir: BorrowedFd, name: &[u8], mode: u32) -> io::Result<()> {
    if name.is_empty() {
        return check(unsafe { libc::fchmod(dir.as_raw_fd(), mode) }).map(|_| ());
    }
    let c = cname(name)?;
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode, 0) }).map(|_| ())
}

/// Sets access and modification times to the nanosecond, on the link itself.
pub fn utimes_at(dir: BorrowedFd, name: &[u8], atime: Time, mtime: Time) -> io::Result<()> {
    let c = cname(name)?;
    let ts = [
        libc::timespec {
            tv_sec: atime.sec,
            tv_nsec: atime.nsec as i64,
        },
        libc::timespec {
            tv_sec: mtime.sec,
            tv_nsec: mtime.nsec as i64,
        },
    ];
    if name.is_empty() {
        return check(unsafe { libc::futimens(dir.as_raw_fd(), ts.as_ptr()) }).map(|_| ());
    }
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(|_| ())
}

/// Sets a file's length (restores trailing holes of sparse files).
pub fn ftruncate(fd: BorrowedFd, len: u64) -> io::Result<()> {
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len as i64) }).map(|_| ())
}

/// Flushes a file or directory to stable storage.
pub fn fsync(fd: BorrowedFd) -> io::Result<()> {
    check(unsafe { libc::fsync(fd.as_raw_fd()) }).map(|_| ())
}

/// True when the process may set any owner and create device nodes.
pub fn is_root() -> bool {
    euid() == 0
}

/// The process's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Bytes free to unprivileged users on the file system holding `fd`, or
/// None when the kernel gives no figure.
pub fn free_bytes(fd: BorrowedFd) -> Option<u64> {
    // SAFETY: statvfs is plain data; fstatvfs fills it for an open fd.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Duplicates descriptor `fd` of this process (close-on-exec, numbered 3
/// or above) into a `File` of its own.
pub fn dup_cloexec(fd: i32) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we then own.
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if d < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { std::fs::File::from_raw_fd(d) })
}

/// Clears `O_NONBLOCK` on `fd` (a device opened without waiting for a
/// medium is then read blocking).
pub fn set_blocking(fd: BorrowedFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor the borrow keeps open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the open-file limit to its hard maximum: walking very deep trees
/// keeps one descriptor per level open.
pub fn raise_fd_limit() {
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Borrowing helper so call sites read `fd.as_fd_borrow()`.
pub trait AsFdBorrow {
    /// Borrows the descriptor.
    fn as_fd_borrow(&self) -> BorrowedFd<'_>;
}

impl AsFdBorrow for OwnedFd {
    fn as_fd_borrow(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.as_fd()
    }
}

/// The raw number of a descriptor (for /proc/self/fd paths).
pub fn raw(fd: BorrowedFd) -> RawFd {
    fd.as_raw_fd()
}

/// Renames without following symlinks in either directory (names are single
/// components relative to the descriptors).
pub fn rename_at(
    old_dir: BorrowedFd,
    old: &[u8],
    new_dir: BorrowedFd,
    new: &[u8],
) -> io::Result<()> {
    let o = cname(old)?;
    let n = cname(new)?;
    check(unsafe {
        libc::renameat(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
        )
    })
    .map(|_| ())
}

/// Swaps two paths atomically (`renameat2(RENAME_EXCHANGE)`): both exist
/// before and after, each under the other's name. Hand-written because
/// std has no exchange and nix's wrapper adds nothing but a dependency
/// feature.
pub fn exchange(a: &std::path::Path, b: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let a = cname(a.as_os_str().as_bytes())?;
    let b = cname(b.as_os_str().as_bytes())?;
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    })
    .map(|_| ())
}

/// [`stat_at`] and whether the entry carries the nodump inode flag
/// (`chattr +d`, from statx's attributes; false where the file system does
/// not report it), in one `statx` call: a scan that honours nodump asks
/// both of every entry. The stat is filled from the statx
/// fields (device numbers through `makedev`, as glibc's `fstatat` does).
pub fn stat_nodump_at(dir: BorrowedFd, name: &[u8]) -> io::Result<(libc::stat, bool)> {
    let c = cname(name)?;
    // SAFETY: statx fills the zeroed struct; the name is NUL-terminated.
    let mut x: libc::statx = unsafe { std::mem::zeroed() };
    let flags = nofollow_flags(name);
    check(unsafe {
        libc::statx(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags,
            libc::STATX_BASIC_STATS,
            &mut x,
        )
    })?;
    // SAFETY: a plain C struct; every field the callers read is set below.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_dev = libc::makedev(x.stx_dev_major, x.stx_dev_minor);
    st.st_ino = x.stx_ino;
    st.st_mode = x.stx_mode as libc::mode_t;
    st.st_nlink = x.stx_nlink as libc::nlink_t;
    st.st_uid = x.stx_uid;
    st.st_gid = x.stx_gid;
    st.st_rdev = libc::makedev(x.stx_rdev_major, x.stx_rdev_minor);
    st.st_size = x.stx_size as libc::off_t;
    st.st_blksize = x.stx_blksize as libc::blksize_t;
    st.st_blocks = x.stx_blocks as libc::blkcnt_t;
    st.st_atime = x.stx_atime.tv_sec as libc::time_t;
    st.st_atime_nsec = x.stx_atime.tv_nsec as _;
    st.st_mtime = x.stx_mtime.tv_sec as libc::time_t;
    st.st_mtime_nsec = x.stx_mtime.tv_nsec as _;
    st.st_ctime = x.stx_ctime.tv_sec as libc::time_t;
    st.st_ctime_nsec = x.stx_ctime.tv_nsec as _;
    let flag = libc::STATX_ATTR_NODUMP as u64;
    let nodump = x.stx_attributes_mask & flag != 0 && x.stx_attributes & flag != 0;
    Ok((st, nodump))
}

/// Renames without replacing what is at the new name (`EEXIST` then):
/// `renameat2(RENAME_NOREPLACE)`, or, on a file system without it, a check
/// of the new name and a plain rename (a race there is the caller's to
/// accept).
pub fn rename_noreplace_at(
    old_dir: BorrowedFd,
    old: &[u8],
    new_dir: BorrowedFd,
    new: &[u8],
) -> io::Result<()> {
    let o = cname(old)?;
    let n = cname(new)?;
    let r = check(unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    });
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            if stat_at(new_dir, new).is_ok() {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            rename_at(old_dir, old, new_dir, new)
        }
        r => r.map(|_| ()),
    }
}

/// Swaps two names atomically, relative to directory descriptors
/// (`renameat2(RENAME_EXCHANGE)`, never following a symlink in either).
pub fn exchange_at(a_dir: BorrowedFd, a: &[u8], b_dir: BorrowedFd, b: &[u8]) -> io::Result<()> {
    let a = cname(a)?;
    let b = cname(b)?;
    check(unsafe {
        libc::renameat2(
            a_dir.as_raw_fd(),
            a.as_ptr(),
            b_dir.as_raw_fd(),
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    })
    .map(|_| ())
}

/// Deallocates a byte range, keeping the file size (the range reads as
/// zeros and takes no space).
pub fn punch_hole(fd: BorrowedFd, off: u64, len: u64) -> io::Result<()> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off as i64, len as i64) }).map(|_| ())
}

/// Flushes the whole file system holding `fd`: used before a restore
/// records that a phase is complete, so the record never runs ahead of the
/// data it vouches for.
pub fn syncfs(fd: BorrowedFd) -> io::Result<()> {
    check(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(|_| ())
}

/// Opens, read-only, the inode of the file system `mount` is on whose
/// file handle is the 32-bit inode number and generation (ext4's,
/// `FILEID_INO32_GEN`; ext4 takes generation 0 as any generation). Needs
/// `CAP_DAC_READ_SEARCH`; `ESTALE` when no such inode lives.
pub fn open_by_ino32_handle(mount: BorrowedFd, ino: u32, generation: u32) -> io::Result<OwnedFd> {
    /// `struct file_handle` with the 8 bytes of an ino32/gen handle.
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        ino: u32,
        generation: u32,
    }
    const FILEID_INO32_GEN: i32 = 1;
    let mut h = Handle {
        bytes: 8,
        kind: FILEID_INO32_GEN,
        ino,
        generation,
    };
    // SAFETY: a handle laid out as the kernel's struct file_handle, with
    // `bytes` bytes of f_handle after the two header words.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            &mut h as *mut Handle as *mut libc::file_handle,
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    check(fd)?;
    // SAFETY: a descriptor the call just returned, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes back every dirty page of an open file and waits for it
/// (`sync_file_range` with wait-before, write and wait-after: the
/// kernel's write-and-wait, which also write-protects the pages' mappings;
/// no journal commit, unlike `fdatasync`).
pub fn write_back_and_wait(fd: BorrowedFd) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a plain call on an open descriptor; 0, 0 is the whole file.
    check(unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, flags) }).map(|_| ())
}

/// Whether creating `path` would create a file on the device file system
/// (`/dev` itself, not a file system mounted below it such as
/// `/dev/shm`): outputs never do, since a name there that does not exist
/// is a device that is not there (or a typo), not a file to make.
pub fn on_dev_fs(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let (Ok(p), Ok(d)) = (std::fs::metadata(parent), std::fs::metadata("/dev")) else {
        return false;
    };
    p.dev() == d.dev() && std::fs::canonicalize(parent).is_ok_and(|c| c.starts_with("/dev"))
}

/// `flock(2)` on `fd`: `LOCK_SH` or `LOCK_EX`, with `LOCK_NB` to not wait.
/// Ok(false) when `LOCK_NB` was given and another holder has it; EINTR is
/// retried.
pub fn flock(fd: BorrowedFd, op: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock takes a descriptor this borrow keeps open.
        if unsafe { libc::flock(fd.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// Which of descriptors 0, 1, 2 were closed when the process started
/// (bits 0..2). Rust's runtime opens /dev/null on closed standard
/// descriptors before `main`, which would make a dump to a closed stdout
/// look written; this is recorded first, from the ELF init array.
static STDIO_CLOSED_AT_START: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

extern "C" fn record_closed_stdio() {
    let mut closed = 0u8;
    for fd in 0..3 {
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            closed |= 1 << fd;
        }
    }
    STDIO_CLOSED_AT_START.store(closed, std::sync::atomic::Ordering::Relaxed);
}

#[used]
#[link_section = ".init_array"]
static RECORD_CLOSED_STDIO: extern "C" fn() = record_closed_stdio;

/// Whether standard descriptor `fd` (0, 1 or 2) was closed when the
/// process started (and is now /dev/null, opened by the runtime).
pub fn stdio_was_closed(fd: i32) -> bool {
    (0..3).contains(&fd)
        && STDIO_CLOSED_AT_START.load(std::sync::atomic::Ordering::Relaxed) & (1 << fd) != 0
}

/// An anonymous pipe, both ends close-on-exec: (reading end, writing end).
pub fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two descriptors, which are then owned here.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    use std::os::fd::FromRawFd;
    // SAFETY: both are fresh descriptors no one else owns.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    })
}
