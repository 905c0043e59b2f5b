//! The catalog of a source: snapdump's own record of what it has dumped.
//!
//! A catalog keeps no file data. It holds the snapshot table, the block map
//! (one [`Plane`] per snapshot plus the active plane) and the metadata of the
//! newest snapshot, whose block pointers carry each block's VBN and checksum
//! so the next dump can tell changed blocks from unchanged ones. Older
//! snapshots are shadows: their data is not kept anywhere, only their planes.
//!
//! On disk (formats/catalog.md) each source has a directory
//! `CATALOG/sources/<key>/` holding `catalog`, a small manifest replaced
//! atomically at each commit, and `catalog.pack.G`, the append-only pack
//! of the body's chunks the manifest lists ([`pack`]). A dump commits only
//! after its stream was completely written and closed, so an interrupted
//! dump leaves the catalog as it was.

pub mod pack;

use crate::atomic::replace_file;
use crate::planes::{MarkMaps, Plane};
use crate::stream::header::SnapshotRef;
use crate::tree::{Time, Tree, TreeBuilder};
use crate::wire::{Dec, Enc};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Magic at the start of a catalog file.
pub const CATALOG_MAGIC: [u8; 8] = *b"SDCATLG\0";
/// Catalog format version written and the newest read by this build:
/// version 4 stores the body in a pack of chunks named by a manifest.
pub const CATALOG_VERSION: u32 = 4;

/// One row of the snapshot table.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotInfo {
    /// Identity of the snapshot.
    #[serde(flatten)]
    pub snap: SnapshotRef,
    /// Id of the snapshot this one's stream was taken against.
    pub base: Option<u64>,
    /// True when the stream was a full image.
    pub full: bool,
    /// Size of the stream written.
    pub stream_bytes: u64,
    /// Data blocks the stream carried.
    pub data_blocks: u64,
    /// Where the stream went (path, or "-" for stdout).
    pub output: String,
}

/// Everything a catalog records about one source.
#[derive(Clone, Debug)]
pub struct CatalogState {
    /// Random id of this catalog's source; carried in every stream header.
    pub source_uuid: [u8; 16],
    /// Canonical path of the source.
    pub source_path: Vec<u8>,
    /// Data block size of the source's VBN space.
    pub block_size: u32,
    /// Id the next snapshot will get.
    pub next_snap_id: u64,
    /// Snapshot table, oldest first.
    pub snapshots: Vec<SnapshotInfo>,
    /// One plane per snapshot, parallel to `snapshots`.
    pub planes: Vec<Plane>,
    /// The active plane: VBNs in use by `tree`.
    pub active: Plane,
    /// The VBNs allocated and freed by the dump that made the newest
    /// snapshot (its mark-on-allocate and mark-on-deallocate images).
    pub marks: MarkMaps,
    /// Metadata of the newest snapshot, with block checksums.
    pub tree: Option<Tree>,
    /// The exclusion rules its dumps follow (None: none recorded yet, or
    /// a version-1 catalog).
    pub rules: Option<crate::rules::Rules>,
    /// Whether `tree` records file flags (not in catalogs before version
    /// 3: the next scan reads them from every file).
    pub flags_recorded: bool,
}

impl CatalogState {
    /// A copy to build the next state in, without the newest snapshot's
    /// tree: a dump reads that from the catalog it leaves untouched and
    /// records its own tree in the copy, so the largest part of the state
    /// (hundreds of MiB for a million files) is not held twice.
    pub fn clone_without_tree(&self) -> CatalogState {
        CatalogState {
            source_uuid: self.source_uuid,
            source_path: self.source_path.clone(),
            block_size: self.block_size,
            next_snap_id: self.next_snap_id,
            snapshots: self.snapshots.clone(),
            planes: self.planes.clone(),
            active: self.active.clone(),
            marks: self.marks.clone(),
            tree: None,
            rules: self.rules.clone(),
            flags_recorded: self.flags_recorded,
        }
    }
}

/// A loaded catalog and where it lives.
pub struct Catalog {
    /// The source's catalog directory.
    pub dir: PathBuf,
    /// The recorded state.
    pub state: CatalogState,
    /// The manifest the state was loaded with (and, after a commit, the
    /// one committed): which chunks the pack already holds.
    manifest: std::sync::Mutex<Option<pack::Manifest>>,
}

