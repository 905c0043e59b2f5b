//! `restore -r` of a full image into an empty directory.
//!
//! The tree is created from the metadata section before any data arrives
//! (files at their final size, so holes stay holes), data segments are
//! written where the metadata says, and attributes are applied last, in
//! reverse depth-first order so that a directory's times and a read-only
//! mode are set after everything inside it. Every path is reached through
//! directory descriptors opened with `O_NOFOLLOW` from the target, so a
//! stream cannot make restore write outside its target.

use super::state::{StatePaths, TargetState, STATE_DIR};
use crate::fsx::{self, dirstack::DirStack, xattr, AsFdBorrow};
use crate::progress::Progress;
use crate::report::{Report, Warning};
use crate::stream::check::read_data;
use crate::stream::front::read_front;
use crate::stream::header::SnapshotRef;
use crate::stream::payload::Segment;
use crate::stream::reader::{Digest, StreamReader};
use crate::stream::set::ImageSetReader;
use crate::tree::{Inode, Kind, Tree, ROOT_INO};
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

/// What the user asked for.
pub struct RestoreOptions {
    /// Stream to read.
    pub input: crate::media::Input,
    /// Directory to restore into.
    pub target: PathBuf,
    /// Restore into a non-empty target, replacing what is in the way.
    pub force: bool,
    /// Also recompute the stream's SHA-256 digest list.
    pub digest: Digest,
    /// Wait for another restore into the same target, or fail at once.
    pub wait: crate::lock::Wait,
    /// The snapshot earlier inputs of the same run brought the target to
    /// (for what a failure says was restored).
    pub restored_before: Option<SnapshotRef>,
}

/// The `--json` summary of a restore.
#[derive(Serialize)]
pub struct RestoreSummary {
    /// Always "restore".
    pub command: &'static str,
    /// "ok" or "warnings".
    pub status: &'static str,
    /// The stream read.
    pub input: String,
    /// The target directory.
    pub target: String,
    /// The snapshot the target now holds.
    pub snapshot: SnapshotRef,
    /// Metadata entries restored.
    pub entries: u64,
    /// Data blocks written.
    pub data_blocks: u64,
    /// Data bytes written.
    pub data_bytes: u64,
    /// Stream bytes read.
    pub stream_bytes: u64,
    /// Wall-clock seconds.
    pub elapsed_seconds: f64,
    /// Entries that could not be restored exactly.
    pub warnings: Vec<Warning>,
    /// The stream was damaged (read by salvage): nothing after it on the
    /// same input is read.
    #[serde(skip)]
    pub damaged: bool,
}

impl RestoreSummary {
    /// The summary of a restore that brought `opts.target` to `snapshot`.
    pub(super) fn new(
        opts: &RestoreOptions,
        report: &Report,
        snapshot: SnapshotRef,
        entries: u64,
        totals: &crate::stream::check::DataTotals,
        stream_bytes: u64,
        started: std::time::Instant,
    ) -> Self {
        RestoreSummary {
            command: "restore",
            status: report.status_word(),
            input: opts.input.name().to_string(),
            target: opts.target.display().to_string(),
            snapshot,
            entries,
            data_blocks: totals.blocks,
            data_bytes: totals.bytes,
            stream_bytes,
            elapsed_seconds: started.elapsed().as_secs_f64(),
            warnings: report.warnings(),
            damaged: false,
        }
    }
}

