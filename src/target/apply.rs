//! `restore -r` of an increment onto a target that holds its base.
//!
//! The target's state records the snapshot it holds and that snapshot's
//! metadata (T0). The stream brings the new metadata (T1), the set of VBNs
//! it carries, and the carried blocks. Every block of T1 is either carried
//! or held by T0 at a known file and offset.
//!
//! Nothing the user sees changes before every byte of the increment has
//! been read and checked (DESIGN contract 8). The apply works in the
//! directory `.snapdump-restore/apply/` ([`super::pending`]):
//!
//! 1. **Check** (undone, not finished, if interrupted or refused). The
//!    target is surveyed against T0 ([`super::survey`]): entries that are
//!    not T0's are kept where T1 keeps their directory, and refused by name
//!    otherwise (`--force` replaces them); a changed or missing T0 file the
//!    increment builds on refuses the increment. T1's namespace is staged
//!    (beside the target, or under `apply/next/`): a file whose kept
//!    blocks all sit at the same offsets of one T0 file (and are at least
//!    as many as its carried ones) inherits that file as a hard link; any
//!    other file is built
//!    fresh, copying its kept blocks from T0. The stream is then read to
//!    its end: carried blocks of fresh files go into them (they are not
//!    visible), carried blocks of inherited files into the spool. When the
//!    end record has been checked, the spool is synced, T1 is saved as
//!    `next-state`, and the marker `checked` is written.
//! 2. **Finish** (idempotent; an interrupted one is completed by the next
//!    run, from what `apply/` keeps, without the stream). By default T1's
//!    tree is staged beside the target ([`super::exchange`]): each
//!    inherited file the finish changes is first made a private copy,
//!    then the spool is written, files lose the blocks T1 does not have,
//!    foreign entries move in, the tree gets its restore state and
//!    attributes (`swap1`), and one RENAME_EXCHANGE swaps it with the
//!    target: a kill leaves T0 or T1, never a mix. In place (`--inplace`,
//!    mount points), T1's tree is staged in `apply/next/`, the spool is
//!    written into the shared files themselves, T0's entries move into
//!    `apply/old/` (`swap2`) and T1's into the target; a kill there leaves
//!    a mix until the next run finishes it. Either way the new state is
//!    then committed and `apply/` removed.
//!
//! The extra space is bounded: the spool holds only blocks of inherited
//! files (at most the increment's carried data), and a fresh file is built
//! only where its kept blocks are fewer than its carried ones.

use super::access::{make_writable, ours, with_access};
use super::delta::Layout;
use super::exchange::{Privatizer, Site};
use super::flags::FlagPass;
use super::pending::{ModeJournal, Pending, DELTA_MARKER, NEXT, OLD};
use super::state::{StatePaths, TargetState, STATE_DIR};
use super::summary::{committed, RestoreOptions, RestoreSummary};
use super::survey::{survey, Depth, Survey};
use super::writer::{create, io_ctx, set_attrs, DirWriter};
use crate::fsx::{self, dirstack::DirStack};
use crate::names::escape;
use crate::progress::Progress;
use crate::report::Report;
use crate::runs::RunSet;
use crate::stream::check::{read_data, DataTotals};
use crate::stream::front::{read_front, Front};
use crate::stream::header::SnapshotRef;
use crate::stream::reader::StreamReader;
use crate::tree::{Inode, Kind, Tree, ROOT_INO};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

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

