//! Dumping a volume: `dump -N -f OUT PATH.vol[@SNAP]` and `--image EXPR`.
//!
//! A volume is dumped like a tree, from its own planes: a level-N image
//! of a snapshot is its plane minus that of the newest older snapshot of
//! the same source with a lower level. `--image 'S5+S4-S3'` names the
//! planes: the tops S4 and S5 over the base S3. It is written as an image
//! set, one stream per top in order (S4-S3, then S5-S4) on the one output,
//! so every block of S4+S5-S3 is carried exactly once and a receiving
//! volume recreates S4 as well as S5.
//!
//! The streams keep each snapshot's identity (id, uuid, time, level), so a
//! replica holds the same snapshots as the volume it came from. Their VBNs
//! are this volume's, so their source id is derived from the volume's and
//! the source's ids: a replica keeps a relocation map per VBN space.

use super::format::VolSnapshot;
use super::read::{read_run, READ_BLOCKS};
use super::store::{Access, Volume};
use crate::lock::Wait;
use crate::media::Output;
use crate::planes::Plane;
use crate::report::Report;
use crate::stream::front::write_front;
use crate::stream::header::{ImageHeader, SnapshotRef, StreamHeader};
use crate::stream::payload::{Image, Segment};
use crate::stream::records::{write_records, RecordBatch};
use crate::stream::writer::StreamWriter;
use crate::tree::Kind;
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::path::PathBuf;

/// A plane expression: tops summed, minus at most one base.
#[derive(Debug, PartialEq, Eq)]
pub struct ImageExpr {
    /// Volume ids of the snapshots summed.
    pub tops: Vec<u64>,
    /// Volume id of the snapshot subtracted.
    pub base: Option<u64>,
}

/// Parses `S5+S4-S3` (the `S` is optional: `5+4-3`).
pub fn parse_image(s: &str) -> Result<ImageExpr> {
    let bad = || {
        anyhow!("image expression '{s}': expected volume snapshot ids joined by '+', with at most one '-' base at the end, e.g. S5+S4-S3")
    };
    let id = |t: &str| -> Result<u64> {
        let t = t.trim();
        let t = t.strip_prefix(['S', 's', '@']).unwrap_or(t);
        t.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(bad)
    };
    let (tops, base) = match s.split_once('-') {
        Some((t, b)) => (t, Some(id(b)?)),
        None => (s, None),
    };
    let mut tops: Vec<u64> = tops.split('+').map(id).collect::<Result<_>>()?;
    tops.sort_unstable();
    tops.dedup();
    Ok(ImageExpr { tops, base })
}

/// What a dump of a volume was asked to do.
pub struct VolumeDumpOptions {
    /// The volume.
    pub volume: PathBuf,
    /// The snapshot to dump (`PATH@SNAP`; default the newest).
    pub at: Option<String>,
    /// Dump level (ignored with `image`).
    pub level: u8,
    /// A plane expression instead of the level.
    pub image: Option<String>,
    /// Output and further volumes.
    pub specs: Vec<String>,
    /// Tape options.
    pub tape: crate::media::tape::writer::TapeOptions,
    /// zstd level.
    pub compression: i32,
}

/// One stream written.
#[derive(Serialize)]
pub struct StreamWritten {
    /// The snapshot it brings a target to.
    pub snapshot: SnapshotRef,
    /// Its volume id here.
    pub volume_id: u64,
    /// Full image or increment.
    pub full: bool,
    /// The base, for increments.
    pub base: Option<SnapshotRef>,
    /// Bytes of this stream.
    pub stream_bytes: u64,
    /// Data blocks carried.
    pub data_blocks: u64,
}

/// The `--json` summary of a dump of a volume.
#[derive(Serialize)]
pub struct VolumeDumpSummary {
    /// Always "dump".
    pub command: &'static str,
    /// "ok" or "warnings".
    pub status: &'static str,
    /// The volume dumped.
    pub source: String,
    /// Where the streams went.
    pub output: String,
    /// The streams, in the order written.
    pub streams: Vec<StreamWritten>,
    /// Bytes written in all.
    pub stream_bytes: u64,
    /// Wall-clock seconds.
    pub elapsed_seconds: f64,
}

