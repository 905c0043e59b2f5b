//! The incremental mirror (seed 004): the base image stays on slow media
//! (a tape, a virtual tape, a file) and is never copied; a directory on
//! fast media holds only the blocks that differ from it. Each increment
//! added overwrites the blocks it carries and drops the ones it frees, so
//! the mirror stays about as large as the real difference from the base;
//! the newest snapshot is the base plus the mirror ("reintegration", in
//! `restore::reintegrate`).
//!
//! A mirror is a directory: `state` (formats/mirror.md), `blocks` (one
//! block per slot) and `lock`. An add writes new blocks only into slots the
//! committed state leaves free, syncs them, then replaces `state`
//! atomically: a kill at any moment leaves the old mirror or the new one.
//! Freed slots become holes once the new state is committed.

pub mod state;

use crate::fsx;
use crate::lock::{Lock, Wait};
use crate::media::Input;
use crate::runs::{Disjoint, RunSet};
use crate::stream::check::check_segment;
use crate::stream::front::{read_front, tree_vbns};
use crate::stream::header::SnapshotRef;
use crate::stream::payload::decode_data;
use crate::stream::reader::{Digest, StreamReader};
use crate::stream::record::RecordKind;
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use state::{HeldRun, MirrorState};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// An open mirror, locked against other writers.
pub struct Mirror {
    /// Its directory.
    pub dir: PathBuf,
    /// What its state file says.
    pub state: MirrorState,
    blocks: std::fs::File,
    _lock: Lock,
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("state")
}

impl Mirror {
    /// Opens the mirror at `dir`, waiting for (or, with `Wait::No`,
    /// refusing) another run that holds it.
    pub fn open(dir: &Path, wait: Wait) -> Result<Mirror> {
        if !state_path(dir).exists() {
            bail!(
                "{} is not a mirror (no state file); make one with snapdump mirror create",
                dir.display()
            );
        }
        let lock = crate::lock::acquire(
            &dir.join("lock"),
            &format!("the mirror {}", dir.display()),
            wait,
        )?;
        let bytes = std::fs::read(state_path(dir))
            .with_context(|| format!("cannot read {}", state_path(dir).display()))?;
        let state = state::decode(&bytes).with_context(|| format!("mirror {}", dir.display()))?;
        let blocks = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("blocks"))
            .with_context(|| format!("cannot open {}", dir.join("blocks").display()))?;
        let len = blocks.metadata()?.len();
        if len < state.slots * state.block_size as u64 {
            bail!(
                "the mirror {} is damaged: {} holds {len} bytes, and its state needs {} slots of {} bytes; make the mirror again (mirror create, then add the increments)",
                dir.display(),
                dir.join("blocks").display(),
                state.slots,
                state.block_size
            );
        }
        Ok(Mirror {
            dir: dir.to_path_buf(),
            state,
            blocks,
            _lock: lock,
        })
    }

    /// The block of VBN `v` from the blocks file, checked against its
    /// checksum; None when the mirror does not hold it.
    pub fn block(&self, v: u64, buf: &mut Vec<u8>) -> Result<bool> {
        let Some((slot, sum)) = self.state.find(v) else {
            return Ok(false);
        };
        let bs = self.state.block_size as usize;
        buf.resize(bs, 0);
        let n = fsx::pread_full(self.blocks.as_fd(), buf, slot * bs as u64)
            .with_context(|| format!("cannot read {}", self.dir.join("blocks").display()))?;
        buf[n..].fill(0);
        if xxhash_rust::xxh3::xxh3_128(buf).to_le_bytes() != sum {
            bail!(
                "the mirror {} is damaged: the block of VBN {v} (slot {slot}) does not match its checksum; restore from the base and the increments instead, or reintegrate from a good copy",
                self.dir.display()
            );
        }
        Ok(true)
    }

    fn commit(&self, next: &MirrorState) -> Result<()> {
        self.blocks
            .sync_all()
            .with_context(|| format!("cannot sync {}", self.dir.join("blocks").display()))?;
        crate::failpoint::hit("mirror-before-commit");
        crate::atomic::replace_file(&state_path(&self.dir), &state::encode(next))
            .with_context(|| format!("cannot commit the mirror {}", self.dir.display()))
    }

    /// Turns every free slot into a hole (after a commit, or left by a
    /// killed add); errors only lose space, never data.
    fn punch_free(&self) {
        let bs = self.state.block_size as u64;
        for &(s, n) in self.state.free.runs() {
            let _ = fsx::punch_hole(self.blocks.as_fd(), s * bs, n * bs);
        }
    }
}

