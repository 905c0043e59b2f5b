//! `coalesce`: chains merged into one stream, refused when they are not
//! one chain or are damaged, to tapes, and killed at random moments
//! (the random-tree property test is in tests/increments.rs).

mod common;
use common::*;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A source with `n` rounds of churn after a level 0, one stream a level
/// (0, 1, 2, ...), and the tree at each.
struct Churn {
    t: Paths,
    streams: Vec<PathBuf>,
    trees: Vec<std::collections::BTreeMap<Vec<u8>, Entry>>,
}

impl Churn {
    fn new(files: usize, size: usize, rounds: usize) -> Churn {
        let t = paths();
        for i in 0..files {
            fs::create_dir_all(t.src.join(format!("d{}", i % 5))).unwrap();
            fs::write(
                t.src.join(format!("d{}/f{i}", i % 5)),
                bytes(i as u64, size),
            )
            .unwrap();
        }
        let mut c = Churn {
            t,
            streams: Vec::new(),
            trees: Vec::new(),
        };
        c.dump();
        for r in 0..rounds {
            for i in (r..files).step_by(3) {
                let p = c.t.src.join(format!("d{}/f{i}", i % 5));
                if i % 7 == r % 7 {
                    let _ = fs::remove_file(&p);
                } else {
                    use std::os::unix::fs::FileExt;
                    let f = fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&p)
                        .unwrap();
                    f.write_all_at(&bytes((r * 1000 + i) as u64, 8192), 4096 * (r as u64 % 4))
                        .unwrap();
                }
            }
            fs::write(
                c.t.src.join(format!("new{r}")),
                bytes(r as u64 + 77, 30_000),
            )
            .unwrap();
            c.dump();
        }
        c
    }

    fn dump(&mut self) {
        let level = self.streams.len().min(9) as u8;
        let s = self.t.dir.path().join(format!("s{level}"));
        assert_eq!(dump_to(level, &s, &self.t.cat, &self.t.src), 0);
        self.streams.push(s);
        self.trees.push(snapshot_tree(&self.t.src));
    }

    fn args(&self, range: std::ops::Range<usize>) -> Vec<&str> {
        let mut a = Vec::new();
        for s in &self.streams[range] {
            a.extend(["-f", p(s)]);
        }
        a
    }
}

fn coalesce(args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["coalesce", "--json"];
    all.extend_from_slice(args);
    let (c, o, e) = run_s(&all);
    (
        c,
        serde_json::from_slice(&o).unwrap_or(serde_json::Value::Null),
        e,
    )
}

#[test]
fn a_synthetic_full_and_a_merged_increment_restore_what_the_chain_does() {
    let ch = Churn::new(40, 50_000, 4);
    let full = ch.t.dir.path().join("synthetic.sdump");
    let mut args = ch.args(0..5);
    args.extend(["-o", p(&full)]);
    let (c, v, e) = coalesce(&args);
    assert_eq!(c, 0, "{e}");
    assert_eq!(v["full"], true);
    assert!(v["blocks_dropped"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(
        v["inputs"].as_array().unwrap().len(),
        5,
        "every input is named: {v}"
    );
    let r = ch.t.dir.path().join("r-full");
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&full), "--target", p(&r)]);
    assert_eq!(c, 0, "{e}");
    assert_tree_is(&ch.trees[4], &r, "synthetic full");
    // Random access works on it: one file, by the relocation table.
    let x = ch.t.dir.path().join("x");
    let (c, _, e) = run_s(&["restore", "-x", "-f", p(&full), "--target", p(&x), "d4/f4"]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(
        fs::read(x.join("d4/f4")).unwrap(),
        fs::read(ch.t.src.join("d4/f4")).unwrap()
    );
    // The increments 1..4 as one increment on the level 0, both finishes.
    let inc = ch.t.dir.path().join("merged.sdump");
    let mut args = ch.args(1..5);
    args.extend(["-o", p(&inc)]);
    let (c, v, e) = coalesce(&args);
    assert_eq!(c, 0, "{e}");
    assert_eq!(v["full"], false);
    assert_eq!(v["base"]["id"], 1);
    for inplace in [false, true] {
        let r = ch.t.dir.path().join(format!("r-inc-{inplace}"));
        assert_eq!(
            run_s(&["restore", "-r", "-f", p(&ch.streams[0]), "--target", p(&r)]).0,
            0
        );
        let mut a = vec!["restore", "-r", "-f", p(&inc), "--target", p(&r)];
        if inplace {
            a.push("--inplace");
        }
        let (c, _, e) = run_s(&a);
        assert_eq!(c, 0, "{e}");
        assert_tree_is(&ch.trees[4], &r, "merged increment");
    }
    // The chain goes on from the merged stream: a later increment applies.
    assert_eq!(run_s(&["verify", "-f", p(&inc)]).0, 0);
    // Onto a virtual tape, and back.
    let tap = ch.t.dir.path().join("merged.tap");
    let mut args = ch.args(0..5);
    args.extend(["-o", p(&tap)]);
    let (c, _, e) = coalesce(&args);
    assert_eq!(c, 0, "{e}");
    let r = ch.t.dir.path().join("r-tape");
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&tap), "--target", p(&r)]);
    assert_eq!(c, 0, "{e}");
    assert_tree_is(&ch.trees[4], &r, "synthetic full on tape");
}

