//! Opening, reading and committing a volume file.
//!
//! Commit protocol (formats/volume.md): new data blocks and the new
//! metadata blob go only to blocks the committed state does not use; the
//! file is synced; then the superblock slot not holding the current
//! generation gets generation + 1 and is synced. A crash before that last
//! write leaves the old superblock, whose metadata and blocks were not
//! touched; a torn superblock fails its checksum and the other slot wins.

use super::format::{
    block_offset, decode_state, encode_state, Superblock, VolSnapshot, VolumeState, DATA_START,
    FLAG_COMPACT, SLOT_BYTES,
};
use crate::fsx;
use crate::lock::Wait;
use crate::planes::Plane;
use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// An open volume: its file, current superblock and metadata.
pub struct Volume {
    /// Where it lives (for messages).
    pub path: PathBuf,
    file: File,
    /// The current superblock.
    pub sb: Superblock,
    /// The committed metadata.
    pub state: VolumeState,
    /// Set when a superblock slot was found damaged (a torn write, or
    /// damage) and the other one used.
    pub superblock_damage: Option<String>,
}

/// How a volume is opened: readers share it, a writer holds it alone.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// ls, extract, export, check, dump: a shared lock.
    Read,
    /// receive, delete, shadow: an exclusive lock.
    Write,
    /// Writing blocks no committed state uses, under a shared lock, so
    /// readers go on while a replication's stream arrives; the commit
    /// needs `reopen_for_write`.
    Place,
}

/// Options of `volume create`.
pub struct CreateOptions {
    /// Block size of the data region.
    pub block_size: u32,
    /// Pack blocks at the lowest free VBNs instead of the source's.
    pub compact: bool,
    /// Largest size the data region may grow to, in bytes (0: no limit).
    pub max_bytes: u64,
    /// The volume's id (default: a new random one). A replica volume that
    /// is re-created to take its first stream keeps the id its source knows.
    pub uuid: Option<[u8; 16]>,
}

/// Whether `path` is a regular file that starts like a volume.
pub fn is_volume(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut magic = [0u8; 8];
    use std::io::Read;
    f.read_exact(&mut magic).is_ok() && magic == super::format::VOLUME_MAGIC
}

/// Creates an empty volume at `path` (which must not exist).
pub fn create(path: &Path, opts: &CreateOptions) -> Result<Superblock> {
    crate::tree::check_block_size(opts.block_size)
        .map_err(|e| anyhow!("volume block size: {e}"))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create volume {}", path.display()))?;
    let bs = opts.block_size as u64;
    let max_blocks = opts.max_bytes / bs;
    if opts.max_bytes != 0 && max_blocks < 2 {
        bail!(
            "volume size {} is too small for a volume of {bs}-byte blocks",
            opts.max_bytes
        );
    }
    let mut vol = Volume {
        path: path.to_path_buf(),
        file,
        sb: Superblock {
            block_size: opts.block_size,
            uuid: opts.uuid.unwrap_or_else(crate::ids::random_id),
            generation: 0,
            meta_vbn: 1,
            meta_blocks: 0,
            max_blocks,
            flags: if opts.compact { FLAG_COMPACT } else { 0 },
            ..Default::default()
        },
        state: VolumeState {
            next_id: 1,
            sources: Vec::new(),
            snapshots: Vec::new(),
            sums: Vec::new(),
            origins: Vec::new(),
        },
        superblock_damage: None,
    };
    let state = vol.state.clone();
    let r = vol.commit(state, &Plane::new());
    if let Err(e) = r {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).ok();
    }
    Ok(vol.sb)
}

fn flock(file: &File, exclusive: bool, wait: Wait, path: &Path) -> Result<()> {
    crate::lock::lock_file(
        file,
        exclusive,
        wait,
        || {
            format!(
                "volume {} is in use by another snapdump; try again later, or run without --no-wait to wait",
                path.display()
            )
        },
        || {
            format!(
                "snapdump: waiting for another snapdump to finish with volume {}...",
                path.display()
            )
        },
    )
}

