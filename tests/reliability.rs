//! Trying hard to break the contracts: random damage to real streams,
//! SIGKILL at random moments of dumps and restores, full file systems, and
//! a source that changes under the dump.
//!
//! Trial counts are small by default; the slow suite raises them:
//! `SNAPDUMP_CORRUPTION_TRIALS=1000 SNAPDUMP_CRASH_TRIALS=50 cargo nextest run --test reliability`.

mod common;
use common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Runs the binary with a time limit; None if it had to be killed.
fn run_limited(args: &[&str], limit: Duration) -> Option<(Option<i32>, String)> {
    let mut child = bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut e = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
            return Some((st.code(), e));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn random_damage_is_always_detected_never_panics_never_hangs() {
    let t = paths();
    build_fidelity_tree(&t.src);
    let streams = [t.dir.path().join("z3"), t.dir.path().join("z0")];
    for (s, z) in streams.iter().zip(["3", "0"]) {
        let (c, _, e) = run_s(&[
            "dump",
            "-0",
            "-z",
            z,
            "-f",
            p(s),
            "--catalog",
            p(&t.cat),
            p(&t.src),
        ]);
        assert_eq!(c, 0, "{e}");
    }
    let n = trials("SNAPDUMP_CORRUPTION_TRIALS", 40);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n);
    let bad = t.dir.path().join("bad");
    let (mut tried, mut by_kind) = (0, [0u64; 4]);
    for trial in 0..n {
        let good = std::fs::read(&streams[(trial % 2) as usize]).unwrap();
        let mut b = good.clone();
        let kind = (trial / 2 % 4) as usize;
        match kind {
            0 | 2 => simple_damage(&mut b, kind as u64, &mut rng),
            1 => zero_range(&mut b, 1 + rng.below(64) as usize, &mut rng),
            _ => {
                // Splice: a chunk of the stream copied over another place,
                // or random bytes inserted.
                let n = 1 + rng.below(4096) as usize;
                let from = rng.below((b.len() - n) as u64) as usize;
                let to = rng.below(b.len() as u64) as usize;
                if rng.below(2) == 0 {
                    let chunk = good[from..from + n].to_vec();
                    let end = (to + n).min(b.len());
                    b[to..end].copy_from_slice(&chunk[..end - to]);
                } else {
                    let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    b.splice(to..to, junk);
                }
            }
        }
        if b == good {
            continue;
        }
        tried += 1;
        by_kind[kind] += 1;
        std::fs::write(&bad, &b).unwrap();
        let (code, e) = run_limited(&["verify", "-f", p(&bad)], Duration::from_secs(20))
            .unwrap_or_else(|| panic!("verify hung on trial {trial}"));
        assert_eq!(
            code,
            Some(2),
            "trial {trial} (kind {kind}): verify said {code:?}: {e}"
        );
        assert_damage_report(&e, trial);
        let target = t.dir.path().join("target");
        let _ = std::fs::remove_dir_all(&target);
        let (code, e) = run_limited(
            &["restore", "-r", "-f", p(&bad), "--target", p(&target)],
            Duration::from_secs(20),
        )
        .unwrap_or_else(|| panic!("restore hung on trial {trial}"));
        assert_salvaged(
            &t.src,
            &target,
            code,
            &e,
            &format!("trial {trial} (kind {kind})"),
        );
    }
    assert!(
        max_child_rss_kib() < 256 * 1024,
        "a reader used more than 256 MiB"
    );
    eprintln!("corruption trials: {tried} (flip, zero, truncate, splice: {by_kind:?})");
    assert!(tried * 10 >= n * 9);
}

