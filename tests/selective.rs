//! restore -x, -C, -t over chains, --at, and history, through the real
//! binary: single files and subtrees as of every snapshot of a 0+1+2 chain,
//! compared byte for byte and attribute for attribute with the source at
//! that moment.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

type Snap = BTreeMap<Vec<u8>, Entry>;

/// Dumps `src` at `level` into `dir/sN.sdump`; returns the stream.
fn dump(t: &Paths, level: u8, n: usize) -> PathBuf {
    let out = t.dir.path().join(format!("s{n}.sdump"));
    assert_eq!(dump_to(level, &out, &t.cat, &t.src), 0, "dump -{level}");
    out
}

/// `restore -x` of `paths` into a fresh directory `name`; returns the
/// exit code, stderr and the directory.
fn try_extract(
    t: &Paths,
    streams: &[&Path],
    at: Option<&str>,
    paths: &[&str],
    name: &str,
) -> (i32, String, PathBuf) {
    let target = t.dir.path().join(name);
    let _ = fs::remove_dir_all(&target);
    let mut args = vec!["restore", "-x", "--target", p(&target)];
    for s in streams {
        args.extend(["-f", p(s)]);
    }
    if let Some(a) = at {
        args.extend(["--at", a]);
    }
    args.extend(paths);
    let (c, _, e) = run_s(&args);
    (c, e, target)
}

/// As [`try_extract`], which must succeed; returns the directory.
fn extract(t: &Paths, streams: &[&Path], at: Option<&str>, paths: &[&str], name: &str) -> PathBuf {
    let (c, e, target) = try_extract(t, streams, at, paths, name);
    assert_eq!(c, 0, "restore -x {paths:?} failed: {e}");
    target
}

#[test]
fn files_and_subtrees_come_back_exactly_from_a_level_0() {
    let t = paths();
    build_fidelity_tree(&t.src);
    let before = snapshot_tree(&t.src);
    let s0 = dump(&t, 0, 0);
    for sel in [
        &["hello.txt"][..],
        &["dir"],
        &["dir/sub/partial-block", "sparse", "link"],
        &["h2", "dir/sub/h3"],
        &["./deep/"],
    ] {
        let out = extract(&t, &[&s0], None, sel, "x");
        let norm: Vec<&str> = sel
            .iter()
            .map(|s| s.trim_start_matches("./").trim_end_matches('/'))
            .collect();
        assert_extracted(&before, &out, &norm);
    }
    // No path: the whole tree, root attributes included.
    let out = extract(&t, &[&s0], None, &[], "all");
    assert_same_tree(&t.src, &out);
    // A path the stream lacks is named and the rest still extracted.
    let target = t.dir.path().join("partial");
    let (c, _, e) = run_s(&[
        "restore",
        "-x",
        "-f",
        p(&s0),
        "--target",
        p(&target),
        "hello.txt",
        "no/such",
    ]);
    assert_eq!(c, 1, "{e}");
    assert!(
        e.contains("no/such") && e.contains("not in snapshot 1"),
        "{e}"
    );
    assert_eq!(
        fs::read(target.join("hello.txt")).unwrap(),
        b"hello world\n"
    );
    // Existing files are not overwritten without --force.
    fs::write(target.join("hello.txt"), b"local edit").unwrap();
    let (c, _, e) = run_s(&[
        "restore",
        "-x",
        "-f",
        p(&s0),
        "--target",
        p(&target),
        "hello.txt",
    ]);
    assert_eq!(c, 2);
    assert!(e.contains("hello.txt") && e.contains("--force"), "{e}");
    assert_eq!(fs::read(target.join("hello.txt")).unwrap(), b"local edit");
    let (c, _, e) = run_s(&[
        "restore",
        "-x",
        "--force",
        "-f",
        p(&s0),
        "--target",
        p(&target),
        "hello.txt",
    ]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(
        fs::read(target.join("hello.txt")).unwrap(),
        b"hello world\n"
    );
}

/// A source dumped at levels 0, 1 and 2, with the tree as it was at each.
struct History {
    t: Paths,
    streams: Vec<PathBuf>,
    snaps: Vec<Snap>,
}

fn three_levels() -> History {
    let t = paths();
    let s = t.src.clone();
    fs::create_dir_all(s.join("docs/old")).unwrap();
    fs::create_dir_all(s.join("keep")).unwrap();
    fs::write(s.join("late"), bytes(1, 20_000)).unwrap(); // changes only in level 2
    fs::write(s.join("doomed"), bytes(2, 9_000)).unwrap(); // deleted in level 1
    fs::write(s.join("docs/old/name"), bytes(3, 12_000)).unwrap(); // renamed in level 1
    fs::write(s.join("keep/same"), bytes(4, 5_000)).unwrap(); // never changes
    fs::write(s.join("big"), bytes(5, 600_000)).unwrap(); // a block rewritten in level 1
    let mut snaps = vec![snapshot_tree(&s)];
    let mut streams = vec![dump(&t, 0, 0)];

    fs::remove_file(s.join("doomed")).unwrap();
    fs::create_dir_all(s.join("docs/new")).unwrap();
    fs::rename(s.join("docs/old/name"), s.join("docs/new/renamed")).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(s.join("big"))
            .unwrap();
        f.write_all_at(&bytes(6, 4096), 4096 * 70).unwrap();
    }
    snaps.push(snapshot_tree(&s));
    streams.push(dump(&t, 1, 1));
    // A second apart, so that --at can name a time between the two.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    fs::write(s.join("late"), bytes(7, 26_000)).unwrap();
    fs::write(s.join("doomed"), b"a new file under an old name").unwrap();
    snaps.push(snapshot_tree(&s));
    streams.push(dump(&t, 2, 2));
    History { t, streams, snaps }
}

