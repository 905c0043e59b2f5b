//! Levels 1-9 through the real binary: change detection, chains, in-place
//! apply, interrupted applies, and the VBN space under churn.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

/// A source, its catalog, and every stream dumped from it.
struct Chain {
    t: Paths,
    /// snapshot id -> (stream, base id, full)
    streams: BTreeMap<u64, (PathBuf, Option<u64>, bool)>,
}

impl Chain {
    fn new() -> Chain {
        Chain {
            t: paths(),
            streams: BTreeMap::new(),
        }
    }
    fn src(&self) -> &Path {
        &self.t.src
    }
    /// Dumps at `level`; returns the JSON summary.
    fn dump(&mut self, level: u8) -> serde_json::Value {
        let n = self.streams.len() + 1;
        let out = self.t.dir.path().join(format!("s{n}.sdump"));
        let lvl = format!("-{level}");
        let (c, o, e) = run_s(&[
            "dump",
            &lvl,
            "--json",
            "-f",
            p(&out),
            "--catalog",
            p(&self.t.cat),
            p(&self.t.src),
        ]);
        assert!(c == 0 || c == 1, "dump failed: {e}");
        let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
        let id = v["snapshot"]["id"].as_u64().unwrap();
        let base = v["base"]["id"].as_u64();
        self.streams
            .insert(id, (out, base, v["full"].as_bool().unwrap()));
        v
    }
    /// The streams to apply, in order, to restore snapshot `id`.
    fn chain(&self, id: u64) -> Vec<PathBuf> {
        let mut v = Vec::new();
        let mut cur = Some(id);
        while let Some(i) = cur {
            let (s, base, full) = &self.streams[&i];
            v.push(s.clone());
            cur = if *full { None } else { *base };
        }
        v.reverse();
        v
    }
    /// Restores the chain of `id` into a fresh directory and returns it.
    fn restore(&self, id: u64, name: &str) -> PathBuf {
        self.restore_with(id, name, &[])
    }

    /// As `restore`, each stream applied with `extra` arguments.
    fn restore_with(&self, id: u64, name: &str, extra: &[&str]) -> PathBuf {
        let target = self.t.dir.path().join(name);
        let _ = fs::remove_dir_all(&target);
        for s in self.chain(id) {
            let mut args = vec!["restore", "-r", "-f", p(&s), "--target", p(&target)];
            args.extend_from_slice(extra);
            let (c, _, e) = run_s(&args);
            assert_eq!(c, 0, "restore of {} failed: {e}", s.display());
        }
        target
    }
}

fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap();
}
#[test]
fn every_kind_of_change_round_trips_through_a_chain() {
    let mut ch = Chain::new();
    let s = ch.src().to_path_buf();
    build_change_tree(&s);
    snapshot_tree(&s);
    let v0 = ch.dump(0);
    assert_eq!(v0["full"], true);
    assert_same_tree(&s, &ch.restore(1, "r1"));

    mutate_for_level_1(&s);
    snapshot_tree(&s);
    let v1 = ch.dump(1);
    assert_eq!(v1["full"], false);
    assert_eq!(v1["base"]["id"], 1);
    // Only changed blocks travel: one block of big, the appended tail of
    // app, the new files; nothing of the renamed or attribute-only files.
    assert!(v1["data_blocks"].as_u64().unwrap() <= 8, "{v1}");
    assert_same_tree(&s, &ch.restore(2, "r2"));

    // Level 2 on top, then a level 1 again (base: the level 0).
    write(&s.join("a/b/new"), &bytes(9, 5000));
    snapshot_tree(&s);
    let v2 = ch.dump(2);
    assert_eq!(v2["base"]["id"], 2);
    assert_same_tree(&s, &ch.restore(3, "r3"));
    write(&s.join("moved"), &bytes(10, 30_000));
    snapshot_tree(&s);
    let v3 = ch.dump(1);
    assert_eq!(
        v3["base"]["id"], 1,
        "dumpdates: the newest lower level is the level 0"
    );
    let r4 = ch.restore(4, "r4");
    assert_eq!(ch.chain(4).len(), 2);
    assert_same_tree(&s, &r4);
    // The snapshots listing names the bases.
    let (_, o, _) = run_s(&["snapshots", "--json", "--catalog", p(&ch.t.cat)]);
    let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
    let bases: Vec<_> = v[0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["base"].clone())
        .collect();
    assert_eq!(
        bases,
        [serde_json::Value::Null, 1.into(), 2.into(), 1.into()]
    );
}

#[test]
fn level_without_a_lower_snapshot_is_a_full_image() {
    let mut ch = Chain::new();
    write(&ch.src().join("f"), b"data");
    let out = ch.t.dir.path().join("x.sdump");
    let (c, o, e) = run_s(&[
        "dump",
        "-3",
        "--json",
        "-f",
        p(&out),
        "--catalog",
        p(&ch.t.cat),
        p(ch.src()),
    ]);
    assert_eq!(c, 0, "{e}");
    assert!(e.contains("full image"), "{e}");
    let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
    assert_eq!(v["full"], true);
    assert_eq!(v["snapshot"]["level"], 3);
    let (_, o, _) = run_s(&["verify", "--json", "-f", p(&out)]);
    let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
    assert_eq!(v["header"]["full"], true);
    assert_eq!(v["header"]["base"], serde_json::Value::Null);
    let _ = ch.dump(5);
}

#[test]
fn wrong_chain_order_is_refused_and_the_target_untouched() {
    let mut ch = Chain::new();
    write(&ch.src().join("f"), &bytes(1, 10_000));
    ch.dump(0);
    write(&ch.src().join("g"), b"one");
    ch.dump(1);
    write(&ch.src().join("h"), b"two");
    ch.dump(2);
    let target = ch.t.dir.path().join("target");
    let s = |i: u64| ch.streams[&i].0.clone();
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&s(1)), "--target", p(&target)]).0,
        0
    );
    let before = snapshot_tree(&target);
    // Skipped: level 2 onto level 0.
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s(3)), "--target", p(&target)]);
    assert_eq!(c, 2);
    assert!(
        e.contains("holds snapshot 1") && e.contains("needs snapshot 2"),
        "{e}"
    );
    assert!(before == snapshot_tree(&target));
    // Repeated.
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&s(2)), "--target", p(&target)]).0,
        0
    );
    let before = snapshot_tree(&target);
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s(2)), "--target", p(&target)]);
    assert_eq!(c, 2);
    assert!(e.contains("already applied"), "{e}");
    assert!(before == snapshot_tree(&target));
    // Foreign: an increment of another source.
    let mut other = Chain::new();
    write(&other.src().join("f"), b"other");
    other.dump(0);
    write(&other.src().join("g"), b"other2");
    other.dump(1);
    let (c, _, e) = run_s(&[
        "restore",
        "-r",
        "-f",
        p(&other.streams[&2].0),
        "--target",
        p(&target),
    ]);
    assert_eq!(c, 2);
    assert!(e.contains("another source"), "{e}");
    assert!(before == snapshot_tree(&target));
    // An increment into an empty target.
    let empty = ch.t.dir.path().join("empty");
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s(2)), "--target", p(&empty)]);
    assert_eq!(c, 2);
    assert!(e.contains("level-0"), "{e}");
}

