//! The on-disk layout of a volume (formats/volume.md): two superblock
//! slots, a data region of blocks addressed by target VBN, and a metadata
//! blob stored in blocks of that same region.
//!
//! Everything here is pure encoding; the file operations and the commit
//! protocol live in `store.rs`.

use crate::planes::Plane;
use crate::stream::header::{dec_snap, enc_snap, SnapshotRef};
use crate::tree::{Time, Tree, TreeBuilder};
use crate::wire::{Dec, Enc};
use anyhow::{bail, Context, Result};

/// Magic at the start of each superblock slot.
pub const VOLUME_MAGIC: [u8; 8] = *b"SDVOLIMG";
/// Volume format version written by this build. Versions 1 (no origin
/// table) and 2 (no file flags) are still read; a volume's next commit
/// writes the current version.
pub const VOLUME_VERSION: u32 = 3;
/// Size of one superblock slot; slot A is at offset 0, slot B right after.
pub const SLOT_BYTES: u64 = 4096;
/// Byte offset of target VBN 1 (VBN 0 is never allocated).
pub const DATA_START: u64 = 2 * SLOT_BYTES;
/// Bytes of a superblock that are encoded (the rest of the slot is zero).
const SUPER_LEN: usize = 132;

/// The metadata blob's checksum as a superblock of `version` records it:
/// SHA-256 in version 1; in version 2 the XXH3-128 of the blob (as the
/// block checksums are) in bytes 0..16, zeros after — a damage check, and
/// several times cheaper on the tens of megabytes a large volume's
/// metadata takes, which every open and every commit checksums.
pub fn meta_checksum(version: u32, blob: &[u8]) -> [u8; 32] {
    if version < 2 {
        return crate::digest::sha256(blob);
    }
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&xxhash_rust::xxh3::xxh3_128(blob).to_le_bytes());
    out
}

/// Byte offset of target VBN `vbn` in the volume file.
pub fn block_offset(vbn: u64, bs: u64) -> u64 {
    DATA_START + (vbn - 1) * bs
}

/// One superblock: which generation it is and where its metadata lives.
/// The slot with the highest generation whose checksum holds is current.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Superblock {
    /// The format version read (1 or 2); what is written is always
    /// `VOLUME_VERSION`.
    pub version: u32,
    /// Block size of the data region.
    pub block_size: u32,
    /// Random id of the volume.
    pub uuid: [u8; 16],
    /// Commit counter; the newer valid slot wins.
    pub generation: u64,
    /// First VBN of the metadata blob's run.
    pub meta_vbn: u64,
    /// Blocks the metadata run occupies.
    pub meta_blocks: u64,
    /// Stored (compressed) length of the metadata blob.
    pub meta_len: u64,
    /// Length of the metadata body after decompression.
    pub meta_raw_len: u64,
    /// Checksum of the stored metadata blob (`meta_checksum`).
    pub meta_sha256: [u8; 32],
    /// Blocks in the data region (file length = DATA_START + blocks × bs).
    pub data_blocks: u64,
    /// Highest VBN the volume may use (0: no limit).
    pub max_blocks: u64,
    /// Bit 0: compact (allocate the lowest free VBN, never the source's).
    pub flags: u32,
}

/// Flag bit: the volume packs blocks instead of keeping source VBNs.
pub const FLAG_COMPACT: u32 = 1;

