//! `restore -r` of an increment onto a target that holds its base.
//!
//! The target's state records the snapshot it holds and that snapshot's
//! metadata (T0). The stream brings the new metadata (T1), the set of VBNs
//! it carries, and the carried blocks. Every block of T1 is either carried
//! or held by T0 at a known file and offset.
//!
//! The apply works in phases, each recorded by a marker file, so that an
//! interrupted apply re-run with the same stream ends in exactly the right
//! state:
//!
//! - A, stage: T1's namespace is built under `.snapdump-restore/next/`.
//!   A file whose uncarried blocks all sit at the same offsets of one T0
//!   file inherits it: a hard link, no data copied (the common case: a file
//!   with a few changed blocks, or a renamed file). Any other file is built
//!   fresh, copying its uncarried blocks from T0's files. Nothing of T0 is
//!   modified, so an interrupted stage is simply redone. Marker `staged`.
//! - B, data: carried blocks are written into next/ (idempotent).
//! - C, finish: inherited files lose the blocks T1 does not have (holes
//!   punched, size set); attributes are applied innermost first. Marker
//!   `swap1`.
//! - D, swap: the target's old entries move into `old/` (marker `swap2`),
//!   next/'s entries move into the target, the root's attributes are set,
//!   old/ is removed and the new state is committed atomically.

use super::check::{read_data, read_front, Front};
use super::full::{committed, create, io_ctx, set_attrs, Apply, RestoreOptions, RestoreSummary};
use super::state::{StatePaths, STATE_DIR};
use crate::atomic::replace_file;
use crate::fsx::{self, dirstack::DirStack};
use crate::progress::Progress;
use crate::report::Report;
use crate::runs::RunSet;
use crate::stream::reader::StreamReader;
use crate::tree::{Inode, Kind, Tree, ROOT_INO};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

const NEXT: &[u8] = b"next";
const OLD: &[u8] = b"old";

/// Where each VBN of T0 lives: sorted runs (vbn, count, inode, file block).
struct VbnIndex(Vec<(u64, u64, u64, u64)>);

impl VbnIndex {
    fn new(t0: &Tree) -> VbnIndex {
        let mut v: Vec<_> = t0
            .inodes
            .iter()
            .flat_map(|i| {
                i.extents
                    .iter()
                    .map(move |x| (x.vbn, x.count, i.ino, x.block))
            })
            .collect();
        v.sort_unstable();
        VbnIndex(v)
    }
    /// (inode, file block) holding `vbn` in T0, and how many consecutive
    /// VBNs from there stay in that same run.
    fn find(&self, vbn: u64) -> Option<(u64, u64, u64)> {
        let i = self.0.partition_point(|e| e.0 + e.1 <= vbn);
        self.0
            .get(i)
            .filter(|e| e.0 <= vbn)
            .map(|e| (e.2, e.3 + (vbn - e.0), e.0 + e.1 - vbn))
    }
}

/// How a T1 file gets its uncarried blocks.
enum Source {
    /// Hard-link this T0 inode: every uncarried block is already in place.
    Inherit(u64),
    /// A new file; copy these runs: (file block, T0 inode, T0 block, count).
    Fresh(Vec<(u64, u64, u64, u64)>),
}