/// A level 0 and a level 1 with every kind of change an apply handles:
/// blocks rewritten in place (a hard-linked file among them), a mode
/// changed, a rename, a removal, new files, a directory replaced by a
/// file. Returns the chain, the two streams, and the trees before and
/// after (the first as a restore of the level 0 has it).
#[allow(clippy::type_complexity)]
fn change_of_every_kind() -> (
    Chain,
    PathBuf,
    PathBuf,
    BTreeMap<Vec<u8>, Entry>,
    BTreeMap<Vec<u8>, Entry>,
) {
    let mut ch = Chain::new();
    let s = ch.src().to_path_buf();
    fs::create_dir_all(s.join("d/e")).unwrap();
    for i in 0..12 {
        write(
            &s.join(format!("d/f{i}")),
            &bytes(i, 3000 + i as usize * 5000),
        );
    }
    write(&s.join("d/e/big"), &bytes(99, 300_000));
    fs::hard_link(s.join("d/f6"), s.join("f6-link")).unwrap();
    // Directories that stay and change: an extended attribute removed, a
    // mode changed; a file that becomes a directory tree; a symlink
    // retargeted.
    fs::create_dir_all(s.join("x/y")).unwrap();
    write(&s.join("x/y/keep"), &bytes(7, 5000));
    let dir_xattr = setxattr(&s.join("x"), "user.gone", b"1");
    write(&s.join("g"), b"becomes a directory");
    std::os::unix::fs::symlink("d/f1", s.join("sl")).unwrap();
    // Reading a new symlink moves its atime once (relatime): settled here.
    snapshot_tree(&s);
    ch.dump(0);
    {
        use std::os::unix::fs::PermissionsExt;
        if dir_xattr {
            let c = std::ffi::CString::new(s.join("x").as_os_str().as_encoded_bytes()).unwrap();
            let k = std::ffi::CString::new("user.gone").unwrap();
            assert_eq!(unsafe { libc::lremovexattr(c.as_ptr(), k.as_ptr()) }, 0);
        }
        fs::set_permissions(s.join("x/y"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::remove_file(s.join("g")).unwrap();
        fs::create_dir_all(s.join("g/h/i")).unwrap();
        write(&s.join("g/h/i/file"), &bytes(8, 6000));
        fs::remove_file(s.join("sl")).unwrap();
        std::os::unix::fs::symlink("d/f2", s.join("sl")).unwrap();
        fs::create_dir_all(s.join("n/m")).unwrap();
        fs::hard_link(s.join("x/y/keep"), s.join("n/m/keep-link")).unwrap();
    }
    {
        use std::os::unix::fs::{FileExt, PermissionsExt};
        for (f, at) in [("d/e/big", 40_000), ("d/f1", 1000), ("d/f6", 4096)] {
            let f = fs::OpenOptions::new().write(true).open(s.join(f)).unwrap();
            f.write_all_at(&bytes(5, 2_000), at).unwrap();
        }
        // Attributes only: the file is not rewritten.
        fs::set_permissions(s.join("d/f2"), fs::Permissions::from_mode(0o600)).unwrap();
    }
    fs::rename(s.join("d/f3"), s.join("f3-moved")).unwrap();
    fs::remove_file(s.join("d/f4")).unwrap();
    write(&s.join("d/f5"), &bytes(55, 70_000));
    write(&s.join("new"), &bytes(56, 9000));
    fs::remove_dir_all(s.join("d/e")).unwrap();
    write(&s.join("d/e"), b"was a directory");
    snapshot_tree(&s);
    ch.dump(1);
    let (s0, s1) = (ch.streams[&1].0.clone(), ch.streams[&2].0.clone());
    let reference = ch.t.dir.path().join("reference-0");
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&reference)]).0,
        0
    );
    let (old, new) = (snapshot_tree(&reference), snapshot_tree(&s));
    (ch, s0, s1, old, new)
}

#[test]
fn an_interrupted_apply_reruns_to_the_exact_state() {
    let (ch, s0, s1, old, new) = change_of_every_kind();
    let s = ch.src().to_path_buf();
    let check_phase = [
        ("apply-stage", 1),
        ("apply-stage", 7),
        ("apply-data", 1),
        ("apply-data", 3),
        ("apply-checked", 1),
    ];
    // The default finish builds the new tree beside the target and swaps
    // it in: right after any kill the target is one snapshot or the other.
    let beside = [
        ("apply-spool", 1),
        ("apply-privatize", 1),
        ("apply-privatize", 2),
        ("apply-privatize", 3),
        ("apply-trim", 1),
        ("apply-exchange", 1),
        ("apply-exchanged", 1),
    ];
    // --inplace moves entries one by one: the rerun finishes the job.
    let in_place = [
        ("apply-spool", 1),
        ("apply-trim", 1),
        ("apply-swap-out", 1),
        ("apply-swap-in", 1),
        ("apply-swap-in", 3),
        ("apply-commit", 1),
    ];
    let runs = check_phase
        .iter()
        .chain(&beside)
        .map(|&(n, c)| (n, c, false))
        .chain(
            check_phase
                .iter()
                .chain(&in_place)
                .map(|&(n, c)| (n, c, true)),
        );
    for (name, n, inplace) in runs {
        let target = ch.t.dir.path().join(format!("t-{name}-{n}-{inplace}"));
        assert_eq!(
            run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&target)]).0,
            0
        );
        let mut args = vec!["restore", "-r", "-f", p(&s1), "--target", p(&target)];
        if inplace {
            args.push("--inplace");
        }
        let out = bin()
            .args(&args)
            .env("SNAPDUMP_FAILPOINT", format!("{name}:{n}"))
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{name}:{n} was not reached: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !inplace {
            let now = snapshot_tree(&target);
            assert!(
                now == old || now == new,
                "{name}:{n}: the target is neither snapshot after the kill"
            );
            // Kills after the exchange leave the new tree; before, the old.
            assert_eq!(now == new, name == "apply-exchanged", "{name}:{n}");
        }
        let (c, _, e) = run_s(&args);
        assert_eq!(
            c, 0,
            "rerun after {name}:{n} (inplace {inplace}) failed: {e}"
        );
        // (The check after the kill read the target's symlinks.)
        assert_same_tree_links_read(&s, &target);
        // And the chain continues from there, with nothing left beside.
        let st = target.join(".snapdump-restore");
        assert!(
            st.join("state").exists()
                && !st.join("incomplete").exists()
                && !st.join("apply").exists(),
            "{name}:{n}"
        );
        let beside =
            ch.t.dir
                .path()
                .join(format!(".t-{name}-{n}-{inplace}.snapdump-next"));
        assert!(!beside.exists(), "{name}:{n}: {} left", beside.display());
    }
}

