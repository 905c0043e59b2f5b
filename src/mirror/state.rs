//! The mirror's state file (formats/mirror.md): what the mirror follows
//! (its base), the newest snapshot it holds, and where each block that
//! differs from the base lives in the blocks file.

use crate::runs::RunSet;
use crate::stream::header::{dec_snap, enc_snap, SnapshotRef};
use crate::tree::{ItemForm, Tree, TreeBuilder};
use crate::wire::{Dec, Enc};
use anyhow::{bail, Result};

/// Magic at the start of the state file.
pub const MIRROR_MAGIC: [u8; 8] = *b"SDMIRROR";
/// State format version written and read.
pub const MIRROR_VERSION: u32 = 1;

/// A run of consecutive VBNs the mirror holds, in consecutive slots of
/// the blocks file, with each block's XXH3-128.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRun {
    /// First VBN.
    pub vbn: u64,
    /// First slot (block `k` of the run is in slot `slot + k`).
    pub slot: u64,
    /// XXH3-128 of each block (its `block_size` bytes, zero-padded past a
    /// file's end); the run's length is the number of sums.
    pub sums: Vec<[u8; 16]>,
}

impl HeldRun {
    /// Blocks in the run.
    pub fn count(&self) -> u64 {
        self.sums.len() as u64
    }
}

/// Everything the state file says.
#[derive(Clone, Debug)]
pub struct MirrorState {
    /// The source's catalog id (streams of other sources are refused).
    pub source_uuid: [u8; 16],
    /// The source path, for messages.
    pub source_path: Vec<u8>,
    /// Block size of the chain.
    pub block_size: u32,
    /// The host the base was dumped on.
    pub hostname: String,
    /// The base: a full image on another medium, never copied.
    pub base: SnapshotRef,
    /// The base stream's id.
    pub base_stream_id: [u8; 16],
    /// The medium the base was read from when the mirror was made.
    pub base_medium: String,
    /// The VBNs the base carries (all of its snapshot's).
    pub base_vbns: RunSet,
    /// The newest snapshot the mirror (with its base) holds.
    pub newest: SnapshotRef,
    /// The blocks that differ from the base, by VBN, ascending.
    pub held: Vec<HeldRun>,
    /// Slots of the blocks file no run uses (holes).
    pub free: RunSet,
    /// Slots the blocks file has room for (its length in blocks).
    pub slots: u64,
    /// The newest snapshot's metadata.
    pub tree: Tree,
}

impl MirrorState {
    /// Blocks held.
    pub fn held_blocks(&self) -> u64 {
        self.held.iter().map(|r| r.count()).sum()
    }

    /// The held VBNs as a set.
    pub fn held_vbns(&self) -> RunSet {
        RunSet::from_runs(self.held.iter().map(|r| (r.vbn, r.count())))
    }

    /// The slot and checksum of VBN `v`, if the mirror holds it.
    pub fn find(&self, v: u64) -> Option<(u64, [u8; 16])> {
        let k = self.held.partition_point(|r| r.vbn + r.count() <= v);
        let r = self.held.get(k)?;
        (r.vbn <= v).then(|| (r.slot + (v - r.vbn), r.sums[(v - r.vbn) as usize]))
    }
}

fn enc_runs(e: &mut Enc, s: &RunSet) {
    e.u32(s.runs().len() as u32);
    for &(a, n) in s.runs() {
        e.u64(a);
        e.u64(n);
    }
}

/// Runs of VBNs (`min` 1) or of slots (`min` 0).
fn dec_runs(d: &mut Dec, min: u64) -> Result<RunSet> {
    let n = d.count(16)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, c) = (d.u64()?, d.u64()?);
        if c == 0 || a < min || a.checked_add(c).is_none() {
            bail!("invalid run {a}+{c}");
        }
        v.push((a, c));
    }
    Ok(RunSet::from_runs(v))
}

