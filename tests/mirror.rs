//! The incremental mirror: a base on a virtual tape, the blocks that
//! differ from it in a directory, through rounds of churn; adds killed at
//! any moment; refusals.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type Snap = BTreeMap<Vec<u8>, Entry>;
const BS: usize = 4096;

fn json(args: &[&str]) -> serde_json::Value {
    let (c, o, e) = run_s(args);
    assert_eq!(c, 0, "{args:?}: {e}");
    serde_json::from_slice(&o).unwrap()
}

/// A source, its catalog and streams: a level 0 on a virtual tape, then
/// increments each on the one before (`dump -1 --base`).
struct Source {
    t: Paths,
    base: PathBuf,
    incs: Vec<PathBuf>,
    trees: Vec<Snap>,
    rng: Rng,
}

impl Source {
    fn new(files: usize, blocks: usize, seed: u64) -> Source {
        Source::with_bulk(files, blocks, seed, 0)
    }

    /// As [`Source::new`], with `bulk` MiB more in `bulk/`, which the churn
    /// rounds never touch (a large base of which a restore needs little).
    fn with_bulk(files: usize, blocks: usize, seed: u64, bulk: usize) -> Source {
        let t = paths();
        if bulk > 0 {
            fs::create_dir(t.src.join("bulk")).unwrap();
        }
        for i in 0..bulk {
            fs::write(
                t.src.join(format!("bulk/b{i}")),
                bytes(7000 + i as u64, 1 << 20),
            )
            .unwrap();
        }
        let mut rng = Rng(seed);
        for i in 0..files {
            fs::create_dir_all(t.src.join(format!("d{}", i % 4))).unwrap();
            let size = blocks * BS - (rng.below(BS as u64) as usize);
            fs::write(
                t.src.join(format!("d{}/f{i}", i % 4)),
                bytes(seed + i as u64, size),
            )
            .unwrap();
        }
        let base = t.dir.path().join("base.tap");
        let (c, _, e) = run_s(&[
            "dump",
            "-0",
            "-f",
            p(&base),
            "--catalog",
            p(&t.cat),
            p(&t.src),
        ]);
        assert_eq!(c, 0, "{e}");
        let trees = vec![snapshot_tree(&t.src)];
        Source {
            t,
            base,
            incs: Vec::new(),
            trees,
            rng,
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for d in 0..4 {
            if let Ok(rd) = fs::read_dir(self.t.src.join(format!("d{d}"))) {
                v.extend(rd.map(|e| e.unwrap().path()));
            }
        }
        v.sort();
        v
    }

    /// One round: about `pct`% of all blocks rewritten in place, a file
    /// added and one deleted; then the increment on the previous snapshot.
    fn churn(&mut self, pct: u64) -> PathBuf {
        use std::os::unix::fs::FileExt;
        let round = self.incs.len() as u64 + 1;
        for f in self.files() {
            let len = fs::metadata(&f).unwrap().len();
            let blocks = len.div_ceil(BS as u64);
            let fh = fs::OpenOptions::new().write(true).open(&f).unwrap();
            for b in 0..blocks {
                if self.rng.below(100) < pct {
                    let n = (BS as u64).min(len - b * BS as u64) as usize;
                    fh.write_all_at(&bytes(self.rng.next(), n), b * BS as u64)
                        .unwrap();
                }
            }
        }
        let files = self.files();
        let victim = &files[self.rng.below(files.len() as u64) as usize];
        fs::remove_file(victim).unwrap();
        fs::write(
            self.t.src.join(format!("d{}/new{round}", round % 4)),
            bytes(9000 + round, 20_000 + self.rng.below(30_000) as usize),
        )
        .unwrap();
        let out = self.t.dir.path().join(format!("i{round}.sdump"));
        let base = round.to_string();
        let (c, _, e) = run_s(&[
            "dump",
            "-1",
            "--base",
            &base,
            "-f",
            p(&out),
            "--catalog",
            p(&self.t.cat),
            p(&self.t.src),
        ]);
        assert_eq!(c, 0, "{e}");
        self.incs.push(out.clone());
        self.trees.push(snapshot_tree(&self.t.src));
        out
    }
}

/// Blocks of the tree now whose bytes differ from the base's at the same
/// path and offset (every block of a file the base lacks).
fn blocks_differing(base: &Snap, now: &Snap) -> u64 {
    let mut n = 0;
    for (k, e) in now {
        let Some(c) = &e.content else { continue };
        let old = base
            .get(k)
            .and_then(|b| b.content.clone())
            .unwrap_or_default();
        for (i, chunk) in c.chunks(BS).enumerate() {
            if old.get(i * BS..(i * BS + chunk.len()).min(old.len())) != Some(chunk) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn a_tape_base_and_a_disk_mirror_through_twenty_rounds_of_churn() {
    let mut s = Source::with_bulk(24, 16, 7, 80);
    let tape_len = fs::metadata(&s.base).unwrap().len();
    let m = s.t.dir.path().join("mirror");
    let v = json(&["mirror", "create", "--json", "--base", p(&s.base), p(&m)]);
    assert_eq!(v["blocks_held"], 0);
    let mut last = PathBuf::new();
    for round in 1..=20u64 {
        let inc = s.churn(10);
        let added = json(&["mirror", "add", "--json", p(&m), "-f", p(&inc)]);
        assert_eq!(added[0]["snapshot"]["id"], round + 1, "{added}");
        let st = json(&["mirror", "status", "--json", p(&m)]);
        let diff = blocks_differing(&s.trees[0], &s.trees[round as usize]);
        let state_len = fs::metadata(m.join("state")).unwrap().len();
        let disk = st["disk_bytes"].as_u64().unwrap();
        assert!(
            disk <= (diff * BS as u64) * 12 / 10 + state_len,
            "round {round}: the mirror takes {disk} bytes on disk, over 1.2 x {diff} differing blocks + {state_len} bytes of state ({st})"
        );
        let r = s.t.dir.path().join(format!("r{round}"));
        let (c, _, e) = run_s(&[
            "restore",
            "-r",
            "-f",
            p(&s.base),
            "--mirror",
            p(&m),
            "--target",
            p(&r),
        ]);
        assert_eq!(c, 0, "round {round}: {e}");
        assert_tree_is(
            &s.trees[round as usize],
            &r,
            &format!("base + mirror after round {round}"),
        );
        // One file of the newest snapshot: the mirror's blocks, and of the
        // tape only the records that file needs (read by offset).
        let files = s.files();
        let one = files[round as usize % files.len()]
            .strip_prefix(&s.t.src)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let x = s.t.dir.path().join(format!("x{round}"));
        let (c, read, e) = rchar_of(&[
            "restore",
            "-x",
            "-f",
            p(&s.base),
            "--mirror",
            p(&m),
            "--target",
            p(&x),
            &one,
        ]);
        assert_eq!(c, 0, "round {round}: {e}");
        assert_eq!(
            fs::read(x.join(&one)).unwrap(),
            fs::read(s.t.src.join(&one)).unwrap()
        );
        assert!(
            read * 100 < tape_len,
            "round {round}: restore -x of {one} read {read} bytes of a {tape_len}-byte tape base"
        );
        fs::remove_dir_all(&x).unwrap();
        if round < 20 {
            fs::remove_dir_all(&r).unwrap();
        }
        last = r;
    }
    // Compared with the live tree it was restored into: nothing differs;
    // then one byte of one file does.
    let (c, o, e) = run_s(&[
        "restore",
        "-C",
        "-f",
        p(&s.base),
        "--mirror",
        p(&m),
        "--target",
        p(&last),
    ]);
    assert_eq!(c, 0, "{e} {}", String::from_utf8_lossy(&o));
    let victim = s.files()[0].strip_prefix(&s.t.src).unwrap().to_path_buf();
    let copy = s.t.dir.path().join("changed-copy");
    assert!(std::process::Command::new("cp")
        .args(["-a", p(&last), p(&copy)])
        .status()
        .unwrap()
        .success());
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(copy.join(&victim))
            .unwrap();
        f.write_all_at(b"!", 5).unwrap();
    }
    let (c, o, _) = run_s(&[
        "restore",
        "-C",
        "-f",
        p(&s.base),
        "--mirror",
        p(&m),
        "--target",
        p(&copy),
    ]);
    let o = String::from_utf8_lossy(&o);
    assert_eq!(c, 1, "{o}");
    assert!(
        o.contains(&*victim.to_string_lossy()) && o.contains("content"),
        "{o}"
    );
    // One file, from the tape base and the mirror.
    let one = s.files()[3].strip_prefix(&s.t.src).unwrap().to_path_buf();
    let x = s.t.dir.path().join("x");
    let (c, _, e) = run_s(&[
        "restore",
        "-x",
        "-f",
        p(&s.base),
        "--mirror",
        p(&m),
        "--target",
        p(&x),
        p(&one),
    ]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(
        fs::read(x.join(&one)).unwrap(),
        fs::read(s.t.src.join(&one)).unwrap()
    );
    // The restored target holds the snapshot: the next increment applies
    // to it directly.
    let inc = s.churn(10);
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&inc), "--target", p(&last)]);
    assert_eq!(c, 0, "{e}");
    assert_tree_is(
        &s.trees[21],
        &last,
        "an increment on a restore from the mirror",
    );
    json(&["mirror", "add", "--json", p(&m), "-f", p(&inc)]);
    // Reintegration: a synthetic full of the newest snapshot, which
    // verifies and restores alone; a mirror on it starts empty.
    let synth = s.t.dir.path().join("synthetic.tap");
    let (c, _, e) = run_s(&[
        "mirror",
        "reintegrate",
        p(&m),
        "--base",
        p(&s.base),
        "-o",
        p(&synth),
    ]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(run_s(&["verify", "-f", p(&synth)]).0, 0);
    // Listed from the mirror alone, as the synthetic full lists.
    let (c, listed, e) = run_s(&["restore", "-t", "-f", p(&s.base), "--mirror", p(&m)]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(listed, run_s(&["restore", "-t", "-f", p(&synth)]).1);
    let r = s.t.dir.path().join("r-synth");
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&synth), "--target", p(&r)]).0,
        0
    );
    assert_tree_is(&s.trees[21], &r, "the reintegrated synthetic full");
    let m2 = s.t.dir.path().join("mirror2");
    let v = json(&["mirror", "create", "--json", "--base", p(&synth), p(&m2)]);
    assert_eq!(v["blocks_held"], 0);
    assert_eq!(v["newest"]["id"], 22);
}

