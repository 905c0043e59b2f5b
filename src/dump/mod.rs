//! `snapdump dump`: scan a source, pick the image, write the stream, and
//! only then commit the new snapshot to the catalog.

pub mod pipeline;
pub mod plan;
pub mod readahead;
pub mod resume;
pub mod sink;
pub mod tracked;

use crate::catalog::{Catalog, SnapshotInfo};
use crate::fsx;
use crate::media::Output;
use crate::planes::DoubleMarks;
use crate::progress::Progress;
use crate::report::{Report, Warning};
use crate::scan::{scan, ScanOptions};
use crate::stream::front::write_front;
use crate::stream::header::{ImageHeader, SnapshotRef, StreamHeader};
use crate::stream::payload::Image;
use crate::stream::writer::StreamWriter;
use crate::tree::{Kind, Time, Tree};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Data block size of new catalogs.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;
/// Default zstd level: on 256 KiB records it costs little more than level
/// 1-2 and matches `zstd -3` on whole streams (BENCHMARKS.md).
pub const DEFAULT_COMPRESSION: i32 = 3;

/// What the user asked for.
pub struct DumpOptions {
    /// Dump level 0..9.
    pub level: u8,
    /// Stream destination ("-" for stdout).
    pub output: String,
    /// Further volumes of a dump to tape (more `-f`).
    pub volumes: Vec<String>,
    /// Tape options (record size, append, capacity, volume changes).
    pub tape: crate::media::tape::writer::TapeOptions,
    /// Catalog root directory.
    pub catalog_root: PathBuf,
    /// zstd level (0 = off).
    pub compression: i32,
    /// The source tree.
    pub source: PathBuf,
    /// Explicit base snapshot id (`--base`).
    pub base: Option<u64>,
    /// Wait for another dump of the same source, or fail at once.
    pub wait: crate::lock::Wait,
    /// Continue the interrupted dump of this source (`--resume`).
    pub resume: bool,
    /// Enter mount points below the source (`--cross-mounts`).
    pub cross_mounts: bool,
    /// The exclusion rules given on the command line (None: the catalog's
    /// recorded ones).
    pub rules: Option<crate::rules::Rules>,
    /// The given rules replace recorded ones that differ (`--rules-changed`).
    pub rules_changed: bool,
    /// The snapshot's time (None: the clock's). A policy run under a
    /// given clock (`run --at`) stamps its snapshots with it; like the
    /// clock's, it is not checked against the newest snapshot's.
    pub snapshot_time: Option<Time>,
    /// How a running change tracker is used (`--no-tracker`,
    /// `--verify-tracker`).
    pub tracker: tracked::TrackerMode,
}

/// The `--json` summary of a dump.
#[derive(Serialize)]
pub struct DumpSummary {
    /// Always "dump".
    pub command: &'static str,
    /// "ok" or "warnings".
    pub status: &'static str,
    /// Canonical source path.
    pub source: String,
    /// Where the stream went.
    pub output: String,
    /// The new snapshot.
    pub snapshot: SnapshotRef,
    /// Whether the stream is a full image.
    pub full: bool,
    /// The base snapshot, for increments.
    pub base: Option<SnapshotRef>,
    /// Bytes written.
    pub stream_bytes: u64,
    /// Directories, regular files, symlinks and other entries recorded.
    pub dirs: u64,
    /// Regular files recorded.
    pub files: u64,
    /// Symlinks recorded.
    pub symlinks: u64,
    /// Fifos, sockets and devices recorded.
    pub special: u64,
    /// Regular files whose size, times and identity were unchanged: their
    /// block pointers were kept and they were not read.
    pub files_unchanged: u64,
    /// Regular files read and compared block by block with their previous
    /// version.
    pub files_compared: u64,
    /// Data blocks written.
    pub data_blocks: u64,
    /// Raw data bytes written.
    pub data_bytes: u64,
    /// VBNs of the base that the new snapshot frees.
    pub deallocated_blocks: u64,
    /// One past the highest VBN in use.
    pub vbn_high_water: u64,
    /// Wall-clock seconds.
    pub elapsed_seconds: f64,
    /// With `--resume`: stream bytes found on the medium and kept.
    pub resumed_bytes: u64,
    /// On tape: the tape file (from 1) the dump starts at on its first
    /// volume (what `restore --file-number` takes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tape_file: Option<u64>,
    /// On tape or volume files: how many volumes the dump filled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volumes: Option<u32>,
    /// With a change tracker running: the epoch, and whether it was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracker: Option<tracked::TrackerSummary>,
    /// The tracker's identity at the swap (recorded with the snapshot).
    #[serde(skip)]
    pub tracker_swap: Option<crate::track::Swap>,
    /// Everything that was skipped or changed while read.
    pub warnings: Vec<Warning>,
}

