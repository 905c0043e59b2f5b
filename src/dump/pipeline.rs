//! The data phase of a tree dump: read the image's blocks of every file in
//! metadata order (or from the spool of blocks read during planning) into
//! records of the shared record stage ([`crate::stream::records`]), and note
//! the files that changed while read.

use super::plan::Spool;
use crate::fsx::{self, dirstack::DirStack};
use crate::planes::Plane;
use crate::progress::Progress;
use crate::report::Report;
use crate::scan::open_file;
use crate::stream::payload::Segment;
use crate::stream::records::{write_records, RecordBatch, RecordSink};
use crate::stream::writer::StreamWriter;
use crate::tree::{Kind, Tree};
use anyhow::Result;
use crossbeam_channel::Receiver;
use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};

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
    let (unstable, writer, sums) = write_records(
        writer,
        level,
        bs,
        crate::stream::records::Sums::Keep,
        |send, pool| read_blocks(&src, root, send, pool, report, progress),
    )?;
    Ok(DataResult {
        writer,
        sums,
        unstable,
    })
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
    let mut batch = RecordBatch::new(send, pool, bs);

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
                let mut n = batch.room()?.min(end - blk);
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
                let area = batch.push(Segment {
                    ino,
                    vbn: vbn + (blk - first),
                    offset: off,
                    len: len as u32,
                });
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
    batch.flush()?;
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
