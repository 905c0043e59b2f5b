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
use crate::tree::{PackedSums, Sums, Time, Tree, TreeBuilder};
use crate::wire::{Dec, Enc};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Magic at the start of a catalog file.
pub const CATALOG_MAGIC: [u8; 8] = *b"SDCATLG\0";
/// Catalog format version written and the newest read by this build:
/// version 4 stores the body in a pack of chunks named by a manifest,
/// version 5 the checksums of files over [`pack::INLINE_SUMS`] blocks in
/// sums records of the pack, outside the body.
pub const CATALOG_VERSION: u32 = 5;

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

/// The catalogs under a root ([`Catalog::list_all`]).
pub struct Listing {
    /// Those that loaded, by source path.
    pub states: Vec<CatalogState>,
    /// Each catalog directory that did not load, and why.
    pub unreadable: Vec<(PathBuf, anyhow::Error)>,
}

impl Listing {
    /// The states that loaded, after a warning in `report` for each
    /// catalog that did not, saying what is `left_out` because of it.
    pub fn loaded(self, report: &crate::report::Report, left_out: &str) -> Vec<CatalogState> {
        use std::os::unix::ffi::OsStrExt;
        for (dir, e) in self.unreadable {
            report.warn(dir.as_os_str().as_bytes(), format!("{e:#}; {left_out}"));
        }
        self.states
    }
}

impl CatalogState {
    /// Bytes of the sums records the tree names in the pack: what a
    /// compacted pack must hold besides the body's chunks.
    pub fn packed_sums_bytes(&self) -> u64 {
        self.tree
            .iter()
            .flat_map(|t| &t.inodes)
            .map(|i| match &i.sums {
                Sums::Packed(p) => pack::sums_record_len(p.count),
                Sums::Here(_) => 0,
            })
            .sum()
    }

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

/// Creates a catalog directory and the missing ones above it, readable by
/// their owner only: a catalog names every file of its source, those of
/// private directories too. Directories that exist keep their mode.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create catalog directory {}", dir.display()))
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

    /// Reads the checksums the state's tree left in the pack.
    pub fn sums(&self) -> pack::SumsReader {
        let m = self
            .manifest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pack::SumsReader::new(&self.dir, m.as_ref().map_or(0, |m| m.generation))
    }

    /// Writes the state atomically: new sums records and chunks appended
    /// to the pack (or a fresh pack), synced, then the manifest replaced
    /// (temp file, fsync, rename, fsync dir). On success the state's tree
    /// names its larger files' checksums in the pack; on failure it is as
    /// it was.
    pub fn commit(&mut self) -> Result<()> {
        create_private_dir(&self.dir)?;
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
        // Checksums move into the pack as references; each one moved is
        // remembered so a failed commit can put it back.
        let mut moved: Vec<(usize, Sums)> = Vec::new();
        let stored = store_state(&self.dir, manifest.as_ref(), &mut self.state, &mut moved);
        let new = match stored {
            Ok(new) => new,
            Err(e) => {
                if let Some(t) = self.state.tree.as_mut() {
                    for (i, sums) in moved {
                        t.inodes[i].sums = sums;
                    }
                }
                return Err(e);
            }
        };
        // The old checksums are in the pack now: free them off the
        // critical path.
        drop(moved);
        // From here the pack holds everything the manifest names.
        *manifest = Some(new);
        Ok(())
    }

    /// Every catalog under `root` that loads, for `snapshots` without a
    /// source, and what kept each of the others from loading: one damaged
    /// source's catalog must not hide every other source's snapshots.
    pub fn list_all(root: &Path) -> Result<Listing> {
        let dir = root.join("sources");
        let (mut out, mut damaged) = (Vec::new(), Vec::new());
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Listing {
                    states: out,
                    unreadable: damaged,
                })
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read catalog {}", dir.display()))
            }
        };
        for ent in rd {
            let path = ent
                .with_context(|| format!("cannot read catalog {}", dir.display()))?
                .path();
            match load(&path) {
                Ok(Some((state, _))) => out.push(state),
                Ok(None) => {}
                Err(e) => damaged.push((path, e)),
            }
        }
        out.sort_by(|a, b| a.source_path.cmp(&b.source_path));
        Ok(Listing {
            states: out,
            unreadable: damaged,
        })
    }
}

