//! Choosing the image of a dump: which VBN each block of the new snapshot
//! gets, which blocks the stream carries (`top - base`) and which VBNs the
//! base held that the new snapshot frees (`base - top`).
//!
//! Change detection never re-reads what did not change. A regular file is
//! matched with its previous version, first by source identity (device and
//! inode: follows renames and hard links) and then by path (follows a
//! source moved to another disk). A match whose size, mtime, ctime, device
//! and inode are unchanged keeps its block pointers and is not opened.
//! Any other match is read once: each block is hashed and compared with the
//! checksum in the previous pointer at the same offset; equal blocks keep
//! their VBN, others get a new one (write-anywhere). The blocks of a read
//! file that the stream must carry are spooled to a temporary file while
//! they are read, because the metadata — which names every VBN — is written
//! before the data. New files are not read here; the data phase reads them.
//!
//! New VBNs are the lowest ones not in use by the new snapshot, so freed
//! VBNs are reused and the VBN space stays bounded under churn. A reused
//! VBN's bit is cleared in every older plane (they are shadows: their data
//! is not kept), so an older snapshot used as a base counts the block as
//! changed — conservative, never missing a change.

use crate::fsx::{self, dirstack::DirStack};
use crate::planes::{MarkMaps, Plane};
use crate::report::Report;
use crate::scan::{open_file, stat_unchanged, PrevIndex};
use crate::tree::{Extent, Inode, Kind, Sums, Tree};
use anyhow::{Context, Result};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A run of a file's blocks spooled while it was read for comparison.
#[derive(Clone, Copy, Debug)]
pub struct SpoolRun {
    /// First file block.
    pub block: u64,
    /// Number of blocks.
    pub count: u64,
    /// Offset in the spool file.
    pub offset: u64,
}

/// Blocks read during planning that the data phase must send, kept in an
/// unlinked temporary file so memory stays bounded by metadata.
#[derive(Default)]
pub struct Spool {
    file: Option<File>,
    len: u64,
    runs: HashMap<u64, Vec<SpoolRun>>,
}

impl Spool {
    fn append(&mut self, dir: &Path, ino: u64, block: u64, data: &[u8], bs: u64) -> Result<()> {
        if self.file.is_none() {
            self.file = Some(
                tempfile::tempfile_in(dir)
                    .with_context(|| format!("cannot create a spool file in {}", dir.display()))?,
            );
        }
        let f = self.file.as_ref().unwrap();
        f.write_all_at(data, self.len).with_context(|| {
            format!(
                "cannot write the spool file in {} (is it full?)",
                dir.display()
            )
        })?;
        let count = (data.len() as u64).div_ceil(bs);
        let runs = self.runs.entry(ino).or_default();
        match runs.last_mut() {
            Some(r) if r.block + r.count == block && r.offset + r.count * bs == self.len => {
                r.count += count
            }
            _ => runs.push(SpoolRun {
                block,
                count,
                offset: self.len,
            }),
        }
        self.len += count * bs;
        Ok(())
    }
    /// The spooled runs of inode `ino`, if it was read during planning.
    pub fn runs(&self, ino: u64) -> Option<&[SpoolRun]> {
        self.runs.get(&ino).map(|v| &v[..])
    }
    /// Reads `buf.len()` bytes of spooled block data at `offset`.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file
            .as_ref()
            .expect("spool has data")
            .read_exact_at(buf, offset)
    }
}

/// The outcome of planning.
pub struct Plan {
    /// VBNs of the new snapshot.
    pub active: Plane,
    /// VBNs the stream carries.
    pub image: Plane,
    /// VBNs of the base that the new snapshot does not use.
    pub dealloc: Plane,
    /// Blocks read during planning.
    pub spool: Spool,
    /// Allocations and frees of this dump (mark-on-allocate and
    /// mark-on-deallocate since the last snapshot).
    pub marks: MarkMaps,
    /// Inodes that changed while read; the catalog must not trust them.
    pub unstable: HashSet<u64>,
    /// Files whose pointers were kept without reading them.
    pub files_unchanged: u64,
    /// Files read and compared block by block.
    pub files_compared: u64,
}

