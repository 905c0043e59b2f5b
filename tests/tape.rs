//! Dumps on virtual tapes (SIMH .tap files) through the real binary: dumps
//! spanning several volumes (given with several -f, or changed by a
//! --new-volume command, with a wrong volume offered once), two dumps on one
//! tape selected with --file-number, and every restore compared exactly.

mod common;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};

/// A source with enough data to fill several small tapes.
fn source(t: &Paths) {
    build_fidelity_tree(&t.src);
    fs::write(t.src.join("bulk"), bytes(31, 3 << 20)).unwrap();
}

fn tape(t: &Paths, name: &str) -> PathBuf {
    t.dir.path().join(name)
}

fn args<'a>(base: &[&'a str], tapes: &'a [PathBuf]) -> Vec<&'a str> {
    let mut v = base.to_vec();
    for t in tapes {
        v.extend(["-f", p(t)]);
    }
    v
}

/// The volume number recorded in a virtual tape's first record.
fn volume_of(path: &Path) -> u32 {
    let b = fs::read(path).unwrap();
    assert_eq!(
        &b[4..12],
        b"SDVOLUME",
        "{} starts with a volume header",
        path.display()
    );
    u32::from_le_bytes(b[4 + 12..4 + 16].try_into().unwrap())
}

#[test]
fn a_dump_spans_three_tapes_given_with_several_f() {
    let t = paths();
    source(&t);
    let tapes: Vec<PathBuf> = (1..=5).map(|i| tape(&t, &format!("t{i}.tap"))).collect();
    let a = args(
        &[
            "dump",
            "-0",
            "--catalog",
            p(&t.cat),
            "--tape-capacity",
            "1M",
            "-b",
            "64",
        ],
        &tapes,
    );
    let mut a = a;
    a.push(p(&t.src));
    let (c, _, e) = run_s(&a);
    assert_eq!(c, 0, "{e}");
    let used: Vec<PathBuf> = tapes.iter().filter(|t| t.exists()).cloned().collect();
    assert!(
        used.len() >= 3,
        "the dump should need 3 or more 1 MiB tapes"
    );
    for (i, u) in used.iter().enumerate() {
        assert_eq!(volume_of(u), i as u32 + 1);
        assert!(
            fs::metadata(u).unwrap().len() <= 1 << 20,
            "a volume exceeds the capacity"
        );
    }
    let (c, _, e) = run_s(&args(&["verify"], &used));
    assert_eq!(c, 0, "{e}");
    let (c, _, e) = run_s(&args(&["restore", "-r", "--target", p(&t.out)], &used));
    assert_eq!(c, 0, "{e}");
    assert_same_tree(&t.src, &t.out);
    // One file from the volume set.
    let x = t.dir.path().join("x");
    let (c, _, e) = run_s(&args(
        &["restore", "-x", "--target", p(&x), "hello.txt"],
        &used,
    ));
    assert_eq!(c, 0, "{e}");
    assert_eq!(fs::read(x.join("hello.txt")).unwrap(), b"hello world\n");
    // A missing volume in the list is named.
    let skipped = vec![used[0].clone(), used[2].clone()];
    let (c, _, e) = run_s(&args(
        &["restore", "-r", "--target", p(&t.dir.path().join("bad"))],
        &skipped,
    ));
    assert_eq!(c, 2);
    assert!(
        e.contains("volume 3") && e.contains("volume 2 is needed"),
        "{e}"
    );
    // Volume 2 alone is not a place to start.
    let (c, _, e) = run_s(&["restore", "-t", "-f", p(&used[1])]);
    assert_eq!(c, 2);
    assert!(e.contains("starts with volume 1"), "{e}");
}