/// A source whose increments take every path of the apply: files that
/// keep blocks in place (their changes are spooled), files rewritten whole
/// (built fresh), deletions, new files, a renamed directory, a hard link.
fn build_increment_tree(root: &Path) {
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    for i in 0..3u64 {
        std::fs::write(
            root.join(format!("big{i}")),
            bytes(i, 300_000 + i as usize * 77_777),
        )
        .unwrap();
    }
    for i in 0..30u64 {
        std::fs::write(
            root.join(format!("d/f{i}")),
            bytes(100 + i, 3000 + i as usize * 100),
        )
        .unwrap();
    }
    std::fs::write(root.join("d/e/deep"), bytes(7, 20_000)).unwrap();
    std::fs::hard_link(root.join("big0"), root.join("d/link")).unwrap();
    std::os::unix::fs::symlink("big1", root.join("sym")).unwrap();
    // readlink(2) bumps a symlink's atime under relatime while it is not
    // after its mtime or ctime: give it one an hour ahead, so reading the link (as the
    // comparisons do) leaves it as it is, on the source and the targets.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    set_times(&root.join("sym"), (now + 3600, 5), (now - 100, 7));
}

/// One round of changes; `seed` varies which.
fn mutate_increment_tree(root: &Path, seed: u64) {
    use std::os::unix::fs::FileExt;
    for i in 0..3u64 {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(root.join(format!("big{i}")))
            .unwrap();
        f.write_all_at(&bytes(seed + i, 9000), (seed * 40_000 + i * 8192) % 200_000)
            .unwrap();
    }
    for i in 0..30u64 {
        if (i + seed) % 4 == 0 {
            std::fs::write(root.join(format!("d/f{i}")), bytes(seed * 1000 + i, 2500)).unwrap();
        }
    }
    let _ = std::fs::remove_file(root.join(format!("d/f{}", seed % 30)));
    std::fs::write(root.join(format!("new{seed}")), bytes(seed, 12_345)).unwrap();
    if root.join("d/e").exists() {
        std::fs::rename(root.join("d/e"), root.join("e-moved")).unwrap();
    }
}

/// 0: one to three bytes flipped at random places; 2: a truncation at a
/// random place.
fn simple_damage(b: &mut Vec<u8>, kind: u64, rng: &mut Rng) {
    if kind == 0 {
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(b.len() as u64) as usize;
            b[at] ^= 1 + rng.below(255) as u8;
        }
    } else {
        b.truncate(rng.below(b.len() as u64) as usize);
    }
}

/// Up to `n` bytes zeroed from a random place.
fn zero_range(b: &mut [u8], n: usize, rng: &mut Rng) {
    let at = rng.below(b.len() as u64) as usize;
    let end = (at + n).min(b.len());
    b[at..end].fill(0);
}

/// Damages an increment: 0 a few flipped bytes, 1 a zeroed 64 KiB range,
/// 2 a truncation, 3 a record-aligned splice with `other` (an increment on
/// the same base).
fn damage(good: &[u8], other: &[u8], kind: u64, rng: &mut Rng) -> Vec<u8> {
    let mut b = good.to_vec();
    match kind {
        0 | 2 => simple_damage(&mut b, kind, rng),
        1 => zero_range(&mut b, 65536, rng),
        _ => {
            // Records of `good` up to one, then `other`'s from the same
            // sequence number on (or one of other's records in the middle).
            let (ra, rb) = (stream_records(good), stream_records(other));
            let k = 1 + rng.below(ra.len().min(rb.len()) as u64 - 1) as usize;
            b = good[..ra[k].0].to_vec();
            if rng.below(2) == 0 {
                b.extend_from_slice(&other[rb[k].0..]);
            } else {
                b.extend_from_slice(&other[rb[k].0..rb[k].0 + rb[k].1]);
                if k + 1 < ra.len() {
                    b.extend_from_slice(&good[ra[k + 1].0..]);
                }
            }
        }
    }
    b
}

