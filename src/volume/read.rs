//! Reading a volume's snapshots: listing, extracting, and the checked
//! block reader every reader of file data shares.

use super::format::VolSnapshot;
use super::store::{Access, Volume};
use crate::lock::Wait;
use crate::names::escape;
use crate::report::Report;
use crate::stream::header::SnapshotRef;
use crate::stream::payload::Segment;
use crate::target::create::{create_selection, prepare_target};
use crate::target::select::{cut, mark_paths, normalize};
use crate::tree::EntryInfo;
use crate::tree::{Extent, Inode};
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::path::PathBuf;

/// Most blocks read with one pread.
pub const READ_BLOCKS: u64 = 256;

/// Reads blocks `k..k+n` of extent `x` of `inode` into `buf`, each
/// checked against its checksum (and, in a shadow snapshot, against reuse).
pub fn read_run(
    vol: &Volume,
    snap: &VolSnapshot,
    inode: &Inode,
    x: &Extent,
    k: u64,
    n: u64,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let bs = vol.bs();
    let vbn = x.vbn + k;
    buf.resize((n * bs) as usize, 0);
    vol.read_blocks(vbn, buf)
        .map_err(|e| anyhow!("cannot read volume {}: {e}", vol.path.display()))?;
    for i in 0..n {
        let v = vbn + i;
        let b = &buf[(i * bs) as usize..((i + 1) * bs) as usize];
        let ok = vol.block_intact(v, b);
        if !ok || (snap.shadow && !snap.plane.get(v)) {
            let why = if snap.shadow {
                "was reused (shadow snapshot) or is damaged"
            } else {
                "fails its checksum (damaged volume)"
            };
            bail!(
                "volume {} snapshot @{}: block {} of {} (VBN {v}) {why}",
                vol.path.display(),
                snap.id,
                x.block + k + i,
                escape(&snap.tree.path(inode.ino))
            );
        }
    }
    Ok(())
}

/// Calls `f(offset, bytes)` for each data run of a regular file, in
/// order, every block checked ([`read_run`]); holes are not visited and
/// the last block is cut at the file's size.
pub fn read_file(
    vol: &Volume,
    snap: &VolSnapshot,
    inode: &Inode,
    mut f: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let bs = vol.bs();
    let mut buf = Vec::new();
    for x in &inode.extents {
        let mut k = 0;
        while k < x.count {
            let n = (x.count - k).min(READ_BLOCKS);
            read_run(vol, snap, inode, x, k, n, &mut buf)?;
            let offset = (x.block + k) * bs;
            let len = (n * bs).min(inode.size.saturating_sub(offset)) as usize;
            f(offset, &buf[..len])?;
            k += n;
        }
    }
    Ok(())
}

/// `volume ls --json`.
#[derive(Serialize)]
pub struct VolumeListing {
    /// Always "volume ls".
    pub command: &'static str,
    /// The snapshot's volume id.
    pub volume_id: u64,
    /// Its identity in the source.
    pub snapshot: SnapshotRef,
    /// The entries, depth-first.
    pub entries: Vec<EntryInfo>,
}

/// Lists a snapshot (only `paths` and what lies below them, if given).
pub fn ls(
    path: &std::path::Path,
    sel: Option<&str>,
    paths: &[String],
    report: &Report,
) -> Result<VolumeListing> {
    let vol = Volume::open(path, Access::Read, Wait::Yes)?;
    let snap = vol.snapshot(sel)?;
    let t = &snap.tree;
    let wanted: Vec<Vec<u8>> = paths.iter().map(|p| normalize(p)).collect();
    let (marks, missing) = mark_paths(t, &wanted);
    for m in &missing {
        report.warn(m, format!("not in snapshot @{}", snap.id));
    }
    let entries = t
        .dirents
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(i, _)| marks[*i])
        .map(|(_, d)| EntryInfo::of(t, d))
        .collect();
    Ok(VolumeListing {
        command: "volume ls",
        volume_id: snap.id,
        snapshot: snap.snap.clone(),
        entries,
    })
}

/// What `volume extract` was asked to do.
pub struct ExtractOptions {
    /// The volume.
    pub volume: PathBuf,
    /// The snapshot (default the newest).
    pub at: Option<String>,
    /// Directory to extract into (created if missing).
    pub target: PathBuf,
    /// Paths to extract; none = everything.
    pub paths: Vec<String>,
    /// Replace entries in the way.
    pub force: bool,
}

/// `volume extract --json`.
#[derive(Serialize)]
pub struct ExtractSummary {
    /// Always "volume extract".
    pub command: &'static str,
    /// "ok" or "warnings".
    pub status: &'static str,
    /// The snapshot's volume id.
    pub volume_id: u64,
    /// Its identity in the source.
    pub snapshot: SnapshotRef,
    /// Entries created.
    pub entries: u64,
    /// Data bytes written.
    pub data_bytes: u64,
}

/// Extracts a snapshot, or paths of it, with full fidelity.
pub fn extract(opts: &ExtractOptions, report: &Report) -> Result<ExtractSummary> {
    let vol = Volume::open(&opts.volume, Access::Read, Wait::Yes)?;
    let snap = vol.snapshot(opts.at.as_deref())?;
    let paths: Vec<Vec<u8>> = opts.paths.iter().map(|p| normalize(p)).collect();
    let (marks, missing) = mark_paths(&snap.tree, &paths);
    for m in &missing {
        report.warn(m, format!("not in snapshot @{}", snap.id));
    }
    if !missing.is_empty() && missing.len() == paths.len() {
        bail!(
            "none of the given paths is in snapshot @{} of {}; list it with snapdump volume ls",
            snap.id,
            opts.volume.display()
        );
    }
    let sel = cut(&snap.tree, &marks);
    prepare_target(&opts.target, opts.force)?;
    let (_, bytes) = create_selection(&sel, &opts.target, opts.force, report, |apply| {
        let mut bytes = 0u64;
        for (ino, inode) in sel.files(&snap.tree) {
            read_file(&vol, snap, inode, |off, data| {
                bytes += data.len() as u64;
                let seg = Segment {
                    ino,
                    vbn: 0,
                    offset: off,
                    len: data.len() as u32,
                };
                apply.write(&sel.tree, &seg, data)
            })?;
        }
        Ok((0, bytes))
    })?;
    Ok(ExtractSummary {
        command: "volume extract",
        status: report.status_word(),
        volume_id: snap.id,
        snapshot: snap.snap.clone(),
        entries: sel.tree.dirents.len() as u64 - 1,
        data_bytes: bytes,
    })
}
