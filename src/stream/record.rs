//! Record framing: every byte of a stream lives in a record whose header and
//! payload are each covered by an XXH3-64 checksum (formats/stream.md).
//!
//! Records are self-delimiting and start with a magic, so a damaged stream
//! is detected at the first bad record, with its sequence number and offset.
//!
//! From format version 2 on, both checksums of every record but the header
//! record are seeded with the stream's id (its checksum seed, see
//! [`crate::stream::header::StreamHeader::seed`]): a record of another
//! stream fails its checksums here exactly as a damaged one does, so two
//! streams cannot be spliced into one that reads as whole. Format 1 and
//! every header record use seed 0.

use anyhow::{bail, Result};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Magic at the start of every record header.
pub const MAGIC: [u8; 4] = *b"SDRC";
/// Size of a record header in bytes.
pub const HEADER_LEN: usize = 40;
/// Largest payload (raw or stored) a reader accepts; bounds memory use on
/// hostile input. Writers stay far below it.
pub const MAX_PAYLOAD: u32 = 16 << 20;
/// Flag bit: the payload is zstd data. Writers write one frame (for data
/// records of format 4 two: the data area's and the segment table's);
/// readers accept any frames whose contents add up to the raw length.
pub const FLAG_ZSTD: u8 = 1;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// Stream header: format version, source, snapshot, level, base.
    Header = 1,
    /// A batch of metadata items (dirents and inodes).
    Meta = 2,
    /// The image: VBNs carried by the data records, and VBNs freed since
    /// the base. Precedes the data so a target can plan before it arrives.
    Image = 3,
    /// VBN-tagged data blocks.
    Data = 4,
    /// Part of the relocation table (VBN to stream offset).
    Reloc = 5,
    /// Trailer: counts and the digest of the whole stream.
    End = 6,
}

impl RecordKind {
    fn from_u8(v: u8) -> Option<RecordKind> {
        Some(match v {
            1 => RecordKind::Header,
            2 => RecordKind::Meta,
            3 => RecordKind::Image,
            4 => RecordKind::Data,
            5 => RecordKind::Reloc,
            6 => RecordKind::End,
            _ => return None,
        })
    }
}

/// A parsed, checksum-verified record header.
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    /// Record kind.
    pub kind: RecordKind,
    /// Flags (FLAG_ZSTD).
    pub flags: u8,
    /// Sequence number; record i of a stream has seq i.
    pub seq: u64,
    /// Payload bytes that follow the header.
    pub stored_len: u32,
    /// Payload bytes after decompression.
    pub raw_len: u32,
    /// XXH3-64 of the stored payload.
    pub payload_hash: u64,
}

/// A record ready to write: its header and its stored payload.
pub struct Sealed {
    /// The 40-byte header.
    pub header: [u8; HEADER_LEN],
    /// The stored payload (compressed or raw).
    pub payload: Vec<u8>,
}

/// XXH3-64 of `b` under the stream's checksum seed.
pub fn checksum(b: &[u8], seed: u64) -> u64 {
    xxh3_64_with_seed(b, seed)
}

fn make_header(
    kind: RecordKind,
    flags: u8,
    seq: u64,
    stored: &[u8],
    raw_len: usize,
    seed: u64,
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = kind as u8;
    h[5] = flags;
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..20].copy_from_slice(&(stored.len() as u32).to_le_bytes());
    h[20..24].copy_from_slice(&(raw_len as u32).to_le_bytes());
    h[24..32].copy_from_slice(&checksum(stored, seed).to_le_bytes());
    let hh = checksum(&h[..32], seed);
    h[32..40].copy_from_slice(&hh.to_le_bytes());
    h
}

/// Seals `raw` into a record of the stream whose checksum seed is `seed`,
/// compressing into `scratch` when `zstd` is given and that makes it
/// smaller. Returns the record and whichever buffer was not used, so hot
/// loops can recycle buffers instead of allocating.
pub fn seal_owned(
    kind: RecordKind,
    seq: u64,
    raw: Vec<u8>,
    zstd: Option<&mut zstd::bulk::Compressor<'_>>,
    mut scratch: Vec<u8>,
    seed: u64,
) -> (Sealed, Vec<u8>) {
    assert!(
        raw.len() <= MAX_PAYLOAD as usize,
        "record payload too large"
    );
    let raw_len = raw.len();
    let mut compressed = false;
    if let Some(c) = zstd {
        scratch.clear();
        scratch.reserve(zstd::zstd_safe::compress_bound(raw_len));
        if let Ok(n) = c.compress_to_buffer(&raw[..], &mut scratch) {
            compressed = n < raw_len;
        }
    }
    let (payload, spare) = if compressed {
        (scratch, raw)
    } else {
        (raw, scratch)
    };
    let header = make_header(
        kind,
        compressed as u8 * FLAG_ZSTD,
        seq,
        &payload,
        raw_len,
        seed,
    );
    (Sealed { header, payload }, spare)
}