#[test]
fn wrong_repeated_damaged_or_foreign_increments_are_refused_and_change_nothing() {
    let mut s = Source::new(6, 8, 11);
    let m = s.t.dir.path().join("mirror");
    json(&["mirror", "create", "--json", "--base", p(&s.base), p(&m)]);
    let i1 = s.churn(20);
    let i2 = s.churn(20);
    let state = || fs::read(m.join("state")).unwrap();
    let before = state();
    let refused = |args: &[&str], why: &str| {
        let (c, _, e) = run_s(args);
        assert_eq!(c, 2, "{args:?}: {e}");
        assert!(e.contains(why), "{args:?}: {e}");
    };
    refused(&["mirror", "add", p(&m), "-f", p(&i2)], "is at snapshot 1");
    refused(
        &["mirror", "add", p(&m), "-f", p(&s.base)],
        "already holds snapshot 1",
    );
    assert_eq!(state(), before);
    let bad = s.t.dir.path().join("bad.sdump");
    let mut b = fs::read(&i1).unwrap();
    let n = b.len();
    b[n / 2] ^= 0x10;
    fs::write(&bad, &b).unwrap();
    refused(&["mirror", "add", p(&m), "-f", p(&bad)], "bad.sdump");
    let cut = s.t.dir.path().join("cut.sdump");
    fs::write(&cut, &fs::read(&i1).unwrap()[..n - 200]).unwrap();
    let disk = || json(&["mirror", "status", "--json", p(&m)])["disk_bytes"].clone();
    let disk_before = disk();
    refused(&["mirror", "add", p(&m), "-f", p(&cut)], "cut.sdump");
    assert_eq!(state(), before, "a refused increment changed the mirror");
    assert_eq!(
        disk(),
        disk_before,
        "a refused increment left its blocks on disk"
    );
    json(&["mirror", "add", "--json", p(&m), "-f", p(&i1)]);
    refused(
        &["mirror", "add", p(&m), "-f", p(&i1)],
        "already holds snapshot 2",
    );
    let mut other = Source::new(2, 2, 99);
    let oi = other.churn(50);
    refused(&["mirror", "add", p(&m), "-f", p(&oi)], "another source");
    // A base that is not the mirror's.
    let wrong_base = s.t.dir.path().join("other.sdump");
    assert_eq!(
        dump_to(0, &wrong_base, &s.t.dir.path().join("cat2"), &s.t.src),
        0
    );
    let r = s.t.dir.path().join("r");
    let (c, _, e) = run_s(&[
        "restore",
        "-r",
        "-f",
        p(&wrong_base),
        "--mirror",
        p(&m),
        "--target",
        p(&r),
    ]);
    assert_eq!(c, 2);
    assert!(
        e.contains("give the mirror's base") && !e.contains("empty input"),
        "{e}"
    );
    assert!(!r.exists(), "a refused restore made its target");
    // A blocks file cut short is damage, named by every command.
    let blocks = m.join("blocks");
    let len = fs::metadata(&blocks).unwrap().len();
    let saved = fs::read(&blocks).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&blocks)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    refused(&["mirror", "status", p(&m)], "is damaged");
    fs::write(&blocks, saved).unwrap();
    refused(
        &[
            "mirror",
            "create",
            "--base",
            p(&i1),
            p(&s.t.dir.path().join("m3")),
        ],
        "is an increment",
    );
}

