//! Reads a stream in one sequential pass, checking every checksum, the
//! record order and, at the end, the stream's digest list.
//!
//! Framing (record boundaries, sequence numbers, order, header checksums)
//! is done by one thread, since it must follow the bytes; checking payload
//! checksums, computing each record's list hash and decompressing are done by
//! workers in parallel, and records are handed to the caller in order. The
//! channels are bounded, so memory stays at a few records whatever the
//! stream's size.

use super::header::StreamHeader;
use super::payload::End;
use super::record::{open_owned, parse_header, RecordHeader, RecordKind, HEADER_LEN};
use crate::digest::{ListHash, Running};
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
    /// The stored payload of a compressed record (`None` when it is stored
    /// raw: then it is `raw`); coalescing copies frames from it.
    pub stored: Option<Vec<u8>>,
    /// The record's entry in the digest list (its list hash).
    pub digest: [u8; 32],
}

impl Record {
    /// Wraps an error about this record's contents with where it is: the
    /// stream `name`, the record's sequence number and its byte offset.
    pub fn error_in(&self, name: &str, e: anyhow::Error) -> anyhow::Error {
        anyhow::anyhow!("{name}: record {} at byte {}: {e:#}", self.seq, self.offset)
    }
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
    /// Bytes read ahead while resynchronising, to be read again.
    pushback: Vec<u8>,
    /// Resynchronise after damage instead of stopping.
    salvage: bool,
    /// A read error of the input (not damage: a missing volume, an I/O
    /// error), which stops even a salvaging reader.
    io_error: bool,
    /// Checksum seed of the records after the header (the stream's id).
    seed: u64,
}

/// A stretch of a stream that could not be read: records `first_seq ..
/// end_seq` (sequence numbers) at stream bytes `from .. to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// First lost sequence number.
    pub first_seq: u64,
    /// First sequence number after the loss (`None`: to the end).
    pub end_seq: Option<u64>,
    /// First damaged stream byte.
    pub from: u64,
    /// Stream byte where reading resumed (`None`: the stream ended).
    pub to: Option<u64>,
    /// What was wrong.
    pub why: String,
}

/// What the framer and the workers hand to the ordered consumer.
enum Piece {
    Record(Result<Record>),
    Lost(Damage),
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
        if !self.pushback.is_empty() {
            let n = buf.len().min(self.pushback.len());
            buf[..n].copy_from_slice(&self.pushback[..n]);
            self.pushback.drain(..n);
            done = n;
        }
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
                Err(e) => {
                    self.io_error = true;
                    bail!(
                        "{}: read error at byte {}: {e}",
                        self.name,
                        self.offset + done as u64
                    )
                }
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
        let checked = self.check_header(&hbytes, at);
        let header = match checked {
            Ok(h) => h,
            Err(e) => {
                if self.salvage {
                    // Read these bytes again while resynchronising.
                    let mut back = hbytes.to_vec();
                    back.append(&mut self.pushback);
                    self.pushback = back;
                }
                return Err(e);
            }
        };
        self.offset += HEADER_LEN as u64;
        let mut stored = vec![0u8; header.stored_len as usize];
        self.fill(&mut stored, false)?;
        if self.salvage && super::record::checksum(&stored, self.seed) != header.payload_hash {
            // A damaged payload may hide the start of the next record (bytes
            // lost in between): read it all again while resynchronising.
            self.offset -= HEADER_LEN as u64;
            let mut back = hbytes.to_vec();
            back.extend_from_slice(&stored);
            back.append(&mut self.pushback);
            self.pushback = back;
            bail!(
                "{}: {} record {} at byte {at}: payload checksum mismatch (damaged stream)",
                self.name,
                kind_name(header.kind),
                header.seq
            );
        }
        self.offset += stored.len() as u64;
        self.next_seq = header.seq + 1;
        self.last_kind = header.kind;
        self.done = header.kind == RecordKind::End;
        Ok(Some(Frame {
            header,
            hbytes,
            offset: at,
            stored,
        }))
    }

    /// Parses a record header and checks it continues the stream: its
    /// sequence number is the next one (in salvage mode, a later one:
    /// records were lost) and its kind is not out of order.
    fn check_header(&mut self, hbytes: &[u8; HEADER_LEN], at: u64) -> Result<RecordHeader> {
        let header = parse_header(hbytes, self.seed)
            .map_err(|e| anyhow!("{}: record {} at byte {at}: {e}", self.name, self.next_seq))?;
        let seq_ok = header.seq == self.next_seq || (self.salvage && header.seq > self.next_seq);
        if !seq_ok {
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
        Ok(header)
    }
}