/// Encodes the state file: magic, version, the body's lengths, the body
/// as one zstd frame, and the SHA-256 of everything before it.
pub fn encode(s: &MirrorState) -> Vec<u8> {
    let mut e = Enc::new();
    e.fixed(&s.source_uuid);
    e.bytes(&s.source_path);
    e.u32(s.block_size);
    e.bytes(s.hostname.as_bytes());
    enc_snap(&mut e, &s.base);
    e.fixed(&s.base_stream_id);
    e.bytes(s.base_medium.as_bytes());
    enc_runs(&mut e, &s.base_vbns);
    enc_snap(&mut e, &s.newest);
    e.u64(s.slots);
    enc_runs(&mut e, &s.free);
    e.u32(s.held.len() as u32);
    for r in &s.held {
        e.u64(r.vbn);
        e.u64(r.slot);
        e.u64(r.count());
        for sum in &r.sums {
            e.fixed(sum);
        }
    }
    e.u64(s.tree.dirents.len() as u64);
    for i in 0..s.tree.dirents.len() {
        s.tree.encode_item(i, &mut e, ItemForm::CURRENT);
    }
    crate::sealed::seal(&MIRROR_MAGIC, MIRROR_VERSION, &e.buf)
}

/// Parses and checks a state file.
pub fn decode(bytes: &[u8]) -> Result<MirrorState> {
    let (version, raw) = crate::sealed::open(
        bytes,
        &MIRROR_MAGIC,
        "mirror state",
        "; restore the mirror from the base and its increments (mirror create, then add)",
    )?;
    if version != MIRROR_VERSION {
        bail!("mirror format version {version} is not supported by this snapdump (it reads {MIRROR_VERSION}); use a newer snapdump");
    }
    let mut d = Dec::new(&raw, "mirror state");
    let source_uuid = d.fixed(16)?.try_into().unwrap();
    let source_path = d.bytes(1 << 16)?.to_vec();
    let block_size = d.u32()?;
    crate::tree::check_block_size(block_size)?;
    let hostname = String::from_utf8_lossy(d.bytes(1024)?).into_owned();
    let base = dec_snap(&mut d)?;
    let base_stream_id = d.fixed(16)?.try_into().unwrap();
    let base_medium = String::from_utf8_lossy(d.bytes(1 << 16)?).into_owned();
    let base_vbns = dec_runs(&mut d, 1)?;
    let newest = dec_snap(&mut d)?;
    let slots = d.u64()?;
    let free = dec_runs(&mut d, 0)?;
    if free.runs().last().is_some_and(|&(a, n)| a + n > slots) {
        bail!("mirror state: free slots lie past the blocks file");
    }
    let n = d.count(24)?;
    let mut held: Vec<HeldRun> = Vec::with_capacity(n);
    for _ in 0..n {
        let vbn = d.u64()?;
        let slot = d.u64()?;
        let count = d.u64()?;
        if count == 0 || vbn == 0 || vbn.checked_add(count).is_none() {
            bail!("mirror state: invalid held run at VBN {vbn}");
        }
        if slot.checked_add(count).is_none_or(|e| e > slots) {
            bail!("mirror state: held run at VBN {vbn} lies past the blocks file");
        }
        if held.last().is_some_and(|p| p.vbn + p.count() > vbn) {
            bail!("mirror state: held runs overlap or are out of order at VBN {vbn}");
        }
        if count as usize > d.remaining() / 16 {
            bail!("mirror state: held run at VBN {vbn} is cut short");
        }
        let mut sums = Vec::with_capacity(count as usize);
        for _ in 0..count {
            sums.push(d.fixed(16)?.try_into().unwrap());
        }
        held.push(HeldRun { vbn, slot, sums });
    }
    let items = d.u64()?;
    let mut b = TreeBuilder::with_capacity(block_size as u64, items);
    for _ in 0..items {
        b.decode_item(&mut d, ItemForm::CURRENT)?;
    }
    let tree = b.finish()?;
    d.finish()?;
    Ok(MirrorState {
        source_uuid,
        source_path,
        block_size,
        hostname,
        base,
        base_stream_id,
        base_medium,
        base_vbns,
        newest,
        held,
        free,
        slots,
        tree,
    })
}