#[test]
fn damaged_increments_leave_the_target_exactly_at_a_snapshot() {
    let t = paths();
    build_increment_tree(&t.src);
    let s0 = t.dir.path().join("s0");
    assert_eq!(dump_to(0, &s0, &t.cat, &t.src), 0);
    let snap1 = snapshot_tree(&t.src);
    // Two increments on snapshot 1: level 1, then level 1 again.
    let mut incs = Vec::new();
    for (n, z) in [(1u64, "0"), (2, "3")] {
        mutate_increment_tree(&t.src, n);
        let s = t.dir.path().join(format!("s1-{n}"));
        let (c, _, e) = run_s(&[
            "dump",
            "-1",
            "-z",
            z,
            "-f",
            p(&s),
            "--catalog",
            p(&t.cat),
            p(&t.src),
        ]);
        assert_eq!(c, 0, "{e}");
        incs.push((std::fs::read(&s).unwrap(), snapshot_tree(&t.src)));
    }
    let target = t.dir.path().join("target");
    let fresh = |target: &Path| {
        let _ = std::fs::remove_dir_all(target);
        assert_eq!(
            run_s(&["restore", "-r", "-f", p(&s0), "--target", p(target)]).0,
            0
        );
    };
    fresh(&target);
    let n = trials("SNAPDUMP_CORRUPTION_TRIALS", 40);
    let mut rng = Rng(0x5eed_1234 ^ n);
    let bad = t.dir.path().join("bad");
    let (mut refused, mut applied, mut by_kind) = (0u64, 0u64, [0u64; 4]);
    for trial in 0..n {
        let which = (trial % 2) as usize;
        let kind = trial / 2 % 4;
        let (good, snap) = &incs[which];
        let b = damage(good, &incs[1 - which].0, kind, &mut rng);
        if &b == good {
            continue;
        }
        by_kind[kind as usize] += 1;
        std::fs::write(&bad, &b).unwrap();
        let (code, e) = run_limited(
            &["restore", "-r", "-f", p(&bad), "--target", p(&target)],
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("restore hung on trial {trial}"));
        let what = format!("trial {trial} (kind {kind}, increment {which})");
        match code {
            Some(0) => {
                // Only a stream that is whole where it matters may apply,
                // and then exactly.
                assert!(tree_is(snap, &target), "{what}: exit 0 on wrong data: {e}");
                applied += 1;
                fresh(&target);
            }
            Some(2) => {
                assert!(
                    e.contains("unchanged at snapshot 1") || e.contains("nothing was restored"),
                    "{what}: {e}"
                );
                assert_tree_is(
                    &snap1,
                    &target,
                    &format!("{what}: the target is at neither snapshot: {e}"),
                );
                assert!(!target.join(".snapdump-restore/apply").exists(), "{what}");
                refused += 1;
            }
            other => panic!("{what}: exit {other:?}: {e}"),
        }
    }
    // After all that, a good increment still applies.
    let good = t.dir.path().join("good");
    std::fs::write(&good, &incs[0].0).unwrap();
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&good), "--target", p(&target)]).0,
        0
    );
    assert!(tree_is(&incs[0].1, &target));
    eprintln!(
        "increment corruption trials: {refused} refused, {applied} applied exactly (flip, zero 64 KiB, truncate, splice: {by_kind:?})"
    );
    assert!(refused * 10 >= n * 9, "{refused} of {n} refused");
}

/// A tree big enough that dumps and restores take a while to kill into.
fn build_crash_tree(root: &Path) {
    for d in 0..4 {
        std::fs::create_dir_all(root.join(format!("d{d}"))).unwrap();
        for f in 0..25 {
            std::fs::write(
                root.join(format!("d{d}/f{f}")),
                bytes(d * 100 + f, 100_000 + f as usize * 4096),
            )
            .unwrap();
        }
    }
}

