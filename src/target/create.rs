//! Creating a selection of a snapshot in a directory, shared by `restore -x`
//! and `restore -i` (data from streams) and `volume extract` (data from a
//! volume): the target is prepared, the selection's entries made, the data
//! filled in by the caller, and on failure what was made is taken away.

use super::select::Selection;
use super::state::STATE_DIR;
use super::writer::DirWriter;
use crate::fsx;
use crate::names::escape;
use crate::report::Report;
use anyhow::{anyhow, bail, Context, Result};
use std::io;
use std::path::Path;

/// Creates the selection in `target` and lets `fill` write its files'
/// data through the [`DirWriter`] (restore -x from streams, volume extract from
/// a volume); then sets attributes. On failure the entries it created are
/// removed again and the error says so.
pub fn create_selection(
    sel: &Selection,
    target: &Path,
    force: bool,
    report: &Report,
    fill: impl FnOnce(&mut DirWriter) -> Result<(u64, u64)>,
) -> Result<(u64, u64)> {
    let root = fsx::open_dir_path(target)
        .with_context(|| format!("cannot open target {}", target.display()))?;
    let mut apply = DirWriter::new(root, force, report)?;
    apply.merge_directories(&sel.ancestor);
    let result = apply
        .skeleton(&sel.tree)
        .and_then(|_| fill(&mut apply))
        .and_then(|n| apply.finish_selected(&sel.tree, sel.whole).map(|_| n));
    result.map_err(|e| {
        let left = apply.remove_created(&sel.tree);
        let what = if left == 0 {
            "nothing was extracted (the entries it had created were removed)".to_string()
        } else {
            format!("{left} entries it had created could not be removed")
        };
        anyhow!("{e:#}; {what} in {}", target.display())
    })
}

/// Creates the target when missing; refuses one that an incremental
/// restore maintains (extracting into it would make later increments
/// apply to a tree that is not the snapshot they expect) unless forced.
pub fn prepare_target(target: &Path, force: bool) -> Result<()> {
    match std::fs::symlink_metadata(target) {
        Ok(m) if !m.is_dir() => bail!("target {} is not a directory", target.display()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir_all(target)
            .with_context(|| format!("cannot create target {}", target.display()))?,
        Err(e) => {
            return Err(e).with_context(|| format!("cannot access target {}", target.display()))
        }
    }
    if !force && target.join(STATE_DIR).join("state").exists() {
        bail!(
            "target {} holds a restored snapshot that increments are applied to ({}); extract elsewhere, or use --force",
            target.display(),
            escape(STATE_DIR.as_bytes())
        );
    }
    Ok(())
}
