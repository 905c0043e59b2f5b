//! The in-place finish of an increment: only what changed moves.
//!
//! A directory of the new snapshot (T1) at a path where the target's
//! snapshot (T0) has a directory is that directory, kept (*reused*): its
//! inode stays, so open descriptors, working directories, bind mounts and
//! NFS file handles inside the target survive an increment. A name in a
//! reused directory that keeps the same file (T1 inherits the T0 file that
//! has that name there) or the same reused directory stays where it is
//! (*kept*). Everything else of T1 is staged under `apply/next/`, at its
//! T1 path, below *shadow* directories that stand for the reused ones;
//! T0's other names in reused directories are moved to `apply/old/`, and
//! the staged entries are moved into their reused directories. The work
//! is proportional to what changed, plus one pass of attributes over the
//! reused directories, whose times the moves change.
//!
//! The layout is a pure function of T0, T1 and the inheritance the check
//! chose, all kept in the apply directory, so an interrupted finish
//! recomputes it; every move checks whether it was done already.

use super::access::{make_writable, with_access};
use super::survey::{matching_dirs, Names};
use super::writer::{io_ctx, set_attrs};
use crate::fsx::{self, dirstack::DirStack};
use crate::names::escape;
use crate::report::Report;
use crate::tree::{Kind, Tree, ROOT_INO};
use anyhow::{anyhow, bail, Result};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// Which entries of T1 stay, which are staged and which of T0's go.
pub struct Layout {
    /// By T1 inode: a directory that is T0's directory at the same path.
    pub reused: Vec<bool>,
    /// By T1 dirent index: the name stays in the target as it is.
    pub kept: Vec<bool>,
    /// By T0 dirent index: a name in a reused directory that leaves it
    /// (moved to `old/`, under its index).
    pub goes: Vec<bool>,
    /// By T1 inode: its primary name is kept, so until the moves (and
    /// after them) it is reached in the target, not in `next/`.
    pub in_target: Vec<bool>,
}

impl Layout {
    /// The layout of the apply from `t0` to `t1`; `inherits(ino)` is the
    /// T0 file a T1 file inherits, if any.
    pub fn new(t0: &Tree, t1: &Tree, inherits: &dyn Fn(u64) -> Option<u64>) -> Layout {
        let t0_names = Names::new(t0);
        let t1_names = Names::new(t1);
        let to_t1 = matching_dirs(t0, t1, &t1_names);
        let mut to_t0 = vec![0u64; t1.inodes.len() + 1];
        for (y, x) in to_t1.iter().enumerate() {
            if let Some(x) = x {
                to_t0[*x as usize] = y as u64;
            }
        }
        let reused: Vec<bool> = to_t0.iter().map(|&y| y != 0).collect();
        let mut kept = vec![false; t1.dirents.len()];
        let mut in_target = vec![false; t1.inodes.len() + 1];
        for (i, d) in t1.dirents.iter().enumerate() {
            kept[i] = if d.parent == 0 {
                true
            } else if !reused[d.parent as usize] {
                false
            } else {
                match t0_names.get(to_t0[d.parent as usize], &d.name) {
                    None => false,
                    Some(j) => match t1.inode(d.ino).kind {
                        Kind::Dir => reused[d.ino as usize],
                        Kind::File => inherits(d.ino) == Some(t0.dirents[j].ino),
                        _ => false,
                    },
                }
            };
            if kept[i] && std::ptr::eq(t1.primary(d.ino), d) {
                in_target[d.ino as usize] = true;
            }
        }
        let mut goes = vec![false; t0.dirents.len()];
        for (j, d) in t0.dirents.iter().enumerate().skip(1) {
            if let Some(x) = to_t1[d.parent as usize] {
                goes[j] = !t1_names.get(x, &d.name).is_some_and(|i| kept[i]);
            }
        }
        Layout {
            reused,
            kept,
            goes,
            in_target,
        }
    }

    /// The staged entries that move into a reused directory (the others
    /// are inside staged directories and move with them).
    fn moves_in<'t>(&'t self, t1: &'t Tree) -> impl Iterator<Item = &'t crate::tree::Dirent> {
        t1.dirents
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(i, d)| !self.kept[*i] && self.reused[d.parent as usize])
            .map(|(_, d)| d)
    }
}

/// T0's names that leave their reused directories move to `old/`, each
/// under its dirent index (so a rerun sees which moved). A name that is
/// gone, or holds another type of entry than T0's (something a user put
/// there after the check), is left: the move in then refuses it.
pub fn move_out(root: &OwnedFd, old: &OwnedFd, t0: &Tree, layout: &Layout) -> Result<()> {
    let mut dirs = DirStack::new(root.try_clone()?);
    for (j, d) in t0.dirents.iter().enumerate().skip(1) {
        if !layout.goes[j] {
            continue;
        }
        let key = j.to_string().into_bytes();
        if fsx::stat_at(old.as_fd(), &key).is_ok() {
            continue; // moved by an interrupted run
        }
        let dir = dirs
            .enter_in(t0, d.parent)
            .map_err(io_ctx(t0, d.parent, "open directory"))?;
        let Ok(st) = fsx::stat_at(dir, &d.name) else {
            continue;
        };
        if Kind::from_mode(st.st_mode) != Some(t0.inode(d.ino).kind) {
            continue;
        }
        crate::failpoint::hit("apply-swap-out");
        make_writable(dir)?;
        // A directory moving to another parent has its ".." rewritten.
        with_access(dir, &d.name, 0o200, || {
            fsx::rename_at(dir, &d.name, old.as_fd(), &key)
        })
        .map_err(|e| anyhow!("cannot move {} aside: {e}", escape(&t0.dirent_path(d))))?;
    }
    Ok(())
}