fn snapshot_count(cat: &Path, src: &Path) -> u64 {
    let (c, o, _) = run_s(&["snapshots", "--json", "--catalog", p(cat), p(src)]);
    if c != 0 {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
    v[0]["snapshots"].as_array().unwrap().len() as u64
}

#[test]
fn dumps_killed_at_random_moments_leave_the_catalog_consistent() {
    let t = paths();
    build_crash_tree(&t.src);
    let s0 = t.dir.path().join("s0");
    assert_eq!(dump_to(0, &s0, &t.cat, &t.src), 0);
    let started = Instant::now();
    let probe = t.dir.path().join("probe");
    assert_eq!(dump_to(0, &probe, &t.cat, &t.src), 0);
    let full = started.elapsed();
    let n = trials("SNAPDUMP_CRASH_TRIALS", 10);
    let mut rng = Rng(12345 + n);
    let mut killed = 0;
    for trial in 0..n {
        // Change something, then kill a dump of it at a random moment.
        std::fs::write(
            t.src.join(format!("d{}/f{}", trial % 4, trial % 25)),
            bytes(1000 + trial, 60_000),
        )
        .unwrap();
        let before = snapshot_count(&t.cat, &t.src);
        let out = t.dir.path().join(format!("k{trial}"));
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 + 1));
        let lvl = format!("-{}", trial % 3);
        killed += kill_after(
            &[
                "dump",
                &lvl,
                "-f",
                p(&out),
                "--catalog",
                p(&t.cat),
                p(&t.src),
            ],
            delay,
        ) as u64;
        let after = snapshot_count(&t.cat, &t.src);
        assert!(
            after == before || after == before + 1,
            "trial {trial}: {before} -> {after} snapshots"
        );
        // Whatever is under the output name is a whole, valid stream: a dump
        // killed after renaming its finished stream into place, but before
        // the catalog commit, leaves a good stream that is simply not a base.
        if out.exists() {
            let (c, _, e) = run_s(&["verify", "-f", p(&out)]);
            assert_eq!(
                c, 0,
                "trial {trial}: a killed dump left a bad stream under its name: {e}"
            );
        }
    }
    // The next dump is correct: restore its chain and compare.
    snapshot_tree(&t.src);
    let last = t.dir.path().join("last");
    let (c, o, e) = run_s(&[
        "dump",
        "-1",
        "--json",
        "-f",
        p(&last),
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    assert_eq!(c, 0, "{e}");
    let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
    assert_eq!(v["base"]["level"], 0);
    let (_, o, _) = run_s(&["snapshots", "--json", "--catalog", p(&t.cat), p(&t.src)]);
    let snaps: serde_json::Value = serde_json::from_slice(&o).unwrap();
    let base_id = v["base"]["id"].as_u64().unwrap();
    let base_out = snaps[0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == base_id)
        .unwrap()["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        run_s(&["restore", "-r", "-f", &base_out, "--target", p(&t.out)]).0,
        0
    );
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&last), "--target", p(&t.out)]);
    assert_eq!(c, 0, "{e}");
    assert_same_tree(&t.src, &t.out);
    eprintln!("dump crash trials: {n}, killed while running: {killed}");
}

#[test]
fn restores_killed_at_random_moments_finish_when_rerun() {
    let t = paths();
    build_crash_tree(&t.src);
    let s0 = t.dir.path().join("s0");
    let s1 = t.dir.path().join("s1");
    assert_eq!(dump_to(0, &s0, &t.cat, &t.src), 0);
    let snap1 = snapshot_tree(&t.src);
    for i in 0..40u64 {
        let f = t.src.join(format!("d{}/f{}", i % 4, i % 25));
        if i % 7 == 0 {
            std::fs::remove_file(&f).unwrap();
        } else {
            std::fs::write(&f, bytes(500 + i, 50_000)).unwrap();
        }
    }
    std::fs::rename(t.src.join("d3"), t.src.join("d3-renamed")).unwrap();
    snapshot_tree(&t.src);
    assert_eq!(dump_to(1, &s1, &t.cat, &t.src), 0);
    let probe = t.dir.path().join("probe");
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&probe)]).0,
        0
    );
    let started = Instant::now();
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&probe)]).0,
        0
    );
    let full = started.elapsed();
    let n = trials("SNAPDUMP_CRASH_TRIALS", 10);
    let mut rng = Rng(777 + n);
    let mut killed = 0;
    for trial in 0..n {
        let target = t.dir.path().join(format!("t{trial}"));
        assert_eq!(
            run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&target)]).0,
            0
        );
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 + 1));
        let was_killed = kill_after(
            &["restore", "-r", "-f", p(&s1), "--target", p(&target)],
            delay,
        );
        killed += was_killed as u64;
        if trial % 2 == 1 {
            // The next run brings a damaged copy: an apply killed before
            // its check is undone and the copy refused; one killed after
            // is finished. Either way the target is at a snapshot.
            let mut b = std::fs::read(&s1).unwrap();
            let at = b.len() / 2;
            b[at] ^= 0x55;
            let bad = t.dir.path().join("bad");
            std::fs::write(&bad, &b).unwrap();
            let (c, _, e) = run_s(&["restore", "-r", "-f", p(&bad), "--target", p(&target)]);
            let at_1 = tree_is(&snap1, &target);
            let at_2 = tree_is(&snapshot_tree(&t.src), &target);
            assert!(
                at_1 || at_2,
                "trial {trial}: at neither snapshot after {c}: {e}"
            );
            assert!(c != 0 || at_2, "trial {trial}: exit 0 at snapshot 1: {e}");
        }
        let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&target)]);
        assert!(
            c == 0 || e.contains("already applied"),
            "trial {trial}: rerun failed: {e}"
        );
        assert_same_tree(&t.src, &target);
        std::fs::remove_dir_all(&target).unwrap();
    }
    eprintln!("restore crash trials: {n}, killed while running: {killed}");
}

