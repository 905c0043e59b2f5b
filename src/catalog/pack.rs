//! Where a catalog's body lives from catalog format 4 on: cut into
//! content-defined chunks, each stored once in an append-only pack file,
//! and listed in order by a small manifest (formats/catalog.md, Chunks).
//!
//! Why: the body is the whole tree's metadata and every block's checksum
//! (tens of megabytes for a few million blocks), and most of it is the
//! same from one snapshot to the next. Rewriting it whole at every commit
//! made a commit cost the catalog's size; now a commit appends only the
//! chunks that changed and replaces the manifest atomically, as the
//! catalog file was replaced before. Content-defined boundaries (FastCDC,
//! the `fastcdc` crate) keep chunks after an insertion or a deletion
//! unchanged, where fixed-size chunks would all shift.

use crate::tree::{PackedSums, Sums};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Magic at the start of a pack file.
pub const PACK_MAGIC: [u8; 8] = *b"SDCPACK\0";
/// Magic of each chunk record in a pack.
pub const CHUNK_MAGIC: [u8; 4] = *b"SDCK";
/// Bytes of a pack's header: magic, version u32, generation u64.
pub const PACK_HEADER_LEN: u64 = 20;
/// Bytes of a chunk record's header: magic, raw_len u32, stored_len u32,
/// BLAKE3 of the raw chunk.
pub const CHUNK_HEADER_LEN: usize = 44;
/// Pack format version (a pack's header carries it).
pub const PACK_VERSION: u32 = 1;
/// The largest chunk a reader accepts, raw or stored (writers cut at
/// most 64 KiB), so a damaged manifest cannot make a reader allocate
/// without bound.
pub const MAX_RAW: u32 = 16 << 20;
/// Bytes of one manifest entry: offset u64, raw_len u32, stored_len u32,
/// hash [32].
pub const ENTRY_LEN: usize = 48;

// Chunk sizes: small enough that a changed file's items dirty little
// around them, large enough that the manifest (48 bytes a chunk) stays a
// few hundredths of the body.
const MIN_CHUNK: usize = 4 << 10;
const AVG_CHUNK: usize = 16 << 10;
const MAX_CHUNK: usize = 64 << 10;
/// A pack is rewritten with only its live chunks when appending would make
/// it longer than three times their bytes plus this much: compaction is
/// amortised (a compaction copies the live bytes once after at least
/// twice as many were appended), and dead bytes stay under two thirds.
pub const COMPACT_SLACK: u64 = 64 << 10;

/// One chunk of the body: where its record is in the pack, and what it
/// must decode to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    /// Offset of the chunk record in the pack file.
    pub offset: u64,
    /// Length of the chunk once decompressed.
    pub raw_len: u32,
    /// Length of its stored (zstd) bytes.
    pub stored_len: u32,
    /// BLAKE3 of the raw chunk.
    pub hash: [u8; 32],
}

/// The manifest: which pack, and the body's chunks in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Generation of the pack file the chunks are in (`catalog.pack.G`).
    pub generation: u64,
    /// The body's chunks, in order; their raw bytes concatenated are the
    /// body.
    pub chunks: Vec<ChunkRef>,
}

/// The pack file of generation `g` in the source's catalog directory.
pub fn pack_path(dir: &Path, g: u64) -> PathBuf {
    dir.join(format!("catalog.pack.{g}"))
}