/// What planning needs from the catalog.
pub struct PlanInput<'a> {
    /// The newest snapshot's metadata with block checksums.
    pub prev: Option<&'a Tree>,
    /// Where `prev`'s checksums left in the catalog's pack are read from
    /// (only those of files that changed are).
    pub sums: &'a crate::catalog::pack::SumsReader,
    /// Index of the base snapshot in `planes`; `None` for a full image.
    pub base: Option<usize>,
    /// Planes of the recorded snapshots; reused VBNs are cleared in them.
    pub planes: &'a mut [Plane],
    /// The VBNs in use by `prev`.
    pub prev_active: &'a Plane,
    /// Block size.
    pub block_size: u64,
    /// Where to put the spool file.
    pub spool_dir: &'a Path,
    /// For a full image: keep the VBNs of unchanged blocks (as an increment
    /// would) instead of numbering everything afresh, so the other
    /// snapshots' planes stay valid bases (replication to several
    /// destinations). The image still carries every block.
    pub keep_vbns: bool,
    /// The page ranges the change tracker saw written since `prev`: a
    /// changed file whose previous version is the same inode reads only
    /// those blocks (and blocks that are new to it).
    pub ranges: Option<&'a Ranges<'a>>,
}

/// The tracker's page ranges, as planning uses them.
pub struct Ranges<'a> {
    /// (first page, pages) by source inode number.
    pub by_ino: &'a HashMap<u64, Vec<(u64, u64)>>,
    /// log2 of the page size.
    pub page_shift: u32,
    /// Whether the ranges hold every data change; if not, a file fanotify
    /// called modified is read whole.
    pub complete: bool,
    /// Inodes fanotify called modified.
    pub modified: &'a HashSet<u64>,
}

