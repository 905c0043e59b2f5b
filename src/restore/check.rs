//! Consistency checks shared by restore and verify: metadata items decoded
//! from records, and data segments matched against the metadata's block
//! pointers so that every promised block arrives exactly once, at the VBN
//! and file offset the metadata gives it.

use crate::planes::Plane;
use crate::stream::payload::{End, Segment};
use crate::tree::{Kind, Tree, TreeBuilder};
use crate::wire::Dec;
use anyhow::{bail, Result};

/// Decodes one metadata record payload into the builder.
pub fn decode_meta(builder: &mut TreeBuilder, raw: &[u8]) -> Result<u64> {
    let mut d = Dec::new(raw, "metadata record");
    let n = d.count(1)?;
    for _ in 0..n {
        builder.decode_item(&mut d, false)?;
    }
    d.finish()?;
    Ok(n as u64)
}

/// Tracks the data blocks seen so far.
#[derive(Default)]
pub struct DataCheck {
    seen: Plane,
    /// Blocks seen.
    pub blocks: u64,
    /// Bytes seen.
    pub bytes: u64,
}

impl DataCheck {
    /// Checks one segment against the tree.
    pub fn segment(&mut self, tree: &Tree, s: &Segment, bs: u64) -> Result<()> {
        if s.ino == 0 || s.ino > tree.inodes.len() as u64 {
            bail!("data segment for unknown inode {}", s.ino);
        }
        let inode = tree.inode(s.ino);
        if inode.kind != Kind::File || s.offset % bs != 0 {
            bail!(
                "data segment for inode {} is not block-aligned file data",
                s.ino
            );
        }
        let blk = s.offset / bs;
        let n = (s.len as u64).div_ceil(bs);
        let i = inode.extents.partition_point(|x| x.block + x.count <= blk);
        let Some(x) = inode
            .extents
            .get(i)
            .filter(|x| x.block <= blk && blk + n <= x.block + x.count)
        else {
            bail!(
                "data segment at byte {} of inode {} is outside its data regions",
                s.offset,
                s.ino
            );
        };
        let want_len = ((blk + n) * bs).min(inode.size) - s.offset;
        if s.vbn != x.vbn + (blk - x.block) || s.len as u64 != want_len {
            bail!(
                "data segment at byte {} of inode {} does not match its block pointers",
                s.offset,
                s.ino
            );
        }
        for v in s.vbn..s.vbn + n {
            if self.seen.get(v) {
                bail!("VBN {v} appears twice in the stream");
            }
            self.seen.set(v);
        }
        self.blocks += n;
        self.bytes += s.len as u64;
        Ok(())
    }

    /// Checks that the metadata's blocks all arrived and the end counts agree.
    pub fn finish(&self, tree: &Tree, entries: u64, header_entries: u64, end: &End) -> Result<()> {
        let promised = tree.block_count();
        if end.entries != entries
            || header_entries != entries
            || end.inodes != tree.inodes.len() as u64
        {
            bail!(
                "end record counts {} entries and {} inodes, the stream held {} and {}",
                end.entries,
                end.inodes,
                entries,
                tree.inodes.len()
            );
        }
        if self.blocks != promised || end.data_blocks != self.blocks || end.data_bytes != self.bytes
        {
            bail!(
                "metadata promises {promised} data blocks, the stream held {} ({} bytes), the end record counts {}",
                self.blocks,
                self.bytes,
                end.data_blocks
            );
        }
        Ok(())
    }
}