impl Manifest {
    /// Encodes the manifest (the sealed catalog file's body in format 4).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = crate::wire::Enc::new();
        e.u64(self.generation);
        e.u64(self.body_len());
        e.u32(self.chunks.len() as u32);
        for c in &self.chunks {
            e.u64(c.offset);
            e.u32(c.raw_len);
            e.u32(c.stored_len);
            e.fixed(&c.hash);
        }
        e.buf
    }
    /// Decodes and checks a manifest.
    pub fn decode(raw: &[u8]) -> Result<Manifest> {
        let mut d = crate::wire::Dec::new(raw, "catalog manifest");
        let generation = d.u64()?;
        let body_len = d.u64()?;
        let n = d.count(ENTRY_LEN)?;
        let mut chunks = Vec::with_capacity(n);
        for _ in 0..n {
            let c = ChunkRef {
                offset: d.u64()?,
                raw_len: d.u32()?,
                stored_len: d.u32()?,
                hash: d.fixed(32)?.try_into().unwrap(),
            };
            if c.offset < PACK_HEADER_LEN
                || c.raw_len == 0
                || c.raw_len > MAX_RAW
                || c.stored_len == 0
                || c.stored_len > MAX_RAW
            {
                bail!("catalog manifest: a chunk entry is out of range");
            }
            chunks.push(c);
        }
        d.finish()?;
        let m = Manifest { generation, chunks };
        if m.body_len() != body_len || generation == 0 {
            bail!("catalog manifest: its chunks do not add up to the body length it records");
        }
        Ok(m)
    }
    /// Length of the body the chunks make.
    pub fn body_len(&self) -> u64 {
        self.chunks.iter().map(|c| c.raw_len as u64).sum()
    }
    /// Bytes of the distinct chunk records plus the pack header: what a
    /// compacted pack holds.
    pub fn live_bytes(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.chunks
            .iter()
            .filter(|c| seen.insert(c.offset))
            .map(|c| (CHUNK_HEADER_LEN + c.stored_len as usize) as u64)
            .sum::<u64>()
            + PACK_HEADER_LEN
    }
}

/// Why a body could not be read: its pack is missing (a compaction may
/// just have replaced it), or anything else.
#[derive(Debug)]
pub enum ReadError {
    /// The pack file does not exist.
    Missing,
    /// It cannot be opened, or it is damaged.
    Other(anyhow::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Missing => f.write_str("the catalog pack is missing"),
            ReadError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

/// Reads the body `m` lists from its pack in `dir`, checking every chunk.
pub fn read_body(dir: &Path, m: &Manifest) -> std::result::Result<Vec<u8>, ReadError> {
    let path = pack_path(dir, m.generation);
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Missing),
        Err(e) => {
            return Err(ReadError::Other(
                anyhow!(e).context(format!("cannot open catalog pack {}", path.display())),
            ))
        }
    };
    read_chunks(&f, &path, m).map_err(ReadError::Other)
}

/// Reads and checks every chunk `m` names from the open pack `f`.
fn read_chunks(f: &std::fs::File, path: &Path, m: &Manifest) -> Result<Vec<u8>> {
    let damaged = |what: String| {
        anyhow!(
            "catalog pack {}: {what} (damaged); restore the catalog directory from a backup or remove it to start a new chain with a level-0 dump",
            path.display()
        )
    };
    let mut head = [0u8; PACK_HEADER_LEN as usize];
    f.read_exact_at(&mut head, 0)
        .map_err(|e| damaged(format!("cannot read its header: {e}")))?;
    if head[..8] != PACK_MAGIC
        || u32::from_le_bytes(head[8..12].try_into().unwrap()) != PACK_VERSION
        || u64::from_le_bytes(head[12..20].try_into().unwrap()) != m.generation
    {
        return Err(damaged("bad header".into()));
    }
    let mut body = Vec::with_capacity(m.body_len().min(1 << 30) as usize);
    let mut rec = Vec::new();
    // One context for every chunk: making one costs more than a chunk's
    // decompression.
    let mut zstd =
        zstd::bulk::Decompressor::new().map_err(|e| damaged(format!("cannot start zstd: {e}")))?;
    for c in &m.chunks {
        rec.resize(CHUNK_HEADER_LEN + c.stored_len as usize, 0);
        f.read_exact_at(&mut rec, c.offset)
            .map_err(|e| damaged(format!("cannot read the chunk at byte {}: {e}", c.offset)))?;
        let ok_head = rec[..4] == CHUNK_MAGIC
            && rec[4..8] == c.raw_len.to_le_bytes()
            && rec[8..12] == c.stored_len.to_le_bytes()
            && rec[12..44] == c.hash;
        if !ok_head {
            return Err(damaged(format!(
                "the chunk at byte {} does not match the manifest",
                c.offset
            )));
        }
        let at = body.len();
        body.resize(at + c.raw_len as usize, 0);
        let n = zstd
            .decompress_to_buffer(&rec[CHUNK_HEADER_LEN..], &mut body[at..])
            .map_err(|e| {
                damaged(format!(
                    "the chunk at byte {} does not decompress: {e}",
                    c.offset
                ))
            })?;
        if n != c.raw_len as usize || *blake3::hash(&body[at..]).as_bytes() != c.hash {
            return Err(damaged(format!(
                "the chunk at byte {} fails its checksum",
                c.offset
            )));
        }
    }
    Ok(body)
}