impl Superblock {
    /// The slot bytes (SUPER_LEN encoded bytes, checksum last, zero padded).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.fixed(&VOLUME_MAGIC);
        e.u32(VOLUME_VERSION);
        e.u32(self.block_size);
        e.fixed(&self.uuid);
        e.u64(self.generation);
        e.u64(self.meta_vbn);
        e.u64(self.meta_blocks);
        e.u64(self.meta_len);
        e.u64(self.meta_raw_len);
        e.fixed(&self.meta_sha256);
        e.u64(self.data_blocks);
        e.u64(self.max_blocks);
        e.u32(self.flags);
        let sum = xxhash_rust::xxh3::xxh3_64(&e.buf);
        e.u64(sum);
        debug_assert_eq!(e.buf.len(), SUPER_LEN);
        e.buf.resize(SLOT_BYTES as usize, 0);
        e.buf
    }

    /// Parses one slot; an error says why it is not a valid superblock.
    pub fn decode(slot: &[u8]) -> Result<Superblock> {
        if slot.len() < SUPER_LEN || slot[..8] != VOLUME_MAGIC {
            bail!("not a snapdump volume (bad magic)");
        }
        let sum = u64::from_le_bytes(slot[SUPER_LEN - 8..SUPER_LEN].try_into().unwrap());
        if xxhash_rust::xxh3::xxh3_64(&slot[..SUPER_LEN - 8]) != sum {
            bail!("superblock checksum mismatch");
        }
        let mut d = Dec::new(&slot[8..SUPER_LEN - 8], "volume superblock");
        let version = d.u32()?;
        if !(1..=VOLUME_VERSION).contains(&version) {
            bail!("volume format version {version} is not supported by this snapdump (it reads 1 to {VOLUME_VERSION}); use a newer snapdump");
        }
        let sb = Superblock {
            version,
            block_size: d.u32()?,
            uuid: d.fixed(16)?.try_into().unwrap(),
            generation: d.u64()?,
            meta_vbn: d.u64()?,
            meta_blocks: d.u64()?,
            meta_len: d.u64()?,
            meta_raw_len: d.u64()?,
            meta_sha256: d.fixed(32)?.try_into().unwrap(),
            data_blocks: d.u64()?,
            max_blocks: d.u64()?,
            flags: d.u32()?,
        };
        d.finish()?;
        crate::tree::check_block_size(sb.block_size)?;
        let bs = sb.block_size as u64;
        let end = sb.meta_vbn.checked_add(sb.meta_blocks);
        // Sizes a file system could hold: offsets computed from them never
        // overflow.
        let fits = |blocks: u64| blocks.checked_mul(bs).is_some_and(|b| b < 1 << 60);
        if sb.meta_vbn == 0
            || !fits(sb.data_blocks)
            || !fits(sb.max_blocks)
            || end.is_none_or(|e| e - 1 > sb.data_blocks)
            || sb.meta_len > sb.meta_blocks.saturating_mul(bs)
            || sb.meta_raw_len > 1 << 40
        {
            bail!("superblock fields are inconsistent");
        }
        Ok(sb)
    }
}

/// A run of the relocation map: source VBNs `src..src+count` live at
/// target VBNs `tgt..tgt+count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapRun {
    /// First source VBN.
    pub src: u64,
    /// First target VBN.
    pub tgt: u64,
    /// Number of blocks.
    pub count: u64,
}

/// A source whose snapshots the volume holds: the VBN space its streams
/// speak, and where each of its blocks landed here.
#[derive(Clone, Debug)]
pub struct SourceEntry {
    /// The streams' `source_uuid`: names the source VBN space.
    pub uuid: [u8; 16],
    /// The source path the streams gave (for people).
    pub path: Vec<u8>,
    /// The snapshot the map describes: an increment must be based on it.
    pub latest: SnapshotRef,
    /// Source VBN to target VBN for every block of `latest`, sorted by
    /// source VBN. Kept even if `latest` is deleted, so increments still
    /// apply; its targets are never reused while listed.
    pub map: Vec<MapRun>,
}

/// One snapshot the volume holds.
#[derive(Clone, Debug)]
pub struct VolSnapshot {
    /// Volume-local id (1, 2, ...), the `@N` of `PATH@N`.
    pub id: u64,
    /// The source entry it came from.
    pub source: [u8; 16],
    /// Its identity in the source (id, uuid, time, level), kept as received.
    pub snap: SnapshotRef,
    /// The snapshot the stream that brought it was based on.
    pub base: Option<SnapshotRef>,
    /// When the volume received it.
    pub received: Time,
    /// Shadow: its blocks may be reused (its bits are cleared on reuse).
    pub shadow: bool,
    /// Target VBNs it uses.
    pub plane: Plane,
    /// Its metadata, with block pointers in target VBNs.
    /// Shared: a commit clones the whole state, and a snapshot's metadata
    /// never changes once received.
    pub tree: std::sync::Arc<Tree>,
}

