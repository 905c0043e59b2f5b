//! Random access to a stream on a seekable medium.
//!
//! A stream is written in one pass, but its end record has a fixed size and
//! names where the relocation table starts, and the relocation table names
//! the data record that holds every VBN. A reader that can seek therefore
//! reads the front (header, metadata, image), the last 128 bytes and the
//! relocation table, and then only the data records it needs: restoring one
//! file from a large stream reads a tiny part of it. Every record read is
//! checked (header and payload XXH3) exactly as in a sequential pass; what
//! random access cannot check is the whole-stream digest list, which
//! `verify` and `restore --verify-digest` read everything for.

use super::header::StreamHeader;
use super::payload::{decode_reloc, End, RelocEntry, END_LEN};
use super::reader::{kind_name, Record, Records};
use super::record::{open_owned, parse_header, RecordHeader, RecordKind, HEADER_LEN};
use crate::media::ByOffset;
use crate::runs::IntervalIndex;
use anyhow::{anyhow, bail, Context, Result};

/// A stream read by offset: in a regular file, or a dump on a virtual tape
/// ([`ByOffset`]).
pub struct SeekStream {
    file: Box<dyn ByOffset>,
    name: String,
    len: u64,
    pos: u64,
    next_seq: u64,
    last_kind: RecordKind,
    bytes_read: u64,
    header: StreamHeader,
    /// The relocation table, once read: VBN runs to data record offsets.
    index: Option<std::rc::Rc<IntervalIndex<u64>>>,
    /// Where the stream ends in the file, once found ([`SeekStream::stream_len`]).
    found_end: Option<FoundEnd>,
}

/// Where a stream's end record was found, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FoundEnd {
    /// The file ends with it (the usual case).
    AtFileEnd(u64),
    /// Zeros follow it (padding of fixed-block tapes, devices, tools).
    BeforeZeros(u64),
    /// Found by walking the record headers from the start; other bytes
    /// follow it.
    ByWalk(u64),
}

impl FoundEnd {
    fn len(self) -> u64 {
        match self {
            FoundEnd::AtFileEnd(l) | FoundEnd::BeforeZeros(l) | FoundEnd::ByWalk(l) => l,
        }
    }
}

/// The whole-record size of the end record: it is always the stream's last
/// `END_RECORD_LEN` bytes.
pub const END_RECORD_LEN: u64 = (HEADER_LEN + END_LEN) as u64;

impl SeekStream {
    /// Opens a stream file and reads and checks its header record.
    pub fn open(file: Box<dyn ByOffset>, name: &str) -> Result<Self> {
        let len = file.len();
        let mut s = SeekStream {
            file,
            name: name.to_string(),
            len,
            pos: 0,
            next_seq: 0,
            last_kind: RecordKind::Header,
            bytes_read: 0,
            header: StreamHeader::default(),
            index: None,
            found_end: None,
        };
        if len == 0 {
            bail!("{name}: empty input: not a snapdump stream");
        }
        let rec = Records::next_record(&mut s)?
            .ok_or_else(|| anyhow!("{name}: not a snapdump stream"))?;
        if rec.kind != RecordKind::Header {
            bail!("{name}: first record is not a stream header");
        }
        s.header = StreamHeader::decode(&rec.raw).map_err(|e| anyhow!("{name}: {e}"))?;
        Ok(s)
    }