#[test]
fn an_unchanged_tree_costs_a_stat_per_file_and_sends_nothing() {
    let mut ch = Chain::new();
    for i in 0..50 {
        write(&ch.src().join(format!("f{i}")), &bytes(i, 20_000));
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ch.dump(0);
    let v = ch.dump(1);
    assert_eq!(v["files_unchanged"], 50, "{v}");
    assert_eq!(v["files_compared"], 0);
    assert_eq!(v["data_blocks"], 0);
    assert!(v["stream_bytes"].as_u64().unwrap() < 4096, "{v}");
    assert_same_tree(ch.src(), &ch.restore(2, "r"));
}

#[test]
fn a_source_copied_to_new_inodes_sends_almost_nothing() {
    let mut ch = Chain::new();
    fs::create_dir(ch.src().join("d")).unwrap();
    for i in 0..20 {
        write(&ch.src().join(format!("d/f{i}")), &bytes(i, 50_000));
    }
    ch.dump(0);
    // As when a source moves to another disk: same paths and content, new
    // inode numbers (and, across file systems, a new device).
    let moved = ch.t.dir.path().join("moved");
    let st = std::process::Command::new("cp")
        .args(["-a", p(ch.src()), p(&moved)])
        .status()
        .unwrap();
    assert!(st.success());
    fs::remove_dir_all(ch.src()).unwrap();
    fs::rename(&moved, ch.src()).unwrap();
    snapshot_tree(ch.src());
    let v = ch.dump(1);
    assert_eq!(v["data_blocks"], 0, "{v}");
    assert_same_tree(ch.src(), &ch.restore(2, "r"));
}

#[test]
fn churn_keeps_the_vbn_space_bounded() {
    let mut ch = Chain::new();
    let nfiles = 20u64;
    for i in 0..nfiles {
        write(&ch.src().join(format!("f{i}")), &bytes(i, 64 * 4096));
    }
    let live = nfiles * 64;
    ch.dump(0);
    let mut seed = 1000;
    for round in 0..50 {
        // Rewrite 10% of the blocks in place, at random.
        for _ in 0..live / 10 {
            seed += 1;
            let f = (seed * 7919) % nfiles;
            let b = (seed * 104729) % 64;
            use std::os::unix::fs::FileExt;
            let fh = fs::OpenOptions::new()
                .write(true)
                .open(ch.src().join(format!("f{f}")))
                .unwrap();
            fh.write_all_at(&bytes(seed, 4096), b * 4096).unwrap();
        }
        let v = ch.dump(1 + (round % 3) as u8);
        let hwm = v["vbn_high_water"].as_u64().unwrap();
        assert!(
            hwm < 2 * live,
            "round {round}: VBN high water {hwm} for {live} live blocks"
        );
    }
    let last = *ch.streams.keys().last().unwrap();
    assert_same_tree(ch.src(), &ch.restore(last, "r"));
}

#[test]
fn a_file_changing_while_read_is_reported_and_repaired_next_time() {
    let mut ch = Chain::new();
    write(&ch.src().join("busy"), &bytes(1, 64 << 20));
    write(&ch.src().join("calm"), b"calm");
    ch.dump(0);
    let path = ch.src().join("busy");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = std::thread::spawn(move || {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut i = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            f.write_all_at(&bytes(i, 4096), (i * 7 % 16384) * 4096)
                .unwrap();
            i += 1;
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    });
    // Dump repeatedly until one run catches the change (each must be exit 1
    // when it does, and never claim success for a file that moved under it).
    let mut caught = false;
    for _ in 0..5 {
        let n = ch.streams.len() + 1;
        let out = ch.t.dir.path().join(format!("busy{n}.sdump"));
        let (c, o, e) = run_s(&[
            "dump",
            "-1",
            "--json",
            "-f",
            p(&out),
            "--catalog",
            p(&ch.t.cat),
            p(ch.src()),
        ]);
        let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
        let id = v["snapshot"]["id"].as_u64().unwrap();
        ch.streams
            .insert(id, (out, v["base"]["id"].as_u64(), false));
        if c == 1 {
            assert!(
                e.contains("busy") && e.contains("changed while being read"),
                "{e}"
            );
            caught = true;
            break;
        }
        assert_eq!(c, 0, "{e}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        caught,
        "a file rewritten throughout the dump was never reported"
    );
    // The next dump repairs it.
    snapshot_tree(ch.src());
    let v = ch.dump(2);
    let id = v["snapshot"]["id"].as_u64().unwrap();
    assert_same_tree(ch.src(), &ch.restore(id, "r"));
}

mod random {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Write { f: usize, size: usize, seed: u64 },
        Overwrite { f: usize, block: u64, seed: u64 },
        Append { f: usize, len: usize },
        Truncate { f: usize, len: u64 },
        Punch { f: usize, block: u64 },
        Delete { f: usize },
        Rename { f: usize, d: usize },
        Mkdir { d: usize, n: u8 },
        RmDir { d: usize },
        FileToDir { f: usize },
        Link { f: usize, d: usize, n: u8 },
        Chmod { f: usize, mode: u32 },
        Touch { f: usize, secs: i64 },
        Symlink { d: usize, n: u8 },
        Xattr { f: usize, v: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<usize>(), 0usize..40_000, any::<u64>()).prop_map(|(f, size, seed)| Op::Write {
                f,
                size,
                seed
            }),
            (any::<usize>(), 0u64..10, any::<u64>()).prop_map(|(f, block, seed)| Op::Overwrite {
                f,
                block,
                seed
            }),
            (any::<usize>(), 1usize..9000).prop_map(|(f, len)| Op::Append { f, len }),
            (any::<usize>(), 0u64..30_000).prop_map(|(f, len)| Op::Truncate { f, len }),
            (any::<usize>(), 0u64..8).prop_map(|(f, block)| Op::Punch { f, block }),
            any::<usize>().prop_map(|f| Op::Delete { f }),
            (any::<usize>(), any::<usize>()).prop_map(|(f, d)| Op::Rename { f, d }),
            (any::<usize>(), any::<u8>()).prop_map(|(d, n)| Op::Mkdir { d, n }),
            any::<usize>().prop_map(|d| Op::RmDir { d }),
            any::<usize>().prop_map(|f| Op::FileToDir { f }),
            (any::<usize>(), any::<usize>(), any::<u8>()).prop_map(|(f, d, n)| Op::Link {
                f,
                d,
                n
            }),
            (
                any::<usize>(),
                prop_oneof![Just(0o644u32), Just(0o600), Just(0o755), Just(0o4711)]
            )
                .prop_map(|(f, mode)| Op::Chmod { f, mode }),
            (any::<usize>(), 1_000_000_000i64..1_700_000_000)
                .prop_map(|(f, secs)| Op::Touch { f, secs }),
            (any::<usize>(), any::<u8>()).prop_map(|(d, n)| Op::Symlink { d, n }),
            (any::<usize>(), any::<u8>()).prop_map(|(f, v)| Op::Xattr { f, v }),
        ]
    }

    fn list(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut files = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        let mut i = 0;
        while i < dirs.len() {
            let mut ents: Vec<_> = fs::read_dir(&dirs[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            ents.sort();
            for e in ents {
                let m = fs::symlink_metadata(&e).unwrap();
                if m.is_dir() {
                    dirs.push(e);
                } else if m.is_file() {
                    files.push(e);
                }
            }
            i += 1;
        }
        (files, dirs)
    }

    fn apply(root: &Path, op: &Op, k: usize) {
        use std::os::unix::fs::FileExt;
        let (files, dirs) = list(root);
        let file = |f: usize| files.get(f % files.len().max(1)).cloned();
        let dir = |d: usize| dirs[d % dirs.len()].clone();
        match op {
            Op::Write { f, size, seed } => {
                let p = if *f % 3 == 0 || files.is_empty() {
                    dir(*f).join(format!("w{k}"))
                } else {
                    file(*f).unwrap()
                };
                let _ = fs::remove_file(&p);
                fs::write(p, bytes(*seed, *size)).unwrap();
            }
            Op::Overwrite { f, block, seed } => {
                if let Some(p) = file(*f) {
                    fs::OpenOptions::new()
                        .write(true)
                        .open(p)
                        .unwrap()
                        .write_all_at(&bytes(*seed, 4096), block * 4096)
                        .unwrap();
                }
            }
            Op::Append { f, len } => {
                if let Some(p) = file(*f) {
                    let fh = fs::OpenOptions::new().write(true).open(&p).unwrap();
                    let at = fh.metadata().unwrap().len();
                    fh.write_all_at(&bytes(*len as u64, *len), at).unwrap();
                }
            }
            Op::Truncate { f, len } => {
                if let Some(p) = file(*f) {
                    fs::OpenOptions::new()
                        .write(true)
                        .open(p)
                        .unwrap()
                        .set_len(*len)
                        .unwrap();
                }
            }
            Op::Punch { f, block } => {
                if let Some(p) = file(*f) {
                    let fh = fs::OpenOptions::new().write(true).open(p).unwrap();
                    let _ = snapdump::fsx::punch_hole(
                        std::os::fd::AsFd::as_fd(&fh),
                        block * 4096,
                        4096,
                    );
                }
            }
            Op::Delete { f } => {
                if let Some(p) = file(*f) {
                    fs::remove_file(p).unwrap();
                }
            }
            Op::Rename { f, d } => {
                if let Some(p) = file(*f) {
                    let _ = fs::rename(p, dir(*d).join(format!("r{k}")));
                }
            }
            Op::Mkdir { d, n } => {
                let _ = fs::create_dir(dir(*d).join(format!("d{n}")));
            }
            Op::RmDir { d } => {
                let p = dir(*d);
                if p != root {
                    fs::remove_dir_all(p).unwrap();
                }
            }
            Op::FileToDir { f } => {
                if let Some(p) = file(*f) {
                    fs::remove_file(&p).unwrap();
                    fs::create_dir(&p).unwrap();
                    fs::write(p.join("inside"), b"now a dir").unwrap();
                }
            }
            Op::Link { f, d, n } => {
                if let Some(p) = file(*f) {
                    let _ = fs::hard_link(p, dir(*d).join(format!("l{n}")));
                }
            }
            Op::Chmod { f, mode } => {
                if let Some(p) = file(*f) {
                    fs::set_permissions(p, fs::Permissions::from_mode(*mode)).unwrap();
                }
            }
            Op::Touch { f, secs } => {
                if let Some(p) = file(*f) {
                    set_times(&p, (*secs, 5), (*secs, 7));
                }
            }
            Op::Symlink { d, n } => {
                let _ = symlink(format!("target-{n}"), dir(*d).join(format!("s{n}")));
            }
            Op::Xattr { f, v } => {
                if let Some(p) = file(*f) {
                    setxattr(&p, "user.prop", &[*v]);
                }
            }
        }
    }

    /// Runs one sequence of rounds, restoring the chain after every dump.
    fn run_rounds(rounds: &[(Vec<Op>, u8)]) {
        let mut ch = Chain::new();
        fs::create_dir(ch.src().join("sub")).unwrap();
        fs::write(ch.src().join("sub/seed"), bytes(1, 20_000)).unwrap();
        fs::write(ch.src().join("top"), bytes(2, 5000)).unwrap();
        ch.dump(0);
        let mut k = 0;
        for (ops, level) in rounds {
            for o in ops {
                k += 1;
                apply(ch.src(), o, k);
            }
            snapshot_tree(ch.src());
            let v = ch.dump(*level);
            let id = v["snapshot"]["id"].as_u64().unwrap();
            let r = ch.restore(id, "r");
            if std::env::var_os("SNAPDUMP_DEBUG").is_some() {
                for name in ["top", "l156", "l33"] {
                    for root in [ch.src(), &r] {
                        if let Ok(f) = fs::File::open(root.join(name)) {
                            let len = f.metadata().unwrap().len();
                            let runs =
                                snapdump::fsx::data_runs(std::os::fd::AsFd::as_fd(&f), len, 4096)
                                    .unwrap();
                            eprintln!("{} {name} len {len} runs {runs:?}", root.display());
                        }
                    }
                }
                let (_, o, _) = run_s(&["restore", "-t", "--json", "-f", p(&ch.streams[&id].0)]);
                let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
                eprintln!("snapshot {id} level {level}: {}", v["header"]["base"]);
            }
            assert_same_tree(ch.src(), &r);
            // The in-place finish, which moves only what changed.
            let r = ch.restore_with(id, "ri", &["--inplace"]);
            assert_same_tree(ch.src(), &r);
        }
    }

    /// Found by the proptest: a chain restore (level 0, then a level 1 whose
    /// base is the level 0 after levels 1, 7, 6) left one data block of a
    /// sparse, hard-linked file as a hole.
    #[test]
    fn regression_sparse_hardlinked_file_across_levels() {
        run_rounds(&[
            (
                vec![
                    Op::Link {
                        f: 14781918844326707036,
                        d: 8584605673690672458,
                        n: 33,
                    },
                    Op::Mkdir {
                        d: 2536784455422589774,
                        n: 7,
                    },
                    Op::RmDir {
                        d: 957119149988628302,
                    },
                    Op::Overwrite {
                        f: 2328016967119935382,
                        block: 6,
                        seed: 12345852229196183903,
                    },
                ],
                1,
            ),
            (
                vec![
                    Op::RmDir {
                        d: 1029924751954942918,
                    },
                    Op::Punch {
                        f: 6393537352184619636,
                        block: 2,
                    },
                    Op::Symlink {
                        d: 4442014409646303637,
                        n: 188,
                    },
                    Op::Write {
                        f: 699318927487963761,
                        size: 3727,
                        seed: 5000423965880961254,
                    },
                    Op::Overwrite {
                        f: 8512140539502361795,
                        block: 3,
                        seed: 463125976472096667,
                    },
                ],
                7,
            ),
            (
                vec![
                    Op::Overwrite {
                        f: 8846111596107368052,
                        block: 7,
                        seed: 15698396127990281353,
                    },
                    Op::Link {
                        f: 12517210268989810717,
                        d: 3351282007560741838,
                        n: 156,
                    },
                ],
                6,
            ),
            (
                vec![Op::Overwrite {
                    f: 10662940101343933964,
                    block: 4,
                    seed: 229598556756343250,
                }],
                1,
            ),
        ]);
    }

    fn cases() -> u32 {
        std::env::var("SNAPDUMP_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(12)
    }

    /// Random rounds at random levels, then `coalesce` of a random run of
    /// consecutive streams of the newest snapshot's chain: restored after
    /// the streams before the run, it gives the tree as it was at the run's
    /// last snapshot; a run from the level 0 is a synthetic full, listed as
    /// a fresh `dump -0` of the same tree lists; each output verifies.
    /// `waste`: the `--max-waste` given (records copied whole, with gaps
    /// for dropped blocks), or `None` for `--recompress`.
    fn coalesce_rounds(rounds: &[(Vec<Op>, u8)], pick: (usize, usize), waste: Option<u8>) {
        let mut ch = Chain::new();
        fs::create_dir(ch.src().join("sub")).unwrap();
        fs::write(ch.src().join("sub/seed"), bytes(1, 20_000)).unwrap();
        fs::write(ch.src().join("top"), bytes(2, 5000)).unwrap();
        let mut trees = BTreeMap::new();
        ch.dump(0);
        trees.insert(1u64, snapshot_tree(ch.src()));
        let mut k = 0;
        for (ops, level) in rounds {
            for o in ops {
                k += 1;
                apply(ch.src(), o, k);
            }
            let v = ch.dump(*level);
            trees.insert(
                v["snapshot"]["id"].as_u64().unwrap(),
                snapshot_tree(ch.src()),
            );
        }
        let newest = *trees.keys().last().unwrap();
        let mut ids = vec![newest];
        while let (_, Some(b), false) = ch.streams[ids.last().unwrap()] {
            ids.push(b);
        }
        ids.reverse();
        if ids.len() < 2 {
            return;
        }
        let a = pick.0 % (ids.len() - 1);
        let b = a + 1 + pick.1 % (ids.len() - 1 - a);
        let out = ch.t.dir.path().join(format!("c{a}-{b}.sdump"));
        let waste_arg = waste.map(|w| w.to_string());
        let mut args = vec!["coalesce", "--json", "-o", p(&out)];
        match &waste_arg {
            Some(w) => args.extend(["--max-waste", w]),
            None => args.push("--recompress"),
        }
        // Given newest first: the chain is found whatever the order.
        for id in ids[a..=b].iter().rev() {
            args.extend(["-f", p(&ch.streams[id].0)]);
        }
        let (c, o, e) = run_s(&args);
        assert_eq!(c, 0, "coalesce {a}..={b} of {ids:?}: {e}");
        let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
        assert_eq!(v["full"], a == 0, "{v}");
        if waste.is_none() {
            assert_eq!(v["blocks_copied"], 0, "{v}");
        }
        let (c, _, e) = run_s(&["verify", "-f", p(&out)]);
        assert_eq!(c, 0, "{e}");
        if b == ids.len() - 1 {
            // The random-access path (relocation table, then the records
            // it names): a compare with the live tree finds no difference.
            let mut args = vec!["restore", "-C", "--target", p(ch.src())];
            for id in &ids[..a] {
                args.extend(["-f", p(&ch.streams[id].0)]);
            }
            args.extend(["-f", p(&out)]);
            let (c, o, e) = run_s(&args);
            assert_eq!(
                c,
                0,
                "compare of the coalesced {a}..={b}: {e}{}",
                String::from_utf8_lossy(&o)
            );
        }
        let target = ch.t.dir.path().join("rc");
        for id in &ids[..a] {
            let (c, _, e) = run_s(&[
                "restore",
                "-r",
                "-f",
                p(&ch.streams[id].0),
                "--target",
                p(&target),
            ]);
            assert_eq!(c, 0, "{e}");
        }
        let (c, _, e) = run_s(&["restore", "-r", "-f", p(&out), "--target", p(&target)]);
        assert_eq!(c, 0, "restore of the coalesced {a}..={b} of {ids:?}: {e}");
        assert_tree_is(
            &trees[&ids[b]],
            &target,
            &format!("coalesced {a}..={b} of {ids:?}"),
        );
        if a == 0 && b == ids.len() - 1 {
            let fresh = ch.t.dir.path().join("fresh.sdump");
            let cat = ch.t.dir.path().join("fresh-cat");
            assert_eq!(dump_to(0, &fresh, &cat, ch.src()), 0);
            let list = |s: &Path| {
                let (c, o, e) = run_s(&["restore", "-t", "--json", "-f", p(s)]);
                assert_eq!(c, 0, "{e}");
                let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
                let mut entries = v["entries"].clone();
                for e in entries.as_array_mut().unwrap() {
                    // Which snapshot last changed an entry is history,
                    // which a fresh dump does not have.
                    e.as_object_mut()
                        .unwrap()
                        .retain(|k, _| k != "snapshot" && k != "changed");
                }
                entries
            };
            assert_eq!(list(&out), list(&fresh), "synthetic full vs dump -0");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 64, ..ProptestConfig::default() })]
        #[test]
        fn coalescing_any_run_of_a_chain_restores_the_same(
            rounds in proptest::collection::vec((proptest::collection::vec(op(), 1..6), 0u8..10), 1..6),
            pick in (any::<usize>(), any::<usize>()),
            waste in proptest::option::weighted(0.85, prop_oneof![Just(100u8), Just(0u8), 0u8..=100]),
        ) {
            coalesce_rounds(&rounds, pick, waste);
        }

        #[test]
        fn random_mutations_and_levels_restore_exactly(
            rounds in proptest::collection::vec((proptest::collection::vec(op(), 1..6), 0u8..10), 1..6)
        ) {
            run_rounds(&rounds);
        }
    }
}

#[test]
fn an_interrupted_dump_leaves_the_catalog_and_the_next_dump_is_correct() {
    let mut ch = Chain::new();
    for i in 0..8 {
        write(&ch.src().join(format!("f{i}")), &bytes(i, 600_000));
    }
    ch.dump(0);
    let catalog_before = fs::read(
        fs::read_dir(ch.t.cat.join("sources"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("catalog"),
    )
    .unwrap();
    for i in 0..8 {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(ch.src().join(format!("f{i}")))
            .unwrap();
        f.write_all_at(&bytes(100 + i, 300_000), 100_000).unwrap();
    }
    let out = ch.t.dir.path().join("killed.sdump");
    let o = bin()
        .args([
            "dump",
            "-1",
            "-f",
            p(&out),
            "--catalog",
            p(&ch.t.cat),
            p(ch.src()),
        ])
        .env("SNAPDUMP_FAILPOINT", "dump-data:3")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        !out.exists(),
        "a killed dump left a stream under the output name"
    );
    let catalog_after = fs::read(
        fs::read_dir(ch.t.cat.join("sources"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("catalog"),
    )
    .unwrap();
    assert_eq!(
        catalog_before, catalog_after,
        "a killed dump changed the catalog"
    );
    snapshot_tree(ch.src());
    let v = ch.dump(1);
    assert_eq!(v["base"]["id"], 1);
    assert_same_tree(ch.src(), &ch.restore(2, "r"));
}

#[test]
fn extended_attributes_removed_or_changed_between_levels_follow_the_snapshot() {
    let mut ch = Chain::new();
    let f = ch.src().join("f");
    write(&f, &bytes(1, 100_000));
    write(&ch.src().join("g"), &bytes(2, 100_000));
    assert!(setxattr(&f, "user.gone", b"1"));
    assert!(setxattr(&f, "user.changed", b"old"));
    assert!(setxattr(&f, "user.kept", b"same"));
    ch.dump(0);
    let remove = |p: &Path, k: &str| {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        let k = std::ffi::CString::new(k).unwrap();
        assert_eq!(unsafe { libc::lremovexattr(c.as_ptr(), k.as_ptr()) }, 0);
    };
    remove(&f, "user.gone");
    assert!(setxattr(&f, "user.changed", b"new"));
    assert!(setxattr(&ch.src().join("g"), "user.added", b"x"));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ch.dump(1);
    // The files keep all their blocks: the target's own files carry the
    // new snapshot, and must lose the attribute that went away.
    assert_same_tree(ch.src(), &ch.restore(2, "r"));
}

/// The system calls an apply changes the target (or its own state) with,
/// for the sweep below.
const CHANGING_CALLS: &str = "renameat2,renameat,rename,linkat,link,unlinkat,unlink,mkdirat,mkdir,openat,pwrite64,write,ftruncate,fallocate,ioctl,copy_file_range,fchmodat,fchmod,fchownat,fchown,utimensat,setxattr,lsetxattr,fsetxattr,removexattr,lremovexattr,fremovexattr,fsync,syncfs,symlinkat,mknodat";

/// Kills the apply at the N-th call of one of those system calls, for
/// each of them and every N until a run completes: right after every kill
/// the target is exactly its old snapshot or its new one, and the next
/// restore brings it to the new one with nothing left beside it.
#[test]
fn a_kill_at_any_system_call_of_an_apply_leaves_one_snapshot_or_the_other() {
    if let Some((at_old, at_new)) = kill_sweep(false) {
        assert!(at_old > 0 && at_new > 0);
    }
}

/// The same sweep of the in-place finish (`--inplace`, which moves only
/// what changed): after any kill the next restore brings the target to
/// exactly the new snapshot, with nothing of the apply left.
#[test]
fn a_kill_at_any_system_call_of_an_in_place_apply_is_finished_by_the_next_run() {
    kill_sweep(true);
}

/// Runs the sweep; the counts of kills that left the old snapshot and the
/// new one (None when strace is missing).
fn kill_sweep(inplace: bool) -> Option<(u32, u32)> {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("SNAPDUMP_REQUIRE_STRACE").is_none(),
            "strace is not installed"
        );
        eprintln!("strace is not installed: skipped");
        return None;
    }
    let (ch, s0, s1, old, new) = change_of_every_kind();
    let s = ch.src().to_path_buf();
    let (mut at_old, mut at_new) = (0, 0);
    let target = ch.t.dir.path().join("swept");
    let beside = ch.t.dir.path().join(".swept.snapdump-next");
    let mut apply = vec!["restore", "-r", "-f", p(&s1), "--target", p(&target)];
    if inplace {
        apply.push("--inplace");
    }
    for call in CHANGING_CALLS.split(',') {
        for n in 1u32.. {
            assert!(n < 5000, "the apply never completed under strace");
            let _ = fs::remove_dir_all(&target);
            let _ = fs::remove_dir_all(&beside);
            assert_eq!(
                run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&target)]).0,
                0
            );
            let out = std::process::Command::new("strace")
                .args(["-f", "-o", "/dev/null", "-e"])
                .arg(format!("inject={call}:signal=KILL:when={n}"))
                .arg(bin_path())
                .args(&apply)
                .output()
                .unwrap();
            let now = snapshot_tree(&target);
            assert!(
                inplace || now == old || now == new,
                "killed at {call} number {n}: the target is neither snapshot: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() {
                assert!(now == new);
                break;
            }
            if now == new {
                at_new += 1;
            } else if now == old {
                at_old += 1;
            }
            let (c, _, e) = run_s(&apply);
            // Killed after everything was done (writing its report, say):
            // the increment is refused as applied already.
            let done_before = now == new && e.contains("this stream was already applied");
            assert!(c == 0 || done_before, "rerun after {call} number {n}: {e}");
            // (The check after the kill read the target's symlinks.)
            assert_same_tree_links_read(&s, &target);
            assert!(
                !beside.exists(),
                "{call} number {n}: left {}",
                beside.display()
            );
            assert!(!target.join(".snapdump-restore/apply").exists());
        }
    }
    eprintln!("{at_old} kills left the old snapshot, {at_new} the new one (inplace {inplace})");
    Some((at_old, at_new))
}

