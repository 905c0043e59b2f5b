//! The directory writer: creates a tree's entries in a target directory,
//! writes data segments where the metadata says, and sets attributes last,
//! in reverse depth-first order, so that a directory's times and a
//! read-only mode are set after everything inside it. Every path is reached
//! through directory descriptors opened with `O_NOFOLLOW` from the target,
//! so a stream cannot make a restore write outside its target. Full
//! restores, incremental applies, `restore -x`, `restore -i` and `volume
//! extract` all write through it.

use super::flags::FlagPass;
use super::state::STATE_DIR;
use crate::fsx::{self, dirstack::DirStack, xattr, AsFdBorrow};
use crate::report::Report;
use crate::stream::payload::Segment;
use crate::tree::{Inode, Kind, Tree, ROOT_INO};
use anyhow::{anyhow, bail, Result};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Creates entries and writes data into a target directory.
pub struct DirWriter<'a> {
    root: OwnedFd,
    dirs: DirStack,
    link_dirs: DirStack,
    force: bool,
    report: &'a Report,
    skipped: Vec<bool>,
    /// Directories that existed already and were only passed through: their
    /// attributes are left as they are.
    kept: Vec<bool>,
    /// Inodes that may be existing directories (selective restore).
    merge: Vec<bool>,
    /// Dirents (by index) this run created, in creation order, so that a
    /// failed selective restore can take them away again.
    created: Vec<usize>,
    open: Option<(u64, OwnedFd)>,
    not_owned: u64,
    /// Whether the attribute pass sets immutable and append-only (a full
    /// restore) or leaves them to [`super::flags::relock`] (an increment's
    /// staging, whose entries still move).
    late_flags: bool,
    /// Entries in the way that --force replaced.
    replaced: u64,
}

/// How many replaced entries are named one by one.
const REPLACED_NAMED: u64 = 20;

/// The error of an operation on inode `ino`, naming its path. The path is
/// built only if there is an error (building it costs the depth).
pub(crate) fn io_ctx<'t>(
    tree: &'t Tree,
    ino: u64,
    what: &'static str,
) -> impl FnOnce(io::Error) -> anyhow::Error + 't {
    move |e| {
        anyhow!(
            "cannot {what} {}: {e}",
            crate::names::escape(&tree.path(ino))
        )
    }
}

impl<'a> DirWriter<'a> {
    pub(crate) fn new(root: OwnedFd, force: bool, report: &'a Report) -> Result<Self> {
        let d1 = root.try_clone()?;
        let d2 = root.try_clone()?;
        Ok(DirWriter {
            root,
            dirs: DirStack::new(d1),
            link_dirs: DirStack::new(d2),
            force,
            report,
            skipped: Vec::new(),
            kept: Vec::new(),
            merge: Vec::new(),
            created: Vec::new(),
            open: None,
            not_owned: 0,
            late_flags: true,
            replaced: 0,
        })
    }

    /// Lets a selective restore pass through directories that exist in
    /// the target: `ancestor[ino]` marks directories present only to lead
    /// to chosen entries (an existing one keeps its attributes); chosen
    /// directories that exist are merged into and get the stream's
    /// attributes.
    pub(crate) fn merge_directories(&mut self, ancestor: &[bool]) {
        self.merge = ancestor.to_vec();
    }