#[test]
fn full_file_systems_give_clear_errors_and_keep_earlier_states() {
    let t = paths();
    std::fs::create_dir(t.src.join("d")).unwrap();
    for i in 0..8 {
        std::fs::write(t.src.join(format!("d/f{i}")), bytes(i, 300_000)).unwrap();
    }
    let Some(small) = Tmpfs::new(&t.dir.path().join("small"), "1m") else {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    };
    // The output on a full file system.
    let out = small.0.join("s.sdump");
    let (c, e) = dump_raw(&out, &t.cat, &t.src, &[]);
    assert_eq!(c, 2);
    assert!(
        e.contains("No space left") && e.trim().lines().count() == 1,
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(&small.0).unwrap().count(),
        0,
        "partial output left behind"
    );
    assert_eq!(snapshot_count(&t.cat, &t.src), 0);
    // A restore target on a full file system.
    assert_eq!(dump_raw(&t.stream, &t.cat, &t.src, &[]).0, 0);
    let target = small.0.join("target");
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&t.stream), "--target", p(&target)]);
    assert_eq!(c, 2);
    assert!(
        e.contains("No space left") && e.contains("incomplete"),
        "{e}"
    );
    assert!(!target.join(".snapdump-restore/state").exists());
    // A catalog on a full file system: the earlier catalog stays intact.
    let _ = std::fs::remove_dir_all(&target);
    let cat2 = small.0.join("cat");
    assert_eq!(
        run_s(&[
            "dump",
            "-0",
            "-f",
            p(&t.dir.path().join("c0")),
            "--catalog",
            p(&cat2),
            p(&t.src)
        ])
        .0,
        0
    );
    let catalog_file = std::fs::read_dir(cat2.join("sources"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("catalog");
    let before = std::fs::read(&catalog_file).unwrap();
    let filler = small.0.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 2 << 20]);
    std::fs::write(t.src.join("d/new"), bytes(99, 100_000)).unwrap();
    let (c, _, e) = run_s(&[
        "dump",
        "-1",
        "-f",
        p(&t.dir.path().join("c1")),
        "--catalog",
        p(&cat2),
        p(&t.src),
    ]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("No space left") || e.contains("spool"), "{e}");
    assert_eq!(
        std::fs::read(&catalog_file).unwrap(),
        before,
        "the catalog changed"
    );
    std::fs::remove_file(&filler).unwrap();
}

