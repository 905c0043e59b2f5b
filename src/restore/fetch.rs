//! Finding the blocks of chosen files in a chain of streams and reading only
//! those.
//!
//! The blocks of snapshot N are its metadata's block pointers (file block →
//! VBN). A VBN's contents at N were written by the newest stream of the
//! chain that carries it: an increment carries exactly the VBNs its base
//! does not hold, and a block at a VBN never changes while the VBN stays
//! allocated, so every VBN the chain's top uses is carried by exactly one
//! "latest" stream — latest wins. The plan assigns each piece of each
//! chosen file to that stream; delivery then reads, per stream, the data
//! records holding those VBNs (by offset through the relocation table on a
//! seekable stream; in order, stopping once everything arrived, on a pipe).

use super::chain::{Access, Link};
use crate::names::escape;
use crate::runs::{Disjoint, IntervalIndex};
use crate::stream::check::check_segment;
use crate::stream::payload::decode_data;
use crate::stream::record::RecordKind;
use crate::tree::Inode;
use anyhow::{anyhow, bail, Result};
use std::collections::BTreeSet;

/// A piece of a chosen file: its VBNs (the interval's key) hold file blocks
/// from `block` of output inode `ino`, whose size is `size`.
#[derive(Clone, Copy, Debug)]
pub struct Want {
    /// Inode the bytes go to (the caller's numbering).
    pub ino: u64,
    /// First file block of the piece.
    pub block: u64,
    /// The file's size at the chosen snapshot (bytes past it are dropped).
    pub size: u64,
}

/// For each stream of a chain (in chain order), the pieces it must supply,
/// as `(vbn, count, want)`.
pub struct Plan {
    /// Pieces per chain position.
    pub per_link: Vec<Vec<(u64, u64, Want)>>,
}

impl Plan {
    /// Assigns every block of `files` (output inode, inode at the chain's
    /// top) to the newest stream of `chain` that carries its VBN.
    pub fn new<'a>(
        chain: &[&Link],
        files: impl IntoIterator<Item = (u64, &'a Inode)>,
    ) -> Result<Plan> {
        let mut per_link = vec![Vec::new(); chain.len()];
        let top = chain.last().expect("a chain has a stream");
        for (ino, inode) in files {
            for x in &inode.extents {
                let mut pending = vec![(x.vbn, x.count, x.block)];
                for (k, link) in chain.iter().enumerate().rev() {
                    if pending.is_empty() {
                        break;
                    }
                    let mut rest = Vec::new();
                    for (vbn, count, block) in pending {
                        for (s, c, inside) in link.front.carried.split(vbn, count) {
                            let piece = (s, c, block + (s - vbn));
                            if inside {
                                per_link[k].push((
                                    piece.0,
                                    piece.1,
                                    Want {
                                        ino,
                                        block: piece.2,
                                        size: inode.size,
                                    },
                                ));
                            } else {
                                rest.push(piece);
                            }
                        }
                    }
                    pending = rest;
                }
                if let Some((vbn, _, _)) = pending.first() {
                    bail!(
                        "{}: VBN {vbn} of {} is carried by no stream of the chain; the streams are inconsistent",
                        top.name,
                        escape(&top.front.tree.path(inode.ino))
                    );
                }
            }
        }
        Ok(Plan { per_link })
    }

    /// Blocks to read in all.
    pub fn blocks(&self) -> u64 {
        self.per_link
            .iter()
            .flat_map(|v| v.iter().map(|w| w.1))
            .sum()
    }
}

/// Above this many wanted data records, and a quarter of all, a seekable
/// stream is read in one ordered pass instead of record by record.
const SEQUENTIAL_MIN_RECORDS: usize = 64;

/// Reads the pieces `wants` from `link`, handing each found range to
/// `sink(want, file_offset, bytes)` (bytes already cut at the file's size).
/// Every record read is checked; every wanted block must arrive, else the
/// stream is reported damaged. Returns the blocks delivered.
pub fn deliver(
    link: &mut Link,
    wants: Vec<(u64, u64, Want)>,
    mut sink: impl FnMut(&Want, u64, &[u8]) -> Result<()>,
) -> Result<u64> {
    let needed: u64 = wants.iter().map(|w| w.1).sum();
    if needed == 0 {
        return Ok(0);
    }
    let bs = link.header.block_size as u64;
    let gaps = link.header.gaps();
    let index = IntervalIndex::new(wants);
    let mut seen = Disjoint::default();
    let mut got = 0u64;
    let Link {
        name,
        front,
        access,
        data_start,
        ..
    } = link;
    let mut take = |rec_seq: u64, rec_off: u64, raw: &[u8], seen: &mut Disjoint| -> Result<u64> {
        let at = |e: anyhow::Error| anyhow!("{name}: record {rec_seq} at byte {rec_off}: {e:#}");
        let mut got = 0;
        for (s, bytes) in decode_data(raw, gaps).map_err(at)? {
            check_segment(&front.tree, &front.carried, seen, &s, bs).map_err(at)?;
            let n = (s.len as u64).div_ceil(bs);
            for (wv, wc, w) in index.overlapping(s.vbn, n) {
                let a = (*wv).max(s.vbn);
                let b = (wv + wc).min(s.vbn + n);
                let src = ((a - s.vbn) * bs) as usize;
                let file_off = (w.block + (a - wv)) * bs;
                let avail = bytes.len().saturating_sub(src) as u64;
                let len = ((b - a) * bs)
                    .min(avail)
                    .min(w.size.saturating_sub(file_off));
                if len > 0 {
                    sink(w, file_off, &bytes[src..src + len as usize])?;
                }
                got += b - a;
            }
        }
        Ok(got)
    };
    match access {
        Access::Seek(s) => {
            let reloc = s.index(*data_start)?;
            let mut records = BTreeSet::new();
            for (v, c, _) in index.items() {
                for (_, _, off) in reloc.overlapping(*v, *c) {
                    records.insert(*off);
                }
            }
            let all: BTreeSet<u64> = reloc.items().iter().map(|e| e.2).collect();
            if records.len() > SEQUENTIAL_MIN_RECORDS && records.len() * 4 > all.len() {
                // Most of the data is wanted: one pass in order, with the
                // parallel verifying and decompressing reader, beats a
                // read per record.
                let mut r = s.sequential()?;
                while got < needed {
                    let Some(rec) = r.next_record()? else { break };
                    match rec.kind {
                        RecordKind::Data => got += take(rec.seq, rec.offset, &rec.raw, &mut seen)?,
                        RecordKind::Header | RecordKind::Meta | RecordKind::Image => {}
                        _ => break,
                    }
                }
                s.add_bytes_read(r.offset());
            } else {
                for off in records {
                    let rec = s.record_at(off, RecordKind::Data)?;
                    got += take(rec.seq, off, &rec.raw, &mut seen)?;
                }
            }
        }
        Access::Pipe(r) => {
            while got < needed {
                let Some(rec) = r.next_record()? else { break };
                match rec.kind {
                    RecordKind::Data => got += take(rec.seq, rec.offset, &rec.raw, &mut seen)?,
                    _ => break,
                }
            }
        }
    }
    if got != needed {
        bail!(
            "{name}: {} of the {needed} blocks needed from this stream are missing from its data (damaged or inconsistent stream)",
            needed.saturating_sub(got)
        );
    }
    Ok(got)
}