    /// Creates every entry of the tree (no data, no final attributes).
    pub(crate) fn skeleton(&mut self, tree: &Tree) -> Result<()> {
        self.skipped = vec![false; tree.inodes.len() + 1];
        self.kept = vec![false; tree.inodes.len() + 1];
        self.created.clear();
        for (index, d) in tree.dirents.iter().enumerate() {
            if d.parent == 0 {
                continue;
            }
            if d.parent == ROOT_INO && d.name == STATE_DIR.as_bytes() {
                bail!("the stream holds an entry named {STATE_DIR} at its root, which is reserved for restore state");
            }
            if self.skipped[d.parent as usize] || self.skipped[d.ino as usize] {
                self.skipped[d.ino as usize] = true;
                continue;
            }
            let dir = self.dirs.enter_in(tree, d.parent).map_err(io_ctx(
                tree,
                d.parent,
                "open directory",
            ))?;
            let inode = tree.inode(d.ino);
            let primary = std::ptr::eq(tree.primary(d.ino), d);
            if primary {
                if matches!(inode.kind, Kind::CharDev | Kind::BlockDev) && !fsx::is_root() {
                    self.report.warn(
                        &tree.path(d.ino),
                        "device node not restored: only root can create devices",
                    );
                    self.skipped[d.ino as usize] = true;
                    continue;
                }
                // An existing directory where the stream has one is merged
                // into (selective restores, and full ones with --force):
                // what it holds besides the stream's entries stays.
                let merging = (!self.merge.is_empty() || self.force) && inode.kind == Kind::Dir;
                match create(dir, &d.name, inode) {
                    Err(e)
                        if e.kind() == io::ErrorKind::AlreadyExists
                            && merging
                            && is_dir(dir, &d.name) =>
                    {
                        self.kept[d.ino as usize] =
                            self.merge.get(d.ino as usize).copied().unwrap_or(false);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !self.force => {
                        bail!(
                            "cannot create {}: it exists in the target; remove it, restore elsewhere, or use --force to replace it",
                            crate::names::escape(&tree.path(d.ino))
                        );
                    }
                    r => {
                        let mut in_the_way = false;
                        r.or_else(|e| {
                            if e.kind() == io::ErrorKind::AlreadyExists {
                                in_the_way = true;
                                retry_force(true, dir, &d.name, || create(dir, &d.name, inode))
                            } else {
                                Err(e)
                            }
                        })
                        .map_err(io_ctx(tree, d.ino, "create"))?;
                        if in_the_way {
                            self.replaced(&tree.path(d.ino));
                        }
                    }
                }
                self.created.push(index);
            } else {
                let p = tree.primary(d.ino);
                let src = self.link_dirs.enter_in(tree, p.parent).map_err(io_ctx(
                    tree,
                    p.parent,
                    "open directory",
                ))?;
                let mut in_the_way = false;
                retry_force(self.force, dir, &d.name, || {
                    let r = fsx::link_at(src, &p.name, dir, &d.name);
                    in_the_way |= r
                        .as_ref()
                        .is_err_and(|e| e.kind() == io::ErrorKind::AlreadyExists);
                    r
                })
                .map_err(|e| {
                    anyhow!(
                        "cannot create hard link {}: {e}",
                        crate::names::escape(&tree.dirent_path(d))
                    )
                })?;
                if in_the_way {
                    self.replaced(&tree.dirent_path(d));
                }
                self.created.push(index);
            }
        }
        if self.replaced > REPLACED_NAMED {
            self.report.warn(
                b".",
                format!(
                    "and {} more entries in the way replaced by the stream's (--force)",
                    self.replaced - REPLACED_NAMED
                ),
            );
        }
        Ok(())
    }

    /// Names an entry of the target that --force replaces (the first few;
    /// then they are counted).
    fn replaced(&mut self, path: &[u8]) {
        if !self.merge.is_empty() {
            // A selective restore with --force replaces exactly the paths
            // it was asked for.
            return;
        }
        self.replaced += 1;
        if self.replaced <= REPLACED_NAMED {
            self.report.warn(
                path,
                "was in the way; replaced by the stream's entry (--force)",
            );
        }
    }

    /// Removes, newest first, every entry this run's skeleton created (a
    /// selective restore that failed leaves the target as it found it,
    /// short of what `--force` replaced). Returns how many could not be
    /// removed.
    pub(crate) fn remove_created(&mut self, tree: &Tree) -> usize {
        self.open = None;
        let mut left = 0;
        for &index in self.created.iter().rev() {
            let d = &tree.dirents[index];
            let is_dir = tree.inode(d.ino).kind == Kind::Dir;
            let removed = self
                .dirs
                .enter_in(tree, d.parent)
                .and_then(|dir| fsx::unlink_at(dir, &d.name, is_dir));
            if removed.is_err() {
                left += 1;
            }
        }
        self.created.clear();
        self.dirs.reset();
        left
    }

    /// Writes one data segment.
    pub(crate) fn write(&mut self, tree: &Tree, s: &Segment, data: &[u8]) -> Result<()> {
        if self.skipped[s.ino as usize] {
            return Ok(());
        }
        if self.open.as_ref().map(|(i, _)| *i) != Some(s.ino) {
            self.open = None;
            let d = tree.primary(s.ino);
            let dir = self.dirs.enter_in(tree, d.parent).map_err(io_ctx(
                tree,
                d.parent,
                "open directory",
            ))?;
            let fd = fsx::openat(dir, &d.name, libc::O_WRONLY | libc::O_NOFOLLOW, 0)
                .map_err(io_ctx(tree, s.ino, "open"))?;
            self.open = Some((s.ino, fd));
        }
        let fd = &self.open.as_ref().unwrap().1;
        fsx::pwrite_all(fd.as_fd(), data, s.offset).map_err(io_ctx(tree, s.ino, "write"))
    }

    /// Leaves the attributes of these inodes as they are when attributes
    /// are applied (an inherited file found exactly as the new snapshot
    /// has it).
    pub(crate) fn keep_attrs(&mut self, tree: &Tree, inos: impl IntoIterator<Item = u64>) {
        self.kept.resize(tree.inodes.len() + 1, false);
        for i in inos {
            self.kept[i as usize] = true;
        }
    }

    /// Records that the tree's entries exist already (created by the
    /// incremental apply's stage), skipping device nodes a non-root user
    /// could not create.
    pub(crate) fn mark_created(&mut self, tree: &Tree) {
        self.skipped = vec![false; tree.inodes.len() + 1];
        if !fsx::is_root() {
            for i in &tree.inodes {
                if matches!(i.kind, Kind::CharDev | Kind::BlockDev) {
                    self.skipped[i.ino as usize] = true;
                }
            }
        }
    }

    /// Leaves immutable and append-only to the caller (an increment sets
    /// them once its entries are in their final places).
    pub(crate) fn defer_late_flags(&mut self) {
        self.late_flags = false;
    }

    /// Applies ownership, xattrs, permissions, times and file flags,
    /// innermost first.
    pub(crate) fn finish(&mut self, tree: &Tree) -> Result<()> {
        self.finish_attrs(tree, true)
    }

    /// As [`DirWriter::finish`], leaving the root directory alone (the
    /// incremental apply sets it on the real target after the swap).
    pub(crate) fn finish_below_root(&mut self, tree: &Tree) -> Result<()> {
        self.finish_attrs(tree, false)
    }

    /// As [`DirWriter::finish`] for a selective restore: the root directory's
    /// attributes are set only when the whole tree was chosen.
    pub(crate) fn finish_selected(&mut self, tree: &Tree, whole: bool) -> Result<()> {
        self.finish_attrs(tree, whole)
    }

    fn finish_attrs(&mut self, tree: &Tree, root_too: bool) -> Result<()> {
        self.open = None;
        let mut flags = FlagPass::new(self.root.as_fd_borrow(), tree, self.late_flags);
        for inode in tree.inodes.iter().rev() {
            if self.skipped[inode.ino as usize]
                || self.kept.get(inode.ino as usize) == Some(&true)
                || (!root_too && inode.ino == ROOT_INO)
            {
                continue;
            }
            let d = tree.primary(inode.ino);
            let (dir, name): (BorrowedFd, &[u8]) = if inode.ino == ROOT_INO {
                (self.root.as_fd_borrow(), b"")
            } else {
                let dir = self.dirs.enter_in(tree, d.parent).map_err(io_ctx(
                    tree,
                    d.parent,
                    "open directory",
                ))?;
                (dir, &d.name[..])
            };
            set_attrs(
                dir,
                name,
                inode,
                tree,
                self.report,
                &mut self.not_owned,
                &mut flags,
            )?;
        }
        flags.report(self.report);
        if self.not_owned > 0 {
            self.report.warn(
                b".",
                format!(
                    "not running as root: ownership of {} entries not restored",
                    self.not_owned
                ),
            );
        }
        Ok(())
    }
}

fn is_dir(dir: BorrowedFd, name: &[u8]) -> bool {
    fsx::stat_at(dir, name).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// Runs `op`; with `force`, removes whatever is in the way once and retries.
pub(crate) fn retry_force(
    force: bool,
    dir: BorrowedFd,
    name: &[u8],
    mut op: impl FnMut() -> io::Result<()>,
) -> io::Result<()> {
    match op() {
        Err(e) if force && e.kind() == io::ErrorKind::AlreadyExists => {
            fsx::remove_tree_at(dir, name)?;
            op()
        }
        r => r,
    }
}

pub(crate) fn create(dir: BorrowedFd, name: &[u8], inode: &Inode) -> io::Result<()> {
    match inode.kind {
        Kind::Dir => fsx::mkdir_at(dir, name, 0o700),
        Kind::File => {
            let fd = fsx::openat(
                dir,
                name,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                0o600,
            )?;
            super::flags::early(fd.as_fd(), inode);
            // A size the file system cannot hold (EFBIG): the file just
            // made goes again, so nothing half-made is left.
            fsx::ftruncate(fd.as_fd(), inode.size).inspect_err(|_| {
                let _ = fsx::unlink_at(dir, name, false);
            })
        }
        Kind::Symlink => fsx::symlink_at(&inode.target, dir, name),
        Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev => {
            fsx::mknod_at(dir, name, inode.kind.ifmt() | 0o600, inode.attrs.rdev)
        }
    }
}

/// The mode an entry gets while the target holds restore state: its own,
/// but for the target's root as a user other than root, which keeps read,
/// write and search for its owner (the state lives in it, and without them
/// no later restore could write it); `restore --finish` gives the root
/// its mode once the state is gone.
pub(crate) fn root_mode(inode: &Inode) -> u32 {
    if inode.ino == ROOT_INO && !fsx::is_root() {
        inode.attrs.mode | 0o700
    } else {
        inode.attrs.mode
    }
}

pub(crate) fn set_attrs(
    dir: BorrowedFd,
    name: &[u8],
    inode: &Inode,
    tree: &Tree,
    report: &Report,
    not_owned: &mut u64,
    flags: &mut FlagPass,
) -> Result<()> {
    let a = &inode.attrs;
    match fsx::chown_at(dir, name, a.uid, a.gid) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && !fsx::is_root() => *not_owned += 1,
        Err(e) => return Err(io_ctx(tree, inode.ino, "set the owner of")(e)),
    }
    for (k, v) in &inode.xattrs {
        if let Err(e) = xattr::set(dir, name, k, v) {
            report.warn(
                &tree.path(inode.ino),
                format!(
                    "cannot restore extended attribute {}: {e}",
                    crate::names::escape(k)
                ),
            );
        }
    }
    if inode.kind != Kind::Symlink {
        fsx::chmod_at(dir, name, root_mode(inode)).map_err(io_ctx(
            tree,
            inode.ino,
            "set the mode of",
        ))?;
    }
    fsx::utimes_at(dir, name, a.atime, a.mtime).map_err(io_ctx(
        tree,
        inode.ino,
        "set the times of",
    ))?;
    flags.apply(dir, name, inode, tree);
    Ok(())
}