/// The source id a volume's streams of a source carry.
pub fn derived_source_id(volume: &[u8; 16], source: &[u8; 16]) -> [u8; 16] {
    let h = crate::digest::sha256_parts(&[b"snapdump volume source", volume, source]);
    h[..16].try_into().expect("16 of 32 bytes")
}

/// Picks the (top, base) pairs to write, in order.
fn plan<'a>(
    vol: &'a Volume,
    opts: &VolumeDumpOptions,
) -> Result<Vec<(&'a VolSnapshot, Option<&'a VolSnapshot>)>> {
    let by_id = |id: u64| {
        vol.state
            .snapshots
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| {
                anyhow!(
                    "volume {} holds no snapshot @{id}; list them with snapdump volume snapshots",
                    vol.path.display()
                )
            })
    };
    let (tops, base): (Vec<&VolSnapshot>, Option<&VolSnapshot>) = match &opts.image {
        Some(expr) => {
            let e = parse_image(expr)?;
            let tops = e
                .tops
                .iter()
                .map(|&i| by_id(i))
                .collect::<Result<Vec<_>>>()?;
            let base = e.base.map(by_id).transpose()?;
            (tops, base)
        }
        None => {
            let top = vol.snapshot(opts.at.as_deref())?;
            let base = if opts.level == 0 {
                None
            } else {
                vol.state
                    .snapshots
                    .iter()
                    .filter(|s| {
                        s.source == top.source && s.id < top.id && s.snap.level < opts.level
                    })
                    .max_by_key(|s| s.id)
            };
            if base.is_none() && opts.level > 0 {
                crate::progress::println_err(&format!(
                    "snapdump: warning: volume {} holds no snapshot of level below {} older than @{}: writing a full image",
                    vol.path.display(),
                    opts.level,
                    top.id
                ));
            }
            (vec![top], base)
        }
    };
    let first = tops[0];
    for t in &tops {
        if t.source != first.source || base.is_some_and(|b| b.source != t.source) {
            bail!("image expression mixes snapshots of different sources; dump each source separately");
        }
        if t.shadow {
            bail!(
                "snapshot @{} is a shadow (its blocks may have been reused); it can only be a base (after '-')",
                t.id
            );
        }
        if base.is_some_and(|b| b.id >= t.id) {
            bail!("the base of an image must be older than every snapshot summed (@{} is not older than @{})", base.unwrap().id, t.id);
        }
    }
    let mut out = Vec::new();
    let mut prev = base;
    for t in tops {
        out.push((t, prev));
        prev = Some(t);
    }
    Ok(out)
}