/// The in-place finish moves only what changed: directories that stay
/// keep their inodes (so a shell's working directory, a bind mount or an
/// NFS export inside the target survive an increment), and so do files
/// the increment does not replace; the tree is exactly the new snapshot.
#[test]
fn in_place_increments_keep_directories_and_unchanged_files() {
    use std::os::unix::fs::MetadataExt;
    let (ch, s0, s1, _, _) = change_of_every_kind();
    let target = ch.t.dir.path().join("t");
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&target)]).0,
        0
    );
    let ino = |rel: &str| fs::symlink_metadata(target.join(rel)).unwrap().ino();
    let before: Vec<(&str, u64)> = ["d", "x", "x/y", "d/f0", "d/f1", "x/y/keep"]
        .into_iter()
        .map(|r| (r, ino(r)))
        .collect();
    let (c, _, e) = run_s(&[
        "restore",
        "-r",
        "-f",
        p(&s1),
        "--target",
        p(&target),
        "--inplace",
    ]);
    assert_eq!(c, 0, "{e}");
    assert_same_tree(ch.src(), &target);
    for (r, i) in before {
        assert_eq!(ino(r), i, "{r} is another inode after the increment");
    }
}

/// What sits at the staging name beside a target: a remnant of ours (an
/// old tree's removal cut short) is removed and the apply goes on; anything
/// else refuses the increment by name and is left as it was.
#[test]
fn the_staging_name_beside_a_target_is_checked() {
    let (ch, s0, s1, old, new) = change_of_every_kind();
    let target = ch.t.dir.path().join("t");
    let beside = ch.t.dir.path().join(".t.snapdump-next");
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&target)]).0,
        0
    );
    fs::create_dir_all(&beside).unwrap();
    fs::write(beside.join("mine"), b"a user's file").unwrap();
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&target)]);
    assert_eq!(c, 2, "{e}");
    assert!(
        e.contains(".t.snapdump-next") && e.contains("not snapdump's"),
        "{e}"
    );
    assert!(snapshot_tree(&target) == old);
    assert_eq!(fs::read(beside.join("mine")).unwrap(), b"a user's file");
    // What a kill while the old tree was removed leaves.
    fs::remove_dir_all(&beside).unwrap();
    fs::create_dir_all(beside.join(".snapdump-restore/apply")).unwrap();
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&target)]);
    assert_eq!(c, 0, "{e}");
    assert!(snapshot_tree(&target) == new);
    assert!(!beside.exists());
}

