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
        let mut k = 0;
        while k < count {
            let v = vbn + k;
            let (ino, block, left) = self
                .find(v)
                .ok_or_else(|| anyhow!("VBN {v} is carried but the snapshot does not use it"))?;
            let size = top.inode(ino).size;
            let room = batch.room()?;
            let n = (count - k).min(left).min(room);
            let offset = block * bs;
            let len = (n * bs).min(size.saturating_sub(offset));
            if len == 0 {
                bail!(
                    "VBN {v} lies past the end of {} in the snapshot",
                    escape(&top.path(ino))
                );
            }
            let area = batch.push(Segment {
                ino,
                vbn: v,
                offset,
                len: len as u32,
            });
            let from = (k * bs) as usize;
            let avail = bytes.len().saturating_sub(from).min(len as usize);
            area[..avail].copy_from_slice(&bytes[from..from + avail]);
            k += n;
        }
        Ok(count)
    }
}