/// Runs `restore -r`.
pub fn restore(opts: &RestoreOptions, report: &Report) -> Result<Vec<RestoreSummary>> {
    let target = opts.target.display();
    let nothing = |e: anyhow::Error, last: Option<&SnapshotRef>| match last {
        None => anyhow!("{e:#}; nothing was restored into {target}"),
        Some(s) => anyhow!(
            "{e:#}; the streams before it were restored: {target} holds snapshot {}",
            s.id
        ),
    };
    let mut set =
        ImageSetReader::open(&opts.input).map_err(|e| nothing(e, opts.restored_before.as_ref()))?;
    let mut out: Vec<RestoreSummary> = Vec::new();
    loop {
        // Without the digest check, damaged records are skipped and named
        // (a full image restores everything else; an increment refuses
        // them).
        let r = match opts.digest {
            Digest::Skip => set.next_salvaging(Digest::Skip),
            Digest::Check => set.next_stream(opts.digest),
        };
        let r = match r {
            Err(e) if !out.is_empty() => {
                // After a stream that was restored, what follows does not
                // open as a stream: named, and left alone; the restore of
                // what came before stands (exit status 1, not 2).
                report.warn(
                    opts.input.name().as_bytes(),
                    format!(
                        "the input goes on at byte {} after the stream(s) restored into {target}, but not with a stream that can be read ({e:#}); that part was not applied",
                        set.position()
                    ),
                );
                break;
            }
            r => {
                let last = out
                    .last()
                    .map(|s| &s.snapshot)
                    .or(opts.restored_before.as_ref());
                r.map_err(|e| nothing(e, last))?
            }
        };
        let Some(r) = r else { break };
        let summary = restore_stream(opts, r, report)?;
        let damaged = summary.damaged;
        out.push(summary);
        if damaged {
            break;
        }
    }
    if let Some(t) = set.trailing() {
        report.warn(opts.input.name().as_bytes(), t);
    }
    Ok(out)
}

/// Restores one stream of the input (an image set holds several).
fn restore_stream(
    opts: &RestoreOptions,
    mut r: StreamReader,
    report: &Report,
) -> Result<RestoreSummary> {
    let started = std::time::Instant::now();
    let h = r.header.clone();
    let target = &opts.target;
    match std::fs::symlink_metadata(target) {
        Ok(m) if !m.is_dir() => bail!("restore target {} is not a directory", target.display()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir_all(target)
            .with_context(|| format!("cannot create restore target {}", target.display()))?,
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot access restore target {}", target.display()))
        }
    }
    // The lock first: what the target holds is only looked at while no
    // other restore can change it.
    let paths = StatePaths::new(target);
    let _lock = paths.lock(target, opts.wait)?;
    if !h.full {
        return super::apply::apply(opts, r, report, started);
    }
    if opts.force {
        // A pending increment is finished or undone first: entries a user
        // had in the target may be inside its working directory.
        super::apply::recover(target, true, &paths, report)?;
    } else {
        check_empty(target)?;
    }
    let root = fsx::open_dir_path(target)
        .with_context(|| format!("cannot open restore target {}", target.display()))?;
    let bs = h.block_size as u64;
    let front = read_front(&mut r).map_err(|e| {
        let e = match r.damage().first() {
            Some(d) => anyhow!(
                "{e:#} (the metadata section is damaged at stream byte {}: {})",
                d.from,
                d.why
            ),
            None => e,
        };
        anyhow!("{e:#}; nothing was restored into {}", target.display())
    })?;
    paths.begin(&h.snapshot, r.name())?;
    let mut apply = Apply::new(root, opts.force, report)?;
    let fail = |e: anyhow::Error| {
        anyhow!(
            "{e:#}; the target {} is incomplete: remove it, or rerun the restore with --force",
            target.display()
        )
    };
    apply.skeleton(&front.tree).map_err(fail)?;
    let progress = Progress::bytes(front.image.carried_blocks().saturating_mul(bs), "restore");
    let tree = &front.tree;
    let totals = read_data(&mut r, &front, |s, d| {
        progress.inc(s.len as u64);
        apply.write(tree, s, d)
    })
    .map_err(fail)?;
    drop(progress);
    apply.finish(tree).map_err(fail)?;
    let damaged = !r.damage().is_empty();
    if damaged && salvaged(&r, &front, &totals, bs, target, report) > 0 {
        return Ok(RestoreSummary {
            damaged: true,
            ..RestoreSummary::new(
                opts,
                report,
                h.snapshot.clone(),
                front.entries,
                &totals,
                r.offset(),
                started,
            )
        });
    }
    let mut summary = committed(
        opts,
        report,
        &paths,
        &h,
        front,
        &totals,
        r.offset(),
        started,
    )?;
    summary.damaged = damaged;
    Ok(summary)
}