/// `--inplace` finishes without a tree beside the target; a target that
/// is a mount point is finished in place too, with a note saying why.
#[test]
fn in_place_finishes_by_request_and_at_mount_points() {
    let (ch, s0, s1, _old, new) = change_of_every_kind();
    let target = ch.t.dir.path().join("t");
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&target)]).0,
        0
    );
    let out = bin()
        .args([
            "restore",
            "-r",
            "-f",
            p(&s1),
            "--target",
            p(&target),
            "--inplace",
        ])
        .env("SNAPDUMP_FAILPOINT", "apply-swap-out:1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the in-place swap was not reached");
    assert!(!ch.t.dir.path().join(".t.snapdump-next").exists());
    let (c, _, e) = run_s(&[
        "restore",
        "-r",
        "-f",
        p(&s1),
        "--target",
        p(&target),
        "--inplace",
    ]);
    assert_eq!(c, 0, "{e}");
    assert!(snapshot_tree(&target) == new);
    if !snapdump::fsx::is_root() {
        return; // mounting needs root
    }
    let mnt = ch.t.dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs", p(&mnt)])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("cannot mount a tmpfs: the mount-point case is skipped");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&mnt)]).0,
        0
    );
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&mnt)]);
    assert_eq!(c, 0, "{e}");
    assert!(e.contains("mount point") && e.contains("in place"), "{e}");
    assert!(snapshot_tree(&mnt) == new);
    // A bind mount of a directory onto itself: same device as its parent.
    let bound = ch.t.dir.path().join("bound");
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&bound)]).0,
        0
    );
    let ok = std::process::Command::new("mount")
        .args(["--bind", p(&bound), p(&bound)])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mount --bind failed");
    let _unbind = Unmount(bound.clone());
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&bound)]);
    assert_eq!(c, 0, "{e}");
    assert!(e.contains("mount point"), "{e}");
    assert!(snapshot_tree(&bound) == new);
}