/// Decides, for every T1 file, where its uncarried blocks come from. Pure
/// (a re-run computes the same answer); `inheritable(g)` says whether T0
/// inode `g` may become a T1 file in place (a non-root user cannot take
/// over another user's file).
fn decide(
    t0: &Tree,
    t1: &Tree,
    carried: &RunSet,
    inheritable: &dyn Fn(u64) -> bool,
) -> Result<Vec<Option<Source>>> {
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
        let mut carried_blocks = 0u64;
        for x in &f.extents {
            for (v, n, in_stream) in carried.split(x.vbn, x.count) {
                if in_stream {
                    carried_blocks += n;
                    continue;
                }
                let mut done = 0;
                while done < n {
                    let vv = v + done;
                    let b = x.block + (vv - x.vbn);
                    let (g, gb, avail) = idx.find(vv).ok_or_else(|| {
                        anyhow!(
                            "the stream relies on VBN {vv} (block {b} of {}), which the target's snapshot does not hold; the chain is broken",
                            escape(&t1.path(f.ino))
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
        let kept: u64 = runs.iter().map(|r| r.3).sum();
        let in_place = runs.iter().all(|r| Some(r.1) == g0 && r.0 == r.2);
        out.push(Some(match g0 {
            // Inheriting spools the carried blocks; building afresh copies
            // the kept ones: take whichever moves less.
            Some(g)
                if in_place
                    && kept >= carried_blocks
                    && t0.inode(g).kind == Kind::File
                    && same_early_flags(t0.inode(g), f)
                    && inheritable(g)
                    && inherited.insert(g) =>
            {
                Source::Inherit(g)
            }
            _ => Source::Fresh(runs),
        }));
    }
    Ok(out)
}

/// Whether a T0 file can become T1's in place as far as its flags go:
/// no-CoW and compression (`C`, `c`, `m`) take only on an empty file
/// (btrfs ignores `C` on one with data), so a file that gains or loses
/// them is built afresh, with them set before its data.
fn same_early_flags(old: &Inode, new: &Inode) -> bool {
    (old.flags ^ new.flags) & crate::fsx::flags::EARLY == 0
}

/// The T0 inodes the increment builds on.
fn source_set(sources: &[Option<Source>]) -> HashSet<u64> {
    let mut set = HashSet::new();
    for s in sources.iter().flatten() {
        match s {
            Source::Inherit(g) => {
                set.insert(*g);
            }
            Source::Fresh(runs) => set.extend(runs.iter().map(|r| r.1)),
        }
    }
    set
}

/// Up to five items and a count of the rest, for one-line messages.
fn some_of(items: &[String]) -> String {
    let mut s = items[..items.len().min(5)].join(", ");
    if items.len() > 5 {
        s += &format!(" and {} more", items.len() - 5);
    }
    s
}

/// The path of a foreign entry (its T0 directory's path and its name).
fn foreign_path(t0: &Tree, dir: u64, name: &[u8]) -> Vec<u8> {
    if dir == ROOT_INO {
        return name.to_vec();
    }
    let mut p = t0.path(dir);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// Refuses an increment the target cannot take as it is, before anything
/// changes; with `force`, names what it will replace.
#[allow(clippy::too_many_arguments)]
fn judge(
    s: &Survey,
    t0: &Tree,
    sources: &HashSet<u64>,
    inherits: &HashSet<u64>,
    force: bool,
    held: &SnapshotRef,
    next: &SnapshotRef,
    report: Option<&Report>,
) -> Result<()> {
    let path = |i: u64| escape(&t0.path(i));
    let mut needed = Vec::new();
    for &i in &s.missing {
        if sources.contains(&i) {
            needed.push(format!("{} is missing (or of another type)", path(i)));
        }
    }
    for &i in &s.changed {
        if sources.contains(&i) {
            needed.push(format!("{} changed", path(i)));
        }
    }
    if !needed.is_empty() {
        bail!(
            "{} in the target since snapshot {} was restored, and the increment builds on it: put it back as it was (restore -x it from the chain) or restore the chain afresh",
            some_of(&needed),
            held.id
        );
    }
    if !fsx::is_root() {
        // A non-root user moves the target's top-level entries and writes
        // into inherited files: both must be the user's.
        let mut theirs = Vec::new();
        for d in t0.dirents.iter() {
            let top = d.parent == ROOT_INO && t0.inode(d.ino).kind == Kind::Dir;
            if d.parent == 0 || top || inherits.contains(&d.ino) {
                if let Some((uid, _)) = s.owner[d.ino as usize] {
                    if !ours(uid) {
                        theirs.push(format!("{} (owner uid {uid})", path(d.ino)));
                    }
                }
            }
        }
        if !theirs.is_empty() {
            bail!(
                "{} belong to another user; as uid {} the increment cannot replace them: apply it as root or as their owner",
                some_of(&theirs),
                fsx::euid()
            );
        }
    }
    let mut in_the_way = Vec::new();
    let mut immovable = Vec::new();
    for f in &s.foreign {
        let path = escape(&foreign_path(t0, f.dir, &f.name));
        let moves = f.home.is_some() && f.dir != ROOT_INO;
        let removed = f.home.is_none() && !f.empty_dir;
        if removed {
            in_the_way.push(path.clone());
        }
        // A non-root user moves a directory to another parent only if it
        // is theirs ("..": it must be writable), and takes entries out of
        // a directory, or removes them, only where the directory is theirs.
        let dir_ours = s.owner[f.dir as usize].is_some_and(|(uid, _)| ours(uid));
        if (moves && (!dir_ours || (f.is_dir && !ours(f.uid))))
            || (removed && force && (!dir_ours || !ours(f.uid)))
        {
            immovable.push(format!("{path} (owner uid {})", f.uid));
        }
    }
    if !immovable.is_empty() {
        bail!(
            "{} in the target must be moved or removed for the new snapshot, and as uid {} the increment cannot: apply it as root, or move them away",
            some_of(&immovable),
            fsx::euid()
        );
    }
    let mut changed = Vec::new();
    for &i in &s.changed {
        if !sources.contains(&i) {
            changed.push(path(i));
        }
    }
    if !force && (!in_the_way.is_empty() || !changed.is_empty()) {
        let mut parts = Vec::new();
        if !in_the_way.is_empty() {
            parts.push(format!(
                "{} in the target {} not part of snapshot {} and in the way of snapshot {}",
                some_of(&in_the_way),
                if in_the_way.len() == 1 { "is" } else { "are" },
                held.id,
                next.id
            ));
        }
        if !changed.is_empty() {
            parts.push(format!(
                "{} changed since snapshot {} was restored and would be replaced",
                some_of(&changed),
                held.id
            ));
        }
        bail!(
            "{}: move them away (restore -r --force lets the increment replace them; replicate --full sends a new full copy)",
            parts.join("; ")
        );
    }
    let Some(report) = report else {
        return Ok(());
    };
    for p in &in_the_way {
        report.warn(
            p.as_bytes(),
            format!(
                "not part of snapshot {}; removed to make way for snapshot {} (--force)",
                held.id, next.id
            ),
        );
    }
    for p in &changed {
        report.warn(
            p.as_bytes(),
            format!(
                "changed in the target since snapshot {} was restored; replaced by snapshot {} (--force)",
                held.id, next.id
            ),
        );
    }
    Ok(())
}

/// Gives the owner read access to one of the target's entries it cannot
/// read (a mode-000 directory or file), recording the old mode first so an
/// undone apply puts it back. Returns false when the entry is not ours.
fn open_up(
    journal: &mut ModeJournal,
    dir: BorrowedFd,
    name: &[u8],
    ino: u64,
    st: &libc::stat,
) -> Result<bool> {
    if !ours(st.st_uid) {
        return Ok(false);
    }
    let mode = st.st_mode & 0o7777;
    journal.record(ino, mode)?;
    let add = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        0o700
    } else {
        0o600
    };
    fsx::chmod_at(dir, name, mode | add)
        .map_err(|e| anyhow!("cannot make an entry readable: {e}"))?;
    Ok(true)
}

/// What the checking phase hands to the finish.
struct Checked {
    front: Front,
    totals: DataTotals,
    stream_bytes: u64,
    sources: Vec<Option<Source>>,
}

/// What the target says to an increment.
enum Admit {
    /// The target holds the increment's base: apply it.
    Apply(TargetState),
    /// The target holds the increment's snapshot because an interrupted
    /// apply of this very stream was just finished.
    Finished(TargetState),
}

/// Whether the increment `r` continues the chain the target holds: same
/// source, its base is the target's snapshot, same block size, no
/// interrupted full restore. `finished` says an interrupted apply was just
/// finished (so the target may already hold this increment's snapshot).
fn admit(r: &StreamReader, target: &Path, paths: &StatePaths, finished: bool) -> Result<Admit> {
    let h = &r.header;
    let base = h.base.clone().expect("an increment has a base");
    let Some(state) = paths.load()? else {
        bail!(
            "{} is a level-{} increment based on snapshot {}; the target {} holds no restored snapshot: restore the chain from its level-0 stream first",
            r.name(),
            h.snapshot.level,
            base.id,
            target.display()
        );
    };
    if let Ok(p) = std::fs::read_to_string(paths.incomplete()) {
        bail!(
            "the target {} holds an interrupted full restore ({}); rerun that restore with --force, then apply the increments",
            target.display(),
            p.trim()
        );
    }
    if state.source_uuid != h.source_uuid {
        bail!(
            "{} is from another source ({}) than the target {} holds; refusing to mix chains",
            r.name(),
            escape(&h.source_path),
            target.display()
        );
    }
    if state.snapshot.uuid != base.uuid {
        if state.snapshot.uuid == h.snapshot.uuid && finished {
            // This very increment was checked before an interruption and
            // has just been finished.
            return Ok(Admit::Finished(state));
        }
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
    if state.block_size != h.block_size {
        bail!(
            "{}: block size {} differs from the target's chain ({})",
            r.name(),
            h.block_size,
            state.block_size
        );
    }
    Ok(Admit::Apply(state))
}

/// Applies the increment `r` (already opened) to `opts.target`; the
/// caller holds the target's lock.
pub fn apply(
    opts: &RestoreOptions,
    r: StreamReader,
    report: &Report,
    started: std::time::Instant,
) -> Result<RestoreSummary> {
    match prepare(opts, r, report, started, None)? {
        Prepared::Staged(staged) => staged.finish(opts, report),
        Prepared::Finished(summary) => Ok(summary),
    }
}

/// What reading and checking an increment came to.
pub enum Prepared {
    /// Checked and staged; [`Staged::finish`] applies it.
    Staged(Box<Staged>),
    /// An interrupted apply of this very stream was finished instead (the
    /// stream was read through).
    Finished(RestoreSummary),
}

/// An increment read to its end and checked, its new tree staged, but not
/// yet declared checked: the target still holds its old snapshot, and a
/// kill or a drop undoes the preparation. This is the split replication
/// uses to check a stream while it arrives and apply it only when the
/// source says commit; `restore -r` finishes at once.
pub struct Staged {
    /// The target's lock, when the preparation took it itself.
    lock: Option<crate::lock::Lock>,
    target: std::path::PathBuf,
    root: OwnedFd,
    /// `None` once finished or undone.
    pending: Option<Pending>,
    journal: ModeJournal,
    state: TargetState,
    /// `None` once finished.
    checked: Option<Checked>,
    header: crate::stream::header::StreamHeader,
    started: std::time::Instant,
    force: bool,
}

/// Reads and checks the increment `r` against `opts.target` and stages
/// its tree (phase 1). The caller holds the target's lock, or passes it
/// as `lock` for the [`Staged`] to keep.
pub fn prepare(
    opts: &RestoreOptions,
    mut r: StreamReader,
    report: &Report,
    started: std::time::Instant,
    lock: Option<crate::lock::Lock>,
) -> Result<Prepared> {
    let h = r.header.clone();
    let target = &opts.target;
    let paths = StatePaths::new(target);
    let finished = recover(target, opts.force, &paths, report)?;
    let state = match admit(&r, target, &paths, finished.is_some())? {
        Admit::Apply(state) => state,
        Admit::Finished(state) => {
            // The stream is read through (a pipe's writer expects that,
            // and an image set goes on after it).
            while r.next_record()?.is_some() {}
            // A kill just after the apply's leftovers went may have left
            // immutable and append-only off.
            relock_target(target, &state.tree, report)?;
            return Ok(Prepared::Finished(RestoreSummary::new(
                opts,
                report,
                h.snapshot.clone(),
                state.tree.dirents.len() as u64,
                &DataTotals::default(),
                0,
                started,
            )));
        }
    };
    let root = fsx::open_dir_path(target)
        .with_context(|| format!("cannot open restore target {}", target.display()))?;
    let site = if opts.inplace {
        None
    } else {
        match Site::for_exchange(target, &paths)? {
            Ok(site) => Some(site),
            Err(why) => {
                note_in_place(target, &why);
                None
            }
        }
    };
    let pending = Pending::create(&paths, site)?;
    let mut journal = pending.modes()?;
    let checked = match check(opts, &mut r, &state, &root, &pending, &mut journal, report) {
        Ok(c) => c,
        Err(e) => return Err(undone(e, pending, &journal, &root, target, &state)),
    };
    Ok(Prepared::Staged(Box::new(Staged {
        lock,
        target: target.clone(),
        root,
        pending: Some(pending),
        journal,
        state,
        checked: Some(checked),
        header: h,
        started,
        force: opts.force,
    })))
}

/// Sets immutable and append-only on the tree the target now holds, once
/// nothing of the apply is left that could link to its files (a kill just
/// before leaves them off until the next restore or replicate of the
/// target, which calls this again).
fn relock_target(target: &Path, tree: &Tree, report: &Report) -> Result<()> {
    if !tree
        .inodes
        .iter()
        .any(|i| i.flags & crate::fsx::flags::LATE != 0)
    {
        return Ok(());
    }
    let root = fsx::open_dir_path(target)
        .with_context(|| format!("cannot open restore target {}", target.display()))?;
    super::flags::relock(&root, tree, report)
}

/// Sets the immutable and append-only flags the apply lifted back on the
/// tree the target holds, once the apply's working directory (which may
/// hold links to those files) is gone.
fn relock_quietly(root: &OwnedFd, tree: &Tree) -> Result<()> {
    super::flags::relock(root, tree, &Report::quiet())
}

/// Undoes the preparation of an increment that failed its check (or was
/// abandoned), and says so with the cause `e`.
fn undone(
    e: anyhow::Error,
    pending: Pending,
    journal: &ModeJournal,
    root: &OwnedFd,
    target: &Path,
    state: &TargetState,
) -> anyhow::Error {
    let status = match journal
        .restore(root, &state.tree)
        .and_then(|_| pending.remove())
        .and_then(|_| relock_quietly(root, &state.tree))
    {
        Ok(()) => format!(
            "the increment was not applied: {} is unchanged at snapshot {} ({})",
            target.display(),
            state.snapshot.id,
            state.snapshot.time.rfc3339()
        ),
        Err(u) => format!(
            "the increment was not applied, but undoing its preparation failed ({u:#}): rerun the restore to clean up"
        ),
    };
    anyhow!("{e:#}; {status}")
}

impl Staged {
    /// The snapshot the increment brings.
    pub fn snapshot(&self) -> &SnapshotRef {
        &self.header.snapshot
    }

    /// Phase 2: declares the increment checked (from here a kill is
    /// finished by the next run, not undone), finishes the new tree and
    /// records the snapshot.
    pub fn finish(mut self, opts: &RestoreOptions, report: &Report) -> Result<RestoreSummary> {
        let pending = self
            .pending
            .take()
            .expect("a staged apply is finished once");
        if let Err(e) = pending.mark(&self.root, "checked") {
            return Err(undone(
                e,
                pending,
                &self.journal,
                &self.root,
                &self.target,
                &self.state,
            ));
        }
        let target = &self.target;
        let paths = StatePaths::new(target);
        let h = &self.header;
        if let Some(c) = &self.checked {
            crate::progress::list_entries(&c.front.tree);
        }
        let state = &self.state;
        let checked = self
            .checked
            .take()
            .expect("a staged apply is finished once");
        let next_state = TargetState {
            source_uuid: h.source_uuid,
            snapshot: h.snapshot.clone(),
            block_size: h.block_size,
            tree: checked.front.tree,
        };
        let beside = pending.site.is_some();
        finish(
            target,
            &self.root,
            &pending,
            &state.tree,
            &next_state,
            &checked.sources,
            self.force,
            false,
            report,
        )
        .map_err(|e| {
            after_check(
                e,
                target,
                &paths,
                &self.root,
                state,
                (&h.snapshot, &next_state.tree),
                beside,
                report,
            )
        })?;
        // The flags to set once the old tree beside, which shares the kept
        // files, is gone (the in-place finish set them itself; only when
        // there are any: trees can be large).
        let locked = (beside
            && next_state
                .tree
                .inodes
                .iter()
                .any(|i| i.flags & crate::fsx::flags::LATE != 0))
        .then(|| next_state.tree.clone());
        let front = Front {
            tree: next_state.tree,
            ..checked.front
        };
        let summary = committed(
            opts,
            report,
            &paths,
            h,
            front,
            &checked.totals,
            checked.stream_bytes,
            self.started,
        )
        .map_err(|e| between(e, target, &state.snapshot, &h.snapshot))?;
        pending.remove()?;
        if let Some(t1) = &locked {
            relock_target(target, t1, report)?;
        }
        drop(self.lock.take());
        Ok(summary)
    }

    /// Gives the increment up: the preparation is undone and the target
    /// keeps its old snapshot (as after a refused increment).
    pub fn abandon(mut self) -> Result<()> {
        self.undo()
    }

    fn undo(&mut self) -> Result<()> {
        match self.pending.take() {
            Some(p) => {
                self.journal.restore(&self.root, &self.state.tree)?;
                p.remove()?;
                relock_quietly(&self.root, &self.state.tree)
            }
            None => Ok(()),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Neither finished nor abandoned (a cut transfer): undone, and a
        // failure to undo is left to the next run's recovery.
        let _ = self.undo();
    }
}
/// Says, once per run, that an increment is finished in place because the
/// target cannot have its new tree swapped in whole.
fn note_in_place(target: &Path, why: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        crate::progress::note(&format!(
            "{}: {why}, so increments are finished in place (a kill while one finishes leaves a mix until the next restore or replicate finishes it); restore into a directory below it for atomic applies, or pass --inplace to say this is meant",
            target.display()
        ))
    });
}

/// What a failure of the finish leaves. Finished beside the target and
/// not yet swapped in (the target's apply directory is still there), the
/// target is its old snapshot exactly: the apply is undone (so a cause
/// such as a full file system does not wedge the target) and the message
/// says the target is unchanged. Otherwise the target is between the two
/// snapshots and the next run finishes the apply.
#[allow(clippy::too_many_arguments)]
fn after_check(
    e: anyhow::Error,
    target: &Path,
    paths: &StatePaths,
    root: &OwnedFd,
    state: &TargetState,
    to: (&SnapshotRef, &Tree),
    beside: bool,
    report: &Report,
) -> anyhow::Error {
    let (to, t1) = to;
    if !beside || !paths.apply_dir().exists() {
        return between(e, target, &state.snapshot, to);
    }
    let undone = Pending::open(paths).and_then(|p| {
        p.modes()?.restore(root, &state.tree)?;
        p.unmark_checked()?;
        if let Some(site) = &p.site {
            // The user's entries the finish had moved into the new tree
            // go back into the target before that tree is removed (or the
            // tree is kept, named in a warning).
            if let Ok(stage) = fsx::open_dir_path(&site.stage()) {
                rescue_foreign(&stage, root, t1, &state.tree, site, report);
            }
        }
        p.remove()?;
        relock_quietly(root, &state.tree)
    });
    match undone {
        Ok(()) => anyhow!(
            "{e:#}; the increment was undone: the target {} is unchanged at snapshot {} ({}); run the restore again once that is fixed (--inplace makes no copies of changed files)",
            target.display(),
            state.snapshot.id,
            state.snapshot.time.rfc3339()
        ),
        Err(u) => anyhow!(
            "{e:#}; undoing the increment failed too ({u:#}): the target {} is still at snapshot {}, and rerunning the restore tries again",
            target.display(),
            state.snapshot.id
        ),
    }
}

/// The message of a failure after the increment was checked.
fn between(e: anyhow::Error, target: &Path, from: &SnapshotRef, to: &SnapshotRef) -> anyhow::Error {
    anyhow!(
        "{e:#}; the target {} is between snapshots {} and {}: the increment was checked and is kept in its {STATE_DIR}, so rerunning the restore finishes it (the stream is not needed again)",
        target.display(),
        from.id,
        to.id
    )
}

/// The sources a finish works with, from the inheritance the check chose
/// (kept in the apply directory): only inherited files matter once the
/// increment has been checked.
fn sources_from(t1: &Tree, inherit: &[(u64, u64)]) -> Result<Vec<Option<Source>>> {
    let mut out: Vec<Option<Source>> = t1
        .inodes
        .iter()
        .map(|i| (i.kind == Kind::File).then(|| Source::Fresh(Vec::new())))
        .collect();
    for &(a, g) in inherit {
        match out.get_mut((a as usize).wrapping_sub(1)) {
            Some(slot @ Some(_)) => *slot = Some(Source::Inherit(g)),
            _ => bail!("the kept choice of inherited files names inode {a}, which is not a file of the new snapshot"),
        }
    }
    Ok(out)
}

/// Phase 1: everything that can fail because of the stream or the target,
/// with nothing visible changed.
fn check(
    opts: &RestoreOptions,
    r: &mut StreamReader,
    state: &TargetState,
    root: &OwnedFd,
    pending: &Pending,
    journal: &mut ModeJournal,
    report: &Report,
) -> Result<Checked> {
    let h = r.header.clone();
    let front = read_front(r).map_err(|e| match r.damage().first() {
        Some(d) => {
            let prefix = format!("{}: ", r.name());
            let why = d.why.strip_prefix(&prefix).unwrap_or(&d.why).to_string();
            anyhow!(
                "{}: the metadata section is damaged at stream byte {}: {why}",
                r.name(),
                d.from
            )
        }
        None => e,
    })?;
    let t0 = &state.tree;
    // Immutable and append-only entries refuse every change an apply
    // makes; an undo or the finish sets them again.
    super::flags::lift(root, t0)?;
    let found = survey(
        root,
        t0,
        &front.tree,
        &mut |dir, name, ino, st| open_up(journal, dir, name, ino, st),
        Depth::Attrs,
    )?;
    let sources = decide(t0, &front.tree, &front.carried, &|g| {
        found.owner[g as usize].is_some_and(|(uid, _)| ours(uid)) && !found.shared[g as usize]
    })?;
    let inherits: HashSet<u64> = sources
        .iter()
        .filter_map(|s| match s {
            Some(Source::Inherit(g)) => Some(*g),
            _ => None,
        })
        .collect();
    judge(
        &found,
        t0,
        &source_set(&sources),
        &inherits,
        opts.force,
        &state.snapshot,
        &h.snapshot,
        Some(report),
    )?;
    let next = pending.stage()?;
    // In place, only what changes is staged.
    let layout = pending
        .site
        .is_none()
        .then(|| layout_of(t0, &front.tree, &sources));
    stage(
        root,
        &next,
        t0,
        &front.tree,
        &sources,
        h.block_size as u64,
        journal,
        report,
        layout.as_ref(),
    )?;
    let bs = h.block_size as u64;
    let mut spool = pending.spool()?;
    let in_place: Vec<bool> = std::iter::once(false)
        .chain(
            sources
                .iter()
                .map(|s| matches!(s, Some(Source::Inherit(_)))),
        )
        .collect();
    let mut writer = DirWriter::new(next.try_clone()?, false, report)?;
    writer.mark_created(&front.tree);
    let progress = Progress::bytes(front.image.carried_blocks().saturating_mul(bs), "restore");
    let tree = &front.tree;
    let mut spooled_files = HashSet::new();
    let totals = read_data(r, &front, |s, d| {
        crate::failpoint::hit("apply-data");
        progress.inc(s.len as u64);
        if in_place[s.ino as usize] {
            spooled_files.insert(s.ino);
            spool.put(s, d)
        } else {
            writer.write(tree, s, d)
        }
    })?;
    drop(progress);
    if let Some(d) = r.damage().first() {
        let prefix = format!("{}: ", r.name());
        let why = d.why.strip_prefix(&prefix).unwrap_or(&d.why);
        bail!("{}: damaged at stream byte {}: {why}", r.name(), d.from);
    }
    crate::failpoint::hit("apply-checked");
    let spooled = spool.bytes;
    spool.finish()?;
    drop(writer);
    // The target may have been written to while a slow stream was read:
    // judged again as it is now, before the increment is declared checked.
    let now = survey(
        root,
        t0,
        &front.tree,
        &mut |_, _, _, _| Ok(false),
        Depth::Attrs,
    )?;
    judge(
        &now,
        t0,
        &source_set(&sources),
        &inherits,
        opts.force,
        &state.snapshot,
        &h.snapshot,
        None,
    )
    .map_err(|e| anyhow!("{e:#} (found when the stream had been read)"))?;
    // Finished beside the target, each file given blocks becomes a copy
    // of its own first, which takes its size where extents are not shared.
    let copies = if pending.site.is_some() && !super::exchange::clones(&pending.fd) {
        copy_estimate(t0, &front.tree, &sources, &now, &spooled_files, bs)
    } else {
        0
    };
    enough_space(root, spooled, copies)?;
    pending.save_inherit(&inherit_pairs(&sources))?;
    let paths = StatePaths::new(&opts.target);
    let next_state = TargetState {
        source_uuid: h.source_uuid,
        snapshot: h.snapshot.clone(),
        block_size: h.block_size,
        tree: front.tree,
    };
    paths.save_next(&next_state, &front.carried)?;
    let front = Front {
        tree: next_state.tree,
        ..front
    };
    Ok(Checked {
        front,
        totals,
        stream_bytes: r.offset(),
        sources,
    })
}

/// The bytes the private copies of an atomic finish take where the file
/// system cannot clone: the data blocks (holes stay holes) of every
/// inherited file the finish changes — given blocks, trimmed, or with
/// other attributes or extended attributes than the new snapshot's.
fn copy_estimate(
    t0: &Tree,
    t1: &Tree,
    sources: &[Option<Source>],
    found: &Survey,
    spooled: &HashSet<u64>,
    bs: u64,
) -> u64 {
    let mut bytes = 0;
    for (i, s) in sources.iter().enumerate() {
        let Some(Source::Inherit(g)) = s else {
            continue;
        };
        let f = &t1.inodes[i];
        let old = t0.inode(*g);
        let same_attrs = found
            .attrs
            .get(*g as usize)
            .cloned()
            .flatten()
            .is_some_and(|a| {
                a.mode == f.attrs.mode
                    && a.uid == f.attrs.uid
                    && a.gid == f.attrs.gid
                    && a.atime == f.attrs.atime
                    && a.mtime == f.attrs.mtime
            })
            && old.xattrs == f.xattrs
            && (old.flags, old.projid) == (f.flags, f.projid);
        let blocks = |x: &Inode| RunSet::from_runs(x.extents.iter().map(|e| (e.block, e.count)));
        let trimmed = old.size != f.size || blocks(old).runs() != blocks(f).runs();
        if spooled.contains(&f.ino) || trimmed || !same_attrs {
            bytes += f.extents.iter().map(|x| x.count).sum::<u64>() * bs;
        }
    }
    bytes
}

/// Refuses to go past the check when the target's file system cannot take
/// the finish: writing the spool back may need as much new space as it
/// holds (file systems that copy on write, blocks that were holes), and
/// the private copies of the files it goes into (`copies`, when they are
/// copied rather than cloned).
fn enough_space(root: &OwnedFd, spooled: u64, copies: u64) -> Result<()> {
    let Some(free) = fsx::free_bytes(root.as_fd()) else {
        return Ok(()); // no figure to go by: the finish will say if it fails
    };
    let need = spooled + copies + (1 << 20);
    if free < need {
        let hint = if copies > 0 {
            format!(" (or apply it with --inplace, which copies none of the {copies} bytes of changed files)")
        } else {
            String::new()
        };
        bail!(
            "the target's file system has {free} bytes free and finishing this increment may need {need}: free some space and run the restore again{hint}"
        );
    }
    Ok(())
}

/// Finishes an apply interrupted by a kill (or a failure after its check),
/// or undoes one interrupted before its check; the caller holds the lock.
/// Returns the snapshot the target was brought to, when it was finished.
pub(super) fn recover(
    target: &Path,
    force: bool,
    paths: &StatePaths,
    report: &Report,
) -> Result<Option<SnapshotRef>> {
    refuse_older_layout(paths)?;
    if !Pending::exists(paths) {
        if settle_beside(target, paths, report)? {
            return Ok(paths.load()?.map(|s| s.snapshot));
        }
        return Ok(None);
    }
    let Some(state) = paths.load()? else {
        // No snapshot to finish or undo against (the state was removed by
        // hand): the working directory is all that is left of the apply.
        Pending::open(paths)?.remove()?;
        report.warn(
            target.as_os_str().as_encoded_bytes(),
            "an increment's working directory was left without the restore state it belonged to; removed it",
        );
        return Ok(None);
    };
    let pending = Pending::open(paths)?;
    let root = fsx::open_dir_path(target)
        .with_context(|| format!("cannot open restore target {}", target.display()))?;
    if !pending.has("checked") {
        pending.modes()?.restore(&root, &state.tree)?;
        pending.remove()?;
        relock_quietly(&root, &state.tree)?;
        crate::progress::println_err(&format!(
            "snapdump: {}: an interrupted increment was undone; the target is at snapshot {}",
            target.display(),
            state.snapshot.id
        ));
        return Ok(None);
    }
    let (next, carried) = paths.load_next()?.ok_or_else(|| {
        anyhow!(
            "{}: the checked increment's state is missing; run restore --finish and restore the chain again",
            target.display()
        )
    })?;
    if next.snapshot.uuid == state.snapshot.uuid {
        // Committed before the interruption; only the cleanup was left.
        pending.remove()?;
        relock_target(target, &next.tree, report)?;
        return Ok(Some(next.snapshot));
    }
    let _ = carried;
    let sources = sources_from(&next.tree, &pending.load_inherit()?)?;
    let beside = pending.site.is_some();
    finish(
        target,
        &root,
        &pending,
        &state.tree,
        &next,
        &sources,
        force,
        true,
        report,
    )
    .map_err(|e| {
        after_check(
            e,
            target,
            paths,
            &root,
            &state,
            (&next.snapshot, &next.tree),
            beside,
            report,
        )
    })?;
    let snap = next.snapshot.clone();
    paths.commit(&next)?;
    pending.remove()?;
    relock_target(target, &next.tree, report)?;
    crate::progress::println_err(&format!(
        "snapdump: {}: finished the interrupted apply of snapshot {} (it had been checked)",
        target.display(),
        snap.id
    ));
    Ok(Some(snap))
}

/// An apply killed after its exchange leaves the old tree beside the
/// target (which holds that apply's snapshot): entries a user added
/// meanwhile are rescued from it, then it is removed. Returns whether
/// there was one. The caller holds the target's lock.
pub fn settle_beside(target: &Path, paths: &StatePaths, report: &Report) -> Result<bool> {
    if let Some(site) = super::exchange::Site::of(target)? {
        if site.stage().exists() && site.is_ours()? {
            let old_state = StatePaths::new(&site.stage()).load().ok().flatten();
            if let (Some(t0), Some(t1)) = (old_state, paths.load()?) {
                if let (Ok(old), Ok(new)) = (
                    fsx::open_dir_path(&site.stage()),
                    fsx::open_dir_path(target),
                ) {
                    rescue_foreign(&old, &new, &t0.tree, &t1.tree, &site, report);
                }
            }
        }
    }
    let cleared = super::exchange::clear_leftover(target)?;
    if cleared {
        // The kill may have come before the flags went back on.
        if let Some(st) = paths.load()? {
            relock_target(target, &st.tree, report)?;
        }
    }
    Ok(cleared)
}

/// `restore --finish`: ends the target's chain. A pending apply is first
/// finished (if it was checked) or undone, so the target is left at a
/// snapshot; then the restore state is removed.
pub fn finish_chain(
    target: &Path,
    wait: crate::lock::Wait,
    force: bool,
    report: &Report,
) -> Result<()> {
    let paths = StatePaths::new(target);
    match std::fs::symlink_metadata(&paths.dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => bail!(
            "cannot look at {}: {e}; as the target's owner, make it searchable (chmod u+rwx {}) and run --finish again",
            paths.dir.display(),
            target.display()
        ),
        Ok(_) => {}
    }
    let held = {
        let _lock = paths.lock(target, wait)?;
        recover(target, force, &paths, report)?;
        paths.load().ok().flatten()
    };
    match std::fs::remove_dir_all(&paths.dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            bail!("cannot remove {}: {e}", paths.dir.display())
        }
        _ => {}
    }
    // Removing the state changed the target's own times: they are the
    // snapshot's again, and so is its mode (kept writable for its owner, as
    // a user other than root, while the state was in it), and its
    // immutable and append-only flags.
    if let Some(st) = held {
        let inode = st.tree.inode(ROOT_INO);
        let a = &inode.attrs;
        let root = fsx::open_dir_path(target)
            .with_context(|| format!("cannot open {}", target.display()))?;
        fsx::chmod_at(root.as_fd(), b"", a.mode)
            .with_context(|| format!("cannot set the mode of {}", target.display()))?;
        fsx::utimes_at(root.as_fd(), b"", a.atime, a.mtime)
            .with_context(|| format!("cannot set the times of {}", target.display()))?;
        if inode.flags & crate::fsx::flags::LATE != 0 {
            if let Err(e) = crate::fsx::flags::set(root.as_fd(), inode.flags) {
                report.warn(
                    b".",
                    format!("cannot set the file flags of the target's root: {e}"),
                );
            }
        }
    }
    Ok(())
}

/// An interrupted apply of snapdump 0.1 kept its files at the top of the
/// state directory, with another protocol: it is not finished by this one.
fn refuse_older_layout(paths: &StatePaths) -> Result<()> {
    for old in ["staged", "swap1", "swap2", "next", "old"] {
        if paths.dir.join(old).exists() {
            bail!(
                "{} holds an interrupted increment of an older snapdump ({} in it); finish it with that version, or restore the chain again",
                paths.dir.display(),
                old
            );
        }
    }
    Ok(())
}

/// Phase 2, after the check: idempotent, so that an interrupted finish is
/// completed by running it again. Built beside the target and exchanged
/// with it when the apply has a site ([`super::exchange`]), else moved in
/// entry by entry.
#[allow(clippy::too_many_arguments)]
fn finish(
    target: &Path,
    root: &OwnedFd,
    pending: &Pending,
    t0: &Tree,
    next_state: &TargetState,
    sources: &[Option<Source>],
    force: bool,
    recovering: bool,
    report: &Report,
) -> Result<()> {
    if let Some(site) = &pending.site {
        return finish_beside(
            target, site, root, pending, t0, next_state, sources, force, recovering, report,
        );
    }
    if !pending.has(DELTA_MARKER) {
        bail!(
            "{} holds an increment checked by an older snapdump, finished in place another way; finish it with that version, or restore the chain again",
            pending.dir.display()
        );
    }
    let t1 = &next_state.tree;
    let bs = next_state.block_size as u64;
    let layout = layout_of(t0, t1, sources);
    // A rerun after a kill may find flags set again already (by an undo or
    // the end of this finish); lifted by the paths of both trees.
    super::flags::lift(root, t0)?;
    super::flags::lift(root, t1)?;
    if pending.has("swap1") {
        // A kill late in the finish may have removed next/.
        let _ = fsx::mkdir_at(pending.fd.as_fd(), NEXT, 0o700);
    }
    let next = pending.stage()?;
    if !pending.has("swap1") {
        let keep = complete_tree(
            root,
            &next,
            pending,
            t0,
            t1,
            sources,
            bs,
            force,
            recovering,
            None,
            Some(&layout),
        )?;
        // Staged entries get their attributes in next/; kept files that
        // change theirs get them where they are.
        let kept: HashSet<u64> = keep.iter().copied().collect();
        let mut writer = DirWriter::new(next.try_clone()?, false, report)?;
        writer.mark_created(t1);
        writer.defer_late_flags();
        writer.keep_attrs(t1, keep);
        writer.keep_attrs(
            t1,
            (1..=t1.inodes.len() as u64).filter(|&i| layout.in_target[i as usize]),
        );
        writer.finish_below_root(t1)?;
        let mut places = Places::new(&next, root, Some(&layout))?;
        let mut not_owned = 0;
        let mut flags = FlagPass::new(root.as_fd(), t1, false).also(t0);
        for (ino, _) in inherit_pairs(sources) {
            if layout.in_target[ino as usize] && !kept.contains(&ino) {
                let dir = places.parent_of(t1, ino)?;
                let inode = t1.inode(ino);
                set_attrs(
                    dir,
                    &t1.primary(ino).name,
                    inode,
                    t1,
                    report,
                    &mut not_owned,
                    &mut flags,
                )?;
            }
        }
        flags.report(report);
        if not_owned > 0 {
            report.warn(
                b".",
                format!("not running as root: ownership of {not_owned} files kept in place not restored"),
            );
        }
        pending.mark(root, "swap1")?;
    }
    if !pending.has("swap2") {
        if let Err(e) = fsx::mkdir_at(pending.fd.as_fd(), OLD, 0o700) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                bail!("cannot create the directory for the old entries: {e}");
            }
        }
        let old = fsx::open_dir(pending.fd.as_fd(), OLD)?;
        super::delta::move_out(root, &old, t0, &layout)?;
        pending.mark(root, "swap2")?;
    }
    super::delta::move_in(root, &next, t1, &layout)?;
    super::delta::settle_attrs(root, t0, t1, &layout, report)?;
    for (name, what) in [(OLD, "the old entries"), (NEXT, "the staging directory")] {
        match fsx::remove_tree_at(pending.fd.as_fd(), name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                bail!("cannot remove {what}: {e}");
            }
            _ => {}
        }
    }
    drop(next);
    // Names that went may have been links of kept files: set immutable
    // and append-only only once they are removed.
    super::flags::relock(root, t1, report)?;
    fsx::syncfs(root.as_fd())?;
    crate::failpoint::hit("apply-commit");
    Ok(())
}

/// The in-place finish's layout for this apply.
fn layout_of(t0: &Tree, t1: &Tree, sources: &[Option<Source>]) -> Layout {
    Layout::new(
        t0,
        t1,
        &|ino| match sources.get((ino as usize).wrapping_sub(1)) {
            Some(Some(Source::Inherit(g))) => Some(*g),
            _ => None,
        },
    )
}

/// What both finishes do to the staged tree before its attributes: the
/// spool written into the inherited files, which lose the blocks T1 does
/// not have and the xattrs it does not have, and the foreign entries a
/// user put into the target dealt with. Returns the inherited files found
/// exactly as T1 has them (their attributes are left alone). With a
/// privatizer (the finish beside the target), every inherited file that
/// changes, in data or attributes, is made a copy of its own first, and
/// foreign entries move into the new tree (it is swapped in whole); with a
/// layout (the in-place finish), kept files are reached in the target and
/// foreign entries stay where they are.
#[allow(clippy::too_many_arguments)]
fn complete_tree(
    root: &OwnedFd,
    next: &OwnedFd,
    pending: &Pending,
    t0: &Tree,
    t1: &Tree,
    sources: &[Option<Source>],
    bs: u64,
    force: bool,
    recovering: bool,
    mut private: Option<&mut Privatizer>,
    layout: Option<&Layout>,
) -> Result<Vec<u64>> {
    if recovering {
        // An interrupted run may have given the staged directories their
        // modes already (a mode-000 one among them).
        open_up_next(next, t1)?;
    }
    // Tests add and remove a user's entries here, after the last survey
    // of a run that checked the increment itself.
    crate::failpoint::pause("apply-finish");
    let mut places = Places::new(next, root, layout)?;
    crate::failpoint::hit("apply-spool");
    let written = replay_spool(pending, &mut places, t1, private.as_deref_mut())?;
    crate::failpoint::hit("apply-trim");
    let trimmed = trim_inherited(&mut places, t0, t1, sources, bs, private.as_deref_mut())?;
    // The target as it is now: entries a user added while the stream was
    // read are kept too. (Not the survey made when the stream had been
    // read: a slow sender's commit can come long after it, and attributes
    // changed meanwhile would go through the shared inodes into T1.)
    let found = survey(root, t0, t1, &mut |_, _, _, _| Ok(false), Depth::Xattrs)?;
    drop_stale_xattrs(&mut places, t1, sources, &found, private.as_deref_mut())?;
    let mut changed: HashSet<u64> = written.union(&trimmed).copied().collect();
    if let Some(p) = &private {
        changed.extend(p.done().iter().copied());
    }
    let keep = untouched(t0, t1, sources, &found, &changed);
    if let Some(p) = private {
        // Every other inherited file gets attributes set: on a copy.
        let kept: HashSet<u64> = keep.iter().copied().collect();
        for (ino, _) in inherit_pairs(sources) {
            if !kept.contains(&ino) {
                p.make_private(ino)?;
            }
        }
    }
    keep_foreign(root, next, t0, t1, &found, force, pending.site.is_some())?;
    Ok(keep)
}

/// The (T1 inode, T0 inode) pairs of the files T1 inherits.
fn inherit_pairs(sources: &[Option<Source>]) -> Vec<(u64, u64)> {
    sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            Some(Source::Inherit(g)) => Some((i as u64 + 1, *g)),
            _ => None,
        })
        .collect()
}

