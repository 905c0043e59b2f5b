//! `coalesce`: consecutive streams of one source become one, without the
//! source (seed 002's coalescing, latest wins).
//!
//! The output brings a target from the oldest input's base (or from
//! nothing: a synthetic full, when the oldest input is a full image) to the
//! newest input's snapshot. Its metadata is the newest input's; its image
//! carries the VBNs the newest snapshot uses that some input carries (a
//! VBN no input carries is held by the base, unchanged), and deallocates
//! the base's VBNs the newest snapshot no longer uses. A block at a VBN
//! never changes while the VBN stays allocated, so each carried VBN's data
//! is taken from the newest input that carries it; every other carried
//! block (superseded by a later stream, or freed by a later deallocation)
//! is dropped. Each input is read once, in order, in one pass (oldest
//! first), so tapes and pipes work; memory holds the inputs' metadata and
//! VBN runs, never data. The output is written through the record stage
//! every producer uses, with its own relocation table, to any medium,
//! committed only when whole.

use super::chain::{Access, Link, StreamSet};
use crate::media::output::Output;
use crate::media::Input;
use crate::runs::{Disjoint, RunSet};
use crate::stream::check::check_segment;
use crate::stream::front::{tree_vbns, write_front, Front};
use crate::stream::header::{ImageHeader, SnapshotRef, StreamHeader};
use crate::stream::payload::{decode_table, Image, Segment};
use crate::stream::place::Placer;
use crate::stream::reader::{Digest, StreamReader};
use crate::stream::record::data_frame;
use crate::stream::record::RecordKind;
use crate::stream::records::{write_records, Copied, Outgoing, RecordBatch, MAX_SEGMENTS};
use crate::stream::writer::StreamWriter;
use crate::tree::Tree;
use anyhow::{anyhow, bail, Result};
use serde::Serialize;

/// What the user asked for.
pub struct CoalesceOptions {
    /// The streams (any order; they must form one chain).
    pub inputs: Vec<Input>,
    /// The output and its further volumes.
    pub specs: Vec<String>,
    /// Tape options of the output.
    pub tape: crate::media::tape::writer::TapeOptions,
    /// zstd level of the output's records.
    pub compression: i32,
    /// Check each input's digest list too.
    pub digest: Digest,
    /// How much of a record copied whole may be dropped blocks; `None`
    /// compresses every record again.
    pub waste: Option<Waste>,
}

/// One input, as the summary names it.
#[derive(Serialize)]
pub struct CoalescedInput {
    /// The input's name.
    pub stream: String,
    /// Its snapshot.
    pub snapshot: SnapshotRef,
    /// Blocks it carried.
    pub blocks_carried: u64,
    /// Of those, blocks that went into the output.
    pub blocks_kept: u64,
    /// Of its data records, those copied whole (not compressed again).
    pub records_copied: u64,
    /// Of its kept blocks, those in records copied whole.
    pub blocks_copied: u64,
    /// Bytes of dropped blocks the copies carry as gaps.
    pub gap_bytes: u64,
}

/// What one input's pass gave the output.
#[derive(Clone, Copy, Default)]
pub(super) struct Passed {
    /// Blocks kept.
    pub kept: u64,
    /// Records copied whole.
    pub records_copied: u64,
    /// Kept blocks in those.
    pub blocks_copied: u64,
    /// Gap bytes in those.
    pub gap_bytes: u64,
}

