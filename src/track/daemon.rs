//! The tracker daemon: one per source and catalog. It holds the kernel
//! maps and the fanotify mark, answers swaps, status and stop on a local
//! socket, and writes one delta file per swap.
//!
//! A swap, in order: make the other page map active (and wait until no
//! program still writes the old one) and empty the old one; write back
//! what a later change could reach without a mark (below); mark again, in
//! the new map, the ranges of operations marked where they start
//! (programs.rs, "When a mark is made"); read every
//! fanotify event queued so far; write the old map's ranges and the events
//! as the delta of the epoch that ends. Events and writes that land while
//! the swap runs are in this delta or the next, never in neither; a dump
//! reads the tree only after the swap answered.
//!
//! What is written back. On xfs and btrfs, a write into a page already
//! dirty raises no event, so the swap `syncfs`es the source's file system:
//! every page dirty now is cleaned and any later write dirties it again,
//! into the new map. On ext4 every write, truncation and fallocate is
//! marked at its own point, dirty page or not; only a store through a page
//! table entry a fault made writable raises nothing. So the swap writes
//! back (and so write-protects) just the files a program saw with a
//! writable shared mapping in the epoch (`Frozen::mapped`), and leaves
//! everything else the user wrote to the kernel's own write-back. The
//! daemon's first swap, at its start, is a `syncfs` everywhere: mappings
//! made before the programs were attached were seen by none of them.

use super::delta::{self, Delta};
use super::fanotify::{Changes, Watch};
use super::kernel::Kernel;
use super::{Identity, Status};
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// How many epochs' deltas are kept (a dump that failed after its swap
/// leaves its epoch for the next dump to take in too).
pub const KEEP_DELTAS: u64 = 64;

/// What the daemon needs to start.
pub struct DaemonOptions {
    /// The source (canonical).
    pub source: PathBuf,
    /// The tracker directory (beside the source's catalog).
    pub dir: PathBuf,
    /// Ranges per page map.
    pub capacity: u32,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

struct Daemon {
    opts: DaemonOptions,
    root: std::os::fd::OwnedFd,
    kernel: Kernel,
    watch: Watch,
    current: Changes,
    identity: Identity,
    fstype: String,
    since: crate::tree::Time,
    /// Whether a swap has synced the whole file system (the first does).
    synced: bool,
}

/// Beyond this many mapped files a swap syncs the file system instead of
/// opening each.
pub const MAX_WRITE_BACKS: usize = 4096;

/// Runs the daemon until stopped. `ready` is called once the tracker is
/// marking (a starter waits for it before saying so).
pub fn run(opts: DaemonOptions, ready: impl FnOnce(&Status)) -> Result<()> {
    let root = crate::fsx::open_dir_path(&opts.source)
        .with_context(|| format!("cannot open source {}", opts.source.display()))?;
    let fstype = super::fs_type(&opts.source)?;
    let dev = super::kernel::kernel_dev(&opts.source)?;
    let listener = super::listen(&opts.dir)?;
    listener.set_nonblocking(true)?;
    // fanotify first: an event of a change whose pages the kernel maps
    // miss cannot then be missed too.
    let watch = Watch::new(
        std::os::fd::AsFd::as_fd(&root),
        &opts.source,
        !super::ranges_complete(&fstype),
    )?;
    let kernel = Kernel::start(dev, &fstype, opts.capacity)?;
    let identity = Identity {
        tracker: crate::ids::random_id(),
        boot: super::boot_id(),
    };
    // SAFETY: installing an async-signal-safe handler that stores an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let mut d = Daemon {
        opts,
        root,
        kernel,
        watch,
        current: Changes::default(),
        identity,
        fstype,
        since: crate::tree::Time::now(),
        synced: false,
    };
    // Epoch 0 ends at once: it holds nothing anyone may build on.
    d.swap()?;
    // While this file names a live process, a dump that cannot reach it
    // says so (a tracker that died is not the same as none).
    let pid_file = d.opts.dir.join("pid");
    crate::atomic::replace_file(&pid_file, format!("{}\n", std::process::id()).as_bytes())?;
    let _remove = RemoveOnDrop(pid_file);
    ready(&d.status());
    loop {
        if STOP.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut fds = [
            libc::pollfd {
                fd: d.watch.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two pollfds we own, for up to 500 ms.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 500) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e).context("poll");
        }
        if fds[0].revents != 0 {
            d.watch.drain(&mut d.current)?;
        }
        if fds[1].revents != 0 {
            while let Ok((conn, _)) = listener.accept() {
                if d.serve(conn)? {
                    return Ok(());
                }
            }
        }
    }
}

