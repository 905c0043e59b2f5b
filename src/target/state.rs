//! The restore chain state kept in `TARGET/.snapdump-restore/`: which
//! snapshot the target holds (so the next increment can be checked against
//! it) and that snapshot's metadata, written atomically once a restore has
//! completely succeeded. While a restore runs, an `incomplete` marker says
//! the target is between states.

use crate::atomic::replace_file;
use crate::runs::RunSet;
use crate::stream::header::SnapshotRef;
use crate::tree::{Time, Tree, TreeBuilder};
use crate::wire::{Dec, Enc};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Name of the state directory inside a target.
pub const STATE_DIR: &str = ".snapdump-restore";
const STATE_MAGIC: [u8; 8] = *b"SDRSTATE";
const NEXT_MAGIC: [u8; 8] = *b"SDRNEXTS";
/// Name of an incremental apply's directory inside the state directory.
pub const APPLY_DIR: &str = "apply";
/// Restore state version written; version 1 (no file flags in its items)
/// is still read.
const STATE_VERSION: u32 = 2;

/// What a target holds.
pub struct TargetState {
    /// Catalog id of the source the chain came from.
    pub source_uuid: [u8; 16],
    /// The snapshot the target is at.
    pub snapshot: SnapshotRef,
    /// Block size of the chain.
    pub block_size: u32,
    /// Metadata of that snapshot.
    pub tree: Tree,
}

/// Paths of the state files of a target.
pub struct StatePaths {
    /// The state directory.
    pub dir: PathBuf,
}

impl StatePaths {
    /// State paths for `target`.
    pub fn new(target: &Path) -> Self {
        StatePaths {
            dir: target.join(STATE_DIR),
        }
    }
    /// The committed state file.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    /// The marker of a restore in progress (or interrupted).
    pub fn incomplete(&self) -> PathBuf {
        self.dir.join("incomplete")
    }
    /// Takes the target's restore lock (creating the state directory), so
    /// two restores never write one target at once.
    pub fn lock(&self, target: &Path, wait: crate::lock::Wait) -> Result<crate::lock::Lock> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        crate::lock::acquire(
            &self.dir.join("lock"),
            &format!("the restore target {}", target.display()),
            wait,
        )
    }
    /// Marks the target as being restored to `snap` from `stream`.
    pub fn begin(&self, snap: &SnapshotRef, stream: &str) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let text = format!(
            "restore of snapshot {} ({}) from {} started {}; not finished\n",
            snap.id,
            crate::ids::hex(&snap.uuid),
            stream,
            Time::now().rfc3339()
        );
        replace_file(&self.incomplete(), text.as_bytes())
    }
    /// Records the finished state and clears the in-progress marker.
    pub fn commit(&self, st: &TargetState) -> Result<()> {
        replace_file(&self.state(), &encode(st, None))?;
        match std::fs::remove_file(self.incomplete()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", self.incomplete().display()))
            }
            _ => Ok(()),
        }
    }
    /// Loads the committed state, if any.
    pub fn load(&self) -> Result<Option<TargetState>> {
        Ok(self.load_file(&self.state(), false)?.map(|(st, _)| st))
    }
    /// The directory of an incremental apply in progress.
    pub fn apply_dir(&self) -> PathBuf {
        self.dir.join(APPLY_DIR)
    }
    /// The snapshot a checked increment brings the target to, and the VBNs
    /// it carries, kept so that an interrupted apply is finished without
    /// the stream.
    pub fn save_next(&self, st: &TargetState, carried: &RunSet) -> Result<()> {
        replace_file(
            &self.apply_dir().join("next-state"),
            &encode(st, Some(carried)),
        )
    }
    /// Loads what [`StatePaths::save_next`] kept.
    pub fn load_next(&self) -> Result<Option<(TargetState, RunSet)>> {
        Ok(self
            .load_file(&self.apply_dir().join("next-state"), true)?
            .map(|(st, c)| (st, c.unwrap_or_default())))
    }
    fn load_file(
        &self,
        path: &Path,
        carried: bool,
    ) -> Result<Option<(TargetState, Option<RunSet>)>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let ctx = || {
            format!(
                "restore state {} is damaged; run restore --finish and restore the chain again",
                path.display()
            )
        };
        decode(&bytes, carried).with_context(ctx).map(Some)
    }
}

/// Encodes a state file: `raw_length u64`, then one zstd frame of the body
/// (formats/restore-state.md); `carried` adds the VBN runs of a next-state.
fn encode(st: &TargetState, carried: Option<&RunSet>) -> Vec<u8> {
    let mut e = Enc::new();
    e.fixed(if carried.is_some() {
        &NEXT_MAGIC
    } else {
        &STATE_MAGIC
    });
    e.u32(STATE_VERSION);
    e.fixed(&st.source_uuid);
    e.u64(st.snapshot.id);
    e.fixed(&st.snapshot.uuid);
    e.i64(st.snapshot.time.sec);
    e.u32(st.snapshot.time.nsec);
    e.u8(st.snapshot.level);
    e.u32(st.block_size);
    e.u64(st.tree.dirents.len() as u64);
    for i in 0..st.tree.dirents.len() {
        st.tree
            .encode_item(i, &mut e, crate::tree::ItemForm::CURRENT);
    }
    if let Some(c) = carried {
        e.u32(c.runs().len() as u32);
        for &(v, n) in c.runs() {
            e.u64(v);
            e.u64(n);
        }
    }
    let mut bytes = zstd::bulk::compress(&e.buf, 3).expect("zstd compresses in memory");
    let mut framed = (e.buf.len() as u64).to_le_bytes().to_vec();
    framed.append(&mut bytes);
    framed
}

fn decode(bytes: &[u8], carried: bool) -> Result<(TargetState, Option<RunSet>)> {
    if bytes.len() < 8 {
        bail!("too short");
    }
    let raw_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let raw = zstd::bulk::decompress(&bytes[8..], raw_len.min(1 << 34) as usize)?;
    let mut d = Dec::new(&raw, "restore state");
    let magic = if carried { NEXT_MAGIC } else { STATE_MAGIC };
    if d.fixed(8)? != magic {
        bail!("not a restore state");
    }
    let version = d.u32()?;
    if !(1..=STATE_VERSION).contains(&version) {
        bail!("restore state version {version} is newer than this snapdump reads ({STATE_VERSION}); use a newer snapdump");
    }
    let form = if version >= 2 {
        crate::tree::ItemForm::CURRENT
    } else {
        crate::tree::ItemForm::NO_FLAGS
    };
    let source_uuid = d.fixed(16)?.try_into().unwrap();
    let snapshot = SnapshotRef {
        id: d.u64()?,
        uuid: d.fixed(16)?.try_into().unwrap(),
        time: Time {
            sec: d.i64()?,
            nsec: d.u32()?,
        },
        level: d.u8()?,
    };
    let block_size = d.u32()?;
    crate::tree::check_block_size(block_size)?;
    let n = d.u64()?;
    let mut b = TreeBuilder::with_capacity(block_size as u64, n);
    for _ in 0..n {
        b.decode_item(&mut d, form)?;
    }
    let runs = if carried {
        let n = d.count(16)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push((d.u64()?, d.u64()?));
        }
        Some(RunSet::from_runs(v))
    } else {
        None
    };
    d.finish()?;
    Ok((
        TargetState {
            source_uuid,
            snapshot,
            block_size,
            tree: b.finish()?,
        },
        runs,
    ))
}