/// Picks the base of a level-N dump: `--base ID` when given, else the
/// newest recorded snapshot of a lower level (dumpdates semantics). `None`
/// means a full image.
pub fn select_base(
    snaps: &[SnapshotInfo],
    level: u8,
    explicit: Option<u64>,
) -> Result<Option<usize>> {
    if let Some(id) = explicit {
        return match snaps.iter().position(|s| s.snap.id == id) {
            Some(i) => Ok(Some(i)),
            None => bail!(
                "--base {id}: no such snapshot in the catalog (run `snapdump snapshots` to list them)"
            ),
        };
    }
    if level == 0 {
        return Ok(None);
    }
    Ok(snaps.iter().rposition(|s| s.snap.level < level))
}

/// The canonical source, its catalog's lock and the catalog, read under
/// the lock: one dump of a source at a time, and the second one sees the
/// first one's snapshot. Shared by `dump` and the replication sink dump.
pub(crate) fn open_catalog_locked(
    source: &std::path::Path,
    catalog_root: &std::path::Path,
    wait: crate::lock::Wait,
) -> Result<(PathBuf, crate::lock::Lock, Catalog)> {
    let (source, lock) = lock_catalog(source, catalog_root, wait)?;
    let catalog = Catalog::open(
        catalog_root,
        source.as_os_str().as_bytes(),
        DEFAULT_BLOCK_SIZE,
    )?;
    Ok((source, lock, catalog))
}

/// Takes the lock of `source`'s catalog (creating its directory); returns
/// the canonical source path and the lock. Replication takes it before it
/// starts the destination, so that two runs of one source into one
/// destination queue on this lock, not on each other's.
pub fn lock_catalog(
    source: &std::path::Path,
    catalog_root: &std::path::Path,
    wait: crate::lock::Wait,
) -> Result<(PathBuf, crate::lock::Lock)> {
    let source = std::fs::canonicalize(source)
        .with_context(|| format!("cannot access source {}", source.display()))?;
    if !source.is_dir() {
        bail!("source {} is not a directory", source.display());
    }
    let source_bytes = source.as_os_str().as_bytes().to_vec();
    let dir = crate::catalog::source_dir(catalog_root, &source_bytes);
    crate::catalog::create_private_dir(&dir)?;
    let lock = crate::lock::acquire(
        &dir.join("lock"),
        &format!("the catalog of {}", source.display()),
        wait,
    )?;
    Ok((source, lock))
}