/// Entries a user adds while a killed apply waits to be finished, before
/// or after its swap, move into the new tree; a finish that cannot go on
/// (its staged tree removed by hand) is undone, leaving the old snapshot;
/// a target renamed after a kill still takes the increment.
#[test]
fn what_happens_to_a_target_between_a_kill_and_the_next_run() {
    let (ch, s0, s1, old, new) = change_of_every_kind();
    let dir = ch.t.dir.path();
    let fresh = |name: &str| {
        let t = dir.join(name);
        assert_eq!(
            run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&t)]).0,
            0
        );
        t
    };
    let killed = |t: &Path, point: &str| {
        let out = bin()
            .args(["restore", "-r", "-f", p(&s1), "--target", p(t)])
            .env("SNAPDUMP_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point} was not reached");
    };
    let without = |t: &Path, extra: &[&str]| {
        let mut m = snapshot_tree(t);
        for e in extra {
            m.remove(e.as_bytes());
        }
        m.remove(b".".as_slice());
        m
    };
    let strip = |m: &BTreeMap<Vec<u8>, Entry>| {
        let mut m = m.clone();
        m.remove(b".".as_slice());
        m
    };
    for point in ["apply-exchange:1", "apply-exchanged:1"] {
        let t = fresh(&format!("t-{}", point.replace(':', "-")));
        killed(&t, point);
        write(&t.join("added-by-user"), b"keep me");
        fs::create_dir(t.join("d/user-dir")).unwrap();
        write(&t.join("d/user-dir/f"), b"me too");
        let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&t)]);
        assert!(c == 0 || e.contains("already applied"), "{point}: {e}");
        assert_eq!(
            fs::read(t.join("added-by-user")).unwrap(),
            b"keep me",
            "{point}"
        );
        assert_eq!(
            fs::read(t.join("d/user-dir/f")).unwrap(),
            b"me too",
            "{point}"
        );
        // `d` holds a user's entry now: its times are the user's doing.
        let got = without(&t, &["added-by-user", "d/user-dir", "d/user-dir/f", "d"]);
        let mut want = strip(&new);
        want.remove(b"d".as_slice());
        assert!(got == want, "{point}: not the new snapshot");
    }
    // The staged tree removed by hand after the check: undone, not wedged.
    let t = fresh("t-unstaged");
    killed(&t, "apply-spool:1");
    fs::remove_dir_all(dir.join(".t-unstaged.snapdump-next")).unwrap();
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&t)]);
    assert_eq!(c, 2, "{e}");
    assert!(
        e.contains("undone") && e.contains("unchanged at snapshot 1"),
        "{e}"
    );
    assert!(snapshot_tree(&t) == old);
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&t)]);
    assert_eq!(c, 0, "{e}");
    assert!(snapshot_tree(&t) == new);
    // Renamed after a kill before the swap.
    let t = fresh("t-renamed");
    killed(&t, "apply-exchange:1");
    let u = dir.join("u-renamed");
    fs::rename(&t, &u).unwrap();
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&u)]);
    assert_eq!(c, 0, "{e}");
    assert!(snapshot_tree(&u) == new);
    assert!(!dir.join(".t-renamed.snapdump-next").exists());
}