#[test]
fn every_snapshot_of_a_chain_is_extracted_as_it_was() {
    let h = three_levels();
    // Streams in any order; --at picks the snapshot.
    let all: Vec<&Path> = vec![&h.streams[2], &h.streams[0], &h.streams[1]];
    let exists = |k: usize, path: &str| h.snaps[k].contains_key(path.as_bytes());
    for (k, snap) in h.snaps.iter().enumerate() {
        let at = (k + 1).to_string();
        for path in [
            "late",
            "doomed",
            "docs",
            "docs/old/name",
            "docs/new/renamed",
            "keep",
            "big",
        ] {
            if !exists(k, path) {
                continue;
            }
            let out = extract(&h.t, &all, Some(&at), &[path], "x");
            assert_extracted(snap, &out, &[path]);
        }
        // The whole tree at that moment.
        let out = extract(&h.t, &all, Some(&at), &[], "all");
        let got = snapshot_tree(&out);
        for (key, e) in snap {
            if key != b"." {
                assert_eq!(
                    &got[key],
                    e,
                    "{} at snapshot {}",
                    String::from_utf8_lossy(key),
                    k + 1
                );
            }
        }
        assert_eq!(got.len(), snap.len());
    }
    // Without --at: the newest. Only the streams the chain needs are read:
    // a level-0 + level-2 chain without the level 1 is refused, naming it.
    let out = extract(&h.t, &all, None, &["late"], "newest");
    assert_extracted(&h.snaps[2], &out, &["late"]);
    let (c, e, _) = try_extract(
        &h.t,
        &[&h.streams[0], &h.streams[2]],
        None,
        &["late"],
        "broken",
    );
    assert_eq!(c, 2);
    assert!(
        e.contains("snapshot 2") && e.contains("add the stream"),
        "{e}"
    );
    // A file deleted in level 1 is not in snapshot 2.
    let (c, e, _) = try_extract(
        &h.t,
        &[&h.streams[0], &h.streams[1]],
        None,
        &["doomed"],
        "gone",
    );
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("none of the given paths"), "{e}");
    // --at a time: the newest snapshot taken at or before it. Snapshot 2's
    // time as snapdump prints it (to the second, which --at covers whole)
    // selects snapshot 2; snapshot 3 was taken in a later second.
    let v = list_json(&[&h.streams[0], &h.streams[1]], None, &[]);
    let at = v["header"]["snapshot"]["time"]
        .as_str()
        .unwrap()
        .to_string();
    let out = extract(&h.t, &all, Some(&at), &["late"], "attime");
    assert_extracted(&h.snaps[1], &out, &["late"]);
    let mut args = vec!["restore", "-x", "--at", &at, "--target", p(&out)];
    for s in &all {
        args.extend(["-f", p(s)]);
    }
    args.extend(["keep", "doomed"]);
    let (c, _, e) = run_s(&args);
    assert_eq!(c, 1, "doomed was deleted in snapshot 2: {e}");
    assert!(e.contains("doomed: not in snapshot 2"), "{e}");
    let (c, _, e) = run_s(&[
        "restore",
        "-x",
        "-f",
        p(&h.streams[0]),
        "--at",
        "2001-01-01T00:00:00Z",
        "--target",
        p(&h.t.dir.path().join("early")),
    ]);
    assert_eq!(c, 2);
    assert!(e.contains("at or before 2001-01-01T00:00:00Z"), "{e}");
}

