//! `snapdump snapshots`: the snapshot tables of one or all catalogs.

use crate::catalog::{Catalog, SnapshotInfo};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The snapshots of one source.
#[derive(Serialize)]
pub struct SourceSnapshots {
    /// The source path.
    pub source: String,
    /// The catalog's source id.
    pub source_uuid: String,
    /// Its snapshots, oldest first.
    pub snapshots: Vec<SnapshotInfo>,
}

/// Reads the snapshot tables under `root`, of `source` only when given;
/// without a source, a catalog that cannot be read is a warning in
/// `report` and the others are still listed.
pub fn list(
    root: &Path,
    source: Option<&Path>,
    report: &crate::report::Report,
) -> Result<Vec<SourceSnapshots>> {
    let states = match source {
        Some(s) => {
            let canon = std::fs::canonicalize(s)
                .with_context(|| format!("cannot access source {}", s.display()))?;
            let c = Catalog::open(root, canon.as_os_str().as_bytes(), 4096)?;
            if c.state.snapshots.is_empty() {
                bail!(
                    "no snapshots of {} in catalog {}; run a level-0 dump first",
                    canon.display(),
                    root.display()
                );
            }
            vec![c.state]
        }
        None => Catalog::list_all(root)?.loaded(report, "its snapshots are not listed"),
    };
    Ok(states
        .into_iter()
        .map(|s| SourceSnapshots {
            source: crate::names::escape(&s.source_path),
            source_uuid: crate::ids::hex(&s.source_uuid),
            snapshots: s.snapshots,
        })
        .collect())
}
