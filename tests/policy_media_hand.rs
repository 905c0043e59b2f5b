//! What a hand does to a policy's tape or volume between runs: a dump
//! by hand that begins the policy's cartridge again, another source's
//! cartridge in the drive, snapshots deleted or made shadows in the
//! policy's volume, and two policies (or a policy and a replication) on
//! one volume. Each is either refused untouched or warned about, and the
//! runs after it go on with snapshots that restore, never on a base that
//! is gone.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn json_run(args: &[&str], want: i32) -> (Value, String) {
    let (c, o, e) = run_s(args);
    assert_eq!(c, want, "{args:?}: {e}");
    let v = serde_json::from_slice(&o)
        .unwrap_or_else(|_| panic!("{args:?}: not JSON: {}", String::from_utf8_lossy(&o)));
    (v, e)
}

fn time_of(day: u64) -> String {
    let t = 1_798_772_400 + day as i64 * 86_400; // 2027-01-01T03:00:00Z
    snapdump::tree::Time { sec: t, nsec: 0 }.rfc3339()
}

fn churn(src: &Path, day: u64) {
    fs::write(src.join(format!("day{day}")), bytes(100 + day, 9000)).unwrap();
    fs::write(src.join("log"), bytes(day, 20_000 + day as usize)).unwrap();
}

fn policy(t: &Paths, name: &str, streams: &str, body: &str) -> PathBuf {
    let pol = t.dir.path().join(format!("{name}.toml"));
    fs::write(
        &pol,
        format!(
            "source = \"{}\"\ncatalog = \"{}\"\n\n[streams]\ndir = \"{}\"\ncompression = 1\n{streams}\n\n{body}",
            t.src.display(),
            t.cat.display(),
            t.dir.path().join(format!("{name}-state")).display(),
        ),
    )
    .unwrap();
    pol
}