#[test]
fn a_source_changing_under_the_dump_is_reported_and_nothing_else_affected() {
    let t = paths();
    std::fs::create_dir_all(t.src.join("stays")).unwrap();
    std::fs::create_dir_all(t.src.join("swapped")).unwrap();
    std::fs::write(t.src.join("stays/a"), bytes(1, 50_000)).unwrap();
    std::fs::write(t.src.join("vanishes"), bytes(2, 50_000)).unwrap();
    std::fs::write(t.src.join("swapped/b"), bytes(3, 50_000)).unwrap();
    let pause = t.dir.path().join("paused");
    let child = spawn_paused(
        &[
            "dump",
            "-0",
            "--json",
            "-f",
            p(&t.stream),
            "--catalog",
            p(&t.cat),
            p(&t.src),
        ],
        "dump-after-scan",
        &pause,
    );
    // Between the scan and the data: a file vanishes, a directory is
    // replaced by a symlink to a place holding a file of the same name.
    std::fs::remove_file(t.src.join("vanishes")).unwrap();
    let elsewhere = t.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("b"), b"must not be read").unwrap();
    std::fs::remove_dir_all(t.src.join("swapped")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, t.src.join("swapped")).unwrap();
    std::fs::remove_file(&pause).unwrap();
    let out = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("vanishes") && e.contains("swapped/b"), "{e}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["warnings"].as_array().unwrap().len(), 2, "{v}");
    // The untouched file is intact; nothing was read through the symlink.
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&t.stream), "--target", p(&t.out)]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(
        std::fs::read(t.out.join("stays/a")).unwrap(),
        bytes(1, 50_000)
    );
    assert_ne!(
        std::fs::read(t.out.join("swapped/b")).unwrap(),
        b"must not be read"
    );
    // And the next dump repairs everything.
    snapshot_tree(&t.src);
    let s1 = t.dir.path().join("s1");
    assert_eq!(dump_to(1, &s1, &t.cat, &t.src), 0);
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&t.out)]);
    assert_eq!(c, 0, "{e}");
    assert_same_tree(&t.src, &t.out);
}

#[test]
fn a_permission_denied_subtree_is_reported_and_the_rest_dumped() {
    if !is_root() {
        eprintln!("skipped: needs root to drop privileges with setpriv");
        return;
    }
    let t = paths();
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(t.src.join("open/sub")).unwrap();
    std::fs::create_dir_all(t.src.join("closed/inner")).unwrap();
    std::fs::write(t.src.join("open/sub/f"), b"readable").unwrap();
    std::fs::write(t.src.join("closed/inner/secret"), b"no").unwrap();
    std::fs::set_permissions(t.src.join("closed"), std::fs::Permissions::from_mode(0o700)).unwrap();
    for d in [
        t.dir.path(),
        &t.src,
        &t.src.join("open"),
        &t.src.join("open/sub"),
    ] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::set_permissions(
        t.src.join("open/sub/f"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = run_as_nobody(&[
        "dump",
        "-0",
        "-f",
        p(&t.stream),
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains("closed") && e.contains("Permission denied"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    let (_, o, _) = run_s(&["restore", "-t", "-f", p(&t.stream)]);
    let listing = String::from_utf8(o).unwrap();
    assert!(
        listing.contains("open/sub/f")
            && listing.contains("closed/")
            && !listing.contains("secret"),
        "{listing}"
    );
}

#[test]
fn a_damaged_increment_leaves_the_target_as_it_was_and_the_good_stream_finishes() {
    let t = paths();
    build_crash_tree(&t.src);
    let s0 = t.dir.path().join("s0");
    let s1 = t.dir.path().join("s1");
    assert_eq!(dump_to(0, &s0, &t.cat, &t.src), 0);
    let at_s0 = t.dir.path().join("at-s0");
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&at_s0)]).0,
        0
    );
    for i in 0..30u64 {
        std::fs::write(
            t.src.join(format!("d{}/f{}", i % 4, i % 25)),
            bytes(900 + i, 40_000),
        )
        .unwrap();
    }
    std::fs::rename(t.src.join("d1"), t.src.join("d1-moved")).unwrap();
    snapshot_tree(&t.src);
    assert_eq!(dump_to(1, &s1, &t.cat, &t.src), 0);
    let good = std::fs::read(&s1).unwrap();
    let n = trials("SNAPDUMP_CORRUPTION_TRIALS", 40) / 4;
    let mut rng = Rng(4242 + n);
    let bad = t.dir.path().join("bad");
    for trial in 0..n.max(4) {
        let mut b = good.clone();
        if trial % 3 == 2 {
            b.truncate(rng.below(b.len() as u64) as usize);
        } else {
            let at = rng.below(b.len() as u64) as usize;
            b[at] ^= 1 + rng.below(255) as u8;
        }
        std::fs::write(&bad, &b).unwrap();
        let target = t.dir.path().join(format!("t{trial}"));
        assert_eq!(
            run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&target)]).0,
            0
        );
        let (c, _, e) = run_s(&["restore", "-r", "-f", p(&bad), "--target", p(&target)]);
        assert_eq!(c, 2, "trial {trial}: a damaged increment was accepted");
        assert!(e.trim().lines().count() == 1, "{e}");
        assert_same_tree(&at_s0, &target);
        let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&target)]);
        assert_eq!(c, 0, "trial {trial}: the good stream did not finish: {e}");
        assert_same_tree(&t.src, &target);
        std::fs::remove_dir_all(&target).unwrap();
    }
}