impl Volume {
    /// Opens a volume: takes its lock, picks the newest valid superblock
    /// and reads and checks the metadata it points to.
    pub fn open(path: &Path, access: Access, wait: Wait) -> Result<Volume> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(access != Access::Read)
            .open(path)
            .with_context(|| format!("cannot open volume {}", path.display()))?;
        if !file.metadata()?.is_file() {
            bail!("volume {} is not a regular file", path.display());
        }
        flock(&file, access == Access::Write, wait, path)?;
        let name = path.display().to_string();
        let mut slots = vec![0u8; (2 * SLOT_BYTES) as usize];
        let n = fsx::pread_full(file.as_fd(), &mut slots, 0)
            .with_context(|| format!("cannot read volume {name}"))?;
        slots.truncate(n);
        let decoded: Vec<Result<Superblock>> = slots
            .chunks(SLOT_BYTES as usize)
            .map(Superblock::decode)
            .collect();
        let mut candidates: Vec<Superblock> = decoded
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        candidates.sort_by_key(|s| std::cmp::Reverse(s.generation));
        let Some(_) = candidates.first() else {
            let why = decoded
                .into_iter()
                .next()
                .map(|r| format!("{:#}", r.unwrap_err()))
                .unwrap_or_else(|| "file too short".into());
            bail!("{name} is not a usable snapdump volume: {why}");
        };
        // A slot with our magic that fails its checksum is a damaged (not
        // a never-written) superblock.
        let mut damaged = decoded
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|e| format!("{e:#}"))
            .find(|e| !e.contains("bad magic"));
        let mut last_err = None;
        for sb in candidates {
            match read_state(&file, &sb) {
                Ok(state) => {
                    let superblock_damage = damaged.map(|why| {
                        let note = format!(
                            "a superblock is damaged ({why}); using generation {}",
                            sb.generation
                        );
                        crate::progress::println_err(&format!(
                            "snapdump: warning: volume {name}: {note}"
                        ));
                        note
                    });
                    return Ok(Volume {
                        path: path.to_path_buf(),
                        file,
                        sb,
                        state,
                        superblock_damage,
                    });
                }
                Err(e) => {
                    damaged = Some(format!(
                        "generation {} points at unusable metadata: {e:#}",
                        sb.generation
                    ));
                    last_err = Some(e)
                }
            }
        }
        Err(last_err.unwrap()).with_context(|| {
            format!("volume {name}: no superblock points at intact metadata (damaged volume)")
        })
    }

    /// The same volume opened for writing. Its decoded state is kept when
    /// nothing was committed since it was read (the newest superblock is
    /// the one it was read from), so a large volume's metadata is not
    /// decoded twice by a reader that turns writer (`serve`); otherwise it
    /// is opened afresh. The shared lock is released before the exclusive
    /// one is taken, hence the check.
    pub fn reopen_for_write(self, wait: Wait) -> Result<Volume> {
        self.reopen(Access::Write, wait)
    }

    /// The same volume opened with `access`, keeping the decoded state
    /// when nothing was committed since it was read (see
    /// `reopen_for_write`).
    pub fn reopen(self, access: Access, wait: Wait) -> Result<Volume> {
        let Volume {
            path,
            file,
            sb,
            state,
            superblock_damage,
        } = self;
        drop(file);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(access != Access::Read)
            .open(&path)
            .with_context(|| format!("cannot open volume {}", path.display()))?;
        flock(&file, access == Access::Write, wait, &path)?;
        let mut slots = vec![0u8; (2 * SLOT_BYTES) as usize];
        let n = fsx::pread_full(file.as_fd(), &mut slots, 0)
            .with_context(|| format!("cannot read volume {}", path.display()))?;
        slots.truncate(n);
        let newest = slots
            .chunks(SLOT_BYTES as usize)
            .filter_map(|s| Superblock::decode(s).ok())
            .max_by_key(|s| s.generation);
        if newest.as_ref() == Some(&sb) {
            return Ok(Volume {
                path,
                file,
                sb,
                state,
                superblock_damage,
            });
        }
        drop(file);
        Volume::open(&path, access, wait)
    }

    /// Block size of the data region.
    pub fn bs(&self) -> u64 {
        self.sb.block_size as u64
    }

    /// Whether the volume packs blocks (created with --compact).
    pub fn compact(&self) -> bool {
        self.sb.flags & FLAG_COMPACT != 0
    }

    /// Reads `buf.len() / bs` blocks starting at target VBN `vbn`; bytes
    /// past the end of the file read as zeros.
    pub fn read_blocks(&self, vbn: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let n = fsx::pread_full(self.file.as_fd(), buf, block_offset(vbn, self.bs()))?;
        buf[n..].fill(0);
        Ok(())
    }

    /// Whether `block` (as read from target VBN `vbn`) matches the
    /// checksum the metadata records for it.
    pub fn block_intact(&self, vbn: u64, block: &[u8]) -> bool {
        self.state
            .sums
            .get((vbn - 1) as usize)
            .is_some_and(|s| *s == xxhash_rust::xxh3::xxh3_128(block).to_le_bytes())
    }

    /// Writes whole blocks at target VBN `vbn` (only blocks the committed
    /// state does not use: see the commit protocol).
    pub fn write_blocks(&self, vbn: u64, data: &[u8]) -> std::io::Result<()> {
        fsx::pwrite_all(self.file.as_fd(), data, block_offset(vbn, self.bs()))
    }

    /// Cuts the file back to the committed data region, after a failed
    /// transaction extended it (best effort: the blocks are free anyway).
    pub fn trim_to_committed(&self) {
        let len = DATA_START + self.sb.data_blocks * self.bs();
        if self.file.metadata().is_ok_and(|m| m.len() > len) {
            let _ = self.file.set_len(len);
        }
    }

    /// The snapshot `sel` names: a volume id, or the newest received at or
    /// before a time; `None` is the newest.
    pub fn snapshot(&self, sel: Option<&str>) -> Result<&VolSnapshot> {
        let name = self.path.display();
        let Some(sel) = sel else {
            return self
                .state
                .snapshots
                .last()
                .ok_or_else(|| anyhow!("volume {name} holds no snapshot yet"));
        };
        let found = match crate::at::parse_at(sel)? {
            crate::at::At::Id(id) => self.state.snapshots.iter().find(|s| s.id == id),
            crate::at::At::Time(t) => self
                .state
                .snapshots
                .iter()
                .filter(|s| s.snap.time <= t)
                .max_by_key(|s| (s.snap.time, s.id)),
        };
        found.ok_or_else(|| {
            anyhow!("volume {name} holds no snapshot {sel}; list them with snapdump volume snapshots {name}")
        })
    }

    /// Blocks the committed state may not lose: the planes of snapshots
    /// that are not shadows, every relocation map's targets, and the
    /// metadata run.
    pub fn protected(state: &VolumeState) -> Plane {
        let mut p = Plane::new();
        for s in state.snapshots.iter().filter(|s| !s.shadow) {
            p = p.or(&s.plane);
        }
        for src in &state.sources {
            for m in &src.map {
                p.set_run(m.tgt, m.count);
            }
        }
        p
    }

    /// Every block the committed state refers to, shadows included, and
    /// its metadata run: what a commit in progress must not overwrite.
    pub fn referenced(&self) -> Plane {
        let mut p = Volume::protected(&self.state);
        for s in self.state.snapshots.iter().filter(|s| s.shadow) {
            p = p.or(&s.plane);
        }
        p.set_run(self.sb.meta_vbn, self.sb.meta_blocks);
        p
    }

    /// Commits `state` atomically. `written` holds the blocks this
    /// transaction wrote (already in the file); the new metadata blob goes
    /// to the lowest run free in both the old and the new state.
    pub fn commit(&mut self, mut state: VolumeState, written: &Plane) -> Result<()> {
        let name = self.path.display().to_string();
        let bs = self.bs();
        let mut new_used = Volume::protected(&state);
        for s in state.snapshots.iter().filter(|s| s.shadow) {
            new_used = new_used.or(&s.plane);
        }
        let data_hw = new_used.high_water().saturating_sub(1);
        state.sums.resize(data_hw as usize, [0; 16]);
        state.origins.resize(data_hw as usize, 0);
        let body = encode_state(&state);
        // Level 1: most of the body is checksums, which no level shrinks,
        // and a large volume's body is rewritten by every commit.
        let blob = zstd::bulk::compress(&body, 1).context("compressing volume metadata")?;
        let blocks = (blob.len() as u64).div_ceil(bs).max(1);
        let avoid = self.referenced().or(&new_used).or(written);
        // A compact volume packs the metadata with the data; otherwise it
        // goes above the data, out of the way of the source VBNs that
        // blocks keep when they can.
        let from = if self.compact() {
            1
        } else {
            new_used.high_water().max(1)
        };
        let meta_vbn = first_fit(&avoid, from, blocks);
        let data_blocks = data_hw.max(meta_vbn + blocks - 1);
        if self.sb.max_blocks != 0 && data_blocks > self.sb.max_blocks {
            bail!(
                "volume {name} is full: it would need {} bytes, it was created for at most {}; create a larger volume (volume create --size)",
                data_blocks * bs,
                self.sb.max_blocks * bs
            );
        }
        let io = |e: std::io::Error| {
            anyhow!("cannot write volume {name}: {e} (is the file system full?); the volume keeps its previous state")
        };
        let fd = self.file.as_fd();
        fsx::pwrite_all(fd, &blob, block_offset(meta_vbn, bs)).map_err(io)?;
        let len = DATA_START + data_blocks * bs;
        let cur = self.file.metadata().map_err(io)?.len();
        if cur < len {
            self.file.set_len(len).map_err(io)?;
        }
        crate::failpoint::hit("volume-before-sync");
        fsx::fsync(fd).map_err(io)?;
        let sb = Superblock {
            version: super::format::VOLUME_VERSION,
            generation: self.sb.generation + 1,
            meta_vbn,
            meta_blocks: blocks,
            meta_len: blob.len() as u64,
            meta_raw_len: body.len() as u64,
            meta_sha256: super::format::meta_checksum(super::format::VOLUME_VERSION, &blob),
            data_blocks,
            ..self.sb.clone()
        };
        let slot = (sb.generation % 2) * SLOT_BYTES;
        crate::failpoint::hit("volume-before-superblock");
        fsx::pwrite_all(fd, &sb.encode(), slot).map_err(io)?;
        fsx::fsync(fd).map_err(io)?;
        crate::failpoint::hit("volume-after-superblock");
        // Committed. Give back what nothing refers to any more, except the
        // previous metadata run: until the next commit, the other slot's
        // generation stays readable if this superblock is ever damaged.
        let mut old = self.referenced();
        for v in self.sb.meta_vbn..self.sb.meta_vbn + self.sb.meta_blocks {
            old.clear(v);
        }
        self.sb = sb;
        self.state = state;
        let now = self.referenced();
        if cur > len {
            let _ = self.file.set_len(len);
        }
        for (v, n) in old.and_not(&now).runs() {
            if v + n - 1 <= data_blocks {
                let _ = fsx::punch_hole(fd, block_offset(v, bs), n * bs);
            }
        }
        Ok(())
    }
}

