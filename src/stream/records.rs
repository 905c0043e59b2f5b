//! The ordered parallel record stage every producer of data records uses
//! (a tree dump reading files, a volume dump reading its blocks; later
//! coalescing and replication): the producer fills record buffers through a
//! [`RecordBatch`]; workers compute each block's XXH3-128 and seal
//! (compress, checksum) the record; one writer puts records on the medium in
//! sequence, feeding the stream digest and the relocation table. Channels
//! are bounded, so memory stays at a few records per thread whatever the
//! data size, and buffers are recycled rather than allocated.

use super::payload::{finish_data, Segment};
use super::record::{seal_data, seal_stored, RecordKind, Sealed};
use super::writer::StreamWriter;
use super::DATA_RECORD_BYTES;
use anyhow::{anyhow, Result};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use std::collections::BTreeMap;
use xxhash_rust::xxh3::xxh3_128;

/// Most segments in one data record; bounds the table of many tiny files.
pub const MAX_SEGMENTS: usize = 256;

struct Job {
    seq: u64,
    body: Outgoing,
    segs: Vec<Segment>,
}

/// A data record's contents as a producer hands them on.
pub enum Outgoing {
    /// The data area, to be compressed with the stage's level.
    Fresh(Vec<u8>),
    /// A data area taken whole from another stream's record, with its
    /// stored form: only a new segment table is written behind it.
    Copied(Copied),
}

/// A data area copied from a record of another stream.
pub struct Copied {
    /// The data area, decompressed (for the blocks' checksums).
    pub data: Vec<u8>,
    /// Its zstd frame as the other stream stored it, or `None` when that
    /// record was stored raw (then the copy is stored raw too).
    pub frame: Option<Vec<u8>>,
}

struct Done {
    seq: u64,
    rec: Sealed,
    digest: [u8; 32],
    segs: Vec<Segment>,
    sums: Vec<[u8; 16]>,
}

/// The callback a producer of data records hands each record to: its
/// data area and segments (gaps included, in table order).
pub type RecordSink<'a> = &'a mut dyn FnMut(Outgoing, Vec<Segment>) -> Result<()>;

/// Whether the stage returns the XXH3-128 of every block it writes (a tree
/// dump keeps them in its catalog; the other producers need none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sums {
    /// Compute and return them.
    Keep,
    /// Compute none (the returned list is empty).
    Skip,
}

/// Seals and writes data records with the compression workers, in order:
/// `produce` hands each record's bytes and segments to the callback it is
/// given, taking buffers from the pool of spent ones when it can (the tree
/// dump reads files, a dump from a volume reads its blocks; both share this
/// stage). Returns what `produce` returned, the writer, and the XXH3-128
/// of every block written, per segment.
pub fn write_records<T>(
    writer: StreamWriter,
    level: i32,
    bs: u64,
    sums: Sums,
    produce: impl FnOnce(RecordSink, &Receiver<Vec<u8>>) -> Result<T>,
) -> Result<(T, StreamWriter, SegmentSums)> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let (job_tx, job_rx) = bounded::<Job>(workers * 2);
    let (done_tx, done_rx) = bounded::<Done>(workers * 2);
    let (pool_tx, pool_rx) = unbounded::<Vec<u8>>();
    let mut seq = writer.next_seq();
    let seed = writer.seed();
    let hash = writer.list_hash();
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for _ in 0..workers {
            let job_rx = job_rx.clone();
            let done_tx = done_tx.clone();
            let pool = (pool_tx.clone(), pool_rx.clone());
            handles.push(
                s.spawn(move || worker(job_rx, done_tx, pool, level, bs, (seed, hash), sums)),
            );
        }
        drop(job_rx);
        drop(done_tx);
        let pool_tx2 = pool_tx.clone();
        let writer_h = s.spawn(move || write_in_order(writer, done_rx, pool_tx2));
        let produced = produce(
            &mut |body, segs| {
                let job = Job { seq, body, segs };
                seq += 1;
                job_tx
                    .send(job)
                    .map_err(|_| anyhow!("the stream writer stopped"))
            },
            &pool_rx,
        );
        drop(job_tx);
        for h in handles {
            h.join()
                .map_err(|_| anyhow!("a compression worker panicked"))??;
        }
        let (writer, sums) = writer_h
            .join()
            .map_err(|_| anyhow!("the stream writer panicked"))??;
        // A reader error after a writer error is only its echo; report the
        // writer's cause first.
        Ok((produced?, writer, sums))
    })
}