/// Magic of each sums record in a pack.
pub const SUMS_MAGIC: [u8; 4] = *b"SDCS";
/// Bytes of a sums record's header: magic, count u32, BLAKE3 of the
/// checksums.
pub const SUMS_HEADER_LEN: usize = 40;
/// Files with at most this many blocks keep their checksums inline in the
/// body: a record and its reference would cost more than they save.
pub const INLINE_SUMS: usize = 16;

/// Bytes a sums record of `count` checksums takes in a pack.
pub fn sums_record_len(count: u32) -> u64 {
    SUMS_HEADER_LEN as u64 + 16 * count as u64
}

/// Reads the sums records of one pack, by reference (a dump reads the
/// checksums of the files that changed, and only those).
pub struct SumsReader {
    path: PathBuf,
    /// The pack and its length, once opened.
    file: std::sync::OnceLock<std::io::Result<(std::fs::File, u64)>>,
}

impl SumsReader {
    /// A reader of the pack of generation `g` in `dir` (opened when first
    /// read).
    pub fn new(dir: &Path, g: u64) -> SumsReader {
        SumsReader {
            path: pack_path(dir, g),
            file: std::sync::OnceLock::new(),
        }
    }

    /// The checksums `p` names, checked against its count and hash.
    pub fn read(&self, p: &PackedSums) -> Result<Vec<[u8; 16]>> {
        // A level 0 reads no earlier checksums and records new ones.
        let damaged = |what: String| {
            anyhow!(
                "catalog pack {}: {what} (damaged); a level-0 dump records the checksums afresh, or restore the catalog directory from a backup",
                self.path.display()
            )
        };
        let opened = self.file.get_or_init(|| {
            let f = std::fs::File::open(&self.path)?;
            let len = f.metadata()?.len();
            Ok((f, len))
        });
        let (f, len) = match opened {
            Ok((f, len)) => (f, *len),
            Err(e) => return Err(damaged(format!("cannot open it: {e}"))),
        };
        // Checked before allocating: a damaged reference cannot make a
        // reader allocate more than the pack holds.
        if p.offset < PACK_HEADER_LEN
            || p.count == 0
            || p.offset.saturating_add(sums_record_len(p.count)) > len
        {
            return Err(damaged(format!(
                "a reference to {} checksums at byte {} is out of range",
                p.count, p.offset
            )));
        }
        // The header, then the checksums straight into their vector.
        let mut head = [0u8; SUMS_HEADER_LEN];
        let mut sums = vec![[0u8; 16]; p.count as usize];
        f.read_exact_at(&mut head, p.offset)
            .and_then(|()| {
                f.read_exact_at(sums.as_flattened_mut(), p.offset + SUMS_HEADER_LEN as u64)
            })
            .map_err(|e| {
                damaged(format!(
                    "cannot read the checksums at byte {}: {e}",
                    p.offset
                ))
            })?;
        if head[..4] != SUMS_MAGIC
            || head[4..8] != p.count.to_le_bytes()
            || head[8..40] != p.hash
            || *blake3::hash(sums.as_flattened()).as_bytes() != p.hash
        {
            return Err(damaged(format!(
                "the checksums at byte {} fail their check",
                p.offset
            )));
        }
        Ok(sums)
    }