/// Names what a damaged stream lost: each unreadable stretch, and each
/// file with the byte ranges it did not get; returns how many files lost
/// data. The target keeps everything else, but when files lost data it is
/// not recorded as holding the snapshot (increments cannot be applied to
/// it). Damage that lost no data (in the relocation table or the end
/// record) leaves a complete restore.
fn salvaged(
    r: &crate::stream::reader::StreamReader,
    front: &crate::stream::front::Front,
    totals: &crate::stream::check::DataTotals,
    bs: u64,
    target: &std::path::Path,
    report: &Report,
) -> usize {
    for d in r.damage() {
        let to =
            d.to.map(|t| t.to_string())
                .unwrap_or_else(|| "the end".into());
        report.warn(
            r.name().as_bytes(),
            format!(
                "stream bytes {}..{to} unreadable ({}); skipped",
                d.from, d.why
            ),
        );
    }
    let lost = crate::stream::check::lost_ranges(front, &totals.seen, bs);
    let mut files = std::collections::BTreeSet::new();
    let mut names: std::collections::HashMap<u64, Vec<&crate::tree::Dirent>> = Default::default();
    if !lost.is_empty() {
        for d in &front.tree.dirents {
            names.entry(d.ino).or_default().push(d);
        }
    }
    for (ino, from, to) in &lost {
        files.insert(*ino);
        // Every name of a hard-linked file shows the loss.
        for d in names.get(ino).map(|v| &v[..]).unwrap_or(&[]) {
            report.warn(
                &front.tree.dirent_path(d),
                format!("lost bytes {from}..{to} (zeros in the restored file)"),
            );
        }
    }
    if !files.is_empty() {
        report.warn(
            r.name().as_bytes(),
            format!(
                "{} damaged stretch(es); {} file(s) lost data (named above); everything else was restored into {}, which is not recorded as snapshot {}, so increments cannot be applied to it",
                r.damage().len(),
                files.len(),
                target.display(),
                r.header.snapshot.id
            ),
        );
    }
    files.len()
}

/// Records the snapshot the target now holds (atomically, last) and
/// summarises the restore; shared by full and incremental restores.
#[allow(clippy::too_many_arguments)]
pub(super) fn committed(
    opts: &RestoreOptions,
    report: &Report,
    paths: &StatePaths,
    h: &crate::stream::header::StreamHeader,
    front: crate::stream::front::Front,
    totals: &crate::stream::check::DataTotals,
    stream_bytes: u64,
    started: std::time::Instant,
) -> Result<RestoreSummary> {
    let entries = front.entries;
    paths.commit(&TargetState {
        source_uuid: h.source_uuid,
        snapshot: h.snapshot.clone(),
        block_size: h.block_size,
        tree: front.tree,
    })?;
    Ok(RestoreSummary::new(
        opts,
        report,
        h.snapshot.clone(),
        entries,
        totals,
        stream_bytes,
        started,
    ))
}

/// Refuses a target that holds anything but an empty `lost+found` (as on a
/// freshly made file system). Directories are read without touching their
/// access times (a refused restore leaves the target as it was).
fn check_empty(target: &std::path::Path) -> Result<()> {
    let root = fsx::open_dir_path(target)
        .with_context(|| format!("cannot read restore target {}", target.display()))?;
    let names = fsx::read_dir_names(root.as_fd())
        .with_context(|| format!("cannot read restore target {}", target.display()))?;
    for name in names {
        if name == b"lost+found"
            && fsx::open_dir(root.as_fd(), &name)
                .and_then(|d| fsx::read_dir_names(d.as_fd()))
                .is_ok_and(|n| n.is_empty())
        {
            continue;
        }
        if name == STATE_DIR.as_bytes() && is_only_lock(&target.join(STATE_DIR)) {
            // A lock file left by a restore that failed before it began.
            continue;
        }
        let what = if name == STATE_DIR.as_bytes() {
            " (it holds an earlier restore)"
        } else {
            ""
        };
        bail!(
            "restore target {} is not empty{what}; restore into an empty directory, or use --force to replace what is there",
            target.display()
        );
    }
    Ok(())
}

