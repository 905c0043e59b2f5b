//! Entry points for fuzzing the parsers of untrusted input: a whole stream
//! as restore and verify read it, a catalog file, and single records.
//!
//! `fuzz/` wraps each in a cargo-fuzz target; the test suite replays every
//! input kept in `testdata/fuzz-regressions/` through the same functions,
//! so a crash found once stays fixed. Each function must return (an error
//! is fine) for any input: never panic, never hang, never allocate beyond
//! the format's limits.

use crate::restore::check::{read_data, read_front};
use crate::stream::reader::{Digest, StreamReader};

/// Reads `data` as a stream, front to end, as verify does.
pub fn stream(data: &[u8]) {
    let input: Box<dyn std::io::Read + Send> = Box::new(std::io::Cursor::new(data.to_vec()));
    let Ok(mut r) = StreamReader::open(input, "fuzz", Digest::Check) else {
        return;
    };
    let Ok(front) = read_front(&mut r) else {
        return;
    };
    let _ = read_data(&mut r, &front, |_, _| Ok(()));
    random_access(data);
    salvage(data);
}

/// Reads `data` as restore -r of a damaged stream does: resynchronising
/// past damage, then naming what was lost.
pub fn salvage(data: &[u8]) {
    let input: Box<dyn std::io::Read + Send> = Box::new(std::io::Cursor::new(data.to_vec()));
    let Ok(mut r) = StreamReader::open_salvaging(input, "fuzz", Digest::Skip) else {
        return;
    };
    let Ok(front) = read_front(&mut r) else {
        return;
    };
    if let Ok(t) = read_data(&mut r, &front, |_, _| Ok(())) {
        let _ = crate::restore::check::lost_ranges(&front, &t.seen, r.header.block_size as u64);
    }
}

/// Reads `data` as a seekable stream the way `restore -x` does: front,
/// end record, relocation table, then the data records holding every
/// file's blocks, by offset.
pub fn random_access(data: &[u8]) {
    use crate::restore::chain::{Access, Link};
    use crate::restore::fetch::{deliver, Plan};
    use crate::stream::reader::Records;
    use crate::stream::seek::SeekStream;
    use std::io::Write;
    let Ok(mut f) = tempfile::tempfile() else {
        return;
    };
    if f.write_all(data).is_err() {
        return;
    }
    let Ok(mut s) = SeekStream::open(f, "fuzz") else {
        return;
    };
    let _ = s.check_single();
    let Ok(front) = read_front(&mut s) else {
        return;
    };
    let mut link = Link {
        name: "fuzz".into(),
        header: s.header().clone(),
        data_start: s.position(),
        front,
        access: Access::Seek(Box::new(s)),
    };
    let files = link
        .front
        .tree
        .inodes
        .iter()
        .filter(|i| i.kind == crate::tree::Kind::File)
        .map(|i| (i.ino, i));
    let Ok(mut plan) = Plan::new(&[&link], files) else {
        return;
    };
    let wants = plan.per_link.pop().unwrap_or_default();
    let _ = deliver(&mut link, wants, |_, _, _| Ok(()));
}

/// Parses `data` as a catalog file, and as a catalog body (the part behind
/// the checksum and compression, which random mutations rarely get past).
pub fn catalog(data: &[u8]) {
    let _ = crate::catalog::decode(data);
    let _ = crate::catalog::decode_body(data);
}

/// Parses `data` as one record, then its payload as every payload kind.
pub fn records(data: &[u8]) {
    use crate::stream::payload::{decode_data, decode_reloc, End, Image};
    use crate::stream::record::{open, parse_header, HEADER_LEN};
    if data.len() >= HEADER_LEN {
        for seed in [0, 0x5d5d_5d5d_5d5d_5d5d] {
            if let Ok(h) = parse_header(data[..HEADER_LEN].try_into().unwrap(), seed) {
                let _ = open(&h, &data[HEADER_LEN..], seed);
            }
        }
    }
    let _ = crate::stream::header::StreamHeader::decode(data);
    let _ = Image::decode(data);
    let _ = decode_data(data);
    let _ = decode_reloc(data);
    let _ = End::decode(data);
    let mut b = crate::tree::TreeBuilder::new(4096);
    let _ = crate::restore::check::decode_meta(&mut b, data);
}