    /// The checksums of `s` in memory, read from the pack first if they
    /// are still there, for a caller that changes them.
    pub fn make_here<'a>(&self, s: &'a mut Sums) -> Result<&'a mut Vec<[u8; 16]>> {
        if let Sums::Packed(p) = s {
            *s = Sums::Here(self.read(p)?);
        }
        match s {
            Sums::Here(v) => Ok(v),
            Sums::Packed(_) => unreachable!("made Here above"),
        }
    }

    /// The checksums of `s`, from memory or from the pack.
    pub fn get<'a>(&self, s: &'a Sums) -> Result<std::borrow::Cow<'a, [[u8; 16]]>> {
        Ok(match s {
            Sums::Here(v) => std::borrow::Cow::Borrowed(v),
            Sums::Packed(p) => std::borrow::Cow::Owned(self.read(p)?),
        })
    }
}

/// Writes one commit into a pack: sums records first (the body names
/// them), then the body's chunks. Appends to the current pack, or starts
/// the next generation when there is none or the current one is mostly
/// dead bytes. Nothing is committed until the caller replaces the catalog
/// file with the sealed manifest [`PackWriter::finish`] returns: until
/// then every byte appended is unreferenced, and a crash leaves the old
/// manifest, whose records an append never touches.
pub struct PackWriter {
    w: PackAppender,
    generation: u64,
    /// The previous manifest's chunks, by hash, when appending to its pack.
    known: HashMap<[u8; 32], ChunkRef>,
    fresh: bool,
}

impl PackWriter {
    /// Opens the pack for a commit after `prev` (the manifest the catalog
    /// was loaded with). `live_sums` is the bytes of the sums records the
    /// new body keeps naming, `new_bytes` about what this commit adds:
    /// a pack that would grow past three times its live bytes plus
    /// [`COMPACT_SLACK`] is replaced by a fresh one.
    pub fn begin(
        dir: &Path,
        prev: Option<&Manifest>,
        live_sums: u64,
        new_bytes: u64,
    ) -> Result<PackWriter> {
        let reuse = prev.filter(|m| {
            let Some(len) = pack_len(dir, m.generation) else {
                return false;
            };
            let live = m.live_bytes() + live_sums;
            len.saturating_add(new_bytes) <= 3 * live.max(new_bytes) + COMPACT_SLACK
        });
        let generation = match (reuse, prev) {
            (Some(m), _) => m.generation,
            (None, Some(m)) => m.generation + 1,
            (None, None) => 1,
        };
        let w = PackAppender::open(&pack_path(dir, generation), generation, reuse.is_none())?;
        Ok(PackWriter {
            w,
            generation,
            known: reuse
                .map(|m| m.chunks.iter().map(|c| (c.hash, *c)).collect())
                .unwrap_or_default(),
            fresh: reuse.is_none(),
        })
    }

    /// Whether this commit writes a new pack: every record the body names,
    /// sums records too, must then be written into it.
    pub fn fresh(&self) -> bool {
        self.fresh
    }

    /// Appends a sums record of `sums` (at least one) and returns its
    /// reference.
    pub fn put_sums(&mut self, sums: &[[u8; 16]]) -> Result<PackedSums> {
        let raw = sums.as_flattened();
        let p = PackedSums {
            offset: self.w.at,
            count: u32::try_from(sums.len())
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    anyhow!(
                        "a file of {} blocks is too large for the catalog",
                        sums.len()
                    )
                })?,
            hash: *blake3::hash(raw).as_bytes(),
        };
        let mut head = [0u8; SUMS_HEADER_LEN];
        head[..4].copy_from_slice(&SUMS_MAGIC);
        head[4..8].copy_from_slice(&p.count.to_le_bytes());
        head[8..].copy_from_slice(&p.hash);
        self.w.write(&head, raw)?;
        crate::failpoint::hit("catalog-sums");
        Ok(p)
    }

    /// Cuts `body` into chunks, appends those the pack does not hold yet,
    /// syncs the pack, and returns the manifest that names them.
    pub fn finish(mut self, body: &[u8]) -> Result<Manifest> {
        let mut chunks = Vec::new();
        let mut zstd = zstd::bulk::Compressor::new(1)?;
        for c in fastcdc::v2020::FastCDC::new(body, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK) {
            let raw = &body[c.offset..c.offset + c.length];
            let h = *blake3::hash(raw).as_bytes();
            let c = match self.known.get(&h) {
                Some(c) => *c,
                None => {
                    let stored = zstd.compress(raw)?;
                    let c = self.w.append(raw, &stored, h)?;
                    crate::failpoint::hit("catalog-chunk");
                    // A chunk repeated in this body is stored once.
                    self.known.insert(h, c);
                    c
                }
            };
            chunks.push(c);
        }
        self.w.finish()?;
        Ok(Manifest {
            generation: self.generation,
            chunks,
        })
    }
}

