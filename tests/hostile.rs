//! Hostile streams, crafted by hand: restore must write nothing outside its
//! target, refuse with a clear error (exit 2), and keep memory bounded.

mod common;
use common::*;
use snapdump::stream::header::{SnapshotRef, StreamHeader, FORMAT_VERSION};
use snapdump::stream::payload::{encode_data, Image, Segment, VbnRun};
use snapdump::stream::record::RecordKind;
use snapdump::stream::writer::StreamWriter;
use snapdump::tree::{Attrs, Extent, Inode, Kind, Time, Tree};
use snapdump::wire::Enc;
use std::path::Path;

fn header(entries: u64) -> StreamHeader {
    StreamHeader {
        format_version: FORMAT_VERSION,
        tool_version: "crafted".into(),
        source_uuid: [7; 16],
        source_path: b"/crafted".to_vec(),
        hostname: "test".into(),
        snapshot: SnapshotRef {
            id: 1,
            uuid: [1; 16],
            time: Time::default(),
            level: 0,
        },
        full: true,
        base: None,
        block_size: 4096,
        compression_level: 0,
        entries,
        stream_id: [9; 16],
    }
}

fn attrs(mode: u32) -> Attrs {
    Attrs {
        mode,
        ..Attrs::default()
    }
}

/// A stream of `tree` carrying `data` for its extents.
fn craft(tree: &Tree, data: &[(Segment, Vec<u8>)]) -> Vec<u8> {
    craft_with(tree, &[], 0, data)
}

/// As [`craft`], with `extra` raw metadata items (`n` of them) appended.
fn craft_with(tree: &Tree, extra: &[u8], n: u32, data: &[(Segment, Vec<u8>)]) -> Vec<u8> {
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    struct W(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for W {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = StreamWriter::new(Box::new(W(buf.clone())), 0, 4096).unwrap();
    let entries = tree.dirents.len() as u64 + n as u64;
    w.write_record(RecordKind::Header, &header(entries).encode())
        .unwrap();
    let mut e = Enc::new();
    e.u32(entries as u32);
    for i in 0..tree.dirents.len() {
        tree.encode_item(i, &mut e, w.item_form());
    }
    e.fixed(extra);
    w.write_record(RecordKind::Meta, &e.buf).unwrap();
    let mut carried: Vec<VbnRun> = Vec::new();
    for i in &tree.inodes {
        for x in &i.extents {
            carried.push(VbnRun {
                vbn: x.vbn,
                count: x.count,
            });
        }
    }
    carried.sort_by_key(|r| r.vbn);
    w.write_record(
        RecordKind::Image,
        &Image {
            carried,
            dealloc: vec![],
        }
        .encode(),
    )
    .unwrap();
    for (s, d) in data {
        let at = w
            .write_record(RecordKind::Data, &encode_data(std::slice::from_ref(s), d))
            .unwrap();
        w.note_data(std::slice::from_ref(s), at);
    }
    w.end.entries = entries;
    w.end.inodes = tree.inodes.len() as u64;
    w.finish().unwrap();
    let v = buf.lock().unwrap().clone();
    v
}

/// One data segment: the 5 bytes "hello" of inode `ino` at VBN `vbn`.
fn hello(ino: u64, vbn: u64) -> [(Segment, Vec<u8>); 1] {
    [(
        Segment {
            ino,
            vbn,
            offset: 0,
            len: 5,
        },
        b"hello".to_vec(),
    )]
}

fn root_tree() -> Tree {
    let mut t = Tree::default();
    t.push_inode(0, vec![], Inode::new(0, Kind::Dir, attrs(0o755)));
    t
}

fn file(size: u64, vbn: u64) -> Inode {
    let mut i = Inode::new(0, Kind::File, attrs(0o644));
    i.size = size;
    if size > 0 {
        i.extents.push(Extent {
            block: 0,
            vbn,
            count: size.div_ceil(4096),
        });
    }
    i
}

/// Restores `stream` into a fresh target next to a sentinel directory and
/// checks nothing outside the target changed. Returns (exit code, stderr).
fn restore_guarded(stream: &[u8], extra: &[&str]) -> (i32, String, tempfile::TempDir) {
    let dir = tmp();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("sentinel"), b"untouched").unwrap();
    let f = dir.path().join("s.sdump");
    std::fs::write(&f, stream).unwrap();
    let target = dir.path().join("target");
    let before = listing(dir.path());
    let mut args = vec!["restore", "-r", "-f", p(&f), "--target", p(&target)];
    args.extend_from_slice(extra);
    let (c, _, e) = run_s(&args);
    let after = listing(dir.path());
    let outside_changes: Vec<_> = after
        .iter()
        .filter(|x| !x.starts_with("target") && !before.contains(x))
        .collect();
    assert!(
        outside_changes.is_empty(),
        "restore wrote outside its target: {outside_changes:?}"
    );
    assert_eq!(
        std::fs::read(outside.join("sentinel")).unwrap(),
        b"untouched"
    );
    assert!(!target.join(".snapdump-restore/state").exists() || c == 0);
    (c, e, dir)
}

fn listing(root: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            v.push(rel);
        }
    }
    v.sort();
    v
}

