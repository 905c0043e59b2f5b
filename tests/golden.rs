//! Golden streams: streams written by earlier versions must stay
//! restorable byte for byte. `testdata/golden-vN/stream.sdump` was written
//! by stream format version N from the tree `build_golden_tree` makes; its
//! `manifest.json` describes that tree. To write the golden stream of a
//! new format version (only then, never to paper over a reader change, and
//! never over an older version's):
//! `SNAPDUMP_REGEN_GOLDEN=N cargo test --test golden`, N the new version.

mod common;
use common::*;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn build_golden_tree(root: &Path, version: u32) {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    fs::create_dir_all(root.join("docs/empty")).unwrap();
    fs::write(
        root.join("docs/readme.txt"),
        format!("snapdump golden stream, format version {version}\n").as_bytes(),
    )
    .unwrap();
    let text: Vec<u8> = (0..3000)
        .flat_map(|i| format!("{i:05} golden line\n").into_bytes())
        .collect();
    fs::write(root.join("docs/lines.txt"), &text).unwrap();
    fs::write(root.join("random.bin"), bytes(42, 20_000)).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(root.join("sparse.img")).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"middle", 1 << 20).unwrap();
        f.set_len(4 << 20).unwrap();
    }
    fs::write(root.join("empty"), b"").unwrap();
    symlink("docs/readme.txt", root.join("link")).unwrap();
    fs::hard_link(root.join("random.bin"), root.join("docs/hardlink.bin")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    fs::set_permissions(
        root.join("docs/readme.txt"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    fs::set_permissions(root.join("random.bin"), fs::Permissions::from_mode(0o4755)).unwrap();
    assert!(setxattr(
        &root.join("docs/readme.txt"),
        "user.purpose",
        b"golden"
    ));
    let name = std::ffi::OsStr::from_bytes(b"odd\nname-\xff");
    fs::write(root.join(name), b"odd").unwrap();
    let mut t = 1_700_000_000;
    for p in [
        "docs/readme.txt",
        "docs/lines.txt",
        "random.bin",
        "sparse.img",
        "empty",
        "link",
        "fifo",
        "docs/empty",
        "docs",
        ".",
    ] {
        set_times(&root.join(p), (t, 111), (t + 1, 222_333_444));
        t += 10;
    }
    if version >= 3 {
        // File flags (format 3): ones every Linux file system with flags
        // takes, and that leave the tree removable.
        chattr("+d", &root.join("docs/lines.txt"));
        chattr("+A", &root.join("docs"));
        chattr("+d +A", &root.join("sparse.img"));
    }
}

/// The stream golden volume N was received from: golden-v1 before volume
/// format 3, golden-v3 (which has file flags) from it on.
fn volume_source(version: u32) -> u32 {
    if version >= 3 {
        3
    } else {
        1
    }
}

/// A manifest line per entry: path, type, mode, size, allocated blocks,
/// mtime, content SHA-256, link target, xattrs, hardlink group.
fn manifest(root: &Path, version: u32) -> serde_json::Value {
    let tree = snapshot_tree(root);
    let mut v = Vec::new();
    for (path, e) in tree {
        let mut line = serde_json::json!({
            "path": snapdump::names::escape(&path),
            "kind": e.kind,
            "mode": format!("{:o}", e.mode),
            "uid": e.uid,
            "size": e.size,
            "allocated_4k_blocks": e.data_runs.iter().map(|r| r.1).sum::<u64>(),
            "mtime": [e.mtime.0, e.mtime.1],
            "sha256": e.content.map(|c| snapdump::ids::hex(&snapdump::digest::sha256(&c))),
            "target": e.target.map(|t| snapdump::names::escape(&t)),
            "xattrs": e.xattrs.iter().map(|(k, v)| format!("{}={}", snapdump::names::escape(k), snapdump::names::escape(v))).collect::<Vec<_>>(),
            "links": e.link_group.map(|g| g.len()),
        });
        if version >= 3 {
            line["flags"] = snapdump::fsx::flags::letters(e.flags.0).into();
            line["project"] = e.flags.1.into();
        }
        v.push(line);
    }
    serde_json::Value::Array(v)
}

#[test]
fn golden_v1_stream_restores_exactly() {
    golden_stream_restores_exactly(1);
}

#[test]
fn golden_v2_stream_restores_exactly() {
    golden_stream_restores_exactly(2);
}

#[test]
fn golden_v3_stream_restores_exactly() {
    golden_stream_restores_exactly(3);
}

/// Format 4: a synthetic full whose data records hold gap segments.
#[test]
fn golden_v4_stream_restores_exactly() {
    golden_stream_restores_exactly(4);
}

/// Format 5: the BLAKE3 digest list (a synthetic full again, so that
/// coalescing's copied records are covered by the new list too).
#[test]
fn golden_v5_stream_restores_exactly() {
    golden_stream_restores_exactly(5);
}

/// How many gap segments the data records of `stream` hold.
fn gap_segments(stream: &Path) -> usize {
    use snapdump::stream::reader::{Digest, StreamReader};
    use snapdump::stream::record::RecordKind;
    let f = std::fs::File::open(stream).unwrap();
    let mut r = StreamReader::open(Box::new(f), "golden", Digest::Check).unwrap();
    let mut gaps = 0;
    while let Some(rec) = r.next_record().unwrap() {
        if rec.kind == RecordKind::Data {
            let (table, _) = snapdump::stream::payload::decode_table(&rec.raw, true).unwrap();
            gaps += table.iter().filter(|s| s.is_gap()).count();
        }
    }
    gaps
}

fn golden_stream_restores_exactly(version: u32) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("testdata/golden-v{version}"));
    let stream = dir.join("stream.sdump");
    let man = dir.join("manifest.json");
    let regen = std::env::var("SNAPDUMP_REGEN_GOLDEN").ok();
    if regen.as_deref() == Some(&version.to_string()) {
        assert_eq!(
            version,
            snapdump::stream::header::FORMAT_VERSION,
            "only the current format version's golden stream can be written"
        );
        std::fs::create_dir_all(&dir).unwrap();
        let t = paths();
        build_golden_tree(&t.src, version);
        let dump = |level: &str, to: &Path| {
            // (nodump honoured from level 9 only, so that a level 1 keeps
            // the nodump files the manifest lists.)
            let (c, _, e) = run_s(&[
                "dump",
                level,
                "--honor-nodump",
                "9",
                "-f",
                p(to),
                "--catalog",
                p(&t.cat),
                p(&t.src),
            ]);
            assert_eq!(c, 0, "{e}");
        };
        if version >= 4 {
            // A synthetic full with a gap: the level 0, one block of
            // random.bin rewritten, the level 1, coalesced.
            let s0 = t.dir.path().join("s0");
            let s1 = t.dir.path().join("s1");
            dump("-0", &s0);
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(t.src.join("random.bin"))
                .unwrap();
            f.write_all_at(&[b'#'; 4096], 4096).unwrap();
            set_times(
                &t.src.join("random.bin"),
                (1_700_000_500, 0),
                (1_700_000_501, 0),
            );
            dump("-1", &s1);
            let (c, _, e) = run_s(&[
                "coalesce",
                "--max-waste",
                "100",
                "-f",
                p(&s0),
                "-f",
                p(&s1),
                "-o",
                p(&stream),
            ]);
            assert_eq!(c, 0, "{e}");
        } else {
            dump("-0", &stream);
        }
        let m = manifest(&t.src, version);
        std::fs::write(&man, serde_json::to_string_pretty(&m).unwrap() + "\n").unwrap();
    }
    let (c, out, e) = run_s(&["verify", "--json", "-f", p(&stream)]);
    assert_eq!(c, 0, "golden stream no longer verifies: {e}");
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["header"]["format_version"], version);
    if version >= 4 {
        assert!(gap_segments(&stream) > 0, "the golden stream holds a gap");
    }
    let t = paths();
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&stream), "--target", p(&t.out)]);
    assert_eq!(c, 0, "golden stream no longer restores: {e}");
    let want: serde_json::Value = serde_json::from_slice(&std::fs::read(&man).unwrap()).unwrap();
    let mut got = manifest(&t.out, version);
    // The restored root's mtime is the target's; ownership only as root.
    for (g, w) in got
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(want.as_array().unwrap())
    {
        if g["path"] == "." {
            g["mtime"] = w["mtime"].clone();
        }
        if !is_root() {
            g["uid"] = w["uid"].clone();
        }
    }
    assert_eq!(got, want);
}