/// Entries a user adds or removes while an increment is being finished
/// (after its last survey) are neither lost nor in the way: added ones end
/// up in the new snapshot's directories (rescued from the old tree after
/// the exchange; in place they stay where they are), a foreign entry the
/// survey saw and its user then removed is simply not kept.
#[test]
fn entries_a_user_adds_or_removes_during_the_finish_are_kept_or_let_go() {
    let (ch, s0, s1, _old, new) = change_of_every_kind();
    let dir = ch.t.dir.path();
    for inplace in [false, true] {
        let t = dir.join(format!("t-late-{inplace}"));
        assert_eq!(
            run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&t)]).0,
            0
        );
        write(&t.join("user-early"), b"gone before the finish");
        let pause = dir.join(format!("paused-{inplace}"));
        let mut args = vec!["restore", "-r", "-f", p(&s1), "--target", p(&t)];
        if inplace {
            args.push("--inplace");
        }
        let child = spawn_paused(&args, "apply-finish", &pause);
        fs::remove_file(t.join("user-early")).unwrap();
        write(&t.join("user-late"), b"keep me");
        fs::create_dir(t.join("d/user-late-dir")).unwrap();
        write(&t.join("d/user-late-dir/f"), b"me too");
        fs::remove_file(&pause).unwrap();
        let out = child.wait_with_output().unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "inplace {inplace}: {e}");
        assert_eq!(fs::read(t.join("user-late")).unwrap(), b"keep me");
        assert_eq!(fs::read(t.join("d/user-late-dir/f")).unwrap(), b"me too");
        assert!(!t.join("user-early").exists());
        let mut got = snapshot_tree(&t);
        for extra in [
            "user-late",
            "d/user-late-dir",
            "d/user-late-dir/f",
            "d",
            ".",
        ] {
            got.remove(extra.as_bytes());
        }
        let mut want = new.clone();
        want.remove(b"d".as_slice());
        want.remove(b".".as_slice());
        assert!(got == want, "inplace {inplace}: not the new snapshot");
        let leftover = dir.join(format!(".t-late-{inplace}.snapdump-next"));
        assert!(!leftover.exists(), "the old tree was left beside");
    }
}

