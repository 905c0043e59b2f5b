//! The data phase of a dump: read the blocks of the image, hash and
//! compress them in parallel, write them in order.
//!
//! One reader (the calling thread) reads files in metadata order straight
//! into record buffers; workers compute each block's XXH3-128 (the catalog's
//! pointer checksum) and compress the record; one writer puts records on the
//! medium in sequence, feeding the whole-stream SHA-256 and the relocation
//! table. Channels are bounded, so memory stays at a few records per thread
//! whatever the data size, and buffers are recycled rather than allocated.

use super::plan::Spool;
use crate::fsx::{self, dirstack::DirStack};
use crate::planes::Plane;
use crate::progress::Progress;
use crate::report::Report;
use crate::scan::open_file;
use crate::stream::payload::{finish_data, Segment};
use crate::stream::record::{seal_owned, RecordKind, Sealed};
use crate::stream::writer::StreamWriter;
use crate::stream::DATA_RECORD_BYTES;
use crate::tree::{Kind, Tree};
use anyhow::{anyhow, Result};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use std::collections::{BTreeMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use xxhash_rust::xxh3::xxh3_128;

/// Most segments in one data record; bounds the table of many tiny files.
const MAX_SEGMENTS: usize = 256;

struct Job {
    seq: u64,
    buf: Vec<u8>,
    segs: Vec<Segment>,
}

struct Done {
    seq: u64,
    rec: Sealed,
    digest: [u8; 32],
    segs: Vec<Segment>,
    sums: Vec<[u8; 16]>,
}

/// What the data phase hands back.
pub struct DataResult {
    /// The writer, positioned after the last data record.
    pub writer: StreamWriter,
    /// XXH3-128 of every block written, per segment, for the catalog's
    /// block pointers.
    pub sums: Vec<(Segment, Vec<[u8; 16]>)>,
    /// Inodes that changed, shrank or vanished while being read; the
    /// catalog must not trust their recorded state.
    pub unstable: HashSet<u64>,
}

/// Writes the data records for every block of every regular file in
/// `tree`, starting at the writer's next sequence number.
#[allow(clippy::too_many_arguments)]
pub fn write_data(
    writer: StreamWriter,
    tree: &Tree,
    image: &Plane,
    spool: &Spool,
    root: OwnedFd,
    level: i32,
    block_size: u32,
    report: &Report,
    progress: &Progress,
) -> Result<DataResult> {
    let bs = block_size as u64;
    let src = Sources {
        tree,
        image,
        spool,
        bs,
    };
    let (unstable, writer, sums) = write_records(writer, level, bs, |send, pool| {
        read_blocks(&src, root, send, pool, report, progress)
    })?;
    Ok(DataResult {
        writer,
        sums,
        unstable,
    })
}

/// The callback a producer of data records hands each record to: its
/// bytes and segments.
pub(crate) type RecordSink<'a> = &'a mut dyn FnMut(Vec<u8>, Vec<Segment>) -> Result<()>;

/// Seals and writes data records with the compression workers, in order:
/// `produce` hands each record's bytes and segments to the callback it is
/// given, taking buffers from the pool of spent ones when it can (the tree
/// dump reads files, a dump from a volume reads its blocks; both share this
/// stage). Returns what `produce` returned, the writer, and the XXH3-128
/// of every block written, per segment.
pub(crate) fn write_records<T>(
    writer: StreamWriter,
    level: i32,
    bs: u64,
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
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for _ in 0..workers {
            let job_rx = job_rx.clone();
            let done_tx = done_tx.clone();
            let pool = (pool_tx.clone(), pool_rx.clone());
            handles.push(s.spawn(move || worker(job_rx, done_tx, pool, level, bs, seed)));
        }
        drop(job_rx);
        drop(done_tx);
        let pool_tx2 = pool_tx.clone();
        let writer_h = s.spawn(move || write_in_order(writer, done_rx, pool_tx2));
        let produced = produce(
            &mut |buf, segs| {
                let job = Job { seq, buf, segs };
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
    seed: u64,
) -> Result<()> {
    let mut zstd = if level != 0 {
        Some(zstd::bulk::Compressor::new(level)?)
    } else {
        None
    };
    for job in jobs {
        let mut sums = Vec::with_capacity(job.buf.len() / bs as usize + job.segs.len());
        let mut at = 0usize;
        for s in &job.segs {
            let data = &job.buf[at..at + s.len as usize];
            sums.extend(data.chunks(bs as usize).map(|c| xxh3_128(c).to_le_bytes()));
            at += s.len as usize;
        }
        let mut raw = job.buf;
        finish_data(&mut raw, &job.segs);
        let scratch = pool.1.try_recv().unwrap_or_default();
        let (rec, spare) = seal_owned(RecordKind::Data, job.seq, raw, zstd.as_mut(), scratch, seed);
        if spare.capacity() > 0 {
            let _ = pool.0.send(spare);
        }
        let digest = rec.digest();
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

type SegmentSums = Vec<(Segment, Vec<[u8; 16]>)>;

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
            let mut it = d.sums.into_iter();
            for seg in d.segs {
                let n = (seg.len as u64).div_ceil(writer.block_size()) as usize;
                sums.push((seg, it.by_ref().take(n).collect()));
            }
            let _ = pool.send(d.rec.payload);
        }
    }
    if !pending.is_empty() {
        return Err(anyhow!(
            "internal error: data records missing from the pipeline"
        ));
    }
    Ok((writer, sums))
}

struct Batch {
    buf: Vec<u8>,
    used: usize,
    segs: Vec<Segment>,
}

/// What the reader needs to find the image's blocks.
struct Sources<'a> {
    tree: &'a Tree,
    image: &'a Plane,
    spool: &'a Spool,
    bs: u64,
}

/// The runs of `inode`'s blocks that are in the image: (file block, VBN,
/// count).
fn image_runs(inode: &crate::tree::Inode, image: &Plane) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for x in &inode.extents {
        for i in 0..x.count {
            if !image.get(x.vbn + i) {
                continue;
            }
            match out.last_mut() {
                Some(l) if l.0 + l.2 == x.block + i && l.1 + l.2 == x.vbn + i => l.2 += 1,
                _ => out.push((x.block + i, x.vbn + i, 1)),
            }
        }
    }
    out
}

