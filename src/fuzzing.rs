//! Entry points for fuzzing the parsers of untrusted input: a whole stream
//! as restore and verify read it, a catalog file, and single records.
//!
//! `fuzz/` wraps each in a cargo-fuzz target; the test suite replays every
//! input kept in `testdata/fuzz-regressions/` through the same functions,
//! so a crash found once stays fixed. Each function must return (an error
//! is fine) for any input: never panic, never hang, never allocate beyond
//! the format's limits.

use crate::stream::check::read_data;
use crate::stream::front::read_front;
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
        let _ = crate::stream::check::lost_ranges(&front, &t.seen, r.header.block_size as u64);
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
    let Ok(mut s) = SeekStream::open(Box::new(f), "fuzz") else {
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
    if let Ok((_, body)) = crate::catalog::open_sealed(data) {
        let _ = crate::catalog::pack::Manifest::decode(&body);
    }
    let _ = crate::catalog::pack::Manifest::decode(data);
    let _ = crate::catalog::decode_body_within(data, crate::catalog::CATALOG_VERSION, 1 << 24);
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
    let _ = decode_data(data, true);
    let _ = decode_reloc(data);
    let _ = End::decode(data);
    for form in [
        crate::tree::ItemForm::CURRENT,
        crate::tree::ItemForm::NO_FLAGS,
    ] {
        let mut b = crate::tree::TreeBuilder::new(4096);
        let _ = crate::stream::front::decode_meta(&mut b, data, form);
    }
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
    let _ = crate::media::tape::volume::VolumeHeader::decode(data);
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("fuzz.tap");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let spec = path.to_string_lossy().into_owned();
    for file_number in [1, 2] {
        let Ok(r) =
            crate::media::tape::reader::TapeReader::open(vec![spec.clone()], file_number, None)
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
                version: crate::volume::format::VOLUME_VERSION,
                block_size: bs as u32,
                uuid: [7; 16],
                generation: 1,
                meta_vbn: 65,
                meta_blocks,
                meta_len: blob.len() as u64,
                meta_raw_len: body.len() as u64,
                meta_sha256: crate::volume::format::meta_checksum(
                    crate::volume::format::VOLUME_VERSION,
                    &blob,
                ),
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

/// A source, two increments on one base, and a restore target held at the
/// base: what [`apply`] damages and applies, built once per process.
struct ApplyBench {
    _dir: tempfile::TempDir,
    s0: std::path::PathBuf,
    s1: Vec<u8>,
    other: Vec<u8>,
    bad: std::path::PathBuf,
    target: std::path::PathBuf,
    at_base: Vec<Fingerprint>,
    at_next: Vec<Fingerprint>,
}

/// What a comparison of a target looks at: path, type, size, mode, mtime
/// and the XXH3 of the contents (or the link target).
type Fingerprint = (Vec<u8>, u32, u64, u32, i64, i64, u128);

/// Every entry under `dir` (its restore state excluded), sorted.
fn fingerprint(dir: &std::path::Path) -> Vec<Fingerprint> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if d == dir && e.file_name() == crate::target::state::STATE_DIR {
                continue;
            }
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let sum = if m.is_file() {
                xxhash_rust::xxh3::xxh3_128(&std::fs::read(&p).unwrap_or_default())
            } else if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap_or_default();
                xxhash_rust::xxh3::xxh3_128(t.as_os_str().as_bytes())
            } else {
                0
            };
            if m.is_dir() {
                todo.push(p.clone());
            }
            let rel = p
                .strip_prefix(dir)
                .unwrap_or(&p)
                .as_os_str()
                .as_bytes()
                .to_vec();
            let mtime = if m.is_dir() { 0 } else { m.mtime() };
            out.push((
                rel,
                m.mode() & 0o170000,
                m.len(),
                m.mode() & 0o7777,
                mtime,
                m.mtime_nsec() * (!m.is_dir()) as i64,
                sum,
            ));
        }
    }
    out.sort();
    out
}

