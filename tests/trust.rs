//! No restore path may lose data or call wrong data good: damaged and
//! refused increments leave the target exactly at its snapshot; entries a
//! user put into a target are kept or refused by name; pipes, FIFOs and
//! /dev/stdin read like `-f -`; padding after a stream is not damage;
//! spliced streams are caught; concurrent restores cannot corrupt a
//! target; exit statuses are honest; non-root users can apply increments
//! over read-only directories.
//!
//! Each test here failed on the build before these fixes (run them against
//! another binary with `SNAPDUMP_TEST_BIN=/path/to/snapdump`).

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

fn write(p: &Path, d: &[u8]) {
    std::fs::write(p, d).unwrap();
}

fn dump(level: u8, out: &Path, cat: &Path, src: &Path, extra: &[&str]) {
    let lvl = format!("-{level}");
    let mut a = vec!["dump", &lvl, "-f", p(out), "--catalog", p(cat)];
    a.extend_from_slice(extra);
    a.push(p(src));
    let (c, _, e) = run_s(&a);
    assert_eq!(c, 0, "dump {level}: {e}");
}

fn restore(stream: &Path, target: &Path, extra: &[&str]) -> (i32, String) {
    let mut a = vec!["restore", "-r", "-f", p(stream), "--target", p(target)];
    a.extend_from_slice(extra);
    let (c, _, e) = run_s(&a);
    (c, e)
}

/// Overwrites `n` bytes of `f` at `at` with pseudo-random data.
fn overwrite(f: &Path, at: u64, n: usize, seed: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(f).unwrap();
    file.write_all_at(&bytes(seed, n), at).unwrap();
}

/// The target holds no trace of an apply and is not locked.
fn assert_settled(target: &Path) {
    let st = target.join(".snapdump-restore");
    assert!(!st.join("apply").exists(), "an apply directory was left");
    assert!(
        !st.join("incomplete").exists(),
        "an incomplete marker was left"
    );
    let f = std::fs::File::open(st.join("lock")).unwrap();
    use std::os::fd::AsRawFd;
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, 0, "the target is still locked");
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
}

#[test]
fn a_damaged_or_truncated_increment_leaves_the_target_at_its_snapshot() {
    let t = paths();
    let s = &t.src;
    write(&s.join("f"), &bytes(1, 3_000_000));
    std::fs::create_dir(s.join("d")).unwrap();
    for i in 0..20 {
        write(&s.join(format!("d/small{i}")), &bytes(100 + i, 5000));
    }
    let s0 = t.dir.path().join("s0");
    dump(0, &s0, &t.cat, s, &[]);
    let snap1 = snapshot_tree(s);
    // The issue's case: the first 2 MB of the big file rewritten (it keeps
    // its last MB in place, so its changed blocks go into the target's
    // own file), plus small files rewritten, one deleted, one new.
    overwrite(&s.join("f"), 0, 2_000_000, 2);
    for i in 0..5 {
        write(&s.join(format!("d/small{i}")), &bytes(200 + i, 5000));
    }
    std::fs::remove_file(s.join("d/small9")).unwrap();
    write(&s.join("d/new"), b"new file");
    let s1 = t.dir.path().join("s1");
    dump(1, &s1, &t.cat, s, &["-z", "0"]);
    let snap2 = snapshot_tree(s);
    // Another increment on the same base (level 1 again: base snapshot 1).
    overwrite(&s.join("f"), 2_500_000, 100_000, 3);
    let s1b = t.dir.path().join("s1b");
    dump(1, &s1b, &t.cat, s, &[]);
    let snap3 = snapshot_tree(s);

    let target = t.dir.path().join("target");
    assert_eq!(restore(&s0, &target, &[]).0, 0);
    let good = std::fs::read(&s1).unwrap();
    let recs = stream_records(&good);
    let mid = recs[recs.len() / 2].0;
    let bad = t.dir.path().join("bad");
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped byte in the middle", {
            let mut b = good.clone();
            b[good.len() / 2] ^= 1;
            b
        }),
        ("64 KiB zeroed", {
            let mut b = good.clone();
            b[mid..mid + 65536].fill(0);
            b
        }),
        ("truncated at 60%", good[..good.len() * 6 / 10].to_vec()),
        ("the end record cut off", good[..good.len() - 128].to_vec()),
        ("a flipped byte in the relocation table", {
            let mut b = good.clone();
            let reloc = recs.iter().rev().find(|r| r.2 == 5).unwrap().0;
            b[reloc + 50] ^= 0x40;
            b
        }),
    ];
    for (what, b) in &damages {
        write(&bad, b);
        let (c, e) = restore(&bad, &target, &[]);
        assert_eq!(c, 2, "{what}: {e}");
        assert!(
            e.contains("not applied") && e.contains("unchanged at snapshot 1"),
            "{what}: the message must say the target is unchanged: {e}"
        );
        assert_tree_is(&snap1, &target, what);
        assert_settled(&target);
    }
    // A pipe carrying the damaged stream is refused the same way.
    let mut child = bin()
        .args(["restore", "-r", "-f", "-", "--target", p(&target)])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut w = child.stdin.take().unwrap();
        let _ = w.write_all(&damages[0].1);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_tree_is(&snap1, &target, "damaged stream on a pipe");
    // Another valid increment with the same base applies, with --no-wait
    // (nothing holds the lock).
    let (c, e) = restore(&s1b, &target, &["--no-wait"]);
    assert_eq!(c, 0, "{e}");
    assert_tree_is(&snap3, &target, "the other increment");
    // And the good copy of the first applies onto a target at snapshot 1.
    let t2 = t.dir.path().join("target2");
    assert_eq!(restore(&s0, &t2, &[]).0, 0);
    write(&bad, &damages[1].1);
    assert_eq!(restore(&bad, &t2, &[]).0, 2);
    let (c, e) = restore(&s1, &t2, &[]);
    assert_eq!(c, 0, "{e}");
    assert_tree_is(&snap2, &t2, "the good copy");
}