/// What `mirror create` and `mirror status` report.
#[derive(Serialize)]
pub struct MirrorStatus {
    /// "mirror".
    pub command: &'static str,
    /// The mirror's directory.
    pub mirror: String,
    /// The base snapshot.
    pub base: SnapshotRef,
    /// The medium the base was read from.
    pub base_medium: String,
    /// Blocks of the base.
    pub base_blocks: u64,
    /// The newest snapshot (base and mirror together).
    pub newest: SnapshotRef,
    /// Blocks the mirror holds (those that differ from the base).
    pub blocks_held: u64,
    /// Their bytes.
    pub bytes_held: u64,
    /// Bytes the mirror's files take on disk (blocks file allocated, and
    /// the state file).
    pub disk_bytes: u64,
    /// blocks_held / base_blocks.
    pub ratio_to_base: f64,
}

/// The status of an open mirror.
pub fn status_of(m: &Mirror) -> MirrorStatus {
    use std::os::unix::fs::MetadataExt;
    let s = &m.state;
    let held = s.held_blocks();
    let base = s.base_vbns.total() as u64;
    let disk = m.blocks.metadata().map(|md| md.blocks() * 512).unwrap_or(0)
        + std::fs::metadata(state_path(&m.dir))
            .map(|md| md.len())
            .unwrap_or(0);
    MirrorStatus {
        command: "mirror",
        mirror: m.dir.display().to_string(),
        base: s.base.clone(),
        base_medium: s.base_medium.clone(),
        base_blocks: base,
        newest: s.newest.clone(),
        blocks_held: held,
        bytes_held: held * s.block_size as u64,
        disk_bytes: disk,
        ratio_to_base: if base == 0 {
            0.0
        } else {
            held as f64 / base as f64
        },
    }
}

/// `mirror create --base MEDIUM DIR`: a mirror of the full image on
/// `base` (its front is read, its data is not), holding nothing yet.
pub fn create(base: &Input, dir: &Path) -> Result<MirrorStatus> {
    if let Ok(mut d) = std::fs::read_dir(dir) {
        if d.next().is_some() {
            bail!(
                "{} exists and is not empty; a mirror is made in a new or empty directory",
                dir.display()
            );
        }
    }
    let mut r = StreamReader::open(base.open()?, base.name(), Digest::Skip)?;
    let h = r.header.clone();
    if !h.full {
        bail!(
            "{}: snapshot {} is an increment; a mirror's base is a full image (a level 0, or a synthetic full from snapdump coalesce)",
            base.name(),
            h.snapshot.id
        );
    }
    let front = read_front(&mut r)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::File::create(dir.join("blocks"))
        .with_context(|| format!("cannot create {}", dir.join("blocks").display()))?;
    let st = MirrorState {
        source_uuid: h.source_uuid,
        source_path: h.source_path.clone(),
        block_size: h.block_size,
        hostname: h.hostname.clone(),
        base: h.snapshot.clone(),
        base_stream_id: h.stream_id,
        base_medium: base.name().to_string(),
        base_vbns: front.carried.clone(),
        newest: h.snapshot.clone(),
        held: Vec::new(),
        free: RunSet::default(),
        slots: 0,
        tree: front.tree,
    };
    crate::atomic::replace_file(&state_path(dir), &state::encode(&st))?;
    let m = Mirror::open(dir, Wait::Yes)?;
    Ok(status_of(&m))
}

