//! Placing blocks known by VBN into a snapshot's files: the producers
//! that build a stream from other streams' blocks (coalescing, a mirror's
//! reintegration) find, for each VBN, the file and offset the snapshot
//! gives it, and cut segments where files or extents end.

use super::payload::Segment;
use super::records::RecordBatch;
use crate::names::escape;
use crate::tree::Tree;
use anyhow::{anyhow, bail, Result};

/// Where each VBN of a snapshot goes: `(vbn, count, ino, block)` runs of
/// its extents, sorted by VBN (no two extents share a VBN).
pub struct Placer(Vec<(u64, u64, u64, u64)>);

impl Placer {
    /// The index of `t`'s extents.
    pub fn new(t: &Tree) -> Placer {
        let mut v: Vec<_> = t
            .inodes
            .iter()
            .flat_map(|i| i.extents.iter().map(|x| (x.vbn, x.count, i.ino, x.block)))
            .collect();
        v.sort_unstable();
        Placer(v)
    }

    /// The (ino, file block, blocks left in that extent) of `vbn`.
    pub fn find(&self, vbn: u64) -> Option<(u64, u64, u64)> {
        let k = self.0.partition_point(|e| e.0 + e.1 <= vbn);
        let &(v, n, ino, block) = self.0.get(k)?;
        (v <= vbn).then(|| (ino, block + (vbn - v), n - (vbn - v)))
    }

    /// The segments of `top`'s files that blocks `vbn..vbn+count` become,
    /// cut where files or extents end, each cut at its file's size.
    pub fn place(&self, vbn: u64, count: u64, top: &Tree, bs: u64) -> Result<Vec<Segment>> {
        let mut out = Vec::new();
        let mut k = 0;
        while k < count {
            let v = vbn + k;
            let (ino, block, left) = self
                .find(v)
                .ok_or_else(|| anyhow!("VBN {v} is carried but the snapshot does not use it"))?;
            let size = top.inode(ino).size;
            let n = (count - k).min(left);
            let offset = block * bs;
            let len = (n * bs).min(size.saturating_sub(offset));
            if len <= (n - 1) * bs {
                bail!(
                    "VBN {} lies past the end of {} in the snapshot",
                    v + len.div_ceil(bs),
                    escape(&top.path(ino))
                );
            }
            out.push(Segment {
                ino,
                vbn: v,
                offset,
                len: len as u32,
            });
            k += n;
        }
        Ok(out)
    }

    /// Puts blocks `vbn..vbn+count` (their bytes from `bytes`, which may
    /// end early, at a file's end in the stream they came from: the rest
    /// is zeros) into `batch` as segments of `top`'s files, cut at the
    /// file's size. Returns the blocks put.
    pub fn put(
        &self,
        vbn: u64,
        count: u64,
        bytes: &[u8],
        top: &Tree,
        bs: u64,
        batch: &mut RecordBatch,
    ) -> Result<u64> {
        let mut from = 0usize;
        for seg in self.place(vbn, count, top, bs)? {
            let mut done = 0u64;
            while done < seg.len as u64 {
                let room = batch.room()? * bs;
                let len = (seg.len as u64 - done).min(room);
                let area = batch.push(Segment {
                    vbn: seg.vbn + done / bs,
                    offset: seg.offset + done,
                    len: len as u32,
                    ..seg
                });
                let avail = bytes.len().saturating_sub(from).min(len as usize);
                area[..avail].copy_from_slice(&bytes[from..from + avail]);
                from += len.div_ceil(bs) as usize * bs as usize;
                done += len;
            }
        }
        Ok(count)
    }
}