/// Stores the state's new checksums and body in the pack and commits the
/// manifest naming them; records in `moved` every inode whose checksums
/// it replaced with a reference, with what they were.
fn store_state(
    dir: &Path,
    prev: Option<&pack::Manifest>,
    state: &mut CatalogState,
    moved: &mut Vec<(usize, Sums)>,
) -> Result<pack::Manifest> {
    let live = state.packed_sums_bytes();
    // The records this commit adds: those of checksums held in memory.
    let new: u64 = state
        .tree
        .iter()
        .flat_map(|t| &t.inodes)
        .filter_map(|i| match &i.sums {
            Sums::Here(v) if v.len() > pack::INLINE_SUMS => {
                Some(pack::sums_record_len(v.len() as u32))
            }
            _ => None,
        })
        .sum();
    let mut w = pack::PackWriter::begin(dir, prev, live, new)?;
    if let Some(t) = state.tree.as_mut() {
        // A fresh pack gets a copy of every record the body keeps naming.
        let old = prev.map(|m| pack::SumsReader::new(dir, m.generation));
        let mut copied: std::collections::HashMap<u64, PackedSums> = Default::default();
        for (idx, inode) in t.inodes.iter_mut().enumerate() {
            let put = match &inode.sums {
                Sums::Here(v) if v.len() > pack::INLINE_SUMS => w.put_sums(v)?,
                Sums::Packed(p) if w.fresh() => match copied.get(&p.offset) {
                    Some(q) => *q,
                    None => {
                        let old = old.as_ref().ok_or_else(|| {
                            anyhow::anyhow!(
                                "catalog {}: checksums name a pack it does not have",
                                dir.display()
                            )
                        })?;
                        let q = w.put_sums(&old.read(p)?)?;
                        copied.insert(p.offset, q);
                        q
                    }
                },
                _ => continue,
            };
            moved.push((
                idx,
                std::mem::replace(&mut inode.sums, Sums::Packed(Box::new(put))),
            ));
        }
    }
    let hint = prev.map_or(0, |m| m.body_len() as usize);
    // The new body is about the loaded one's size: one allocation.
    let body = encode_body_sized(state, hint + hint / 8);
    let new = w.finish(&body)?;
    crate::failpoint::hit("catalog-packed");
    replace_file(
        &dir.join("catalog"),
        &crate::sealed::seal(&CATALOG_MAGIC, CATALOG_VERSION, &new.encode()),
    )?;
    crate::failpoint::hit("catalog-committed");
    // Committed: packs of other generations (the one a compaction
    // replaced, or one a crash left unnamed) are garbage now.
    pack::sweep(dir, new.generation);
    Ok(new)
}

/// Plane forms (catalog format 5 on): its words, or its runs of VBNs.
const PLANE_WORDS: u8 = 0;
const PLANE_RUNS: u8 = 1;
/// The highest VBN a plane stored as runs may reach (2^40 blocks, 4 PiB
/// of 4 KiB blocks). The body's checksums keep damage from reaching the
/// decoder; this bounds what a forged body can make it allocate.
pub const MAX_RUN_END: u64 = 1 << 40;

/// Writes a plane in the smaller of its two forms: a snapshot's plane is
/// mostly long runs, so a catalog with many snapshots stays small and
/// loads in time proportional to its runs, not its VBNs.
fn enc_plane(e: &mut Enc, p: &Plane) {
    let runs = p.runs();
    if runs.len() * 16 < p.words().len() * 8 {
        e.u8(PLANE_RUNS);
        e.u64(runs.len() as u64);
        for (v, n) in runs {
            e.u64(v);
            e.u64(n);
        }
    } else {
        e.u8(PLANE_WORDS);
        enc_words(e, p);
    }
}

