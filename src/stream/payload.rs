//! Payloads of the data, deallocation, relocation and end records.

use crate::wire::{Dec, Enc};
use anyhow::{bail, Result};

/// Size of one encoded data segment descriptor.
pub const SEGMENT_LEN: usize = 28;

/// A run of blocks of one file inside a data record: `len` bytes starting at
/// byte `offset` of inode `ino`, stored at VBNs `vbn..vbn+ceil(len/bs)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Stream-local inode the bytes belong to.
    pub ino: u64,
    /// VBN of the first block.
    pub vbn: u64,
    /// Byte offset in the file (a multiple of the block size).
    pub offset: u64,
    /// Length in bytes (the last block may be partial at end of file).
    pub len: u32,
}

/// Appends the segment table to a data record payload whose first bytes
/// are already the segments' data. The table goes last so a dump can read
/// file data straight into the record buffer without moving it.
pub fn finish_data(buf: &mut Vec<u8>, segs: &[Segment]) {
    let mut e = Enc::new();
    for s in segs {
        e.u64(s.ino);
        e.u64(s.vbn);
        e.u64(s.offset);
        e.u32(s.len);
    }
    e.u32(segs.len() as u32);
    buf.extend_from_slice(&e.buf);
}

/// Encodes a data record payload from its segments and their bytes.
pub fn encode_data(segs: &[Segment], data: &[u8]) -> Vec<u8> {
    let mut buf = data.to_vec();
    finish_data(&mut buf, segs);
    buf
}

impl Segment {
    /// A gap (format 4): `len` bytes of the data area that belong to no
    /// file. Coalescing writes them when it copies a record whose blocks
    /// were partly superseded, so that it need not compress it again.
    pub fn gap(len: u32) -> Segment {
        Segment {
            ino: 0,
            vbn: 0,
            offset: 0,
            len,
        }
    }

    /// Whether this is a gap: bytes every reader skips.
    pub fn is_gap(&self) -> bool {
        self.vbn == 0
    }
}

/// Splits a data record payload into its whole segment table (gaps
/// included, in table order) and the length of the data area. Gaps are
/// accepted only when `gaps` is set (streams of format 4 on).
pub fn decode_table(raw: &[u8], gaps: bool) -> Result<(Vec<Segment>, usize)> {
    if raw.len() < 4 {
        bail!("data record is truncated");
    }
    let n = u32::from_le_bytes(raw[raw.len() - 4..].try_into().unwrap()) as usize;
    let table = n.saturating_mul(SEGMENT_LEN);
    if table > raw.len() - 4 {
        bail!(
            "data record: {n} segments cannot fit in {} bytes",
            raw.len()
        );
    }
    let data_len = raw.len() - 4 - table;
    let mut d = Dec::new(&raw[data_len..raw.len() - 4], "data record");
    let mut segs = Vec::with_capacity(n);
    let mut total = 0u64;
    for _ in 0..n {
        let s = Segment {
            ino: d.u64()?,
            vbn: d.u64()?,
            offset: d.u64()?,
            len: d.u32()?,
        };
        if s.len == 0 {
            bail!("data record: empty segment");
        }
        if s.vbn == 0 {
            if !gaps {
                bail!("data record: a segment at VBN 0 (gaps exist from stream format 4 on)");
            }
            if s.ino != 0 || s.offset != 0 {
                bail!("data record: a gap segment (VBN 0) with an inode or offset");
            }
        }
        total += s.len as u64;
        segs.push(s);
    }
    if data_len as u64 != total {
        bail!("data record: segments declare {total} bytes but {data_len} are present");
    }
    Ok((segs, data_len))
}

/// The file segments of a data record payload, each with its bytes, in
/// table order; gaps (see [`Segment::gap`]) are skipped here, so that no
/// consumer of data can forget to skip them.
pub fn decode_data(raw: &[u8], gaps: bool) -> Result<Vec<(Segment, &[u8])>> {
    let (segs, _) = decode_table(raw, gaps)?;
    let mut out = Vec::with_capacity(segs.len());
    let mut at = 0usize;
    for s in segs {
        let end = at + s.len as usize;
        if !s.is_gap() {
            out.push((s, &raw[at..end]));
        }
        at = end;
    }
    Ok(out)
}

/// A run of VBNs: `count` blocks from `vbn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VbnRun {
    /// First VBN.
    pub vbn: u64,
    /// Number of VBNs.
    pub count: u64,
}

/// The image record: which VBNs the data records carry (`top - base`) and
/// which the base held that the new snapshot does not (`base - top`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    /// VBN runs carried by the data records, ascending.
    pub carried: Vec<VbnRun>,
    /// VBN runs deallocated since the base, ascending.
    pub dealloc: Vec<VbnRun>,
}

fn enc_runs(e: &mut Enc, runs: &[VbnRun]) {
    e.u32(runs.len() as u32);
    for r in runs {
        e.u64(r.vbn);
        e.u64(r.count);
    }
}

fn dec_runs(d: &mut Dec) -> Result<Vec<VbnRun>> {
    let n = d.count(16)?;
    let mut v: Vec<VbnRun> = Vec::with_capacity(n);
    for _ in 0..n {
        let r = VbnRun {
            vbn: d.u64()?,
            count: d.u64()?,
        };
        let ok = r.vbn > 0
            && r.count > 0
            && r.vbn.checked_add(r.count).is_some()
            && v.last().is_none_or(|p| p.vbn + p.count <= r.vbn);
        if !ok {
            bail!("image record: VBN runs are empty, overlapping or unsorted");
        }
        v.push(r);
    }
    Ok(v)
}

