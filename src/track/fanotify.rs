//! The namespace half of the tracker: fanotify on the whole file system.
//!
//! A file-system mark with directory file handles and names
//! (`FAN_REPORT_DFID_NAME | FAN_REPORT_FID`) reports every entry created,
//! deleted or renamed (as the directory and the name), and every inode whose
//! attributes, extended attributes, link count or data changed (as the
//! inode). Handles are turned into inode numbers with `open_by_handle_at`;
//! a handle that no longer opens is an inode already gone, whose removal
//! its directory's event reports. A queue overflow is recorded: the changes
//! since the last swap are then unknown.

use anyhow::{Context, Result};
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// What changed in the name space and in inode metadata between two swaps.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Names created, deleted or renamed, by directory inode.
    pub names: HashMap<u64, HashSet<Vec<u8>>>,
    /// Inodes whose metadata or data changed (directories named in
    /// `names` included: their times changed).
    pub inodes: HashSet<u64>,
    /// Inodes fanotify reported modified (data written, truncated,
    /// reflinked...); asked for only where the ranges are incomplete.
    pub modified: HashSet<u64>,
    /// Why the changes are incomplete, if they are.
    pub lost: Option<String>,
}

impl Changes {
    /// Adds `other` to these changes.
    pub fn merge(&mut self, other: Changes) {
        for (d, n) in other.names {
            self.names.entry(d).or_default().extend(n);
        }
        self.inodes.extend(other.inodes);
        self.modified.extend(other.modified);
        if self.lost.is_none() {
            self.lost = other.lost;
        }
    }
}

/// A fanotify group with a mark on one file system.
pub struct Watch {
    fd: OwnedFd,
    mount: OwnedFd,
    handles: HashMap<Vec<u8>, Option<u64>>,
    buf: Vec<u8>,
}

/// Name space and metadata events. `FAN_MODIFY` (one event per write(2),
/// which costs every writer) is asked for only where the page ranges do
/// not already hold every data change (btrfs): a truncation raises
/// `FAN_ATTRIB` too (its times change), and a write marks pages.
const MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_ATTRIB
    | libc::FAN_DELETE_SELF
    | libc::FAN_MOVE_SELF
    | libc::FAN_ONDIR;