fn apply_bench() -> Option<ApplyBench> {
    use crate::dump::{dump, DumpOptions};
    let dir = tempfile::tempdir().ok()?;
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d/e")).ok()?;
    let data = |seed: u64, n: usize| -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    };
    std::fs::write(src.join("big"), data(1, 120_000)).ok()?;
    for i in 0..6 {
        std::fs::write(src.join(format!("d/f{i}")), data(10 + i, 3000)).ok()?;
    }
    std::fs::write(src.join("d/e/deep"), data(5, 9000)).ok()?;
    let report = crate::report::Report::quiet();
    let run = |level: u8, out: &std::path::Path, z: i32| {
        dump(
            &DumpOptions {
                level,
                output: out.to_string_lossy().into_owned(),
                volumes: Vec::new(),
                tape: crate::media::tape::writer::TapeOptions {
                    block_size: crate::media::tape::DEFAULT_RECORD_KIB * 1024,
                    append: false,
                    capacity: 0,
                    new_volume: None,
                },
                catalog_root: dir.path().join("cat"),
                compression: z,
                source: src.clone(),
                base: None,
                wait: crate::lock::Wait::Yes,
                resume: false,
                cross_mounts: false,
                rules: None,
                rules_changed: false,
                snapshot_time: None,
                tracker: crate::dump::tracked::TrackerMode::Off,
            },
            &report,
        )
        .ok()
    };
    let s0 = dir.path().join("s0");
    run(0, &s0, 3)?;
    let at_base = fingerprint(&src);
    use std::os::unix::fs::FileExt;
    let big = std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("big"))
        .ok()?;
    big.write_all_at(&data(2, 5000), 40_000).ok()?;
    std::fs::write(src.join("d/f1"), data(20, 2000)).ok()?;
    std::fs::remove_file(src.join("d/f2")).ok()?;
    std::fs::rename(src.join("d/e"), src.join("e")).ok()?;
    let s1 = dir.path().join("s1");
    run(1, &s1, 0)?;
    let at_next = fingerprint(&src);
    std::fs::write(src.join("d/f3"), data(30, 2000)).ok()?;
    let s1b = dir.path().join("s1b");
    run(1, &s1b, 3)?;
    let bench = ApplyBench {
        s1: std::fs::read(&s1).ok()?,
        other: std::fs::read(&s1b).ok()?,
        bad: dir.path().join("bad"),
        target: dir.path().join("target"),
        s0,
        at_base,
        at_next,
        _dir: dir,
    };
    bench.reset()?;
    Some(bench)
}

impl ApplyBench {
    fn restore(&self, stream: &std::path::Path, force: bool) -> anyhow::Result<()> {
        let opts = crate::target::summary::RestoreOptions {
            input: crate::media::Input::plain(&stream.to_string_lossy())?,
            target: self.target.clone(),
            force,
            digest: Digest::Skip,
            wait: crate::lock::Wait::Yes,
            restored_before: None,
            inplace: false,
        };
        crate::target::full::restore(&opts, &crate::report::Report::quiet()).map(|_| ())
    }

    /// A target at the base snapshot again.
    fn reset(&self) -> Option<()> {
        let _ = std::fs::remove_dir_all(&self.target);
        self.restore(&self.s0, false).ok()
    }
}

/// Applies a damaged increment to a target that holds its base, as
/// `restore -r` does, and checks the contract: the apply either succeeds
/// and the target is exactly the new snapshot, or fails and the target is
/// exactly the base, with no apply left pending. A panic here is a broken
/// contract, not a parser crash. Input: a first byte choosing the damage
/// (0 bytes XORed at offsets, 1 a truncation, 2 a record-aligned splice
/// with another increment on the same base, 3 bytes overwritten), then its
/// parameters.
pub fn apply(data: &[u8]) {
    static BENCH: std::sync::OnceLock<Option<std::sync::Mutex<ApplyBench>>> =
        std::sync::OnceLock::new();
    let Some(bench) = BENCH.get_or_init(|| apply_bench().map(std::sync::Mutex::new)) else {
        return;
    };
    let b = bench.lock().unwrap_or_else(|e| e.into_inner());
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let word = |i: usize| -> usize {
        let mut w = [0u8; 4];
        for (k, x) in rest.iter().skip(i).take(4).enumerate() {
            w[k] = *x;
        }
        u32::from_le_bytes(w) as usize
    };
    let mut s = b.s1.clone();
    match mode % 4 {
        0 => {
            for c in rest.chunks(5) {
                if c.len() == 5 {
                    let at = u32::from_le_bytes(c[..4].try_into().unwrap()) as usize % s.len();
                    s[at] ^= c[4] | 1;
                }
            }
        }
        1 => s.truncate(word(0) % s.len()),
        2 => {
            let (ra, rb) = (stream_records(&b.s1), stream_records(&b.other));
            let k = 1 + word(0) % (ra.len().min(rb.len()) - 1);
            s.truncate(ra[k]);
            s.extend_from_slice(&b.other[rb[k]..]);
        }
        _ => {
            let at = word(0) % s.len();
            let bytes = rest.get(4..).unwrap_or(&[]);
            let n = bytes.len().min(s.len() - at);
            s[at..at + n].copy_from_slice(&bytes[..n]);
        }
    }
    if std::fs::write(&b.bad, &s).is_err() {
        return;
    }
    let applied = b.restore(&b.bad, false);
    let now = fingerprint(&b.target);
    let pending = b.target.join(".snapdump-restore/apply").exists();
    match applied {
        Ok(()) => {
            assert!(
                now == b.at_next,
                "an increment applied, and the target is not its snapshot"
            );
            assert!(!pending);
            b.reset().expect("the target can be reset");
        }
        Err(e) => {
            assert!(
                now == b.at_base && !pending,
                "a refused increment left the target at neither snapshot: {e:#}"
            );
        }
    }
}

/// The offsets of a stream's records (framing only).
fn stream_records(b: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut at = 0;
    while at + 40 <= b.len() {
        v.push(at);
        at += 40 + u32::from_le_bytes(b[at + 16..at + 20].try_into().unwrap()) as usize;
    }
    v
}