/// Decides, for every T1 file, where its uncarried blocks come from. Pure:
/// a re-run computes the same answer.
fn decide(t0: &Tree, t1: &Tree, carried: &RunSet) -> Result<Vec<Option<Source>>> {
    let idx = VbnIndex::new(t0);
    let mut inherited = HashSet::new();
    let mut out = Vec::with_capacity(t1.inodes.len());
    for f in &t1.inodes {
        if f.kind != Kind::File {
            out.push(None);
            continue;
        }
        // Runs, not blocks: the counts come from the stream.
        let mut runs: Vec<(u64, u64, u64, u64)> = Vec::new();
        for x in &f.extents {
            for (v, n, in_stream) in carried.split(x.vbn, x.count) {
                if in_stream {
                    continue;
                }
                let mut done = 0;
                while done < n {
                    let vv = v + done;
                    let b = x.block + (vv - x.vbn);
                    let (g, gb, avail) = idx.find(vv).ok_or_else(|| {
                        anyhow!(
                            "the stream relies on VBN {vv} (block {b} of {}), which the target's snapshot does not hold; the chain is broken",
                            crate::names::escape(&t1.path(f.ino))
                        )
                    })?;
                    let m = avail.min(n - done);
                    match runs.last_mut() {
                        Some(r) if r.0 + r.3 == b && r.1 == g && r.2 + r.3 == gb => r.3 += m,
                        _ => runs.push((b, g, gb, m)),
                    }
                    done += m;
                }
            }
        }
        let g0 = runs.first().map(|r| r.1);
        let in_place = runs.iter().all(|r| Some(r.1) == g0 && r.0 == r.2);
        out.push(Some(match g0 {
            Some(g) if in_place && inherited.insert(g) => Source::Inherit(g),
            _ => Source::Fresh(runs),
        }));
    }
    Ok(out)
}

/// Phase markers in the state directory.
struct Markers<'a> {
    paths: &'a StatePaths,
}

impl Markers<'_> {
    fn has(&self, name: &str) -> bool {
        self.paths.dir.join(name).exists()
    }
    fn set(&self, root: &OwnedFd, name: &str) -> Result<()> {
        fsx::syncfs(root.as_fd()).context("cannot flush the target file system")?;
        replace_file(&self.paths.dir.join(name), b"")
    }
    fn clear(&self) {
        for m in ["staged", "swap1", "swap2"] {
            let _ = std::fs::remove_file(self.paths.dir.join(m));
        }
    }
}

