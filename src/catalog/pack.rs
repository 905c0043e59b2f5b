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

/// Reads the body `m` lists from its pack in `dir`, checking every chunk.
pub fn read_body(dir: &Path, m: &Manifest) -> Result<Vec<u8>> {
    let path = pack_path(dir, m.generation);
    let f = std::fs::File::open(&path)
        .with_context(|| format!("cannot open catalog pack {}", path.display()))?;
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

/// Stores `body` for a commit: appends the chunks `prev` (the manifest the
/// catalog was loaded with) does not already hold to its pack, or writes
/// a new pack when there is none or when the old one is mostly dead
/// bytes, syncs it, and returns the new manifest. Nothing is committed
/// until the caller replaces the catalog file with the sealed manifest:
/// until then every byte appended is unreferenced, and a crash leaves the
/// old manifest, whose chunks an append never touches.
pub fn store(dir: &Path, prev: Option<&Manifest>, body: &[u8]) -> Result<Manifest> {
    let cuts: Vec<(usize, usize)> =
        fastcdc::v2020::FastCDC::new(body, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
            .map(|c| (c.offset, c.length))
            .collect();
    let known: HashMap<[u8; 32], ChunkRef> = prev
        .map(|m| m.chunks.iter().map(|c| (c.hash, *c)).collect())
        .unwrap_or_default();
    let hashes: Vec<[u8; 32]> = cuts
        .iter()
        .map(|&(o, l)| *blake3::hash(&body[o..o + l]).as_bytes())
        .collect();
    // Append to the old pack, unless there is none or it would be mostly
    // dead: then every chunk goes into a pack of the next generation.
    let reuse = prev.filter(|m| {
        let Some(len) = pack_len(dir, m.generation) else {
            return false;
        };
        let new: u64 = cuts
            .iter()
            .zip(&hashes)
            .filter(|(_, h)| !known.contains_key(*h))
            .map(|(&(_, l), _)| l as u64)
            .sum();
        len.saturating_add(new) <= 3 * m.live_bytes().max(new) + COMPACT_SLACK
    });
    let generation = match (reuse, prev) {
        (Some(m), _) => m.generation,
        (None, Some(m)) => m.generation + 1,
        (None, None) => 1,
    };
    let path = pack_path(dir, generation);
    let mut w = PackAppender::open(&path, generation, reuse.is_none())?;
    let mut chunks = Vec::with_capacity(cuts.len());
    let mut written: HashMap<[u8; 32], ChunkRef> = HashMap::new();
    let mut zstd = zstd::bulk::Compressor::new(1)?;
    for (&(o, l), h) in cuts.iter().zip(&hashes) {
        let c = match (reuse.and(known.get(h)), written.get(h)) {
            (Some(c), _) | (None, Some(c)) => *c,
            (None, None) => {
                let stored = zstd.compress(&body[o..o + l])?;
                let c = w.append(&body[o..o + l], &stored, *h)?;
                crate::failpoint::hit("catalog-chunk");
                written.insert(*h, c);
                c
            }
        };
        chunks.push(c);
    }
    w.finish()?;
    Ok(Manifest { generation, chunks })
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
        self.file
            .write_all(&head)
            .and_then(|()| self.file.write_all(stored))
            .with_context(|| {
                format!(
                    "cannot write catalog pack {} (is the file system full or read-only?)",
                    self.path.display()
                )
            })?;
        self.at += (CHUNK_HEADER_LEN + stored.len()) as u64;
        self.wrote = true;
        Ok(c)
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