/// The lowest run of `n` VBNs from `from` none of which is in `used`.
pub fn first_fit(used: &Plane, from: u64, n: u64) -> u64 {
    let mut v = used.next_clear(from);
    loop {
        match (v..v + n).find(|&x| used.get(x)) {
            None => return v,
            Some(x) => v = used.next_clear(x + 1),
        }
    }
}

fn read_state(file: &File, sb: &Superblock) -> Result<VolumeState> {
    let bs = sb.block_size as u64;
    let len = file.metadata()?.len();
    let end = block_offset(sb.meta_vbn, bs) + sb.meta_len;
    if end > len {
        bail!("metadata run ends at byte {end}, past the end of the file ({len} bytes): truncated volume");
    }
    let mut blob = vec![0u8; sb.meta_len as usize];
    fsx::pread_full(file.as_fd(), &mut blob, block_offset(sb.meta_vbn, bs))?;
    if super::format::meta_checksum(sb.version, &blob) != sb.meta_sha256 {
        bail!("metadata checksum mismatch");
    }
    let body = zstd::bulk::decompress(&blob, sb.meta_raw_len as usize)
        .context("metadata does not decompress")?;
    if body.len() as u64 != sb.meta_raw_len {
        bail!("metadata length mismatch");
    }
    decode_state(&body, sb.version, sb.block_size, sb.data_blocks)
}
