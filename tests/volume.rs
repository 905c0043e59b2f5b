//! Volumes through the real binary: chains received into a volume and every
//! snapshot extracted byte for byte; relocation into compact and shared
//! volumes with pointer fixups across increments; export as tar read back
//! by GNU tar; a volume feeding another; snapshot deletion and shadows;
//! damage; refusals.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

type Snap = BTreeMap<Vec<u8>, Entry>;

fn json(args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (c, out, e) = run_s(&a);
    assert_eq!(c, 0, "{a:?}: {e}");
    serde_json::from_slice(&out).unwrap_or_else(|err| panic!("{a:?}: {err}: {e}"))
}

fn ok(args: &[&str]) -> String {
    let (c, out, e) = run_s(args);
    assert_eq!(c, 0, "{args:?}: {e}");
    String::from_utf8_lossy(&out).into_owned()
}

fn create(vol: &Path, extra: &[&str]) {
    let mut a = vec!["volume", "create"];
    a.extend(extra);
    a.push(p(vol));
    ok(&a);
}

fn receive(vol: &Path, streams: &[&Path]) -> serde_json::Value {
    let mut a = vec!["restore", "-r", "--volume", p(vol)];
    for s in streams {
        a.extend(["-f", p(s)]);
    }
    json(&a)
}

fn check(vol: &Path) -> serde_json::Value {
    let (c, out, e) = run_s(&["volume", "check", "--json", p(vol)]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|_| panic!("{e}"));
    assert_eq!(c, 0, "volume check {}: {v:#}", vol.display());
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    v
}

/// Extracts `vol@id` (whole) into a fresh directory and compares it with
/// the source as it was.
fn assert_snapshot(vol: &Path, id: u64, want: &Snap, dir: &Path) {
    let out = dir.join(format!(
        "x-{}-{id}",
        vol.file_name().unwrap().to_string_lossy()
    ));
    let _ = fs::remove_dir_all(&out);
    ok(&["volume", "extract", &format!("{}@{id}", p(vol)), p(&out)]);
    let got = snapshot_tree(&out);
    for (k, e) in want {
        let g = got
            .get(k)
            .unwrap_or_else(|| panic!("{} missing from @{id}", String::from_utf8_lossy(k)));
        if g != e {
            panic!(
                "@{id}: {} differs: {}",
                String::from_utf8_lossy(k),
                describe_diff(e, g)
            );
        }
    }
    assert_eq!(got.len(), want.len(), "@{id}: entries");
    fs::remove_dir_all(&out).unwrap();
}

fn dump_n(t: &Paths, level: u8, name: &str) -> PathBuf {
    let out = t.dir.path().join(name);
    assert_eq!(dump_to(level, &out, &t.cat, &t.src), 0, "dump -{level}");
    out
}

/// A source dumped at levels 0, 1 and 2, and the tree at each moment.
/// The tree as a dump will record it: read once first, so that access
/// times bumped by the first reading (relatime) have settled.
fn settled(src: &Path) -> Snap {
    snapshot_tree(src);
    snapshot_tree(src)
}

fn chain() -> (Paths, Vec<PathBuf>, Vec<Snap>) {
    let t = paths();
    build_fidelity_tree(&t.src);
    build_change_tree(&t.src.join("changes"));
    let mut snaps = vec![settled(&t.src)];
    let mut streams = vec![dump_n(&t, 0, "s0")];
    mutate_for_level_1(&t.src.join("changes"));
    snaps.push(settled(&t.src));
    streams.push(dump_n(&t, 1, "s1"));
    fs::write(t.src.join("changes/big"), bytes(40, 300_000)).unwrap();
    fs::write(t.src.join("new-in-2"), bytes(41, 12_345)).unwrap();
    fs::remove_dir_all(t.src.join("changes/becomes-dir")).unwrap();
    snaps.push(settled(&t.src));
    streams.push(dump_n(&t, 2, "s2"));
    (t, streams, snaps)
}