/// One increment added.
#[derive(Serialize)]
pub struct Added {
    /// The stream.
    pub stream: String,
    /// The snapshot the mirror is at now.
    pub snapshot: SnapshotRef,
    /// Blocks it carried (written into the mirror).
    pub blocks_written: u64,
    /// Blocks that left the mirror (superseded or freed).
    pub blocks_dropped: u64,
}

/// `mirror add DIR -f INCREMENT...`: each increment in turn, each one
/// commit; an increment not based on the mirror's newest snapshot is
/// refused (nothing of it is kept).
pub fn add(dir: &Path, inputs: &[Input], wait: Wait) -> Result<Vec<Added>> {
    let mut m = Mirror::open(dir, wait)?;
    m.punch_free();
    let mut out = Vec::new();
    for input in inputs {
        let (next, added) = match add_one(&m, input) {
            Ok(v) => v,
            Err(e) => {
                // Blocks a refused increment wrote are in slots the state
                // counts free, or past its end: their space goes back.
                m.punch_free();
                trim(&m);
                return Err(e);
            }
        };
        m.commit(&next)?;
        m.state = next;
        m.punch_free();
        trim(&m);
        out.push(added);
    }
    Ok(out)
}

fn add_one(m: &Mirror, input: &Input) -> Result<(MirrorState, Added)> {
    let s = &m.state;
    let name = input.name().to_string();
    let mut r = StreamReader::open(input.open()?, &name, Digest::Skip)?;
    let h = r.header.clone();
    if h.source_uuid != s.source_uuid {
        bail!(
            "{name} is a dump of another source ({}), not of {}",
            crate::names::escape(&h.source_path),
            crate::names::escape(&s.source_path)
        );
    }
    if h.snapshot.uuid == s.newest.uuid {
        bail!(
            "{name}: the mirror {} already holds snapshot {}",
            m.dir.display(),
            h.snapshot.id
        );
    }
    let based = h.base.as_ref().filter(|_| !h.full);
    if based.is_none_or(|b| b.uuid != s.newest.uuid) {
        bail!(
            "{name}: snapshot {} is {}, and the mirror {} is at snapshot {}: add the increments dumped on it, in order",
            h.snapshot.id,
            match based {
                Some(b) => format!("an increment on snapshot {}", b.id),
                None => "a full image".to_string(),
            },
            m.dir.display(),
            s.newest.id
        );
    }
    if h.block_size != s.block_size {
        bail!(
            "{name}: block size {} differs from the mirror's {}",
            h.block_size,
            s.block_size
        );
    }
    let front = read_front(&mut r)?;
    let t1_vbns = tree_vbns(&front.tree);
    let carried = &front.carried;
    // What stays: held blocks the new snapshot still uses and does not
    // carry anew; what comes: every carried block.
    let old_held = s.held_vbns();
    let kept = old_held.intersect(&t1_vbns).minus(carried);
    let missing = t1_vbns.minus(&kept).minus(carried).minus(&s.base_vbns);
    if let Some(&(v, _)) = missing.runs().first() {
        bail!(
            "{name}: VBN {v} of snapshot {} is in neither the increment, the mirror nor the base; the streams are inconsistent",
            h.snapshot.id
        );
    }
    let mut held: Vec<HeldRun> = Vec::new();
    let mut freed: Vec<(u64, u64)> = Vec::new();
    for r in &s.held {
        for (a, n, inside) in kept.split(r.vbn, r.count()) {
            let k = (a - r.vbn) as usize;
            if inside {
                held.push(HeldRun {
                    vbn: a,
                    slot: r.slot + k as u64,
                    sums: r.sums[k..k + n as usize].to_vec(),
                });
            } else {
                freed.push((r.slot + k as u64, n));
            }
        }
    }
    // New blocks go into slots free in the committed state only.
    let mut free: Vec<(u64, u64)> = s.free.runs().to_vec();
    free.reverse();
    let mut slots = s.slots;
    for &(v, n) in carried.runs() {
        let mut done = 0;
        while done < n {
            let want = n - done;
            let (slot, got) = match free.pop() {
                Some((f, c)) if c > want => {
                    free.push((f + want, c - want));
                    (f, want)
                }
                Some((f, c)) => (f, c),
                None => {
                    let at = slots;
                    slots += want;
                    (at, want)
                }
            };
            held.push(HeldRun {
                vbn: v + done,
                slot,
                sums: vec![[0; 16]; got as usize],
            });
            done += got;
        }
    }
    held.sort_by_key(|r| r.vbn);
    let mut next = MirrorState {
        newest: h.snapshot.clone(),
        held,
        free: RunSet::from_runs(free.into_iter().chain(freed.iter().copied())),
        slots,
        tree: front.tree.clone(),
        ..s.clone()
    };
    // The data: each carried block to its slot, checked as it arrives.
    let bs = s.block_size as u64;
    let mut seen = Disjoint::default();
    let mut got = 0u64;
    let mut ended = false;
    let mut block = vec![0u8; bs as usize];
    while let Some(rec) = r.next_record()? {
        match rec.kind {
            RecordKind::Data => {
                let at = |e: anyhow::Error| {
                    anyhow!("{name}: record {} at byte {}: {e:#}", rec.seq, rec.offset)
                };
                for (seg, bytes) in decode_data(&rec.raw, h.gaps()).map_err(at)? {
                    check_segment(&front.tree, carried, &mut seen, &seg, bs).map_err(at)?;
                    for (k, chunk) in bytes.chunks(bs as usize).enumerate() {
                        let v = seg.vbn + k as u64;
                        block[..chunk.len()].copy_from_slice(chunk);
                        block[chunk.len()..].fill(0);
                        let i = next.held.partition_point(|r| r.vbn + r.count() <= v);
                        let run = &mut next.held[i];
                        let j = (v - run.vbn) as usize;
                        run.sums[j] = xxhash_rust::xxh3::xxh3_128(&block).to_le_bytes();
                        fsx::pwrite_all(m.blocks.as_fd(), &block, (run.slot + j as u64) * bs)
                            .with_context(|| {
                                format!("cannot write {}", m.dir.join("blocks").display())
                            })?;
                        got += 1;
                    }
                }
                crate::failpoint::hit("mirror-data");
            }
            RecordKind::End => ended = true,
            _ => {}
        }
    }
    if !ended {
        bail!("{name}: the stream ends before its end record (truncated); the mirror is unchanged");
    }
    let want = carried.total() as u64;
    if got != want {
        bail!(
            "{name}: {} of the {want} blocks it carries are missing (damaged stream); the mirror is unchanged",
            want.saturating_sub(got)
        );
    }
    // Slots past the last one in use leave the file (after the commit).
    let used_end = next
        .held
        .iter()
        .map(|r| r.slot + r.count())
        .max()
        .unwrap_or(0);
    if used_end < next.slots {
        next.free = next
            .free
            .minus(&RunSet::from_runs([(used_end, next.slots - used_end)]));
        next.slots = used_end;
    }
    let dropped = freed.iter().map(|f| f.1).sum();
    Ok((
        next,
        Added {
            stream: name,
            snapshot: h.snapshot,
            blocks_written: want,
            blocks_dropped: dropped,
        },
    ))
}

/// `mirror status DIR`.
pub fn status(dir: &Path) -> Result<MirrorStatus> {
    let m = Mirror::open(dir, Wait::Yes)?;
    Ok(status_of(&m))
}

/// Cuts the blocks file after the last slot in use (a commit that dropped
/// the file's last blocks), best effort.
pub fn trim(m: &Mirror) {
    let bs = m.state.block_size as u64;
    let _ = m.blocks.set_len(m.state.slots * bs);
}