/// Runs a dump. On error nothing is committed: the catalog is unchanged
/// and no partial stream is left under the output name.
pub fn dump(opts: &DumpOptions, report: &Report) -> Result<DumpSummary> {
    let started = std::time::Instant::now();
    if opts.level > 9 {
        bail!("dump level {} is out of range (0-9)", opts.level);
    }
    let (source, _lock) = lock_catalog(&opts.source, &opts.catalog_root, opts.wait)?;
    // The tracker swaps (and writes back what a store could change
    // unmarked) while the catalog is read: both are done before anything
    // of the tree is.
    let swapping = {
        let dir = crate::catalog::source_dir(&opts.catalog_root, source.as_os_str().as_bytes())
            .join("tracker");
        let mode = opts.tracker;
        std::thread::spawn(move || tracked::swap(mode, &dir))
    };
    let mut catalog = Catalog::open(
        &opts.catalog_root,
        source.as_os_str().as_bytes(),
        DEFAULT_BLOCK_SIZE,
    )?;
    let bs = catalog.state.block_size;
    let mut specs = vec![opts.output.clone()];
    specs.extend(opts.volumes.iter().cloned());
    let mut interrupted = resume::load(&catalog.dir)?;
    // A dump killed after its catalog commit and before it forgot its
    // resume point was not interrupted: its snapshot is recorded.
    let recorded = |p: &resume::ResumePoint| {
        catalog
            .state
            .snapshots
            .iter()
            .any(|s| crate::ids::hex(&s.snap.uuid) == p.snapshot_uuid)
    };
    if let Some(p) = interrupted.as_ref().filter(|p| recorded(p)) {
        if opts.resume {
            anyhow::bail!(
                "the last dump of {} completed (snapshot {}); there is nothing to resume: run the dump without --resume",
                source.display(),
                p.snapshot_id
            );
        }
        resume::clear(&catalog.dir);
        interrupted = None;
    }
    let (output, out, resuming) = if opts.resume {
        let p = interrupted.ok_or_else(|| {
            anyhow::anyhow!(
                "no interrupted dump of {} to resume (catalog {}); run the dump without --resume",
                source.display(),
                opts.catalog_root.display()
            )
        })?;
        resume::check(&p, opts.level, &specs, opts.compression)?;
        let source_uuid = p.source()?;
        if catalog.state.snapshots.is_empty() {
            catalog.state.source_uuid = source_uuid;
        }
        if p.snapshot_id != catalog.state.next_snap_id || catalog.state.source_uuid != source_uuid {
            anyhow::bail!(
                "the catalog of {} changed since the interrupted dump (another dump completed); run the dump again without --resume",
                source.display()
            );
        }
        let (o, w, kept) = match (&p.partial, p.tape_file) {
            (Some(partial), _) => {
                // Killed after its stream was renamed into place but before
                // the catalog recorded it: the stream itself is the partial.
                let whole = std::path::Path::new(&specs[0]);
                let from = if !partial.exists() && whole.is_file() {
                    whole
                } else {
                    partial.as_path()
                };
                Output::resume_file(&specs[0], from)?
            }
            (None, Some(n)) => Output::resume_tape(&specs, &opts.tape, n)?,
            (None, None) => anyhow::bail!(
                "the interrupted dump went to {}, which cannot be resumed; run the dump again without --resume",
                p.outputs.join(", ")
            ),
        };
        (o, w, Some((p, kept)))
    } else {
        if interrupted.is_some() {
            // A note, not a warning: nothing is lost (the interrupted
            // dump never reached the catalog) and this dump is whole.
            crate::progress::note(&format!(
                "an interrupted dump of {} is discarded (`snapdump dump --resume` continues one instead)",
                source.display()
            ));
            resume::discard(&catalog.dir);
        }
        let (o, w) = Output::open_medium(&specs, &opts.tape)?;
        (o, w, None)
    };
    let resume_point = resuming.as_ref().map(|r| &r.0);
    let swap = swapping.join().unwrap_or((None, None));
    let result = run(
        opts,
        &mut catalog,
        &source,
        bs,
        output,
        out,
        resume_point,
        &specs,
        None,
        None,
        swap,
        report,
    );
    let (mut summary, new_state) = match result {
        Ok(v) => v.expect("a dump without a gate always writes"),
        Err(e) => {
            // The partial stream was removed: nothing is left to resume.
            resume::clear(&catalog.dir);
            return Err(e);
        }
    };
    if let Some((_, kept)) = &resuming {
        summary.resumed_bytes = kept.load(std::sync::atomic::Ordering::Relaxed);
    }
    // The stream is complete, synced and in place: now it may become a base.
    drop_aside(std::mem::replace(&mut catalog.state, new_state));
    catalog.commit().with_context(|| {
        format!(
            "the stream {} is complete, but the catalog could not record it, so it will not be a base for later levels",
            opts.output
        )
    })?;
    resume::clear(&catalog.dir);
    if let Some(swap) = &summary.tracker_swap {
        // Only now: a snapshot the catalog does not hold must not name an
        // epoch (the next dump then takes in this one's changes too).
        if let Err(e) =
            crate::track::record_snapshot(&catalog.dir.join("tracker"), summary.snapshot.id, swap)
        {
            crate::progress::println_err(&format!(
                "snapdump: warning: cannot record the tracker's epoch with snapshot {}: {e:#}; the next increment walks the tree",
                summary.snapshot.id
            ));
        }
    }
    drop_aside(catalog);
    Ok(DumpSummary {
        elapsed_seconds: started.elapsed().as_secs_f64(),
        ..summary
    })
}

/// Frees `what` on another thread. A catalog's tree is an allocation per
/// inode (a million of them at scale): freeing it takes longer than
/// committing the next one, and nothing waits for it (at exit the process
/// just ends).
fn drop_aside<T: Send + 'static>(what: T) {
    // With no thread to be had, the failed spawn drops `what` here.
    let _ = std::thread::Builder::new()
        .name("drop".into())
        .spawn(move || drop(what));
}

/// What writing the stream produced, for the catalog to record.
struct Written {
    tree: Tree,
    plan: plan::Plan,
    header: StreamHeader,
    end: crate::stream::payload::End,
    stream_bytes: u64,
    unstable: std::collections::HashSet<u64>,
    tracker: Option<tracked::TrackerSummary>,
    tracker_swap: Option<crate::track::Swap>,
}