#[test]
fn entries_a_user_put_into_a_target_are_kept_or_refused_by_name() {
    let t = paths();
    let s = &t.src;
    std::fs::create_dir_all(s.join("a/b")).unwrap();
    std::fs::create_dir_all(s.join("c")).unwrap();
    write(&s.join("a/b/f"), b"one");
    write(&s.join("c/g"), b"two");
    write(&s.join("top"), &bytes(3, 50_000));
    write(&s.join("keepme"), &bytes(4, 50_000));
    let s0 = t.dir.path().join("s0");
    dump(0, &s0, &t.cat, s, &[]);
    // A level 0 with --force into a directory holding the user's files.
    let target = t.dir.path().join("target");
    std::fs::create_dir_all(target.join("mine")).unwrap();
    write(&target.join("mine/notes"), b"my notes");
    let (c, e) = restore(&s0, &target, &["--force"]);
    assert_eq!(c, 0, "{e}");
    // The next increment: c/ goes away, top changes, a/ gains a file.
    overwrite(&s.join("top"), 4096, 100, 5);
    std::fs::remove_dir_all(s.join("c")).unwrap();
    write(&s.join("a/new"), b"new");
    let s1 = t.dir.path().join("s1");
    dump(1, &s1, &t.cat, s, &[]);
    let snap2 = snapshot_tree(s);
    // Between increments the user adds files: one in a directory that
    // stays, one in a directory the increment removes.
    write(&target.join("a/b/userfile"), b"user data");
    std::fs::create_dir(target.join("c/userdir")).unwrap();
    write(&target.join("c/userdir/y"), b"user data too");
    let before = snapshot_tree(&target);
    let (c, e) = restore(&s1, &target, &[]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("c/userdir") && e.contains("--force"), "{e}");
    assert_tree_is(&before, &target, "refused increment");
    assert_settled(&target);
    // Out of the way, the increment applies and keeps the others.
    std::fs::rename(target.join("c/userdir"), t.dir.path().join("saved")).unwrap();
    let (c, e) = restore(&s1, &target, &[]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(
        std::fs::read(target.join("mine/notes")).unwrap(),
        b"my notes"
    );
    assert_eq!(
        std::fs::read(target.join("a/b/userfile")).unwrap(),
        b"user data"
    );
    std::fs::remove_dir_all(target.join("mine")).unwrap();
    std::fs::remove_file(target.join("a/b/userfile")).unwrap();
    // Apart from the directories the user's entries were removed from
    // again (their mtimes changed), the target is the snapshot.
    let mut want = snap2.clone();
    want.remove(&b"a/b"[..]);
    let mut got = snapshot_tree(&target);
    got.remove(&b"a/b"[..]);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, w) in &want {
        assert_eq!(&got[k], w, "{}", String::from_utf8_lossy(k));
    }

    // With --force, what is in the way is replaced, each named.
    let t = paths();
    let s = &t.src;
    std::fs::create_dir_all(s.join("c")).unwrap();
    write(&s.join("c/g"), b"two");
    write(&s.join("x"), &bytes(7, 40_000));
    dump(0, &t.stream, &t.cat, s, &[]);
    std::fs::remove_dir_all(s.join("c")).unwrap();
    write(&s.join("c"), b"now a file");
    let s1 = t.dir.path().join("s1");
    dump(1, &s1, &t.cat, s, &[]);
    let snap2 = snapshot_tree(s);
    assert_eq!(restore(&t.stream, &t.out, &[]).0, 0);
    write(&t.out.join("c/mine"), b"mine");
    let (c, e) = restore(&s1, &t.out, &["--force"]);
    assert_eq!(c, 1, "{e}");
    assert!(e.contains("c/mine") && e.contains("--force"), "{e}");
    assert_tree_is(&snap2, &t.out, "forced");

    // A file of the chain changed in the target: refused, even with
    // --force, when the increment builds on it; named either way.
    let t = paths();
    let s = &t.src;
    write(&s.join("big"), &bytes(8, 200_000));
    write(&s.join("gone"), b"deleted by the increment");
    dump(0, &t.stream, &t.cat, s, &[]);
    overwrite(&s.join("big"), 8192, 10, 9);
    std::fs::remove_file(s.join("gone")).unwrap();
    let s1 = t.dir.path().join("s1");
    dump(1, &s1, &t.cat, s, &[]);
    let snap2 = snapshot_tree(s);
    assert_eq!(restore(&t.stream, &t.out, &[]).0, 0);
    overwrite(&t.out.join("big"), 100_000, 10, 10);
    let before = snapshot_tree(&t.out);
    for force in [&[][..], &["--force"][..]] {
        let (c, e) = restore(&s1, &t.out, force);
        assert_eq!(c, 2, "{e}");
        assert!(
            e.contains("big changed") && e.contains("builds on it"),
            "{e}"
        );
        assert_tree_is(&before, &t.out, "changed source file");
    }
    // A changed file the increment deletes: refused without --force.
    let t3 = t.dir.path().join("t3");
    assert_eq!(restore(&t.stream, &t3, &[]).0, 0);
    write(&t3.join("gone"), b"edited by the user, and longer");
    let (c, e) = restore(&s1, &t3, &[]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("gone changed"), "{e}");
    let (c, e) = restore(&s1, &t3, &["--force"]);
    assert_eq!(c, 1, "{e}");
    assert!(e.contains("gone"), "{e}");
    assert_tree_is(&snap2, &t3, "forced over a changed file");
}

