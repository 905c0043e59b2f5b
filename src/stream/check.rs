//! Checks of the data section, shared by verify, full restore, incremental
//! apply and volume receive: every data segment is matched against the
//! metadata's block pointers and the image, so each carried block arrives
//! exactly once, at the VBN and file offset the metadata gives it; the
//! relocation table and the end record are checked against what arrived.

use super::front::Front;
use super::payload::{decode_data, decode_reloc, End, RelocEntry, Segment};
use super::reader::StreamReader;
use super::record::RecordKind;
use crate::runs::{Disjoint, RunSet};
use crate::tree::{Kind, Tree};
use anyhow::{anyhow, bail, Result};

/// What the data section held.
#[derive(Default)]
pub struct DataTotals {
    /// The VBNs received.
    pub seen: Disjoint,
    /// Blocks received.
    pub blocks: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Relocation entries read.
    pub reloc_blocks: u64,
}

/// Reads the data, relocation and end records, checking each segment and
/// handing it to `apply` with its bytes; ends after the end record.
pub fn read_data(
    r: &mut StreamReader,
    front: &Front,
    mut apply: impl FnMut(&Segment, &[u8]) -> Result<()>,
) -> Result<DataTotals> {
    let bs = r.header.block_size as u64;
    let gaps = r.header.gaps();
    let mut t = DataTotals::default();
    let mut data_offsets = std::collections::HashSet::new();
    while let Some(rec) = r.next_record()? {
        let at = |e: anyhow::Error| rec.error_in(r.name(), e);
        match rec.kind {
            RecordKind::Data => {
                for (s, bytes) in decode_data(&rec.raw, gaps).map_err(at)? {
                    check_segment(&front.tree, &front.carried, &mut t.seen, &s, bs).map_err(at)?;
                    apply(&s, bytes)?;
                    t.blocks += (s.len as u64).div_ceil(bs);
                    t.bytes += s.len as u64;
                }
                data_offsets.insert(rec.offset);
            }
            RecordKind::Reloc => {
                for e in decode_reloc(&rec.raw).map_err(at)? {
                    if r.damage().is_empty() {
                        check_reloc(&e, &data_offsets).map_err(at)?;
                    }
                    // Hostile counts must not wrap round to the real total.
                    t.reloc_blocks = t.reloc_blocks.checked_add(e.count).ok_or_else(|| {
                        at(anyhow!("relocation counts overflow (damaged stream)"))
                    })?;
                }
            }
            RecordKind::End => {}
            _ => return Err(at(anyhow!("record out of place in the data section"))),
        }
    }
    if !r.damage().is_empty() {
        // A salvaging reader lost records: the counts cannot agree; what
        // is missing is `carried` minus `seen`, for the caller to name.
        return Ok(t);
    }
    let end = r
        .end
        .clone()
        .expect("reader returns None only after the end record");
    finish(front, &t, &end).map_err(|e| anyhow!("{}: {e:#}", r.name()))?;
    Ok(t)
}

/// The byte ranges of files whose blocks were carried but not received:
/// `(inode, first byte, end byte)`, in tree order.
pub fn lost_ranges(front: &Front, seen: &Disjoint, bs: u64) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    for inode in &front.tree.inodes {
        for x in &inode.extents {
            for (v, c, carried) in front.carried.split(x.vbn, x.count) {
                if !carried {
                    continue;
                }
                for (v2, c2, got) in seen.split(v, c) {
                    if got {
                        continue;
                    }
                    let from = (x.block + (v2 - x.vbn)) * bs;
                    let to = ((x.block + (v2 - x.vbn) + c2) * bs).min(inode.size);
                    match out.last_mut() {
                        Some((i, _, e)) if *i == inode.ino && *e == from => *e = to,
                        _ => out.push((inode.ino, from, to)),
                    }
                }
            }
        }
    }
    out
}

fn check_reloc(e: &RelocEntry, data_offsets: &std::collections::HashSet<u64>) -> Result<()> {
    if !data_offsets.contains(&e.offset) {
        bail!(
            "relocation entry for VBN {} points at no data record",
            e.vbn
        );
    }
    Ok(())
}

/// Checks one segment against the tree and the image.
pub(crate) fn check_segment(
    tree: &Tree,
    carried: &RunSet,
    seen: &mut Disjoint,
    s: &Segment,
    bs: u64,
) -> Result<()> {
    if s.ino == 0 || s.ino > tree.inodes.len() as u64 {
        bail!("data segment for unknown inode {}", s.ino);
    }
    let inode = tree.inode(s.ino);
    if inode.kind != Kind::File || s.offset % bs != 0 {
        bail!(
            "data segment for inode {} is not block-aligned file data",
            s.ino
        );
    }
    let blk = s.offset / bs;
    let n = (s.len as u64).div_ceil(bs);
    let i = inode.extents.partition_point(|x| x.block + x.count <= blk);
    let Some(x) = inode
        .extents
        .get(i)
        .filter(|x| x.block <= blk && blk + n <= x.block + x.count)
    else {
        bail!(
            "data segment at byte {} of inode {} is outside its data regions",
            s.offset,
            s.ino
        );
    };
    let want_len = ((blk + n) * bs).min(inode.size) - s.offset;
    if s.vbn != x.vbn + (blk - x.block) || s.len as u64 != want_len {
        bail!(
            "data segment at byte {} of inode {} does not match its block pointers",
            s.offset,
            s.ino
        );
    }
    if !carried.contains_run(s.vbn, n) {
        bail!(
            "VBNs {}..{} are in the data but not in the image",
            s.vbn,
            s.vbn + n
        );
    }
    if !seen.insert(s.vbn, n) {
        bail!("VBNs {}..{} appear twice in the stream", s.vbn, s.vbn + n);
    }
    Ok(())
}

/// Checks that every carried block arrived and the end counts agree.
fn finish(front: &Front, t: &DataTotals, end: &End) -> Result<()> {
    if end.entries != front.entries || end.inodes != front.tree.inodes.len() as u64 {
        bail!(
            "end record counts {} entries and {} inodes, the stream held {} and {}",
            end.entries,
            end.inodes,
            front.entries,
            front.tree.inodes.len()
        );
    }
    let promised = front.carried.total();
    if t.blocks as u128 != promised || end.data_blocks != t.blocks || end.data_bytes != t.bytes {
        bail!(
            "the image promises {promised} data blocks, the stream held {} ({} bytes), the end record counts {}",
            t.blocks,
            t.bytes,
            end.data_blocks
        );
    }
    if t.reloc_blocks != t.blocks {
        bail!(
            "relocation table covers {} blocks, the stream holds {}",
            t.reloc_blocks,
            t.blocks
        );
    }
    Ok(())
}