/// What a dump run needs besides its options: the catalog it records into,
/// the canonical source, the medium, and a resume point if it continues an
/// interrupted dump.
struct Run<'a> {
    opts: &'a DumpOptions,
    source: &'a std::path::Path,
    bs: u32,
    resuming: Option<&'a resume::ResumePoint>,
    specs: &'a [String],
    gate: Option<&'a GateFn<'a>>,
    /// The tracker's swap made for this dump, if a tracker runs.
    swap: Option<crate::track::Swap>,
    /// Why the tracker expected for this source could not swap.
    tracker_unusable: Option<String>,
    report: &'a Report,
}

/// Scans, plans and writes the stream, commits the output, and returns the
/// summary and the catalog state that records the new snapshot (which the
/// caller commits).
#[allow(clippy::too_many_arguments)]
fn run(
    opts: &DumpOptions,
    catalog: &mut Catalog,
    source: &std::path::Path,
    bs: u32,
    output: Output,
    out: Box<dyn std::io::Write + Send>,
    resuming: Option<&resume::ResumePoint>,
    specs: &[String],
    gate: Option<&GateFn<'_>>,
    prescanned: Option<Tree>,
    swap: (Option<crate::track::Swap>, Option<String>),
    report: &Report,
) -> Result<Option<(DumpSummary, crate::catalog::CatalogState)>> {
    let (swap, tracker_unusable) = swap;
    let run = Run {
        opts,
        source,
        bs,
        resuming,
        specs,
        gate,
        swap,
        tracker_unusable,
        report,
    };
    let scan_started = Time::now();
    let mut state = catalog.state.clone_without_tree();
    let written = match run.write(catalog, &mut state, &output, out, prescanned) {
        Ok(Some(w)) => w,
        Ok(None) => {
            output.abort();
            return Ok(None);
        }
        Err(e) => {
            output.abort();
            return Err(e);
        }
    };
    let output_name = output.name.clone();
    let tape_file = output.tape_file();
    let volumes = output.commit_counting_volumes()?;
    let mut summary = run.record(&mut state, written, scan_started, output_name);
    summary.tape_file = tape_file;
    summary.volumes = volumes;
    Ok(Some((summary, state)))
}

/// The rules a dump follows: those given, else the recorded ones (else
/// none). Given rules that differ from recorded ones are refused unless
/// `changed` or the dump is a full image (which builds on nothing).
fn effective_rules(
    recorded: Option<&crate::rules::Rules>,
    given: Option<&crate::rules::Rules>,
    changed: bool,
    full: bool,
) -> Result<crate::rules::Rules> {
    match (recorded, given) {
        (Some(r), Some(g)) if r != g && !changed && !full => bail!(
            "the exclusion rules differ from the ones this source's earlier dumps followed ({}); give the same ones (or none, to use them), or add --rules-changed: this increment then carries what the new rules bring in or leave out",
            r.describe()
        ),
        (_, Some(g)) => Ok(g.clone()),
        (Some(r), None) => Ok(r.clone()),
        (None, None) => Ok(crate::rules::Rules::none()),
    }
}

/// Scans on a thread with a deep stack (the walk recurses per directory
/// level).
fn scan_tree(source: &std::path::Path, opts: &ScanOptions, report: &Report) -> Result<Tree> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn_scoped(s, || scan(source, opts, report))
            .expect("spawn scan thread")
            .join()
            .expect("scan thread panicked")
    })
}

/// The scan of a dump into a sink, made before its base and snapshot are
/// chosen (the scan needs neither), so it overlaps whatever the choice
/// waits for — a replication's destination answering over ssh.
pub(crate) fn scan_for_sink(
    source: &std::path::Path,
    catalog: &Catalog,
    catalog_root: &std::path::Path,
    cross_mounts: bool,
    report: &Report,
) -> Result<Tree> {
    let mut exclude = std::collections::HashSet::new();
    for p in [catalog.dir.as_path(), catalog_root] {
        if let Ok(m) = std::fs::metadata(p) {
            exclude.insert((m.dev(), m.ino()));
        }
    }
    // The recorded rules; the level is chosen after the scan, so the
    // nodump flag is honoured as for an increment whenever there is a base
    // to build on.
    let rules = catalog
        .state
        .rules
        .clone()
        .unwrap_or_else(crate::rules::Rules::none);
    let level = u8::from(catalog.state.tree.is_some());
    let matcher = rules.matcher(level)?;
    let opts = ScanOptions {
        block_size: catalog.state.block_size as u64,
        exclude,
        prev: catalog.state.tree.as_ref(),
        prev_has_flags: catalog.state.flags_recorded,
        cross_mounts,
        rules: Some(&matcher),
        tracked: None,
    };
    scan_tree(source, &opts, report)
}