/// Writes `data` into `w` in pieces, with pauses: a slow writer.
fn slowly(mut w: impl std::io::Write, data: &[u8]) {
    for chunk in data.chunks(data.len() / 7 + 1) {
        let _ = w.write_all(chunk);
        let _ = w.flush();
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
}

#[test]
fn pipes_fifos_stdin_and_process_substitution_read_like_dash() {
    let t = paths();
    build_change_tree(&t.src);
    dump(0, &t.stream, &t.cat, &t.src, &[]);
    let data = std::fs::read(&t.stream).unwrap();
    let (_, listing, _) = run_s(&["restore", "-t", "-f", p(&t.stream)]);
    // A FIFO whose writer starts after the reader, and writes slowly.
    let fifo = t.dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for args in [
        vec!["restore", "-t", "-f", p(&fifo)],
        vec!["verify", "-f", p(&fifo)],
        vec!["restore", "-r", "-f", p(&fifo), "--target", p(&t.out)],
    ] {
        let child = bin()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        slowly(f, &data);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if args[1] == "-t" {
            assert_eq!(out.stdout, listing, "a listing from a FIFO");
        }
    }
    assert_same_tree(&t.src, &t.out);
    // /dev/stdin as a pipe, and process substitution (/dev/fd/N).
    for args in [
        vec!["verify", "-f", "/dev/stdin"],
        vec!["restore", "-t", "-f", "/dev/stdin"],
    ] {
        let mut child = bin()
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let w = child.stdin.take().unwrap();
        let d = data.clone();
        let writer = std::thread::spawn(move || slowly(w, &d));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sub = format!(
        "'{}' restore -t -f <(cat '{}')",
        bin_path().to_string_lossy(),
        p(&t.stream)
    );
    let out = Command::new("bash").args(["-c", &sub]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, listing);
}

#[test]
fn a_stream_followed_by_padding_reads_as_a_whole_stream() {
    let t = paths();
    build_change_tree(&t.src);
    dump(0, &t.stream, &t.cat, &t.src, &[]);
    let data = std::fs::read(&t.stream).unwrap();
    let padded = t.dir.path().join("padded");
    let mut b = data.clone();
    b.extend(std::iter::repeat_n(0u8, 4096 + 1234));
    write(&padded, &b);
    assert_eq!(run_s(&["verify", "-f", p(&padded)]).0, 0);
    let (c, e) = restore(&padded, &t.out, &[]);
    assert_eq!(c, 0, "{e}");
    assert_same_tree(&t.src, &t.out);
    let (c, _, e) = run_s(&["restore", "-t", "-f", p(&padded)]);
    assert_eq!(c, 0, "{e}");
    let x = t.dir.path().join("x");
    let (c, _, e) = run_s(&["restore", "-x", "-f", p(&padded), "--target", p(&x), "big"]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(std::fs::read(x.join("big")).unwrap(), bytes(1, 400_000));
    // Bytes after the stream that are not zeros: a warning, exit 1, and
    // the stream itself restores.
    let trailing = t.dir.path().join("trailing");
    let mut b = data.clone();
    b.extend_from_slice(&[0; 100]);
    b.extend_from_slice(b"not a stream\n");
    write(&trailing, &b);
    let (c, _, e) = run_s(&["verify", "-f", p(&trailing)]);
    assert_eq!(c, 1, "{e}");
    assert!(e.contains("not a snapdump stream"), "{e}");
    let out2 = t.dir.path().join("out2");
    let (c, e) = restore(&trailing, &out2, &[]);
    assert_eq!(c, 1, "{e}");
    assert_same_tree(&t.src, &out2);
    // A stream followed by another's end record: the stream is restored,
    // the rest named (exit 1, not 2 after a commit).
    let tail = t.dir.path().join("tail");
    let mut b = data.clone();
    b.extend_from_slice(&data[data.len() - 128..]);
    write(&tail, &b);
    let out3 = t.dir.path().join("out3");
    let (c, e) = restore(&tail, &out3, &[]);
    assert_eq!(c, 1, "{e}");
    assert!(e.contains("goes on at byte"), "{e}");
    assert_same_tree(&t.src, &out3);
    let (c, _, e) = run_s(&[
        "restore",
        "-x",
        "-f",
        p(&trailing),
        "--target",
        p(&t.dir.path().join("x2")),
        "big",
    ]);
    assert_eq!(c, 0, "{e}");
    // Through a pipe, too.
    let out = Command::new("sh")
        .args([
            "-c",
            &format!(
                "cat '{}' | '{}' verify -f -",
                p(&padded),
                bin_path().to_string_lossy()
            ),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_block_device_is_a_medium_dumps_and_restores_round_trip() {
    if !is_root() {
        eprintln!("skipped: loop devices need root");
        return;
    }
    let t = paths();
    build_change_tree(&t.src);
    let img = t.dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    // Old contents after where the stream will end: not zeros.
    overwrite(&img, 4 << 20, 1 << 20, 77);
    let out = Command::new("losetup")
        .args(["--find", "--show", p(&img)])
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "skipped: no loop device ({})",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _d = Detach(dev.clone());
    dump(0, Path::new(&dev), &t.cat, &t.src, &[]);
    assert_eq!(run_s(&["verify", "-f", &dev]).0, 0);
    let (c, e) = restore(Path::new(&dev), &t.out, &[]);
    assert_eq!(c, 0, "{e}");
    assert_same_tree(&t.src, &t.out);
    let (c, _, e) = run_s(&["restore", "-t", "-f", &dev]);
    assert_eq!(c, 0, "{e}");
}

/// Record boundaries of a stream: (offset, length).
fn records(b: &[u8]) -> Vec<(usize, usize)> {
    stream_records(b).into_iter().map(|r| (r.0, r.1)).collect()
}

#[test]
fn a_record_aligned_splice_of_two_streams_is_caught_by_every_reader() {
    let t = paths();
    write(&t.src.join("f"), &bytes(1, 600_000));
    let a = t.dir.path().join("a");
    dump(0, &a, &t.cat, &t.src, &["-z", "0"]);
    // Same size, same layout, other data: records line up one to one.
    write(&t.src.join("f"), &bytes(2, 600_000));
    let b = t.dir.path().join("b");
    dump(0, &b, &t.cat, &t.src, &["-z", "0"]);
    let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let (ra, rb) = (records(&ba), records(&bb));
    assert_eq!(ra.len(), rb.len());
    // A's front and end, B's data records in between.
    let data: Vec<usize> = stream_records(&ba)
        .iter()
        .enumerate()
        .filter(|(_, r)| r.2 == 4)
        .map(|(i, _)| i)
        .collect();
    let mut spliced = Vec::new();
    for i in 0..ra.len() {
        let (src, r) = if data.contains(&i) {
            (&bb, rb[i])
        } else {
            (&ba, ra[i])
        };
        assert_eq!(ra[i].1, rb[i].1, "records of equal length");
        spliced.extend_from_slice(&src[r.0..r.0 + r.1]);
    }
    let sp = t.dir.path().join("spliced");
    write(&sp, &spliced);
    let want_a = bytes(1, 600_000);
    let (c, _, e) = run_s(&["verify", "-f", p(&sp)]);
    assert_eq!(c, 2, "verify: {e}");
    let (c, e) = restore(&sp, &t.out, &[]);
    assert_ne!(c, 0, "restore -r accepted a spliced stream: {e}");
    let got = std::fs::read(t.out.join("f")).unwrap_or_default();
    assert!(got != bytes(2, 600_000), "B's data restored under A's name");
    if c == 1 {
        assert!(e.contains("lost bytes"), "{e}");
    }
    let x = t.dir.path().join("x");
    let (c, _, e) = run_s(&["restore", "-x", "-f", p(&sp), "--target", p(&x), "f"]);
    assert_eq!(c, 2, "restore -x: {e}");
    assert!(std::fs::read(x.join("f")).map_or(true, |g| g == want_a));
    let (c, _, e) = run_s(&["restore", "-C", "-f", p(&sp), "--target", p(&t.src)]);
    assert_eq!(c, 2, "restore -C: {e}");
}

#[test]
fn concurrent_restores_into_one_target_never_leave_it_incomplete() {
    let t = paths();
    build_change_tree(&t.src);
    for i in 0..30 {
        write(&t.src.join(format!("f{i}")), &bytes(i, 30_000));
    }
    dump(0, &t.stream, &t.cat, &t.src, &[]);
    for round in 0..8 {
        let target = t.dir.path().join(format!("t{round}"));
        let spawn = || {
            bin()
                .args(["restore", "-r", "-f", p(&t.stream), "--target", p(&target)])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let codes = [oa.status.code(), ob.status.code()];
        assert!(
            codes.contains(&Some(0)),
            "round {round}: {codes:?}: {} / {}",
            String::from_utf8_lossy(&oa.stderr),
            String::from_utf8_lossy(&ob.stderr)
        );
        for o in [&oa, &ob] {
            if o.status.code() != Some(0) {
                let e = String::from_utf8_lossy(&o.stderr);
                assert!(e.contains("not empty"), "round {round}: {e}");
            }
        }
        assert!(
            !target.join(".snapdump-restore/incomplete").exists(),
            "round {round}: a finished restore is marked incomplete"
        );
        assert_same_tree(&t.src, &target);
    }
}

#[test]
fn restore_i_and_failed_restores_report_honestly() {
    let t = paths();
    build_change_tree(&t.src);
    dump(0, &t.stream, &t.cat, &t.src, &[]);
    let shell = |script: &str, target: &Path| {
        let mut child = bin()
            .args(["restore", "-i", "-f", p(&t.stream), "--target", p(target)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let x = t.dir.path().join("x");
    assert_eq!(shell("add big\nextract\n", &x).0, Some(0));
    assert_eq!(shell("add missing\n", &t.dir.path().join("y")).0, Some(1));
    // An extract that fails (the entry exists in the target): exit 2.
    let (c, out) = shell("add big\nextract\n", &x);
    assert_eq!(c, Some(2), "{out}");
    // A target that increments are applied to is refused, as -x does.
    assert_eq!(restore(&t.stream, &t.out, &[]).0, 0);
    let (c, out) = shell("add a\nextract\n", &t.out);
    assert_eq!(c, Some(2), "{out}");
    assert!(out.contains("increments are applied to"), "{out}");
    // A failed restore that created nothing says so.
    let junk = t.dir.path().join("junk");
    let mut b = std::fs::read(&t.stream).unwrap();
    let meta = stream_records(&b).iter().find(|r| r.2 == 2).unwrap().0;
    b[meta + 45] ^= 1;
    write(&junk, &b);
    let fresh = t.dir.path().join("fresh");
    let (c, e) = restore(&junk, &fresh, &[]);
    assert_eq!(c, 2);
    assert!(e.contains("nothing was restored"), "{e}");
    assert!(!e.contains("rerun the same restore"), "{e}");
    // It left nothing behind that stops a good restore.
    let (c, e) = restore(&t.stream, &fresh, &[]);
    assert_eq!(c, 0, "{e}");
}

/// Runs the binary as nobody with `args`; (code, stderr).
fn as_nobody(args: &[&str]) -> (i32, String) {
    let o = run_as_nobody(args);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn chown_nobody(p: &Path) {
    let st = Command::new("chown")
        .args(["-R", "65534:65534", p.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn a_non_root_user_applies_increments_over_read_only_and_mode_000_directories() {
    if !is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("snapdump-nobody")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("z_ro/deeper")).unwrap();
    std::fs::create_dir_all(src.join("z_000")).unwrap();
    std::fs::create_dir_all(src.join("plain")).unwrap();
    write(&src.join("z_ro/inside"), &bytes(1, 40_000));
    write(&src.join("z_ro/deeper/f"), b"deep");
    write(&src.join("z_000/hidden"), &bytes(2, 40_000));
    write(&src.join("plain/a"), b"a");
    let ro_file = src.join("plain/readonly-file");
    write(&ro_file, &bytes(3, 40_000));
    let lock_down = |src: &Path| {
        std::fs::set_permissions(
            src.join("plain/readonly-file"),
            std::fs::Permissions::from_mode(0o444),
        )
        .unwrap();
        std::fs::set_permissions(
            src.join("z_ro/deeper"),
            std::fs::Permissions::from_mode(0o555),
        )
        .unwrap();
        std::fs::set_permissions(src.join("z_ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
        std::fs::set_permissions(src.join("z_000"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
    };
    let open_up = |src: &Path| {
        for d in ["z_ro", "z_ro/deeper", "z_000"] {
            std::fs::set_permissions(src.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(
            src.join("plain/readonly-file"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    };
    chown_nobody(&src);
    lock_down(&src);
    let cat = dir.path().join("cat");
    let s0 = dir.path().join("s0");
    let s1 = dir.path().join("s1");
    dump(0, &s0, &cat, &src, &[]);
    open_up(&src);
    overwrite(&src.join("z_ro/inside"), 8192, 100, 4);
    overwrite(&src.join("z_000/hidden"), 8192, 100, 5);
    overwrite(&src.join("plain/readonly-file"), 0, 100, 6);
    write(&src.join("z_ro/new"), b"new");
    std::fs::remove_file(src.join("z_ro/deeper/f")).unwrap();
    chown_nobody(&src);
    lock_down(&src);
    dump(1, &s1, &cat, &src, &[]);
    let snap2 = snapshot_tree(&src);
    for s in [&s0, &s1] {
        std::fs::set_permissions(s, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    chown_nobody(&target);
    let (c, e) = as_nobody(&["restore", "-r", "-f", p(&s0), "--target", p(&target)]);
    assert_eq!(c, 0, "level 0 as nobody: {e}");
    let (c, e) = as_nobody(&["restore", "-r", "-f", p(&s1), "--target", p(&target)]);
    assert_eq!(c, 0, "level 1 as nobody: {e}");
    assert_tree_is(&snap2, &target, "as nobody");
    // A damaged increment as nobody: refused, and the modes opened up to
    // read are back.
    let s2 = dir.path().join("s2");
    open_up(&src);
    overwrite(&src.join("z_000/hidden"), 0, 100, 7);
    lock_down(&src);
    dump(1, &s2, &cat, &src, &["-z", "0"]);
    let mut b = std::fs::read(&s2).unwrap();
    let n = b.len();
    b[n - 300] ^= 1;
    let bad = dir.path().join("bad");
    write(&bad, &b);
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (c, e) = as_nobody(&["restore", "-r", "-f", p(&bad), "--target", p(&target)]);
    assert_eq!(c, 2, "{e}");
    assert_tree_is(&snap2, &target, "refused as nobody");
    open_up(&target);
    open_up(&src);
}

#[test]
fn restore_finish_completes_a_checked_apply_and_undoes_an_unchecked_one() {
    let t = paths();
    build_change_tree(&t.src);
    dump(0, &t.stream, &t.cat, &t.src, &[]);
    let snap1 = snapshot_tree(&t.src);
    mutate_for_level_1(&t.src);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let s1 = t.dir.path().join("s1");
    dump(1, &s1, &t.cat, &t.src, &[]);
    let snap2 = snapshot_tree(&t.src);
    for (point, want) in [
        ("apply-data:1", &snap1),
        ("apply-spool:1", &snap2),
        ("apply-exchange:1", &snap2),
        ("apply-exchanged:1", &snap2),
    ] {
        let target = t.dir.path().join(point.replace(':', "-"));
        assert_eq!(restore(&t.stream, &target, &[]).0, 0);
        let o = bin()
            .args(["restore", "-r", "-f", p(&s1), "--target", p(&target)])
            .env("SNAPDUMP_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{point} was not reached");
        let (c, _, e) = run_s(&["restore", "--finish", "--target", p(&target)]);
        assert_eq!(c, 0, "{point}: {e}");
        assert!(!target.join(".snapdump-restore").exists());
        assert_tree_is(want, &target, point);
    }
}

#[test]
fn a_fifo_whose_writer_is_quick_is_read_once_and_never_waited_for_again() {
    let t = paths();
    std::fs::write(t.src.join("f"), b"small").unwrap();
    dump(0, &t.stream, &t.cat, &t.src, &[]);
    let data = std::fs::read(&t.stream).unwrap();
    let fifo = t.dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for round in 0..10 {
        // The writer opens first and finishes as soon as a reader exists:
        // all of its bytes sit in the pipe when the reader starts reading.
        let f2 = fifo.clone();
        let d = data.clone();
        let writer = std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(&f2).unwrap();
            use std::io::Write;
            let _ = w.write_all(&d);
        });
        let mut child = bin()
            .args(["verify", "-f", p(&fifo)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > std::time::Duration::from_secs(20) {
                let _ = child.kill();
                panic!("round {round}: verify -f FIFO hung");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        writer.join().unwrap();
        assert!(status.success(), "round {round}");
    }
    // An empty writer: a clear error, not a hang.
    let f2 = fifo.clone();
    let writer = std::thread::spawn(move || {
        drop(std::fs::OpenOptions::new().write(true).open(&f2).unwrap());
    });
    let (c, _, e) = run_s(&["restore", "-t", "-f", p(&fifo)]);
    writer.join().unwrap();
    assert_eq!(c, 2);
    assert!(e.contains("empty input"), "{e}");
    // One pipe under two names is refused where inputs are read side by
    // side.
    let out = Command::new("sh")
        .args([
            "-c",
            &format!(
                "cat '{}' | '{}' restore -t -f - -f /dev/stdin",
                p(&t.stream),
                bin_path().to_string_lossy()
            ),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("one pipe"));
}

#[test]
fn nothing_is_created_under_dev_and_failures_say_what_was_restored() {
    let t = paths();
    std::fs::write(t.src.join("f"), b"x").unwrap();
    for name in ["/dev/snapdump-test.tap", "/dev/snapdump-test.sdump"] {
        let (c, _, e) = run_s(&["dump", "-0", "-f", name, "--catalog", p(&t.cat), p(&t.src)]);
        assert_eq!(c, 2, "{name}: {e}");
        assert!(e.contains("no such device"), "{name}: {e}");
        assert!(!Path::new(name).exists(), "{name} was created");
    }
    dump(0, &t.stream, &t.cat, &t.src, &[]);
    let junk = t.dir.path().join("junk");
    write(&junk, &bytes(5, 1000));
    let (c, e) = restore(&t.stream, &t.out, &["-f", p(&junk)]);
    assert_eq!(c, 2, "{e}");
    assert!(
        e.contains("holds snapshot 1") && !e.contains("nothing was restored"),
        "{e}"
    );
    assert!(t.out.join(".snapdump-restore/state").exists());
}

/// A source and a chain: s0 (level 0), s1 (level 1) that rewrites the first
/// block of each big file, removes `gone/` and adds `added/`.
fn small_chain(t: &Paths) -> (std::path::PathBuf, std::path::PathBuf) {
    let s = &t.src;
    for d in ["keep/sub", "gone", "big"] {
        std::fs::create_dir_all(s.join(d)).unwrap();
    }
    for i in 0..3 {
        write(&s.join(format!("big/b{i}")), &bytes(i, 300_000));
    }
    write(&s.join("keep/sub/f"), b"hello");
    write(&s.join("gone/x"), b"x");
    write(&s.join("top"), b"top");
    let s0 = t.dir.path().join("s0");
    dump(0, &s0, &t.cat, s, &[]);
    for i in 0..3 {
        overwrite(&s.join(format!("big/b{i}")), 0, 4096, 50 + i);
    }
    std::fs::remove_dir_all(s.join("gone")).unwrap();
    std::fs::create_dir(s.join("added")).unwrap();
    write(&s.join("added/a"), b"a");
    let s1 = t.dir.path().join("s1");
    dump(1, &s1, &t.cat, s, &["-z", "0"]);
    (s0, s1)
}

#[test]
fn a_full_restore_with_force_merges_into_directories_and_names_what_it_replaces() {
    let t = paths();
    let (s0, _) = small_chain(&t);
    assert_eq!(restore(&s0, &t.out, &[]).0, 0);
    write(&t.out.join("keep/mine"), b"precious");
    std::fs::create_dir(t.out.join("keep/sub/userdir")).unwrap();
    write(&t.out.join("keep/sub/userdir/f"), b"precious too");
    write(&t.out.join("top"), b"the user's version");
    let (c, e) = restore(&s0, &t.out, &["--force"]);
    assert_eq!(c, 1, "{e}");
    assert!(e.contains("top: was in the way"), "{e}");
    assert_eq!(std::fs::read(t.out.join("keep/mine")).unwrap(), b"precious");
    assert_eq!(
        std::fs::read(t.out.join("keep/sub/userdir/f")).unwrap(),
        b"precious too"
    );
    assert_eq!(std::fs::read(t.out.join("top")).unwrap(), b"top");
}

#[test]
fn what_a_user_does_to_a_target_during_or_between_increments_is_kept_or_refused() {
    let t = paths();
    let (s0, s1) = small_chain(&t);
    let snap2 = snapshot_tree(&t.src);
    // Files created while the increment is read from a slow pipe are kept.
    let target = t.dir.path().join("late");
    assert_eq!(restore(&s0, &target, &[]).0, 0);
    let data = std::fs::read(&s1).unwrap();
    let mut child = bin()
        .args(["restore", "-r", "-f", "-", "--target", p(&target)])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    use std::io::Write;
    w.write_all(&data[..data.len() / 2]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    write(&target.join("keep/sub/late"), b"late");
    write(&target.join("big/late"), b"late");
    w.write_all(&data[data.len() / 2..]).unwrap();
    drop(w);
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read(target.join("keep/sub/late")).unwrap(),
        b"late"
    );
    assert_eq!(std::fs::read(target.join("big/late")).unwrap(), b"late");
    // A chain file written to while the increment is read: refused, and
    // the target left as it is.
    let target = t.dir.path().join("racing");
    assert_eq!(restore(&s0, &target, &[]).0, 0);
    let mut child = bin()
        .args(["restore", "-r", "-f", "-", "--target", p(&target)])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    w.write_all(&data[..data.len() / 2]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    overwrite(&target.join("big/b1"), 100_000, 8, 77);
    let during = snapshot_tree(&target);
    w.write_all(&data[data.len() / 2..]).unwrap();
    drop(w);
    let o = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("big/b1 changed") && e.contains("when the stream had been read"),
        "{e}"
    );
    assert_tree_is(&during, &target, "a file written during the read");
    // A directory made during the read at a name the increment adds:
    // refused before the check, not found in the way afterwards.
    let target = t.dir.path().join("racing-dir");
    assert_eq!(restore(&s0, &target, &[]).0, 0);
    let mut child = bin()
        .args(["restore", "-r", "-f", "-", "--target", p(&target)])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    w.write_all(&data[..data.len() / 2]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::create_dir(target.join("added")).unwrap();
    write(&target.join("added/mine"), b"mine");
    w.write_all(&data[data.len() / 2..]).unwrap();
    drop(w);
    let o = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("added in the target is not part") && e.contains("unchanged at snapshot 1"),
        "{e}"
    );
    assert_eq!(std::fs::read(target.join("added/mine")).unwrap(), b"mine");
    // A user's empty directory at a name the increment adds: refused.
    let target = t.dir.path().join("added");
    assert_eq!(restore(&s0, &target, &[]).0, 0);
    std::fs::create_dir(target.join("added")).unwrap();
    let (c, e) = restore(&s1, &target, &[]);
    assert_eq!(c, 2, "{e}");
    assert!(
        e.contains("added in the target is not part of snapshot 1"),
        "{e}"
    );
    // A hard link a user made to a chain file keeps what it showed: the
    // new snapshot's file is a new one.
    let target = t.dir.path().join("linked");
    assert_eq!(restore(&s0, &target, &[]).0, 0);
    let outside = t.dir.path().join("old-b0");
    std::fs::hard_link(target.join("big/b0"), &outside).unwrap();
    let before = std::fs::read(&outside).unwrap();
    let (c, e) = restore(&s1, &target, &[]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(
        std::fs::read(&outside).unwrap(),
        before,
        "the user's link changed"
    );
    assert_tree_is(&snap2, &target, "a chain file with another name");
    // An xattr a user added to a chain file goes; --finish leaves the
    // target's own times at the snapshot's.
    let target = t.dir.path().join("xattr");
    assert_eq!(restore(&s0, &target, &[]).0, 0);
    assert!(setxattr(&target.join("keep/sub/f"), "user.added", b"1"));
    assert!(setxattr(&target.join("big/b2"), "user.added", b"1"));
    let (c, e) = restore(&s1, &target, &[]);
    assert_eq!(c, 0, "{e}");
    assert_tree_is(&snap2, &target, "xattrs added in the target");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (c, _, e) = run_s(&["restore", "--finish", "--target", p(&target)]);
    assert_eq!(c, 0, "{e}");
    let root = |d: &Path| std::fs::metadata(d).unwrap().modified().unwrap();
    assert_eq!(
        root(&target),
        root(&t.src),
        "the target's mtime after --finish"
    );
}

#[test]
fn an_increment_that_would_fill_the_file_system_is_refused_before_anything_changes() {
    let t = paths();
    let Some(fs) = Tmpfs::new(&t.dir.path().join("small"), "12M") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    write(&t.src.join("grow"), &bytes(1, 2_000_000));
    write(&t.src.join("other"), &bytes(2, 500_000));
    let s0 = t.dir.path().join("s0");
    dump(0, &s0, &t.cat, &t.src, &[]);
    // The increment extends a file the target keeps: its new blocks need
    // new space.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(t.src.join("grow"))
            .unwrap();
        f.write_all(&bytes(3, 1_000_000)).unwrap();
    }
    let s1 = t.dir.path().join("s1");
    dump(1, &s1, &t.cat, &t.src, &["-z", "0"]);
    let target = fs.0.join("t");
    assert_eq!(restore(&s0, &target, &[]).0, 0);
    let before = snapshot_tree(&target);
    // Leave room for the spool (the appended 1 MB), not for the finish,
    // which needs as much again.
    let free = || {
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(p(&fs.0)).unwrap();
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    };
    let filler = fs.0.join("filler");
    write(&filler, &vec![0u8; (free() - 1_700_000) as usize]);
    let (c, e) = restore(&s1, &target, &[]);
    assert_eq!(c, 2, "{e}");
    assert!(
        e.contains("free some space") && e.contains("not applied"),
        "{e}"
    );
    assert_tree_is(&before, &target, "refused for want of space");
    std::fs::remove_file(&filler).unwrap();
    let (c, e) = restore(&s1, &target, &[]);
    assert_eq!(c, 0, "{e}");
    assert_same_tree(&t.src, &target);
}

#[test]
fn descriptor_names_and_symlinks_are_the_media_they_stand_for() {
    let t = paths();
    build_change_tree(&t.src);
    // dump -f /dev/stdout with stdout redirected to a file: the stream goes
    // into that file, /dev/stdout is left alone.
    let out = t.dir.path().join("out.sdump");
    let o = bin()
        .args([
            "dump",
            "-0",
            "-f",
            "/dev/stdout",
            "--catalog",
            p(&t.cat),
            p(&t.src),
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::symlink_metadata("/dev/stdout")
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(run_s(&["verify", "-f", p(&out)]).0, 0);
    // -f /dev/stdin reads from where descriptor 0 is, as -f - does.
    let data = std::fs::read(&out).unwrap();
    let padded_front = t.dir.path().join("front");
    let mut b = b"JUNK".to_vec();
    b.extend_from_slice(&data);
    write(&padded_front, &b);
    let mut f = std::fs::File::open(&padded_front).unwrap();
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(4)).unwrap();
    let o = bin()
        .args(["verify", "-f", "/dev/stdin"])
        .stdin(f)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // An output given as a symlink: the file it points to gets the stream.
    let real = t.dir.path().join("real.sdump");
    write(&real, b"old");
    let link = t.dir.path().join("link.sdump");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    dump(1, &link, &t.cat, &t.src, &[]);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(run_s(&["verify", "-f", p(&real)]).0, 0);
}

#[test]
fn version_1_streams_are_checked_against_their_digest_by_every_sequential_reader() {
    // Version 1 seeds every checksum with 0, so a rewritten record with
    // recomputed XXH3 passes them; restore -r now checks the digest list.
    let golden =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden-v1/stream.sdump");
    let good = std::fs::read(&golden).unwrap();
    let at = first_data_record(&good);
    use snapdump::stream::record::{open, parse_header, seal, HEADER_LEN};
    let h = parse_header(good[at..at + HEADER_LEN].try_into().unwrap(), 0).unwrap();
    let end = at + HEADER_LEN + h.stored_len as usize;
    let mut raw = open(&h, &good[at + HEADER_LEN..end], 0).unwrap();
    raw[0] ^= 0x20; // a data byte: the record is forged, its checksums right
    let mut b = good[..at].to_vec();
    b.extend_from_slice(&seal(h.kind, h.seq, &raw, None, 0));
    b.extend_from_slice(&good[end..]);
    let t = paths();
    write(&t.stream, &b);
    let (c, e) = restore(&t.stream, &t.out, &[]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("SHA-256"), "{e}");
}
