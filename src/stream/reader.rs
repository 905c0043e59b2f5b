//! Reads a stream in one sequential pass, checking every checksum, the
//! record order and, at the end, the stream's SHA-256 digest list.
//!
//! Framing (record boundaries, sequence numbers, order, header checksums)
//! is done by one thread, since it must follow the bytes; checking payload
//! checksums, computing each record's SHA-256 and decompressing are done by
//! workers in parallel, and records are handed to the caller in order. The
//! channels are bounded, so memory stays at a few records whatever the
//! stream's size.

use super::header::StreamHeader;
use super::payload::End;
use super::record::{open, parse_header, RecordHeader, RecordKind, HEADER_LEN};
use crate::util::{sha256_parts, Sha256Stream};
use anyhow::{anyhow, bail, Result};
use crossbeam_channel::{bounded, Receiver};
use std::collections::BTreeMap;
use std::io::Read;

/// One verified record.
pub struct Record {
    /// What it holds.
    pub kind: RecordKind,
    /// Its sequence number.
    pub seq: u64,
    /// Stream offset of its header.
    pub offset: u64,
    /// Header and stored payload size.
    pub len: u64,
    /// The raw (decompressed) payload.
    pub raw: Vec<u8>,
    /// SHA-256 of the record's bytes.
    pub digest: [u8; 32],
}

/// A record as framed, before its payload is checked.
struct Frame {
    header: RecordHeader,
    hbytes: [u8; HEADER_LEN],
    offset: u64,
    stored: Vec<u8>,
}

/// Cuts the byte stream into records, checking what must be checked in
/// order: header checksum, sequence numbers, record order.
struct Framer<R: Read> {
    inner: R,
    name: String,
    offset: u64,
    next_seq: u64,
    last_kind: RecordKind,
    done: bool,
}

pub(crate) fn kind_name(k: RecordKind) -> &'static str {
    match k {
        RecordKind::Header => "header",
        RecordKind::Meta => "metadata",
        RecordKind::Image => "image",
        RecordKind::Data => "data",
        RecordKind::Reloc => "relocation",
        RecordKind::End => "end",
    }
}

impl<R: Read> Framer<R> {
    /// Fills `buf`; false on a clean end of input before the first byte.
    fn fill(&mut self, buf: &mut [u8], may_end: bool) -> Result<bool> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) if done == 0 && may_end => return Ok(false),
                Ok(0) => bail!(
                    "{}: stream truncated at byte {} (inside record {}); the stream is incomplete",
                    self.name,
                    self.offset + done as u64,
                    self.next_seq
                ),
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

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.done {
            return Ok(None);
        }
        let at = self.offset;
        let mut hbytes = [0u8; HEADER_LEN];
        if !self.fill(&mut hbytes, true)? {
            if at == 0 {
                bail!("{}: empty input: not a snapdump stream", self.name);
            }
            bail!(
                "{}: stream truncated at byte {at} (no end record); the stream is incomplete",
                self.name
            );
        }
        let header = parse_header(&hbytes)
            .map_err(|e| anyhow!("{}: record {} at byte {at}: {e}", self.name, self.next_seq))?;
        if header.seq != self.next_seq {
            bail!(
                "{}: record at byte {at} has sequence number {} where {} was expected (records missing or repeated)",
                self.name,
                header.seq,
                self.next_seq
            );
        }
        if (header.kind as u8) < (self.last_kind as u8)
            || (header.kind == RecordKind::Header && header.seq != 0)
        {
            bail!(
                "{}: record {} at byte {at}: {} record out of order",
                self.name,
                header.seq,
                kind_name(header.kind)
            );
        }
        self.offset += HEADER_LEN as u64;
        let mut stored = vec![0u8; header.stored_len as usize];
        self.fill(&mut stored, false)?;
        self.offset += stored.len() as u64;
        self.next_seq += 1;
        self.last_kind = header.kind;
        self.done = header.kind == RecordKind::End;
        Ok(Some(Frame {
            header,
            hbytes,
            offset: at,
            stored,
        }))
    }
}

fn open_frame(f: Frame, name: &str, digest: bool) -> Result<Record> {
    let raw = open(&f.header, &f.stored).map_err(|e| {
        anyhow!(
            "{name}: {} record {} at byte {}: {e}",
            kind_name(f.header.kind),
            f.header.seq,
            f.offset
        )
    })?;
    Ok(Record {
        kind: f.header.kind,
        seq: f.header.seq,
        offset: f.offset,
        len: (HEADER_LEN + f.stored.len()) as u64,
        digest: if digest {
            sha256_parts(&[&f.hbytes, &f.stored])
        } else {
            [0; 32]
        },
        raw,
    })
}