/// Verify's report of a damaged stream: one warning per damaged stretch,
/// then one error line.
fn assert_damage_report(e: &str, trial: u64) {
    let lines: Vec<&str> = e.trim().lines().collect();
    let (last, rest) = lines.split_last().expect("a message");
    assert!(last.starts_with("snapdump: error:"), "trial {trial}: {e}");
    for l in rest {
        assert!(
            l.starts_with("snapdump: warning:") && l.contains("damaged"),
            "trial {trial}: {e}"
        );
    }
}

/// What a restore of a damaged full stream may do: fail (exit 2) without
/// recording the target; or restore around the damage (exit 1), naming
/// every file that lost data — every file it does not name is exact — and
/// recording the target only when no file lost anything.
fn assert_salvaged(
    src: &std::path::Path,
    target: &std::path::Path,
    code: Option<i32>,
    e: &str,
    what: &str,
) {
    let recorded = target.join(".snapdump-restore/state").exists();
    match code {
        Some(2) => assert!(
            !recorded,
            "{what}: failed restore recorded as complete: {e}"
        ),
        Some(1) => {
            if recorded {
                assert!(
                    !e.contains("lost bytes"),
                    "{what}: recorded despite lost data: {e}"
                );
                assert_same_tree(src, target);
                return;
            }
            assert!(
                e.contains("lost bytes"),
                "{what}: exit 1 without naming what was lost: {e}"
            );
            let want = snapshot_tree(src);
            let got = snapshot_tree(target);
            for (k, w) in &want {
                if k == b"." {
                    continue;
                }
                let named = e.contains(&format!(
                    "warning: {}: lost bytes",
                    snapdump::names::escape(k)
                ));
                let g = got
                    .get(k)
                    .unwrap_or_else(|| panic!("{what}: {} missing", String::from_utf8_lossy(k)));
                if named {
                    assert_eq!((g.kind, g.size, g.mode), (w.kind, w.size, w.mode), "{what}");
                } else if g != w {
                    panic!(
                        "{what}: {} differs but is not named: {}\n{e}",
                        String::from_utf8_lossy(k),
                        describe_diff(w, g)
                    );
                }
            }
        }
        other => panic!("{what}: restore said {other:?}: {e}"),
    }
}