fn worker(
    jobs: Receiver<Job>,
    done: Sender<Done>,
    pool: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
    level: i32,
    bs: u64,
    (seed, hash): (u64, crate::digest::ListHash),
    want: Sums,
) -> Result<()> {
    let mut zstd = if level != 0 {
        Some(zstd::bulk::Compressor::new(level)?)
    } else {
        None
    };
    for job in jobs {
        let data: &[u8] = match &job.body {
            Outgoing::Fresh(buf) => buf,
            Outgoing::Copied(c) => &c.data,
        };
        let mut sums = Vec::with_capacity(data.len() / bs as usize + job.segs.len());
        let mut at = 0usize;
        for s in &job.segs {
            let bytes = &data[at..at + s.len as usize];
            if !s.is_gap() && want == Sums::Keep {
                sums.extend(bytes.chunks(bs as usize).map(|c| xxh3_128(c).to_le_bytes()));
            }
            at += s.len as usize;
        }
        let (rec, spare) = match job.body {
            Outgoing::Fresh(mut raw) => {
                let data_len = raw.len();
                finish_data(&mut raw, &job.segs);
                let scratch = pool.1.try_recv().unwrap_or_default();
                seal_data(job.seq, raw, data_len, zstd.as_mut(), scratch, seed)
            }
            Outgoing::Copied(c) => copied(job.seq, c, &job.segs, zstd.as_mut(), seed),
        };
        recycle(&pool.0, spare);
        let digest = rec.digest(hash);
        if done
            .send(Done {
                seq: job.seq,
                rec,
                digest,
                segs: job.segs,
                sums,
            })
            .is_err()
        {
            break; // the writer stopped: its error is the one to report
        }
    }
    Ok(())
}

/// Spent buffers kept for reuse, at most: enough for every record in
/// flight; more (a coalesce's copies return buffers the producer never
/// asks for) are freed.
const POOL_MAX: usize = 32;

fn recycle(pool: &Sender<Vec<u8>>, buf: Vec<u8>) {
    if buf.capacity() > 0 && pool.len() < POOL_MAX {
        let _ = pool.send(buf);
    }
}

/// Seals a copied data area with its new table: its frame, then the
/// table's frame behind it; stored raw when the copy came raw, or when
/// the stage does not compress (a frame is then not passed off as raw).
fn copied(
    seq: u64,
    c: Copied,
    segs: &[Segment],
    zstd: Option<&mut zstd::bulk::Compressor<'_>>,
    seed: u64,
) -> (Sealed, Vec<u8>) {
    let data_len = c.data.len();
    match (c.frame, zstd) {
        (Some(mut frame), Some(z)) => {
            let mut table = Vec::new();
            finish_data(&mut table, segs);
            let raw_len = data_len + table.len();
            match z.compress(&table) {
                Ok(t) => {
                    frame.extend_from_slice(&t);
                    let rec = seal_stored(RecordKind::Data, seq, frame, true, raw_len, seed);
                    (rec, c.data)
                }
                Err(_) => {
                    let mut raw = c.data;
                    raw.extend_from_slice(&table);
                    (
                        seal_stored(RecordKind::Data, seq, raw, false, raw_len, seed),
                        frame,
                    )
                }
            }
        }
        (frame, _) => {
            let mut raw = c.data;
            finish_data(&mut raw, segs);
            let len = raw.len();
            let spare = frame.unwrap_or_default();
            (
                seal_stored(RecordKind::Data, seq, raw, false, len, seed),
                spare,
            )
        }
    }
}

/// The XXH3-128 of every block written, per segment.
pub type SegmentSums = Vec<(Segment, Vec<[u8; 16]>)>;

fn write_in_order(
    mut writer: StreamWriter,
    done: Receiver<Done>,
    pool: Sender<Vec<u8>>,
) -> Result<(StreamWriter, SegmentSums)> {
    let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
    let mut sums = Vec::new();
    for d in done {
        pending.insert(d.seq, d);
        while let Some(d) = pending.remove(&writer.next_seq()) {
            crate::failpoint::hit("dump-data");
            let at = writer.write_sealed(&d.rec, &d.digest)?;
            writer.note_data(&d.segs, at);
            if !d.sums.is_empty() {
                let mut it = d.sums.into_iter();
                for seg in d.segs.into_iter().filter(|s| !s.is_gap()) {
                    let n = (seg.len as u64).div_ceil(writer.block_size()) as usize;
                    sums.push((seg, it.by_ref().take(n).collect()));
                }
            }
            recycle(&pool, d.rec.payload);
        }
    }
    if !pending.is_empty() {
        return Err(anyhow!(
            "internal error: data records missing from the pipeline"
        ));
    }
    Ok((writer, sums))
}

/// A data record being filled: the producer asks how many blocks fit, puts
/// a segment's bytes in, and the batch hands full records to the stage.
/// Both bounds of a record (its bytes and its segments) live here only.
pub struct RecordBatch<'a, 'p> {
    sink: RecordSink<'a>,
    pool: &'p Receiver<Vec<u8>>,
    buf: Vec<u8>,
    segs: Vec<Segment>,
    bs: u64,
}