/// Dumps a volume's snapshot(s) as one stream or an image set.
pub fn dump_volume(opts: &VolumeDumpOptions, report: &Report) -> Result<VolumeDumpSummary> {
    let started = std::time::Instant::now();
    let vol = Volume::open(&opts.volume, Access::Read, Wait::Yes)?;
    let pairs = plan(&vol, opts)?;
    if pairs.len() > 1 && crate::media::writes_tape(&opts.specs, opts.tape.capacity) {
        bail!(
            "an image of several snapshots is written as streams back to back, which tapes do not hold; write it to a file or a pipe, or dump one snapshot at a time (--image S5-S4), one tape file each"
        );
    }
    let (output, mut out) = Output::open_medium(&opts.specs, &opts.tape)?;
    let name = output.name.clone();
    let mut streams = Vec::new();
    let mut total = 0;
    for (top, base) in pairs {
        let r = write_stream(&vol, top, base, &output, out, opts.compression);
        match r {
            Ok((w, o)) => {
                total += w.stream_bytes;
                streams.push(w);
                out = o;
            }
            Err(e) => {
                output.abort();
                return Err(e);
            }
        }
    }
    drop(out);
    output.commit()?;
    Ok(VolumeDumpSummary {
        command: "dump",
        status: report.status_word(),
        source: opts.volume.display().to_string(),
        output: name,
        streams,
        stream_bytes: total,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}

type Out = Box<dyn std::io::Write + Send>;

fn write_stream(
    vol: &Volume,
    top: &VolSnapshot,
    base: Option<&VolSnapshot>,
    output: &Output,
    out: Out,
    compression: i32,
) -> Result<(StreamWritten, Out)> {
    write_stream_with(
        vol,
        top,
        base,
        output,
        out,
        compression,
        crate::ids::random_id(),
        Space::Volume,
    )
}

/// The VBN space a stream from a volume speaks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Space {
    /// The volume's own VBNs, under a source id derived from the volume's
    /// (`dump` of a volume: an image of what this volume stores).
    Volume,
    /// The source's VBNs, through the origin table, under the source's
    /// own id (replication: the next replica follows the original source,
    /// so it can later be fed by it directly).
    Source,
}

/// The space a replica stream of `top` can speak: the source's when the
/// volume recorded the source VBN of every block `top` uses (format 2,
/// volume blocks as large as the stream's), else the volume's.
pub fn replica_space(vol: &Volume, top: &VolSnapshot) -> Space {
    let known = top
        .plane
        .runs()
        .iter()
        .all(|&(v, n)| (v..v + n).all(|t| vol.state.origin(t).is_some()));
    if known {
        Space::Source
    } else {
        Space::Volume
    }
}

/// The source id of a stream of `top` in `space`.
pub fn stream_source_id(vol: &Volume, top: &VolSnapshot, space: Space) -> [u8; 16] {
    match space {
        Space::Volume => derived_source_id(&vol.sb.uuid, &top.source),
        Space::Source => top.source,
    }
}

/// `plane` (target VBNs) as the source VBNs its blocks hold; blocks
/// without a recorded origin are left out.
fn origin_plane(vol: &Volume, plane: &Plane) -> Plane {
    let mut out = Plane::new();
    for (v, n) in plane.runs() {
        for t in v..v + n {
            if let Some(a) = vol.state.origin(t) {
                out.set(a);
            }
        }
    }
    out
}

/// The tree with its block pointers in source VBNs: each extent split
/// where the source VBNs of its blocks stop being consecutive.
fn source_tree(vol: &Volume, top: &VolSnapshot) -> Result<crate::tree::Tree> {
    let mut tree = (*top.tree).clone();
    for inode in tree.inodes.iter_mut() {
        let mut out: Vec<crate::tree::Extent> = Vec::new();
        for x in &inode.extents {
            for k in 0..x.count {
                let a = vol.state.origin(x.vbn + k).ok_or_else(|| {
                    anyhow!(
                        "volume {} snapshot @{}: VBN {} has no recorded source VBN",
                        vol.path.display(),
                        top.id,
                        x.vbn + k
                    )
                })?;
                match out.last_mut() {
                    Some(p) if p.block + p.count == x.block + k && p.vbn + p.count == a => {
                        p.count += 1
                    }
                    _ => out.push(crate::tree::Extent {
                        block: x.block + k,
                        vbn: a,
                        count: 1,
                    }),
                }
            }
        }
        inode.extents = out;
    }
    Ok(tree)
}

#[allow(clippy::too_many_arguments)]
fn write_stream_with(
    vol: &Volume,
    top: &VolSnapshot,
    base: Option<&VolSnapshot>,
    output: &Output,
    out: Out,
    compression: i32,
    stream_id: [u8; 16],
    space: Space,
) -> Result<(StreamWritten, Out)> {
    let bs = vol.bs();
    let entry = vol
        .state
        .sources
        .iter()
        .find(|e| e.uuid == top.source)
        .ok_or_else(|| {
            anyhow!(
                "snapshot @{}: its source is not recorded (damaged volume)",
                top.id
            )
        })?;
    let image = match base {
        Some(b) => top.plane.and_not(&b.plane),
        None => top.plane.clone(),
    };
    let dealloc = base
        .map(|b| b.plane.and_not(&top.plane))
        .unwrap_or_default();
    let (tree, front) = match space {
        Space::Volume => (
            std::borrow::Cow::Borrowed(&*top.tree),
            Image {
                carried: Image::runs_of(&image),
                dealloc: Image::runs_of(&dealloc),
            },
        ),
        Space::Source => {
            // A base block whose origin a format-1 volume did not record
            // cannot be named: the deallocation set then lacks it (a
            // receiver's copy keeps a block nothing points at).
            let top_src = origin_plane(vol, &top.plane);
            (
                std::borrow::Cow::Owned(source_tree(vol, top)?),
                Image {
                    carried: Image::runs_of(&origin_plane(vol, &image)),
                    dealloc: Image::runs_of(&origin_plane(vol, &dealloc).and_not(&top_src)),
                },
            )
        }
    };
    let header = StreamHeader::new(ImageHeader {
        source_uuid: stream_source_id(vol, top, space),
        source_path: entry.path.clone(),
        snapshot: top.snap.clone(),
        base: base.map(|b| b.snap.clone()),
        block_size: bs as u32,
        compression_level: compression,
        entries: top.tree.dirents.len() as u64,
        stream_id,
    });
    output.set_label(header.tape_label());
    let mut w = StreamWriter::new(out, compression, bs as u32)?;
    write_front(&mut w, &header, &tree, &front)?;
    let w = write_data(vol, top, &image, w, compression, space)?;
    let (end, out, stream_bytes) = w.finish()?;
    Ok((
        StreamWritten {
            snapshot: top.snap.clone(),
            volume_id: top.id,
            full: header.full,
            base: header.base,
            stream_bytes,
            data_blocks: end.data_blocks,
        },
        out,
    ))
}

/// Writes one stream of `top` over `base` to `out` with the given stream
/// id, in `space` (see `replica_space`), for replication: the same stream
/// id and snapshots give the same bytes, so a cut transfer can be resumed.
pub fn write_replica_stream(
    vol: &Volume,
    top: &VolSnapshot,
    base: Option<&VolSnapshot>,
    out: Out,
    compression: i32,
    stream_id: [u8; 16],
    space: Space,
) -> Result<StreamWritten> {
    let output = Output::sink("replication");
    let (w, out) = write_stream_with(vol, top, base, &output, out, compression, stream_id, space)?;
    drop(out);
    Ok(w)
}

/// Writes the blocks of `image`, file by file in metadata order, each read
/// from the volume and checked against its checksum (blocks outside the
/// image are not read), compressed by the dump's parallel workers. In the
/// source's space a segment is named by its blocks' source VBNs and ends
/// where they stop being consecutive, as `source_tree`'s extents do.
fn write_data(
    vol: &Volume,
    top: &VolSnapshot,
    image: &Plane,
    w: StreamWriter,
    level: i32,
    space: Space,
) -> Result<StreamWriter> {
    let bs = vol.bs();
    let name = |t: u64| match space {
        Space::Volume => t,
        // source_tree checked every block of the snapshot has one.
        Space::Source => vol.state.origin(t).unwrap_or(0),
    };
    let ((), w, _) = write_records(
        w,
        level,
        bs,
        crate::stream::records::Sums::Skip,
        |send, pool| {
            let mut batch = RecordBatch::new(send, pool, bs);
            let mut buf = Vec::new();
            for inode in top.tree.inodes.iter().filter(|i| i.kind == Kind::File) {
                for x in &inode.extents {
                    let mut k = 0;
                    while k < x.count {
                        if !image.get(x.vbn + k) {
                            k += 1;
                            continue;
                        }
                        let room = batch.room()?;
                        let mut n = 1;
                        let first = name(x.vbn + k);
                        while n < room.min(READ_BLOCKS)
                            && k + n < x.count
                            && image.get(x.vbn + k + n)
                            && name(x.vbn + k + n) == first + n
                        {
                            n += 1;
                        }
                        read_run(vol, top, inode, x, k, n, &mut buf)?;
                        let offset = (x.block + k) * bs;
                        let len = (n * bs).min(inode.size - offset) as usize;
                        batch
                            .push(Segment {
                                ino: inode.ino,
                                vbn: first,
                                offset,
                                len: len as u32,
                            })
                            .copy_from_slice(&buf[..len]);
                        k += n;
                    }
                }
            }
            batch.flush()
        },
    )?;
    Ok(w)
}