/// The `--json` summary.
#[derive(Serialize)]
pub struct CoalesceSummary {
    /// Always "coalesce".
    pub command: &'static str,
    /// "ok" or "warnings".
    pub status: &'static str,
    /// The output.
    pub output: String,
    /// The snapshot the output brings a target to.
    pub snapshot: SnapshotRef,
    /// Its base (none: a synthetic full).
    pub base: Option<SnapshotRef>,
    /// Whether the output is a full image.
    pub full: bool,
    /// The inputs, oldest first.
    pub inputs: Vec<CoalescedInput>,
    /// Blocks the output carries.
    pub blocks_carried: u64,
    /// Blocks of the inputs left out (superseded or freed later).
    pub blocks_dropped: u64,
    /// Of the blocks carried, those in data records copied whole from an
    /// input (stored as they came, not compressed again).
    pub blocks_copied: u64,
    /// Bytes of dropped blocks those copies carry as gaps.
    pub gap_bytes: u64,
    /// VBNs the output deallocates.
    pub blocks_deallocated: u64,
    /// File data bytes the output carries.
    pub data_bytes: u64,
    /// Bytes of the output stream.
    pub stream_bytes: u64,
    /// Stream bytes read, all inputs together.
    pub stream_bytes_read: u64,
    /// Wall-clock seconds.
    pub elapsed_seconds: f64,
}