impl<'a, 'p> RecordBatch<'a, 'p> {
    /// A batch handing records of blocks of `bs` bytes to `sink`, with
    /// buffers from the stage's `pool` of spent ones.
    pub fn new(sink: RecordSink<'a>, pool: &'p Receiver<Vec<u8>>, bs: u64) -> Self {
        let mut b = RecordBatch {
            sink,
            pool,
            buf: Vec::new(),
            segs: Vec::new(),
            bs,
        };
        b.buf = b.fresh();
        b
    }

    fn fresh(&self) -> Vec<u8> {
        let mut b = self.pool.try_recv().unwrap_or_default();
        b.clear();
        b.reserve(DATA_RECORD_BYTES);
        b
    }

    /// How many whole blocks the current record still takes, at least one:
    /// a full record is handed on first, and a block larger than a record's
    /// aim (a volume of 1 MiB blocks) gets a record of its own.
    pub fn room(&mut self) -> Result<u64> {
        let room = DATA_RECORD_BYTES.saturating_sub(self.buf.len()) as u64 / self.bs;
        if room == 0 || self.segs.len() == MAX_SEGMENTS {
            self.flush()?;
            return Ok((DATA_RECORD_BYTES as u64 / self.bs).max(1));
        }
        Ok(room)
    }

    /// Appends `seg` and returns the area of its `seg.len` bytes, zeroed,
    /// for the producer to fill; `seg.len` must fit the [`room`](Self::room).
    pub fn push(&mut self, seg: Segment) -> &mut [u8] {
        debug_assert!(seg.len > 0, "a data segment holds at least one byte");
        let at = self.buf.len();
        self.buf.resize(at + seg.len as usize, 0);
        self.segs.push(seg);
        &mut self.buf[at..]
    }

    /// Hands the record being filled to the stage, if it holds anything.
    pub fn flush(&mut self) -> Result<()> {
        if self.segs.is_empty() {
            return Ok(());
        }
        let fresh = self.fresh();
        let buf = std::mem::replace(&mut self.buf, fresh);
        (self.sink)(Outgoing::Fresh(buf), std::mem::take(&mut self.segs))
    }

    /// Hands on a record whose data area is copied whole from another
    /// stream, with its own table `segs` (gaps included); the record being
    /// filled stays open.
    pub fn copy(&mut self, c: Copied, segs: Vec<Segment>) -> Result<()> {
        (self.sink)(Outgoing::Copied(c), segs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(vbn: u64, len: u32) -> Segment {
        Segment {
            ino: 2,
            vbn,
            offset: (vbn - 1) * len as u64,
            len,
        }
    }

    #[test]
    fn a_record_is_cut_at_its_byte_aim_and_its_segment_bound() {
        let (_tx, pool) = unbounded::<Vec<u8>>();
        let mut got: Vec<(usize, usize)> = Vec::new();
        let mut sink = |buf: Outgoing, segs: Vec<Segment>| {
            let Outgoing::Fresh(buf) = buf else {
                panic!("a copy")
            };
            got.push((buf.len(), segs.len()));
            Ok(())
        };
        let mut b = RecordBatch::new(&mut sink, &pool, 4096);
        // Small segments: the segment bound cuts the record.
        for v in 1..=(MAX_SEGMENTS as u64 + 1) {
            assert!(b.room().unwrap() >= 1);
            b.push(seg(v, 100)).fill(1);
        }
        // Whole blocks: the byte aim cuts it.
        let per = (DATA_RECORD_BYTES / 4096) as u64;
        for v in 0..per + 1 {
            let n = b.room().unwrap();
            assert!(n >= 1);
            b.push(seg(1000 + v, 4096));
        }
        b.flush().unwrap();
        drop(b);
        assert_eq!(got[0], (MAX_SEGMENTS * 100, MAX_SEGMENTS));
        assert!(got
            .iter()
            .all(|&(bytes, segs)| bytes <= DATA_RECORD_BYTES && segs <= MAX_SEGMENTS));
        assert_eq!(
            got.iter().map(|g| g.1).sum::<usize>(),
            MAX_SEGMENTS + 1 + per as usize + 1
        );
    }

    #[test]
    fn a_block_larger_than_a_record_gets_a_record_of_its_own() {
        let (_tx, pool) = unbounded::<Vec<u8>>();
        let mut got: Vec<(usize, usize)> = Vec::new();
        let mut sink = |buf: Outgoing, segs: Vec<Segment>| {
            let Outgoing::Fresh(buf) = buf else {
                panic!("a copy")
            };
            got.push((buf.len(), segs.len()));
            Ok(())
        };
        let bs = 1 << 20;
        let mut b = RecordBatch::new(&mut sink, &pool, bs);
        for v in 1..=3 {
            assert_eq!(b.room().unwrap(), 1, "room for one block, never zero");
            b.push(seg(v, bs as u32));
        }
        b.flush().unwrap();
        drop(b);
        assert_eq!(got, vec![(1 << 20, 1); 3]);
    }
}
