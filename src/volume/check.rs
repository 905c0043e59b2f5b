//! `volume check`: every checksum, every pointer in range, the bit planes
//! consistent with the pointers, no block both free and in use.

use super::store::{Access, Volume};
use crate::lock::Wait;
use crate::planes::Plane;
use anyhow::Result;
use serde::Serialize;
use std::path::Path;

/// The result of a check: what was looked at and every problem found.
#[derive(Serialize)]
pub struct CheckReport {
    /// Always "volume check".
    pub command: &'static str,
    /// The volume.
    pub volume: String,
    /// Superblock generation checked.
    pub generation: u64,
    /// Snapshots checked.
    pub snapshots: u64,
    /// Blocks in use (any snapshot or relocation map).
    pub blocks_in_use: u64,
    /// Blocks whose checksum was verified.
    pub blocks_checked: u64,
    /// Blocks of the data region.
    pub data_blocks: u64,
    /// Problems, one line each; empty when the volume is consistent.
    pub problems: Vec<String>,
    /// Shadow-snapshot blocks found reused (expected after a crash in the
    /// middle of a receive; not a problem).
    pub shadow_blocks_reused: u64,
    /// A damaged superblock slot, when the other one was used: the volume
    /// is consistent at the generation checked, but has lost its fallback
    /// (a torn write at a power failure, or damage). The next commit
    /// rewrites that slot.
    pub superblock_damage: Option<String>,
}

/// Checks the volume at `path` (its newest valid superblock).
pub fn check(path: &Path) -> Result<CheckReport> {
    let vol = Volume::open(path, Access::Read, Wait::Yes)?;
    let st = &vol.state;
    let bs = vol.bs();
    let hw = vol.sb.data_blocks;
    let mut problems = Vec::new();
    let mut meta = Plane::new();
    meta.set_run(vol.sb.meta_vbn, vol.sb.meta_blocks);
    let (live, shadow_only) = check_snapshots(&vol, &mut problems);
    let live = live.or(&check_maps(&vol, &mut problems));
    let shadow_only = shadow_only.and_not(&live);
    let used = live.or(&shadow_only);
    let both = used.and(&meta);
    if both.count() > 0 {
        problems.push(format!(
            "{} blocks are both metadata and data (first VBN {})",
            both.count(),
            both.runs()[0].0
        ));
    }
    if used.high_water() > hw + 1 {
        problems.push(format!("blocks in use past the data region (1..{hw})"));
    }
    let len = std::fs::metadata(path)?.len();
    if len < super::format::block_offset(hw + 1, bs) {
        problems.push(format!(
            "the file is {len} bytes, shorter than its data region ({} blocks): truncated",
            hw
        ));
    }
    let sums = check_sums(&vol, &live, &shadow_only)?;
    if sums.bad > 0 {
        problems.push(format!(
            "{} blocks fail their checksums (first VBN {})",
            sums.bad,
            sums.first_bad.unwrap_or_default()
        ));
    }
    Ok(CheckReport {
        command: "volume check",
        volume: path.display().to_string(),
        generation: vol.sb.generation,
        snapshots: st.snapshots.len() as u64,
        blocks_in_use: used.count(),
        blocks_checked: sums.checked,
        data_blocks: hw,
        problems,
        shadow_blocks_reused: sums.reused,
        superblock_damage: vol.superblock_damage.clone(),
    })
}

