//! File flags on a restore target: when they are set, and lifting the
//! immutable and append-only flags while an increment is applied.
//!
//! Immutable and append-only entries refuse the writes, renames, links and
//! attribute changes a restore makes, so those two flags ([`LATE`]) come
//! last: a full restore sets them as the final step of each entry's
//! attributes; an increment lifts them from the entries the target holds
//! before it changes anything, stages and finishes without them, and sets
//! them again over the finished tree ([`relock`]), or over the old one when
//! the increment is undone. The target's root never gets them: its restore
//! state lives inside it. Flags that only take on an empty file
//! ([`EARLY`], btrfs `C`) are set as the file is created.

use crate::fsx::flags::{self, EARLY, LATE};
use crate::fsx::{self, dirstack::DirStack, AsFdBorrow};
use crate::names::escape;
use crate::report::Report;
use crate::tree::{Inode, Kind, Tree, ROOT_INO};
use anyhow::{anyhow, Result};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

/// Whether an inode can carry flags here (files and directories only).
fn flaggable(i: &Inode) -> bool {
    matches!(i.kind, Kind::File | Kind::Dir)
}

fn open(dir: BorrowedFd, name: &[u8], kind: Kind) -> io::Result<Option<OwnedFd>> {
    flags::open_at(dir, name, kind == Kind::Dir)
}

/// What one pass of setting attributes must do about flags, and what it
/// could not set (reported once, at the end, not per entry).
#[derive(Default)]
pub struct FlagPass {
    /// Set immutable and append-only too (the entry is in its final place
    /// and nothing more is done to it in this run).
    pub late: bool,
    /// Check every file and directory, not only those the tree gives
    /// flags: entries created in a directory that has flags inherit some.
    pub everywhere: bool,
    missed: u64,
    first: Option<String>,
    root_late: bool,
}

impl FlagPass {
    /// A pass over `tree` into the directory `root`: flags need checking
    /// everywhere when the tree or the target root has any.
    pub fn new(root: BorrowedFd, tree: &Tree, late: bool) -> FlagPass {
        let any = tree.inodes.iter().any(|i| i.flags != 0 || i.projid != 0);
        let root_has =
            flags::get(root).is_ok_and(|f| f != 0) || flags::project(root).is_ok_and(|p| p != 0);
        FlagPass {
            late,
            everywhere: any || root_has,
            ..FlagPass::default()
        }
    }

    /// Checks everywhere too when `tree` (the tree an increment starts
    /// from) has flags: they may have to come off.
    pub fn also(mut self, tree: &Tree) -> FlagPass {
        self.everywhere |= tree.inodes.iter().any(|i| i.flags != 0 || i.projid != 0);
        self
    }

    /// Sets the flags and project id of `inode` at `name` in `dir` (its
    /// other attributes already set: flags change no time but ctime).
    pub fn apply(&mut self, dir: BorrowedFd, name: &[u8], inode: &Inode, tree: &Tree) {
        if !flaggable(inode) || (!self.everywhere && inode.flags == 0 && inode.projid == 0) {
            return;
        }
        let mut want = inode.flags;
        if inode.ino == ROOT_INO && want & LATE != 0 {
            self.root_late = true;
            want &= !LATE;
        } else if !self.late {
            want &= !LATE;
        }
        if let Err(e) = set_at(dir, name, inode.kind, want, inode.projid) {
            self.missed(tree, inode.ino, e);
        }
    }

    fn missed(&mut self, tree: &Tree, ino: u64, e: io::Error) {
        self.missed += 1;
        if self.first.is_none() {
            self.first = Some(format!("{}: {e}", escape(&tree.path(ino))));
        }
    }