/// The staged entries move from `next/` into their reused directories; one
/// already moved (or never staged: a device node a non-root user cannot
/// make) is skipped. A name that is taken in the target stops the finish,
/// naming it: it appeared after the check.
pub fn move_in(root: &OwnedFd, next: &OwnedFd, t1: &Tree, layout: &Layout) -> Result<()> {
    let mut from = DirStack::new(next.try_clone()?);
    let mut to = DirStack::new(root.try_clone()?);
    for d in layout.moves_in(t1) {
        let src = match from.enter_in(t1, d.parent) {
            Ok(src) => src,
            // Emptied and removed by an interrupted run.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(io_ctx(t1, d.parent, "open the staged directory")(e));
            }
        };
        match fsx::stat_at(src, &d.name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => bail!("cannot read the staged {}: {e}", escape(&t1.dirent_path(d))),
            Ok(_) => {}
        }
        let dst = to
            .enter_in(t1, d.parent)
            .map_err(io_ctx(t1, d.parent, "open directory"))?;
        crate::failpoint::hit("apply-swap-in");
        make_writable(dst)?;
        with_access(src, &d.name, 0o200, || {
            fsx::rename_noreplace_at(src, &d.name, dst, &d.name)
        })
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                anyhow!(
                    "{} appeared in the target during the restore and is in the way of the new snapshot: move it away and rerun the restore",
                    escape(&t1.dirent_path(d))
                )
            } else {
                anyhow!("cannot move {} into place: {e}", escape(&t1.dirent_path(d)))
            }
        })?;
    }
    Ok(())
}

/// After the moves: the moved-in entries get their attributes again (a
/// directory that moved had its ".." rewritten, and a read-only one was
/// opened up to move it), then every reused directory, innermost first,
/// its times last (the moves changed them), losing the extended
/// attributes T1 does not give it; the target itself last of all.
pub fn settle_attrs(
    root: &OwnedFd,
    t0: &Tree,
    t1: &Tree,
    layout: &Layout,
    report: &Report,
) -> Result<()> {
    let mut dirs = DirStack::new(root.try_clone()?);
    let devices_skipped = !fsx::is_root();
    let quiet = Report::quiet();
    // Immutable and append-only come after, over the whole tree.
    let mut flags = super::flags::FlagPass::new(root.as_fd(), t1, false).also(t0);
    for d in layout.moves_in(t1) {
        let inode = t1.inode(d.ino);
        if devices_skipped && matches!(inode.kind, Kind::CharDev | Kind::BlockDev) {
            continue;
        }
        let dir = dirs
            .enter_in(t1, d.parent)
            .map_err(io_ctx(t1, d.parent, "open directory"))?;
        set_attrs(dir, &d.name, inode, t1, &quiet, &mut 0, &mut flags)?;
    }
    let mut not_owned = 0;
    for inode in t1.inodes.iter().rev() {
        if inode.kind != Kind::Dir || !layout.reused[inode.ino as usize] {
            continue;
        }
        let (dir, name): (std::os::fd::BorrowedFd, &[u8]) = if inode.ino == ROOT_INO {
            (root.as_fd(), b"")
        } else {
            let d = t1.primary(inode.ino);
            let dir =
                dirs.enter_in(t1, d.parent)
                    .map_err(io_ctx(t1, d.parent, "open directory"))?;
            (dir, &d.name[..])
        };
        drop_stale_dir_xattrs(dir, name, inode, t1)?;
        let r = if inode.ino == ROOT_INO {
            report
        } else {
            &quiet
        };
        set_attrs(dir, name, inode, t1, r, &mut not_owned, &mut flags)?;
    }
    flags.report(report);
    if not_owned > 0 {
        report.warn(
            b".",
            format!("not running as root: ownership of {not_owned} directories not restored"),
        );
    }
    Ok(())
}

/// A reused directory loses the extended attributes T1 does not give it
/// (setting attributes only adds and replaces); the security label a
/// system gives every file stays.
pub(crate) fn drop_stale_dir_xattrs(
    dir: std::os::fd::BorrowedFd,
    name: &[u8],
    inode: &crate::tree::Inode,
    t1: &Tree,
) -> Result<()> {
    let Ok(on_disk) = fsx::xattr::names(dir, name) else {
        return Ok(());
    };
    for k in on_disk {
        if k[..] == b"security.selinux"[..] || inode.xattrs.iter().any(|(n, _)| *n == k) {
            continue;
        }
        fsx::xattr::remove(dir, name, &k).map_err(|e| {
            anyhow!(
                "cannot remove extended attribute {} of {}: {e}",
                escape(&k),
                escape(&t1.path(inode.ino))
            )
        })?;
    }
    Ok(())
}