/// Everything a volume's metadata blob records.
#[derive(Clone, Debug)]
pub struct VolumeState {
    /// Id the next received snapshot gets.
    pub next_id: u64,
    /// Sources, in the order first received.
    pub sources: Vec<SourceEntry>,
    /// Snapshots, oldest first.
    pub snapshots: Vec<VolSnapshot>,
    /// XXH3-128 of each target block as stored (zero padded), index VBN-1,
    /// up to the highest data block; a block's content never changes while
    /// anything references it.
    pub sums: Vec<[u8; 16]>,
    /// The source VBN each target block holds (index VBN-1, 0: not
    /// recorded), in the VBN space of the source whose snapshots use it:
    /// what lets a replica send a snapshot in its source's own VBN space,
    /// so a cascade's next replica follows the original source.
    pub origins: Vec<u64>,
}

impl VolumeState {
    /// The source VBN target block `vbn` holds, if recorded.
    pub fn origin(&self, vbn: u64) -> Option<u64> {
        self.origins
            .get((vbn as usize).wrapping_sub(1))
            .copied()
            .filter(|&a| a != 0)
    }
}

fn enc_plane(e: &mut Enc, p: &Plane) {
    e.u64(p.words().len() as u64);
    for w in p.words() {
        e.u64(*w);
    }
}

/// A u64 count that must fit in what is left, `min_item` bytes per item.
fn count64(d: &mut Dec, min_item: u64) -> Result<usize> {
    let n = d.u64()?;
    if n.saturating_mul(min_item) > d.remaining() as u64 {
        bail!(
            "volume metadata: count {n} cannot fit in the {} bytes left",
            d.remaining()
        );
    }
    Ok(n as usize)
}

fn dec_plane(d: &mut Dec) -> Result<Plane> {
    let n = count64(d, 8)?;
    let mut words = Vec::with_capacity(n);
    for _ in 0..n {
        words.push(d.u64()?);
    }
    Ok(Plane::from_words(words))
}

fn enc_opt_snap(e: &mut Enc, s: &Option<SnapshotRef>) {
    match s {
        Some(s) => {
            e.u8(1);
            enc_snap(e, s);
        }
        None => e.u8(0),
    }
}

fn dec_opt_snap(d: &mut Dec) -> Result<Option<SnapshotRef>> {
    Ok(match d.u8()? {
        0 => None,
        1 => Some(dec_snap(d)?),
        v => bail!("bad snapshot flag {v}"),
    })
}

/// Serialises the metadata body (before compression).
pub fn encode_state(s: &VolumeState) -> Vec<u8> {
    let mut e = Enc::new();
    e.u64(s.next_id);
    e.u32(s.sources.len() as u32);
    for src in &s.sources {
        e.fixed(&src.uuid);
        e.bytes(&src.path);
        enc_snap(&mut e, &src.latest);
        e.u64(src.map.len() as u64);
        for m in &src.map {
            e.u64(m.src);
            e.u64(m.tgt);
            e.u64(m.count);
        }
    }
    e.u32(s.snapshots.len() as u32);
    for v in &s.snapshots {
        e.u64(v.id);
        e.fixed(&v.source);
        enc_snap(&mut e, &v.snap);
        enc_opt_snap(&mut e, &v.base);
        v.received.enc(&mut e);
        e.u8(v.shadow as u8);
        enc_plane(&mut e, &v.plane);
        e.u64(v.tree.dirents.len() as u64);
        for i in 0..v.tree.dirents.len() {
            v.tree
                .encode_item(i, &mut e, crate::tree::ItemForm::CURRENT);
        }
    }
    e.u64(s.sums.len() as u64);
    for sum in &s.sums {
        e.fixed(sum);
    }
    // Stored as the difference from the block's own VBN, so the common
    // case (a block at its source VBN) is a run of zeros for zstd.
    e.u64(s.origins.len() as u64);
    for (i, a) in s.origins.iter().enumerate() {
        e.u64(a.wrapping_sub(i as u64 + 1));
    }
    e.buf
}

