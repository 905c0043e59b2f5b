//! Resuming an interrupted dump (`dump --resume`).
//!
//! A dump is deterministic: the same catalog state, source and snapshot
//! identity produce the same stream, byte for byte (files are scanned in
//! name order, VBNs allocated lowest-first, records packed and compressed
//! the same way). So a dump records its identity in a resume point before
//! it writes anything, and an interrupted dump (killed, crashed, power
//! lost) is continued by running it again with that identity: the bytes
//! already on the medium are compared with the stream as it is produced
//! and kept while they match; writing starts where they end or differ.
//! The medium, the slow part on tape and over networks, is never written
//! twice, and the finished stream is exactly the one a single run would
//! have written (if the source changed meanwhile, the stream describes it
//! as it is now, from the first byte that differs).
//!
//! The resume point is `resume` in the source's catalog directory, JSON,
//! replaced atomically; it is removed when the dump completes or fails
//! cleanly (a failed dump leaves nothing to resume).

use crate::stream::header::SnapshotRef;
use crate::tree::Time;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a resumed dump must reproduce.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResumePoint {
    /// The catalog's source uuid (a new catalog gets its uuid at its first
    /// commit, so a resumed first dump must reuse it).
    pub source_uuid: String,
    /// Snapshot id.
    pub snapshot_id: u64,
    /// Snapshot uuid, hex.
    pub snapshot_uuid: String,
    /// Snapshot time, seconds.
    pub time_sec: i64,
    /// Snapshot time, nanoseconds.
    pub time_nsec: u32,
    /// Dump level.
    pub level: u8,
    /// zstd level.
    pub compression: i32,
    /// The outputs (`-f`, in order).
    pub outputs: Vec<String>,
    /// For a dump to a plain file: the temporary file being written.
    pub partial: Option<PathBuf>,
    /// For a dump to tape: the tape file (from 1) the dump starts at.
    pub tape_file: Option<u64>,
    /// The stream's id, hex (absent in resume points of format-1 dumps,
    /// whose streams a resumed dump rewrites from the first byte anyway).
    #[serde(default)]
    pub stream_id: Option<String>,
}

impl ResumePoint {
    /// The source uuid to reuse.
    pub fn source(&self) -> Result<[u8; 16]> {
        crate::ids::unhex(&self.source_uuid)
            .and_then(|v| <[u8; 16]>::try_from(v).ok())
            .ok_or_else(|| anyhow!("resume point: bad source uuid"))
    }

    /// The stream id to reuse, so the resumed stream is byte for byte the
    /// one the interrupted run was writing; a new one when none was kept.
    pub fn stream_id(&self) -> [u8; 16] {
        self.stream_id
            .as_deref()
            .and_then(crate::ids::unhex)
            .and_then(|v| <[u8; 16]>::try_from(v).ok())
            .unwrap_or_else(crate::ids::random_id)
    }

    /// The snapshot identity to reuse.
    pub fn snapshot(&self) -> Result<SnapshotRef> {
        let uuid = crate::ids::unhex(&self.snapshot_uuid)
            .and_then(|v| <[u8; 16]>::try_from(v).ok())
            .ok_or_else(|| anyhow!("resume point: bad snapshot uuid"))?;
        Ok(SnapshotRef {
            id: self.snapshot_id,
            uuid,
            time: Time {
                sec: self.time_sec,
                nsec: self.time_nsec.min(999_999_999),
            },
            level: self.level,
        })
    }
}

fn path(catalog_dir: &Path) -> PathBuf {
    catalog_dir.join("resume")
}

/// Records the resume point of the dump starting now.
pub fn save(catalog_dir: &Path, p: &ResumePoint) -> Result<()> {
    let text = serde_json::to_vec_pretty(p)?;
    crate::atomic::replace_file(&path(catalog_dir), &text).with_context(|| {
        format!(
            "cannot record the resume point in {}",
            catalog_dir.display()
        )
    })
}

/// The resume point of an interrupted dump, if any.
pub fn load(catalog_dir: &Path) -> Result<Option<ResumePoint>> {
    match std::fs::read(path(catalog_dir)) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            anyhow!(
                "resume point {} is damaged: {e}",
                path(catalog_dir).display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path(catalog_dir).display())),
    }
}

/// Forgets the resume point (the dump completed or failed cleanly).
pub fn clear(catalog_dir: &Path) {
    let _ = std::fs::remove_file(path(catalog_dir));
}

/// Forgets an interrupted dump that a new (not resumed) dump replaces,
/// removing its partial file.
pub fn discard(catalog_dir: &Path) {
    if let Ok(Some(p)) = load(catalog_dir) {
        if let Some(partial) = &p.partial {
            let _ = std::fs::remove_file(partial);
        }
    }
    clear(catalog_dir);
}

/// Checks that a `--resume` dump is the one that was interrupted.
pub fn check(p: &ResumePoint, level: u8, outputs: &[String], compression: i32) -> Result<()> {
    if p.level != level {
        bail!(
            "the interrupted dump was a level {}; resume it with -{}",
            p.level,
            p.level
        );
    }
    if p.outputs != outputs {
        bail!(
            "the interrupted dump wrote to {}; resume it with the same -f",
            p.outputs.join(", ")
        );
    }
    if p.compression != compression {
        bail!(
            "the interrupted dump used -z {}; resume it with the same level",
            p.compression
        );
    }
    Ok(())
}