/// Runs `coalesce`.
pub fn coalesce(opts: &CoalesceOptions) -> Result<CoalesceSummary> {
    let started = std::time::Instant::now();
    if opts.inputs.len() < 2 {
        bail!(
            "coalesce needs at least two streams of one chain (-f each); one stream is already one"
        );
    }
    let mut set = StreamSet::open(&opts.inputs, opts.digest)?;
    let top = set.select(None)?;
    let chain = set.chain(top, false)?;
    if let Some(off) = (0..set.links.len()).find(|i| !chain.contains(i)) {
        let oldest = &set.links[chain[0]].header;
        let gap = match (&oldest.base, oldest.full) {
            (Some(b), false) => format!(
                ": the chain from it to {} needs snapshot {} (level {}, {}), which no input holds; add its stream",
                set.links[top].header.snapshot.id,
                b.id,
                b.level,
                b.time.rfc3339()
            ),
            _ => String::new(),
        };
        bail!(
            "{} is not on the chain leading to {}{gap} (coalesce takes consecutive streams of one chain, each the base of the next)",
            set.links[off].describe(),
            set.links[top].describe()
        );
    }
    let links: Vec<&Link> = chain.iter().map(|&i| &set.links[i]).collect();
    let first = links[0];
    let last = links[links.len() - 1];
    let bs = last.header.block_size as u64;
    // (A copy: the inputs are read, mutably, while it is written out.)
    let top_tree = &last.front.tree.clone();
    let top_vbns = tree_vbns(top_tree);
    // Each input keeps the VBNs of the newest snapshot that no later input
    // carries (latest wins).
    let mut later = RunSet::default();
    let mut keep: Vec<RunSet> = vec![RunSet::default(); links.len()];
    for (k, l) in links.iter().enumerate().rev() {
        keep[k] = l.front.carried.intersect(&top_vbns).minus(&later);
        later = later.union(&l.front.carried);
    }
    let carried = later.intersect(&top_vbns);
    let full = first.header.full;
    if full && carried != top_vbns {
        // A full image carries every VBN of its snapshot, and every later
        // one its new ones: only damage leaves one out.
        bail!(
            "{}: the chain does not carry every block of snapshot {}; the streams are inconsistent",
            last.name,
            last.header.snapshot.id
        );
    }
    // The base's VBNs: those of the oldest input's snapshot it did not
    // bring, and those it freed.
    let dealloc = if full {
        RunSet::default()
    } else {
        tree_vbns(&first.front.tree)
            .minus(&first.front.carried)
            .union(&RunSet::from_runs(
                first.front.image.dealloc.iter().map(|r| (r.vbn, r.count)),
            ))
            .minus(&top_vbns)
    };
    let header = StreamHeader {
        hostname: last.header.hostname.clone(),
        ..StreamHeader::new(ImageHeader {
            source_uuid: last.header.source_uuid,
            source_path: last.header.source_path.clone(),
            snapshot: last.header.snapshot.clone(),
            base: if full {
                None
            } else {
                first.header.base.clone()
            },
            block_size: bs as u32,
            compression_level: opts.compression,
            entries: top_tree.dirents.len() as u64,
            stream_id: crate::ids::random_id(),
        })
    };
    let image = Image {
        carried: runs_of(&carried),
        dealloc: runs_of(&dealloc),
    };
    let index = Placer::new(top_tree);
    let (first_base, last_snap) = (first.header.base.clone(), last.header.snapshot.clone());
    drop(links);
    if crate::media::writes_tape(&opts.specs, opts.tape.capacity) {
        // A tape (or volume files) is written in place, where a stream cut
        // by a damaged input would replace what the tape held: inputs in
        // files are checked whole first. (A kill still cuts the tape file,
        // which every reader refuses.)
        precheck(&mut set, &chain, &Placer::new(top_tree), top_tree, bs)?;
    }
    note_leftovers(&opts.specs[0]);
    let (output, out) = Output::open_medium(&opts.specs, &opts.tape)?;
    output.set_label(header.tape_label());
    let written = (|| -> Result<_> {
        let mut w = StreamWriter::new(out, opts.compression, bs as u32)?;
        write_front(&mut w, &header, top_tree, &image)?;
        let kept_per = std::cell::RefCell::new(vec![Passed::default(); chain.len()]);
        let ((), w, _) = write_records(
            w,
            opts.compression,
            bs,
            crate::stream::records::Sums::Skip,
            |send, pool| {
                let mut batch = RecordBatch::new(send, pool, bs);
                for (k, &i) in chain.iter().enumerate() {
                    let link = &mut set.links[i];
                    let n = pass(link, &keep[k], &index, top_tree, bs, opts.waste, &mut batch)?;
                    kept_per.borrow_mut()[k] = n;
                }
                batch.flush()
            },
        )?;
        let (end, out, stream_bytes) = w.finish()?;
        drop(out);
        Ok((end, stream_bytes, kept_per.into_inner()))
    })();
    let (end, stream_bytes, kept_per) = match written {
        Ok(v) => v,
        Err(e) => {
            output.abort();
            return Err(e);
        }
    };
    let name = output.name.clone();
    output.commit()?;
    let inputs: Vec<CoalescedInput> = chain
        .iter()
        .zip(&kept_per)
        .map(|(&i, p)| {
            let l = &set.links[i];
            CoalescedInput {
                stream: l.name.clone(),
                snapshot: l.header.snapshot.clone(),
                blocks_carried: l.front.carried.total() as u64,
                blocks_kept: p.kept,
                records_copied: p.records_copied,
                blocks_copied: p.blocks_copied,
                gap_bytes: p.gap_bytes,
            }
        })
        .collect();
    let total_in: u64 = inputs.iter().map(|i| i.blocks_carried).sum();
    Ok(CoalesceSummary {
        command: "coalesce",
        status: "ok",
        output: name,
        snapshot: last_snap,
        base: if full { None } else { first_base },
        full,
        blocks_carried: end.data_blocks,
        blocks_dropped: total_in - end.data_blocks,
        blocks_copied: kept_per.iter().map(|p| p.blocks_copied).sum(),
        gap_bytes: kept_per.iter().map(|p| p.gap_bytes).sum(),
        blocks_deallocated: dealloc.total() as u64,
        data_bytes: end.data_bytes,
        stream_bytes,
        stream_bytes_read: set.bytes_read(),
        elapsed_seconds: started.elapsed().as_secs_f64(),
        inputs,
    })
}

/// Reads every input that is a file through, checking it as the
/// coalesce will, and keeping nothing.
fn precheck(
    set: &mut StreamSet,
    chain: &[usize],
    placer: &Placer,
    top: &Tree,
    bs: u64,
) -> Result<()> {
    let (_tx, pool) = crossbeam_channel::unbounded::<Vec<u8>>();
    let mut sink = |_: Outgoing, _: Vec<Segment>| -> Result<()> {
        bail!("the check of the inputs keeps no block")
    };
    let mut batch = RecordBatch::new(&mut sink, &pool, bs);
    for &i in chain {
        if matches!(set.links[i].access, Access::Seek(_)) {
            pass(
                &mut set.links[i],
                &RunSet::default(),
                placer,
                top,
                bs,
                None,
                &mut batch,
            )?;
        }
    }
    Ok(())
}