/// Assigns VBNs to every block of `tree` and selects the image.
pub fn plan(tree: &mut Tree, input: PlanInput, root: OwnedFd, report: &Report) -> Result<Plan> {
    let bs = input.block_size;
    let mut spool = Spool::default();
    let mut unstable = HashSet::new();
    let mut claimed = Plane::new();
    let (mut files_unchanged, mut files_compared) = (0, 0);
    let base_plane = match input.base {
        Some(b) => Some(input.planes[b].clone()),
        None if input.keep_vbns => Some(Plane::new()),
        None => None,
    };
    if let (Some(prev), Some(base_plane)) = (input.prev, base_plane.as_ref()) {
        let index = PrevIndex::new(prev);
        let mut dirs = DirStack::new(root);
        for idx in 0..tree.inodes.len() {
            let f = &tree.inodes[idx];
            if f.kind != Kind::File {
                continue;
            }
            let Some(g) = index.find_with((f.src.dev, f.src.ino), || tree.path(f.ino)) else {
                continue;
            };
            if unchanged(f, g)
                && g.extents
                    .iter()
                    .all(|x| !any_claimed(&claimed, x.vbn, x.count))
            {
                for x in &g.extents {
                    claimed.set_run(x.vbn, x.count);
                }
                let f = &mut tree.inodes[idx];
                f.extents = g.extents.clone();
                f.sums = g.sums.clone();
                files_unchanged += 1;
                continue;
            }
            let d = tree.primary(f.ino);
            let opened = dirs
                .enter_in(tree, d.parent)
                .and_then(|dir| open_file(dir, &d.name))
                .ok()
                .filter(|fd| {
                    fsx::fstat(fd.as_fd())
                        .map(|st| (st.st_dev, st.st_ino) == (f.src.dev, f.src.ino))
                        .unwrap_or(false)
                });
            let Some(fd) = opened else {
                // Vanished since the scan: the data phase reports it.
                continue;
            };
            // The previous version's checksums are of what was read after
            // the swap that began this epoch (even for a file that changed
            // while read, or too recently to trust its times): every later
            // write is in the tracker's ranges.
            let ranged = input
                .ranges
                .filter(|r| g.src == f.src && (r.complete || !r.modified.contains(&f.src.ino)));
            let marked = ranged.map(|r| {
                marked_blocks(
                    r.by_ino.get(&f.src.ino).map(|v| &v[..]).unwrap_or(&[]),
                    r.page_shift,
                    bs,
                )
            });
            let gsums = input.sums.get(&g.sums)?;
            let Compared {
                extents,
                sums,
                stable,
                read_blocks: read,
            } = compare(
                &fd,
                f,
                g,
                &gsums,
                marked.as_deref(),
                base_plane,
                &mut claimed,
                &mut spool,
                input.spool_dir,
                bs,
                report,
                &tree.path(f.ino),
            )?;
            if !stable {
                unstable.insert(f.ino);
            }
            if marked.is_some() && read == 0 {
                files_unchanged += 1;
            } else {
                files_compared += 1;
            }
            let f = &mut tree.inodes[idx];
            f.extents = extents;
            // Checksums that came out the same (a racily clean file, one
            // whose marked pages were written back unchanged) keep their
            // record in the catalog's pack: the commit appends nothing.
            f.sums = if sums[..] == gsums[..] {
                g.sums.clone()
            } else {
                Sums::Here(sums)
            };
        }
    }
    // Everything `prev` used that nothing kept is freed.
    let mut marks = MarkMaps::default();
    for (v, n) in input.prev_active.and_not(&claimed).runs() {
        for x in v..v + n {
            marks.free(x);
        }
    }
    // Allocate VBNs for every block still without one, lowest free first.
    let mut alloc = Allocator {
        used: claimed,
        cursor: 1,
    };
    let mut fresh = Plane::new();
    for inode in tree.inodes.iter_mut() {
        if inode.kind != Kind::File {
            continue;
        }
        let mut out: Vec<Extent> = Vec::with_capacity(inode.extents.len());
        for x in &inode.extents {
            if x.vbn != 0 {
                push_extent(&mut out, *x);
                continue;
            }
            let mut done = 0;
            while done < x.count {
                let (v, n) = alloc.take(x.count - done);
                fresh.set_run(v, n);
                for a in v..v + n {
                    marks.allocate(a);
                }
                push_extent(
                    &mut out,
                    Extent {
                        block: x.block + done,
                        vbn: v,
                        count: n,
                    },
                );
                done += n;
            }
        }
        inode.extents = out;
        if inode.sums.len() as u64 != inode.block_count() {
            inode.sums = Sums::Here(vec![[0; 16]; inode.block_count() as usize]);
        }
    }
    for p in input.planes.iter_mut() {
        *p = p.and_not(&fresh);
    }
    let active = alloc.used;
    let (image, dealloc) = match input.base {
        Some(b) => (
            active.and_not(&input.planes[b]),
            input.planes[b].and_not(&active),
        ),
        None => (active.clone(), Plane::new()),
    };
    Ok(Plan {
        active,
        image,
        dealloc,
        spool,
        marks,
        unstable,
        files_unchanged,
        files_compared,
    })
}

/// The stat fields that say a file was not touched since the last dump. A
/// zero ctime marks a file that changed while it was last read.
fn unchanged(f: &Inode, g: &Inode) -> bool {
    stat_unchanged(f, g) && coverage(&f.extents) == coverage(&g.extents)
}

/// The file blocks holding data, as maximal runs (VBNs ignored): a file
/// whose blocks were partly rewritten has split extents but the same data
/// regions as the scan reports them.
fn coverage(extents: &[Extent]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for x in extents {
        match out.last_mut() {
            Some(l) if l.0 + l.1 == x.block => l.1 += x.count,
            _ => out.push((x.block, x.count)),
        }
    }
    out
}

fn any_claimed(p: &Plane, v: u64, n: u64) -> bool {
    (v..v + n).any(|x| p.get(x))
}