#[test]
fn a_chain_read_from_a_pipe_gives_the_same_files() {
    let h = three_levels();
    let target = h.t.dir.path().join("piped");
    let cmd = format!(
        "cat {} | {} restore -x -f {} -f - -f {} --target {} late docs big",
        p(&h.streams[2]),
        env!("CARGO_BIN_EXE_snapdump"),
        p(&h.streams[0]),
        p(&h.streams[1]),
        p(&target)
    );
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_extracted(&h.snaps[2], &target, &["late", "docs", "big"]);
}

fn list_json(streams: &[&Path], at: Option<&str>, paths: &[&str]) -> serde_json::Value {
    let mut args = vec!["restore", "-t", "--json"];
    for s in streams {
        args.extend(["-f", p(s)]);
    }
    if let Some(a) = at {
        args.extend(["--at", a]);
    }
    args.extend(paths);
    let (c, o, e) = run_s(&args);
    assert_eq!(c, 0, "{e}");
    serde_json::from_slice(&o).unwrap()
}

#[test]
fn listings_name_the_snapshot_that_last_changed_each_entry() {
    let h = three_levels();
    let all: Vec<&Path> = h.streams.iter().map(|s| s.as_path()).collect();
    let v = list_json(&all, None, &[]);
    let changed: BTreeMap<String, (u64, bool)> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            for f in ["path", "type", "size", "mode", "uid", "gid", "mtime"] {
                assert!(!e[f].is_null(), "{f} missing in {e}");
            }
            (
                e["path"].as_str().unwrap().to_string(),
                (
                    e["changed"]["id"].as_u64().unwrap(),
                    e["changed"]["exact"].as_bool().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(changed["keep/same"], (1, true));
    assert_eq!(changed["keep"], (1, true));
    assert_eq!(changed["big"], (2, true));
    assert_eq!(changed["docs/new/renamed"], (2, true));
    assert_eq!(changed["late"], (3, true));
    assert_eq!(changed["doomed"], (3, true));
    // The level 2 alone: what it carries is exact; the rest is "at or
    // before" its base.
    let v = list_json(&[&h.streams[2]], None, &["late", "keep/same"]);
    let e = &v["entries"];
    assert_eq!(
        (e[0]["path"].as_str(), e[0]["changed"]["id"].as_u64()),
        (Some("keep/same"), Some(2))
    );
    assert_eq!(e[0]["changed"]["exact"], false);
    assert_eq!(
        (e[1]["path"].as_str(), e[1]["changed"]["id"].as_u64()),
        (Some("late"), Some(3))
    );
    // --at lists an older snapshot.
    let v = list_json(&all, Some("1"), &[]);
    let names: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"docs/old/name") && !names.contains(&"docs/new/renamed"));
}