/// The atomic finish: T1's tree is completed beside the target (private
/// copies of the inherited files it changes, kept foreign entries moved
/// in, attributes, its own restore state saying T1), then swapped in whole.
/// Nothing the target shows changes before the exchange (but for entries
/// a user added since the check, which move with the new tree).
#[allow(clippy::too_many_arguments)]
fn finish_beside(
    target: &Path,
    site: &super::exchange::Site,
    root: &OwnedFd,
    pending: &Pending,
    t0: &Tree,
    next_state: &TargetState,
    sources: &[Option<Source>],
    force: bool,
    recovering: bool,
    report: &Report,
) -> Result<()> {
    let t1 = &next_state.tree;
    let bs = next_state.block_size as u64;
    let next = pending.stage()?;
    if !pending.has("swap1") {
        let inherits = inherit_pairs(sources).into_iter().collect();
        let mut private = Privatizer::new(root, &next, &pending.fd, t0, t1, inherits)?;
        let keep = complete_tree(
            root,
            &next,
            pending,
            t0,
            t1,
            sources,
            bs,
            force,
            recovering,
            Some(&mut private),
            None,
        )?;
        super::exchange::build_state(target, site, &next, next_state)?;
        let mut writer = DirWriter::new(next.try_clone()?, false, report)?;
        writer.mark_created(t1);
        writer.defer_late_flags();
        writer.keep_attrs(t1, keep);
        writer.finish(t1)?;
        pending.mark(root, "swap1")?;
    }
    site.swap()?;
    // `root` is the old tree now, beside; `next` the target.
    rescue_foreign(root, &next, t0, t1, site, report);
    // Immutable and append-only go on once the old tree, which shares the
    // kept files, is removed (relock_target).
    Ok(())
}