fn push_extent(out: &mut Vec<Extent>, x: Extent) {
    match out.last_mut() {
        Some(l)
            if l.block + l.count == x.block
                && l.vbn != 0
                && x.vbn != 0
                && l.vbn + l.count == x.vbn =>
        {
            l.count += x.count
        }
        Some(l) if l.block + l.count == x.block && l.vbn == 0 && x.vbn == 0 => l.count += x.count,
        _ => out.push(x),
    }
}

/// The tracker's page ranges as sorted, merged block runs.
fn marked_blocks(pages: &[(u64, u64)], shift: u32, bs: u64) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = pages
        .iter()
        .map(|&(first, n)| {
            let start = first.saturating_mul(1 << shift);
            let end = first.saturating_add(n).saturating_mul(1 << shift);
            (start / bs, end.div_ceil(bs))
        })
        .collect();
    runs.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in runs {
        match out.last_mut() {
            Some(l) if s <= l.1 => l.1 = l.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Reads a modified file once, keeping the VBN of every block whose
/// checksum matches the previous version's block at the same offset.
/// With `marked` (the tracker's blocks, as [start, end) runs), only marked
/// blocks, blocks new to the file, and blocks the stream must carry anyway
/// are read; every other block keeps its previous pointer and checksum.
/// Returns the new extents (VBN 0 = needs a new VBN), the checksums,
/// whether the file stayed still while read, and how many blocks were read.
#[allow(clippy::too_many_arguments)]
fn compare(
    fd: &OwnedFd,
    f: &Inode,
    g: &Inode,
    gsums: &[[u8; 16]],
    marked: Option<&[(u64, u64)]>,
    base: &Plane,
    claimed: &mut Plane,
    spool: &mut Spool,
    spool_dir: &Path,
    bs: u64,
    report: &Report,
    path: &[u8],
) -> Result<Compared> {
    // The previous version's pointers, looked up by ascending file block.
    let mut old = OldCursor::new(g);
    let mut extents = Vec::new();
    let mut sums = Vec::with_capacity(f.block_count() as usize);
    let mut short = false;
    let all: Vec<(u64, u64)> = f.extents.iter().map(|x| (x.block, x.count)).collect();
    // Runs kept without reading: (first block, vbn, count, index of the
    // first block's checksum in gsums), in block order.
    let mut unread: Vec<(u64, u64, u64, usize)> = Vec::new();
    let runs = match marked {
        None => all,
        Some(marked) => {
            // The block where the old and the new size meet changed
            // length or was cut.
            let edge = (f.size != g.size).then(|| f.size.min(g.size) / bs);
            let mut cursor = OldCursor::new(g);
            let mut mi = 0;
            let mut read: Vec<(u64, u64)> = Vec::new();
            for &(start, count) in &all {
                for b in start..start + count {
                    while mi < marked.len() && marked[mi].1 <= b {
                        mi += 1;
                    }
                    let is_marked = marked.get(mi).is_some_and(|r| r.0 <= b);
                    let prev = cursor.at(b);
                    let keep = prev.filter(|&(v, k)| {
                        !is_marked
                            && edge != Some(b)
                            && k < gsums.len()
                            && base.get(v)
                            && !claimed.get(v)
                    });
                    match keep {
                        None => match read.last_mut() {
                            Some(l) if l.0 + l.1 == b => l.1 += 1,
                            _ => read.push((b, 1)),
                        },
                        Some((v, k)) => match unread.last_mut() {
                            Some(l)
                                if l.0 + l.2 == b && l.1 + l.2 == v && l.3 + l.2 as usize == k =>
                            {
                                l.2 += 1
                            }
                            _ => unread.push((b, v, 1, k)),
                        },
                    }
                }
            }
            read
        }
    };
    let read_blocks: u64 = runs.iter().map(|r| r.1).sum();
    let mut ui = 0;
    let mut keep_unread =
        |upto: u64, extents: &mut Vec<Extent>, sums: &mut Vec<[u8; 16]>, claimed: &mut Plane| {
            while ui < unread.len() && unread[ui].0 < upto {
                let (b, v, n, k) = unread[ui];
                claimed.set_run(v, n);
                sums.extend_from_slice(&gsums[k..k + n as usize]);
                push_extent(
                    extents,
                    Extent {
                        block: b,
                        vbn: v,
                        count: n,
                    },
                );
                ui += 1;
            }
        };
    let name = crate::names::escape(path);
    super::readahead::for_each_chunk(fd.as_fd(), &runs, f.size, bs, &name, |c| {
        short |= c.short;
        let len = c.data.len();
        for i in 0..c.count {
            let blk = c.block + i;
            keep_unread(blk, &mut extents, &mut sums, claimed);
            let s = ((i * bs) as usize).min(len);
            let e = (s + bs as usize).min(len);
            let data = &c.data[s..e];
            let h = c.sums[i as usize];
            sums.push(h);
            let keep = old
                .at(blk)
                .filter(|&(v, k)| gsums.get(k).copied().unwrap_or_default() == h && !claimed.get(v))
                .map(|(v, _)| v);
            push_extent(
                &mut extents,
                Extent {
                    block: blk,
                    vbn: keep.unwrap_or(0),
                    count: 1,
                },
            );
            match keep {
                Some(v) => {
                    claimed.set(v);
                    if !base.get(v) {
                        spool.append(spool_dir, f.ino, blk, data, bs)?;
                    }
                }
                None => spool.append(spool_dir, f.ino, blk, data, bs)?,
            }
        }
        Ok(())
    })?;
    keep_unread(u64::MAX, &mut extents, &mut sums, claimed);
    // Mark the file as read even when nothing was spooled.
    spool.runs.entry(f.ino).or_default();
    let st = fsx::fstat(fd.as_fd())?;
    let (_, a) = fsx::attrs_of(&st);
    let stable = !short
        && st.st_size as u64 == f.size
        && a.mtime == f.attrs.mtime
        && a.ctime == f.attrs.ctime;
    if !stable {
        report.warn(
            path,
            "changed while being read; the stream holds a mix of old and new data, the next dump will send it again",
        );
    }
    Ok(Compared {
        extents,
        sums,
        stable,
        read_blocks,
    })
}

/// What comparing a file with its previous version found.
struct Compared {
    /// The new extents (VBN 0: needs a new VBN).
    extents: Vec<Extent>,
    /// Checksums of every block.
    sums: Vec<[u8; 16]>,
    /// Whether the file stayed still while read.
    stable: bool,
    /// Blocks read.
    read_blocks: u64,
}

/// The previous version's pointer at a file block, for blocks asked in
/// ascending order: (vbn, index of its checksum in `sums`).
struct OldCursor<'a> {
    g: &'a Inode,
    ext: usize,
    /// Index in `sums` of the first block of extent `ext`.
    base: usize,
}

impl<'a> OldCursor<'a> {
    fn new(g: &'a Inode) -> Self {
        OldCursor { g, ext: 0, base: 0 }
    }
    fn at(&mut self, b: u64) -> Option<(u64, usize)> {
        while let Some(x) = self.g.extents.get(self.ext) {
            if b < x.block + x.count {
                break;
            }
            self.base += x.count as usize;
            self.ext += 1;
        }
        let x = self.g.extents.get(self.ext)?;
        (b >= x.block).then(|| (x.vbn + (b - x.block), self.base + (b - x.block) as usize))
    }
}

/// Hands out the lowest VBNs not in use, in runs.
struct Allocator {
    used: Plane,
    cursor: u64,
}

impl Allocator {
    /// Up to `want` consecutive free VBNs: (first, count).
    fn take(&mut self, want: u64) -> (u64, u64) {
        let mut v = self.cursor.max(1);
        while self.used.get(v) {
            v += 1;
        }
        let mut n = 0;
        while n < want && !self.used.get(v + n) {
            n += 1;
        }
        self.used.set_run(v, n);
        self.cursor = v + n;
        (v, n)
    }
}