impl Image {
    /// Encodes the image record payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        enc_runs(&mut e, &self.carried);
        enc_runs(&mut e, &self.dealloc);
        e.buf
    }
    /// Decodes and checks the image record payload.
    pub fn decode(raw: &[u8]) -> Result<Image> {
        let mut d = Dec::new(raw, "image record");
        let carried = dec_runs(&mut d)?;
        let dealloc = dec_runs(&mut d)?;
        d.finish()?;
        Ok(Image { carried, dealloc })
    }
    /// Number of carried blocks (saturating: the runs are untrusted).
    pub fn carried_blocks(&self) -> u64 {
        self.carried
            .iter()
            .fold(0u64, |a, r| a.saturating_add(r.count))
    }
    /// Runs of a plane.
    pub fn runs_of(p: &crate::planes::Plane) -> Vec<VbnRun> {
        p.runs()
            .into_iter()
            .map(|(vbn, count)| VbnRun { vbn, count })
            .collect()
    }
}

/// One relocation table entry: VBNs `vbn..vbn+count` are in the data record
/// whose header starts at stream byte `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelocEntry {
    /// First VBN.
    pub vbn: u64,
    /// Number of consecutive VBNs.
    pub count: u64,
    /// Stream offset of the data record holding them.
    pub offset: u64,
}

/// Encodes one relocation record payload.
pub fn encode_reloc(entries: &[RelocEntry]) -> Vec<u8> {
    let mut e = Enc::new();
    e.u32(entries.len() as u32);
    for r in entries {
        e.u64(r.vbn);
        e.u64(r.count);
        e.u64(r.offset);
    }
    e.buf
}

/// Decodes one relocation record payload.
pub fn decode_reloc(raw: &[u8]) -> Result<Vec<RelocEntry>> {
    let mut d = Dec::new(raw, "relocation record");
    let n = d.count(24)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(RelocEntry {
            vbn: d.u64()?,
            count: d.u64()?,
            offset: d.u64()?,
        });
    }
    d.finish()?;
    Ok(v)
}

/// Size of the end record's payload; fixed so a reader of a seekable stream
/// can find it from the end.
pub const END_LEN: usize = 88;

/// The trailer: counts a reader checks against what it saw, and the digest
/// of every stream byte before the end record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct End {
    /// Records before the end record.
    pub records: u64,
    /// Metadata items (dirents).
    pub entries: u64,
    /// Inodes.
    pub inodes: u64,
    /// Data blocks in data records.
    pub data_blocks: u64,
    /// Raw data bytes in data records.
    pub data_bytes: u64,
    /// Stream offset of the first relocation record.
    pub reloc_offset: u64,
    /// Number of relocation records.
    pub reloc_records: u64,
    /// The stream digest: the list hash (SHA-256 up to format 4, BLAKE3
    /// from format 5) over the list hashes of every record before this
    /// one, in order (a hash list: covers every byte, computed in parallel).
    pub digest: [u8; 32],
}

impl End {
    /// Encodes the end payload (always [`END_LEN`] bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        for v in [
            self.records,
            self.entries,
            self.inodes,
            self.data_blocks,
            self.data_bytes,
            self.reloc_offset,
            self.reloc_records,
        ] {
            e.u64(v);
        }
        e.fixed(&self.digest);
        e.buf
    }
    /// Decodes the end payload.
    pub fn decode(raw: &[u8]) -> Result<End> {
        let mut d = Dec::new(raw, "end record");
        let end = End {
            records: d.u64()?,
            entries: d.u64()?,
            inodes: d.u64()?,
            data_blocks: d.u64()?,
            data_bytes: d.u64()?,
            reloc_offset: d.u64()?,
            reloc_records: d.u64()?,
            digest: d.fixed(32)?.try_into().unwrap(),
        };
        d.finish()?;
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trip_and_length_check() {
        let segs = [Segment {
            ino: 2,
            vbn: 9,
            offset: 4096,
            len: 5,
        }];
        let raw = encode_data(&segs, b"hello");
        let got = decode_data(&raw, false).unwrap();
        assert_eq!(got, vec![(segs[0], &b"hello"[..])]);
        assert!(decode_data(&raw[..raw.len() - 1], false).is_err());
    }

    #[test]
    fn gaps_are_skipped_from_format_4_and_refused_before() {
        let file = Segment {
            ino: 2,
            vbn: 9,
            offset: 0,
            len: 3,
        };
        let segs = [Segment::gap(2), file, Segment::gap(1)];
        let raw = encode_data(&segs, b"--abc-");
        assert_eq!(decode_data(&raw, true).unwrap(), vec![(file, &b"abc"[..])]);
        assert_eq!(decode_table(&raw, true).unwrap(), (segs.to_vec(), 6));
        assert!(decode_data(&raw, false).is_err());
        // A gap names no inode and no offset.
        let bad = encode_data(
            &[Segment {
                ino: 2,
                ..Segment::gap(2)
            }],
            b"--",
        );
        assert!(decode_data(&bad, true).is_err());
        let bad = encode_data(
            &[Segment {
                offset: 4096,
                ..Segment::gap(2)
            }],
            b"--",
        );
        assert!(decode_data(&bad, true).is_err());
    }

    #[test]
    fn end_is_fixed_size() {
        assert_eq!(End::default().encode().len(), END_LEN);
    }
}