fn enc_words(e: &mut Enc, p: &Plane) {
    e.u64(p.words().len() as u64);
    for w in p.words() {
        e.u64(*w);
    }
}

fn dec_plane(d: &mut Dec, version: u32, max_vbn: u64) -> Result<Plane> {
    if version < 5 {
        return dec_words(d);
    }
    match d.u8()? {
        PLANE_WORDS => dec_words(d),
        PLANE_RUNS => {
            let n = d.u64()? as usize;
            if n.saturating_mul(16) > d.remaining() {
                bail!("plane of {n} runs does not fit");
            }
            let mut p = Plane::new();
            let mut next = 1; // VBN 0 is never allocated
            for _ in 0..n {
                let (v, c) = (d.u64()?, d.u64()?);
                if v < next || c == 0 || v.checked_add(c).is_none_or(|e| e > max_vbn) {
                    bail!("plane run {v}+{c} is out of order or out of range");
                }
                p.set_run(v, c);
                next = v + c + 1;
            }
            Ok(p)
        }
        f => bail!("unknown plane form {f}"),
    }
}

fn dec_words(d: &mut Dec) -> Result<Plane> {
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
    // Each turn after the first follows a commit that compacted.
    for _ in 0..16 {
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
        let body = match pack::read_body(dir, &m) {
            Ok(body) => body,
            // Gone between reading the manifest and opening it: a commit
            // compacted. Its new manifest names the new pack; the same
            // manifest twice with its pack missing is a damaged catalog.
            Err(pack::ReadError::Missing) if last_missing.as_ref() != Some(&m) => {
                last_missing = Some(m);
                continue;
            }
            Err(pack::ReadError::Missing) => bail!(
                "catalog {}: its pack {} is missing; restore the catalog directory from a backup or remove it to start a new chain with a level-0 dump",
                file.display(),
                pack::pack_path(dir, m.generation).display()
            ),
            Err(pack::ReadError::Other(e)) => return Err(e),
        };
        let state =
            decode_body(&body, version).with_context(|| format!("catalog {}", file.display()))?;
        return Ok(Some((state, Some(m))));
    }
    bail!(
        "catalog {}: its pack changed under every read; try again when no dump is running",
        file.display()
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
    decode_body_within(body, version, MAX_RUN_END)
}

/// [`decode_body`] with planes stored as runs reaching at most VBN
/// `max_vbn` (a fuzzer's memory is smaller than a catalog's).
pub fn decode_body_within(body: &[u8], version: u32, max_vbn: u64) -> Result<CatalogState> {
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
        planes.push(dec_plane(&mut d, version, max_vbn)?);
    }
    let active = dec_plane(&mut d, version, max_vbn)?;
    let marks = MarkMaps {
        alloc: dec_plane(&mut d, version, max_vbn)?,
        dealloc: dec_plane(&mut d, version, max_vbn)?,
    };
    let items = d.u64()?;
    let tree = if items == 0 {
        None
    } else {
        let mut b = TreeBuilder::with_capacity(block_size as u64, items);
        for _ in 0..items {
            b.decode_item(
                &mut d,
                match version {
                    5.. => crate::tree::ItemForm::CATALOG,
                    3 | 4 => crate::tree::ItemForm::CATALOG_INLINE_SUMS,
                    _ => crate::tree::ItemForm::CATALOG_NO_FLAGS,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Attrs, Extent, Inode, Kind};

    fn state_with_file(blocks: u64) -> CatalogState {
        let mut tree = Tree::default();
        let root = tree.push_inode(0, Vec::new(), Inode::new(0, Kind::Dir, Attrs::default()));
        let mut f = Inode::new(0, Kind::File, Attrs::default());
        f.size = blocks * 4096;
        f.extents = vec![Extent {
            block: 0,
            vbn: 1,
            count: blocks,
        }];
        f.sums = Sums::Here(
            (0..blocks)
                .map(|b| (b as u128 * 7919).to_le_bytes())
                .collect(),
        );
        tree.push_inode(root, b"f".to_vec(), f);
        let mut active = Plane::new();
        active.set_run(1, blocks);
        CatalogState {
            source_uuid: [7; 16],
            source_path: b"/src".to_vec(),
            block_size: 4096,
            next_snap_id: 1,
            snapshots: Vec::new(),
            planes: Vec::new(),
            active,
            marks: MarkMaps::default(),
            tree: Some(tree),
            rules: None,
            flags_recorded: true,
        }
    }

    fn catalog_in(dir: &Path, state: CatalogState) -> Catalog {
        Catalog {
            dir: dir.to_path_buf(),
            state,
            manifest: std::sync::Mutex::new(None),
        }
    }

    #[test]
    fn a_commit_moves_large_checksums_into_the_pack_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = catalog_in(dir.path(), state_with_file(100));
        let before = c.state.tree.as_ref().unwrap().inode(2).sums.clone();
        c.commit().unwrap();
        let packed = &c.state.tree.as_ref().unwrap().inode(2).sums;
        assert!(matches!(packed, Sums::Packed(_)), "{packed:?}");
        let Sums::Here(want) = before else {
            unreachable!()
        };
        assert_eq!(*c.sums().get(packed).unwrap(), want[..]);
        // And from the catalog as loaded by another process.
        let (state, m) = load(dir.path()).unwrap().unwrap();
        let reader = pack::SumsReader::new(dir.path(), m.unwrap().generation);
        assert_eq!(
            *reader.get(&state.tree.unwrap().inode(2).sums).unwrap(),
            want[..]
        );
    }

    #[test]
    fn an_inode_stays_small() {
        // A tree holds millions: the checksums' place adds no word (216
        // bytes, as with checksums always in memory).
        assert!(
            std::mem::size_of::<crate::tree::Inode>() <= 216,
            "{}",
            std::mem::size_of::<crate::tree::Inode>()
        );
    }

    #[test]
    fn a_failed_commit_leaves_the_checksums_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        // The catalog file cannot be replaced: a directory holds its name.
        std::fs::create_dir(dir.path().join("catalog")).unwrap();
        std::fs::write(dir.path().join("catalog/x"), b"").unwrap();
        let mut c = catalog_in(dir.path(), state_with_file(100));
        assert!(c.commit().is_err());
        let sums = &c.state.tree.as_ref().unwrap().inode(2).sums;
        assert!(matches!(sums, Sums::Here(v) if v.len() == 100), "{sums:?}");
    }

    #[test]
    fn planes_of_runs_and_of_words_decode_to_what_was_encoded() {
        let mut sparse = Plane::new();
        for v in (1..5000).step_by(3) {
            sparse.set(v);
        }
        let mut runs = Plane::new();
        runs.set_run(1, 100_000);
        runs.set_run(200_000, 5);
        for p in [Plane::new(), sparse, runs] {
            let mut e = Enc::new();
            enc_plane(&mut e, &p);
            let mut d = Dec::new(&e.buf, "plane");
            assert_eq!(dec_plane(&mut d, CATALOG_VERSION, MAX_RUN_END).unwrap(), p);
            assert!(d.is_empty());
        }
        // Runs out of order, touching, or past the bound are refused.
        for bad in [[1u64, 5, 3, 1], [1, 5, 6, 1], [1, 5, 1 << 41, 1]] {
            let mut e = Enc::new();
            e.u8(PLANE_RUNS);
            e.u64(2);
            for x in bad {
                e.u64(x);
            }
            let mut d = Dec::new(&e.buf, "plane");
            assert!(
                dec_plane(&mut d, CATALOG_VERSION, MAX_RUN_END).is_err(),
                "{bad:?}"
            );
        }
    }
}