#[test]
fn a_chain_received_into_a_volume_gives_back_every_snapshot() {
    let (t, streams, snaps) = chain();
    let vol = t.dir.path().join("v.vol");
    create(&vol, &[]);
    for s in &streams {
        let r = receive(&vol, &[s]);
        assert_eq!(r["received"].as_array().unwrap().len(), 1);
    }
    check(&vol);
    for (k, want) in snaps.iter().enumerate() {
        assert_snapshot(&vol, k as u64 + 1, want, t.dir.path());
    }
    // A volume of smaller blocks relocates every block into several of
    // its own (pointers rewritten at its granularity), exactly.
    let small = t.dir.path().join("small.vol");
    create(&small, &["--block-size", "1024", "--compact"]);
    receive(&small, &[&streams[0], &streams[1], &streams[2]]);
    check(&small);
    for (k, want) in snaps.iter().enumerate() {
        assert_snapshot(&small, k as u64 + 1, want, t.dir.path());
    }
    // The newest by default, by time, one path, a listing.
    let out = t.dir.path().join("one");
    ok(&["volume", "extract", p(&vol), p(&out), "changes/a"]);
    assert_extracted(&snaps[2], &out, &["changes/a"]);
    let l = json(&["volume", "ls", &format!("{}@1", p(&vol)), "changes"]);
    let names: Vec<&str> = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"changes/delete-me") && names.contains(&"changes/a/b/moveme"));
    let l = json(&["volume", "ls", p(&vol), "changes"]);
    assert!(!l.to_string().contains("delete-me"));
    // The snapshots share their unchanged blocks: three snapshots of a
    // 70 MB (mostly sparse) tree take little more room than one.
    let table = json(&["volume", "snapshots", p(&vol)]);
    let rows = table["snapshots"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let blocks: Vec<u64> = rows.iter().map(|r| r["blocks"].as_u64().unwrap()).collect();
    let used = check(&vol)["blocks_in_use"].as_u64().unwrap();
    assert!(
        used < blocks[0] + blocks[1] / 2,
        "{used} blocks for {blocks:?}"
    );
    // The same streams applied to a directory give the same newest tree.
    let dir = t.dir.path().join("dir");
    for s in &streams {
        ok(&["restore", "-r", "-f", p(s), "--target", p(&dir)]);
    }
    let vx = t.dir.path().join("vx");
    ok(&["volume", "extract", p(&vol), p(&vx)]);
    ok(&["restore", "--finish", "--target", p(&dir)]);
    assert_same_tree(&dir, &vx);
}

#[test]
fn streams_out_of_order_repeated_or_foreign_are_refused_and_change_nothing() {
    let (t, streams, _) = chain();
    let vol = t.dir.path().join("v.vol");
    create(&vol, &[]);
    let before = fs::read(&vol).unwrap();
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&streams[1]), "--volume", p(&vol)]);
    assert_eq!(c, 2);
    assert!(e.contains("holds nothing of that source"), "{e}");
    assert_eq!(fs::read(&vol).unwrap(), before);
    receive(&vol, &[&streams[0]]);
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&streams[2]), "--volume", p(&vol)]);
    assert_eq!(c, 2);
    assert!(e.contains("apply the streams in order"), "{e}");
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&streams[0]), "--volume", p(&vol)]);
    assert_eq!(c, 2);
    assert!(e.contains("already holds snapshot 1"), "{e}");
    // Blocks larger than the stream's cannot hold its blocks.
    let large = t.dir.path().join("large.vol");
    create(&large, &["--block-size", "8192"]);
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&streams[0]), "--volume", p(&large)]);
    assert_eq!(c, 2);
    assert!(e.contains("--block-size 4096"), "{e}");
    // A damaged stream: nothing received.
    let mut b = fs::read(&streams[1]).unwrap();
    let at = first_data_record(&b) + 100;
    b[at] ^= 0x55;
    let bad = t.dir.path().join("bad");
    fs::write(&bad, &b).unwrap();
    let snaps_before = json(&["volume", "snapshots", p(&vol)]);
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&bad), "--volume", p(&vol)]);
    assert_eq!(c, 2, "{e}");
    assert_eq!(
        json(&["volume", "snapshots", p(&vol)])["snapshots"],
        snaps_before["snapshots"]
    );
    check(&vol);
    // Not a volume; a missing one.
    let (c, _, e) = run_s(&["volume", "ls", p(&streams[0])]);
    assert_eq!(c, 2);
    assert!(e.contains("not a usable snapdump volume"), "{e}");
    let (c, _, e) = run_s(&["volume", "check", "/nonexistent/v.vol"]);
    assert_eq!(c, 2);
    assert!(e.contains("cannot open volume /nonexistent/v.vol"), "{e}");
    let (c, _, _) = run_s(&["volume", "create", p(&vol)]);
    assert_eq!(c, 2, "create refuses an existing file");
}