#[test]
fn new_volume_commands_change_tapes_and_a_wrong_one_gets_another_chance() {
    let t = paths();
    source(&t);
    let dir = t.dir.path();
    let drive = tape(&t, "drive.tap");
    // The "operator": stores the full tape as volN.tap; the drive is then
    // empty and the dump creates a fresh tape in it.
    let unload = format!(
        "mv {} {}/vol$((SNAPDUMP_VOLUME - 1)).tap",
        p(&drive),
        p(dir)
    );
    let (c, _, e) = run_s(&[
        "dump",
        "-0",
        "-f",
        p(&drive),
        "--tape-capacity",
        "1M",
        "-b",
        "32",
        "--new-volume",
        &unload,
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    assert_eq!(c, 0, "{e}");
    let n = (1..10)
        .filter(|i| dir.join(format!("vol{i}.tap")).exists())
        .count()
        + 1;
    assert!(n >= 3, "only {n} volumes");
    fs::rename(&drive, dir.join(format!("vol{n}.tap"))).unwrap();
    // Restore: the operator loads the volume asked for, except that the
    // first time volume 2 is asked for, volume 3 is loaded by mistake.
    fs::copy(dir.join("vol1.tap"), &drive).unwrap();
    let load = format!(
        "cd {d}; if [ $SNAPDUMP_VOLUME = 2 ] && [ ! -e mistake ]; then touch mistake; cp vol3.tap {t}; else cp vol$SNAPDUMP_VOLUME.tap {t}; fi",
        d = p(dir),
        t = p(&drive)
    );
    let (c, _, e) = run_s(&[
        "restore",
        "-r",
        "-f",
        p(&drive),
        "--new-volume",
        &load,
        "--target",
        p(&t.out),
    ]);
    assert_eq!(c, 0, "{e}");
    assert!(
        e.contains("is volume 3") && e.contains("volume 2 is needed"),
        "{e}"
    );
    assert_same_tree(&t.src, &t.out);
    // Without a command or a terminal, the next volume is asked for in
    // words, and nothing is guessed.
    fs::copy(dir.join("vol1.tap"), &drive).unwrap();
    let (c, _, e) = run_s(&[
        "restore",
        "-r",
        "-f",
        p(&drive),
        "--target",
        p(&dir.join("nope")),
    ]);
    assert_eq!(c, 2);
    assert!(
        e.contains("volume 2 is needed") && e.contains("--new-volume"),
        "{e}"
    );
}

#[test]
fn two_dumps_on_one_tape_are_selected_by_file_number() {
    let t = paths();
    source(&t);
    let tp = tape(&t, "both.tap");
    let dump = |level: &str, extra: &[&str]| {
        let mut a = vec!["dump", level, "-f", p(&tp), "--catalog", p(&t.cat)];
        a.extend(extra);
        a.push(p(&t.src));
        let (c, _, e) = run_s(&a);
        assert_eq!(c, 0, "{e}");
    };
    dump("-0", &[]);
    let first = snapshot_tree(&t.src);
    fs::write(t.src.join("hello.txt"), b"changed after the level 0\n").unwrap();
    fs::remove_file(t.src.join("empty")).unwrap();
    dump("-1", &["--append"]);
    let restore = |n: &str, target: &Path| {
        run_s(&[
            "restore",
            "-r",
            "-f",
            p(&tp),
            "--file-number",
            n,
            "--target",
            p(target),
        ])
    };
    let (c, _, e) = restore("1", &t.out);
    assert_eq!(c, 0, "{e}");
    let got = snapshot_tree(&t.out);
    for (k, v) in &first {
        if k != b"." {
            assert_eq!(&got[k], v, "{}", String::from_utf8_lossy(k));
        }
    }
    let (c, _, e) = restore("2", &t.out);
    assert_eq!(c, 0, "{e}");
    assert_same_tree(&t.src, &t.out);
    let (c, _, e) = restore("3", &t.dir.path().join("none"));
    assert_eq!(c, 2);
    assert!(
        e.contains("holds 2 dump(s)") && e.contains("no dump number 3"),
        "{e}"
    );
    // A dump without --append starts the tape over.
    dump("-0", &[]);
    let (c, _, _) = restore("2", &t.dir.path().join("gone"));
    assert_eq!(c, 2, "the appended dump was overwritten");
}

#[test]
fn a_dump_to_files_is_cut_into_volumes_of_a_given_size() {
    let t = paths();
    source(&t);
    let vols: Vec<PathBuf> = (1..=6)
        .map(|i| t.dir.path().join(format!("part{i}.sdump")))
        .collect();
    let mut a = args(
        &["dump", "-0", "--volume-size", "1M", "--catalog", p(&t.cat)],
        &vols,
    );
    a.push(p(&t.src));
    let (c, _, e) = run_s(&a);
    assert_eq!(c, 0, "{e}");
    let used: Vec<PathBuf> = vols.iter().filter(|v| v.exists()).cloned().collect();
    assert!(used.len() >= 3, "{} volumes", used.len());
    for u in &used {
        assert!(fs::metadata(u).unwrap().len() <= 1 << 20);
    }
    let (c, _, e) = run_s(&args(&["restore", "-r", "--target", p(&t.out)], &used));
    assert_eq!(c, 0, "{e}");
    assert_same_tree(&t.src, &t.out);
    // Too few volumes: the next one is asked for by number.
    let (c, _, e) = run_s(&args(
        &["restore", "-r", "--target", p(&t.dir.path().join("short"))],
        &used[..used.len() - 1],
    ));
    assert_eq!(c, 2);
    assert!(
        e.contains(&format!("volume {} is needed", used.len())),
        "{e}"
    );
}

#[test]
fn damaged_tape_framing_is_skipped_and_the_loss_named() {
    let t = paths();
    for i in 0..6 {
        fs::write(t.src.join(format!("f{i}")), bytes(200 + i, 300_000)).unwrap();
    }
    let tp = tape(&t, "d.tap");
    let (c, e) = dump_raw(&tp, &t.cat, &t.src, &["-b", "16"]);
    assert_eq!(c, 0, "{e}");
    // Break the length word of a tape record in the middle of the data.
    let mut b = fs::read(&tp).unwrap();
    let mut at = 0usize;
    let mut starts = Vec::new();
    while at + 4 <= b.len() {
        let n = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        if n == 0 {
            at += 4;
            continue;
        }
        starts.push(at);
        at += 4 + n + n % 2 + 4;
    }
    let victim = starts[starts.len() / 2];
    b[victim + 2] ^= 0x40;
    fs::write(&tp, &b).unwrap();
    let (c, _, e) = run_s(&["verify", "-f", p(&tp)]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("skipped") && e.contains("damaged"), "{e}");
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&tp), "--target", p(&t.out)]);
    assert_eq!(c, 1, "{e}");
    let mut named = 0;
    for i in 0..6 {
        let f = format!("f{i}");
        let got = fs::read(t.out.join(&f)).unwrap();
        if e.contains(&format!("warning: {f}: lost bytes")) {
            named += 1;
        } else {
            assert_eq!(
                got,
                bytes(200 + i, 300_000),
                "{f} differs but is not named: {e}"
            );
        }
    }
    assert!((1..=2).contains(&named), "{e}");
}