/// An atomic finish that fails after it moved a user's entries into the
/// new tree (here the exchange itself is refused: the target's parent is
/// immutable) gives them back to the target before that tree goes: they
/// are never removed with it. The rerun, once the cause is gone, applies.
#[test]
fn a_failed_exchange_gives_the_users_entries_back() {
    if !is_root() {
        eprintln!("skipped: needs root (chattr +i)");
        return;
    }
    let (ch, s0, s1, old, new) = change_of_every_kind();
    let parent = ch.t.dir.path().join("parent");
    fs::create_dir(&parent).unwrap();
    let t = parent.join("t");
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&t)]).0,
        0
    );
    write(&t.join("mine"), b"a user's file");
    fs::create_dir(t.join("d/my-dir")).unwrap();
    write(&t.join("d/my-dir/f"), b"and its content");
    let pause = ch.t.dir.path().join("paused");
    let child = spawn_paused(
        &["restore", "-r", "-f", p(&s1), "--target", p(&t)],
        "apply-finish",
        &pause,
    );
    // The staged tree exists beside the target; the exchange will fail.
    chattr("+i", &parent);
    fs::remove_file(&pause).unwrap();
    let out = child.wait_with_output().unwrap();
    chattr("-i", &parent);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert_eq!(fs::read(t.join("mine")).unwrap(), b"a user's file", "{e}");
    assert_eq!(fs::read(t.join("d/my-dir/f")).unwrap(), b"and its content");
    // The chain's entries, without the user's and the two whose times
    // the user's entries change.
    let chains = |mut m: std::collections::BTreeMap<_, _>, user: bool| {
        let user_entries: &[&str] = if user {
            &["mine", "d/my-dir", "d/my-dir/f"]
        } else {
            &[]
        };
        for extra in user_entries.iter().chain(&["d", "."]) {
            m.remove(extra.as_bytes());
        }
        m
    };
    assert!(
        chains(snapshot_tree(&t), true) == chains(old.clone(), false),
        "the target is not the old snapshot: {e}"
    );
    // Once the parent is writable again the increment applies, keeping
    // the user's entries.
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&t)]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(fs::read(t.join("mine")).unwrap(), b"a user's file");
    assert_eq!(fs::read(t.join("d/my-dir/f")).unwrap(), b"and its content");
    assert!(
        chains(snapshot_tree(&t), true) == chains(new.clone(), false),
        "not the new snapshot after the rerun"
    );
}
