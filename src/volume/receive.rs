//! `restore -r --volume`: applying streams to a volume.
//!
//! Each carried block goes to a target VBN the committed state does not
//! use: its own VBN when that is free (and the volume is not compact),
//! else the lowest free one. Where each source block landed is the
//! source's relocation map; the snapshot's block pointers are rewritten
//! through it (pointer fixups), and so are those of every later increment,
//! whose unchanged blocks are found through the map it left. One commit
//! per stream: a crash leaves the volume at the snapshot before it.

use super::format::{MapRun, SourceEntry, VolSnapshot};
use super::store::{Access, Volume};
use crate::lock::Wait;
use crate::media::Input;
use crate::planes::Plane;
use crate::report::Report;
use crate::stream::check::read_data;
use crate::stream::front::read_front;
use crate::stream::header::SnapshotRef;
use crate::stream::reader::{Digest, StreamReader};
use crate::stream::set::ImageSetReader;
use crate::tree::{Extent, Time, Tree};
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::path::PathBuf;

/// What `restore -r --volume` was asked to do.
pub struct ReceiveOptions {
    /// The streams, applied in the order given (an input may hold several
    /// streams back to back: an image set).
    pub inputs: Vec<Input>,
    /// The volume.
    pub volume: PathBuf,
    /// Lock policy.
    pub wait: Wait,
    /// `Check` also recomputes each stream's digest list (every
    /// record's XXH3 checksums are checked in any case).
    pub digest: Digest,
}

/// One snapshot received.
#[derive(Serialize)]
pub struct Received {
    /// The stream it came from.
    pub stream: String,
    /// Its id in the volume.
    pub volume_id: u64,
    /// Its identity in the source.
    pub snapshot: SnapshotRef,
    /// True for a full image.
    pub full: bool,
    /// The snapshot the stream was based on.
    pub base: Option<SnapshotRef>,
    /// Blocks the stream carried.
    pub data_blocks: u64,
    /// Carried blocks placed at a VBN other than their source VBN.
    pub relocated_blocks: u64,
    /// Blocks the snapshot uses in the volume.
    pub snapshot_blocks: u64,
}

/// The `--json` summary.
#[derive(Serialize)]
pub struct ReceiveSummary {
    /// Always "restore".
    pub command: &'static str,
    /// "ok" or "warnings".
    pub status: &'static str,
    /// The volume.
    pub volume: String,
    /// Snapshots received, in order.
    pub received: Vec<Received>,
    /// Size of the volume file afterwards.
    pub volume_bytes: u64,
    /// Wall-clock seconds.
    pub elapsed_seconds: f64,
}

/// Applies the inputs to the volume, one commit per stream.
pub fn receive(opts: &ReceiveOptions, report: &Report) -> Result<ReceiveSummary> {
    let vol = Volume::open(&opts.volume, Access::Write, opts.wait)?;
    receive_into(vol, opts, report)
}

