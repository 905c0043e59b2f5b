//! `restore -x`: extract chosen files and subtrees, as of any snapshot of a
//! chain, into a directory, reading only the records they need.

use super::chain::{Access, At, Chosen};
use super::fetch::{deliver, Plan};
use crate::progress::Progress;
use crate::report::{Report, Warning};
use crate::stream::header::SnapshotRef;
use crate::stream::payload::Segment;
use crate::stream::reader::Digest;
use crate::target::create::{create_selection, prepare_target};
use crate::target::select::{cut, mark_paths, normalize, Selection};
use crate::target::writer::DirWriter;
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What the user asked for.
pub struct ExtractOptions {
    /// The streams (`-f`, any order; unrelated ones are ignored).
    pub inputs: Vec<crate::media::Input>,
    /// Directory to extract into (created if missing).
    pub target: PathBuf,
    /// Paths to extract, relative to the dump's root; none = everything.
    pub paths: Vec<String>,
    /// The snapshot to extract from (default: the newest given).
    pub at: Option<At>,
    /// Replace existing entries in the way.
    pub force: bool,
    /// Read every stream whole and check its digest list.
    pub digest: Digest,
}

/// The `--json` summary of an extraction.
#[derive(Serialize)]
pub struct ExtractSummary {
    /// Always "extract".
    pub command: &'static str,
    /// "ok" or "warnings".
    pub status: &'static str,
    /// The snapshot extracted from.
    pub snapshot: SnapshotRef,
    /// The streams of its chain, full stream first.
    pub chain: Vec<String>,
    /// The target directory.
    pub target: String,
    /// Entries created (chosen entries and the directories leading to them).
    pub entries: u64,
    /// Data blocks written.
    pub data_blocks: u64,
    /// Data bytes written.
    pub data_bytes: u64,
    /// Stream bytes read, all inputs together.
    pub stream_bytes_read: u64,
    /// Total size of the chain's streams that are regular files.
    pub stream_bytes_total: u64,
    /// Wall-clock seconds.
    pub elapsed_seconds: f64,
    /// Entries that could not be restored exactly, and paths not found.
    pub warnings: Vec<Warning>,
}

/// Runs `restore -x`.
pub fn extract(opts: &ExtractOptions, report: &Report) -> Result<ExtractSummary> {
    let started = std::time::Instant::now();
    let mut c = Chosen::open(&opts.inputs, opts.digest, opts.at)?;
    let paths: Vec<Vec<u8>> = opts.paths.iter().map(|p| normalize(p)).collect();
    let (marks, missing) = mark_paths(&c.top().front.tree, &paths);
    for m in &missing {
        report.warn(m, format!("not in {}", c.top().describe()));
    }
    if !missing.is_empty() && missing.len() == paths.len() {
        bail!(
            "none of the given paths is in {}; list it with restore -t",
            c.top().describe()
        );
    }
    let sel = cut(&c.top().front.tree, &marks);
    prepare_target(&opts.target, opts.force)?;
    let (blocks, bytes) = extract_into(&mut c, &sel, &opts.target, opts.force, report)?;
    let total = c
        .chain
        .iter()
        .map(|&i| match &c.set.links[i].access {
            Access::Seek(s) => s.len(),
            Access::Pipe(r) => r.offset(),
        })
        .sum();
    Ok(ExtractSummary {
        command: "extract",
        status: report.status_word(),
        snapshot: c.top().header.snapshot.clone(),
        chain: c.names(),
        target: opts.target.display().to_string(),
        entries: sel.tree.dirents.len() as u64 - 1,
        data_blocks: blocks,
        data_bytes: bytes,
        stream_bytes_read: c.set.bytes_read(),
        stream_bytes_total: total,
        elapsed_seconds: started.elapsed().as_secs_f64(),
        warnings: report.warnings(),
    })
}

/// Creates the selection in `target` (an existing directory) and fills its
/// files from the chain; returns blocks and bytes written. On failure the
/// entries it created are removed again and the error says so.
pub(super) fn extract_into(
    c: &mut Chosen,
    sel: &Selection,
    target: &Path,
    force: bool,
    report: &Report,
) -> Result<(u64, u64)> {
    create_selection(sel, target, force, report, |apply| fill(c, sel, apply))
}

/// Writes the data of the selection's files from the chain; returns blocks
/// and bytes written.
fn fill(c: &mut Chosen, sel: &Selection, apply: &mut DirWriter) -> Result<(u64, u64)> {
    let plan = {
        let links: Vec<_> = c.chain.iter().map(|&i| &c.set.links[i]).collect();
        Plan::new(&links, sel.files(&c.top().front.tree))?
    };
    let bs = c.top().header.block_size as u64;
    let progress = Progress::bytes(plan.blocks().saturating_mul(bs), "extract");
    let mut blocks = 0;
    let mut bytes = 0;
    for (k, wants) in plan.per_link.into_iter().enumerate() {
        let link = &mut c.set.links[c.chain[k]];
        blocks += deliver(link, wants, |w, off, data| {
            progress.inc(data.len() as u64);
            bytes += data.len() as u64;
            let seg = Segment {
                ino: w.ino,
                vbn: 0,
                offset: off,
                len: data.len() as u32,
            };
            apply.write(&sel.tree, &seg, data)
        })?;
    }
    Ok((blocks, bytes))
}