/// The default catalog root: `/var/lib/snapdump` for root, else
/// `$XDG_STATE_HOME/snapdump` (or `~/.local/state/snapdump`).
pub fn default_root() -> PathBuf {
    if crate::fsx::is_root() {
        return PathBuf::from("/var/lib/snapdump");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("snapdump");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/state/snapdump")
}

/// The directory name a source's catalog lives under: a hash of its path.
pub fn source_key(path: &[u8]) -> String {
    crate::ids::hex(&crate::digest::sha256(path)[..8])
}

/// The directory holding the catalog of `source` under `root`.
pub fn source_dir(root: &Path, source: &[u8]) -> PathBuf {
    root.join("sources").join(source_key(source))
}

impl Catalog {
    /// Opens the catalog of `source` under `root`, or starts an empty one
    /// (nothing is written until [`Catalog::commit`]).
    pub fn open(root: &Path, source: &[u8], block_size: u32) -> Result<Catalog> {
        let dir = source_dir(root, source);
        let (state, manifest) = match load(&dir)? {
            Some((state, manifest)) => (state, manifest),
            None => (
                CatalogState {
                    source_uuid: crate::ids::random_id(),
                    source_path: source.to_vec(),
                    block_size,
                    next_snap_id: 1,
                    snapshots: Vec::new(),
                    planes: Vec::new(),
                    active: Plane::new(),
                    marks: MarkMaps::default(),
                    tree: None,
                    rules: None,
                    flags_recorded: true,
                },
                None,
            ),
        };
        Ok(Catalog {
            dir,
            state,
            manifest: std::sync::Mutex::new(manifest),
        })
    }

    /// Writes the state atomically (temp file, fsync, rename, fsync dir).
    pub fn commit(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create catalog directory {}", self.dir.display()))?;
        let readme = self.dir.join("source");
        if !readme.exists() {
            let mut text = self.state.source_path.clone();
            text.push(b'\n');
            replace_file(&readme, &text)?;
        }
        let mut manifest = self
            .manifest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The new body is about the loaded one's size: one allocation.
        let hint = manifest.as_ref().map_or(0, |m| m.body_len() as usize);
        let body = encode_body_sized(&self.state, hint + hint / 8);
        let new = pack::store(&self.dir, manifest.as_ref(), &body)?;
        crate::failpoint::hit("catalog-packed");
        replace_file(
            &self.dir.join("catalog"),
            &crate::sealed::seal(&CATALOG_MAGIC, CATALOG_VERSION, &new.encode()),
        )?;
        crate::failpoint::hit("catalog-committed");
        // Committed: packs of other generations (the one a compaction
        // replaced, or one a crash left unnamed) are garbage now.
        pack::sweep(&self.dir, new.generation);
        *manifest = Some(new);
        Ok(())
    }

    /// Every catalog under `root`, for `snapshots` without a source.
    pub fn list_all(root: &Path) -> Result<Vec<CatalogState>> {
        let dir = root.join("sources");
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read catalog {}", dir.display()))
            }
        };
        for ent in rd {
            if let Some((state, _)) = load(&ent?.path())? {
                out.push(state);
            }
        }
        out.sort_by(|a, b| a.source_path.cmp(&b.source_path));
        Ok(out)
    }
}

fn enc_plane(e: &mut Enc, p: &Plane) {
    e.u64(p.words().len() as u64);
    for w in p.words() {
        e.u64(*w);
    }
}

fn dec_plane(d: &mut Dec) -> Result<Plane> {
    let n = d.u64()? as usize;
    if n.saturating_mul(8) > d.remaining() {
        bail!("plane of {n} words does not fit");
    }
    let mut words = Vec::with_capacity(n);
    for _ in 0..n {
        words.push(d.u64()?);
    }
    Ok(Plane::from_words(words))
}

/// Reads the catalog in the source directory `dir`: its state and, for a
/// catalog of format 4, the manifest naming its chunks; `None` when there
/// is no catalog yet. A commit that compacts may remove the pack a
/// manifest just read names (readers take no lock), so a missing pack is
/// read again from the manifest committed since.
pub fn load(dir: &Path) -> Result<Option<(CatalogState, Option<pack::Manifest>)>> {
    let file = dir.join("catalog");
    let mut last_missing = None;
    for _ in 0..4 {
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read catalog {}", file.display()))
            }
        };
        let (version, body) =
            open_sealed(&bytes).with_context(|| format!("catalog {}", file.display()))?;
        if version < 4 {
            let state = decode_body(&body, version)
                .with_context(|| format!("catalog {}", file.display()))?;
            return Ok(Some((state, None)));
        }
        let m =
            pack::Manifest::decode(&body).with_context(|| format!("catalog {}", file.display()))?;
        if !pack::pack_path(dir, m.generation).exists() && last_missing != Some(m.generation) {
            last_missing = Some(m.generation);
            continue;
        }
        let body = pack::read_body(dir, &m)?;
        let state =
            decode_body(&body, version).with_context(|| format!("catalog {}", file.display()))?;
        return Ok(Some((state, Some(m))));
    }
    bail!(
        "catalog {}: its pack {} is missing; restore the catalog directory from a backup or remove it to start a new chain with a level-0 dump",
        file.display(),
        pack::pack_path(dir, last_missing.unwrap_or(0)).display()
    )
}