impl<R: Read> Framer<R> {
    /// Reads up to `n` more bytes (fewer at the end of the input).
    fn more(&mut self, n: usize) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.pushback);
        let start = out.len();
        out.resize(start + n, 0);
        let mut got = start;
        while got < out.len() {
            match self.inner.read(&mut out[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // With bytes in hand, scan them first: a read error
                    // (say, the next volume is needed) comes back on the
                    // next read if the stream goes on.
                    if got == start {
                        self.io_error = true;
                    }
                    break;
                }
            }
        }
        out.truncate(got);
        out
    }

    /// After damage at stream byte `at`: scans forward for the next record
    /// header that is intact (magic and header checksum) and continues the
    /// stream (a later sequence number, a kind not earlier than the last
    /// good one). Returns the damage, with the framer positioned at that
    /// header, or reaching the end of the input.
    fn resync(&mut self, at: u64, why: String) -> Damage {
        const WINDOW: usize = 1 << 20;
        // Bytes from `at + 1` on (those before were consumed or are the
        // damaged header itself).
        let mut win = self.more(0);
        let mut base = self.offset; // stream offset of win[0]
        if base <= at {
            // Drop the first byte of the damaged position so we move on.
            let skip = (at + 1 - base) as usize;
            if win.len() < skip {
                let extra = self.more(skip - win.len());
                win.extend(extra);
            }
            let k = skip.min(win.len());
            win.drain(..k);
            base += k as u64;
        }
        loop {
            let mut i = 0;
            while i + HEADER_LEN <= win.len() {
                if win[i..i + 4] == super::record::MAGIC {
                    if let Ok(h) =
                        parse_header(win[i..i + HEADER_LEN].try_into().unwrap(), self.seed)
                    {
                        let plausible = h.seq >= self.next_seq
                            && h.seq < self.next_seq.saturating_add(1 << 40)
                            && (h.kind as u8) >= (self.last_kind as u8)
                            && h.kind != RecordKind::Header;
                        if plausible {
                            let first_seq = self.next_seq;
                            self.next_seq = h.seq;
                            self.pushback = win.split_off(i);
                            self.offset = base + i as u64;
                            return Damage {
                                first_seq,
                                end_seq: Some(h.seq),
                                from: at,
                                to: Some(self.offset),
                                why,
                            };
                        }
                    }
                }
                i += 1;
            }
            // Keep the tail that could start a header.
            let keep = win.len().min(HEADER_LEN - 1);
            let drop = win.len() - keep;
            win.drain(..drop);
            base += drop as u64;
            let more = self.more(WINDOW);
            if more.is_empty() {
                self.done = true;
                self.offset = base + win.len() as u64;
                return Damage {
                    first_seq: self.next_seq,
                    end_seq: None,
                    from: at,
                    to: None,
                    why,
                };
            }
            win.extend(more);
        }
    }

    /// The next frame, in salvage mode preceded by the damage before it
    /// (records skipped or unreadable); empty at the end.
    fn next_pieces(&mut self) -> Result<Vec<Result<Frame, Damage>>> {
        let at = self.offset;
        let expected = self.next_seq;
        match self.next_frame() {
            Ok(Some(f)) if f.header.seq > expected => {
                let gap = Damage {
                    first_seq: expected,
                    end_seq: Some(f.header.seq),
                    from: at,
                    to: Some(at),
                    why: if f.header.seq == expected + 1 {
                        format!("record {expected} is missing")
                    } else {
                        format!("records {expected}..{} are missing", f.header.seq - 1)
                    },
                };
                Ok(vec![Err(gap), Ok(f)])
            }
            Ok(Some(f)) => Ok(vec![Ok(f)]),
            Ok(None) => Ok(Vec::new()),
            Err(e) if self.salvage && !self.done && !self.io_error => {
                let d = self.resync(at, format!("{e:#}"));
                if self.io_error {
                    bail!(
                        "{}: read error while skipping damage at byte {at}",
                        self.name
                    );
                }
                Ok(vec![Err(d)])
            }
            Err(e) => Err(e),
        }
    }
}