#[test]
fn traversal_and_malformed_names_are_refused() {
    for bad in [
        &b".."[..],
        b"../x",
        b"/etc/x",
        b"a\0b",
        b".",
        b"",
        b"x/../../y",
    ] {
        let mut t = root_tree();
        t.push_inode(1, bad.to_vec(), file(5, 1));
        let s = craft(
            &t,
            &[(
                Segment {
                    ino: 2,
                    vbn: 1,
                    offset: 0,
                    len: 5,
                },
                b"pwned".to_vec(),
            )],
        );
        let (c, e, _d) = restore_guarded(&s, &[]);
        assert_eq!(c, 2, "name {bad:?} accepted");
        assert!(e.contains("name") && e.lines().count() == 1, "{bad:?}: {e}");
        let (c, _, _) = run_s(&["verify", "-f", p(&_d.path().join("s.sdump"))]);
        assert_eq!(c, 2);
    }
}

#[test]
fn a_file_written_through_an_earlier_symlink_is_refused() {
    let dir = tmp();
    let outside = dir.path().join("outside-target");
    // symlink "x" -> outside file, then a file also named "x" with data.
    let mut t = root_tree();
    let mut l = Inode::new(0, Kind::Symlink, attrs(0o777));
    l.target = outside.to_str().unwrap().as_bytes().to_vec();
    l.size = l.target.len() as u64;
    t.push_inode(1, b"x".to_vec(), l);
    t.push_inode(1, b"x".to_vec(), file(5, 1));
    let s = craft(
        &t,
        &[(
            Segment {
                ino: 3,
                vbn: 1,
                offset: 0,
                len: 5,
            },
            b"pwned".to_vec(),
        )],
    );
    for extra in [&[][..], &["--force"][..]] {
        let (c, e, d) = restore_guarded(&s, extra);
        assert_eq!(c, 2);
        assert!(e.contains("appears twice"), "{e}");
        assert!(!d.path().join("outside-target").exists());
    }
    // A symlink to a directory outside, then an entry "below" it: its
    // parent is not a directory of the stream, so it is refused too.
    let mut t = root_tree();
    let mut l = Inode::new(0, Kind::Symlink, attrs(0o777));
    l.target = b"/tmp".to_vec();
    l.size = 4;
    t.push_inode(1, b"d".to_vec(), l);
    t.push_inode(2, b"planted".to_vec(), file(5, 1));
    let s = craft(
        &t,
        &[(
            Segment {
                ino: 3,
                vbn: 1,
                offset: 0,
                len: 5,
            },
            b"pwned".to_vec(),
        )],
    );
    let (c, e, _) = restore_guarded(&s, &[]);
    assert_eq!(c, 2);
    assert!(e.contains("not a known directory"), "{e}");
    assert!(!Path::new("/tmp/planted").exists());
}