/// Names the partial outputs killed runs left beside `spec` (a kill -9
/// cannot remove them; a dump's may be resumed, so none is removed here).
fn note_leftovers(spec: &str) {
    let path = std::path::Path::new(spec);
    let (Some(dir), Some(base)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.snapdump-partial.", base.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = crate::lock::process_alive(pid as u32);
        if !alive {
            crate::progress::note(&format!(
                "{} is a partial output left by a killed run (process {pid}); remove it (unless it is a killed dump's that dump --resume will continue)",
                dir.join(&name).display()
            ));
        }
    }
}

fn runs_of(s: &RunSet) -> Vec<crate::stream::payload::VbnRun> {
    s.runs()
        .iter()
        .map(|&(vbn, count)| crate::stream::payload::VbnRun { vbn, count })
        .collect()
}

/// Reads one input from its start to its end record, checking every data
/// segment against its own metadata and image, and puts the blocks of
/// `keep` into the output at the places the newest snapshot gives them.
/// A record whose kept blocks stay as they are copies its data area
/// whole, stored as it came (not compressed again), its dropped blocks
/// left as gap bytes, when those are at most `waste` of the area (see
/// [`Waste`]); any other record's kept blocks are put into new records.
/// Returns what it gave; every block the input carries must arrive.
pub(super) fn pass(
    link: &mut Link,
    keep: &RunSet,
    index: &Placer,
    top: &Tree,
    bs: u64,
    waste: Option<Waste>,
    batch: &mut RecordBatch,
) -> Result<Passed> {
    let mut seq_reader;
    let r: &mut StreamReader = match &mut link.access {
        Access::Seek(s) => {
            seq_reader = s.sequential()?;
            &mut seq_reader
        }
        Access::Pipe(r) => r,
    };
    let name = link.name.clone();
    let gaps = link.header.gaps();
    let mut seen = Disjoint::default();
    let mut got = 0u64;
    let mut passed = Passed::default();
    let mut ended = false;
    while let Some(mut rec) = r.next_record()? {
        match rec.kind {
            RecordKind::Header | RecordKind::Meta | RecordKind::Image => {
                if rec.offset >= link.data_start {
                    bail!("{name}: record {} out of place", rec.seq);
                }
            }
            RecordKind::Data => {
                let at = |e: anyhow::Error| {
                    anyhow!("{name}: record {} at byte {}: {e:#}", rec.seq, rec.offset)
                };
                let (table, data_len) = decode_table(&rec.raw, gaps).map_err(at)?;
                let plan = plan_record(&link.front, &mut seen, &table, keep, index, top, bs)
                    .map_err(at)?;
                got += plan.blocks;
                passed.kept += plan.kept;
                if plan.kept == 0 {
                    continue;
                }
                let frame = match &rec.stored {
                    None => Some(None),
                    Some(st) => data_frame(st, data_len).map(|f| Some(f.len())),
                };
                match (plan.copy, frame) {
                    (Some(segs), Some(frame))
                        if waste.is_some_and(|w| w.allows(plan.gap_bytes, data_len)) =>
                    {
                        rec.raw.truncate(data_len);
                        let frame = frame.map(|n| {
                            let mut st = rec.stored.take().unwrap_or_default();
                            st.truncate(n);
                            st
                        });
                        batch.copy(
                            Copied {
                                data: rec.raw,
                                frame,
                            },
                            segs,
                        )?;
                        passed.records_copied += 1;
                        passed.blocks_copied += plan.kept;
                        passed.gap_bytes += plan.gap_bytes;
                    }
                    _ => {
                        for (v, c, from, to) in plan.runs {
                            index
                                .put(v, c, &rec.raw[from..to], top, bs, batch)
                                .map_err(at)?;
                        }
                    }
                }
            }
            RecordKind::Reloc => {}
            RecordKind::End => ended = true,
        }
    }
    if !ended {
        bail!("{name}: the stream ends before its end record (truncated)");
    }
    let want = link.front.carried.total() as u64;
    if got != want {
        bail!(
            "{name}: {} of the {want} blocks it carries are missing from its data (damaged or inconsistent stream)",
            want.saturating_sub(got)
        );
    }
    let read = r.offset();
    if let Access::Seek(s) = &mut link.access {
        s.add_bytes_read(read);
    }
    Ok(passed)
}