/// Whether a reader recomputes the stream's SHA-256 digest list.
///
/// Every record's header and payload XXH3-64 checksums are always checked,
/// so every byte is covered and damage is always detected. The SHA-256
/// list is the strong end-to-end digest; on CPUs without SHA extensions it
/// costs more than decompression and writing together, so `verify` checks
/// it and restore does on request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digest {
    /// Recompute every record's SHA-256 and compare the list at the end.
    Check,
    /// Rely on the per-record XXH3-64 checksums.
    Skip,
}

/// A source of verified records in stream order: the threaded reader of
/// a pipe, or a seekable stream read from its start. The front of a stream
/// (metadata and image) is read the same way from either.
pub trait Records {
    /// The next record, or `None` after the end record.
    fn next_record(&mut self) -> Result<Option<Record>>;
    /// Name of the input, for messages.
    fn name(&self) -> &str;
    /// The stream header.
    fn header(&self) -> &StreamHeader;
}

impl Records for StreamReader {
    fn next_record(&mut self) -> Result<Option<Record>> {
        StreamReader::next_record(self)
    }
    fn name(&self) -> &str {
        StreamReader::name(self)
    }
    fn header(&self) -> &StreamHeader {
        &self.header
    }
}

/// A reader of one stream.
pub struct StreamReader {
    digest: Digest,
    name: String,
    source: Receiver<(u64, Result<Record>)>,
    pending: BTreeMap<u64, Result<Record>>,
    next_seq: u64,
    offset: u64,
    digests: Sha256Stream,
    /// The stream header, read when the reader was opened.
    pub header: StreamHeader,
    /// The end record, once reached and verified.
    pub end: Option<End>,
}

impl StreamReader {
    /// Reads and checks the header record, then starts the framing thread
    /// and the verification workers; `name` is used in messages.
    pub fn open(inner: Box<dyn Read + Send>, name: &str, digest: Digest) -> Result<Self> {
        let mut framer = Framer {
            inner,
            name: name.to_string(),
            offset: 0,
            next_seq: 0,
            last_kind: RecordKind::Header,
            done: false,
        };
        let frame = framer
            .next_frame()?
            .expect("the framer yields a record or an error");
        if frame.header.kind != RecordKind::Header {
            bail!("{name}: first record is not a stream header");
        }
        let rec = open_frame(frame, name, true)?;
        let header = StreamHeader::decode(&rec.raw).map_err(|e| anyhow!("{name}: {e}"))?;
        let mut digests = Sha256Stream::default();
        digests.update(&rec.digest);
        let offset = framer.offset;
        Ok(StreamReader {
            name: name.to_string(),
            source: spawn(framer, digest == Digest::Check),
            digest,
            pending: BTreeMap::new(),
            next_seq: 1,
            offset,
            digests,
            header,
            end: None,
        })
    }

    /// Stream bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Name of the input, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next record, or `None` after the end record. A stream that stops
    /// before its end record is an error (truncated), never a short success.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        if self.end.is_some() {
            return Ok(None);
        }
        let rec = loop {
            if let Some(r) = self.pending.remove(&self.next_seq) {
                break r?;
            }
            match self.source.recv() {
                Ok((seq, r)) => {
                    self.pending.insert(seq, r);
                }
                Err(_) => bail!("{}: stream reader stopped unexpectedly", self.name),
            }
        };
        self.next_seq += 1;
        self.offset = rec.offset + rec.len;
        if rec.kind == RecordKind::End {
            let end =
                End::decode(&rec.raw).map_err(|e| anyhow!("{}: end record: {e}", self.name))?;
            if end.records != rec.seq {
                bail!(
                    "{}: end record counts {} records but {} were read",
                    self.name,
                    end.records,
                    rec.seq
                );
            }
            if self.digest == Digest::Check && self.digests.current() != end.sha256 {
                bail!(
                    "{}: stream SHA-256 mismatch at the end record (damaged stream)",
                    self.name
                );
            }
            self.end = Some(end);
        } else {
            self.digests.update(&rec.digest);
        }
        Ok(Some(rec))
    }
}

/// Starts the framing thread and the workers; results arrive tagged with
/// their sequence number, errors included, so the caller sees records and
/// errors in stream order.
fn spawn(
    mut framer: Framer<Box<dyn Read + Send>>,
    digest: bool,
) -> Receiver<(u64, Result<Record>)> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let (frame_tx, frame_rx) = bounded::<Frame>(workers);
    let (out_tx, out_rx) = bounded::<(u64, Result<Record>)>(workers * 2);
    let name = framer.name.clone();
    for _ in 0..workers {
        let frame_rx = frame_rx.clone();
        let out_tx = out_tx.clone();
        let name = name.clone();
        std::thread::spawn(move || {
            for f in frame_rx {
                let seq = f.header.seq;
                if out_tx.send((seq, open_frame(f, &name, digest))).is_err() {
                    break;
                }
            }
        });
    }
    std::thread::spawn(move || loop {
        let seq = framer.next_seq;
        match framer.next_frame() {
            Ok(Some(f)) => {
                if frame_tx.send(f).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = out_tx.send((seq, Err(e)));
                break;
            }
        }
    });
    out_rx
}