/// `testdata/golden-volume-vN/volume.vol` is the golden stream received
/// into a volume of format version N: it must stay readable, check clean
/// and extract to the same tree (written with
/// `SNAPDUMP_REGEN_GOLDEN=volume-N`, for a new volume format only).
fn golden_volume_reads_exactly(version: u32) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let vol = root.join(format!("golden-volume-v{version}/volume.vol"));
    if std::env::var("SNAPDUMP_REGEN_GOLDEN").ok() == Some(format!("volume-{version}")) {
        let _ = std::fs::remove_file(&vol);
        std::fs::create_dir_all(vol.parent().unwrap()).unwrap();
        assert_eq!(run_s(&["volume", "create", p(&vol)]).0, 0);
        let stream = root.join(format!("golden-v{}/stream.sdump", volume_source(version)));
        let (c, _, e) = run_s(&["restore", "-r", "-f", p(&stream), "--volume", p(&vol)]);
        assert_eq!(c, 0, "{e}");
    }
    let bytes = std::fs::read(&vol).unwrap();
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        version,
        "{} is not of volume format {version}",
        vol.display()
    );
    let (c, out, e) = run_s(&["volume", "check", p(&vol)]);
    assert_eq!(
        c,
        0,
        "golden volume no longer checks: {e} {}",
        String::from_utf8_lossy(&out)
    );
    let t = paths();
    let (c, _, e) = run_s(&["volume", "extract", p(&vol), p(&t.out)]);
    assert_eq!(c, 0, "golden volume no longer extracts: {e}");
    let want: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join(format!("golden-v{}/manifest.json", volume_source(version))))
            .unwrap(),
    )
    .unwrap();
    let mut got = manifest(&t.out, volume_source(version));
    for (g, w) in got
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(want.as_array().unwrap())
    {
        if !is_root() {
            g["uid"] = w["uid"].clone();
        }
    }
    assert_eq!(got, want);
}