/// Parses a metadata body of format `version`; `bs` is the volume's block
/// size and `data_blocks` the data region's size, which bounds every VBN.
pub fn decode_state(body: &[u8], version: u32, bs: u32, data_blocks: u64) -> Result<VolumeState> {
    // File flags and project ids are in the items from version 3 on.
    let form = if version >= 3 {
        crate::tree::ItemForm::CURRENT
    } else {
        crate::tree::ItemForm::NO_FLAGS
    };
    let mut d = Dec::new(body, "volume metadata");
    let next_id = d.u64()?;
    let n = d.count(16)?;
    let mut sources = Vec::with_capacity(n);
    for _ in 0..n {
        let uuid = d.fixed(16)?.try_into().unwrap();
        let path = d.bytes(1 << 16)?.to_vec();
        let latest = dec_snap(&mut d)?;
        let m = count64(&mut d, 24)?;
        let mut map: Vec<MapRun> = Vec::with_capacity(m);
        for _ in 0..m {
            let r = MapRun {
                src: d.u64()?,
                tgt: d.u64()?,
                count: d.u64()?,
            };
            let ok = r.src > 0
                && r.tgt > 0
                && r.count > 0
                && r.src.checked_add(r.count).is_some()
                && r.tgt
                    .checked_add(r.count)
                    .is_some_and(|e| e - 1 <= data_blocks)
                && map.last().is_none_or(|p| p.src + p.count <= r.src);
            if !ok {
                bail!("relocation map run {r:?} is empty, unsorted or out of range");
            }
            map.push(r);
        }
        sources.push(SourceEntry {
            uuid,
            path,
            latest,
            map,
        });
    }
    let n = d.count(40)?;
    let mut snapshots = Vec::with_capacity(n);
    for _ in 0..n {
        let id = d.u64()?;
        let source = d.fixed(16)?.try_into().unwrap();
        let snap = dec_snap(&mut d)?;
        let base = dec_opt_snap(&mut d)?;
        let received = Time::dec(&mut d)?;
        let shadow = d.u8()? != 0;
        let plane = dec_plane(&mut d)?;
        if plane.high_water() > data_blocks + 1 {
            bail!("snapshot {id}: plane reaches past the data region");
        }
        let items = d.u64()?;
        let mut b = TreeBuilder::with_capacity(bs as u64, items);
        for _ in 0..items {
            b.decode_item(&mut d, form)
                .with_context(|| format!("snapshot {id} metadata"))?;
        }
        let tree = b
            .finish()
            .with_context(|| format!("snapshot {id} metadata"))?;
        for i in &tree.inodes {
            for x in &i.extents {
                if x.vbn
                    .checked_add(x.count)
                    .is_none_or(|e| e - 1 > data_blocks)
                {
                    bail!(
                        "snapshot {id}: inode {} points at VBNs {}..{} past the data region (1..{data_blocks})",
                        i.ino,
                        x.vbn,
                        x.vbn.saturating_add(x.count)
                    );
                }
            }
        }
        snapshots.push(VolSnapshot {
            id,
            source,
            snap,
            base,
            received,
            shadow,
            plane,
            tree: std::sync::Arc::new(tree),
        });
    }
    let n = count64(&mut d, 16)?;
    if n as u64 > data_blocks {
        bail!("checksum table holds {n} blocks, the data region {data_blocks}");
    }
    let mut sums = Vec::with_capacity(n);
    for _ in 0..n {
        sums.push(d.fixed(16)?.try_into().unwrap());
    }
    let mut origins = Vec::new();
    if version >= 2 {
        let n = count64(&mut d, 8)?;
        if n as u64 > data_blocks {
            bail!("origin table holds {n} blocks, the data region {data_blocks}");
        }
        origins.reserve(n);
        for i in 0..n {
            origins.push(d.u64()?.wrapping_add(i as u64 + 1));
        }
    }
    d.finish()?;
    Ok(VolumeState {
        next_id,
        sources,
        snapshots,
        sums,
        origins,
    })
}
