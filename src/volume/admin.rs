//! `volume snapshots`, `volume delete-snapshot` and `volume shadow`.

use super::store::{Access, Volume};
use crate::lock::Wait;
use crate::stream::header::SnapshotRef;
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::Path;

/// One row of `volume snapshots`.
#[derive(Serialize)]
pub struct SnapshotRow {
    /// Volume-local id (`PATH@ID`).
    pub volume_id: u64,
    /// Identity in the source.
    pub snapshot: SnapshotRef,
    /// The snapshot its stream was based on (none: a full image).
    pub base: Option<SnapshotRef>,
    /// The source, as its streams named it.
    pub source: String,
    /// When the volume received it.
    #[serde(serialize_with = "crate::tree::ser_time")]
    pub received: crate::tree::Time,
    /// A shadow: its blocks may be reused.
    pub shadow: bool,
    /// Blocks it uses.
    pub blocks: u64,
    /// Blocks no other snapshot or relocation map uses (freed if deleted).
    pub exclusive_blocks: u64,
    /// Entries in its tree.
    pub entries: u64,
}

/// `volume snapshots --json`.
#[derive(Serialize)]
pub struct SnapshotTable {
    /// The volume.
    pub volume: String,
    /// Block size.
    pub block_size: u32,
    /// Created with --compact.
    pub compact: bool,
    /// Size of the file.
    pub volume_bytes: u64,
    /// The snapshots, oldest first.
    pub snapshots: Vec<SnapshotRow>,
}

/// Lists the snapshots a volume holds.
pub fn snapshots(path: &Path) -> Result<SnapshotTable> {
    let vol = Volume::open(path, Access::Read, Wait::Yes)?;
    let st = &vol.state;
    let rows = st
        .snapshots
        .iter()
        .map(|s| {
            let mut others = crate::planes::Plane::new();
            for o in st.snapshots.iter().filter(|o| o.id != s.id) {
                others = others.or(&o.plane);
            }
            for e in &st.sources {
                for m in &e.map {
                    others.set_run(m.tgt, m.count);
                }
            }
            let source = st
                .sources
                .iter()
                .find(|e| e.uuid == s.source)
                .map(|e| crate::names::escape(&e.path))
                .unwrap_or_default();
            SnapshotRow {
                volume_id: s.id,
                snapshot: s.snap.clone(),
                base: s.base.clone(),
                source,
                received: s.received,
                shadow: s.shadow,
                blocks: s.plane.count(),
                exclusive_blocks: s.plane.and_not(&others).count(),
                entries: s.tree.dirents.len() as u64 - 1,
            }
        })
        .collect();
    Ok(SnapshotTable {
        volume: path.display().to_string(),
        block_size: vol.sb.block_size,
        compact: vol.compact(),
        volume_bytes: std::fs::metadata(path)?.len(),
        snapshots: rows,
    })
}

/// Removes snapshot `sel` from the volume; blocks nothing else uses become
/// free (and are given back to the file system).
pub fn delete_snapshot(path: &Path, sel: &str, wait: Wait) -> Result<u64> {
    let mut vol = Volume::open(path, Access::Write, wait)?;
    let id = vol.snapshot(Some(sel))?.id;
    let mut state = vol.state.clone();
    state.snapshots.retain(|s| s.id != id);
    vol.commit(state, &crate::planes::Plane::new())?;
    Ok(id)
}

/// Makes snapshot `sel` a shadow: its blocks that no other snapshot (or
/// relocation map) holds may be reused by later receives, which clear its
/// bits as they do. Its metadata stays; it remains a valid (conservative)
/// base for dumps from the volume.
pub fn shadow(path: &Path, sel: &str, wait: Wait) -> Result<u64> {
    let mut vol = Volume::open(path, Access::Write, wait)?;
    let id = vol.snapshot(Some(sel))?.id;
    let mut state = vol.state.clone();
    let s = state
        .snapshots
        .iter_mut()
        .find(|s| s.id == id)
        .expect("found above");
    if s.shadow {
        bail!("snapshot @{id} of {} is already a shadow", path.display());
    }
    s.shadow = true;
    vol.commit(state, &crate::planes::Plane::new())?;
    Ok(id)
}
