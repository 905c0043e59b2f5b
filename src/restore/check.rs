//! Reading a stream's sections with every consistency rule enforced, shared
//! by verify, full restore and incremental apply: the metadata and image
//! sections are read and checked before any data is used, and every data
//! segment is matched against the metadata's block pointers and the image,
//! so each carried block arrives exactly once, at the VBN and file offset
//! the metadata gives it.

use crate::runs::{Disjoint, RunSet};
use crate::stream::payload::{decode_data, decode_reloc, End, Image, RelocEntry, Segment};
use crate::stream::reader::{Records, StreamReader};
use crate::stream::record::RecordKind;
use crate::tree::{Kind, Tree, TreeBuilder};
use crate::wire::Dec;
use anyhow::{anyhow, bail, Result};

/// Decodes one metadata record payload into the builder.
pub fn decode_meta(builder: &mut TreeBuilder, raw: &[u8]) -> Result<u64> {
    let mut d = Dec::new(raw, "metadata record");
    let n = d.count(1)?;
    for _ in 0..n {
        builder.decode_item(&mut d, false)?;
    }
    d.finish()?;
    Ok(n as u64)
}

/// Everything before the data: the new snapshot's metadata and its image.
pub struct Front {
    /// Metadata of the snapshot the stream brings a target to.
    pub tree: Tree,
    /// Carried and deallocated VBNs.
    pub image: Image,
    /// The carried VBNs, as runs (a stream's numbers are untrusted: no
    /// dense structure is ever indexed by them).
    pub carried: RunSet,
    /// Metadata items read.
    pub entries: u64,
}

/// The VBNs a tree's extents use.
pub fn tree_vbns(tree: &Tree) -> RunSet {
    RunSet::from_runs(
        tree.inodes
            .iter()
            .flat_map(|i| i.extents.iter().map(|x| (x.vbn, x.count))),
    )
}

/// Reads the metadata and image sections.
pub fn read_front(r: &mut impl Records) -> Result<Front> {
    let mut b = TreeBuilder::new(r.header().block_size as u64);
    let mut entries = 0;
    loop {
        let rec = r
            .next_record()?
            .ok_or_else(|| anyhow!("{}: stream ended before its data", r.name()))?;
        let at = |e: anyhow::Error| {
            anyhow!(
                "{}: record {} at byte {}: {e:#}",
                r.name(),
                rec.seq,
                rec.offset
            )
        };
        match rec.kind {
            RecordKind::Meta => entries += decode_meta(&mut b, &rec.raw).map_err(at)?,
            RecordKind::Image => {
                let tree = b.finish().map_err(at)?;
                if entries != r.header().entries {
                    return Err(at(anyhow!(
                        "metadata holds {entries} entries, the header says {}",
                        r.header().entries
                    )));
                }
                let image = Image::decode(&rec.raw).map_err(at)?;
                let carried = RunSet::from_runs(image.carried.iter().map(|r| (r.vbn, r.count)));
                let used = tree_vbns(&tree);
                if !carried.is_subset_of(&used) {
                    return Err(at(anyhow!("image carries VBNs the metadata does not use")));
                }
                if r.header().full && carried != used {
                    return Err(at(anyhow!("a full image must carry every block")));
                }
                let dealloc = RunSet::from_runs(image.dealloc.iter().map(|r| (r.vbn, r.count)));
                if dealloc
                    .runs()
                    .iter()
                    .any(|&(v, n)| used.split(v, n).iter().any(|p| p.2))
                {
                    return Err(at(anyhow!(
                        "image deallocates VBNs the metadata still uses"
                    )));
                }
                return Ok(Front {
                    tree,
                    image,
                    carried,
                    entries,
                });
            }
            _ => return Err(at(anyhow!("no image record before the data section"))),
        }
    }
}

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
    let mut t = DataTotals::default();
    let mut data_offsets = std::collections::HashSet::new();
    while let Some(rec) = r.next_record()? {
        let at = |e: anyhow::Error| {
            anyhow!(
                "{}: record {} at byte {}: {e:#}",
                r.name(),
                rec.seq,
                rec.offset
            )
        };
        match rec.kind {
            RecordKind::Data => {
                let (segs, data) = decode_data(&rec.raw).map_err(at)?;
                let mut off = 0usize;
                for s in &segs {
                    check_segment(&front.tree, &front.carried, &mut t.seen, s, bs).map_err(at)?;
                    apply(s, &data[off..off + s.len as usize])?;
                    off += s.len as usize;
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
                    t.reloc_blocks += e.count;
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