impl Run<'_> {
    /// Files the dump must not read: its own output (and the temporary
    /// file it is written to), the catalog, a virtual tape inside the
    /// source.
    fn exclusions(
        &self,
        catalog: &Catalog,
        output: &Output,
    ) -> std::collections::HashSet<(u64, u64)> {
        let opts = self.opts;
        let mut exclude = std::collections::HashSet::new();
        let mut add = |p: &std::path::Path| {
            if let Ok(m) = std::fs::metadata(p) {
                exclude.insert((m.dev(), m.ino()));
            }
        };
        add(std::path::Path::new(&opts.output));
        add(&catalog.dir);
        add(&opts.catalog_root);
        if let Some(partial) = output.partial_path() {
            add(&partial);
        }
        for spec in std::iter::once(&opts.output).chain(&opts.volumes) {
            if crate::media::kind::is_virtual_tape(spec) {
                add(std::path::Path::new(spec));
            }
        }
        if let Some(tmp) = output_tmp_key(&opts.output) {
            exclude.insert(tmp);
        }
        exclude
    }

    /// Scans the source, plans the image and writes the whole stream.
    fn write(
        &self,
        catalog: &Catalog,
        state: &mut crate::catalog::CatalogState,
        output: &Output,
        out: Box<dyn std::io::Write + Send>,
        prescanned: Option<Tree>,
    ) -> Result<Option<Written>> {
        let (opts, bs, report) = (self.opts, self.bs, self.report);
        // The previous snapshot's checksums left in the catalog's pack.
        let packed = catalog.sums();
        // The tracker swaps before anything of the tree is read.
        let tracker_dir = catalog.dir.join("tracker");
        let prescanned_none = prescanned.is_none();
        let swap = match (&prescanned, self.gate) {
            (None, None) => self.swap.clone(),
            _ => None,
        };
        crate::failpoint::hit("dump-after-swap");
        let base = select_base(&state.snapshots, opts.level, opts.base)?;
        if base.is_none() && opts.level > 0 {
            crate::progress::println_err(&format!(
                "snapdump: warning: no earlier snapshot of level below {} in the catalog: writing a full image",
                opts.level
            ));
        }
        let source = self.source;
        let rules = effective_rules(
            state.rules.as_ref(),
            opts.rules.as_ref(),
            opts.rules_changed,
            base.is_none(),
        )?;
        let matcher = rules.matcher(opts.level)?;
        let rules_same = state.rules.as_ref().unwrap_or(&crate::rules::Rules::none()) == &rules;
        let tracked = match &swap {
            Some(sw) if base.is_some() => {
                let t = tracked::changes(
                    sw,
                    &tracker_dir,
                    &catalog.state,
                    source,
                    opts.level,
                    rules_same,
                    opts.cross_mounts,
                );
                if let Err(why) = &t {
                    crate::progress::println_err(&format!(
                        "snapdump: warning: the change tracker cannot be used for this increment: {why}; walking the tree"
                    ));
                }
                Some(t)
            }
            _ => None,
        };
        let mut tracker_summary = swap.as_ref().map(|sw| tracked::TrackerSummary {
            epoch: Some(sw.epoch),
            used: matches!(tracked, Some(Ok(_))),
            walked_because: match &tracked {
                Some(Err(why)) => Some(why.clone()),
                None if base.is_none() => Some("a full image reads everything".into()),
                _ => None,
            },
            verified: None,
        });
        state.rules = Some(rules);
        let exclude = self.exclusions(catalog, output);
        let scan_with = |t: Option<&crate::track::Tracked>| {
            let changed = t.map(|t| crate::scan::Changed {
                dirs: &t.changes.names,
                inodes: &t.changes.inodes,
            });
            let scan_opts = ScanOptions {
                block_size: bs as u64,
                exclude: exclude.clone(),
                prev: catalog.state.tree.as_ref(),
                prev_has_flags: state.flags_recorded,
                cross_mounts: self.opts.cross_mounts,
                rules: Some(&matcher),
                tracked: changed.as_ref(),
            };
            scan_tree(source, &scan_opts, report)
        };
        let use_tracker = match &tracked {
            Some(Ok(t)) => Some(t),
            _ => None,
        };
        let mut tree = match prescanned {
            Some(t) => t,
            None if opts.tracker == tracked::TrackerMode::Verify => scan_with(None)?,
            None => scan_with(use_tracker)?,
        };
        crate::failpoint::pause("dump-after-scan");
        crate::progress::list_entries(&tree);
        let open_root = || {
            fsx::open_dir_path(source)
                .with_context(|| format!("cannot open source {}", source.display()))
        };
        crate::catalog::create_private_dir(&catalog.dir)?;
        fn ranges(t: &crate::track::Tracked) -> plan::Ranges<'_> {
            plan::Ranges {
                by_ino: &t.ranges,
                page_shift: t.page_shift,
                complete: t.ranges_complete,
                modified: &t.changes.modified,
            }
        }
        if let (Some(t), tracked::TrackerMode::Verify) = (use_tracker, opts.tracker) {
            // The tracked tree and plan, beside the walked ones, on copies.
            let mut ttree = scan_with(Some(t))?;
            let mut planes = state.planes.clone();
            let r = ranges(t);
            plan::plan(
                &mut ttree,
                plan::PlanInput {
                    prev: catalog.state.tree.as_ref(),
                    sums: &packed,
                    base,
                    planes: &mut planes,
                    prev_active: &state.active,
                    block_size: bs as u64,
                    spool_dir: &catalog.dir,
                    keep_vbns: false,
                    ranges: Some(&r),
                },
                open_root()?,
                report,
            )?;
            let mut wtree = tree.clone();
            let mut wplanes = state.planes.clone();
            plan::plan(
                &mut wtree,
                plan::PlanInput {
                    prev: catalog.state.tree.as_ref(),
                    sums: &packed,
                    base,
                    planes: &mut wplanes,
                    prev_active: &state.active,
                    block_size: bs as u64,
                    spool_dir: &catalog.dir,
                    keep_vbns: false,
                    ranges: None,
                },
                open_root()?,
                report,
            )?;
            let diff = tracked::differences(&ttree, &wtree, &packed)?;
            if !diff.is_empty() {
                bail!(
                    "--verify-tracker: the change tracker missed what the walk found: {}; nothing was written",
                    diff.join("; ")
                );
            }
            if let Some(s) = tracker_summary.as_mut() {
                s.verified = Some(true);
            }
        }
        let r = use_tracker.map(ranges);
        let plan = plan::plan(
            &mut tree,
            plan::PlanInput {
                prev: catalog.state.tree.as_ref(),
                sums: &packed,
                base,
                planes: &mut state.planes,
                prev_active: &state.active,
                block_size: bs as u64,
                spool_dir: &catalog.dir,
                keep_vbns: self.gate.is_some(),
                ranges: if opts.tracker == tracked::TrackerMode::Verify {
                    None
                } else {
                    r.as_ref()
                },
            },
            open_root()?,
            report,
        )?;
        let mut resend = None;
        if let Some(gate) = self.gate {
            let newest = state.snapshots.len().checked_sub(1);
            let changed = plan.image.count() > 0
                || plan.dealloc.count() > 0
                || catalog
                    .state
                    .tree
                    .as_ref()
                    .is_none_or(|prev| !same_metadata(prev, &tree));
            let g = Gate {
                base_is_newest: base.is_some() && base == newest,
                changed,
                unchanged_since_newest: plan.active == state.active
                    && catalog
                        .state
                        .tree
                        .as_ref()
                        .is_some_and(|prev| same_metadata(prev, &tree)),
            };
            match gate(&g)? {
                GateAnswer::Stop => return Ok(None),
                GateAnswer::Dump => {}
                GateAnswer::Resend(snap) => resend = Some(snap),
            }
        }
        let (snap, stream_id) = match resend {
            // The newest snapshot again, as it is now on disk; the stream
            // id is the one chosen for this transfer.
            Some(snap) => (snap, self.identity(catalog, state, output)?.1),
            None => self.identity(catalog, state, output)?,
        };
        let header = StreamHeader::new(ImageHeader {
            source_uuid: state.source_uuid,
            source_path: state.source_path.clone(),
            snapshot: snap,
            base: base.map(|b| state.snapshots[b].snap.clone()),
            block_size: bs,
            compression_level: opts.compression,
            entries: tree.dirents.len() as u64,
            stream_id,
        });
        let image = Image {
            carried: Image::runs_of(&plan.image),
            dealloc: Image::runs_of(&plan.dealloc),
        };
        output.set_label(header.tape_label());
        let mut w = StreamWriter::new(out, opts.compression, bs)?;
        write_front(&mut w, &header, &tree, &image)?;
        let progress = Progress::bytes(image.carried_blocks().saturating_mul(bs as u64), "dump");
        let data = pipeline::write_data(
            w,
            &tree,
            &plan.image,
            &plan.spool,
            open_root()?,
            opts.compression,
            bs,
            report,
            &progress,
        )?;
        drop(progress);
        let (end, out, stream_bytes) = data.writer.finish()?;
        drop(out);
        record_sums(&mut tree, data.sums, &packed, bs)?;
        Ok(Some(Written {
            tree,
            plan,
            header,
            end,
            stream_bytes,
            unstable: data.unstable,
            tracker: tracker_summary.or_else(|| {
                let why = self.tracker_unusable.as_ref()?;
                (prescanned_none && self.gate.is_none()).then(|| tracked::TrackerSummary {
                    walked_because: Some(why.clone()),
                    ..Default::default()
                })
            }),
            tracker_swap: swap,
        }))
    }

    /// The new snapshot and stream id: those of the interrupted dump when
    /// resuming, else new ones, saved as the resume point before the first
    /// byte is written.
    fn identity(
        &self,
        catalog: &Catalog,
        state: &crate::catalog::CatalogState,
        output: &Output,
    ) -> Result<(SnapshotRef, [u8; 16])> {
        if let Some(p) = self.resuming {
            return Ok((p.snapshot()?, p.stream_id()));
        }
        let stream_id = crate::ids::random_id();
        // A given time is taken as the clock would be: not checked
        // against the newest snapshot's, since a clock that was ahead
        // once must not stop every later dump (retention counts such a
        // stamp at its successor's time).
        let time = self.opts.snapshot_time.unwrap_or_else(Time::now);
        let snap = SnapshotRef {
            id: state.next_snap_id,
            uuid: crate::ids::random_id(),
            time,
            level: self.opts.level,
        };
        resume::save(
            &catalog.dir,
            &resume::ResumePoint {
                source_uuid: crate::ids::hex(&state.source_uuid),
                snapshot_id: snap.id,
                snapshot_uuid: crate::ids::hex(&snap.uuid),
                time_sec: snap.time.sec,
                time_nsec: snap.time.nsec,
                level: snap.level,
                compression: self.opts.compression,
                outputs: self.specs.to_vec(),
                partial: output.partial_path(),
                tape_file: output.tape_file(),
                stream_id: Some(crate::ids::hex(&stream_id)),
            },
        )?;
        Ok((snap, stream_id))
    }

    /// Records the written snapshot in `state` (block checksums, planes,
    /// the snapshot table, the change marks) and summarises the dump.
    fn record(
        &self,
        state: &mut crate::catalog::CatalogState,
        w: Written,
        scan_started: Time,
        output_name: String,
    ) -> DumpSummary {
        let report = self.report;
        let Written {
            mut tree,
            plan,
            header,
            end,
            stream_bytes,
            mut unstable,
            tracker,
            tracker_swap,
        } = w;
        // Files that changed while read get a zero ctime so the next dump
        // reads them again.
        unstable.extend(plan.unstable.iter().copied());
        for ino in &unstable {
            tree.inode_mut(*ino).attrs.ctime = Time::default();
        }
        // File times come from a coarse clock (a few milliseconds): a file
        // changed again right after it was scanned can keep the same ctime.
        // A file whose times are that recent is recorded as unstable, so
        // the next dump compares its blocks instead of trusting its times
        // ("racily clean", as git calls it).
        let racy = Time {
            sec: scan_started.sec - 1,
            nsec: scan_started.nsec,
        };
        for inode in tree.inodes.iter_mut() {
            if inode.kind == Kind::File && (inode.attrs.ctime >= racy || inode.attrs.mtime >= racy)
            {
                inode.attrs.ctime = Time::default();
            }
        }
        let snap = header.snapshot.clone();
        state.planes.push(plan.active.clone());
        state.snapshots.push(SnapshotInfo {
            snap: snap.clone(),
            base: header.base.as_ref().map(|b| b.id),
            full: header.full,
            stream_bytes,
            data_blocks: end.data_blocks,
            output: recorded_location(&output_name),
        });
        state.active = plan.active.clone();
        // The marks of this dump become the catalog's record of how the
        // newest snapshot was made; the next dump starts a fresh pair.
        let mut marks = DoubleMarks {
            current: plan.marks.clone(),
            previous: std::mem::take(&mut state.marks),
        };
        marks.swap();
        state.marks = marks.previous;
        state.next_snap_id += 1;
        let count = |k: Kind| tree.inodes.iter().filter(|i| i.kind == k).count() as u64;
        let summary = DumpSummary {
            command: "dump",
            status: report.status_word(),
            source: self.source.display().to_string(),
            output: output_name,
            snapshot: snap,
            full: header.full,
            base: header.base.clone(),
            stream_bytes,
            dirs: count(Kind::Dir),
            files: count(Kind::File),
            symlinks: count(Kind::Symlink),
            special: tree.inodes.len() as u64
                - count(Kind::Dir)
                - count(Kind::File)
                - count(Kind::Symlink),
            files_unchanged: plan.files_unchanged,
            files_compared: plan.files_compared,
            data_blocks: end.data_blocks,
            data_bytes: end.data_bytes,
            deallocated_blocks: plan.dealloc.count(),
            vbn_high_water: plan.active.high_water(),
            elapsed_seconds: 0.0,
            resumed_bytes: 0,
            tape_file: None,
            volumes: None,
            tracker,
            tracker_swap,
            warnings: report.warnings(),
        };
        state.tree = Some(tree);
        state.flags_recorded = true;
        summary
    }
}