#[test]
fn hard_links_to_unknown_inodes_and_data_for_other_inodes_are_refused() {
    let mut t = root_tree();
    t.push_inode(1, b"f".to_vec(), file(5, 1));
    // tag 2 (a hard link), parent 1, name "escape", inode 99.
    let mut link = Enc::new();
    link.u8(2);
    link.u64(1);
    link.bytes(b"escape");
    link.u64(99);
    let s = craft_with(&t, &link.buf, 1, &hello(2, 1));
    let (c, e, _) = restore_guarded(&s, &[]);
    assert_eq!(c, 2);
    assert!(e.contains("hard link"), "{e}");
    // Data aimed at a directory inode, or beyond a file's extents.
    for seg in [
        Segment {
            ino: 1,
            vbn: 1,
            offset: 0,
            len: 5,
        },
        Segment {
            ino: 2,
            vbn: 1,
            offset: 4096,
            len: 5,
        },
        Segment {
            ino: 2,
            vbn: 2,
            offset: 0,
            len: 5,
        },
        Segment {
            ino: 7,
            vbn: 1,
            offset: 0,
            len: 5,
        },
    ] {
        let mut t = root_tree();
        t.push_inode(1, b"f".to_vec(), file(5, 1));
        let s = craft(&t, &[(seg, b"hello".to_vec())]);
        let (c, e, _) = restore_guarded(&s, &[]);
        assert_eq!(c, 2, "{seg:?} accepted");
        assert!(e.contains("record"), "{e}");
    }
}

#[test]
fn absurd_sizes_counts_and_a_decompression_bomb_are_refused_with_bounded_memory() {
    use snapdump::stream::record::{seal, HEADER_LEN};
    let mut t = root_tree();
    t.push_inode(1, b"f".to_vec(), file(5, 1));
    let good = craft(&t, &hello(2, 1));
    let (c, _, _) = restore_guarded(&good, &[]);
    assert_eq!(c, 0, "the crafted baseline must restore");
    let recs = |b: &[u8]| {
        let mut v = Vec::new();
        let mut at = 0;
        while at < b.len() {
            let len = u32::from_le_bytes(b[at + 16..at + 20].try_into().unwrap()) as usize;
            v.push((at, b[at + 4]));
            at += HEADER_LEN + len;
        }
        v
    };
    let meta_at = recs(&good).iter().find(|r| r.1 == 2).unwrap().0;
    // A metadata record claiming four billion items.
    let mut e = Enc::new();
    e.u32(u32::MAX);
    let seed = stream_seed(&good);
    let rec = seal(RecordKind::Meta, 1, &e.buf, None, seed);
    let mut bad = good[..meta_at].to_vec();
    bad.extend_from_slice(&rec);
    let (c, e, _) = restore_guarded(&bad, &[]);
    assert_eq!(c, 2);
    assert!(e.contains("count"), "{e}");
    // A record header claiming a 4 GiB payload.
    let mut bad = good.clone();
    bad[meta_at + 16..meta_at + 20].copy_from_slice(&u32::MAX.to_le_bytes());
    let (c, e, _) = restore_guarded(&bad, &[]);
    assert_eq!(c, 2, "{e}");
    // A decompression bomb: 16 MiB of zeros in a frame, declared as 100
    // bytes, with valid checksums.
    let zeros = vec![0u8; 16 << 20];
    let frame = zstd::bulk::compress(&zeros, 19).unwrap();
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(b"SDRC");
    h[4] = RecordKind::Meta as u8;
    h[5] = 1;
    h[8..16].copy_from_slice(&1u64.to_le_bytes());
    h[16..20].copy_from_slice(&(frame.len() as u32).to_le_bytes());
    h[20..24].copy_from_slice(&100u32.to_le_bytes());
    h[24..32].copy_from_slice(&xxhash_rust::xxh3::xxh3_64_with_seed(&frame, seed).to_le_bytes());
    let hh = xxhash_rust::xxh3::xxh3_64_with_seed(&h[..32], seed);
    h[32..40].copy_from_slice(&hh.to_le_bytes());
    let mut bad = good[..meta_at].to_vec();
    bad.extend_from_slice(&h);
    bad.extend_from_slice(&frame);
    let before = max_child_rss_kib();
    let (c, e, _) = restore_guarded(&bad, &[]);
    assert_eq!(c, 2);
    assert!(e.contains("decompress"), "{e}");
    assert!(
        max_child_rss_kib().max(before) < 256 * 1024,
        "memory not bounded"
    );
    // A file claiming an exabyte with one block of data restores as a
    // sparse file or fails cleanly; it never allocates.
    let mut t = root_tree();
    let mut f = file(5, 1);
    f.size = 1 << 60;
    t.push_inode(1, b"huge".to_vec(), f);
    let s = craft(
        &t,
        &[(
            Segment {
                ino: 2,
                vbn: 1,
                offset: 0,
                len: 4096,
            },
            vec![1u8; 4096],
        )],
    );
    let (c, e, _) = restore_guarded(&s, &[]);
    assert!(c == 0 || (c == 2 && e.contains("huge")), "{c}: {e}");
}