/// Copies a mirror directory (its files) to `to`.
fn copy_mirror(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    fs::create_dir(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn mirror_adds_killed_at_any_moment_leave_the_old_or_the_new_mirror() {
    let mut s = Source::new(16, 200, 23);
    let m = s.t.dir.path().join("mirror");
    json(&["mirror", "create", "--json", "--base", p(&s.base), p(&m)]);
    let i1 = s.churn(30);
    json(&["mirror", "add", "--json", p(&m), "-f", p(&i1)]);
    let i2 = s.churn(60);
    let at1 = s.t.dir.path().join("at1");
    copy_mirror(&m, &at1);
    let probe = s.t.dir.path().join("probe");
    copy_mirror(&at1, &probe);
    let started = Instant::now();
    json(&["mirror", "add", "--json", p(&probe), "-f", p(&i2)]);
    let took = started.elapsed();
    let n = trials("SNAPDUMP_CRASH_TRIALS", 20);
    let mut rng = Rng(777 + n);
    let points = ["mirror-data:1", "mirror-data:3", "mirror-before-commit:1"];
    let mut seen = [0u32; 2];
    for trial in 0..n + points.len() as u64 {
        let k = s.t.dir.path().join(format!("k{trial}"));
        copy_mirror(&at1, &k);
        let args = ["mirror", "add", p(&k), "-f", p(&i2)];
        if let Some(fp) = points.get(trial as usize) {
            let o = bin()
                .args(args)
                .env("SNAPDUMP_FAILPOINT", fp)
                .output()
                .unwrap();
            assert!(!o.status.success(), "{fp} was not reached");
        } else {
            kill_after(
                &args,
                Duration::from_micros(rng.below(took.as_micros() as u64 + 1)),
            );
        }
        let st = json(&["mirror", "status", "--json", p(&k)]);
        let id = st["newest"]["id"].as_u64().unwrap();
        assert!(id == 2 || id == 3, "trial {trial}: the mirror is at {id}");
        seen[(id - 2) as usize] += 1;
        let r = s.t.dir.path().join(format!("kr{trial}"));
        let (c, _, e) = run_s(&[
            "restore",
            "-r",
            "-f",
            p(&s.base),
            "--mirror",
            p(&k),
            "--target",
            p(&r),
        ]);
        assert_eq!(c, 0, "trial {trial}: {e}");
        assert_tree_is(
            &s.trees[(id - 1) as usize],
            &r,
            &format!("trial {trial}, snapshot {id}"),
        );
        // The add, run again, finishes (or says it is done).
        let (c, _, e) = run_s(&args);
        assert!(c == 0 || e.contains("already holds"), "trial {trial}: {e}");
        let r2 = s.t.dir.path().join(format!("kr{trial}b"));
        let (c, _, e) = run_s(&[
            "restore",
            "-r",
            "-f",
            p(&s.base),
            "--mirror",
            p(&k),
            "--target",
            p(&r2),
        ]);
        assert_eq!(c, 0, "{e}");
        assert_tree_is(&s.trees[2], &r2, &format!("trial {trial}, after the rerun"));
        fs::remove_dir_all(&r).unwrap();
        fs::remove_dir_all(&r2).unwrap();
    }
    eprintln!(
        "mirror add kill trials: old state {} times, new state {} times",
        seen[0], seen[1]
    );
    assert!(seen[0] > 0, "no kill landed before the commit");
}

/// `restore -x` of one small file from a base in a file and a mirror reads
/// only the base's records that file needs: under 1% of the base.
#[test]
fn extracting_one_file_reads_under_one_percent_of_a_base_in_a_file() {
    let t = paths();
    for i in 0..48 {
        fs::write(t.src.join(format!("big{i}")), bytes(i, 1 << 20)).unwrap();
    }
    fs::write(t.src.join("small"), bytes(99, 5000)).unwrap();
    let base = t.dir.path().join("base.sdump");
    assert_eq!(dump_to(0, &base, &t.cat, &t.src), 0);
    let m = t.dir.path().join("m");
    json(&["mirror", "create", "--json", "--base", p(&base), p(&m)]);
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(t.src.join("big7"))
            .unwrap();
        f.write_all_at(&bytes(5, 8192), 40_960).unwrap();
    }
    let inc = t.dir.path().join("i1.sdump");
    assert_eq!(dump_to(1, &inc, &t.cat, &t.src), 0);
    json(&["mirror", "add", "--json", p(&m), "-f", p(&inc)]);
    let base_len = fs::metadata(&base).unwrap().len();
    for name in ["small", "big7"] {
        let x = t.dir.path().join(format!("x-{name}"));
        let v = json(&[
            "restore",
            "-x",
            "--json",
            "-f",
            p(&base),
            "--mirror",
            p(&m),
            "--target",
            p(&x),
            name,
        ]);
        assert_eq!(
            fs::read(x.join(name)).unwrap(),
            fs::read(t.src.join(name)).unwrap()
        );
        let read = v["base_bytes_read"].as_u64().unwrap();
        if name == "small" {
            assert!(
                read * 100 < base_len,
                "read {read} bytes of a {base_len}-byte base for one small file"
            );
        }
    }
}

/// `history -f BASE --mirror M`: the base's snapshot, then the mirror's
/// newest, with the blocks that changed between them — the union of what
/// the history of the whole chain says changed in between.
#[test]
fn history_from_a_base_and_its_mirror_spans_the_absorbed_increments() {
    let mut s = Source::new(8, 12, 11);
    let m = s.t.dir.path().join("mirror");
    json(&["mirror", "create", "--json", "--base", p(&s.base), p(&m)]);
    // Nothing added yet: the base's snapshot alone.
    let kept = s.files()[0].strip_prefix(&s.t.src).unwrap().to_path_buf();
    let h = json(&[
        "history",
        "--json",
        "-f",
        p(&s.base),
        "--mirror",
        p(&m),
        p(&kept),
    ]);
    assert_eq!(h["snapshots"].as_array().unwrap().len(), 1, "{h}");
    assert_eq!(h["versions"][0]["change"], "added", "{h}");
    for _ in 0..4 {
        let inc = s.churn(15);
        json(&["mirror", "add", "--json", p(&m), "-f", p(&inc)]);
    }
    let mut chain = vec!["history", "--json", "-f", p(&s.base)];
    for i in &s.incs {
        chain.extend(["-f", p(i)]);
    }
    let mut checked = 0;
    for f in s.files() {
        let rel = f
            .strip_prefix(&s.t.src)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let h = json(&[
            "history",
            "--json",
            "-f",
            p(&s.base),
            "--mirror",
            p(&m),
            &rel,
        ]);
        let snaps = h["snapshots"].as_array().unwrap();
        assert_eq!(snaps.len(), 2, "{h}");
        assert_eq!(snaps[1]["id"], s.incs.len() as u64 + 1, "{h}");
        let mut all = chain.clone();
        all.push(&rel);
        let full = json(&all);
        let versions = h["versions"].as_array().unwrap();
        let in_base = s.trees[0].contains_key(rel.as_bytes());
        if !in_base {
            assert_eq!(versions.len(), 1, "{h}");
            assert_eq!(versions[0]["change"], "added", "{h}");
            continue;
        }
        assert_eq!(versions[0]["change"], "added", "{h}");
        // The blocks the chain says changed after the base, merged.
        let mut want = std::collections::BTreeSet::new();
        for v in full["versions"].as_array().unwrap().iter().skip(1) {
            for r in v["changed_blocks"].as_array().unwrap() {
                let (a, n) = (r[0].as_u64().unwrap(), r[1].as_u64().unwrap());
                want.extend(a..a + n);
            }
        }
        let mut got = std::collections::BTreeSet::new();
        if let Some(v) = versions.get(1) {
            assert_eq!(v["change"], "modified", "{h}");
            assert!(v["stream"].as_str().unwrap().starts_with("mirror "), "{h}");
            for r in v["changed_blocks"].as_array().unwrap() {
                let (a, n) = (r[0].as_u64().unwrap(), r[1].as_u64().unwrap());
                got.extend(a..a + n);
            }
        }
        assert_eq!(got, want, "{rel}: {h}\n{full}");
        checked += !got.is_empty() as u32;
    }
    assert!(checked > 3, "files with changed blocks: {checked}");
    // A deleted file: added in the base, deleted in the mirror's newest.
    let gone = s.trees[0]
        .keys()
        .find(|k| !s.trees.last().unwrap().contains_key(*k) && k.starts_with(b"d"))
        .map(|k| String::from_utf8(k.clone()).unwrap())
        .expect("a churn round deletes a file of the base");
    let h = json(&[
        "history",
        "--json",
        "-f",
        p(&s.base),
        "--mirror",
        p(&m),
        &gone,
    ]);
    let changes: Vec<_> = h["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["change"].clone())
        .collect();
    assert_eq!(changes, ["added", "deleted"], "{h}");
    // Another stream as the base is refused by name.
    let (c, _, e) = run_s(&["history", "-f", p(&s.incs[0]), "--mirror", p(&m), &gone]);
    assert_eq!(c, 2);
    assert!(e.contains("give the mirror's base"), "{e}");
}