/// Applies the increment `r` (already opened) to `opts.target`.
pub fn apply(
    opts: &RestoreOptions,
    mut r: StreamReader,
    report: &Report,
    started: std::time::Instant,
) -> Result<RestoreSummary> {
    let h = r.header.clone();
    let target = &opts.target;
    let base = h.base.clone().expect("an increment has a base");
    let paths = StatePaths::new(target);
    let Some(state) = paths.load()? else {
        bail!(
            "{} is a level-{} increment based on snapshot {}; the target {} holds no restored snapshot: restore the chain from its level-0 stream first",
            r.name(),
            h.snapshot.level,
            base.id,
            target.display()
        );
    };
    if state.source_uuid != h.source_uuid {
        bail!(
            "{} is from another source ({}) than the target {} holds; refusing to mix chains",
            r.name(),
            crate::names::escape(&h.source_path),
            target.display()
        );
    }
    if state.snapshot.uuid != base.uuid {
        let why = if state.snapshot.uuid == h.snapshot.uuid {
            "this stream was already applied".to_string()
        } else {
            format!(
                "the stream needs snapshot {} ({})",
                base.id,
                base.time.rfc3339()
            )
        };
        bail!(
            "{}: the target {} holds snapshot {} ({}) and expects a stream based on it; {why}",
            r.name(),
            target.display(),
            state.snapshot.id,
            state.snapshot.time.rfc3339()
        );
    }
    let pending = std::fs::read_to_string(paths.incomplete()).ok();
    if let Some(p) = &pending {
        if !p.contains(&crate::util::hex(&h.snapshot.uuid)) {
            bail!(
                "the target {} has an interrupted restore pending ({}); rerun that restore with the same stream",
                target.display(),
                p.trim()
            );
        }
    } else {
        Markers { paths: &paths }.clear();
    }
    if state.block_size != h.block_size {
        bail!(
            "{}: block size {} differs from the target's chain ({})",
            r.name(),
            h.block_size,
            state.block_size
        );
    }
    paths.begin(&h.snapshot, r.name())?;
    let root = fsx::open_dir_path(target)
        .with_context(|| format!("cannot open restore target {}", target.display()))?;
    let sdir = fsx::open_dir(root.as_fd(), STATE_DIR.as_bytes())
        .map_err(|e| anyhow!("cannot open the restore state: {e}"))?;
    let fail = |e: anyhow::Error| {
        anyhow!(
            "{e:#}; the target {} is between snapshots {} and {}: rerun the same restore to finish it",
            target.display(),
            state.snapshot.id,
            h.snapshot.id
        )
    };
    let front = read_front(&mut r).map_err(fail)?;
    let sources = decide(&state.tree, &front.tree, &front.carried).map_err(fail)?;
    let m = Markers { paths: &paths };
    let swapping = m.has("swap1") || m.has("swap2");
    if !m.has("staged") && !swapping {
        let _ = fsx::remove_tree_at(sdir.as_fd(), NEXT);
        let _ = fsx::remove_tree_at(sdir.as_fd(), OLD);
        fsx::mkdir_at(sdir.as_fd(), NEXT, 0o700)
            .map_err(|e| fail(anyhow!("cannot create the staging directory: {e}")))?;
        stage(
            &root,
            &sdir,
            &state.tree,
            &front.tree,
            &sources,
            h.block_size as u64,
            report,
        )
        .map_err(fail)?;
        m.set(&root, "staged").map_err(fail)?;
    }
    if swapping {
        // Killed late in the swap: next/ may already have been emptied and
        // removed; an empty one lets the remaining steps run unchanged.
        let _ = fsx::mkdir_at(sdir.as_fd(), NEXT, 0o700);
    }
    let next = fsx::open_dir(sdir.as_fd(), NEXT)
        .map_err(|e| fail(anyhow!("cannot open the staging directory: {e}")))?;
    let bs = h.block_size as u64;
    let mut writer = Apply::new(next.try_clone()?, false, report)?;
    writer.mark_created(&front.tree);
    let progress = Progress::bytes(front.image.carried_blocks().saturating_mul(bs), "restore");
    let tree = &front.tree;
    let totals = if swapping {
        // The data is in place already; the stream is still read through so
        // that it is checked to the end.
        read_data(&mut r, &front, |_, _| Ok(()))
    } else {
        read_data(&mut r, &front, |s, d| {
            crate::failpoint::hit("apply-data");
            progress.inc(s.len as u64);
            writer.write(tree, s, d)
        })
    }
    .map_err(fail)?;
    if let Some(d) = r.damage().first() {
        // An increment with lost blocks cannot be applied: the tree that
        // is visible stays at its snapshot.
        return Err(fail(anyhow::anyhow!(
            "{}: damaged at stream byte {}: {}",
            r.name(),
            d.from,
            d.why
        )));
    }
    drop(progress);
    if !swapping {
        crate::failpoint::hit("apply-trim");
        trim_inherited(&next, &state.tree, &front.tree, &sources, bs).map_err(fail)?;
        writer.finish_below_root(tree).map_err(fail)?;
        m.set(&root, "swap1").map_err(fail)?;
    }
    swap(&root, &sdir, &front, &m).map_err(fail)?;
    let root_inode = front.tree.inode(ROOT_INO);
    let mut not_owned = 0;
    set_attrs(
        root.as_fd(),
        b"",
        root_inode,
        &front.tree,
        report,
        &mut not_owned,
    )
    .map_err(fail)?;
    match fsx::remove_tree_at(sdir.as_fd(), OLD) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(fail(anyhow!("cannot remove the old tree: {e}")));
        }
        _ => {}
    }
    fsx::unlink_at(sdir.as_fd(), NEXT, true)
        .map_err(|e| fail(anyhow!("cannot remove the staging directory: {e}")))?;
    fsx::syncfs(root.as_fd()).map_err(|e| fail(e.into()))?;
    crate::failpoint::hit("apply-commit");
    let summary = committed(
        opts,
        report,
        &paths,
        &h,
        front,
        &totals,
        r.offset(),
        started,
    )?;
    m.clear();
    Ok(summary)
}