#[test]
fn golden_v1_volume_reads_exactly() {
    golden_volume_reads_exactly(1);
}

#[test]
fn golden_v2_volume_reads_exactly() {
    golden_volume_reads_exactly(2);
}

#[test]
fn golden_v3_volume_reads_exactly() {
    golden_volume_reads_exactly(3);
}

/// A format-1 volume takes its next commit in format 2 and keeps what it
/// held; replicating its old snapshot (no origins recorded) falls back to
/// the volume's own VBN space.
#[test]
fn golden_v1_volume_is_upgraded_by_its_next_commit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let t = paths();
    let vol = t.dir.path().join("v1.vol");
    std::fs::copy(root.join("golden-volume-v1/volume.vol"), &vol).unwrap();
    std::fs::create_dir_all(t.src.join("d")).unwrap();
    std::fs::write(t.src.join("d/f"), bytes(5, 50_000)).unwrap();
    let s = t.dir.path().join("s.sdump");
    let cat = t.dir.path().join("cat");
    assert_eq!(
        run_s(&["dump", "-0", "--catalog", p(&cat), "-f", p(&s), p(&t.src)]).0,
        0
    );
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s), "--volume", p(&vol)]);
    assert_eq!(c, 0, "{e}");
    let b = std::fs::read(&vol).unwrap();
    // The current superblock is the one with the higher generation.
    let slot = |o: usize| {
        (
            u64::from_le_bytes(b[o + 32..o + 40].try_into().unwrap()),
            u32::from_le_bytes(b[o + 8..o + 12].try_into().unwrap()),
        )
    };
    let (ga, va) = slot(0);
    let (gb, vb) = slot(4096);
    assert_eq!(
        if ga > gb { va } else { vb },
        snapdump::volume::format::VOLUME_VERSION
    );
    let (c, out, e) = run_s(&["volume", "check", p(&vol)]);
    assert_eq!(c, 0, "{e} {}", String::from_utf8_lossy(&out));
    let (c, _, e) = run_s(&["volume", "extract", &format!("{}@1", p(&vol)), p(&t.out)]);
    assert_eq!(c, 0, "{e}");
    let c2 = t.dir.path().join("c.vol");
    let (c, out, e) = run_s(&[
        "replicate",
        "--json",
        "--catalog",
        p(&cat),
        &format!("{}@1", p(&vol)),
        p(&c2),
    ]);
    assert_eq!(c, 0, "{e}");
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["decision"], "full", "{v}");
    let (c, _, e) = run_s(&["volume", "check", p(&c2)]);
    assert_eq!(c, 0, "{e}");
}