/// The plan's kept snapshots: id -> stream.
fn kept(pol: &Path, day: u64) -> BTreeMap<u64, String> {
    let (plan, _) = json_run(
        &["policy", "plan", "--json", "--at", &time_of(day), p(pol)],
        0,
    );
    plan["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["snapshot"].as_u64().unwrap(),
                s["stream"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Runs snapdump with `args`, aborted at the failpoint `at` ("NAME:N");
/// asserts it did not succeed.
fn killed(args: &[&str], at: &str) {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_snapdump"))
        .args(args)
        .env("SNAPDUMP_FAILPOINT", at)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "{args:?} was not stopped at {at}");
}

/// A tape policy (`levels`, keep `last`) that has dumped snapshot 1 onto
/// cartridge A and snapshot 2 onto a blank cartridge B, with B on the
/// shelf (`shelf/B.tap`) and A back in the drive. Returns the drive, the
/// shelf and the policy file.
fn a_then_b(t: &Paths, seed: u64, levels: &str, last: u32) -> (PathBuf, PathBuf, PathBuf) {
    fs::write(t.src.join("base"), bytes(seed, 20_000)).unwrap();
    let tape = t.dir.path().join("drive.tap");
    let shelf = t.dir.path().join("shelf");
    fs::create_dir(&shelf).unwrap();
    let pol = policy(
        t,
        "tape",
        &format!("tape = \"{}\"", tape.display()),
        &format!("[schedule]\nevery = \"1d\"\nlevels = {levels}\n\n[keep]\nlast = {last}\n"),
    );
    churn(&t.src, 0);
    json_run(&["run", "--json", "--at", &time_of(0), p(&pol)], 0); // 1 begins A
    fs::rename(&tape, shelf.join("A.tap")).unwrap();
    churn(&t.src, 1);
    json_run(&["run", "--json", "--at", &time_of(1), p(&pol)], 0); // 2 begins B
    fs::rename(&tape, shelf.join("B.tap")).unwrap();
    fs::rename(shelf.join("A.tap"), &tape).unwrap();
    (tape, shelf, pol)
}

fn tape_file(stream: &str) -> String {
    stream
        .split(" file ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("no tape file in {stream:?}"))
        .to_string()
}

fn restore_tape_file(tape: &Path, file: &str, target: &Path) {
    let (c, _, e) = run_s(&[
        "restore",
        "-r",
        "-f",
        p(tape),
        "--file-number",
        file,
        "--target",
        p(target),
    ]);
    assert_eq!(c, 0, "tape file {file}: {e}");
}

#[test]
fn a_dump_by_hand_over_the_policys_cartridge_starts_the_policy_again_at_level_0() {
    let t = paths();
    fs::write(t.src.join("base"), bytes(1, 200_000)).unwrap();
    let tape = t.dir.path().join("drive.tap");
    let pol = policy(
        &t,
        "tape",
        &format!("tape = \"{}\"", tape.display()),
        "[schedule]\nevery = \"1d\"\nlevels = [0, 1, 2, 3, 4, 5, 6, 7]\n\n[keep]\nlast = 3\n",
    );
    for day in 0..3u64 {
        churn(&t.src, day);
        json_run(&["run", "--json", "--at", &time_of(day), p(&pol)], 0);
    }
    // `dump` without --append begins the tape again: the policy's three
    // dumps are gone from it.
    churn(&t.src, 50);
    let (c, _, e) = run_s(&[
        "dump",
        "-0",
        "-f",
        p(&tape),
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    assert_eq!(c, 0, "{e}");
    let mut trees = BTreeMap::new();
    churn(&t.src, 3);
    trees.insert(3u64, snapshot_tree(&t.src));
    let (v, e) = json_run(&["run", "--json", "--at", &time_of(3), p(&pol)], 1);
    assert!(
        e.contains("written over one of the policy's cartridges (1v1-"),
        "{e}"
    );
    let d = &v["dumped"];
    assert_eq!(
        d["level"], 0,
        "built on a snapshot of a lost cartridge: {v}"
    );
    let index = fs::read_to_string(t.dir.path().join("tape-state/.snapdump-policy.tape")).unwrap();
    assert!(index.contains("lost\t1v1-"), "{index}");
    // The level 0 went after the hand dump, on the cartridge as it is.
    let stream = d["stream"].as_str().unwrap();
    assert_eq!(tape_file(stream), "2", "{stream}");
    let r = t.dir.path().join("r3");
    restore_tape_file(&tape, "2", &r);
    assert_tree_is(&trees[&3], &r, "the level 0 after the hand dump");
    fs::remove_dir_all(&r).unwrap();
    // The next runs build on the new level 0; once retention has pruned
    // the dumps of the lost cartridge, nothing is warned of and the
    // index forgets the loss.
    let mut last = 0;
    for day in 4..8u64 {
        churn(&t.src, day);
        trees.insert(day, snapshot_tree(&t.src));
        let (c, o, e) = run_s(&["run", "--json", "--at", &time_of(day), p(&pol)]);
        assert!(c == 0 || c == 1, "day {day}: {e}");
        let v: Value = serde_json::from_slice(&o).unwrap();
        assert_ne!(v["dumped"]["level"], 0, "day {day}: {v}");
        last = c;
    }
    assert_eq!(last, 0, "still warned once the lost dumps were pruned");
    let index = fs::read_to_string(t.dir.path().join("tape-state/.snapdump-policy.tape")).unwrap();
    assert!(!index.contains("lost"), "{index}");
    // Every kept snapshot restores from its chain on the tape: the chain
    // of the level 0 of day 3 (snapshot 5; 4 was the hand dump).
    let kept = kept(&pol, 7);
    assert_eq!(
        kept.keys().copied().collect::<Vec<_>>(),
        vec![5, 6, 7, 8, 9]
    );
    let r = t.dir.path().join("chain");
    for &id in kept.keys() {
        let _ = fs::remove_dir_all(&r);
        for (_, s) in kept.range(..=id) {
            restore_tape_file(&tape, &tape_file(s), &r);
        }
        assert_tree_is(&trees[&(id - 2)], &r, &format!("snapshot {id}"));
    }
}

#[test]
fn a_hand_dump_that_failed_over_the_policys_cartridge_is_not_built_on() {
    let t = paths();
    fs::write(t.src.join("base"), bytes(6, 40_000)).unwrap();
    let tape = t.dir.path().join("drive.tap");
    let pol = policy(
        &t,
        "tape",
        &format!("tape = \"{}\"", tape.display()),
        "[schedule]\nevery = \"1d\"\nlevels = [0, 1, 2, 3]\n\n[keep]\nlast = 3\n",
    );
    for day in 0..2u64 {
        churn(&t.src, day);
        json_run(&["run", "--json", "--at", &time_of(day), p(&pol)], 0);
    }
    // A dump by hand without --append that fails once the cartridge is
    // full: the catalog takes nothing, but the tape was begun again.
    fs::write(t.src.join("big"), bytes(7, 3_000_000)).unwrap();
    let (c, _, e) = run_s(&[
        "dump",
        "-0",
        "-f",
        p(&tape),
        "--tape-capacity",
        "1M",
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    assert_eq!(c, 2, "{e}");
    fs::remove_file(t.src.join("big")).unwrap();
    churn(&t.src, 2);
    let want = snapshot_tree(&t.src);
    let (v, e) = json_run(&["run", "--json", "--at", &time_of(2), p(&pol)], 1);
    assert!(
        e.contains("written over one of the policy's cartridges (1v1-"),
        "{e}"
    );
    assert_eq!(v["dumped"]["level"], 0, "built on lost dumps: {v}");
    let file = tape_file(v["dumped"]["stream"].as_str().unwrap());
    let r = t.dir.path().join("r");
    restore_tape_file(&tape, &file, &r);
    assert_tree_is(&want, &r, "the level 0 after the failed hand dump");
    // A second run on the same cartridge records no second loss.
    json_run(&["run", "--json", "--at", &time_of(2), p(&pol)], 1);
    let index = fs::read_to_string(t.dir.path().join("tape-state/.snapdump-policy.tape")).unwrap();
    assert_eq!(index.matches("lost\t").count(), 1, "{index}");
}

#[test]
fn whichever_cartridge_a_hand_dump_wrote_over_nothing_is_built_on_it() {
    let t = paths();
    fs::write(t.src.join("base"), bytes(11, 30_000)).unwrap();
    let tape = t.dir.path().join("drive.tap");
    let shelf = t.dir.path().join("shelf");
    fs::create_dir(&shelf).unwrap();
    let pol = policy(
        &t,
        "tape",
        &format!("tape = \"{}\"", tape.display()),
        "[schedule]\nevery = \"1d\"\nlevels = [0, 1, 1, 1, 1, 1, 1, 1]\n\n[keep]\nlast = 10\n",
    );
    let run = |day: u64, want: i32| {
        churn(&t.src, day);
        json_run(&["run", "--json", "--at", &time_of(day), p(&pol)], want)
    };
    run(0, 0);
    // A copy of the catalog as it is now: a catalog put back from a
    // backup later has the policy's source, with ids behind the policy's.
    let stale = t.dir.path().join("stale-catalog");
    let ok = std::process::Command::new("cp")
        .args(["-a", p(&t.cat), p(&stale)])
        .status()
        .unwrap();
    assert!(ok.success());
    run(1, 0);
    // Tape A to the shelf; snapshot 3 begins a blank cartridge B.
    fs::rename(&tape, shelf.join("A.tap")).unwrap();
    run(2, 0);
    // B to the shelf, A back in the drive, and a dump by hand over it
    // with the old copy of the catalog: its snapshot id (2) is one the
    // policy's index has, on A.
    fs::rename(&tape, shelf.join("B.tap")).unwrap();
    fs::rename(shelf.join("A.tap"), &tape).unwrap();
    let (c, _, e) = run_s(&[
        "dump",
        "-0",
        "-f",
        p(&tape),
        "--catalog",
        p(&stale),
        p(&t.src),
    ]);
    assert_eq!(c, 0, "{e}");
    let (v, e) = run(3, 1);
    assert!(
        e.contains("written over one of the policy's cartridges"),
        "{e}"
    );
    assert_eq!(v["dumped"]["level"], 0, "built on a lost cartridge: {v}");
    let index = fs::read_to_string(t.dir.path().join("tape-state/.snapdump-policy.tape")).unwrap();
    assert!(
        index.contains("lost\t1v1-") && index.contains("lost\t3v1-"),
        "{index}"
    );
    // Each lost cartridge is said once per run, with its snapshots.
    let (_, e) = run(3, 1);
    assert_eq!(
        e.matches("may have been written over (the tape index")
            .count(),
        2,
        "{e}"
    );
    assert!(e.contains("snapshot(s) 1, 2 on it"), "{e}");
    // B is whole: once its line is deleted, only A is warned of.
    let kept: Vec<&str> = index
        .lines()
        .filter(|l| !l.starts_with("lost\t3v1-"))
        .collect();
    fs::write(
        t.dir.path().join("tape-state/.snapdump-policy.tape"),
        kept.join("\n") + "\n",
    )
    .unwrap();
    let (_, e) = run(4, 1);
    assert_eq!(
        e.matches("may have been written over (the tape index")
            .count(),
        1,
        "{e}"
    );
}

#[test]
fn hand_dumps_to_the_drive_put_the_cartridges_not_loaded_in_doubt_until_each_is_seen_whole() {
    let t = paths();
    fs::write(t.src.join("base"), bytes(13, 30_000)).unwrap();
    let tape = t.dir.path().join("drive.tap");
    let shelf = t.dir.path().join("shelf");
    fs::create_dir(&shelf).unwrap();
    let pol = policy(
        &t,
        "tape",
        &format!("tape = \"{}\"", tape.display()),
        "[schedule]\nevery = \"1d\"\nlevels = [0, 1, 1, 1, 1, 1, 1, 1]\n\n[keep]\nlast = 2\n",
    );
    let index_path = t.dir.path().join("tape-state/.snapdump-policy.tape");
    let freed: std::cell::RefCell<Vec<String>> = Default::default();
    let trees: std::cell::RefCell<BTreeMap<u64, _>> = Default::default();
    let run = |day: u64, want: i32| {
        churn(&t.src, day);
        let (v, e) = json_run(&["run", "--json", "--at", &time_of(day), p(&pol)], want);
        if let Some(f) = v["tapes_freed"].as_array() {
            freed
                .borrow_mut()
                .extend(f.iter().map(|x| x.as_str().unwrap().to_string()));
        }
        if let Some(id) = v["dumped"]["snapshot"].as_u64() {
            trees.borrow_mut().insert(id, snapshot_tree(&t.src));
        }
        (v, e)
    };
    let hand = |args: &[&str]| {
        let mut a = vec!["dump", "-0", "-f", p(&tape), "--catalog", p(&t.cat)];
        a.extend_from_slice(args);
        a.push(p(&t.src));
        let (c, _, e) = run_s(&a);
        assert_eq!(c, 0, "{e}");
    };
    run(0, 0); // snapshot 1 begins cartridge A
    fs::rename(&tape, shelf.join("A.tap")).unwrap();
    run(1, 0); // 2 begins a blank cartridge B
    hand(&[]); // 3, by hand, begins B again: 2 is gone
    fs::rename(&tape, shelf.join("B.tap")).unwrap();
    fs::rename(shelf.join("A.tap"), &tape).unwrap();
    // With A loaded, the hand dump is nowhere to be seen: every cartridge
    // but A (which is as the policy left it) is in doubt, and the next
    // increment goes on snapshot 1, on A.
    let (v, e) = run(2, 1);
    assert!(e.contains("snapshot(s) 3 were dumped by hand"), "{e}");
    let index = fs::read_to_string(&index_path).unwrap();
    assert!(
        index.contains("lost\t2v1-") && !index.contains("lost\t1v1-"),
        "{index}"
    );
    assert_eq!(
        (
            v["dumped"]["snapshot"].as_u64(),
            v["dumped"]["level"].as_u64()
        ),
        (Some(4), Some(1)),
        "{v}"
    );
    let r = t.dir.path().join("r");
    restore_tape_file(&tape, "1", &r);
    restore_tape_file(&tape, "2", &r);
    assert_tree_is(
        &trees.borrow()[&4],
        &r,
        "snapshot 4 on snapshot 1, both on A",
    );
    fs::remove_dir_all(&r).unwrap();
    // A to the shelf, a blank C in the drive, and a hand dump begins it:
    // now A is in doubt too, and the policy starts again on C.
    fs::rename(&tape, shelf.join("A.tap")).unwrap();
    hand(&[]); // 5
    let (v, e) = run(3, 1);
    assert!(e.contains("begins with a dump of"), "{e}");
    assert_eq!(v["dumped"]["level"], 0, "{v}");
    let index = fs::read_to_string(&index_path).unwrap();
    assert!(index.contains("lost\t1v1-"), "{index}");
    // A loaded again, whole: it is no longer in doubt.
    fs::rename(&tape, shelf.join("C.tap")).unwrap();
    fs::rename(shelf.join("A.tap"), &tape).unwrap();
    let (v, e) = run(4, 1); // (B's snapshot 2 is still warned of)
    assert!(e.contains("no longer taken as lost"), "{e}");
    assert_eq!(v["dumped"]["level"], 1, "{v}");
    let index = fs::read_to_string(&index_path).unwrap();
    assert!(!index.contains("lost\t1v1-"), "{index}");
    // Snapshot 7 restores from its chain: 6 on C, then 7 on A.
    restore_tape_file(&shelf.join("C.tap"), "2", &r);
    restore_tape_file(
        &tape,
        &tape_file(v["dumped"]["stream"].as_str().unwrap()),
        &r,
    );
    assert_tree_is(&trees.borrow()[&7], &r, "snapshot 7");
    // Retention prunes B's snapshot 2: B, whose name may now be on the
    // cartridge that was begun again, is never called free.
    for day in 5..8 {
        run(day, 0);
    }
    let freed = freed.borrow();
    assert!(!freed.iter().any(|f| f.starts_with("2v1-")), "{freed:?}");
    let index = fs::read_to_string(&index_path).unwrap();
    assert!(!index.contains("lost"), "{index}");
}

#[test]
fn a_hand_dump_appended_to_a_cartridge_keeps_it_from_being_called_free_and_keeps_its_base() {
    let t = paths();
    fs::write(t.src.join("base"), bytes(14, 30_000)).unwrap();
    let tape = t.dir.path().join("drive.tap");
    let shelf = t.dir.path().join("shelf");
    fs::create_dir(&shelf).unwrap();
    let pol = policy(
        &t,
        "tape",
        &format!("tape = \"{}\"", tape.display()),
        "[schedule]\nevery = \"1d\"\nlevels = [0]\n\n[keep]\nlast = 1\n",
    );
    let hand = |level: &str| {
        let (c, _, e) = run_s(&[
            "dump",
            level,
            "--append",
            "-f",
            p(&tape),
            "--catalog",
            p(&t.cat),
            p(&t.src),
        ]);
        assert_eq!(c, 0, "{e}");
    };
    let freed: std::cell::RefCell<Vec<String>> = Default::default();
    let day_run = |day: u64| {
        churn(&t.src, day);
        let (v, e) = json_run(&["run", "--json", "--at", &time_of(day), p(&pol)], 0);
        assert!(!e.contains("written over"), "day {day}: {e}");
        if let Some(f) = v["tapes_freed"].as_array() {
            freed
                .borrow_mut()
                .extend(f.iter().map(|x| x.as_str().unwrap().to_string()));
        }
    };
    day_run(0); // 1 begins A
    hand("-0"); // 2, by hand, appended to A
    day_run(1); // 3 on A (the run finds 2 on A)
    fs::rename(&tape, shelf.join("A.tap")).unwrap();
    day_run(2); // 4 begins B; 1 and 3 are pruned
    day_run(3); // 5 on B; 4 is pruned
                // A holds no dump the policy keeps, but the hand dump: not free.
    let f = freed.borrow().clone();
    assert!(!f.iter().any(|f| f.starts_with("1v1-")), "{f:?}");
    // A level 1 by hand on the policy's newest (5): pruning keeps its base.
    churn(&t.src, 50);
    let want = snapshot_tree(&t.src);
    hand("-1"); // 6, on 5
    day_run(4); // 7
    day_run(5); // 8
    let (s, _) = json_run(&["snapshots", "--json", "--catalog", p(&t.cat)], 0);
    let ids: Vec<u64> = s[0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_u64().unwrap())
        .collect();
    assert!(ids.contains(&5) && ids.contains(&6), "{ids:?}");
    let (plan, _) = json_run(
        &["policy", "plan", "--json", "--at", &time_of(5), p(&pol)],
        0,
    );
    assert!(
        plan.to_string().contains("the base of snapshot 6"),
        "{plan}"
    );
    let r = t.dir.path().join("r");
    restore_tape_file(&tape, "2", &r); // 5: B's file 2
    restore_tape_file(&tape, "3", &r); // 6: the hand level 1
    assert_tree_is(&want, &r, "the hand level 1 on the policy's snapshot 5");
}

#[test]
fn a_freed_cartridge_loaded_again_is_appended_to_without_a_doubt() {
    let t = paths();
    fs::write(t.src.join("base"), bytes(12, 30_000)).unwrap();
    let tape = t.dir.path().join("drive.tap");
    let shelf = t.dir.path().join("shelf");
    fs::create_dir(&shelf).unwrap();
    let pol = policy(
        &t,
        "tape",
        &format!("tape = \"{}\"", tape.display()),
        "[schedule]\nevery = \"1d\"\nlevels = [0]\n\n[keep]\nlast = 1\n",
    );
    churn(&t.src, 0);
    json_run(&["run", "--json", "--at", &time_of(0), p(&pol)], 0);
    fs::rename(&tape, shelf.join("A.tap")).unwrap();
    churn(&t.src, 1);
    let (v, _) = json_run(&["run", "--json", "--at", &time_of(1), p(&pol)], 0);
    let freed = v["tapes_freed"].as_array().unwrap();
    assert_eq!(freed.len(), 1, "{v}");
    assert!(freed[0].as_str().unwrap().starts_with("1v1-"), "{v}");
    // A back in the drive, not erased: the policy's own, free to append to.
    fs::rename(&tape, shelf.join("B.tap")).unwrap();
    fs::rename(shelf.join("A.tap"), &tape).unwrap();
    churn(&t.src, 2);
    let want = snapshot_tree(&t.src);
    let (v, e) = json_run(&["run", "--json", "--at", &time_of(2), p(&pol)], 0);
    assert!(!e.contains("written over"), "{e}");
    let stream = v["dumped"]["stream"].as_str().unwrap();
    assert!(stream.contains("(tape 1v1-"), "{stream}");
    let r = t.dir.path().join("r");
    restore_tape_file(&tape, &tape_file(stream), &r);
    assert_tree_is(&want, &r, "the dump appended to the freed cartridge");
}

#[test]
fn another_sources_cartridge_in_the_drive_is_refused_untouched() {
    let t = paths();
    fs::write(t.src.join("a"), bytes(2, 50_000)).unwrap();
    let tape = t.dir.path().join("drive.tap");
    let pol = policy(
        &t,
        "tape",
        &format!("tape = \"{}\"", tape.display()),
        "[schedule]\nevery = \"1d\"\nlevels = [0, 1]\n\n[keep]\nlast = 3\n",
    );
    json_run(&["run", "--json", "--at", &time_of(0), p(&pol)], 0);
    let ours = fs::read(&tape).unwrap();
    // Another catalog's dump of another tree begins the cartridge now in
    // the drive.
    let other = t.dir.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("b"), bytes(3, 40_000)).unwrap();
    fs::remove_file(&tape).unwrap();
    let (c, _, e) = run_s(&[
        "dump",
        "-0",
        "-f",
        p(&tape),
        "--catalog",
        p(&t.dir.path().join("other-catalog")),
        p(&other),
    ]);
    assert_eq!(c, 0, "{e}");
    let theirs = fs::read(&tape).unwrap();
    churn(&t.src, 1);
    let (c, _, e) = run_s(&["run", "--at", &time_of(1), p(&pol)]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("another source or catalog"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert_eq!(fs::read(&tape).unwrap(), theirs, "appended to it");
    // It may have been written over the policy's own cartridge: that one
    // is recorded as lost, so a blank loaded now does not take an
    // increment on what it held.
    let index_path = t.dir.path().join("tape-state/.snapdump-policy.tape");
    let index = fs::read_to_string(&index_path).unwrap();
    assert!(
        e.contains("written over one of the policy's cartridges (1v1-")
            && index.contains("lost\t1v1-"),
        "{e}\n{index}"
    );
    // The policy's own cartridge back, and the line deleted as the
    // message says: it goes on with an increment.
    fs::write(&tape, &ours).unwrap();
    let kept: Vec<&str> = index.lines().filter(|l| !l.starts_with("lost\t")).collect();
    fs::write(&index_path, kept.join("\n") + "\n").unwrap();
    let (v, _) = json_run(&["run", "--json", "--at", &time_of(1), p(&pol)], 0);
    assert_eq!(v["dumped"]["level"], 1, "{v}");
}

#[test]
fn a_run_killed_after_a_dump_that_spanned_cartridges_records_where_it_began() {
    let t = paths();
    fs::write(t.src.join("base"), bytes(8, 30_000)).unwrap();
    let tape = t.dir.path().join("drive.tap");
    let shelf = t.dir.path().join("shelf");
    fs::create_dir(&shelf).unwrap();
    let pol = policy(
        &t,
        "tape",
        &format!(
            "tape = \"{}\"\nnew_volume = 'n=$(ls {1} | wc -l); mv \"$SNAPDUMP_DEVICE\" {1}/c$n.tap'\ntape_capacity = \"200K\"\nblock_kib = 16\n",
            tape.display(),
            shelf.display()
        ),
        "[schedule]\nevery = \"1d\"\nlevels = [0, 1, 1, 1]\n\n[keep]\nlast = 3\n",
    );
    let tree0 = snapshot_tree(&t.src);
    json_run(&["run", "--json", "--at", &time_of(0), p(&pol)], 0);
    assert_eq!(
        fs::read_dir(&shelf).unwrap().count(),
        0,
        "day 0 fits one cartridge"
    );
    // Day 1's increment fills the cartridge and goes on to others; the
    // run is killed once the catalog took it, before the index did.
    fs::write(t.src.join("more"), bytes(9, 400_000)).unwrap();
    let tree1 = snapshot_tree(&t.src);
    killed(
        &["run", "--json", "--at", &time_of(1), p(&pol)],
        "policy-dumped:1",
    );
    let n = fs::read_dir(&shelf).unwrap().count();
    assert!(n >= 1, "the dump did not span");
    let (v, e) = json_run(&["run", "--json", "--at", &time_of(1), p(&pol)], 0);
    assert!(v["dumped"].is_null(), "{v}");
    assert!(!e.contains("written over"), "{e}");
    let index = fs::read_to_string(t.dir.path().join("tape-state/.snapdump-policy.tape")).unwrap();
    let line = index
        .lines()
        .find(|l| l.split('\t').nth(2) == Some("2"))
        .unwrap_or_else(|| panic!("snapshot 2 is not in the index: {index}"));
    let f: Vec<&str> = line.split('\t').collect();
    assert_eq!((f[3], f[4]), ("2", &*(n + 1).to_string()), "{line}");
    assert!(f[5].starts_with("1v1-"), "{line}");
    assert!(
        !index.contains("lost") && !index.contains("pending"),
        "{index}"
    );
    // Both restore: the level 0 from the first cartridge, the increment
    // from tape file 2 of it and on through the shelf to the drive.
    let r = t.dir.path().join("r");
    let first = shelf.join("c0.tap");
    restore_tape_file(&first, "1", &r);
    assert_tree_is(&tree0, &r, "snapshot 1");
    let mut args: Vec<String> = vec!["restore".into(), "-r".into()];
    for k in 0..n {
        args.extend([
            "-f".into(),
            shelf.join(format!("c{k}.tap")).display().to_string(),
        ]);
    }
    args.extend(["-f".into(), tape.display().to_string()]);
    args.extend([
        "--file-number".into(),
        "2".into(),
        "--target".into(),
        p(&r).into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (c, _, e) = run_s(&args);
    assert_eq!(c, 0, "{args:?}: {e}");
    assert_tree_is(&tree1, &r, "snapshot 2, across cartridges");
    // The next day builds on it, without a word.
    fs::write(t.src.join("day2"), bytes(10, 1000)).unwrap();
    let (v, _) = json_run(&["run", "--json", "--at", &time_of(2), p(&pol)], 0);
    assert_eq!(v["dumped"]["level"], 1, "{v}");
}

fn volume_ids(vol: &Path) -> BTreeMap<u64, u64> {
    let (v, _) = json_run(&["volume", "snapshots", "--json", p(vol)], 0);
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["shadow"].as_bool().unwrap_or(false))
        .map(|s| {
            (
                s["snapshot"]["id"].as_u64().unwrap(),
                s["volume_id"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn snapshots_deleted_or_shadowed_by_hand_in_the_volume_are_warned_of_and_not_built_on() {
    let t = paths();
    fs::write(t.src.join("base"), bytes(4, 120_000)).unwrap();
    let vol = t.dir.path().join("home.vol");
    let pol = policy(
        &t,
        "vol",
        &format!("volume = \"{}\"", vol.display()),
        "[schedule]\nevery = \"1d\"\nlevels = [0, 1, 2, 3, 4, 5, 6, 7]\n\n[keep]\nlast = 6\n",
    );
    let mut trees = BTreeMap::new();
    for day in 0..4u64 {
        churn(&t.src, day);
        trees.insert(day + 1, snapshot_tree(&t.src));
        json_run(&["run", "--json", "--at", &time_of(day), p(&pol)], 0);
    }
    let ids = volume_ids(&vol);
    assert_eq!(ids.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    // A kept snapshot made a shadow: the next run (nothing due) says so,
    // and the policy no longer counts it as kept.
    let (c, _, e) = run_s(&[
        "volume",
        "shadow",
        &format!("{}@{}", vol.display(), ids[&2]),
    ]);
    assert_eq!(c, 0, "{e}");
    let (v, e) = json_run(&["run", "--json", "--at", &time_of(3), p(&pol)], 1);
    assert!(e.contains("snapshot 2 was made a shadow"), "{e}");
    assert!(v["dumped"].is_null(), "{v}");
    assert_eq!(
        kept(&pol, 3).keys().copied().collect::<Vec<_>>(),
        vec![1, 3, 4]
    );
    // Said once: the catalog forgot it.
    json_run(&["run", "--json", "--at", &time_of(3), p(&pol)], 0);
    // The newest deleted by hand: the next dump cannot be an increment on
    // the snapshot before it (the volume goes on from the deleted one), so
    // it is a level 0, and it extracts whole.
    let (c, _, e) = run_s(&[
        "volume",
        "delete-snapshot",
        &format!("{}@{}", vol.display(), ids[&4]),
    ]);
    assert_eq!(c, 0, "{e}");
    churn(&t.src, 4);
    trees.insert(5, snapshot_tree(&t.src));
    let (v, e) = json_run(&["run", "--json", "--at", &time_of(4), p(&pol)], 1);
    assert!(e.contains("snapshot 4 was deleted from the volume"), "{e}");
    assert_eq!(v["dumped"]["level"], 0, "{v}");
    assert!(
        v["dumped"]["why"]
            .as_str()
            .unwrap()
            .contains("continues from snapshot 4"),
        "{v}"
    );
    // The days after: increments again, without a word.
    churn(&t.src, 5);
    trees.insert(6, snapshot_tree(&t.src));
    let (v, _) = json_run(&["run", "--json", "--at", &time_of(5), p(&pol)], 0);
    assert_eq!(v["dumped"]["level"], 1, "{v}");
    let ids = volume_ids(&vol);
    assert_eq!(ids.keys().copied().collect::<Vec<_>>(), vec![1, 3, 5, 6]);
    for (id, vid) in &ids {
        let x = t.dir.path().join(format!("x{id}"));
        let (c, _, e) = run_s(&[
            "volume",
            "extract",
            &format!("{}@{vid}", vol.display()),
            p(&x),
        ]);
        assert_eq!(c, 0, "{e}");
        assert_tree_is(&trees[id], &x, &format!("snapshot {id}"));
    }
}

#[test]
fn one_volume_is_never_two_policies_streams_nor_one_policys_replica() {
    let t = paths();
    fs::write(t.src.join("a"), bytes(5, 60_000)).unwrap();
    let vol = t.dir.path().join("shared.vol");
    let body = "[schedule]\nevery = \"1d\"\n\n[keep]\nlast = 2\n";
    let a = policy(&t, "a", &format!("volume = \"{}\"", vol.display()), body);
    // B names the same volume by another spelling.
    let spelled = t.dir.path().join(".").join("shared.vol");
    let b = policy(
        &t,
        "b",
        &format!("volume = \"{}\"", spelled.display()),
        body,
    );
    for day in 0..3u64 {
        churn(&t.src, day);
        json_run(&["run", "--json", "--at", &time_of(day), p(&a)], 0);
    }
    let held = volume_ids(&vol);
    // Nothing is due for B (A's newest is today's): refused all the same,
    // before it could take A's snapshots for its own and prune them.
    let (c, _, e) = run_s(&["run", "--at", &time_of(2), p(&b)]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("streams volume"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert_eq!(volume_ids(&vol), held);
    // C replicates to A's volume with a retention of its own: refused.
    let c_pol = policy(
        &t,
        "c",
        "",
        &format!(
            "{body}\n[[replicate]]\nto = \"{}\"\nkeep = {{ last = 1 }}\n",
            vol.display()
        ),
    );
    churn(&t.src, 3);
    let (v, e) = json_run(&["run", "--json", "--at", &time_of(3), p(&c_pol)], 1);
    assert!(e.contains("streams volume"), "{e}");
    assert!(
        v["replicated"][0]["error"]
            .as_str()
            .unwrap()
            .contains("streams volume"),
        "{v}"
    );
    assert_eq!(volume_ids(&vol), held, "the replication touched A's volume");
    // D names A's volume by a hard link to it.
    let linked = t.dir.path().join("linked.vol");
    fs::hard_link(&vol, &linked).unwrap();
    let d = policy(&t, "d", &format!("volume = \"{}\"", linked.display()), body);
    let (c, _, e) = run_s(&["run", "--at", &time_of(3), p(&d)]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("streams volume"), "{e}");
    // A goes on untouched.
    let (v, _) = json_run(&["run", "--json", "--at", &time_of(3), p(&a)], 0);
    assert!(!v["dumped"].is_null(), "{v}");
}

fn set_keep(pol: &Path, last: u32) {
    let text = fs::read_to_string(pol).unwrap();
    let i = text.find("last = ").unwrap();
    let j = i + text[i..].find('\n').unwrap();
    fs::write(pol, format!("{}last = {last}{}", &text[..i], &text[j..])).unwrap();
}

#[test]
fn a_cartridge_is_called_free_only_when_it_holds_nothing_kept_and_no_hand_dump() {
    let t = paths();
    fs::write(t.src.join("base"), bytes(15, 30_000)).unwrap();
    let tape = t.dir.path().join("drive.tap");
    let shelf = t.dir.path().join("shelf");
    fs::create_dir(&shelf).unwrap();
    let pol = policy(
        &t,
        "tape",
        &format!("tape = \"{}\"", tape.display()),
        "[schedule]\nevery = \"1d\"\nlevels = [0]\n\n[keep]\nlast = 2\n",
    );
    let freed_by = |day: u64| -> Vec<String> {
        let (v, e) = json_run(&["run", "--json", "--at", &time_of(day), p(&pol)], 0);
        assert!(!e.contains("written over"), "day {day}: {e}");
        v["tapes_freed"]
            .as_array()
            .map(|f| f.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    churn(&t.src, 0);
    freed_by(0); // 1 begins A
    fs::rename(&tape, shelf.join("A.tap")).unwrap();
    churn(&t.src, 1);
    freed_by(1); // 2 begins B
    fs::rename(&tape, shelf.join("B.tap")).unwrap();
    fs::rename(shelf.join("A.tap"), &tape).unwrap();
    // A dump by hand appended to A; then retention keeps only the newest.
    let (c, _, e) = run_s(&[
        "dump",
        "-0",
        "--append",
        "-f",
        p(&tape),
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]); // 3
    assert_eq!(c, 0, "{e}");
    set_keep(&pol, 1);
    // Nothing is due: the prune takes snapshot 1 off A, but the hand dump
    // on A has not been looked for: A is not called free.
    let f = freed_by(1);
    assert!(!f.iter().any(|x| x.starts_with("1v1-")), "{f:?}");
    // A dump is due: it goes onto A (the hand dump is found there), and
    // snapshot 2 is pruned: B, and only B, is free.
    churn(&t.src, 2);
    let f = freed_by(2);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].starts_with("2v1-"), "{f:?}");
    // The next day prunes 4 off A: A still holds the hand dump.
    churn(&t.src, 3);
    let f = freed_by(3);
    assert!(!f.iter().any(|x| x.starts_with("1v1-")), "{f:?}");
}

#[test]
fn a_hand_dump_that_went_on_to_another_cartridge_through_a_symlink_puts_it_in_doubt() {
    let t = paths();
    let (tape, shelf, pol) = a_then_b(&t, 16, "[0, 1, 2, 3, 4]", 5);
    // By hand, through a symlink to the drive, appended to A; A fills and
    // the dump goes on to the next volume given, which is B, from its
    // start.
    let link = t.dir.path().join("link.tap");
    std::os::unix::fs::symlink(&tape, &link).unwrap();
    fs::write(t.src.join("big"), bytes(17, 120_000)).unwrap();
    let (c, _, e) = run_s(&[
        "dump",
        "-0",
        "--append",
        "-b",
        "4",
        "--tape-capacity",
        "100K",
        "-f",
        p(&link),
        "-f",
        p(&shelf.join("B.tap")),
        "-f",
        p(&shelf.join("C.tap")),
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    assert_eq!(c, 0, "{e}");
    fs::remove_file(t.src.join("big")).unwrap();
    churn(&t.src, 2);
    let (v, e) = json_run(&["run", "--json", "--at", &time_of(2), p(&pol)], 1);
    assert!(
        e.contains("not wholly onto the cartridge loaded now"),
        "{e}"
    );
    // Snapshot 2 was on B: not built on (the level 2 due on it is a level
    // 0 instead).
    assert_eq!(v["dumped"]["level"], 0, "{v}");
    let why = v["dumped"]["why"].as_str().unwrap();
    assert!(
        why.contains("but snapshot 2's stream is on tape 2v1-"),
        "{why}"
    );
    let index = fs::read_to_string(t.dir.path().join("tape-state/.snapdump-policy.tape")).unwrap();
    assert!(
        index.contains("lost\t2v1-") && !index.contains("lost\t1v1-"),
        "{index}"
    );
}

#[test]
fn a_hand_dump_killed_after_it_went_on_to_another_cartridge_puts_it_in_doubt() {
    let t = paths();
    let (tape, shelf, pol) = a_then_b(&t, 18, "[0, 1, 2, 3, 4]", 5);
    // Appended to A by hand, filling it, going on over B from its start,
    // and killed there: no catalog row says anything happened.
    fs::write(t.src.join("big"), bytes(19, 600_000)).unwrap();
    killed(
        &[
            "dump",
            "-0",
            "--append",
            "-z",
            "0",
            "-b",
            "4",
            "--tape-capacity",
            "300K",
            "-f",
            p(&tape),
            "-f",
            p(&shelf.join("B.tap")),
            "-f",
            p(&shelf.join("C.tap")),
            "--catalog",
            p(&t.cat),
            p(&t.src),
        ],
        "dump-data:3",
    );
    let b = fs::read(shelf.join("B.tap")).unwrap();
    assert!(
        b.len() > 8 && b[..4] == 128u32.to_le_bytes(),
        "B was not begun again"
    );
    fs::remove_file(t.src.join("big")).unwrap();
    churn(&t.src, 2);
    let (v, e) = json_run(&["run", "--json", "--at", &time_of(2), p(&pol)], 1);
    assert!(e.contains("goes on past this cartridge"), "{e}");
    assert_eq!(v["dumped"]["level"], 0, "{v}");
    let index = fs::read_to_string(t.dir.path().join("tape-state/.snapdump-policy.tape")).unwrap();
    assert!(
        index.contains("lost\t2v1-") && !index.contains("lost\t1v1-"),
        "{index}"
    );
}

#[test]
fn an_incoming_stream_lost_or_damaged_before_the_volume_took_it_is_said_and_forgotten() {
    for damage in ["gone", "flipped"] {
        let t = paths();
        fs::write(t.src.join("base"), bytes(20, 120_000)).unwrap();
        let vol = t.dir.path().join("home.vol");
        let pol = policy(
            &t,
            "vol",
            &format!("volume = \"{}\"", vol.display()),
            "[schedule]\nevery = \"1d\"\nlevels = [0, 1, 2, 3, 4, 5, 6, 7]\n\n[keep]\nlast = 2\n",
        );
        let mut trees = BTreeMap::new();
        for day in 0..2u64 {
            churn(&t.src, day);
            trees.insert(day + 1, snapshot_tree(&t.src));
            json_run(&["run", "--json", "--at", &time_of(day), p(&pol)], 0);
        }
        // Day 2's run is killed once the catalog took its dump, before the
        // volume did; then the incoming stream is lost or damaged.
        churn(&t.src, 2);
        killed(
            &["run", "--json", "--at", &time_of(2), p(&pol)],
            "policy-dumped:1",
        );
        let incoming = t.dir.path().join("vol-state/incoming.000003.sdump");
        assert!(incoming.exists());
        if damage == "gone" {
            fs::remove_file(&incoming).unwrap();
        } else {
            let mut b = fs::read(&incoming).unwrap();
            let at = b.len() / 2;
            b[at] ^= 0x40;
            fs::write(&incoming, &b).unwrap();
        }
        let (v, e) = json_run(&["run", "--json", "--at", &time_of(2), p(&pol)], 1);
        let said = if damage == "gone" {
            "is gone before the volume"
        } else {
            "is damaged"
        };
        assert!(
            e.contains("snapshot 3's stream") && e.contains(said),
            "{damage}: {e}"
        );
        if damage == "flipped" {
            assert!(t
                .dir
                .path()
                .join("vol-state/incoming.000003.sdump.damaged")
                .exists());
        }
        // Forgotten: not kept, nothing pinned for it; the day's dump is
        // made again, and it and the one before extract exactly.
        assert!(
            !v.to_string().contains("outside the policy"),
            "{damage}: {v}"
        );
        trees.insert(4, snapshot_tree(&t.src));
        assert_eq!(v["dumped"]["snapshot"], 4, "{damage}: {v}");
        let ids = volume_ids(&vol);
        assert_eq!(
            ids.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 4],
            "{damage}"
        );
        for (id, vid) in &ids {
            let x = t.dir.path().join(format!("x{id}"));
            let (c, _, e) = run_s(&[
                "volume",
                "extract",
                &format!("{}@{vid}", vol.display()),
                p(&x),
            ]);
            assert_eq!(c, 0, "{e}");
            assert_tree_is(&trees[id], &x, &format!("{damage}: snapshot {id}"));
        }
        churn(&t.src, 3);
        json_run(&["run", "--json", "--at", &time_of(3), p(&pol)], 0);
    }
}

#[test]
fn a_prune_the_volume_refuses_says_it_was_pruning_and_the_next_run_prunes_again() {
    let t = paths();
    fs::write(t.src.join("base"), bytes(21, 40_000)).unwrap();
    let vol = t.dir.path().join("home.vol");
    let pol = policy(
        &t,
        "vol",
        &format!("volume = \"{}\"", vol.display()),
        "[schedule]\nevery = \"1d\"\nlevels = [0]\n\n[keep]\nlast = 2\n",
    );
    for day in 0..2u64 {
        churn(&t.src, day);
        json_run(&["run", "--json", "--at", &time_of(day), p(&pol)], 0);
    }
    set_keep(&pol, 1);
    // The volume made immutable (even root cannot write it), undone
    // whatever the test's end.
    let chattr = |flag: &str| {
        std::process::Command::new("chattr")
            .args([flag, p(&vol)])
            .status()
            .is_ok_and(|s| s.success())
    };
    struct Undo<'a>(&'a Path);
    impl Drop for Undo<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .args(["-i", p(self.0)])
                .status();
        }
    }
    if !chattr("+i") {
        eprintln!("chattr +i is not supported here; skipped");
        return;
    }
    let _undo = Undo(&vol);
    let (c, _, e) = run_s(&["run", "--at", &time_of(1), p(&pol)]);
    assert_eq!(c, 2, "{e}");
    assert!(
        e.contains("pruning snapshot 1 could not delete it from the volume"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(chattr("-i"));
    let (v, _) = json_run(&["run", "--json", "--at", &time_of(1), p(&pol)], 0);
    assert_eq!(v["pruned"][0]["snapshot"], 1, "{v}");
    assert_eq!(
        volume_ids(&vol).keys().copied().collect::<Vec<_>>(),
        vec![2]
    );
}