/// Phase A: builds T1's namespace under next/, linking inherited files and
/// copying the uncarried blocks of fresh ones from T0.
#[allow(clippy::too_many_arguments)]
fn stage(
    root: &OwnedFd,
    sdir: &OwnedFd,
    t0: &Tree,
    t1: &Tree,
    sources: &[Option<Source>],
    bs: u64,
    report: &Report,
) -> Result<()> {
    let next = fsx::open_dir(sdir.as_fd(), NEXT)?;
    let mut new_dirs = DirStack::new(next.try_clone()?);
    let mut link_dirs = DirStack::new(next.try_clone()?);
    let mut old_dirs = DirStack::new(root.try_clone()?);
    let mut buf = Vec::new();
    for d in &t1.dirents {
        if d.parent == 0 {
            continue;
        }
        crate::failpoint::hit("apply-stage");
        if d.parent == ROOT_INO && d.name == STATE_DIR.as_bytes() {
            bail!("the stream holds an entry named {STATE_DIR} at its root, which is reserved for restore state");
        }
        let dir = new_dirs
            .enter(&t1.dir_chain(d.parent), |i| &t1.primary(i).name[..])
            .map_err(io_ctx(t1, d.parent, "open directory"))?;
        let inode = t1.inode(d.ino);
        if !std::ptr::eq(t1.primary(d.ino), d) {
            let p = t1.primary(d.ino);
            let src = link_dirs
                .enter(&t1.dir_chain(p.parent), |i| &t1.primary(i).name[..])
                .map_err(io_ctx(t1, p.parent, "open directory"))?;
            fsx::link_at(src, &p.name, dir, &d.name).map_err(|e| {
                anyhow!(
                    "cannot create hard link {}: {e}",
                    crate::names::escape(&t1.dirent_path(d))
                )
            })?;
            continue;
        }
        if matches!(inode.kind, Kind::CharDev | Kind::BlockDev) && !fsx::is_root() {
            report.warn(
                &t1.path(d.ino),
                "device node not restored: only root can create devices",
            );
            continue;
        }
        match &sources[(d.ino - 1) as usize] {
            Some(Source::Inherit(g)) => {
                let gp = t0.primary(*g);
                let gdir = old_dirs
                    .enter(&t0.dir_chain(gp.parent), |i| &t0.primary(i).name[..])
                    .map_err(io_ctx(t0, gp.parent, "open directory"))?;
                fsx::link_at(gdir, &gp.name, dir, &d.name).map_err(io_ctx(
                    t1,
                    d.ino,
                    "link the previous version of",
                ))?;
            }
            Some(Source::Fresh(runs)) => {
                create(dir, &d.name, inode).map_err(io_ctx(t1, d.ino, "create"))?;
                if runs.is_empty() {
                    continue;
                }
                let out = fsx::openat(dir, &d.name, libc::O_WRONLY | libc::O_NOFOLLOW, 0)
                    .map_err(io_ctx(t1, d.ino, "open"))?;
                copy_runs(&out, runs, t0, &mut old_dirs, t1.inode(d.ino), bs, &mut buf)?;
            }
            None => create(dir, &d.name, inode).map_err(io_ctx(t1, d.ino, "create"))?,
        }
    }
    Ok(())
}