/// Removes a file when dropped (the daemon's pid file at a clean exit).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Daemon {
    fn status(&self) -> Status {
        let (ranges, refused) = self.kernel.active_counts();
        Status {
            source: self.opts.source.display().to_string(),
            pid: std::process::id(),
            tracker: crate::ids::hex(&self.identity.tracker),
            boot: self.identity.boot.clone(),
            since: self.since.rfc3339(),
            epoch: self.identity_epoch(),
            file_system: self.fstype.clone(),
            ranges_marked: ranges,
            ranges_refused: refused,
            capacity: self.kernel.capacity() as u64,
            inodes_changed: self.current.inodes.len() as u64,
            directories_changed: self.current.names.len() as u64,
            lost: self.current.lost.clone(),
        }
    }

    fn identity_epoch(&self) -> u64 {
        super::read_epoch(&self.opts.dir).unwrap_or(0)
    }

    /// Answers one request; true when asked to stop.
    fn serve(&mut self, conn: UnixStream) -> Result<bool> {
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        if !super::peer_allowed(&conn) {
            return Ok(false);
        }
        let mut line = String::new();
        let mut reader = BufReader::new(&conn);
        if reader.read_line(&mut line).is_err() {
            return Ok(false);
        }
        let (reply, stop) = match line.trim() {
            "swap" => match self.swap() {
                Ok(epoch) => (
                    serde_json::json!({
                        "tracker": crate::ids::hex(&self.identity.tracker),
                        "epoch": epoch,
                    }),
                    false,
                ),
                Err(e) => (serde_json::json!({ "error": format!("{e:#}") }), false),
            },
            "status" => (serde_json::to_value(self.status())?, false),
            "stop" => (serde_json::json!({ "stopped": true }), true),
            other => (
                serde_json::json!({ "error": format!("unknown request {other:?}") }),
                false,
            ),
        };
        let mut w = &conn;
        let _ = writeln!(w, "{reply}");
        Ok(stop)
    }

    /// Ends the current epoch; returns its number.
    fn swap(&mut self) -> Result<u64> {
        let frozen = self.kernel.swap()?;
        let cleaned = self.write_back(&frozen.mapped);
        let carried = self.kernel.carry(&frozen.carried);
        self.watch.drain(&mut self.current)?;
        let mut changes = std::mem::take(&mut self.current);
        if let Err(e) = carried {
            // The new epoch may miss what an operation still running
            // changes: no dump builds on it.
            self.current.lost = Some(format!("{e:#}"));
        }
        if let Err(e) = cleaned {
            // The epoch's ranges are kept, but a store after this swap may
            // go unmarked: no dump builds on this delta.
            changes.lost.get_or_insert(format!("{e:#}"));
        }
        if frozen.overflowed > 0 && changes.lost.is_none() {
            changes.lost = Some(format!(
                "its page map was full ({} ranges; start it with a larger --max-ranges)",
                self.kernel.capacity()
            ));
        }
        let epoch = super::read_epoch(&self.opts.dir).map_or(0, |e| e + 1);
        let mut d = Delta {
            tracker: self.identity.tracker,
            epoch,
            page_shift: super::kernel::page_size().trailing_zeros(),
            changes,
            ranges: frozen.ranges,
        };
        delta::write(&self.opts.dir, &mut d)?;
        super::write_state(&self.opts.dir, &self.identity, epoch)?;
        if epoch >= KEEP_DELTAS {
            let _ = std::fs::remove_file(delta::path(&self.opts.dir, epoch - KEEP_DELTAS));
        }
        Ok(epoch)
    }

    /// Writes back what a store could change without a mark after this
    /// swap (see the module's "What is written back").
    fn write_back(&mut self, mapped: &[super::kernel::Mapped]) -> Result<()> {
        let all = !self.synced;
        write_back(
            std::os::fd::AsFd::as_fd(&self.root),
            &self.fstype,
            all,
            mapped,
        )?;
        self.synced = true;
        Ok(())
    }
}

/// What a swap writes back, once the old map is emptied: on ext4, unless
/// `all`, only the files `mapped` names; else (or when one of them cannot
/// be opened or written back) the whole file system of `root`. See the
/// module's "What is written back".
pub fn write_back(
    root: std::os::fd::BorrowedFd,
    fstype: &str,
    all: bool,
    mapped: &[super::kernel::Mapped],
) -> Result<()> {
    let sync_all = || crate::fsx::syncfs(root).context("cannot sync the source's file system");
    if fstype != "ext4" || all || mapped.len() > MAX_WRITE_BACKS {
        return sync_all();
    }
    for m in mapped {
        let Ok(ino) = u32::try_from(m.ino) else {
            return sync_all();
        };
        // By number alone (generation 0: whatever generation it has now;
        // the one a program saw may have been changed since with
        // FS_IOC_SETVERSION, and writing back an inode that reused the
        // number costs only time).
        let fd = match crate::fsx::open_by_ino32_handle(root, ino, 0) {
            Ok(fd) => fd,
            // Gone (the inode freed): none of its pages are in the tree
            // any more.
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => continue,
            Err(_) => return sync_all(),
        };
        if crate::fsx::write_back_and_wait(std::os::fd::AsFd::as_fd(&fd)).is_err() {
            return sync_all();
        }
    }
    Ok(())
}