/// Each snapshot's ids, source and block pointers against its bit plane;
/// returns the blocks of live snapshots and those of shadows.
fn check_snapshots(vol: &Volume, problems: &mut Vec<String>) -> (Plane, Plane) {
    let st = &vol.state;
    let hw = vol.sb.data_blocks;
    let mut live = Plane::new();
    let mut shadow_only = Plane::new();
    let mut ids = std::collections::HashSet::new();
    for s in &st.snapshots {
        if !ids.insert(s.id) || s.id >= st.next_id {
            problems.push(format!("snapshot @{}: duplicate or out-of-range id", s.id));
        }
        if !st.sources.iter().any(|e| e.uuid == s.source) {
            problems.push(format!("snapshot @{}: its source is not recorded", s.id));
        }
        let mut pointed = Plane::new();
        let mut pointers = 0u64;
        let mut range_ok = true;
        for i in &s.tree.inodes {
            for x in &i.extents {
                if x.vbn == 0 || x.vbn.checked_add(x.count).is_none_or(|e| e - 1 > hw) {
                    problems.push(format!(
                        "snapshot @{}: {} points at VBNs {}..{} outside the data region (1..{hw})",
                        s.id,
                        crate::names::escape(&s.tree.path(i.ino)),
                        x.vbn,
                        x.vbn.saturating_add(x.count)
                    ));
                    range_ok = false;
                    continue;
                }
                pointers += x.count;
                pointed.set_run(x.vbn, x.count);
            }
        }
        if !range_ok {
            continue;
        }
        if pointed.count() != pointers {
            problems.push(format!(
                "snapshot @{}: two block pointers share a VBN",
                s.id
            ));
        }
        let (missing, extra) = (pointed.and_not(&s.plane), s.plane.and_not(&pointed));
        if !s.shadow && missing.count() > 0 {
            problems.push(format!(
                "snapshot @{}: {} pointed-to blocks are not in its bit plane (first VBN {})",
                s.id,
                missing.count(),
                missing.runs()[0].0
            ));
        }
        if extra.count() > 0 {
            problems.push(format!(
                "snapshot @{}: {} blocks in its bit plane are not pointed to (first VBN {})",
                s.id,
                extra.count(),
                extra.runs()[0].0
            ));
        }
        if s.shadow {
            shadow_only = shadow_only.or(&s.plane);
        } else {
            live = live.or(&s.plane);
        }
    }
    (live, shadow_only)
}

/// Each source's relocation map: targets in range, and matching the blocks
/// of the source's newest snapshot; returns the blocks the maps hold.
fn check_maps(vol: &Volume, problems: &mut Vec<String>) -> Plane {
    let st = &vol.state;
    let hw = vol.sb.data_blocks;
    let mut live = Plane::new();
    for e in &st.sources {
        let mut targets = Plane::new();
        for m in &e.map {
            if m.tgt.checked_add(m.count).is_none_or(|x| x - 1 > hw) {
                problems.push(format!(
                    "relocation map of {}: target VBNs {}.. outside the data region",
                    crate::names::escape(&e.path),
                    m.tgt
                ));
                continue;
            }
            targets.set_run(m.tgt, m.count);
            // A recorded origin must be the map's source VBN (0, not
            // recorded, is allowed: format 1, or smaller volume blocks).
            if let Some(i) =
                (0..m.count).find(|&i| st.origin(m.tgt + i).is_some_and(|a| a != m.src + i))
            {
                problems.push(format!(
                    "origin table: VBN {} records source VBN {}, the relocation map of {} says {}",
                    m.tgt + i,
                    st.origin(m.tgt + i).unwrap_or(0),
                    crate::names::escape(&e.path),
                    m.src + i
                ));
            }
        }
        if let Some(s) = st
            .snapshots
            .iter()
            .find(|s| s.snap.uuid == e.latest.uuid && !s.shadow)
        {
            if targets != s.plane {
                problems.push(format!(
                    "relocation map of {} does not match the blocks of snapshot @{}",
                    crate::names::escape(&e.path),
                    s.id
                ));
            }
        }
        live = live.or(&targets);
    }
    live
}

/// What the checksum pass found.
struct SumCheck {
    checked: u64,
    reused: u64,
    bad: u64,
    first_bad: Option<u64>,
}

/// Reads every block in use and checks it against its checksum; a shadow's
/// block that fails was reused (not a problem).
fn check_sums(vol: &Volume, live: &Plane, shadow_only: &Plane) -> Result<SumCheck> {
    let bs = vol.bs();
    let mut checked = 0u64;
    let mut reused = 0u64;
    let mut bad = 0u64;
    let mut first_bad = None;
    let mut buf = Vec::new();
    for (plane, shadow) in [(live, false), (shadow_only, true)] {
        for (v, n) in plane.runs() {
            let mut k = 0;
            while k < n {
                let c = (n - k).min(256);
                buf.resize((c * bs) as usize, 0);
                vol.read_blocks(v + k, &mut buf)?;
                for i in 0..c {
                    let b = &buf[(i * bs) as usize..((i + 1) * bs) as usize];
                    let vbn = v + k + i;
                    let ok = vol.block_intact(vbn, b);
                    checked += 1;
                    if ok {
                        continue;
                    }
                    if shadow {
                        reused += 1;
                    } else {
                        bad += 1;
                        first_bad.get_or_insert(vbn);
                    }
                }
                k += c;
            }
        }
    }
    Ok(SumCheck {
        checked,
        reused,
        bad,
        first_bad,
    })
}