/// Writes `n` files of `kib` KiB named `prefix-i` under `dir`.
fn files(dir: &Path, prefix: &str, n: usize, kib: usize, seed: u64) {
    for i in 0..n {
        fs::write(
            dir.join(format!("{prefix}-{i:04}")),
            bytes(seed + i as u64, kib * 1024),
        )
        .unwrap();
    }
}

#[test]
fn a_fragmented_source_packs_into_a_compact_volume() {
    let t = paths();
    // Churn: the files written first are deleted; the survivors keep their
    // (high) VBNs in the level 1, with a wide gap below them.
    files(&t.src, "old", 400, 16, 1000);
    files(&t.src, "zkeep", 30, 128, 3000);
    let first = dump_n(&t, 0, "first");
    for i in 0..400 {
        fs::remove_file(t.src.join(format!("old-{i:04}"))).unwrap();
    }
    let churn = t.dir.path().join("churn");
    let d = json(&[
        "dump",
        "-1",
        "-f",
        p(&churn),
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    let hw = d["vbn_high_water"].as_u64().unwrap();
    let want = snapshot_tree(&t.src);

    // A plain volume keeps the source's VBNs: the fragmented VBN space
    // as it is, and its full image of the level-1 snapshot.
    let plain = t.dir.path().join("p.vol");
    create(&plain, &[]);
    receive(&plain, &[&first, &churn]);
    let live = json(&["volume", "snapshots", p(&plain)])["snapshots"][1]["blocks"]
        .as_u64()
        .unwrap();
    assert!(
        hw > 2 * live,
        "the source is fragmented: high water {hw}, {live} live blocks"
    );
    let full = t.dir.path().join("full");
    ok(&["dump", "-0", "-f", p(&full), &format!("{}@2", p(&plain))]);

    let compact = t.dir.path().join("c.vol");
    create(&compact, &["--compact"]);
    let r = receive(&compact, &[&full]);
    assert!(r["received"][0]["relocated_blocks"].as_u64().unwrap() >= live / 2);
    let size = fs::metadata(&compact).unwrap().len();
    let live_bytes = live * 4096;
    assert!(
        size as f64 <= 1.1 * live_bytes as f64,
        "compact volume {size} bytes for {live_bytes} bytes of live data"
    );
    eprintln!(
        "compact volume: {size} bytes for {live_bytes} bytes of live data (VBN high water {hw})"
    );
    check(&compact);
    assert_snapshot(&compact, 1, &want, t.dir.path());
    // The same image into a plain volume keeps the VBN space (sparse).
    let plain2 = t.dir.path().join("p2.vol");
    create(&plain2, &[]);
    receive(&plain2, &[&full]);
    assert!(fs::metadata(&plain2).unwrap().len() >= (hw - 1) * 4096);
    check(&plain2);

    // The chain itself into a compact volume: once the level-0 snapshot is
    // deleted, its blocks are given back; the file keeps little more than
    // the live data allocated.
    let chain = t.dir.path().join("chain.vol");
    create(&chain, &["--compact"]);
    receive(&chain, &[&first, &churn]);
    ok(&["volume", "delete-snapshot", p(&chain), "1"]);
    use std::os::unix::fs::MetadataExt;
    let allocated = fs::metadata(&chain).unwrap().blocks() * 512;
    assert!(
        allocated as f64 <= 1.1 * live_bytes as f64 + 65536.0,
        "{allocated} bytes allocated for {live_bytes} of live data"
    );
    check(&chain);
    assert_snapshot(&chain, 2, &want, t.dir.path());

    // A volume created too small for the source's VBNs relocates within
    // its size; one too small for the data refuses, unchanged.
    let sized = t.dir.path().join("sized.vol");
    create(&sized, &["--size", &format!("{}", (live + 64) * 4096)]);
    receive(&sized, &[&full]);
    check(&sized);
    assert_snapshot(&sized, 1, &want, t.dir.path());
    let tiny = t.dir.path().join("tiny.vol");
    create(&tiny, &["--size", &format!("{}", live * 2048)]);
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&full), "--volume", p(&tiny)]);
    assert_eq!(c, 2);
    assert!(e.contains("is full"), "{e}");
    assert_eq!(
        json(&["volume", "snapshots", p(&tiny)])["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn a_volume_holding_another_source_relocates_and_fixes_pointers_in_later_increments() {
    let a = paths();
    let b = paths();
    files(&a.src, "a", 30, 40, 100);
    files(&b.src, "b", 30, 40, 200);
    let mut snaps = Vec::new();
    let a0 = dump_n(&a, 0, "a0");
    snaps.push(snapshot_tree(&a.src));
    let b0 = dump_n(&b, 0, "b0");
    snaps.push(snapshot_tree(&b.src));
    // Increments that rewrite some blocks and keep others: the kept ones
    // are found through the relocation map.
    for (t, seed) in [(&a, 300u64), (&b, 400)] {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(
                t.src
                    .join(format!("{}-0003", if seed == 300 { "a" } else { "b" })),
            )
            .unwrap();
        f.write_all_at(&bytes(seed, 8192), 8192).unwrap();
        fs::write(t.src.join("added"), bytes(seed + 1, 50_000)).unwrap();
    }
    let a1 = dump_n(&a, 1, "a1");
    snaps.push(snapshot_tree(&a.src));
    let b1 = dump_n(&b, 1, "b1");
    snaps.push(snapshot_tree(&b.src));
    fs::remove_file(a.src.join("a-0010")).unwrap();
    fs::write(a.src.join("a-0011"), bytes(500, 70_000)).unwrap();
    let a2 = dump_n(&a, 2, "a2");
    snaps.push(snapshot_tree(&a.src));

    let vol = a.dir.path().join("shared.vol");
    create(&vol, &[]);
    let r = receive(&vol, &[&a0, &b0, &a1, &b1, &a2]);
    let rec = r["received"].as_array().unwrap();
    assert_eq!(rec.len(), 5);
    // Both sources use VBNs from 1: the second one cannot keep them.
    assert!(
        rec[1]["relocated_blocks"].as_u64().unwrap() >= rec[1]["data_blocks"].as_u64().unwrap() / 2
    );
    check(&vol);
    for (k, want) in snaps.iter().enumerate() {
        assert_snapshot(&vol, k as u64 + 1, want, a.dir.path());
    }

    // Deleting a snapshot frees what only it used; the rest stays exact.
    let before = check(&vol)["blocks_in_use"].as_u64().unwrap();
    ok(&["volume", "delete-snapshot", &format!("{}@1", p(&vol))]);
    let after = check(&vol)["blocks_in_use"].as_u64().unwrap();
    assert!(
        after < before,
        "{after} blocks in use after deleting @1, {before} before"
    );
    assert_snapshot(&vol, 3, &snaps[2], a.dir.path());
    assert_snapshot(&vol, 5, &snaps[4], a.dir.path());
    let (c, _, e) = run_s(&["volume", "extract", &format!("{}@1", p(&vol)), p(&a.out)]);
    assert_eq!(c, 2);
    assert!(e.contains("holds no snapshot 1"), "{e}");

    // A shadow's blocks are reused by later receives and its bits
    // cleared; what stays readable is exact, what was reused is refused.
    ok(&["volume", "shadow", p(&vol), "3"]);
    let t = json(&["volume", "snapshots", p(&vol)]);
    assert!(t["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["volume_id"] == 3 && s["shadow"] == true));
    fs::write(a.src.join("a-0012"), bytes(600, 100_000)).unwrap();
    let a3 = dump_n(&a, 3, "a3");
    let want3 = snapshot_tree(&a.src);
    receive(&vol, &[&a3]);
    check(&vol);
    assert_snapshot(&vol, 6, &want3, a.dir.path());
    let out = a.dir.path().join("shadow-x");
    let (c, _, e) = run_s(&["volume", "extract", &format!("{}@3", p(&vol)), p(&out)]);
    if c == 0 {
        assert_snapshot(&vol, 3, &snaps[2], a.dir.path());
    } else {
        assert!(e.contains("reused (shadow snapshot)"), "{e}");
    }
}

#[test]
fn export_tar_is_read_back_by_gnu_tar_as_the_source() {
    let t = paths();
    build_fidelity_tree(&t.src);
    // GNU tar cannot create paths longer than PATH_MAX (snapdump can):
    // that part of the fidelity tree stays out of this comparison.
    fs::remove_dir_all(t.src.join("deep")).unwrap();
    dump_n(&t, 0, "s0");
    let vol = t.dir.path().join("v.vol");
    create(&vol, &[]);
    receive(&vol, &[&t.dir.path().join("s0")]);
    let tarfile = t.dir.path().join("v.tar");
    let out = fs::File::create(&tarfile).unwrap();
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_snapdump"))
        .args(["volume", "export-tar", p(&vol)])
        .stdout(out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    // A socket cannot go into a tar stream: named, exit status 1.
    let sockets = snapshot_tree(&t.src)
        .values()
        .any(|e| e.kind == libc::S_IFSOCK);
    let want_code = if sockets { 1 } else { 0 };
    assert_eq!(st.status.code(), Some(want_code), "{err}");
    assert!(!sockets || err.contains("socket not exported"), "{err}");
    fs::create_dir(&t.out).unwrap();
    let x = std::process::Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--sparse",
            "--numeric-owner",
            "-xpf",
        ])
        .arg(&tarfile)
        .arg("-C")
        .arg(&t.out)
        .output()
        .unwrap();
    assert!(
        x.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&x.stderr)
    );
    // tar sets the access time of what it extracts to the extraction time
    // unless asked: compare everything else exactly.
    let mut want = snapshot_tree(&t.src);
    let mut got = snapshot_tree(&t.out);
    for m in [&mut want, &mut got] {
        m.retain(|_, e| e.kind != libc::S_IFSOCK);
        for e in m.values_mut() {
            e.atime = (0, 0);
        }
    }
    let keys = |m: &Snap| {
        m.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&got), keys(&want));
    for (k, w) in &want {
        if k == b"." {
            continue;
        }
        let g = &got[k];
        assert!(
            g == w,
            "{}: {}",
            String::from_utf8_lossy(k),
            describe_diff(w, g)
        );
    }
}

