//! Writes records in one sequential pass, keeping the running digest list and
//! the relocation table, and closes the stream with the end record.

use super::payload::{encode_reloc, End, RelocEntry, Segment};
use super::record::{seal, RecordKind, Sealed};
use super::RELOC_PER_RECORD;
use anyhow::{Context, Result};
use std::io::Write;

/// The sequential writer of one stream.
pub struct StreamWriter {
    out: Box<dyn Write + Send>,
    offset: u64,
    next_seq: u64,
    digests: crate::digest::Running,
    /// The digest list's hash (by the header's format version).
    hash: crate::digest::ListHash,
    reloc: Vec<RelocEntry>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// Counts that go into the end record.
    pub end: End,
    block_size: u64,
    /// Checksum seed of the records after the header record.
    seed: u64,
    /// The fields of metadata items in this stream's format version.
    form: crate::tree::ItemForm,
}

impl StreamWriter {
    /// A writer over `out`; `level` 0 disables compression.
    pub fn new(out: Box<dyn Write + Send>, level: i32, block_size: u32) -> Result<Self> {
        let zstd = if level != 0 {
            Some(zstd::bulk::Compressor::new(level)?)
        } else {
            None
        };
        Ok(StreamWriter {
            out,
            offset: 0,
            next_seq: 0,
            digests: crate::digest::ListHash::Blake3.running(),
            hash: crate::digest::ListHash::Blake3,
            reloc: Vec::new(),
            zstd,
            end: End::default(),
            block_size: block_size as u64,
            seed: 0,
            form: crate::tree::ItemForm::CURRENT,
        })
    }
    /// Writes the header record (always the first, seed 0) and binds every
    /// later record to the stream through the header's checksum seed.
    pub fn write_header(&mut self, h: &super::header::StreamHeader) -> Result<u64> {
        self.write_record(RecordKind::Header, &h.encode())
    }
    /// The checksum seed the stream's records after the header carry.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// Sequence number the next record must carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
    /// The fields metadata items have in this stream (by the header's
    /// format version).
    pub fn item_form(&self) -> crate::tree::ItemForm {
        self.form
    }
    /// The hash of the stream's digest list (by the header's format
    /// version), which workers sealing records elsewhere must use.
    pub fn list_hash(&self) -> crate::digest::ListHash {
        self.hash
    }
    /// Block size of the stream.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }
    /// Seals and writes one record; returns its stream offset. A header
    /// record's own payload decides the seed of the records after it (so
    /// crafted headers in tests and fuzzing bind their streams too).
    pub fn write_record(&mut self, kind: RecordKind, raw: &[u8]) -> Result<u64> {
        if raw.len() > super::record::MAX_PAYLOAD as usize {
            anyhow::bail!(
                "the stream's {} record would take {} bytes, more than a record holds ({} bytes); this version cannot write it (a level 0 makes the image record small again)",
                super::reader::kind_name(kind),
                raw.len(),
                super::record::MAX_PAYLOAD
            );
        }
        // The header and end records are never compressed (stream.md): a
        // tape layer or a reader at the end of a file reads them raw.
        let zstd = match kind {
            RecordKind::Header | RecordKind::End => None,
            _ => self.zstd.as_mut(),
        };
        let seed = if kind == RecordKind::Header {
            0
        } else {
            self.seed
        };
        let rec = seal(kind, self.next_seq, raw, zstd, seed);
        if kind == RecordKind::Header {
            let h = super::header::StreamHeader::decode(raw).ok();
            self.seed = h.as_ref().map(|h| h.seed()).unwrap_or(0);
            self.hash = crate::digest::ListHash::of_version(
                h.as_ref()
                    .map(|h| h.format_version)
                    .unwrap_or(super::header::FORMAT_VERSION),
            );
            self.digests = self.hash.running();
            self.form = h
                .map(|h| super::header::item_form(h.format_version))
                .unwrap_or(crate::tree::ItemForm::CURRENT);
        }
        self.put(&rec)?;
        self.digests.update(&self.hash.of(&[&rec]));
        let at = self.offset;
        self.offset += rec.len() as u64;
        self.next_seq += 1;
        Ok(at)
    }
    /// Writes a record sealed elsewhere (by a compression worker, which
    /// also computed its digest) with the next sequence number; returns its
    /// stream offset.
    pub fn write_sealed(&mut self, rec: &Sealed, digest: &[u8; 32]) -> Result<u64> {
        debug_assert_eq!(
            u64::from_le_bytes(rec.header[8..16].try_into().unwrap()),
            self.next_seq
        );
        self.put(&rec.header)?;
        self.put(&rec.payload)?;
        self.digests.update(digest);
        let at = self.offset;
        self.offset += (rec.header.len() + rec.payload.len()) as u64;
        self.next_seq += 1;
        Ok(at)
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).context("cannot write to the output")
    }
    /// Notes the segments of a data record written at `offset`, for the
    /// relocation table and the end counts.
    pub fn note_data(&mut self, segs: &[Segment], offset: u64) {
        for s in segs.iter().filter(|s| !s.is_gap()) {
            let blocks = (s.len as u64).div_ceil(self.block_size);
            self.end.data_blocks += blocks;
            self.end.data_bytes += s.len as u64;
            match self.reloc.last_mut() {
                Some(r) if r.offset == offset && r.vbn + r.count == s.vbn => r.count += blocks,
                _ => self.reloc.push(RelocEntry {
                    vbn: s.vbn,
                    count: blocks,
                    offset,
                }),
            }
        }
    }
    /// Writes the relocation table and the end record, flushes, and returns
    /// the end record and the output (for the caller to sync and close).
    pub fn finish(mut self) -> Result<(End, Box<dyn Write + Send>, u64)> {
        let reloc = std::mem::take(&mut self.reloc);
        self.end.reloc_offset = self.offset;
        for chunk in reloc.chunks(RELOC_PER_RECORD) {
            self.write_record(RecordKind::Reloc, &encode_reloc(chunk))?;
            self.end.reloc_records += 1;
        }
        self.end.records = self.next_seq;
        self.end.digest = self.digests.current();
        let rec = seal(
            RecordKind::End,
            self.next_seq,
            &self.end.encode(),
            None,
            self.seed,
        );
        self.out
            .write_all(&rec)
            .context("cannot write to the output")?;
        self.offset += rec.len() as u64;
        self.out.flush().context("cannot write to the output")?;
        Ok((self.end, self.out, self.offset))
    }
}