/// Seals a data record payload `raw` whose first `data_len` bytes are its
/// data area: compressed, the data area and the segment table are two zstd
/// frames, so that a later coalesce can copy the data area's frame as it
/// is and write a new table behind it (formats/stream.md, Data).
pub fn seal_data(
    seq: u64,
    raw: Vec<u8>,
    data_len: usize,
    zstd: Option<&mut zstd::bulk::Compressor<'_>>,
    mut scratch: Vec<u8>,
    seed: u64,
) -> (Sealed, Vec<u8>) {
    assert!(
        raw.len() <= MAX_PAYLOAD as usize,
        "record payload too large"
    );
    let raw_len = raw.len();
    let mut compressed = false;
    if let Some(c) = zstd {
        scratch.clear();
        scratch.reserve(zstd::zstd_safe::compress_bound(raw_len));
        if let (Ok(n), Ok(table)) = (
            c.compress_to_buffer(&raw[..data_len], &mut scratch),
            c.compress(&raw[data_len..]),
        ) {
            scratch.extend_from_slice(&table);
            compressed = n + table.len() < raw_len;
        }
    }
    let (payload, spare) = if compressed {
        (scratch, raw)
    } else {
        (raw, scratch)
    };
    (
        seal_stored(RecordKind::Data, seq, payload, compressed, raw_len, seed),
        spare,
    )
}

/// Seals a payload already in its stored form: `payload` is zstd data that
/// decompresses to `raw_len` bytes when `compressed`, else the raw bytes.
pub fn seal_stored(
    kind: RecordKind,
    seq: u64,
    payload: Vec<u8>,
    compressed: bool,
    raw_len: usize,
    seed: u64,
) -> Sealed {
    assert!(payload.len() <= MAX_PAYLOAD as usize && raw_len <= MAX_PAYLOAD as usize);
    debug_assert!(compressed || payload.len() == raw_len);
    let header = make_header(
        kind,
        compressed as u8 * FLAG_ZSTD,
        seq,
        &payload,
        raw_len,
        seed,
    );
    Sealed { header, payload }
}

/// The zstd frame of a compressed data record's data area, when the
/// record's writer made it a frame of its own (format 4 writers do) that
/// declares exactly `data_len` bytes; `None` otherwise (one frame for the
/// whole payload, as format 3 writers made it). Only a payload that has
/// already decompressed whole is asked: zstd checks a frame's declared
/// size as it decodes, so the frame returned decodes to the data area.
pub fn data_frame(stored: &[u8], data_len: usize) -> Option<&[u8]> {
    let n = zstd::zstd_safe::find_frame_compressed_size(stored).ok()?;
    let frame = stored.get(..n)?;
    let size = zstd::zstd_safe::get_frame_content_size(frame).ok()??;
    (data_len > 0 && size == data_len as u64 && n < stored.len()).then_some(frame)
}

impl Sealed {
    /// The record's hash (header and payload) in the list hash `hash`:
    /// its entry in the stream's digest list.
    pub fn digest(&self, hash: crate::digest::ListHash) -> [u8; 32] {
        hash.of(&[&self.header, &self.payload])
    }
}

/// Seals `raw` into one contiguous record (header + payload) of the stream
/// whose checksum seed is `seed`.
pub fn seal(
    kind: RecordKind,
    seq: u64,
    raw: &[u8],
    zstd: Option<&mut zstd::bulk::Compressor<'_>>,
    seed: u64,
) -> Vec<u8> {
    let (s, _) = seal_owned(kind, seq, raw.to_vec(), zstd, Vec::new(), seed);
    let mut out = Vec::with_capacity(HEADER_LEN + s.payload.len());
    out.extend_from_slice(&s.header);
    out.extend_from_slice(&s.payload);
    out
}