/// Builds a stream with valid framing (sequence numbers, checksums, digest
/// list, end record) from fuzzer-chosen records, then reads it: this reaches
/// the cross-record rules (metadata against image, segments against both,
/// end counts) that checksums keep random bytes away from. Input: repeated
/// `kind u8, len u16 LE, payload`; a header record is supplied when the
/// input does not start with one.
pub fn stream_sealed(data: &[u8]) {
    use crate::stream::record::RecordKind;
    use crate::stream::writer::StreamWriter;
    let mut recs: Vec<(RecordKind, &[u8])> = Vec::new();
    let mut at = 0;
    while at + 3 <= data.len() {
        let kind = match data[at] % 5 {
            0 => RecordKind::Header,
            1 => RecordKind::Meta,
            2 => RecordKind::Image,
            3 => RecordKind::Data,
            _ => RecordKind::Reloc,
        };
        let len = u16::from_le_bytes([data[at + 1], data[at + 2]]) as usize;
        let end = (at + 3 + len).min(data.len());
        recs.push((kind, &data[at + 3..end]));
        at = end;
    }
    let sink = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let Ok(mut w) = StreamWriter::new(Box::new(Sink(sink.clone())), 0, 4096) else {
        return;
    };
    if recs.first().map(|r| r.0) != Some(RecordKind::Header) {
        let h = crate::stream::header::StreamHeader {
            format_version: crate::stream::header::FORMAT_VERSION,
            tool_version: String::new(),
            source_uuid: [0; 16],
            source_path: Vec::new(),
            hostname: String::new(),
            snapshot: crate::stream::header::SnapshotRef {
                id: 1,
                uuid: [0; 16],
                time: crate::tree::Time::default(),
                level: 0,
            },
            full: true,
            base: None,
            block_size: 4096,
            compression_level: 0,
            entries: recs.iter().filter(|r| r.0 == RecordKind::Meta).count() as u64,
            stream_id: [0x5d; 16],
        };
        let _ = w.write_record(RecordKind::Header, &h.encode());
    }
    for (kind, payload) in recs {
        if w.write_record(kind, payload).is_err() {
            return;
        }
    }
    if w.finish().is_ok() {
        let bytes = sink.lock().unwrap().clone();
        stream(&bytes);
    }
}

/// Reads `data` as a virtual tape holding a dump (and as a volume header):
/// framing, filemarks, volume headers and the stream behind them.
pub fn tape(data: &[u8]) {
    let _ = crate::tape::volume::VolumeHeader::decode(data);
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("fuzz.tap");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let spec = path.to_string_lossy().into_owned();
    for file_number in [1, 2] {
        let Ok(r) = crate::tape::reader::TapeReader::open(vec![spec.clone()], file_number, None)
        else {
            continue;
        };
        let Ok(mut s) = StreamReader::open_salvaging(Box::new(r), "fuzz", Digest::Skip) else {
            continue;
        };
        while let Ok(Some(_)) = s.next_record() {}
    }
}

/// Reads `data` as a volume: a first byte of 0xF0 or more makes the rest
/// the metadata body inside valid superblock and blob framing (bit 0: a
/// compact volume); otherwise `data` is the whole file (to reach the rules behind the checksums). Then checks,
/// lists and exports every snapshot as the readers do.
pub fn volume(data: &[u8]) {
    use crate::volume::format::{block_offset, Superblock, SLOT_BYTES};
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("fuzz.vol");
    let file = match data.split_first() {
        Some((&m, body)) if m >= 0xF0 => {
            let blob = zstd::bulk::compress(body, 1).unwrap_or_default();
            let bs = 4096u64;
            let meta_blocks = (blob.len() as u64).div_ceil(bs).max(1);
            let sb = Superblock {
                block_size: bs as u32,
                uuid: [7; 16],
                generation: 1,
                meta_vbn: 65,
                meta_blocks,
                meta_len: blob.len() as u64,
                meta_raw_len: body.len() as u64,
                meta_sha256: crate::util::sha256(&blob),
                data_blocks: 64 + meta_blocks,
                max_blocks: 0,
                flags: m as u32 & 1,
            };
            let mut f = vec![0u8; SLOT_BYTES as usize];
            f.extend_from_slice(&sb.encode());
            f.resize(block_offset(65, bs) as usize, 0);
            f.extend_from_slice(&blob);
            f.resize(block_offset(sb.data_blocks + 1, bs) as usize, 0);
            f
        }
        _ => data.to_vec(),
    };
    if std::fs::write(&path, file).is_err() {
        return;
    }
    let report = crate::report::Report::quiet();
    let _ = crate::volume::check::check(&path);
    let _ = crate::volume::admin::snapshots(&path);
    let Ok(vol) = crate::volume::Volume::open(
        &path,
        crate::volume::store::Access::Read,
        crate::lock::Wait::No,
    ) else {
        return;
    };
    for s in &vol.state.snapshots {
        let sel = s.id.to_string();
        let _ = crate::volume::read::ls(&path, Some(&sel), &[], &report);
        let _ = crate::volume::tar::export(&path, Some(&sel), std::io::sink(), &report);
    }
}