#[test]
fn history_names_every_snapshot_in_which_a_file_changed() {
    let h = three_levels();
    let hist = |args: &[&str]| {
        let mut a = vec!["history", "--json"];
        a.extend(args);
        let (c, o, e) = run_s(&a);
        assert!(c == 0 || c == 1, "{e}");
        let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
        v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["snapshot"]["id"].as_u64().unwrap(),
                    v["change"].as_str().unwrap().to_string(),
                    v["changed_block_count"].as_u64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let f: Vec<&str> = h.streams.iter().flat_map(|s| ["-f", p(s)]).collect();
    let with = |path: &str| {
        let mut a = f.clone();
        a.push(path);
        hist(&a)
    };
    assert_eq!(
        with("big"),
        [(1, "added".into(), 147), (2, "modified".into(), 1)]
    );
    assert_eq!(
        with("late"),
        [(1, "added".into(), 5), (3, "modified".into(), 7)]
    );
    assert_eq!(
        with("doomed"),
        [
            (1, "added".into(), 3),
            (2, "deleted".into(), 0),
            (3, "added".into(), 1)
        ]
    );
    assert_eq!(with("keep/same"), [(1, "added".into(), 2)]);
    // The same from the catalog, by absolute path: it finds the streams.
    let abs = h.t.src.join("big");
    let (c, o, e) = run_s(&["history", "--catalog", p(&h.t.cat), p(&abs)]);
    assert_eq!(c, 0, "{e}");
    let text = String::from_utf8(o).unwrap();
    assert!(
        text.contains("snapshot    1") && text.contains("modified, blocks 70"),
        "{text}"
    );
}

#[test]
fn compare_finds_every_change_of_the_level_1_mutations_and_none_otherwise() {
    let t = paths();
    build_change_tree(&t.src);
    let s0 = dump(&t, 0, 0);
    let cmp = |streams: &[&Path]| {
        let mut args = vec!["restore", "-C", "--json", "--target", p(&t.src)];
        for s in streams {
            args.extend(["-f", p(s)]);
        }
        let (c, o, e) = run_s(&args);
        let v: serde_json::Value = serde_json::from_slice(&o).unwrap_or_else(|_| panic!("{e}"));
        let diffs: Vec<(String, String)> = v["differences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["path"].as_str().unwrap().into(),
                    d["what"].as_str().unwrap().into(),
                )
            })
            .collect();
        (c, diffs)
    };
    assert_eq!(
        cmp(&[&s0]),
        (0, vec![]),
        "an unchanged tree has no differences"
    );
    let changed = mutate_for_level_1(&t.src);
    let (c, diffs) = cmp(&[&s0]);
    assert_eq!(c, 1);
    for path in &changed {
        assert!(
            diffs.iter().any(|d| d.0 == *path),
            "{path} not reported: {diffs:?}"
        );
    }
    for d in &diffs {
        assert!(
            changed.contains(&d.0.as_str()),
            "unexpected difference {d:?}"
        );
    }
    let has = |p: &str, w: &str| diffs.iter().any(|d| d.0 == p && d.1 == w);
    assert!(has("big", "content") && has("holes", "content") && has("a/app", "size"));
    assert!(has("a/b/moveme", "missing") && has("moved", "extra"));
    assert!(has("becomes-dir", "type") && has("becomes-file", "type"));
    assert!(has("attr-only", "mode") && has("sym", "target"));
    // The text form: one line per difference.
    let (c, o, _) = run_s(&["restore", "-C", "-f", p(&s0), "--target", p(&t.src)]);
    assert_eq!(c, 1);
    assert_eq!(String::from_utf8(o).unwrap().lines().count(), diffs.len());
    // After a level 1, the chain matches the tree again, and so does a
    // tree restored from it.
    let s1 = dump(&t, 1, 1);
    assert_eq!(cmp(&[&s0, &s1]), (0, vec![]));
    let (c, _, e) = run_s(&[
        "restore",
        "-r",
        "-f",
        p(&s0),
        "-f",
        p(&s1),
        "--target",
        p(&t.out),
    ]);
    assert_eq!(c, 0, "{e}");
    let (c, o, e) = run_s(&[
        "restore",
        "-C",
        "-f",
        p(&s1),
        "-f",
        p(&s0),
        "--target",
        p(&t.out),
    ]);
    assert_eq!((c, o.len()), (0, 0), "{e}");
    // The empty lost+found of a fresh file system is not a difference.
    fs::create_dir(t.out.join("lost+found")).unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(&t.src).unwrap();
        set_times(
            &t.out,
            (m.atime(), m.atime_nsec()),
            (m.mtime(), m.mtime_nsec()),
        );
    }
    let c2 = [
        "restore",
        "-C",
        "-f",
        p(&s1),
        "-f",
        p(&s0),
        "--target",
        p(&t.out),
    ];
    let (c, o, e) = run_s(&c2);
    assert_eq!(
        (c, String::from_utf8_lossy(&o).into_owned()),
        (0, String::new()),
        "{e}"
    );
    fs::write(t.out.join("lost+found/x"), b"").unwrap();
    let (c, o, _) = run_s(&c2);
    assert_eq!(c, 1);
    assert!(String::from_utf8_lossy(&o).contains("lost+found: on disk but not in the snapshot"));
}