#[test]
fn a_directory_replaced_by_a_symlink_between_levels_stays_inside() {
    let t = paths();
    let outside = t.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::create_dir(t.src.join("d")).unwrap();
    std::fs::write(t.src.join("d/f"), bytes(1, 10_000)).unwrap();
    let s0 = t.dir.path().join("s0");
    let s1 = t.dir.path().join("s1");
    assert_eq!(dump_to(0, &s0, &t.cat, &t.src), 0);
    std::fs::remove_dir_all(t.src.join("d")).unwrap();
    std::os::unix::fs::symlink(&outside, t.src.join("d")).unwrap();
    std::fs::write(t.src.join("g"), bytes(2, 10_000)).unwrap();
    snapshot_tree(&t.src);
    assert_eq!(dump_to(1, &s1, &t.cat, &t.src), 0);
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&t.out)]).0,
        0
    );
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&t.out)]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "restore wrote through the symlink"
    );
    assert_same_tree(&t.src, &t.out);
}

#[test]
fn an_increment_header_without_a_base_is_refused() {
    let mut t = root_tree();
    t.push_inode(1, b"f".to_vec(), file(5, 1));
    let good = craft(&t, &hello(2, 1));
    let hlen = 40 + u32::from_le_bytes(good[16..20].try_into().unwrap()) as usize;
    let mut h = header(2);
    h.full = false;
    let rec = snapdump::stream::record::seal(RecordKind::Header, 0, &h.encode(), None, 0);
    let mut bad = rec;
    bad.extend_from_slice(&good[hlen..]);
    let (c, e, _) = restore_guarded(&bad, &[]);
    assert_eq!(c, 2);
    assert!(e.contains("without a base"), "{e}");
}

#[test]
fn two_files_claiming_one_vbn_are_refused_by_every_reader() {
    let mut t = root_tree();
    t.push_inode(1, b"a".to_vec(), file(5, 1));
    t.push_inode(1, b"b".to_vec(), file(5, 1));
    let s = craft(&t, &hello(2, 1));
    let (c, e, _d) = restore_guarded(&s, &[]);
    assert_eq!(c, 2, "restore -r: {e}");
    assert!(e.contains("both claim VBN 1"), "{e}");
    let dir = tmp();
    let f = dir.path().join("s");
    std::fs::write(&f, &s).unwrap();
    let x = dir.path().join("x");
    let vol = dir.path().join("v.vol");
    assert_eq!(run_s(&["volume", "create", p(&vol)]).0, 0);
    for args in [
        vec!["restore", "-x", "-f", p(&f), "--target", p(&x), "b"],
        vec!["restore", "-t", "-f", p(&f)],
        vec!["verify", "-f", p(&f)],
        vec!["restore", "-r", "-f", p(&f), "--volume", p(&vol)],
    ] {
        let (c, out, e) = run_s(&args);
        assert_eq!(c, 2, "{args:?}: {e}");
        assert!(e.contains("both claim VBN 1"), "{args:?}: {e}");
        assert!(!String::from_utf8_lossy(&out).contains("hello"));
    }
    assert!(!x.join("b").exists());
}