    /// Says what could not be set, once a run: an increment sets flags in
    /// several passes (staged entries, kept ones, then immutable and
    /// append-only over the finished tree), and the same entries would be
    /// named by each.
    pub fn report(&self, report: &Report) {
        use std::sync::atomic::{AtomicBool, Ordering};
        static WARNED: AtomicBool = AtomicBool::new(false);
        static NOTED: AtomicBool = AtomicBool::new(false);
        if self.missed > 0 && !WARNED.swap(true, Ordering::Relaxed) {
            let why = if fsx::is_root() {
                "the target's file system does not take them"
            } else {
                "not running as root (immutable and append-only need it)"
            };
            report.warn(
                b".",
                format!(
                    "file flags of {} entries not restored ({why}); the first: {}",
                    self.missed,
                    self.first.as_deref().unwrap_or("")
                ),
            );
        }
        if self.root_late && !NOTED.swap(true, Ordering::Relaxed) {
            crate::progress::note(
                "the source's root directory is immutable or append-only; the target's root gets those flags only from restore --finish, as it holds the restore state until then",
            );
        }
    }
}

/// Sets flags and project id of one entry: the project id first (an
/// immutable file takes no change), then the flags; a refused immutable or
/// append-only flag (no CAP_LINUX_IMMUTABLE) still lets the others through.
fn set_at(dir: BorrowedFd, name: &[u8], kind: Kind, want: u32, projid: u32) -> io::Result<()> {
    let owned = open(dir, name, kind)?;
    let fd = owned.as_ref().map(|f| f.as_fd_borrow()).unwrap_or(dir);
    let p = flags::set_project(fd, projid);
    let f = match flags::set(fd, want) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && want & LATE != 0 => {
            flags::set(fd, want & !LATE).and(Err(e))
        }
        r => r,
    };
    p.and(f)
}

/// Sets the flags a new, empty file must have before its data is written.
pub fn early(fd: BorrowedFd, inode: &Inode) {
    if inode.flags & EARLY != 0 {
        // A failure shows again, and is reported, when the attributes
        // are set.
        let _ = flags::set(fd, inode.flags & EARLY);
    }
}

/// Lifts immutable and append-only from the entries of `tree` that have
/// them, reaching each by its path in `tree` from `root`; entries not
/// there (moved or removed) are skipped. An increment calls this before it
/// changes anything, over the tree the target holds.
pub fn lift(root: &OwnedFd, tree: &Tree) -> Result<()> {
    let locked: Vec<&Inode> = tree
        .inodes
        .iter()
        .filter(|i| flaggable(i) && i.flags & LATE != 0 && i.ino != ROOT_INO)
        .collect();
    if locked.is_empty() {
        return Ok(());
    }
    let mut dirs = DirStack::new(root.try_clone()?);
    for inode in locked {
        let d = tree.primary(inode.ino);
        let Ok(dir) = dirs.enter_in(tree, d.parent) else {
            continue;
        };
        let fd = match open(dir, &d.name, inode.kind) {
            Ok(Some(fd)) => fd,
            Ok(None) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => continue,
            Err(e) => return Err(lift_error(tree, inode.ino, e)),
        };
        let now = flags::get(fd.as_fd_borrow()).map_err(|e| lift_error(tree, inode.ino, e))?;
        if now & LATE != 0 {
            flags::set(fd.as_fd_borrow(), now & !LATE)
                .map_err(|e| lift_error(tree, inode.ino, e))?;
        }
    }
    Ok(())
}

fn lift_error(tree: &Tree, ino: u64, e: io::Error) -> anyhow::Error {
    anyhow!(
        "cannot lift the immutable or append-only flag of {} to apply the increment: {e}; run the restore as root",
        escape(&tree.path(ino))
    )
}

/// Sets immutable and append-only again (with the entry's other flags)
/// on the entries of `tree` that have them, once nothing more is done to
/// the tree in this run.
pub fn relock(root: &OwnedFd, tree: &Tree, report: &Report) -> Result<()> {
    let mut pass = FlagPass {
        late: true,
        everywhere: true,
        ..FlagPass::default()
    };
    let mut dirs = DirStack::new(root.try_clone()?);
    for inode in tree.inodes.iter().rev() {
        if !flaggable(inode) || inode.flags & LATE == 0 {
            continue;
        }
        if inode.ino == ROOT_INO {
            pass.root_late = true;
            continue;
        }
        let d = tree.primary(inode.ino);
        match dirs.enter_in(tree, d.parent) {
            Ok(dir) => pass.apply(dir, &d.name, inode, tree),
            Err(e) => pass.missed(tree, inode.ino, e),
        }
    }
    pass.report(report);
    Ok(())
}