impl Watch {
    /// Marks the file system holding the directory `root` (open); with
    /// `modify`, data writes are reported too.
    pub fn new(root: BorrowedFd, path: &std::path::Path, modify: bool) -> Result<Watch> {
        // SAFETY: plain system call with flag arguments.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF
                    | libc::FAN_CLOEXEC
                    | libc::FAN_NONBLOCK
                    | libc::FAN_REPORT_DFID_NAME
                    | libc::FAN_REPORT_FID,
                (libc::O_RDONLY | libc::O_CLOEXEC) as u32,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("cannot start fanotify (the change tracker needs root)");
        }
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let dot = c".";
        // SAFETY: valid descriptors and a C string; marks the file system
        // of `root`.
        let r = unsafe {
            libc::fanotify_mark(
                fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                if modify {
                    MASK | libc::FAN_MODIFY
                } else {
                    MASK
                },
                root.as_raw_fd(),
                dot.as_ptr(),
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EXDEV) {
                anyhow::bail!(
                    "cannot watch {} with fanotify: it is in a btrfs subvolume other than the file system's top one, which fanotify cannot mark whole (track a source in the top subvolume)",
                    path.display()
                );
            }
            return Err(e).with_context(|| {
                format!(
                    "cannot watch the file system of {} with fanotify (tmpfs, overlay and network file systems cannot be tracked; ext4, xfs and btrfs can)",
                    path.display()
                )
            });
        }
        Ok(Watch {
            fd,
            mount: root.try_clone_to_owned()?,
            handles: HashMap::new(),
            buf: vec![0u8; 1 << 16],
        })
    }

    /// The descriptor to poll.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// The inode a file handle names now (None: gone).
    fn inode_of(&mut self, handle: &[u8]) -> Option<u64> {
        if let Some(v) = self.handles.get(handle) {
            return *v;
        }
        let mut h = handle.to_vec();
        // SAFETY: `h` holds a `struct file_handle` as the kernel reported
        // it (handle_bytes, handle_type, bytes); open_by_handle_at reads
        // within it. O_PATH opens nothing but a reference.
        let fd = unsafe {
            libc::open_by_handle_at(
                self.mount.as_raw_fd(),
                h.as_mut_ptr() as *mut libc::file_handle,
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        let ino = if fd >= 0 {
            // SAFETY: a new descriptor nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            crate::fsx::fstat(std::os::fd::AsFd::as_fd(&fd))
                .ok()
                .map(|st| st.st_ino)
        } else {
            None
        };
        if self.handles.len() > 1 << 16 {
            self.handles.clear();
        }
        self.handles.insert(handle.to_vec(), ino);
        ino
    }

    /// Reads every queued event into `into`; returns when the queue is
    /// empty.
    pub fn drain(&mut self, into: &mut Changes) -> Result<()> {
        loop {
            // SAFETY: reading into a buffer we own, of the length passed.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EAGAIN) {
                    return Ok(());
                }
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e).context("cannot read fanotify events");
            }
            let buf = std::mem::take(&mut self.buf);
            let r = self.parse(&buf[..n as usize], into);
            self.buf = buf;
            r?;
        }
    }

    fn parse(&mut self, b: &[u8], into: &mut Changes) -> Result<()> {
        let mut o = 0;
        while o + 24 <= b.len() {
            let len = u32::from_le_bytes(b[o..o + 4].try_into()?) as usize;
            let meta_len = u16::from_le_bytes(b[o + 6..o + 8].try_into()?) as usize;
            let mask = u64::from_le_bytes(b[o + 8..o + 16].try_into()?);
            if len < meta_len || o + len > b.len() {
                anyhow::bail!("malformed fanotify event");
            }
            if mask & libc::FAN_Q_OVERFLOW != 0 {
                into.lost
                    .get_or_insert_with(|| "its fanotify queue overflowed".to_string());
            }
            let mut i = o + meta_len;
            while i + 4 <= o + len {
                let kind = b[i];
                let rec_len = u16::from_le_bytes(b[i + 2..i + 4].try_into()?) as usize;
                if rec_len < 4 || i + rec_len > o + len {
                    break;
                }
                let rec = &b[i + 4..i + rec_len];
                // fsid (8 bytes), then struct file_handle.
                if rec.len() >= 16 {
                    let hbytes = u32::from_le_bytes(rec[8..12].try_into()?) as usize;
                    let hend = (16 + hbytes).min(rec.len());
                    let handle = rec[8..hend].to_vec();
                    match kind {
                        // FAN_EVENT_INFO_TYPE_FID: the inode itself.
                        1 => {
                            if let Some(ino) = self.inode_of(&handle) {
                                into.inodes.insert(ino);
                                if mask & libc::FAN_MODIFY != 0 {
                                    into.modified.insert(ino);
                                }
                            }
                        }
                        // DFID_NAME: the directory and the entry's name.
                        2 => {
                            let name = &rec[hend..];
                            let name =
                                &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
                            if let Some(dir) = self.inode_of(&handle) {
                                into.inodes.insert(dir);
                                if mask
                                    & (libc::FAN_CREATE
                                        | libc::FAN_DELETE
                                        | libc::FAN_MOVED_FROM
                                        | libc::FAN_MOVED_TO)
                                    != 0
                                    && name != b"."
                                {
                                    into.names.entry(dir).or_default().insert(name.to_vec());
                                }
                            }
                        }
                        // DFID: a directory's own event.
                        3 => {
                            if let Some(dir) = self.inode_of(&handle) {
                                into.inodes.insert(dir);
                            }
                        }
                        _ => {}
                    }
                }
                i += rec_len;
            }
            o += len;
        }
        Ok(())
    }
}