/// `receive` into a volume already open for writing (`opts.volume` names
/// it, for messages).
pub fn receive_into(
    mut vol: Volume,
    opts: &ReceiveOptions,
    report: &Report,
) -> Result<ReceiveSummary> {
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    for input in &opts.inputs {
        let mut set = ImageSetReader::open(input)?;
        while let Some(r) = set.next_stream(opts.digest)? {
            match receive_stream(&mut vol, r) {
                Ok(x) => received.push(x),
                Err(e) => {
                    // Give back what the failed transaction wrote past the
                    // committed data region (say, on a full file system).
                    vol.trim_to_committed();
                    return Err(e);
                }
            }
        }
        if let Some(t) = set.trailing() {
            report.warn(input.name().as_bytes(), t);
        }
    }
    let volume_bytes = std::fs::metadata(&opts.volume)
        .map(|m| m.len())
        .unwrap_or(0);
    Ok(ReceiveSummary {
        command: "restore",
        status: report.status_word(),
        volume: opts.volume.display().to_string(),
        received,
        volume_bytes,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Finds target blocks for carried source blocks, never one the committed
/// state protects or this transaction already took.
struct Allocator {
    avoid: Plane,
    written: Plane,
    cursor: u64,
    compact: bool,
    max_blocks: u64,
    /// Blocks taken so far.
    taken: u64,
    /// One past the highest VBN protected when the transaction began.
    base_hw: u64,
}

impl Allocator {
    /// Target runs for `n` source blocks from `src`: each block keeps its
    /// own VBN when that is free (and the volume is not compact), else it
    /// gets the next free one from the cursor.
    fn place(&mut self, src: u64, n: u64) -> Result<Vec<(u64, u64)>> {
        // A stream's VBNs are untrusted: a block keeps its own VBN only
        // within a bound proportional to what the volume really holds, so
        // a hostile VBN cannot make the planes huge.
        let bound = 8 * (self.taken + self.base_hw) + (1 << 20);
        let mut out: Vec<(u64, u64)> = Vec::new();
        for i in 0..n {
            let own = src.saturating_add(i);
            let keep = !self.compact
                && own <= bound
                && (self.max_blocks == 0 || own <= self.max_blocks)
                && !self.avoid.get(own);
            let v = if keep {
                own
            } else {
                let mut v = self.avoid.next_clear(self.cursor.max(1));
                if self.max_blocks != 0 && v > self.max_blocks && self.cursor > 1 {
                    // No room above the stream's VBNs: fill the gaps below.
                    v = self.avoid.next_clear(1);
                }
                if self.max_blocks != 0 && v > self.max_blocks {
                    bail!(
                        "the volume is full ({} blocks); create a larger volume (volume create --size)",
                        self.max_blocks
                    );
                }
                self.cursor = v + 1;
                v
            };
            self.take(v, 1);
            match out.last_mut() {
                Some((s, c)) if *s + *c == v => *c += 1,
                _ => out.push((v, 1)),
            }
        }
        Ok(out)
    }

    fn take(&mut self, v: u64, n: u64) {
        self.taken += n;
        self.avoid.set_run(v, n);
        self.written.set_run(v, n);
    }
}

fn find(map: &[MapRun], src: u64) -> Option<&MapRun> {
    let i = map.partition_point(|m| m.src + m.count <= src);
    map.get(i).filter(|m| m.src <= src)
}

/// Receives one stream into the volume as one atomic commit: the stream
/// must continue what the volume holds of its source; its blocks are
/// placed (at their source VBN where free, else relocated), its pointers
/// fixed up, and only a whole, undamaged stream is committed.
fn receive_stream(vol: &mut Volume, r: StreamReader) -> Result<Received> {
    let prepared = prepare_stream(vol, r)?;
    commit_prepared(vol, prepared)
}

/// A stream whose blocks are placed in free VBNs and whose commit is
/// computed, not yet committed.
pub struct Prepared {
    h: crate::stream::header::StreamHeader,
    name: String,
    entry: Option<usize>,
    tree: Tree,
    map: Vec<MapRun>,
    plane: Plane,
    sums: Vec<(u64, [u8; 16])>,
    alloc: Allocator,
    k: u64,
    data_blocks: u64,
    relocated: u64,
}

/// Reads one stream and writes its blocks to VBNs the volume's committed
/// state does not use (the volume may be open with `Access::Place`: readers
/// are not disturbed); nothing is committed.
pub fn prepare_stream(vol: &Volume, mut r: StreamReader) -> Result<Prepared> {
    let h = r.header.clone();
    let name = r.name().to_string();
    let vname = vol.path.display().to_string();
    let bs = vol.bs();
    // A volume with smaller blocks takes k of its blocks per stream block:
    // the stream's VBN space is read at the volume's granularity (source
    // VBN v is sub-blocks (v-1)k+1 .. vk), and a file's last block takes
    // only the sub-blocks its bytes need.
    let sbs = h.block_size as u64;
    if sbs < bs || sbs % bs != 0 {
        bail!(
            "{name} has {sbs}-byte blocks, which volume {vname} cannot hold in its {bs}-byte blocks; receive it into a volume created with --block-size {sbs} (or a divisor of it)"
        );
    }
    let k = sbs / bs;
    let (entry, old_map) = admit(vol, &h, &name)?;
    let front = read_front(&mut r)?;
    let mut placer = Placer {
        alloc: allocator(vol, &front, k),
        carried: Vec::new(),
        sums: Vec::new(),
        block: vec![0u8; bs as usize],
        relocated: 0,
        blocks_since: 0,
        k,
        bs,
    };
    let totals = read_data(&mut r, &front, |s, data| placer.place(vol, s, data))?;
    if !r.damage().is_empty() {
        bail!("{name}: damaged stream; nothing was received");
    }
    let Placer {
        alloc,
        mut carried,
        sums,
        relocated,
        ..
    } = placer;
    carried.sort_by_key(|m| m.src);
    let (tree, map, plane) = fix_pointers(&at_granularity(&front.tree, k, bs), &carried, &old_map)
        .map_err(|e| anyhow!("{name}: {e:#}; nothing was received into volume {vname}"))?;
    Ok(Prepared {
        h,
        name,
        entry,
        tree,
        map,
        plane,
        sums,
        alloc,
        k,
        data_blocks: totals.blocks,
        relocated,
    })
}

/// Commits a prepared stream (one atomic volume commit). `vol` must be open for writing with the
/// state the stream was prepared against (same generation).
pub fn commit_prepared(vol: &mut Volume, p: Prepared) -> Result<Received> {
    let snapshot_blocks = p.plane.count();
    let Prepared {
        h,
        name,
        entry,
        tree,
        map,
        plane,
        sums,
        alloc,
        k,
        data_blocks,
        relocated,
    } = p;
    // Checksums, shadows that lost reused blocks, the snapshot and its
    // source's entry, in one atomic commit.
    let mut state = vol.state.clone();
    let hw = plane.high_water().max(alloc.written.high_water()) as usize;
    if state.sums.len() < hw {
        state.sums.resize(hw, [0; 16]);
    }
    for (v, s) in sums {
        state.sums[(v - 1) as usize] = s;
    }
    // Every block of the snapshot records the source VBN it holds (a
    // block already there keeps the same one: its mapping never changes
    // while it is in use). With smaller volume blocks than the stream's
    // the map speaks sub-blocks, not source VBNs: nothing is recorded.
    if state.origins.len() < hw {
        state.origins.resize(hw, 0);
    }
    for m in &map {
        for i in 0..m.count {
            state.origins[(m.tgt + i - 1) as usize] = if k == 1 { m.src + i } else { 0 };
        }
    }
    // Shadow snapshots lose the blocks this transaction reused.
    for s in state.snapshots.iter_mut().filter(|s| s.shadow) {
        s.plane = s.plane.and_not(&alloc.written);
    }
    let id = state.next_id;
    state.next_id += 1;
    state.snapshots.push(VolSnapshot {
        id,
        source: h.source_uuid,
        snap: h.snapshot.clone(),
        base: h.base.clone(),
        received: Time::now(),
        shadow: false,
        plane,
        tree: std::sync::Arc::new(tree),
    });
    let new_entry = SourceEntry {
        uuid: h.source_uuid,
        path: h.source_path.clone(),
        latest: h.snapshot.clone(),
        map,
    };
    match entry {
        Some(i) => state.sources[i] = new_entry,
        None => state.sources.push(new_entry),
    }
    crate::failpoint::hit("volume-before-commit");
    vol.commit(state, &alloc.written)?;
    Ok(Received {
        stream: name,
        volume_id: id,
        snapshot: h.snapshot,
        full: h.full,
        base: h.base,
        data_blocks,
        relocated_blocks: relocated,
        snapshot_blocks,
    })
}

/// Whether the stream continues what the volume holds of its source: not
/// a snapshot it holds already, an increment only on the source's newest
/// snapshot. Returns the source's entry (if any) and the relocation map
/// the increment's kept blocks go through.
fn admit(
    vol: &Volume,
    h: &crate::stream::header::StreamHeader,
    name: &str,
) -> Result<(Option<usize>, Vec<MapRun>)> {
    let vname = vol.path.display().to_string();
    if let Some(s) = vol
        .state
        .snapshots
        .iter()
        .find(|s| s.snap.uuid == h.snapshot.uuid)
    {
        bail!(
            "volume {vname} already holds snapshot {} of {} from {name} (as @{}); nothing to do",
            h.snapshot.id,
            crate::names::escape(&h.source_path),
            s.id
        );
    }
    let entry = vol
        .state
        .sources
        .iter()
        .position(|s| s.uuid == h.source_uuid);
    let old_map: Vec<MapRun> = match (&h.base, entry) {
        (None, _) => Vec::new(),
        (Some(base), None) => bail!(
            "{name} is an increment based on snapshot {} of {}, but volume {vname} holds nothing of that source; receive its full image first",
            base.id,
            crate::names::escape(&h.source_path)
        ),
        (Some(base), Some(i)) => {
            let e = &vol.state.sources[i];
            if e.latest.uuid != base.uuid {
                bail!(
                    "{name} is based on snapshot {} of {}, but volume {vname} holds snapshot {} of it as the newest; apply the streams in order",
                    base.id,
                    crate::names::escape(&h.source_path),
                    e.latest.id
                );
            }
            if h.full {
                Vec::new()
            } else {
                e.map.clone()
            }
        }
    };
    Ok((entry, old_map))
}

/// The allocator of a receive: VBNs of every kept snapshot and the
/// metadata are avoided.
fn allocator(vol: &Volume, front: &crate::stream::front::Front, k: u64) -> Allocator {
    let mut avoid = Volume::protected(&vol.state);
    avoid.set_run(vol.sb.meta_vbn, vol.sb.meta_blocks);
    // A compact volume fills from VBN 1; otherwise a block that cannot
    // keep its VBN goes above every VBN the stream carries, so it never
    // takes the place of a later block that could keep its own.
    let carried_hw = front
        .carried
        .runs()
        .last()
        .map_or(0, |&(v, n)| v.saturating_add(n).saturating_mul(k));
    let cursor = if vol.compact() {
        1
    } else {
        carried_hw
            .min(8 * avoid.high_water() + (1 << 20))
            .max(avoid.high_water())
    };
    Allocator {
        base_hw: avoid.high_water(),
        avoid,
        written: Plane::new(),
        cursor,
        compact: vol.compact(),
        max_blocks: vol.sb.max_blocks,
        taken: 0,
    }
}

/// Places a stream's data segments in the volume, block by block, and
/// keeps what the commit needs: the source-to-target runs and the new
/// blocks' checksums.
struct Placer {
    alloc: Allocator,
    carried: Vec<MapRun>,
    sums: Vec<(u64, [u8; 16])>,
    /// One block of scratch, for a file's zero-padded last block.
    block: Vec<u8>,
    relocated: u64,
    blocks_since: u64,
    /// Volume blocks per stream block.
    k: u64,
    bs: u64,
}

impl Placer {
    /// The volume block a source VBN's first sub-block is.
    fn sub(&self, v: u64) -> u64 {
        v.saturating_sub(1).saturating_mul(self.k).saturating_add(1)
    }

    /// Writes one checked data segment where the allocator puts it.
    fn place(
        &mut self,
        vol: &Volume,
        s: &crate::stream::payload::Segment,
        data: &[u8],
    ) -> Result<()> {
        let bs = self.bs;
        let first = self.sub(s.vbn);
        let block = &mut self.block;
        let n = (s.len as u64).div_ceil(bs);
        let mut off = 0usize;
        for (tgt, count) in self.alloc.place(first, n)? {
            let src = first + (off as u64 / bs);
            if tgt != src {
                self.relocated += count;
            }
            self.carried.push(MapRun { src, tgt, count });
            let bytes = (count * bs) as usize;
            let piece = &data[off..(off + bytes).min(data.len())];
            if piece.len() == bytes {
                vol.write_blocks(tgt, piece)
            } else {
                // The file's last block: stored zero padded.
                let whole = piece.len() / bs as usize * bs as usize;
                block.fill(0);
                block[..piece.len() - whole].copy_from_slice(&piece[whole..]);
                vol.write_blocks(tgt, &piece[..whole])
                    .and_then(|_| vol.write_blocks(tgt + (whole as u64 / bs), block))
            }
            .map_err(|e| {
                anyhow!(
                    "cannot write volume {}: {e} (is the file system full?); the volume keeps its previous state",
                    vol.path.display()
                )
            })?;
            for k in 0..count {
                let at = (k * bs) as usize;
                let b = &piece[at.min(piece.len())..(at + bs as usize).min(piece.len())];
                let sum = if b.len() == bs as usize {
                    xxhash_rust::xxh3::xxh3_128(b)
                } else {
                    block.fill(0);
                    block[..b.len()].copy_from_slice(b);
                    xxhash_rust::xxh3::xxh3_128(block)
                };
                self.sums.push((tgt + k, sum.to_le_bytes()));
            }
            off += bytes;
        }
        self.blocks_since += n;
        if self.blocks_since >= 256 {
            self.blocks_since = 0;
            crate::failpoint::hit("volume-data");
        }
        Ok(())
    }
}

/// The tree with its block pointers in units of the volume's blocks, `k`
/// of which make one stream block: extents scaled, a file's last extent
/// cut at the sub-block holding its last byte.
fn at_granularity(tree: &Tree, k: u64, bs: u64) -> Tree {
    if k == 1 {
        return tree.clone();
    }
    let mut t = tree.clone();
    for inode in t.inodes.iter_mut() {
        let blocks = inode.size.div_ceil(bs);
        for x in inode.extents.iter_mut() {
            x.block = x.block.saturating_mul(k);
            x.vbn = x.vbn.saturating_sub(1).saturating_mul(k).saturating_add(1);
            x.count = x
                .count
                .saturating_mul(k)
                .min(blocks.saturating_sub(x.block));
        }
        inode.extents.retain(|x| x.count > 0);
    }
    t
}

/// Rewrites the tree's block pointers from source to target VBNs, through
/// the blocks this stream carried and, for the others, the map the base
/// left; returns the new tree, the new relocation map and the plane.
fn fix_pointers(
    src_tree: &Tree,
    carried: &[MapRun],
    old_map: &[MapRun],
) -> Result<(Tree, Vec<MapRun>, Plane)> {
    let mut tree = src_tree.clone();
    let mut map: Vec<MapRun> = Vec::new();
    let mut plane = Plane::new();
    for inode in tree.inodes.iter_mut() {
        let mut out: Vec<Extent> = Vec::new();
        for x in &inode.extents {
            let mut k = 0;
            while k < x.count {
                let v = x.vbn + k;
                // A block the stream carries wins over the base's block of
                // the same VBN (the source may have reused the number), so
                // a run taken from the base map stops at the next carried one.
                let (m, limit) = match find(carried, v) {
                    Some(m) => (m, u64::MAX),
                    None => {
                        let next = carried.partition_point(|m| m.src < v);
                        let limit = carried.get(next).map_or(u64::MAX, |m| m.src - v);
                        let m = find(old_map, v).ok_or_else(|| {
                            anyhow!(
                                "block {} of inode {} (VBN {v}) is neither in the stream nor in the volume's copy of its base (damaged stream or volume)",
                                x.block + k,
                                inode.ino
                            )
                        })?;
                        (m, limit)
                    }
                };
                let n = (m.src + m.count - v).min(x.count - k).min(limit);
                let tgt = m.tgt + (v - m.src);
                match out.last_mut() {
                    Some(p) if p.block + p.count == x.block + k && p.vbn + p.count == tgt => {
                        p.count += n
                    }
                    _ => out.push(Extent {
                        block: x.block + k,
                        vbn: tgt,
                        count: n,
                    }),
                }
                map.push(MapRun {
                    src: v,
                    tgt,
                    count: n,
                });
                plane.set_run(tgt, n);
                k += n;
            }
        }
        inode.extents = out;
    }
    map.sort_by_key(|m| m.src);
    let mut merged: Vec<MapRun> = Vec::with_capacity(map.len());
    for m in map {
        match merged.last_mut() {
            Some(p) if p.src + p.count > m.src => {
                bail!("two files use source VBN {} (damaged stream)", m.src)
            }
            Some(p) if p.src + p.count == m.src && p.tgt + p.count == m.tgt => p.count += m.count,
            _ => merged.push(m),
        }
    }
    Ok((tree, merged, plane))
}