fn is_only_lock(state_dir: &std::path::Path) -> bool {
    fsx::open_dir_path(state_dir)
        .and_then(|d| fsx::read_dir_names(d.as_fd()))
        .is_ok_and(|n| n.iter().all(|e| e == b"lock"))
}

/// Creates entries and writes data into a target directory.
pub(crate) struct Apply<'a> {
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
    /// Entries in the way that --force replaced.
    replaced: u64,
}

/// How many replaced entries are named one by one.
const REPLACED_NAMED: u64 = 20;

/// The error of an operation on inode `ino`, naming its path. The path is
/// built only if there is an error (building it costs the depth).
pub(super) fn io_ctx<'t>(
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

impl<'a> Apply<'a> {
    pub(crate) fn new(root: OwnedFd, force: bool, report: &'a Report) -> Result<Self> {
        let d1 = root.try_clone()?;
        let d2 = root.try_clone()?;
        Ok(Apply {
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
    pub(super) fn keep_attrs(&mut self, tree: &Tree, inos: impl IntoIterator<Item = u64>) {
        self.kept.resize(tree.inodes.len() + 1, false);
        for i in inos {
            self.kept[i as usize] = true;
        }
    }

    /// Records that the tree's entries exist already (created by the
    /// incremental apply's stage), skipping device nodes a non-root user
    /// could not create.
    pub(super) fn mark_created(&mut self, tree: &Tree) {
        self.skipped = vec![false; tree.inodes.len() + 1];
        if !fsx::is_root() {
            for i in &tree.inodes {
                if matches!(i.kind, Kind::CharDev | Kind::BlockDev) {
                    self.skipped[i.ino as usize] = true;
                }
            }
        }
    }

    /// Applies ownership, xattrs, permissions and times, innermost first.
    pub(super) fn finish(&mut self, tree: &Tree) -> Result<()> {
        self.finish_attrs(tree, true)
    }

    /// As [`Apply::finish`], leaving the root directory alone (the
    /// incremental apply sets it on the real target after the swap).
    pub(super) fn finish_below_root(&mut self, tree: &Tree) -> Result<()> {
        self.finish_attrs(tree, false)
    }

    /// As [`Apply::finish`] for a selective restore: the root directory's
    /// attributes are set only when the whole tree was chosen.
    pub(crate) fn finish_selected(&mut self, tree: &Tree, whole: bool) -> Result<()> {
        self.finish_attrs(tree, whole)
    }

    fn finish_attrs(&mut self, tree: &Tree, root_too: bool) -> Result<()> {
        self.open = None;
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
            set_attrs(dir, name, inode, tree, self.report, &mut self.not_owned)?;
        }
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
pub(super) fn retry_force(
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

pub(super) fn create(dir: BorrowedFd, name: &[u8], inode: &Inode) -> io::Result<()> {
    match inode.kind {
        Kind::Dir => fsx::mkdir_at(dir, name, 0o700),
        Kind::File => {
            let fd = fsx::openat(
                dir,
                name,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                0o600,
            )?;
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

pub(super) fn set_attrs(
    dir: BorrowedFd,
    name: &[u8],
    inode: &Inode,
    tree: &Tree,
    report: &Report,
    not_owned: &mut u64,
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
        fsx::chmod_at(dir, name, a.mode).map_err(io_ctx(tree, inode.ino, "set the mode of"))?;
    }
    fsx::utimes_at(dir, name, a.atime, a.mtime).map_err(io_ctx(
        tree,
        inode.ino,
        "set the times of",
    ))?;
    Ok(())
}