fn open_frame(f: Frame, name: &str, digest: Option<ListHash>, seed: u64) -> Result<Record> {
    let digest = match digest {
        Some(hash) => hash.of(&[&f.hbytes, &f.stored]),
        None => [0; 32],
    };
    let len = (HEADER_LEN + f.stored.len()) as u64;
    let (raw, stored) = open_owned(&f.header, f.stored, seed).map_err(|e| {
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
        len,
        digest,
        raw,
        stored,
    })
}

/// Whether a reader recomputes the stream's digest list.
///
/// Every record's header and payload XXH3-64 checksums are always checked,
/// so every byte is covered and damage is always detected. The digest
/// list is the strong end-to-end digest; a format-4 stream's SHA-256 list
/// costs more than decompression and writing together on CPUs without SHA
/// extensions, so `verify` checks it and restore does on request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digest {
    /// Recompute every record's list hash and compare the list at the end.
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
    source: Receiver<(u64, Piece)>,
    pending: BTreeMap<u64, Piece>,
    salvage: bool,
    damage: Vec<Damage>,
    next_seq: u64,
    offset: u64,
    digests: Running,
    /// The digest list's hash, by the header's format version.
    hash: ListHash,
    /// Stream offset of the first relocation record, and how many were
    /// read: the end record must say the same.
    reloc_at: Option<u64>,
    relocs: u64,
    /// The stream header, read when the reader was opened.
    pub header: StreamHeader,
    /// The end record, once reached and verified.
    pub end: Option<End>,
}

impl StreamReader {
    /// Reads and checks the header record, then starts the framing thread
    /// and the verification workers; `name` is used in messages.
    pub fn open(inner: Box<dyn Read + Send>, name: &str, digest: Digest) -> Result<Self> {
        Self::open_mode(inner, name, digest, false)
    }

    /// As [`StreamReader::open`], but damage after the header does not
    /// stop the reader: it resynchronises at the next intact record and
    /// records what was lost ([`StreamReader::damage`]). The header record
    /// itself must be intact.
    /// With `Digest::Check`, the digest list is checked when nothing was
    /// lost.
    pub fn open_salvaging(inner: Box<dyn Read + Send>, name: &str, digest: Digest) -> Result<Self> {
        Self::open_mode(inner, name, digest, true)
    }

    fn open_mode(
        inner: Box<dyn Read + Send>,
        name: &str,
        digest: Digest,
        salvage: bool,
    ) -> Result<Self> {
        let mut framer = Framer {
            inner,
            name: name.to_string(),
            offset: 0,
            next_seq: 0,
            last_kind: RecordKind::Header,
            done: false,
            pushback: Vec::new(),
            salvage: false,
            io_error: false,
            seed: 0,
        };
        let frame = framer
            .next_frame()?
            .expect("the framer yields a record or an error");
        if frame.header.kind != RecordKind::Header {
            bail!("{name}: first record is not a stream header");
        }
        let (hbytes, hstored) = (frame.hbytes, frame.stored.clone());
        let rec = open_frame(frame, name, None, 0)?;
        let header = StreamHeader::decode(&rec.raw).map_err(|e| anyhow!("{name}: {e}"))?;
        // The list's hash is known only now, from the header's version.
        let hash = ListHash::of_version(header.format_version);
        framer.seed = header.seed();
        // Version 1 does not bind records to their stream: its digest list
        // is the only check of a splice, so it is always recomputed.
        let digest = if header.format_version < 2 {
            Digest::Check
        } else {
            digest
        };
        let mut digests = hash.running();
        digests.update(&hash.of(&[&hbytes, &hstored]));
        let offset = framer.offset;
        framer.salvage = salvage;
        Ok(StreamReader {
            name: name.to_string(),
            source: spawn(framer, (digest == Digest::Check).then_some(hash)),
            digest,
            pending: BTreeMap::new(),
            salvage,
            damage: Vec::new(),
            next_seq: 1,
            offset,
            digests,
            hash,
            reloc_at: None,
            relocs: 0,
            header,
            end: None,
        })
    }