/// After the exchange: entries a user put into the target after the
/// finish moved the foreign ones (or while a killed apply waited to be
/// finished) are in the old tree; they move into the new one. If one
/// cannot (its directory is gone from the new snapshot, or a name is
/// taken), the old tree is kept under a name of its own, named in a
/// warning, instead of being removed with them.
fn rescue_foreign(
    old: &OwnedFd,
    new: &OwnedFd,
    t0: &Tree,
    t1: &Tree,
    site: &super::exchange::Site,
    report: &Report,
) {
    let moved = survey(old, t0, t1, &mut |_, _, _, _| Ok(false), Depth::Names)
        .and_then(|found| keep_foreign(old, new, t0, t1, &found, false, true));
    if let Err(e) = moved {
        let kept = site.keep_stage();
        let what = match &kept {
            Ok(p) => format!(
                "the old tree is kept as {}: take them from there",
                p.display()
            ),
            Err(k) => format!("and keeping the old tree failed too ({k:#})"),
        };
        report.warn(
            site.stage().as_os_str().as_encoded_bytes(),
            format!("entries added to the target during the apply could not be moved into the new snapshot ({e:#}); {what}"),
        );
    }
}

/// Builds T1's namespace under next/, linking inherited files and copying
/// the kept blocks of fresh ones from T0. Nothing of T0 is modified.
#[allow(clippy::too_many_arguments)]
fn stage(
    root: &OwnedFd,
    next: &OwnedFd,
    t0: &Tree,
    t1: &Tree,
    sources: &[Option<Source>],
    bs: u64,
    journal: &mut ModeJournal,
    report: &Report,
    layout: Option<&Layout>,
) -> Result<()> {
    let mut new_dirs = DirStack::new(next.try_clone()?);
    let mut link_dirs = Places::new(next, root, layout)?;
    let mut old_dirs = DirStack::new(root.try_clone()?);
    let mut buf = Vec::new();
    for (index, d) in t1.dirents.iter().enumerate() {
        if d.parent == 0 {
            continue;
        }
        crate::failpoint::hit("apply-stage");
        if d.parent == ROOT_INO && d.name == STATE_DIR.as_bytes() {
            bail!("the stream holds an entry named {STATE_DIR} at its root, which is reserved for restore state");
        }
        let dir =
            new_dirs
                .enter_in(t1, d.parent)
                .map_err(io_ctx(t1, d.parent, "open directory"))?;
        let inode = t1.inode(d.ino);
        if layout.is_some_and(|l| l.kept[index]) {
            // Stays in the target; a reused directory gets a shadow here
            // for what is staged inside it.
            if inode.kind == Kind::Dir {
                fsx::mkdir_at(dir, &d.name, 0o700).map_err(io_ctx(t1, d.ino, "stage"))?;
            }
            continue;
        }
        if !std::ptr::eq(t1.primary(d.ino), d) {
            let p = t1.primary(d.ino);
            let src = link_dirs.parent_of(t1, d.ino)?;
            fsx::link_at(src, &p.name, dir, &d.name).map_err(|e| {
                anyhow!(
                    "cannot create hard link {}: {e}",
                    escape(&t1.dirent_path(d))
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
                let gdir = old_dirs.enter_in(t0, gp.parent).map_err(io_ctx(
                    t0,
                    gp.parent,
                    "open directory",
                ))?;
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
                copy_runs(&out, runs, t0, &mut old_dirs, inode, bs, &mut buf, journal)?;
            }
            None => create(dir, &d.name, inode).map_err(io_ctx(t1, d.ino, "create"))?,
        }
    }
    Ok(())
}

/// Copies kept blocks from T0's files into a fresh file.
#[allow(clippy::too_many_arguments)]
fn copy_runs(
    out: &OwnedFd,
    runs: &[(u64, u64, u64, u64)],
    t0: &Tree,
    old_dirs: &mut DirStack,
    f: &Inode,
    bs: u64,
    buf: &mut Vec<u8>,
    journal: &mut ModeJournal,
) -> Result<()> {
    let mut open: Option<(u64, OwnedFd)> = None;
    for &(b, g, gb, n) in runs {
        if open.as_ref().map(|o| o.0) != Some(g) {
            let gp = t0.primary(g);
            let dir = old_dirs.enter_in(t0, gp.parent).map_err(io_ctx(
                t0,
                gp.parent,
                "open directory",
            ))?;
            let fd = match crate::scan::open_file(dir, &gp.name) {
                Err(e) if e.raw_os_error() == Some(libc::EACCES) && !fsx::is_root() => {
                    // A file its owner cannot read (mode 000): readable for
                    // the copy, its mode journaled to be put back.
                    let st = fsx::stat_at(dir, &gp.name).map_err(io_ctx(t0, g, "read"))?;
                    if !open_up(journal, dir, &gp.name, g, &st)? {
                        return Err(io_ctx(t0, g, "open")(e));
                    }
                    crate::scan::open_file(dir, &gp.name)
                }
                r => r,
            }
            .map_err(io_ctx(t0, g, "open"))?;
            open = Some((g, fd));
        }
        let src = &open.as_ref().expect("opened above").1;
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

/// Where T1's files are reached while its tree is staged: in the staging
/// directory, or, for the names the in-place finish keeps, in the target
/// itself (the same paths: kept names are in reused directories).
struct Places<'l> {
    next: DirStack,
    target: Option<(DirStack, &'l Layout)>,
}

impl<'l> Places<'l> {
    fn new(next: &OwnedFd, root: &OwnedFd, layout: Option<&'l Layout>) -> Result<Places<'l>> {
        Ok(Places {
            next: DirStack::new(next.try_clone()?),
            target: match layout {
                Some(l) => Some((DirStack::new(root.try_clone()?), l)),
                None => None,
            },
        })
    }

    /// The directory holding the primary name of T1's `ino`.
    fn parent_of(&mut self, t1: &Tree, ino: u64) -> Result<BorrowedFd<'_>> {
        let d = t1.primary(ino);
        let dirs = match &mut self.target {
            Some((dirs, l)) if l.in_target[ino as usize] => dirs,
            _ => &mut self.next,
        };
        dirs.enter_in(t1, d.parent)
            .map_err(io_ctx(t1, d.parent, "open directory"))
    }
}

/// Opens an inherited file (the target's own file) for writing; a non-root
/// owner's read-only file is made writable first (it gets T1's mode when
/// attributes are applied).
fn open_inherited(places: &mut Places, t1: &Tree, ino: u64) -> Result<OwnedFd> {
    let d = t1.primary(ino);
    let dir = places.parent_of(t1, ino)?;
    with_access(dir, &d.name, 0o200, || {
        fsx::openat(dir, &d.name, libc::O_WRONLY | libc::O_NOFOLLOW, 0)
    })
    .map_err(io_ctx(t1, ino, "open"))
}

/// Writes the spooled carried blocks into the inherited files; returns the
/// inodes written to. With a privatizer, each file is first made a copy of
/// its own (the old tree keeps the shared one).
fn replay_spool(
    pending: &Pending,
    places: &mut Places,
    t1: &Tree,
    mut private: Option<&mut Privatizer>,
) -> Result<HashSet<u64>> {
    let mut written = HashSet::new();
    let mut spool = pending.read_spool()?;
    let mut open: Option<(u64, OwnedFd)> = None;
    let mut buf = Vec::new();
    while let Some((ino, offset)) = spool.next(&mut buf)? {
        if ino == 0 || ino as usize > t1.inodes.len() || t1.inode(ino).kind != Kind::File {
            bail!("the spool names inode {ino}, which is not a file of the new snapshot (damaged spool)");
        }
        if open.as_ref().map(|o| o.0) != Some(ino) {
            drop(open.take());
            if let Some(p) = private.as_deref_mut() {
                p.make_private(ino)?;
            }
            open = Some((ino, open_inherited(places, t1, ino)?));
        }
        let fd = &open.as_ref().expect("opened above").1;
        fsx::pwrite_all(fd.as_fd(), &buf, offset).map_err(io_ctx(t1, ino, "write"))?;
        written.insert(ino);
    }
    Ok(written)
}

/// An inherited file loses the blocks its new version does not have, and
/// gets its new size; returns the inodes changed (a file with nothing to
/// lose and the same size is not opened).
fn trim_inherited(
    places: &mut Places,
    t0: &Tree,
    t1: &Tree,
    sources: &[Option<Source>],
    bs: u64,
    mut private: Option<&mut Privatizer>,
) -> Result<HashSet<u64>> {
    let mut trimmed = HashSet::new();
    for (i, s) in sources.iter().enumerate() {
        let Some(Source::Inherit(g)) = s else {
            continue;
        };
        let f = &t1.inodes[i];
        let old = t0.inode(*g);
        let have = RunSet::from_runs(f.extents.iter().map(|x| (x.block, x.count)));
        let blocks = f.size.div_ceil(bs);
        let mut holes = Vec::new();
        for x in &old.extents {
            for (b, n, kept) in have.split(x.block, x.count) {
                let n = n.min(blocks.saturating_sub(b));
                if !kept && n > 0 {
                    holes.push((b, n));
                }
            }
        }
        if holes.is_empty() && old.size == f.size {
            continue;
        }
        if let Some(p) = private.as_deref_mut() {
            p.make_private(f.ino)?;
        }
        let fd = open_inherited(places, t1, f.ino)?;
        for (b, n) in holes {
            fsx::punch_hole(fd.as_fd(), b * bs, n * bs).map_err(io_ctx(
                t1,
                f.ino,
                "punch a hole in",
            ))?;
        }
        fsx::ftruncate(fd.as_fd(), f.size).map_err(io_ctx(t1, f.ino, "set the size of"))?;
        trimmed.insert(f.ino);
    }
    Ok(trimmed)
}

/// An inherited file loses the extended attributes the new snapshot does
/// not have (setting attributes only adds and replaces): those its old
/// version had and those added in the target since. The security label a
/// system gives every file is left alone. With a privatizer, such a file
/// is made a copy instead, which has none.
fn drop_stale_xattrs(
    places: &mut Places,
    t1: &Tree,
    sources: &[Option<Source>],
    found: &Survey,
    mut private: Option<&mut Privatizer>,
) -> Result<()> {
    for (i, s) in sources.iter().enumerate() {
        let Some(Source::Inherit(g)) = s else {
            continue;
        };
        let f = &t1.inodes[i];
        let on_disk = found
            .xattr_names
            .get(*g as usize)
            .cloned()
            .flatten()
            .unwrap_or_default();
        let stale: Vec<&Vec<u8>> = on_disk
            .iter()
            .filter(|k| k[..] != b"security.selinux"[..])
            .filter(|k| !f.xattrs.iter().any(|(n, _)| n == *k))
            .collect();
        if stale.is_empty() {
            continue;
        }
        if let Some(p) = private.as_deref_mut() {
            // A copy starts with no extended attributes at all.
            p.make_private(f.ino)?;
            continue;
        }
        let d = t1.primary(f.ino);
        let dir = places.parent_of(t1, f.ino)?;
        for k in stale {
            crate::fsx::xattr::remove(dir, &d.name, k).map_err(|e| {
                anyhow!(
                    "cannot remove extended attribute {} of {}: {e}",
                    escape(k),
                    escape(&t1.path(f.ino))
                )
            })?;
        }
    }
    Ok(())
}

/// Gives the owner access to next/'s directories again (a finish run after
/// an interruption, which may have come after their modes were set).
fn open_up_next(next: &OwnedFd, t1: &Tree) -> Result<()> {
    if fsx::is_root() {
        return Ok(());
    }
    let mut dirs = DirStack::new(next.try_clone()?);
    for d in t1.dirents.iter().skip(1) {
        if t1.inode(d.ino).kind != Kind::Dir {
            continue;
        }
        let Ok(parent) = dirs.enter_in(t1, d.parent) else {
            continue;
        };
        if let Ok(st) = fsx::stat_at(parent, &d.name) {
            if st.st_mode & 0o700 != 0o700 && ours(st.st_uid) {
                let _ = fsx::chmod_at(parent, &d.name, (st.st_mode & 0o7777) | 0o700);
            }
        }
    }
    Ok(())
}

/// Inherited files found exactly as T1 has them: nothing written to them,
/// their attributes on disk those of T1, and T1's xattrs those of T0.
fn untouched(
    t0: &Tree,
    t1: &Tree,
    sources: &[Option<Source>],
    found: &Survey,
    changed: &HashSet<u64>,
) -> Vec<u64> {
    let mut out = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let Some(Source::Inherit(g)) = s else {
            continue;
        };
        let f = &t1.inodes[i];
        if changed.contains(&f.ino) {
            continue;
        }
        let Some(Some(on_disk)) = found.attrs.get(*g as usize) else {
            continue;
        };
        let a = &f.attrs;
        let names: Vec<&Vec<u8>> = f.xattrs.iter().map(|(n, _)| n).collect();
        let disk_names = found.xattr_names.get(*g as usize).cloned().flatten();
        let same = on_disk.mode == a.mode
            && on_disk.uid == a.uid
            && on_disk.gid == a.gid
            && on_disk.atime == a.atime
            && on_disk.mtime == a.mtime
            && t0.inode(*g).xattrs == f.xattrs
            && (t0.inode(*g).flags, t0.inode(*g).projid) == (f.flags, f.projid)
            && disk_names.is_some_and(|d| d.iter().collect::<Vec<_>>() == names);
        if same {
            out.push(f.ino);
        }
    }
    out
}

/// Whether `name` is no longer in `dir` (a user removed it).
fn gone(dir: BorrowedFd, name: &[u8]) -> bool {
    matches!(fsx::stat_at(dir, name), Err(e) if e.kind() == io::ErrorKind::NotFound)
}

/// Moves the entries that are not T0's into T1's directories where T1
/// keeps their directory, when the new tree is swapped in `whole` (in
/// place, such a directory is T0's own and they simply stay); removes those in the
/// way with `force` (named when the increment was checked) and empty
/// directories in the way. Without `force`, one that appeared since the
/// check stops the finish, naming it.
fn keep_foreign(
    root: &OwnedFd,
    next: &OwnedFd,
    t0: &Tree,
    t1: &Tree,
    found: &Survey,
    force: bool,
    whole: bool,
) -> Result<()> {
    let mut from = DirStack::new(root.try_clone()?);
    let mut to = DirStack::new(next.try_clone()?);
    for f in &found.foreign {
        if f.home.is_some() && !whole {
            continue;
        }
        let path = || escape(&foreign_path(t0, f.dir, &f.name));
        let dir = from
            .enter_in(t0, f.dir)
            .map_err(io_ctx(t0, f.dir, "open directory"))?;
        if f.dir != ROOT_INO && (f.home.is_some() || f.empty_dir || force) {
            // Taking an entry out of one of T0's directories (which goes
            // away) needs write permission on it.
            make_writable(dir)?;
        }
        match f.home {
            Some(home) => {
                let dest = to
                    .enter_in(t1, home)
                    .map_err(io_ctx(t1, home, "open directory"))?;
                // Moving a directory to another parent rewrites its "..":
                // a non-root owner's read-only one is opened up for it.
                let moved = if f.is_dir {
                    let mode = fsx::stat_at(dir, &f.name).map(|s| s.st_mode & 0o7777);
                    let r = with_access(dir, &f.name, 0o200, || {
                        fsx::rename_at(dir, &f.name, dest, &f.name)
                    });
                    if let (Ok(()), Ok(m)) = (&r, mode) {
                        let _ = fsx::chmod_at(dest, &f.name, m);
                    }
                    r
                } else {
                    fsx::rename_at(dir, &f.name, dest, &f.name)
                };
                match moved {
                    // Removed by its user since the survey (the entry
                    // itself is gone, not the place it was to go to):
                    // nothing to keep.
                    Err(e) if e.kind() == io::ErrorKind::NotFound && gone(dir, &f.name) => {}
                    r => r.map_err(|e| {
                        anyhow!("cannot keep {} (not part of the snapshot): {e}", path())
                    })?,
                }
            }
            None if f.empty_dir || force => match fsx::remove_tree_at(dir, &f.name) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && gone(dir, &f.name) => {}
                r => r.map_err(|e| anyhow!("cannot remove {}: {e}", path()))?,
            },
            None => {
                bail!(
                    "{} appeared in the target during the restore and is in the way of the new snapshot: move it away, or rerun with --force",
                    path()
                );
            }
        }
    }
    Ok(())
}