/// Serialises a catalog state's body (formats/catalog.md, Body).
pub fn encode_body(s: &CatalogState) -> Vec<u8> {
    encode_body_sized(s, 0)
}

/// `encode_body` into a buffer made with room for `size_hint` bytes.
fn encode_body_sized(s: &CatalogState, size_hint: usize) -> Vec<u8> {
    let mut e = Enc::with_capacity(size_hint);
    e.fixed(&s.source_uuid);
    e.bytes(&s.source_path);
    e.u32(s.block_size);
    e.u64(s.next_snap_id);
    e.u32(s.snapshots.len() as u32);
    for (info, plane) in s.snapshots.iter().zip(&s.planes) {
        e.u64(info.snap.id);
        e.fixed(&info.snap.uuid);
        e.i64(info.snap.time.sec);
        e.u32(info.snap.time.nsec);
        e.u8(info.snap.level);
        e.u8(info.full as u8);
        e.u64(info.base.unwrap_or(0));
        e.u64(info.stream_bytes);
        e.u64(info.data_blocks);
        e.bytes(info.output.as_bytes());
        enc_plane(&mut e, plane);
    }
    enc_plane(&mut e, &s.active);
    enc_plane(&mut e, &s.marks.alloc);
    enc_plane(&mut e, &s.marks.dealloc);
    match &s.tree {
        None => e.u64(0),
        Some(t) => {
            e.u64(t.dirents.len() as u64);
            for i in 0..t.dirents.len() {
                t.encode_item(i, &mut e, crate::tree::ItemForm::CATALOG);
            }
        }
    }
    let rules = match &s.rules {
        Some(r) => serde_json::to_vec(r).expect("rules serialise"),
        None => Vec::new(),
    };
    e.bytes(&rules);
    e.buf
}

/// Checks a sealed catalog file and returns its version and body: the
/// state itself up to version 3, the manifest from version 4.
pub fn open_sealed(bytes: &[u8]) -> Result<(u32, Vec<u8>)> {
    let (version, body) = crate::sealed::open(
        bytes,
        &CATALOG_MAGIC,
        "catalog",
        "; restore it from a backup or remove it to start a new chain with a level-0 dump",
    )?;
    if !(1..=CATALOG_VERSION).contains(&version) {
        bail!("catalog format version {version} is not supported by this snapdump (it reads 1 to {CATALOG_VERSION}); use a newer snapdump");
    }
    Ok((version, body))
}

/// Parses a catalog body (after its checksum and compression were checked).
pub fn decode_body(body: &[u8], version: u32) -> Result<CatalogState> {
    let mut d = Dec::new(body, "catalog");
    let source_uuid = d.fixed(16)?.try_into().unwrap();
    let source_path = d.bytes(1 << 16)?.to_vec();
    let block_size = d.u32()?;
    crate::tree::check_block_size(block_size)?;
    let next_snap_id = d.u64()?;
    let n = d.count(50)?;
    let mut snapshots = Vec::with_capacity(n);
    let mut planes = Vec::with_capacity(n);
    for _ in 0..n {
        let id = d.u64()?;
        let uuid = d.fixed(16)?.try_into().unwrap();
        let time = Time {
            sec: d.i64()?,
            nsec: d.u32()?,
        };
        let level = d.u8()?;
        let full = d.u8()? != 0;
        let base = Some(d.u64()?).filter(|&b| b != 0);
        let stream_bytes = d.u64()?;
        let data_blocks = d.u64()?;
        let output = String::from_utf8_lossy(d.bytes(1 << 16)?).into_owned();
        snapshots.push(SnapshotInfo {
            snap: SnapshotRef {
                id,
                uuid,
                time,
                level,
            },
            base,
            full,
            stream_bytes,
            data_blocks,
            output,
        });
        planes.push(dec_plane(&mut d)?);
    }
    let active = dec_plane(&mut d)?;
    let marks = MarkMaps {
        alloc: dec_plane(&mut d)?,
        dealloc: dec_plane(&mut d)?,
    };
    let items = d.u64()?;
    let tree = if items == 0 {
        None
    } else {
        let mut b = TreeBuilder::new(block_size as u64);
        for _ in 0..items {
            b.decode_item(
                &mut d,
                if version >= 3 {
                    crate::tree::ItemForm::CATALOG
                } else {
                    crate::tree::ItemForm::CATALOG_NO_FLAGS
                },
            )?;
        }
        Some(b.finish()?)
    };
    let rules = if version >= 2 {
        let text = d.bytes(1 << 24)?;
        if text.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(text).map_err(|e| {
                anyhow::anyhow!("catalog: the recorded exclusion rules do not parse: {e}")
            })?)
        }
    } else {
        None
    };
    d.finish()?;
    Ok(CatalogState {
        source_uuid,
        source_path,
        block_size,
        next_snap_id,
        snapshots,
        planes,
        active,
        marks,
        tree,
        rules,
        flags_recorded: version >= 3,
    })
}