/// Copies uncarried blocks from T0's files into a fresh file.
fn copy_runs(
    out: &OwnedFd,
    runs: &[(u64, u64, u64, u64)],
    t0: &Tree,
    old_dirs: &mut DirStack,
    f: &Inode,
    bs: u64,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let mut open: Option<(u64, OwnedFd)> = None;
    for &(b, g, gb, n) in runs {
        if open.as_ref().map(|o| o.0) != Some(g) {
            let gp = t0.primary(g);
            let dir = old_dirs
                .enter(&t0.dir_chain(gp.parent), |i| &t0.primary(i).name[..])
                .map_err(io_ctx(t0, gp.parent, "open directory"))?;
            let fd = crate::scan::open_file(dir, &gp.name).map_err(io_ctx(t0, g, "open"))?;
            open = Some((g, fd));
        }
        let src = &open.as_ref().unwrap().1;
        let off = b * bs;
        let len = ((b + n) * bs).min(f.size).saturating_sub(off) as usize;
        buf.resize(len, 0);
        let got = fsx::pread_full(src.as_fd(), buf, gb * bs).map_err(io_ctx(t0, g, "read"))?;
        buf[got..].fill(0);
        fsx::pwrite_all(out.as_fd(), buf, off)
            .map_err(|e| anyhow!("cannot write a staged file: {e}"))?;
    }
    Ok(())
}

/// Phase C (data part): an inherited file loses the blocks its new version
/// does not have, and gets its new size.
fn trim_inherited(
    next: &OwnedFd,
    t0: &Tree,
    t1: &Tree,
    sources: &[Option<Source>],
    bs: u64,
) -> Result<()> {
    let mut dirs = DirStack::new(next.try_clone()?);
    for (i, s) in sources.iter().enumerate() {
        let Some(Source::Inherit(g)) = s else {
            continue;
        };
        let f = &t1.inodes[i];
        let have = RunSet::from_runs(f.extents.iter().map(|x| (x.block, x.count)));
        let d = t1.primary(f.ino);
        let dir = dirs
            .enter(&t1.dir_chain(d.parent), |i| &t1.primary(i).name[..])
            .map_err(io_ctx(t1, d.parent, "open directory"))?;
        let fd = fsx::openat(dir, &d.name, libc::O_WRONLY | libc::O_NOFOLLOW, 0)
            .map_err(io_ctx(t1, f.ino, "open"))?;
        let blocks = f.size.div_ceil(bs);
        for x in &t0.inode(*g).extents {
            for (b, n, kept) in have.split(x.block, x.count) {
                let n = n.min(blocks.saturating_sub(b));
                if !kept && n > 0 {
                    fsx::punch_hole(fd.as_fd(), b * bs, n * bs).map_err(io_ctx(
                        t1,
                        f.ino,
                        "punch a hole in",
                    ))?;
                }
            }
        }
        fsx::ftruncate(fd.as_fd(), f.size).map_err(io_ctx(t1, f.ino, "set the size of"))?;
    }
    Ok(())
}

/// Phase D: old entries out, new entries in.
fn swap(root: &OwnedFd, sdir: &OwnedFd, front: &Front, m: &Markers) -> Result<()> {
    let keep_lost_found = !front
        .tree
        .dirents
        .iter()
        .any(|d| d.parent == ROOT_INO && d.name == b"lost+found");
    if !m.has("swap2") {
        if let Err(e) = fsx::mkdir_at(sdir.as_fd(), OLD, 0o700) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                bail!(
                    "cannot create {}: {e}",
                    Path::new(STATE_DIR).join("old").display()
                );
            }
        }
        let old = fsx::open_dir(sdir.as_fd(), OLD)?;
        for name in fsx::read_dir_names(root.as_fd())? {
            if name == STATE_DIR.as_bytes() || (keep_lost_found && name == b"lost+found") {
                continue;
            }
            crate::failpoint::hit("apply-swap-out");
            fsx::rename_at(root.as_fd(), &name, old.as_fd(), &name)
                .map_err(|e| anyhow!("cannot move {} aside: {e}", crate::names::escape(&name)))?;
        }
        m.set(root, "swap2")?;
    }
    let next = fsx::open_dir(sdir.as_fd(), NEXT)?;
    for name in fsx::read_dir_names(next.as_fd())? {
        crate::failpoint::hit("apply-swap-in");
        fsx::rename_at(next.as_fd(), &name, root.as_fd(), &name).map_err(|e| {
            anyhow!(
                "cannot move {} into place: {e}",
                crate::names::escape(&name)
            )
        })?;
    }
    Ok(())
}