    /// What a salvaging reader could not read, in stream order.
    pub fn damage(&self) -> &[Damage] {
        &self.damage
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
            match self.pending.remove(&self.next_seq) {
                Some(Piece::Record(r)) => break r?,
                Some(Piece::Lost(d)) => {
                    let end = d.end_seq;
                    if let Some(to) = d.to {
                        self.offset = to;
                    }
                    self.damage.push(d);
                    match end {
                        Some(s) => {
                            self.next_seq = s;
                            continue;
                        }
                        None => return Ok(None),
                    }
                }
                None => {}
            }
            match self.source.recv() {
                Ok((seq, r)) => {
                    self.pending.insert(seq, r);
                }
                Err(_) if self.salvage && !self.damage.is_empty() => return Ok(None),
                Err(_) if self.salvage => {
                    self.damage.push(Damage {
                        first_seq: self.next_seq,
                        end_seq: None,
                        from: self.offset,
                        to: None,
                        why: "the stream ends before its end record".into(),
                    });
                    return Ok(None);
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
            if self.digest == Digest::Check
                && self.damage.is_empty()
                && self.digests.current() != end.digest
            {
                bail!(
                    "{}: stream digest ({}) mismatch at the end record (damaged stream)",
                    self.name,
                    self.hash.name()
                );
            }
            let reloc_at = self.reloc_at.unwrap_or(rec.offset);
            if self.damage.is_empty()
                && (end.reloc_records != self.relocs || end.reloc_offset != reloc_at)
            {
                bail!(
                    "{}: the end record places {} relocation records at offset {}, but {} were read at offset {} (damaged or miswritten stream)",
                    self.name,
                    end.reloc_records,
                    end.reloc_offset,
                    self.relocs,
                    reloc_at
                );
            }
            self.end = Some(end);
        } else {
            if rec.kind == RecordKind::Reloc {
                self.reloc_at.get_or_insert(rec.offset);
                self.relocs += 1;
            }
            self.digests.update(&rec.digest);
        }
        Ok(Some(rec))
    }
}

/// Starts the framing thread and the workers; results arrive tagged with
/// their sequence number, errors and losses included, so the caller sees
/// records, errors and damage in stream order.
fn spawn(
    mut framer: Framer<Box<dyn Read + Send>>,
    digest: Option<ListHash>,
) -> Receiver<(u64, Piece)> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let (frame_tx, frame_rx) = bounded::<Frame>(workers);
    let (out_tx, out_rx) = bounded::<(u64, Piece)>(workers * 2);
    let name = framer.name.clone();
    let salvage = framer.salvage;
    let seed = framer.seed;
    for _ in 0..workers {
        let frame_rx = frame_rx.clone();
        let out_tx = out_tx.clone();
        let name = name.clone();
        std::thread::spawn(move || {
            for f in frame_rx {
                let seq = f.header.seq;
                let (offset, len) = (f.offset, (HEADER_LEN + f.stored.len()) as u64);
                let piece = match open_frame(f, &name, digest, seed) {
                    Err(e) if salvage => Piece::Lost(Damage {
                        first_seq: seq,
                        end_seq: Some(seq + 1),
                        from: offset,
                        to: Some(offset + len),
                        why: format!("{e:#}"),
                    }),
                    r => Piece::Record(r),
                };
                if out_tx.send((seq, piece)).is_err() {
                    break;
                }
            }
        });
    }
    std::thread::spawn(move || loop {
        let seq = framer.next_seq;
        match framer.next_pieces() {
            Ok(pieces) if pieces.is_empty() => break,
            Ok(pieces) => {
                for p in pieces {
                    let sent = match p {
                        Ok(f) => frame_tx.send(f).is_ok(),
                        Err(d) => out_tx.send((d.first_seq, Piece::Lost(d))).is_ok(),
                    };
                    if !sent {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = out_tx.send((seq, Piece::Record(Err(e))));
                break;
            }
        }
    });
    out_rx
}
