//! What a restore into a directory was asked to do and what it did; shared
//! by the full restore and the incremental apply, which both end by
//! recording the snapshot the target now holds.

use super::state::{StatePaths, TargetState};
use crate::report::{Report, Warning};
use crate::stream::header::SnapshotRef;
use crate::stream::reader::Digest;
use anyhow::Result;
use serde::Serialize;
use std::path::PathBuf;

/// What the user asked for.
pub struct RestoreOptions {
    /// Stream to read.
    pub input: crate::media::Input,
    /// Directory to restore into.
    pub target: PathBuf,
    /// Restore into a non-empty target, replacing what is in the way.
    pub force: bool,
    /// Also recompute the stream's digest list.
    pub digest: Digest,
    /// Wait for another restore into the same target, or fail at once.
    pub wait: crate::lock::Wait,
    /// The snapshot earlier inputs of the same run brought the target to
    /// (for what a failure says was restored).
    pub restored_before: Option<SnapshotRef>,
    /// Finish increments in place instead of building the new tree beside
    /// the target and swapping it in (faster where changed files would be
    /// copied, not cloned; a kill mid-finish leaves a mix until the next run).
    pub inplace: bool,
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
    pub(crate) fn new(
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

/// Records the snapshot the target now holds (atomically, last) and
/// summarises the restore; shared by full and incremental restores.
#[allow(clippy::too_many_arguments)]
pub(crate) fn committed(
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