#[test]
fn thirty_thousand_nested_directories_list_with_bounded_memory() {
    // Paths 30,000 components deep: listing them all prints about 900 MB
    // of paths, which must stream out rather than be held.
    let mut t = root_tree();
    let mut parent = 1;
    for _ in 0..30_000 {
        parent = t.push_inode(
            parent,
            b"d".to_vec(),
            Inode::new(0, Kind::Dir, attrs(0o755)),
        );
    }
    t.push_inode(parent, b"bottom".to_vec(), file(0, 0));
    let s = craft(&t, &[]);
    let dir = tmp();
    let f = dir.path().join("s");
    std::fs::write(&f, &s).unwrap();
    let before = max_child_rss_kib();
    let mut child = bin()
        .args(["restore", "-t", "-f", p(&f)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Count the output as it comes instead of holding it.
    let mut stdout = child.stdout.take().unwrap();
    let (mut lines, mut total, mut last) = (0u64, 0u64, Vec::new());
    let mut buf = vec![0u8; 1 << 20];
    use std::io::Read;
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        total += n as u64;
        last.extend_from_slice(&buf[..n]);
        let keep = last.len().saturating_sub(70_000);
        last.drain(..keep);
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(lines, 30_001);
    assert!(total > 800_000_000, "{total} bytes listed");
    let tail = String::from_utf8_lossy(&last);
    assert!(
        tail.trim_end().ends_with("/d/bottom"),
        "{}",
        &tail[tail.len() - 40..]
    );
    assert!(
        max_child_rss_kib().max(before) < 200 * 1024,
        "listing a deep tree used {} KiB",
        max_child_rss_kib()
    );
}

#[test]
fn a_file_too_large_for_the_target_leaves_nothing_behind() {
    // A sparse file of 2^63 − 1 bytes: no Linux file system takes it.
    let mut t = root_tree();
    let mut f = file(0, 0);
    f.size = i64::MAX as u64;
    t.push_inode(1, b"huge".to_vec(), f);
    let s = craft(&t, &[]);
    let dir = tmp();
    let fpath = dir.path().join("s");
    std::fs::write(&fpath, &s).unwrap();
    let x = dir.path().join("x");
    for _ in 0..2 {
        let (c, _, e) = run_s(&["restore", "-x", "-f", p(&fpath), "--target", p(&x), "huge"]);
        assert_eq!(c, 2, "{e}");
        assert!(!e.contains("exists in the target"), "{e}");
        assert!(!x.join("huge").exists(), "a half-made file was left");
    }
}

#[test]
fn an_end_record_that_misplaces_the_relocation_table_is_refused_by_sequential_readers() {
    use snapdump::stream::payload::{End, END_LEN};
    let mut t = root_tree();
    t.push_inode(1, b"f".to_vec(), file(5, 1));
    let good = craft(&t, &hello(2, 1));
    let seed = {
        let hlen = u32::from_le_bytes(good[16..20].try_into().unwrap()) as usize;
        StreamHeader::decode(&good[40..40 + hlen]).unwrap().seed()
    };
    let at = good.len() - 40 - END_LEN;
    let seq = u64::from_le_bytes(good[at + 8..at + 16].try_into().unwrap());
    let end = End::decode(&good[at + 40..]).unwrap();
    let (c, _, _) = restore_guarded(&good, &[]);
    assert_eq!(c, 0, "the stream as written restores");
    // Checksums and digest all intact, only the end's placement of the
    // relocation table wrong: every sequential reader refuses it.
    for (offset, records) in [
        (end.reloc_offset + 1, end.reloc_records),
        (end.reloc_offset, end.reloc_records + 1),
    ] {
        let mut e = end.clone();
        e.reloc_offset = offset;
        e.reloc_records = records;
        let mut bad = good[..at].to_vec();
        bad.extend(snapdump::stream::record::seal(
            RecordKind::End,
            seq,
            &e.encode(),
            None,
            seed,
        ));
        let (c, err, _) = restore_guarded(&bad, &[]);
        assert_eq!(c, 2, "{err}");
        assert!(err.contains("relocation records at offset"), "{err}");
        let dir = tmp();
        let f = dir.path().join("s.sdump");
        std::fs::write(&f, &bad).unwrap();
        let (c, _, err) = run_s(&["verify", "-f", p(&f)]);
        assert_eq!(c, 2, "verify: {err}");
    }
}