#[test]
fn extracting_most_of_a_stream_reads_it_in_one_pass() {
    let t = paths();
    fs::write(t.src.join("large"), bytes(11, 24 << 20)).unwrap();
    fs::write(t.src.join("small"), bytes(12, 3000)).unwrap();
    let s0 = dump(&t, 0, 0);
    let len = fs::metadata(&s0).unwrap().len();
    let run = |paths: &[&str], name: &str| {
        let target = t.dir.path().join(name);
        let mut args = vec![
            "restore",
            "-x",
            "--json",
            "-f",
            p(&s0),
            "--target",
            p(&target),
        ];
        args.extend(paths);
        let (c, o, e) = run_s(&args);
        assert_eq!(c, 0, "{e}");
        let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
        (target, v["stream_bytes_read"].as_u64().unwrap())
    };
    // About a hundred data records, all wanted: one ordered pass.
    let (all, read) = run(&[], "all");
    assert_same_tree(&t.src, &all);
    assert!(
        read >= len - 128 && read <= len + (1 << 20),
        "{read} of {len}"
    );
    // One small file: a record or two.
    let (one, read) = run(&["small"], "one");
    assert_eq!(fs::read(one.join("small")).unwrap(), bytes(12, 3000));
    assert!(read < len / 20, "{read} of {len}");
}

#[test]
fn damaged_or_truncated_streams_are_named_and_unneeded_damage_is_harmless() {
    let t = paths();
    fs::write(t.src.join("a-first"), bytes(21, 2 << 20)).unwrap();
    fs::write(t.src.join("z-last"), bytes(22, 5000)).unwrap();
    let s0 = dump(&t, 0, 0);
    let good = fs::read(&s0).unwrap();
    let n = good.len();
    let try_x = |data: &[u8], path: &str| {
        let f = t.dir.path().join("damaged.sdump");
        fs::write(&f, data).unwrap();
        let target = t
            .dir
            .path()
            .join(format!("x-{}", data.len() ^ data[n / 2] as usize));
        let _ = fs::remove_dir_all(&target);
        let (c, _, e) = run_s(&["restore", "-x", "-f", p(&f), "--target", p(&target), path]);
        (c, e, target)
    };
    // Damage in the middle of a-first's data: z-last still comes back.
    let mut bad = good.clone();
    bad[n / 2] ^= 0x40;
    let (c, e, target) = try_x(&bad, "z-last");
    assert_eq!(c, 0, "{e}");
    assert_eq!(fs::read(target.join("z-last")).unwrap(), bytes(22, 5000));
    // ... and a-first is refused, naming the record.
    let (c, e, target) = try_x(&bad, "a-first");
    assert_eq!(c, 2);
    assert!(
        e.contains("damaged.sdump") && e.contains("record") && e.contains("checksum"),
        "{e}"
    );
    assert!(e.contains("nothing was extracted"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        !target.join("a-first").exists(),
        "a partial file was left behind"
    );
    // Truncated: no end record to find the relocation table by.
    let (c, e, _) = try_x(&good[..n - 100], "z-last");
    assert_eq!(c, 2);
    assert!(e.contains("incomplete"), "{e}");
    // A damaged relocation table (just before the 128-byte end record).
    let mut bad = good.clone();
    bad[n - 140] ^= 0x01;
    let (c, e, _) = try_x(&bad, "z-last");
    assert_eq!(c, 2);
    assert!(e.contains("relocation") || e.contains("checksum"), "{e}");
}