/// How much of a copied record's data area may be gap bytes (the blocks
/// it dropped, and gaps it already had): at most `percent` per cent.
#[derive(Clone, Copy, Debug)]
pub struct Waste {
    /// The limit, 0..=100; 0 copies only records that keep every block.
    pub percent: u8,
}

impl Waste {
    /// The default: a record copied whole may carry up to a tenth of its
    /// bytes as gaps, so a synthetic full stays within 10% of a fresh
    /// dump's size while most records are not compressed again.
    pub const DEFAULT: Waste = Waste { percent: 10 };

    fn allows(self, gap_bytes: u64, data_len: usize) -> bool {
        gap_bytes * 100 <= self.percent as u64 * data_len as u64
    }
}

/// What one input record gives the output.
struct RecordPlan {
    /// Blocks the record carries.
    blocks: u64,
    /// Of those, blocks the output keeps.
    kept: u64,
    /// The kept runs: `(vbn, count, first byte, end byte)` of the data area.
    runs: Vec<(u64, u64, usize, usize)>,
    /// The table of the record copied whole (gaps for every dropped block),
    /// when each kept run becomes exactly its bytes in the newest snapshot
    /// and the table stays within twice a record's segment bound.
    copy: Option<Vec<Segment>>,
    /// Bytes the copy would leave as gaps.
    gap_bytes: u64,
}

fn plan_record(
    front: &Front,
    seen: &mut Disjoint,
    table: &[Segment],
    keep: &RunSet,
    index: &Placer,
    top: &Tree,
    bs: u64,
) -> Result<RecordPlan> {
    let mut plan = RecordPlan {
        blocks: 0,
        kept: 0,
        runs: Vec::new(),
        copy: Some(Vec::new()),
        gap_bytes: 0,
    };
    let gap = |copy: &mut Option<Vec<Segment>>, len: u64| {
        if let Some(segs) = copy {
            match segs.last_mut() {
                Some(g) if g.is_gap() && g.len as u64 + len <= u32::MAX as u64 => {
                    g.len += len as u32
                }
                _ => segs.push(Segment::gap(len as u32)),
            }
        }
        len
    };
    let mut at = 0usize;
    for s in table {
        if s.is_gap() {
            plan.gap_bytes += gap(&mut plan.copy, s.len as u64);
            at += s.len as usize;
            continue;
        }
        check_segment(&front.tree, &front.carried, seen, s, bs)?;
        let n = (s.len as u64).div_ceil(bs);
        plan.blocks += n;
        for (v, c, inside) in keep.split(s.vbn, n) {
            let from = at + ((v - s.vbn) * bs) as usize;
            let to = (from + (c * bs) as usize).min(at + s.len as usize);
            if !inside {
                plan.gap_bytes += gap(&mut plan.copy, (to - from) as u64);
                continue;
            }
            plan.kept += c;
            plan.runs.push((v, c, from, to));
            if let Some(segs) = &mut plan.copy {
                let placed = index.place(v, c, top, bs)?;
                if placed.iter().map(|p| p.len as usize).sum::<usize>() == to - from {
                    segs.extend(placed);
                } else {
                    plan.copy = None;
                }
            }
        }
        at += s.len as usize;
    }
    if plan
        .copy
        .as_ref()
        .is_some_and(|s| s.len() > 2 * MAX_SEGMENTS)
    {
        plan.copy = None;
    }
    Ok(plan)
}
