//! Dumps whose stream goes to a writer the caller owns, between the
//! caller's decisions: the producer `snapdump replicate` drives. The dump
//! itself is the ordinary one (same scan, plan, record stage and catalog
//! commit); the caller picks the base and the snapshot identity under the
//! catalog's lock, may stop after planning when nothing changed, and sees
//! the stream complete before the catalog records it.

use super::{resume::ResumePoint, run, DumpOptions, DumpSummary, Gate, GateAnswer};
use crate::catalog::Catalog;
use crate::media::Output;
use crate::report::Report;
use crate::stream::header::SnapshotRef;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// How the catalog names where a replicated snapshot's stream went.
pub const REPLICA_PREFIX: &str = "replica ";

/// What a sink dump reads and where it records.
pub struct SinkDump {
    /// The source tree.
    pub source: PathBuf,
    /// Catalog root.
    pub catalog_root: PathBuf,
    /// zstd level.
    pub compression: i32,
    /// Lock policy for the source's catalog.
    pub wait: crate::lock::Wait,
    /// Enter mount points below the source.
    pub cross_mounts: bool,
}

/// The caller's choice, made under the catalog's lock.
pub enum Choice {
    /// Take a new snapshot and write its stream.
    Dump {
        /// Catalog id of the base (None: a full image).
        base: Option<u64>,
        /// The new snapshot's identity (its id must be the catalog's next).
        snapshot: SnapshotRef,
        /// The stream id.
        stream_id: [u8; 16],
        /// The source uuid to adopt if the catalog is still empty (a first
        /// snapshot resumed by a later run keeps the first run's uuid).
        source_uuid: [u8; 16],
    },
    /// Write nothing.
    Stop,
}

/// The caller's side of a sink dump.
pub trait SinkHooks {
    /// Chooses what to dump, seeing the locked catalog, after the source
    /// was scanned (at `scanned_at`, the new snapshot's time).
    fn choose(&mut self, catalog: &Catalog, scanned_at: crate::tree::Time) -> Result<Choice>;
    /// What the catalog records as the stream's location (after
    /// [`REPLICA_PREFIX`]); asked after `choose`.
    fn destination(&self) -> String;
    /// After planning: stop, dump, or resend the newest snapshot.
    fn gate(&self, gate: &Gate) -> Result<GateAnswer>;
    /// The writer the stream goes to (asked once, after `choose`).
    fn sink(&mut self) -> Box<dyn std::io::Write + Send>;
    /// The stream is completely written (and flushed): the catalog records
    /// the snapshot only if this succeeds.
    fn before_commit(&mut self, snapshot: &SnapshotRef) -> Result<()>;
}

/// Runs one sink dump; `None` when the caller stopped it.
/// `locked` is the source's canonical path and its catalog's lock
/// ([`super::lock_catalog`]), taken by the caller.
pub fn dump_to_sink(
    opts: &SinkDump,
    locked: (PathBuf, crate::lock::Lock),
    hooks: &mut dyn SinkHooks,
    report: &Report,
) -> Result<Option<DumpSummary>> {
    let started = std::time::Instant::now();
    let (source, _lock) = locked;
    let mut catalog = Catalog::open(
        &opts.catalog_root,
        std::os::unix::ffi::OsStrExt::as_bytes(source.as_os_str()),
        super::DEFAULT_BLOCK_SIZE,
    )?;
    let scanned_at = crate::tree::Time::now();
    let tree = super::scan_for_sink(
        &source,
        &catalog,
        &opts.catalog_root,
        opts.cross_mounts,
        report,
    )?;
    let (base, snapshot, stream_id, source_uuid) = match hooks.choose(&catalog, scanned_at)? {
        Choice::Stop => return Ok(None),
        Choice::Dump {
            base,
            snapshot,
            stream_id,
            source_uuid,
        } => (base, snapshot, stream_id, source_uuid),
    };
    if catalog.state.snapshots.is_empty() {
        catalog.state.source_uuid = source_uuid;
    }
    if snapshot.id != catalog.state.next_snap_id || catalog.state.source_uuid != source_uuid {
        bail!(
            "internal: replication chose snapshot {} of source {} but the catalog of {} is at {}",
            snapshot.id,
            crate::ids::hex(&source_uuid),
            source.display(),
            catalog.state.next_snap_id
        );
    }
    let name = format!("{REPLICA_PREFIX}{}", hooks.destination());
    let dump_opts = DumpOptions {
        level: snapshot.level,
        output: name.clone(),
        volumes: Vec::new(),
        tape: crate::media::tape::writer::TapeOptions {
            block_size: crate::media::tape::DEFAULT_RECORD_KIB * 1024,
            append: false,
            capacity: 0,
            new_volume: None,
        },
        catalog_root: opts.catalog_root.clone(),
        compression: opts.compression,
        source: source.clone(),
        base,
        wait: opts.wait,
        resume: false,
        cross_mounts: opts.cross_mounts,
        // A replication follows the rules its source's dumps recorded.
        rules: None,
        rules_changed: false,
        snapshot_time: None,
        tracker: super::tracked::TrackerMode::Off,
    };
    let point = ResumePoint {
        source_uuid: crate::ids::hex(&source_uuid),
        snapshot_id: snapshot.id,
        snapshot_uuid: crate::ids::hex(&snapshot.uuid),
        time_sec: snapshot.time.sec,
        time_nsec: snapshot.time.nsec,
        level: snapshot.level,
        compression: opts.compression,
        outputs: vec![name.clone()],
        partial: None,
        tape_file: None,
        stream_id: Some(crate::ids::hex(&stream_id)),
    };
    let out = hooks.sink();
    let bs = catalog.state.block_size;
    let specs = [name.clone()];
    let result = {
        let h: &dyn SinkHooks = hooks;
        let gate = |g: &Gate| h.gate(g);
        run(
            &dump_opts,
            &mut catalog,
            &source,
            bs,
            Output::sink(&name),
            out,
            Some(&point),
            &specs,
            Some(&gate),
            Some(tree),
            (None, None),
            report,
        )?
    };
    let Some((summary, new_state)) = result else {
        return Ok(None);
    };
    hooks.before_commit(&summary.snapshot)?;
    if summary.snapshot.id != catalog.state.next_snap_id {
        // A resent snapshot: the catalog has it already.
        return Ok(Some(DumpSummary {
            elapsed_seconds: started.elapsed().as_secs_f64(),
            ..summary
        }));
    }
    catalog.state = new_state;
    catalog.commit().with_context(|| {
        format!(
            "the stream to {} is complete, but the catalog could not record it",
            hooks.destination()
        )
    })?;
    Ok(Some(DumpSummary {
        elapsed_seconds: started.elapsed().as_secs_f64(),
        ..summary
    }))
}