/// A dump whose last record reaches the early-warning point ends on that
/// volume: its filemark fits there, and no next cartridge is asked for
/// only to hold it (a policy then found a cartridge that begins with a
/// filemark and refused it as not snapdump's).
#[test]
fn a_dump_ending_at_the_early_warning_point_asks_for_no_next_volume() {
    let t = paths();
    fs::write(t.src.join("f"), bytes(40, 60_000)).unwrap();
    // The stream's length, uncompressed so that every dump of this tree
    // has it.
    let (c, out, e) = run_s(&[
        "dump",
        "-0",
        "-z",
        "0",
        "--json",
        "-f",
        p(&t.stream),
        "--catalog",
        p(&t.dir.path().join("c0")),
        p(&t.src),
    ]);
    assert_eq!(c, 0, "{e}");
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let len = v["stream_bytes"].as_u64().unwrap();
    // Records of 1 KiB, each framed by two 4-byte lengths (and a pad byte
    // after an odd one), after a 136-byte volume header; the early-warning
    // point is the capacity less 2 KiB (capacity/50 is less): set it to
    // where the last record ends.
    let n = len.div_ceil(1024);
    let last = len - 1024 * (n - 1);
    let end = 136 + 1032 * (n - 1) + 8 + last + last % 2;
    let capacity = end + 2048;
    assert!(capacity / 50 < 2048, "{capacity}");
    let tap = t.dir.path().join("t.tap");
    let (c, _, e) = run_s(&[
        "dump",
        "-0",
        "-z",
        "0",
        "-b",
        "1",
        "--tape-capacity",
        &capacity.to_string(),
        "--new-volume",
        "exit 1",
        "-f",
        p(&tap),
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    assert_eq!(c, 0, "{e}");
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&tap), "--target", p(&t.out)]);
    assert_eq!(c, 0, "{e}");
    assert_tree_is(&snapshot_tree(&t.src), &t.out, "the dump on one volume");
}