/// Parses and checks a record header (magic, header checksum under the
/// stream's checksum `seed`, lengths).
pub fn parse_header(b: &[u8; HEADER_LEN], seed: u64) -> Result<RecordHeader> {
    if b[..4] != MAGIC {
        bail!("bad record magic (not a snapdump stream, or damaged)");
    }
    let hh = u64::from_le_bytes(b[32..40].try_into().unwrap());
    if checksum(&b[..32], seed) != hh {
        bail!("record header checksum mismatch (damaged, or a record of another stream)");
    }
    let Some(kind) = RecordKind::from_u8(b[4]) else {
        bail!("unknown record kind {}", b[4]);
    };
    let flags = b[5];
    if flags & !FLAG_ZSTD != 0 || b[6] != 0 || b[7] != 0 {
        bail!("record uses flags this snapdump does not know ({flags:#x}); upgrade snapdump");
    }
    let stored_len = u32::from_le_bytes(b[16..20].try_into().unwrap());
    let raw_len = u32::from_le_bytes(b[20..24].try_into().unwrap());
    if stored_len > MAX_PAYLOAD || raw_len > MAX_PAYLOAD {
        bail!("record length {stored_len}/{raw_len} exceeds the format limit");
    }
    if flags & FLAG_ZSTD == 0 && stored_len != raw_len {
        bail!("uncompressed record with inconsistent lengths");
    }
    Ok(RecordHeader {
        kind,
        flags,
        seq: u64::from_le_bytes(b[8..16].try_into().unwrap()),
        stored_len,
        raw_len,
        payload_hash: u64::from_le_bytes(b[24..32].try_into().unwrap()),
    })
}

/// As [`open`], taking the stored payload by value: returns the raw bytes
/// and, for a compressed payload, the stored bytes too (coalescing copies
/// them); an uncompressed payload is its own raw form, not copied.
pub fn open_owned(
    h: &RecordHeader,
    stored: Vec<u8>,
    seed: u64,
) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    if h.flags & FLAG_ZSTD == 0 {
        if checksum(&stored, seed) != h.payload_hash {
            bail!("payload checksum mismatch (damaged stream)");
        }
        return Ok((stored, None));
    }
    let raw = open(h, &stored, seed)?;
    Ok((raw, Some(stored)))
}

/// Checks a stored payload against its header (under the stream's
/// checksum `seed`) and returns the raw bytes. Decompression is capped at
/// the declared raw length, so a crafted frame cannot balloon memory.
pub fn open(h: &RecordHeader, stored: &[u8], seed: u64) -> Result<Vec<u8>> {
    if checksum(stored, seed) != h.payload_hash {
        bail!("payload checksum mismatch (damaged stream)");
    }
    if h.flags & FLAG_ZSTD == 0 {
        return Ok(stored.to_vec());
    }
    // One decompression context per thread: creating one per record costs
    // as much as decoding a small record.
    thread_local! {
        static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let raw = DCTX
        .with(|d| -> std::io::Result<Vec<u8>> {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new()?);
            }
            d.as_mut()
                .expect("set above")
                .decompress(stored, h.raw_len as usize)
        })
        .map_err(|e| anyhow::anyhow!("payload does not decompress: {e}"))?;
    if raw.len() != h.raw_len as usize {
        bail!(
            "payload decompressed to {} bytes, header says {}",
            raw.len(),
            h.raw_len
        );
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_parse_open() {
        let raw = vec![7u8; 10000];
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        let rec = seal(RecordKind::Data, 5, &raw, Some(&mut c), 99);
        assert!(rec.len() < 1000);
        let h = parse_header(rec[..HEADER_LEN].try_into().unwrap(), 99).unwrap();
        assert_eq!(h.seq, 5);
        assert_eq!(h.kind, RecordKind::Data);
        assert_eq!(open(&h, &rec[HEADER_LEN..], 99).unwrap(), raw);
    }

    #[test]
    fn a_record_of_another_stream_fails_its_checksums() {
        let rec = seal(RecordKind::Meta, 3, b"payload", None, 0x1234);
        let hb: &[u8; HEADER_LEN] = rec[..HEADER_LEN].try_into().unwrap();
        assert!(parse_header(hb, 0x1235).is_err());
        assert!(parse_header(hb, 0).is_err());
        let h = parse_header(hb, 0x1234).unwrap();
        assert!(open(&h, &rec[HEADER_LEN..], 7).is_err());
    }

    #[test]
    fn every_byte_is_covered() {
        let raw: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        let rec = seal(RecordKind::Meta, 1, &raw, None, 42);
        for i in 0..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x10;
            let ok = parse_header(bad[..HEADER_LEN].try_into().unwrap(), 42)
                .and_then(|h| open(&h, &bad[HEADER_LEN..], 42));
            assert!(ok.is_err(), "flip at {i} undetected");
        }
    }
}