    /// Stream bytes read so far (headers and payloads), for the summary
    /// and for proving that random access reads little.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The stream's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the stream is empty (never, once opened).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn read_exact_at(&mut self, buf: &mut [u8], off: u64, what: &str) -> Result<()> {
        if off
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.len)
        {
            bail!(
                "{}: {what} at byte {off} runs past the end of the stream ({} bytes); the stream is incomplete",
                self.name,
                self.len
            );
        }
        self.file
            .read_exact_at(buf, off)
            .map_err(|e| anyhow!("{}: read error at byte {off}: {e}", self.name))?;
        self.bytes_read += buf.len() as u64;
        Ok(())
    }

    /// Reads the record whose header starts at `off`, checking its header
    /// checksum; the payload is returned stored (not yet checked).
    fn frame_at(&mut self, off: u64) -> Result<(RecordHeader, Vec<u8>)> {
        let mut hb = [0u8; HEADER_LEN];
        self.read_exact_at(&mut hb, off, "record header")?;
        let h = parse_header(&hb, self.seed())
            .map_err(|e| anyhow!("{}: record at byte {off}: {e}", self.name))?;
        let mut stored = vec![0u8; h.stored_len as usize];
        self.read_exact_at(&mut stored, off + HEADER_LEN as u64, "record payload")?;
        Ok((h, stored))
    }

    /// Reads, checks and decompresses the record at `off`, which must be of
    /// kind `kind`.
    pub fn record_at(&mut self, off: u64, kind: RecordKind) -> Result<Record> {
        let (h, stored) = self.frame_at(off)?;
        if h.kind != kind {
            bail!(
                "{}: record {} at byte {off} is a {} record where a {} record was expected",
                self.name,
                h.seq,
                kind_name(h.kind),
                kind_name(kind)
            );
        }
        self.opened(off, h, stored)
    }

    /// The checksum seed of records after the header (0 while the header
    /// itself is read).
    fn seed(&self) -> u64 {
        self.header.seed()
    }

    /// Checks a framed record's payload and decompresses it.
    fn opened(&self, off: u64, h: RecordHeader, stored: Vec<u8>) -> Result<Record> {
        let len = (HEADER_LEN + stored.len()) as u64;
        let (raw, stored) = open_owned(&h, stored, self.seed()).map_err(|e| {
            anyhow!(
                "{}: {} record {} at byte {off}: {e}",
                self.name,
                kind_name(h.kind),
                h.seq
            )
        })?;
        Ok(Record {
            kind: h.kind,
            seq: h.seq,
            offset: off,
            len,
            raw,
            stored,
            digest: [0; 32],
        })
    }

    /// The end record if one of this stream ends exactly at `at`.
    fn end_at(&mut self, at: u64) -> Result<End> {
        if at < END_RECORD_LEN {
            bail!(
                "{}: too short to hold an end record; the stream is incomplete",
                self.name
            );
        }
        let rec = self.record_at(at - END_RECORD_LEN, RecordKind::End)?;
        let end = End::decode(&rec.raw).map_err(|e| anyhow!("{}: end record: {e}", self.name))?;
        if end.records != rec.seq {
            bail!(
                "{}: end record is record {} but counts {} records before it",
                self.name,
                rec.seq,
                end.records
            );
        }
        Ok(end)
    }

    /// One past the last byte that is not zero (0 if the file is all
    /// zeros), read backwards from the end in chunks.
    fn last_nonzero(&mut self) -> Result<u64> {
        let mut end = self.len;
        let mut buf = vec![0u8; 64 << 10];
        while end > 0 {
            let n = (end.min(buf.len() as u64)) as usize;
            let from = end - n as u64;
            self.file
                .read_exact_at(&mut buf[..n], from)
                .map_err(|e| anyhow!("{}: read error at byte {from}: {e}", self.name))?;
            if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
                return Ok(from + i as u64 + 1);
            }
            end = from;
        }
        Ok(0)
    }

    /// Finds the end of the stream when the file does not end with its
    /// end record: after zeros are skipped (padding), else by walking the
    /// record headers from the start (each checked, 40 bytes read per
    /// record). Fails, naming the damage, when neither finds it.
    fn find_end(&mut self) -> Result<FoundEnd> {
        if self.end_at(self.len).is_ok() {
            return Ok(FoundEnd::AtFileEnd(self.len));
        }
        let last = self.last_nonzero()?;
        if last < self.len {
            // The end record's own last bytes (its digest) may be zeros.
            let top = last.saturating_add(END_RECORD_LEN).min(self.len);
            for at in last.max(END_RECORD_LEN)..=top {
                if self.end_at(at).is_ok() {
                    return Ok(FoundEnd::BeforeZeros(at));
                }
            }
        }
        let mut off = 0u64;
        let mut seq = 0u64;
        loop {
            let mut hb = [0u8; HEADER_LEN];
            self.read_exact_at(&mut hb, off, "record header")
                .map_err(|e| anyhow!("{e:#} (no end record: the stream is incomplete)"))?;
            let seed = if seq == 0 { 0 } else { self.seed() };
            let h = parse_header(&hb, seed).map_err(|e| {
                anyhow!(
                    "{}: record {seq} at byte {off}: {e} (the stream is damaged or incomplete before its end record)",
                    self.name
                )
            })?;
            if h.seq != seq {
                bail!(
                    "{}: record at byte {off} has sequence number {} where {seq} was expected",
                    self.name,
                    h.seq
                );
            }
            let next = off + (HEADER_LEN as u64) + h.stored_len as u64;
            if h.kind == RecordKind::End {
                self.end_at(next)?;
                return Ok(FoundEnd::ByWalk(next));
            }
            off = next;
            seq += 1;
        }
    }

    /// The stream's length: where its end record ends, which is the file's
    /// length unless padding or other bytes follow the stream.
    pub fn stream_len(&mut self) -> Result<u64> {
        if let Some(f) = self.found_end {
            return Ok(f.len());
        }
        let f = self.find_end()?;
        self.found_end = Some(f);
        Ok(f.len())
    }

    /// Reads the end record.
    pub fn end(&mut self) -> Result<End> {
        let len = self
            .stream_len()
            .map_err(|e| anyhow!("{e:#} (the stream is incomplete or damaged at its end)"))?;
        self.end_at(len)
    }

    /// Refuses a file holding several streams back to back (an image set):
    /// random access needs the stream to end where the file ends. The sign
    /// is an intact end record at the end of the file whose relocation
    /// table is not where it says (it counts from the last stream's start).
    /// A damaged or missing end is left to the readers that need it.
    pub fn check_single(&mut self) -> Result<()> {
        let Ok(end) = self.end() else {
            return Ok(());
        };
        let name = self.name.clone();
        let image_set = || {
            anyhow!(
                "{name}: the end of the file does not belong to the stream at its start: the file is damaged, or holds several streams back to back (an image set written by dump --image from a volume; restore -r, verify and restore -r --volume read those, or dump one snapshot per file)"
            )
        };
        if let Some(FoundEnd::ByWalk(at)) = self.found_end {
            // Another stream's record after this one (after any zeros):
            // an image set.
            let mut off = at;
            let mut buf = [0u8; 4096];
            while off < self.len {
                let n = buf.len().min((self.len - off) as usize);
                if self.file.read_exact_at(&mut buf[..n], off).is_err() {
                    break;
                }
                match buf[..n].iter().position(|&b| b != 0) {
                    None => off += n as u64,
                    Some(i) => {
                        let mut magic = [0u8; 4];
                        let next = self.file.read_exact_at(&mut magic, off + i as u64);
                        if next.is_ok() && magic == super::record::MAGIC {
                            return Err(image_set());
                        }
                        break;
                    }
                }
            }
            return Ok(());
        }
        let table_end = self.stream_len()? - END_RECORD_LEN;
        let lined_up = if end.reloc_records == 0 {
            end.reloc_offset == table_end
        } else {
            // The record header alone (checksummed) tells kind and number.
            let mut hb = [0u8; HEADER_LEN];
            end.reloc_offset < table_end
                && self
                    .read_exact_at(&mut hb, end.reloc_offset, "record header")
                    .is_ok()
                && parse_header(&hb, self.seed()).is_ok_and(|h| {
                    h.kind == RecordKind::Reloc && h.seq + end.reloc_records == end.records
                })
        };
        if !lined_up {
            return Err(image_set());
        }
        Ok(())
    }

    /// Reads the relocation table the end record points at. `data_start`
    /// is where the data section begins (after the image record): every
    /// entry must point between it and the table.
    pub fn relocation(&mut self, end: &End, data_start: u64) -> Result<Vec<RelocEntry>> {
        let table_end = self.stream_len()? - END_RECORD_LEN;
        if end.reloc_offset < data_start || end.reloc_offset > table_end {
            bail!(
                "{}: end record places the relocation table at byte {}, outside the data section",
                self.name,
                end.reloc_offset
            );
        }
        let first_seq = end.records.checked_sub(end.reloc_records).ok_or_else(|| {
            anyhow!(
                "{}: end record counts more relocation records than records",
                self.name
            )
        })?;
        let mut out = Vec::new();
        let mut off = end.reloc_offset;
        for i in 0..end.reloc_records {
            let rec = self.record_at(off, RecordKind::Reloc)?;
            if rec.seq != first_seq + i {
                bail!(
                    "{}: relocation record at byte {off} has sequence number {} where {} was expected",
                    self.name,
                    rec.seq,
                    first_seq + i
                );
            }
            for e in decode_reloc(&rec.raw)
                .map_err(|e| anyhow!("{}: relocation record at byte {off}: {e}", self.name))?
            {
                if e.offset < data_start || e.offset >= end.reloc_offset {
                    bail!(
                        "{}: relocation entry for VBN {} points at byte {}, outside the data section",
                        self.name,
                        e.vbn,
                        e.offset
                    );
                }
                out.push(e);
            }
            off += rec.len;
        }
        if off != table_end {
            bail!(
                "{}: relocation table ends at byte {off}, the end record starts at byte {table_end}",
                self.name
            );
        }
        Ok(out)
    }

    /// A sequential reader of the same file from its start (parallel
    /// checking and decompression), for when most records are wanted.
    pub fn sequential(&self) -> Result<super::reader::StreamReader> {
        let input = self
            .file
            .sequential()
            .with_context(|| format!("cannot reopen stream {}", self.name))?;
        super::reader::StreamReader::open(input, &self.name, super::reader::Digest::Skip)
    }

    /// Counts bytes read by a sequential pass over the same file.
    pub fn add_bytes_read(&mut self, n: u64) {
        self.bytes_read += n;
    }

    /// The relocation table as an index from VBN runs to data record
    /// offsets, read (end record, then the table) on first use.
    pub fn index(&mut self, data_start: u64) -> Result<std::rc::Rc<IntervalIndex<u64>>> {
        if let Some(i) = &self.index {
            return Ok(i.clone());
        }
        let end = self.end()?;
        let entries = self.relocation(&end, data_start)?;
        let i = std::rc::Rc::new(IntervalIndex::new(
            entries
                .into_iter()
                .map(|e| (e.vbn, e.count, e.offset))
                .collect(),
        ));
        self.index = Some(i.clone());
        Ok(i)
    }

    /// Where the next record of the sequential pass starts.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

impl Records for SeekStream {
    /// Reads the record at the current position, enforcing the same order
    /// and numbering rules as the sequential reader.
    fn next_record(&mut self) -> Result<Option<Record>> {
        if self.last_kind == RecordKind::End && self.next_seq > 0 {
            return Ok(None);
        }
        let at = self.pos;
        if at >= self.len {
            bail!(
                "{}: stream truncated at byte {at} (no end record); the stream is incomplete",
                self.name
            );
        }
        let (h, stored) = self.frame_at(at)?;
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
        let kind = h.kind;
        let rec = self.opened(at, h, stored)?;
        self.pos = at + rec.len;
        self.next_seq += 1;
        self.last_kind = kind;
        Ok(Some(rec))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn header(&self) -> &StreamHeader {
        &self.header
    }
}
