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

/// A text file of `n` bytes that compresses (so records are stored as zstd
/// frames), different for each `seed`.
fn text(seed: u64, n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 64);
    let mut i = 0u64;
    while v.len() < n {
        v.extend_from_slice(format!("{seed:04} line {i:08} of the text\n").as_bytes());
        i += 1;
    }
    v.truncate(n);
    v
}

/// Records whose kept blocks stay as they are are copied whole, the
/// dropped blocks left as gap bytes; every reader skips the gaps: verify,
/// restore -r of a directory and of a volume, -x and -C through the
/// relocation table, a second coalesce with the output as input, and a
/// mirror's add and reintegration.
#[test]
fn records_copied_whole_carry_gaps_that_every_reader_skips() {
    use std::os::unix::fs::FileExt;
    let t = paths();
    let big = t.src.join("big.txt");
    fs::write(&big, text(1, 4 << 20)).unwrap();
    fs::write(t.src.join("raw.bin"), bytes(9, 600_000)).unwrap();
    let mut streams: Vec<PathBuf> = Vec::new();
    let mut trees = Vec::new();
    let dump = |streams: &mut Vec<PathBuf>, trees: &mut Vec<_>| {
        let level = streams.len() as u8;
        let s = t.dir.path().join(format!("s{level}"));
        assert_eq!(dump_to(level, &s, &t.cat, &t.src), 0);
        streams.push(s);
        trees.push(snapshot_tree(&t.src));
    };
    dump(&mut streams, &mut trees);
    for r in 0..4u64 {
        let f = fs::OpenOptions::new().write(true).open(&big).unwrap();
        for k in 0..3 {
            // Scattered single blocks: most records lose one or two.
            f.write_all_at(
                &text(100 + r * 10 + k, 4096),
                4096 * ((r * 211 + k * 97) % 1024),
            )
            .unwrap();
        }
        if r > 0 {
            // And one the round before wrote: the increments' records
            // lose blocks too.
            f.write_all_at(&text(999 + r, 4096), 4096 * ((r - 1) * 211 % 1024))
                .unwrap();
        }
        let f = fs::OpenOptions::new()
            .write(true)
            .open(t.src.join("raw.bin"))
            .unwrap();
        f.write_all_at(&bytes(50 + r, 4096), 4096 * (r * 30 % 140))
            .unwrap();
        fs::write(t.src.join(format!("new{r}")), text(200 + r, 10_000)).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        dump(&mut streams, &mut trees);
    }
    let arg = |range: std::ops::Range<usize>| -> Vec<&str> {
        streams[range].iter().flat_map(|s| ["-f", p(s)]).collect()
    };

    // Levels 0..3 into a synthetic full: copies, with gaps.
    let full = t.dir.path().join("full.sdump");
    let mut a = arg(0..4);
    a.extend(["-o", p(&full)]);
    let (c, v, e) = coalesce(&a);
    assert_eq!(c, 0, "{e}");
    let copied = v["blocks_copied"].as_u64().unwrap();
    let carried = v["blocks_carried"].as_u64().unwrap();
    assert!(copied * 10 > carried * 8, "most blocks copied: {v}");
    assert!(v["gap_bytes"].as_u64().unwrap() > 0, "{v}");
    let (c, _, e) = run_s(&["verify", "-f", p(&full)]);
    assert_eq!(c, 0, "{e}");
    let target = t.dir.path().join("r-full");
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&full), "--target", p(&target)]);
    assert_eq!(c, 0, "{e}");
    assert_tree_is(&trees[3], &target, "the synthetic full with gaps");
    // The same with --recompress: no copies, no gaps, and smaller.
    let squeezed = t.dir.path().join("squeezed.sdump");
    let mut a = arg(0..4);
    a.extend(["--recompress", "-o", p(&squeezed)]);
    let (c, v2, e) = coalesce(&a);
    assert_eq!(c, 0, "{e}");
    assert_eq!(
        (v2["blocks_copied"].as_u64(), v2["gap_bytes"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(
        v2["stream_bytes"].as_u64() < v["stream_bytes"].as_u64(),
        "{v2} {v}"
    );
    // Random access through the relocation table: -x of the file, and -C
    // of the full plus the next increment against the live tree.
    let x = t.dir.path().join("x");
    let (c, _, e) = run_s(&[
        "restore",
        "-x",
        "-f",
        p(&full),
        "--target",
        p(&x),
        "big.txt",
    ]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(
        fs::read(x.join("big.txt")).unwrap(),
        trees[3][&b"big.txt"[..]].content.clone().unwrap()
    );
    let (c, o, e) = run_s(&[
        "restore",
        "-C",
        "-f",
        p(&full),
        "-f",
        p(&streams[4]),
        "--target",
        p(&t.src),
    ]);
    assert_eq!(c, 0, "{e}{}", String::from_utf8_lossy(&o));
    // Into a volume.
    let vol = t.dir.path().join("v.vol");
    assert_eq!(run_s(&["volume", "create", p(&vol)]).0, 0);
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&full), "--volume", p(&vol)]);
    assert_eq!(c, 0, "{e}");
    let vx = t.dir.path().join("vx");
    let (c, _, e) = run_s(&["volume", "extract", p(&vol), p(&vx)]);
    assert_eq!(c, 0, "{e}");
    assert_tree_is(&trees[3], &vx, "the synthetic full received into a volume");

    // The gapped full as the input of another coalesce: its gaps are
    // skipped, and the copies of its records keep within the limit.
    let full2 = t.dir.path().join("full2.sdump");
    let (c, v, e) = coalesce(&["-f", p(&full), "-f", p(&streams[4]), "-o", p(&full2)]);
    assert_eq!(c, 0, "{e}");
    assert!(v["blocks_copied"].as_u64().unwrap() > 0, "{v}");
    let (c, _, e) = run_s(&["verify", "-f", p(&full2)]);
    assert_eq!(c, 0, "{e}");
    let target2 = t.dir.path().join("r-full2");
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&full2), "--target", p(&target2)]);
    assert_eq!(c, 0, "{e}");
    assert_tree_is(&trees[4], &target2, "a coalesce of a gapped full");

    // An increment with gaps (levels 1..4 merged), applied, and added to a
    // mirror whose reintegration is then a full of the newest tree.
    let inc = t.dir.path().join("inc.sdump");
    let mut a = arg(1..5);
    a.extend(["--max-waste", "100", "-o", p(&inc)]);
    let (c, v, e) = coalesce(&a);
    assert_eq!(c, 0, "{e}");
    assert!(v["gap_bytes"].as_u64().unwrap() > 0, "{v}");
    let target3 = t.dir.path().join("r-inc");
    for s in [&streams[0], &inc] {
        let (c, _, e) = run_s(&["restore", "-r", "-f", p(s), "--target", p(&target3)]);
        assert_eq!(c, 0, "{e}");
    }
    assert_tree_is(&trees[4], &target3, "level 0 and the gapped increment");
    let m = t.dir.path().join("mirror");
    let (c, _, e) = run_s(&["mirror", "create", "--base", p(&streams[0]), p(&m)]);
    assert_eq!(c, 0, "{e}");
    let (c, _, e) = run_s(&["mirror", "add", p(&m), "-f", p(&inc)]);
    assert_eq!(c, 0, "{e}");
    let reint = t.dir.path().join("reint.sdump");
    let (c, _, e) = run_s(&[
        "mirror",
        "reintegrate",
        p(&m),
        "--base",
        p(&streams[0]),
        "-o",
        p(&reint),
    ]);
    assert_eq!(c, 0, "{e}");
    let target4 = t.dir.path().join("r-reint");
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&reint), "--target", p(&target4)]);
    assert_eq!(c, 0, "{e}");
    assert_tree_is(&trees[4], &target4, "the mirror's reintegration");
}