/// What a gated dump (replication) learns after planning, before it
/// writes anything: whether the new snapshot would differ at all from the
/// newest recorded one.
pub struct Gate {
    /// The base is the catalog's newest snapshot.
    pub base_is_newest: bool,
    /// The tree differs from the base (blocks or metadata); with the
    /// newest as the base, from the newest.
    pub changed: bool,
    /// The tree is the newest snapshot still: same blocks, same metadata.
    pub unchanged_since_newest: bool,
}

/// What a gated dump does after planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateAnswer {
    /// Write nothing, record nothing.
    Stop,
    /// Write and record the new snapshot.
    Dump,
    /// Write the stream of this snapshot, the catalog's newest, from the
    /// chosen base, and record nothing: the tree is that snapshot still
    /// (`Gate::unchanged_since_newest`), so a destination behind it is
    /// brought to it instead of to a copy of it under a new name.
    Resend(SnapshotRef),
}

/// A gated dump's check after planning (see [`Gate`]).
pub type GateFn<'a> = dyn Fn(&Gate) -> Result<GateAnswer> + 'a;

/// Whether two trees have the same metadata, as a stream would carry it.
fn same_metadata(a: &Tree, b: &Tree) -> bool {
    if a.dirents.len() != b.dirents.len() || a.inodes.len() != b.inodes.len() {
        return false;
    }
    let enc = |t: &Tree| {
        let mut e = crate::wire::Enc::new();
        for i in 0..t.dirents.len() {
            t.encode_item(i, &mut e, crate::tree::ItemForm::CURRENT);
        }
        e.buf
    };
    enc(a) == enc(b)
}