/// Stores `body` alone (no sums records) for a commit after `prev`; see
/// [`PackWriter`]. For measuring the pack (`examples/catalog_speed`).
pub fn store(dir: &Path, prev: Option<&Manifest>, body: &[u8]) -> Result<Manifest> {
    PackWriter::begin(dir, prev, 0, body.len() as u64 / 8)?.finish(body)
}

/// Removes pack files other than generation `keep`: an older one after a
/// compaction committed, a newer one a crash left before its manifest.
/// Called only by a committer, which holds the source's lock.
pub fn sweep(dir: &Path, keep: u64) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(g) = name
            .to_str()
            .and_then(|n| n.strip_prefix("catalog.pack."))
            .and_then(|g| g.parse::<u64>().ok())
        else {
            continue;
        };
        if g != keep {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn pack_len(dir: &Path, g: u64) -> Option<u64> {
    std::fs::metadata(pack_path(dir, g)).ok().map(|m| m.len())
}

/// Appends chunk records to a pack file and syncs it when done.
struct PackAppender {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    at: u64,
    wrote: bool,
}

impl PackAppender {
    /// Opens pack `path` for appending, or creates it (truncating what a
    /// crash left under that name) when `fresh`.
    fn open(path: &Path, generation: u64, fresh: bool) -> Result<PackAppender> {
        let cannot = || {
            format!(
                "cannot write catalog pack {} (is the file system full or read-only?)",
                path.display()
            )
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(fresh)
            .open(path)
            .with_context(cannot)?;
        let mut at = f.metadata().with_context(cannot)?.len();
        if fresh || at == 0 {
            let mut head = Vec::with_capacity(PACK_HEADER_LEN as usize);
            head.extend_from_slice(&PACK_MAGIC);
            head.extend_from_slice(&PACK_VERSION.to_le_bytes());
            head.extend_from_slice(&generation.to_le_bytes());
            f.write_all(&head).with_context(cannot)?;
            at = PACK_HEADER_LEN;
        } else {
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(at)).with_context(cannot)?;
        }
        Ok(PackAppender {
            file: std::io::BufWriter::with_capacity(1 << 20, f),
            path: path.to_path_buf(),
            at,
            wrote: fresh,
        })
    }

    fn append(&mut self, raw: &[u8], stored: &[u8], hash: [u8; 32]) -> Result<ChunkRef> {
        let c = ChunkRef {
            offset: self.at,
            raw_len: raw.len() as u32,
            stored_len: stored.len() as u32,
            hash,
        };
        let mut head = [0u8; CHUNK_HEADER_LEN];
        head[..4].copy_from_slice(&CHUNK_MAGIC);
        head[4..8].copy_from_slice(&c.raw_len.to_le_bytes());
        head[8..12].copy_from_slice(&c.stored_len.to_le_bytes());
        head[12..].copy_from_slice(&hash);
        self.write(&head, stored)?;
        Ok(c)
    }

    /// Appends one record: its header, then its payload.
    fn write(&mut self, head: &[u8], payload: &[u8]) -> Result<()> {
        self.file
            .write_all(head)
            .and_then(|()| self.file.write_all(payload))
            .with_context(|| {
                format!(
                    "cannot write catalog pack {} (is the file system full or read-only?)",
                    self.path.display()
                )
            })?;
        self.at += (head.len() + payload.len()) as u64;
        self.wrote = true;
        Ok(())
    }

    /// Flushes and syncs what was appended (nothing to sync when nothing
    /// was), so that the manifest about to name the chunks never names
    /// bytes a crash could still lose.
    fn finish(self) -> Result<()> {
        let wrote = self.wrote;
        let path = self.path.clone();
        let f = self.file.into_inner().map_err(|e| {
            anyhow!(
                "cannot write catalog pack {}: {}",
                path.display(),
                e.error()
            )
        })?;
        if wrote {
            f.sync_all()
                .with_context(|| format!("cannot sync catalog pack {}", path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(seed: u64, n: usize) -> Vec<u8> {
        noise(seed, n, 7) // compressible
    }

    fn noise(seed: u64, n: usize, modulus: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % modulus) as u8
            })
            .collect()
    }

    #[test]
    fn a_body_stored_reads_back_and_a_small_change_appends_little() {
        let dir = tempfile::tempdir().unwrap();
        let b1 = body(1, 3 << 20);
        let m1 = store(dir.path(), None, &b1).unwrap();
        assert_eq!(read_body(dir.path(), &m1).unwrap(), b1);
        assert_eq!(Manifest::decode(&m1.encode()).unwrap(), m1);
        let len1 = pack_len(dir.path(), 1).unwrap();
        // One byte changed in the middle and 100 bytes inserted.
        let mut b2 = b1.clone();
        b2[1 << 20] ^= 0xff;
        b2.splice(2 << 20..2 << 20, [9u8; 100]);
        let m2 = store(dir.path(), Some(&m1), &b2).unwrap();
        assert_eq!(m2.generation, 1);
        assert_eq!(read_body(dir.path(), &m2).unwrap(), b2);
        // The old manifest still reads: appends never touch its chunks.
        assert_eq!(read_body(dir.path(), &m1).unwrap(), b1);
        let grew = pack_len(dir.path(), 1).unwrap() - len1;
        assert!(grew < 4 * MAX_CHUNK as u64, "appended {grew} bytes");
        // The same body again appends nothing.
        let m3 = store(dir.path(), Some(&m2), &b2).unwrap();
        assert_eq!(m3, m2);
    }

    #[test]
    fn a_mostly_dead_pack_is_compacted_into_the_next_generation() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = store(dir.path(), None, &noise(1, 4 << 20, 251)).unwrap();
        for i in 2..8 {
            let b = noise(i, 4 << 20, 251);
            m = store(dir.path(), Some(&m), &b).unwrap();
            assert_eq!(read_body(dir.path(), &m).unwrap(), b);
        }
        assert!(m.generation > 1, "the pack was never compacted");
        sweep(dir.path(), m.generation);
        let packs = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(packs, 1);
        assert!(pack_len(dir.path(), m.generation).unwrap() <= 3 * m.live_bytes() + COMPACT_SLACK);
    }

    #[test]
    fn damage_in_a_chunk_or_the_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let b = body(3, 1 << 20);
        let m = store(dir.path(), None, &b).unwrap();
        let path = pack_path(dir.path(), 1);
        let good = std::fs::read(&path).unwrap();
        for at in [
            0,
            13,
            PACK_HEADER_LEN as usize + 2,
            PACK_HEADER_LEN as usize + 50,
            good.len() - 1,
        ] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            let e = read_body(dir.path(), &m).unwrap_err().to_string();
            assert!(e.contains("damaged"), "byte {at}: {e}");
        }
        std::fs::write(&path, &good[..good.len() - 10]).unwrap();
        assert!(read_body(dir.path(), &m).is_err());
        let enc = m.encode();
        assert!(Manifest::decode(&enc[..enc.len() - 1]).is_err());
        let mut bad = enc.clone();
        bad[8] ^= 1; // the body length
        assert!(Manifest::decode(&bad).is_err());
    }
}
