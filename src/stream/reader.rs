//! Reads a stream record by record in one sequential pass, checking every
//! checksum, the record order and, at the end, the whole-stream SHA-256.

use super::header::StreamHeader;
use super::payload::End;
use super::record::{open, parse_header, RecordKind, HEADER_LEN};
use anyhow::{anyhow, bail, Result};
use sha2::{Digest, Sha256};
use std::io::Read;

/// One verified record.
pub struct Record {
    /// What it holds.
    pub kind: RecordKind,
    /// Its sequence number.
    pub seq: u64,
    /// Stream offset of its header.
    pub offset: u64,
    /// The raw (decompressed) payload.
    pub raw: Vec<u8>,
}

/// A sequential reader of one stream.
pub struct StreamReader<R: Read> {
    inner: R,
    name: String,
    offset: u64,
    next_seq: u64,
    last_kind: RecordKind,
    sha: Sha256,
    /// The stream header, read when the reader was opened.
    pub header: StreamHeader,
    /// The end record, once reached and verified.
    pub end: Option<End>,
}

fn kind_name(k: RecordKind) -> &'static str {
    match k {
        RecordKind::Header => "header",
        RecordKind::Meta => "metadata",
        RecordKind::Data => "data",
        RecordKind::Dealloc => "deallocation",
        RecordKind::Reloc => "relocation",
        RecordKind::End => "end",
    }
}

impl<R: Read> StreamReader<R> {
    /// Reads and checks the header record; `name` is used in messages.
    pub fn open(inner: R, name: &str) -> Result<Self> {
        let mut r = StreamReader {
            inner,
            name: name.to_string(),
            offset: 0,
            next_seq: 0,
            last_kind: RecordKind::Header,
            sha: Sha256::new(),
            header: dummy_header(),
            end: None,
        };
        let rec = r
            .next_raw()?
            .ok_or_else(|| anyhow!("{}: empty input: not a snapdump stream", r.name))?;
        if rec.kind != RecordKind::Header {
            bail!("{}: first record is not a stream header", r.name);
        }
        r.header = StreamHeader::decode(&rec.raw).map_err(|e| anyhow!("{}: {e}", r.name))?;
        Ok(r)
    }

    /// Stream bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn read_exact_at(&mut self, buf: &mut [u8], what: &str) -> Result<bool> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => {
                    if done == 0 && what == "header-start" {
                        return Ok(false);
                    }
                    bail!(
                        "{}: stream truncated at byte {} (inside record {}); the stream is incomplete",
                        self.name,
                        self.offset + done as u64,
                        self.next_seq
                    );
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => bail!(
                    "{}: read error at byte {}: {e}",
                    self.name,
                    self.offset + done as u64
                ),
            }
        }
        Ok(true)
    }

    fn next_raw(&mut self) -> Result<Option<Record>> {
        let at = self.offset;
        let mut hb = [0u8; HEADER_LEN];
        if !self.read_exact_at(&mut hb, "header-start")? {
            return Ok(None);
        }
        let name = self.name.clone();
        let ctx =
            move |e: anyhow::Error, seq: u64| anyhow!("{name}: record {seq} at byte {at}: {e}");
        let h = parse_header(&hb).map_err(|e| ctx(e, self.next_seq))?;
        if h.seq != self.next_seq {
            bail!(
                "{}: record at byte {at} has sequence number {} where {} was expected (records missing or repeated)",
                self.name,
                h.seq,
                self.next_seq
            );
        }
        if (h.kind as u8) < (self.last_kind as u8) || (h.kind == RecordKind::Header && h.seq != 0) {
            bail!(
                "{}: record {} at byte {at}: {} record out of order",
                self.name,
                h.seq,
                kind_name(h.kind)
            );
        }
        let sha_before = self.sha.clone();
        self.offset += HEADER_LEN as u64;
        let mut stored = vec![0u8; h.stored_len as usize];
        self.read_exact_at(&mut stored, "payload")?;
        self.offset += stored.len() as u64;
        let raw = open(&h, &stored).map_err(|e| {
            anyhow!(
                "{}: {} record {} at byte {at}: {e}",
                self.name,
                kind_name(h.kind),
                h.seq
            )
        })?;
        self.sha.update(hb);
        self.sha.update(&stored);
        self.next_seq += 1;
        self.last_kind = h.kind;
        if h.kind == RecordKind::End {
            let end = End::decode(&raw).map_err(|e| ctx(e, h.seq))?;
            if end.records != h.seq {
                bail!(
                    "{}: end record counts {} records but {} were read",
                    self.name,
                    end.records,
                    h.seq
                );
            }
            if sha_before.finalize().as_slice() != end.sha256 {
                bail!(
                    "{}: whole-stream SHA-256 mismatch at the end record (damaged stream)",
                    self.name
                );
            }
            self.end = Some(end);
        }
        Ok(Some(Record {
            kind: h.kind,
            seq: h.seq,
            offset: at,
            raw,
        }))
    }

    /// The next record, or `None` after the end record. A stream that stops
    /// before its end record is an error (truncated), never a short success.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        if self.end.is_some() {
            return Ok(None);
        }
        match self.next_raw()? {
            Some(r) => Ok(Some(r)),
            None => bail!(
                "{}: stream truncated at byte {} (no end record); the stream is incomplete",
                self.name,
                self.offset
            ),
        }
    }

    /// Name of the input, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn dummy_header() -> StreamHeader {
    use super::header::SnapshotRef;
    use crate::tree::Time;
    StreamHeader {
        format_version: 0,
        tool_version: String::new(),
        source_uuid: [0; 16],
        source_path: Vec::new(),
        hostname: String::new(),
        snapshot: SnapshotRef {
            id: 0,
            uuid: [0; 16],
            time: Time::default(),
            level: 0,
        },
        full: true,
        base: None,
        block_size: 4096,
        compression_level: 0,
        entries: 0,
    }
}