fn read_blocks(
    src: &Sources,
    root: OwnedFd,
    send: RecordSink,
    pool: &Receiver<Vec<u8>>,
    report: &Report,
    progress: &Progress,
) -> Result<HashSet<u64>> {
    let (tree, bs) = (src.tree, src.bs);
    let mut dirs = DirStack::new(root);
    let mut unstable = HashSet::new();
    let new_buf = |pool: &Receiver<Vec<u8>>| {
        let mut b = pool.try_recv().unwrap_or_default();
        if b.len() < DATA_RECORD_BYTES {
            b.resize(DATA_RECORD_BYTES, 0);
        }
        b
    };
    let mut batch = Batch {
        buf: new_buf(pool),
        used: 0,
        segs: Vec::new(),
    };
    let mut flush = |batch: &mut Batch| -> Result<()> {
        if batch.segs.is_empty() {
            return Ok(());
        }
        let mut buf = std::mem::replace(&mut batch.buf, new_buf(pool));
        buf.truncate(batch.used);
        batch.used = 0;
        send(buf, std::mem::take(&mut batch.segs))
    };

    for inode in &tree.inodes {
        if inode.kind != Kind::File {
            continue;
        }
        let runs = image_runs(inode, src.image);
        if runs.is_empty() {
            continue;
        }
        let ino = inode.ino;
        let spooled = src.spool.runs(ino);
        let fd = if spooled.is_some() {
            None
        } else {
            open_source(tree, &mut dirs, inode)
        };
        if spooled.is_none() && fd.is_none() {
            report.warn(
                &tree.path(ino),
                "vanished or replaced during the dump; its data in this stream is zeros, the next dump will send it again",
            );
            unstable.insert(ino);
        }
        let mut short = false;
        for &(first, vbn, count) in &runs {
            let mut blk = first;
            let end = first + count;
            while blk < end {
                let space = (DATA_RECORD_BYTES - batch.used) as u64 / bs;
                if space == 0 || batch.segs.len() == MAX_SEGMENTS {
                    flush(&mut batch)?;
                    continue;
                }
                let mut n = space.min(end - blk);
                if let Some(sp) = spooled {
                    // Stay inside one spool run.
                    let r = sp
                        .iter()
                        .find(|r| r.block <= blk && blk < r.block + r.count)
                        .expect("image block was spooled");
                    n = n.min(r.block + r.count - blk);
                }
                let off = blk * bs;
                let len = ((blk + n) * bs).min(inode.size) - off;
                let area = &mut batch.buf[batch.used..batch.used + len as usize];
                let got = if let Some(sp) = spooled {
                    let r = sp
                        .iter()
                        .find(|r| r.block <= blk && blk < r.block + r.count)
                        .unwrap();
                    src.spool
                        .read(area, r.offset + (blk - r.block) * bs)
                        .map(|_| area.len())?
                } else if let Some(fd) = &fd {
                    fsx::pread_full(fd.as_fd(), area, off).unwrap_or_else(|e| {
                        report.warn(
                            &tree.path(ino),
                            format!("read error at byte {off}: {e}; zeros sent"),
                        );
                        0
                    })
                } else {
                    0
                };
                if got < area.len() {
                    area[got..].fill(0);
                    short = fd.is_some();
                }
                progress.inc(len);
                batch.segs.push(Segment {
                    ino,
                    vbn: vbn + (blk - first),
                    offset: off,
                    len: len as u32,
                });
                batch.used += len as usize;
                blk += n;
            }
        }
        if let Some(fd) = fd {
            let changed = match fsx::fstat(fd.as_fd()) {
                Ok(st) => {
                    let (_, a) = fsx::attrs_of(&st);
                    st.st_size as u64 != inode.size
                        || a.mtime != inode.attrs.mtime
                        || a.ctime != inode.attrs.ctime
                }
                Err(_) => true,
            };
            if changed || short {
                report.warn(
                    &tree.path(ino),
                    "changed while being read; the stream holds a mix of old and new data, the next dump will send it again",
                );
                unstable.insert(ino);
            }
        }
    }
    flush(&mut batch)?;
    Ok(unstable)
}

/// Opens a source file by its chain of directories, checking it is still
/// the file the scan saw.
fn open_source(tree: &Tree, dirs: &mut DirStack, inode: &crate::tree::Inode) -> Option<OwnedFd> {
    let d = tree.primary(inode.ino);
    let dir = dirs.enter_in(tree, d.parent).ok()?;
    let fd = open_file(dir, &d.name).ok()?;
    let st = fsx::fstat(fd.as_fd()).ok()?;
    ((st.st_dev, st.st_ino) == (inode.src.dev, inode.src.ino)).then_some(fd)
}