#[test]
fn damaged_and_missing_records_are_skipped_and_every_loss_is_named() {
    let t = paths();
    for i in 0..8 {
        std::fs::write(t.src.join(format!("f{i}")), bytes(50 + i, 400_000)).unwrap();
    }
    let (c, e) = dump_raw(&t.stream, &t.cat, &t.src, &[]);
    assert_eq!(c, 0, "{e}");
    let good = std::fs::read(&t.stream).unwrap();
    let recs = stream_records(&good);
    let data: Vec<_> = recs.iter().filter(|r| r.2 == 4).collect();
    assert!(data.len() >= 10);
    // Flip a byte in the 3rd data record and delete the 8th.
    let mut bad = good.clone();
    bad[data[2].0 + 1000] ^= 0x20;
    let (d8, l8) = (data[7].0, data[7].1);
    bad.drain(d8..d8 + l8);
    std::fs::write(&t.stream, &bad).unwrap();

    let (c, _, e) = run_s(&["verify", "-f", p(&t.stream)]);
    assert_eq!(c, 2);
    assert_eq!(e.matches("damaged:").count(), 2, "{e}");
    assert!(e.contains("payload checksum mismatch"), "{e}");
    assert!(e.contains("is missing"), "{e}");

    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&t.stream), "--target", p(&t.out)]);
    assert_eq!(c, 1, "{e}");
    let named: Vec<String> = (0..8)
        .map(|i| format!("f{i}"))
        .filter(|f| e.contains(&format!("warning: {f}: lost bytes")))
        .collect();
    // Two lost records of 256 KiB: two to four files (a record can hold
    // the tail of one file and the head of the next).
    assert!((2..=4).contains(&named.len()), "{named:?}: {e}");
    for i in 0..8 {
        let f = format!("f{i}");
        let want = bytes(50 + i, 400_000);
        let got = std::fs::read(t.out.join(&f)).unwrap();
        if named.contains(&f) {
            // The lost range is zeros, everything else exact.
            let line = e
                .lines()
                .find(|l| l.contains(&format!("warning: {f}: lost bytes")))
                .unwrap();
            let range = line
                .split("lost bytes ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            let (a, b) = range.split_once("..").unwrap();
            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(&got[..a], &want[..a]);
            assert!(got[a..b].iter().all(|&x| x == 0));
            assert_eq!(&got[b..], &want[b..]);
        } else {
            assert_eq!(got, want, "{f} was not named but differs");
        }
    }
    assert!(!t.out.join(".snapdump-restore/state").exists());
}

#[test]
fn dumps_killed_at_random_moments_resume_to_a_whole_stream() {
    let t = paths();
    build_crash_tree(&t.src);
    let started = Instant::now();
    let probe = t.dir.path().join("probe");
    assert_eq!(dump_to(0, &probe, &t.cat, &t.src), 0);
    let full = started.elapsed();
    let n = trials("SNAPDUMP_CRASH_TRIALS", 10);
    let mut rng = Rng(777 + n);
    let (mut resumed, mut kept_some) = (0, 0);
    for trial in 0..n {
        std::fs::write(
            t.src.join(format!("d{}/f{}", trial % 4, trial % 25)),
            bytes(5000 + trial, 60_000),
        )
        .unwrap();
        let out = t.dir.path().join(format!("r{trial}"));
        let args = [
            "dump",
            "-0",
            "-f",
            p(&out),
            "--catalog",
            p(&t.cat),
            p(&t.src),
        ];
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 + 1));
        kill_after(&args, delay);
        let mut again = args.to_vec();
        again.insert(2, "--resume");
        again.insert(2, "--json");
        let (c, o, e) = run_s(&again);
        match c {
            0 => {
                resumed += 1;
                let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
                kept_some += (v["resumed_bytes"].as_u64().unwrap() > 0) as u64;
            }
            // Killed before it recorded anything to resume, or after it
            // completed: nothing to continue.
            2 if e.contains("no interrupted dump") || e.contains("changed since") => {
                if !out.exists() {
                    assert_eq!(dump_to(0, &out, &t.cat, &t.src), 0, "trial {trial}");
                }
            }
            _ => panic!("trial {trial}: resume said {c}: {e}"),
        }
        // Either way the stream under the name is whole and restores the
        // tree as it is.
        let (c, _, e) = run_s(&["verify", "-f", p(&out)]);
        assert_eq!(c, 0, "trial {trial}: {e}");
        let target = t.dir.path().join(format!("x{trial}"));
        let (c, _, e) = run_s(&["restore", "-r", "-f", p(&out), "--target", p(&target)]);
        assert_eq!(c, 0, "trial {trial}: {e}");
        let want = snapshot_tree(&t.src);
        let got = snapshot_tree(&target);
        for (k, w) in &want {
            if k != b"." {
                assert_eq!(&got[k], w, "trial {trial}: {}", String::from_utf8_lossy(k));
            }
        }
        let _ = std::fs::remove_dir_all(&target);
    }
    eprintln!("{resumed} of {n} killed dumps resumed, {kept_some} keeping bytes already written");
}