#[test]
fn streams_that_are_not_one_chain_or_are_damaged_are_refused_and_write_nothing() {
    let ch = Churn::new(12, 30_000, 3);
    let out = ch.t.dir.path().join("out.sdump");
    let refused = |args: &[&str], why: &str| {
        let mut a = args.to_vec();
        a.extend(["-o", p(&out)]);
        let (c, _, e) = coalesce(&a);
        assert_eq!(c, 2, "{args:?}: {e}");
        assert!(e.contains(why), "{args:?}: {e}");
        assert!(!out.exists(), "{args:?}: an output was left");
    };
    // A gap: levels 0 and 2 without 1.
    refused(
        &["-f", p(&ch.streams[0]), "-f", p(&ch.streams[2])],
        "needs snapshot 2",
    );
    refused(&["-f", p(&ch.streams[1])], "at least two streams");
    refused(
        &["-f", p(&ch.streams[1]), "-f", p(&ch.streams[1])],
        "same snapshot",
    );
    // Damage in a data record of one input, and a truncated input.
    let bad = ch.t.dir.path().join("bad.sdump");
    let mut b = fs::read(&ch.streams[1]).unwrap();
    let n = b.len();
    b[n / 2] ^= 0x40;
    fs::write(&bad, &b).unwrap();
    refused(&["-f", p(&ch.streams[0]), "-f", p(&bad)], "bad.sdump");
    let cut = ch.t.dir.path().join("cut.sdump");
    fs::write(&cut, &fs::read(&ch.streams[1]).unwrap()[..n - 300]).unwrap();
    refused(&["-f", p(&ch.streams[0]), "-f", p(&cut)], "cut.sdump");
    // A tape is written in place: a damaged input in a file is found
    // before the tape is touched, and what it held survives.
    let tap = ch.t.dir.path().join("x.tap");
    let (c, _, e) = coalesce(&[
        "-f",
        p(&ch.streams[0]),
        "-f",
        p(&ch.streams[1]),
        "-o",
        p(&tap),
    ]);
    assert_eq!(c, 0, "{e}");
    let (c, _, e) = coalesce(&["-f", p(&ch.streams[0]), "-f", p(&bad), "-o", p(&tap)]);
    assert_eq!(c, 2, "{e}");
    let (c, _, e) = run_s(&["verify", "-f", p(&tap)]);
    assert_eq!(c, 0, "a refused coalesce cut the tape: {e}");
    // On a pipe the consumer gets a stream without its end: never whole.
    let piped = ch.t.dir.path().join("piped");
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' coalesce -f '{}' -f '{}' -o - > '{}'",
            bin_path().to_str().unwrap(),
            p(&ch.streams[0]),
            p(&bad),
            p(&piped)
        ))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let (c, _, _) = run_s(&["verify", "-f", p(&piped)]);
    assert_ne!(c, 0, "a cut output on a pipe verifies as whole");
}

#[test]
fn coalesce_killed_at_random_moments_never_leaves_a_partial_output() {
    let ch = Churn::new(60, 120_000, 3);
    let probe = ch.t.dir.path().join("probe.sdump");
    let mut args = ch.args(0..4);
    args.extend(["-o", p(&probe)]);
    let started = Instant::now();
    let (c, _, e) = coalesce(&args);
    assert_eq!(c, 0, "{e}");
    let took = started.elapsed();
    let n = trials("SNAPDUMP_CRASH_TRIALS", 20);
    let mut rng = Rng(4242 + n);
    let mut killed = 0;
    for trial in 0..n {
        let out = ch.t.dir.path().join(format!("k{trial}.sdump"));
        let mut a = vec!["coalesce"];
        a.extend(ch.args(0..4));
        a.extend(["-o", p(&out)]);
        let delay = Duration::from_micros(rng.below(took.as_micros() as u64 + 1));
        killed += kill_after(&a, delay) as u64;
        if out.exists() {
            let (c, _, e) = run_s(&["verify", "-f", p(&out)]);
            assert_eq!(
                c, 0,
                "trial {trial}: a killed coalesce left a bad stream: {e}"
            );
            let r = ch.t.dir.path().join(format!("kr{trial}"));
            assert_eq!(
                run_s(&["restore", "-r", "-f", p(&out), "--target", p(&r)]).0,
                0
            );
            assert_tree_is(&ch.trees[3], &r, "a coalesce that finished before the kill");
        }
    }
    assert!(killed > 0, "no trial was killed while it ran");
    // Nothing else was left beside the outputs (no temporary streams).
    let left: Vec<_> = fs::read_dir(ch.t.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    eprintln!(
        "coalesce kill trials: {n}, killed while running: {killed}, hidden entries: {left:?}"
    );
}