#[test]
fn a_volume_feeds_another_with_identical_snapshots() {
    let (t, streams, snaps) = chain();
    let a = t.dir.path().join("a.vol");
    create(&a, &[]);
    receive(&a, &[&streams[0], &streams[1], &streams[2]]);

    // The whole history in one image set: S1, then S2-S1, then S3-S2.
    let set = t.dir.path().join("set");
    let d = json(&["dump", "-0", "--image", "S3+S2+S1", "-f", p(&set), p(&a)]);
    assert_eq!(d["streams"].as_array().unwrap().len(), 3);
    // The set verifies stream by stream, restores into a directory stream
    // after stream, and random-access readers refuse it by name.
    let v = json(&["verify", "-f", p(&set)]);
    assert_eq!(v.as_array().unwrap().len(), 3);
    let dir = t.dir.path().join("set-dir");
    let r = json(&["restore", "-r", "-f", p(&set), "--target", p(&dir)]);
    assert_eq!(r.as_array().unwrap().len(), 3);
    ok(&["restore", "--finish", "--target", p(&dir)]);
    let got = snapshot_tree(&dir);
    for (k, e) in &snaps[2] {
        if k != b"." {
            assert!(&got[k] == e, "{}", String::from_utf8_lossy(k));
        }
    }
    let (code, _, e) = run_s(&["restore", "-t", "-f", p(&set)]);
    assert_eq!(code, 2);
    assert!(e.contains("several streams back to back"), "{e}");
    let b = t.dir.path().join("b.vol");
    create(&b, &["--compact"]);
    receive(&b, &[&set]);
    check(&b);
    let ta = json(&["volume", "snapshots", p(&a)]);
    let tb = json(&["volume", "snapshots", p(&b)]);
    for (x, y) in ta["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .zip(tb["snapshots"].as_array().unwrap())
    {
        assert_eq!(
            x["snapshot"], y["snapshot"],
            "same id, uuid, time and level"
        );
        assert_eq!(x["blocks"], y["blocks"]);
    }
    for (k, want) in snaps.iter().enumerate() {
        assert_snapshot(&b, k as u64 + 1, want, t.dir.path());
    }

    // Levels from a volume as from a tree, and a plane expression over a
    // base the receiver holds: C gets S1 by a level 0 of A@1, then
    // S3+S2-S1 recreates S2 on the way to S3.
    let c = t.dir.path().join("c.vol");
    create(&c, &[]);
    let full = t.dir.path().join("full1");
    ok(&["dump", "-0", "-f", p(&full), &format!("{}@1", p(&a))]);
    receive(&c, &[&full]);
    let inc = t.dir.path().join("inc");
    let d = json(&["dump", "-0", "--image", "S3+S2-S1", "-f", p(&inc), p(&a)]);
    let carried: u64 = d["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["data_blocks"].as_u64().unwrap())
        .sum();
    receive(&c, &[&inc]);
    check(&c);
    for (k, want) in snaps.iter().enumerate() {
        assert_snapshot(&c, k as u64 + 1, want, t.dir.path());
    }
    // Only changed blocks travel: the increments carry what the tree
    // increments carried.
    let tree_carried: u64 = streams[1..]
        .iter()
        .map(|s| {
            json(&["verify", "-f", p(s)])["data_blocks"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(carried, tree_carried);

    // A level 1 from A (base: its newest snapshot of level 0) restores into
    // a directory as a stream of A's own chain.
    let l0 = t.dir.path().join("l0");
    let l1 = t.dir.path().join("l1");
    ok(&["dump", "-0", "-f", p(&l0), &format!("{}@1", p(&a))]);
    ok(&["dump", "-1", "-f", p(&l1), p(&a)]);
    let dir = t.dir.path().join("dir");
    ok(&[
        "restore",
        "-r",
        "-f",
        p(&l0),
        "-f",
        p(&l1),
        "--target",
        p(&dir),
    ]);
    ok(&["restore", "--finish", "--target", p(&dir)]);
    let got = snapshot_tree(&dir);
    for (k, e) in &snaps[2] {
        if k != b"." {
            assert!(&got[k] == e, "{}", String::from_utf8_lossy(k));
        }
    }
    // And into a volume that already got A@1 another way, it is refused
    // (a different VBN space), naming what to do.
    let (code, _, e) = run_s(&["restore", "-r", "-f", p(&l1), "--volume", p(&b)]);
    assert_eq!(code, 2);
    assert!(e.contains("already holds snapshot 3"), "{e}");
    // On tape: one snapshot per tape file; an image set is refused.
    let tape = t.dir.path().join("a.tap");
    ok(&["dump", "-0", "--image", "S1", "-f", p(&tape), p(&a)]);
    let d = t.dir.path().join("from-tape.vol");
    create(&d, &[]);
    receive(&d, &[&tape]);
    assert_snapshot(&d, 1, &snaps[0], t.dir.path());
    let (code, _, e) = run_s(&["dump", "-0", "--image", "S2+S1", "-f", p(&tape), p(&a)]);
    assert_eq!(code, 2);
    assert!(e.contains("tapes do not hold"), "{e}");
    // Bad expressions are refused with a clear message.
    for bad in ["S3-", "S3-S2-S1", "x", "S3+S9", "S1+S2-S3"] {
        let (code, _, e) = run_s(&["dump", "-0", "--image", bad, "-f", p(&t.out), p(&a)]);
        assert_eq!(code, 2, "{bad}");
        assert!(e.lines().count() == 1 && e.contains("error"), "{bad}: {e}");
    }
}

#[test]
fn damage_in_a_volume_is_found_by_check_and_refused_by_readers() {
    let (t, streams, snaps) = chain();
    let vol = t.dir.path().join("v.vol");
    create(&vol, &[]);
    receive(&vol, &[&streams[0], &streams[1]]);
    let good = fs::read(&vol).unwrap();
    // A torn newest superblock: the previous generation is used, whole.
    let gen = check(&vol)["generation"].as_u64().unwrap();
    let mut b = good.clone();
    let slot = ((gen % 2) * 4096) as usize;
    b[slot + 40] ^= 1;
    fs::write(&vol, &b).unwrap();
    let c = check(&vol);
    assert_eq!(c["generation"].as_u64().unwrap(), gen - 1);
    assert!(
        c["superblock_damage"]
            .as_str()
            .unwrap()
            .contains("checksum"),
        "{c}"
    );
    assert_eq!(c["snapshots"].as_u64().unwrap(), 1);
    assert_snapshot(&vol, 1, &snaps[0], t.dir.path());
    // A flipped data byte: check names it, extraction refuses the file.
    let mut b = good.clone();
    let needle = &bytes(1, 300_000)[..4096]; // dir/random.bin's first block
    let at = b
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the block is in the volume");
    b[at + 10] ^= 0x40;
    fs::write(&vol, &b).unwrap();
    let (code, out, _) = run_s(&["volume", "check", p(&vol)]);
    assert_eq!(code, 2);
    assert!(String::from_utf8_lossy(&out).contains("fail their checksums"));
    let (code, _, e) = run_s(&["volume", "extract", p(&vol), p(&t.out)]);
    assert_eq!(code, 2);
    assert!(e.contains("fails its checksum"), "{e}");
}

#[test]
fn receives_killed_at_random_moments_leave_the_old_or_the_new_snapshot() {
    let t = paths();
    for d in 0..4 {
        fs::create_dir(t.src.join(format!("d{d}"))).unwrap();
        for f in 0..12u64 {
            let name = t.src.join(format!("d{d}/f{f}"));
            fs::write(name, bytes(d * 100 + f, 250_000 + (f as usize) * 7_000)).unwrap();
        }
    }
    let old = settled(&t.src);
    let s0 = dump_n(&t, 0, "s0");
    for i in 0..48u64 {
        let f = t.src.join(format!("d{}/f{}", i / 12, i % 12));
        if i % 9 == 0 {
            fs::remove_file(&f).unwrap();
        } else if i % 3 != 0 {
            fs::write(&f, bytes(900 + i, 260_000)).unwrap();
        }
    }
    fs::write(t.src.join("d0/new"), bytes(999, 3_000_000)).unwrap();
    let new = settled(&t.src);
    let s1 = dump_n(&t, 1, "s1");

    let base = t.dir.path().join("base.vol");
    create(&base, &[]);
    receive(&base, &[&s0]);
    let probe = t.dir.path().join("probe.vol");
    fs::copy(&base, &probe).unwrap();
    let started = std::time::Instant::now();
    let r = receive(&probe, &[&s1]);
    let full = started.elapsed();
    eprintln!(
        "receiving s1 ({} blocks) took {full:?}",
        r["received"][0]["data_blocks"]
    );

    let vol = t.dir.path().join("v.vol");
    let receive_s1 = ["restore", "-r", "-f", p(&s1), "--volume", p(&vol)];
    // Every crash point of the commit protocol once, then random moments.
    let points = [
        "volume-data:1",
        "volume-data:3",
        "volume-before-commit:1",
        "volume-before-sync:1",
        "volume-before-superblock:1",
        "volume-after-superblock:1",
    ];
    let n = trials("SNAPDUMP_CRASH_TRIALS", 10).max(20);
    let mut rng = Rng(4242 + n);
    let (mut killed, mut at_new) = (0, 0);
    for trial in 0..points.len() as u64 + n {
        fs::copy(&base, &vol).unwrap();
        if let Some(point) = points.get(trial as usize) {
            let st = bin()
                .args(receive_s1)
                .env("SNAPDUMP_FAILPOINT", point)
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(!st.success(), "{point}: the process stopped there");
            killed += 1;
        } else {
            let delay = std::time::Duration::from_micros(rng.below(full.as_micros() as u64 + 1));
            killed += kill_after(&receive_s1, delay) as u64;
        }
        let c = check(&vol);
        let held = c["snapshots"].as_u64().unwrap();
        assert!(held == 1 || held == 2, "trial {trial}: {held} snapshots");
        if held == 1 {
            assert_snapshot(&vol, 1, &old, t.dir.path());
            receive(&vol, &[&s1]);
            check(&vol);
        } else {
            at_new += 1;
        }
        assert_snapshot(&vol, 2, &new, t.dir.path());
    }
    eprintln!(
        "volume crash trials: {}, killed while running: {killed}, found at the new snapshot: {at_new}",
        points.len() as u64 + n
    );
}

#[test]
fn a_full_file_system_refuses_the_receive_and_keeps_the_volume_as_it_was() {
    let t = paths();
    fs::write(t.src.join("small"), bytes(1, 200_000)).unwrap();
    let s0 = dump_n(&t, 0, "s0");
    let small = settled(&t.src);
    fs::write(t.src.join("big"), bytes(2, 12 << 20)).unwrap();
    let s1 = dump_n(&t, 1, "s1");
    let Some(fsys) = Tmpfs::new(&t.dir.path().join("fs"), "6M") else {
        eprintln!("skipped: needs root for a tmpfs");
        return;
    };
    let vol = fsys.0.join("v.vol");
    create(&vol, &[]);
    receive(&vol, &[&s0]);
    let len = fs::metadata(&vol).unwrap().len();
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--volume", p(&vol)]);
    assert_eq!(c, 2);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("is the file system full?") && e.contains("previous state"),
        "{e}"
    );
    assert_eq!(fs::metadata(&vol).unwrap().len(), len, "trimmed back");
    assert_eq!(check(&vol)["snapshots"], 1);
    assert_snapshot(&vol, 1, &small, t.dir.path());
}

#[test]
fn a_shadow_snapshot_gives_its_blocks_to_later_receives_and_stays_a_base() {
    let t = paths();
    fs::write(t.src.join("a"), bytes(1, 40 * 4096)).unwrap();
    fs::write(t.src.join("same"), bytes(2, 10 * 4096)).unwrap();
    let s0 = dump_n(&t, 0, "s0");
    fs::write(t.src.join("a"), bytes(3, 40 * 4096)).unwrap();
    let s1 = dump_n(&t, 1, "s1");
    let want2 = settled(&t.src);
    fs::write(t.src.join("a"), bytes(4, 40 * 4096)).unwrap();
    let s2 = dump_n(&t, 2, "s2");
    let want3 = settled(&t.src);

    let vol = t.dir.path().join("v.vol");
    create(&vol, &["--compact"]);
    receive(&vol, &[&s0, &s1]);
    let row = |id: u64| {
        json(&["volume", "snapshots", p(&vol)])["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["volume_id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(row(1)["exclusive_blocks"], 40);
    ok(&["volume", "shadow", &format!("{}@1", p(&vol))]);
    let (c, _, e) = run_s(&["volume", "shadow", &format!("{}@1", p(&vol))]);
    assert!(c == 2 && e.contains("already a shadow"), "{e}");
    // The next receive takes the shadow's 40 blocks (the lowest free ones
    // in a compact volume) and clears its bits.
    receive(&vol, &[&s2]);
    let r1 = row(1);
    assert_eq!(r1["shadow"], true);
    assert_eq!(r1["blocks"], 10, "only the blocks still shared remain");
    let c = check(&vol);
    assert_eq!(c["blocks_in_use"], 40 + 40 + 10, "{c}");
    assert_snapshot(&vol, 2, &want2, t.dir.path());
    assert_snapshot(&vol, 3, &want3, t.dir.path());
    let (code, _, e) = run_s(&[
        "volume",
        "extract",
        &format!("{}@1", p(&vol)),
        p(&t.out),
        "a",
    ]);
    assert_eq!(code, 2);
    assert!(e.contains("reused (shadow snapshot)"), "{e}");
    let out = t.dir.path().join("same");
    ok(&[
        "volume",
        "extract",
        &format!("{}@1", p(&vol)),
        p(&out),
        "same",
    ]);
    assert_eq!(fs::read(out.join("same")).unwrap(), bytes(2, 10 * 4096));
    // As a base it is conservative: the reused blocks count as changed.
    let d = json(&[
        "dump",
        "-0",
        "--image",
        "S3-S1",
        "-f",
        p(&t.out.with_extension("s")),
        p(&vol),
    ]);
    assert_eq!(d["streams"][0]["data_blocks"], 40);
    let (code, _, e) = run_s(&[
        "dump",
        "-0",
        "--image",
        "S1",
        "-f",
        p(&t.out.with_extension("x")),
        p(&vol),
    ]);
    assert!(code == 2 && e.contains("is a shadow"), "{e}");
}

#[test]
fn export_tar_keeps_every_xattr_name_exactly() {
    let t = paths();
    let f = t.src.join("f");
    fs::write(&f, b"data").unwrap();
    let set = |name: &[u8], value: &[u8]| {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(f.as_os_str().as_bytes()).unwrap();
        let k = std::ffi::CString::new(name).unwrap();
        let r = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                k.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        assert_eq!(r, 0, "setxattr {}", String::from_utf8_lossy(name));
    };
    set(b"user.plain", b"kept");
    set(b"user.a=b", b"val");
    set(b"user.100%done", b"pct");
    set(b"user.%3D", b"looks encoded");
    set(b"user.latin1-\xe9", b"bytes");
    set(b"user.sp ace", b"ok");
    dump_n(&t, 0, "s0");
    let vol = t.dir.path().join("v.vol");
    create(&vol, &[]);
    receive(&vol, &[&t.dir.path().join("s0")]);
    let tarfile = t.dir.path().join("v.tar");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_snapdump"))
        .args(["volume", "export-tar", p(&vol)])
        .stdout(fs::File::create(&tarfile).unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(0), "{err}");
    fs::create_dir(&t.out).unwrap();
    let x = std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(&tarfile)
        .arg("-C")
        .arg(&t.out)
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    let dir = snapdump::fsx::open_dir_path(&t.out).unwrap();
    let got = snapdump::fsx::xattr::list(std::os::fd::AsFd::as_fd(&dir), b"f").unwrap();
    // Every name comes back exactly as it was ('=' and '%' percent-encoded
    // as GNU tar does, other bytes as they are); none turns into another.
    assert_eq!(
        got,
        vec![
            (b"user.%3D".to_vec(), b"looks encoded".to_vec()),
            (b"user.100%done".to_vec(), b"pct".to_vec()),
            (b"user.a=b".to_vec(), b"val".to_vec()),
            (b"user.latin1-\xe9".to_vec(), b"bytes".to_vec()),
            (b"user.plain".to_vec(), b"kept".to_vec()),
            (b"user.sp ace".to_vec(), b"ok".to_vec()),
        ]
    );
}