/// Records in `tree` the checksums of the blocks read in the data phase
/// (a file whose checksums are still in the catalog's pack has them read
/// from there first).
fn record_sums(
    tree: &mut Tree,
    sums: Vec<(crate::stream::payload::Segment, Vec<[u8; 16]>)>,
    reader: &crate::catalog::pack::SumsReader,
    bs: u32,
) -> Result<()> {
    for (seg, seg_sums) in sums {
        let inode = tree.inode_mut(seg.ino);
        let pos = block_position(inode, seg.offset / bs as u64);
        reader.make_here(&mut inode.sums)?[pos..pos + seg_sums.len()].copy_from_slice(&seg_sums);
    }
    Ok(())
}

/// Index of file block `block` in the inode's checksum vector (extent order).
fn block_position(inode: &crate::tree::Inode, block: u64) -> usize {
    let mut pos = 0;
    for x in &inode.extents {
        if block >= x.block && block < x.block + x.count {
            return (pos + block - x.block) as usize;
        }
        pos += x.count;
    }
    unreachable!("segment block outside the inode's extents")
}

/// Where the catalog says a snapshot's stream went: an absolute path for
/// files and devices (so `history --catalog` can find it from anywhere),
/// "-" for stdout.
fn recorded_location(name: &str) -> String {
    if name == "-" || name.starts_with(sink::REPLICA_PREFIX) {
        return name.to_string();
    }
    std::path::absolute(name)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| name.to_string())
}

/// (dev, ino) of the temporary file a regular-file output is written to, so
/// a stream written inside its own source is never dumped into itself.
fn output_tmp_key(spec: &str) -> Option<(u64, u64)> {
    if spec == "-" {
        return None;
    }
    let p = std::path::Path::new(spec);
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = format!(
        ".{}.snapdump-partial.{}",
        p.file_name()?.to_string_lossy(),
        std::process::id()
    );
    let m = std::fs::metadata(dir.join(name)).ok()?;
    Some((m.dev(), m.ino()))
}
