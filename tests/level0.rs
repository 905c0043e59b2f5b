//! Level-0 dump and full restore through the real binary.

mod common;
use common::*;
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;

fn dump(t: &Paths) -> (i32, String) {
    let (c, _, e) = dump_full(t);
    (c, e)
}

/// A level-0 dump of the test tree to its stream and catalog.
fn dump_full(t: &Paths) -> (i32, Vec<u8>, String) {
    run_s(&[
        "dump",
        "-0",
        "-f",
        p(&t.stream),
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ])
}

#[test]
fn every_fidelity_case_round_trips_exactly() {
    let t = paths();
    build_fidelity_tree(&t.src);
    let before = snapshot_tree(&t.src);
    let (c, e) = dump(&t);
    assert_eq!(c, 0, "dump failed: {e}");
    // Dump never modifies the source (contents, attributes, atimes).
    let after = snapshot_tree(&t.src);
    assert!(before == after, "dump modified the source");
    let (c, _, e) = run_s(&["verify", "-f", p(&t.stream)]);
    assert_eq!(c, 0, "verify failed: {e}");
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&t.stream), "--target", p(&t.out)]);
    assert_eq!(c, 0, "restore failed: {e}");
    assert_same_tree(&t.src, &t.out);
    // Sparse files keep their holes: allocated size equals the source's.
    let sa = std::fs::metadata(t.src.join("sparse")).unwrap();
    let sb = std::fs::metadata(t.out.join("sparse")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(sa.blocks(), sb.blocks());
    assert!(sb.blocks() * 512 < 1 << 20, "sparse file was filled in");
}

#[test]
fn pipe_round_trip() {
    let t = paths();
    build_fidelity_tree(&t.src);
    let mut d = bin()
        .args(["dump", "-0", "-f", "-", "--catalog", p(&t.cat), p(&t.src)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let r = bin()
        .args(["restore", "-r", "-f", "-", "--target", p(&t.out)])
        .stdin(d.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(d.wait().unwrap().success());
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_same_tree(&t.src, &t.out);
}

#[test]
fn json_summary_goes_to_stderr_when_stream_is_on_stdout() {
    let t = paths();
    std::fs::write(t.src.join("f"), b"data").unwrap();
    let out = bin()
        .args([
            "dump",
            "-0",
            "-f",
            "-",
            "--json",
            "--catalog",
            p(&t.cat),
            p(&t.src),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(&out.stdout[..4], b"SDRC");
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["files"], 1);
    assert_eq!(v["snapshot"]["level"], 0);
}

#[test]
fn listing_needs_only_the_front_and_escapes_names() {
    let t = paths();
    build_fidelity_tree(&t.src);
    assert_eq!(dump(&t).0, 0);
    // Cut the stream right after its metadata: listing must still work.
    let bytes = std::fs::read(&t.stream).unwrap();
    let meta_end = first_data_record(&bytes);
    let front = t.dir.path().join("front");
    std::fs::write(&front, &bytes[..meta_end]).unwrap();
    let (c, out, e) = run_s(&["restore", "-t", "-f", p(&front)]);
    assert_eq!(c, 0, "{e}");
    let text = String::from_utf8(out).unwrap();
    assert!(text.lines().any(|l| l == "new\\012line"), "{text}");
    assert!(text.lines().any(|l| l == "latin1-\\351t\\351"));
    assert!(text.lines().any(|l| l == "dir/"));
    assert!(text.lines().any(|l| l == "back\\\\slash"));
    let (c, out, _) = run_s(&["restore", "-t", "--json", "-f", p(&front), "dir/sub"]);
    assert_eq!(c, 0);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let paths: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["dir/sub", "dir/sub/h3", "dir/sub/partial-block"]);
    assert_eq!(v["entries"][0]["type"], "dir");
}

#[test]
fn damage_anywhere_is_detected_by_verify_and_restore() {
    let t = paths();
    build_fidelity_tree(&t.src);
    assert_eq!(dump(&t).0, 0);
    let good = std::fs::read(&t.stream).unwrap();
    let recs = stream_records(&good);
    let pick = |kind: u8| recs.iter().find(|r| r.2 == kind).unwrap().0;
    // One flipped byte in: the header record's payload, a metadata payload,
    // the image record, a data payload, a data record header, the
    // relocation table, the trailer.
    let cases = [
        ("header", pick(1) + 45),
        ("metadata", pick(2) + 60),
        ("image", pick(3) + 41),
        ("data", pick(4) + 100),
        ("data-header", pick(4) + 17),
        ("reloc", pick(5) + 41),
        ("trailer", pick(6) + 50),
    ];
    for (what, off) in cases {
        let mut bad = good.clone();
        bad[off] ^= 0x01;
        let f = t.dir.path().join(format!("bad-{what}"));
        std::fs::write(&f, &bad).unwrap();
        let (c, _, e) = run_s(&["verify", "-f", p(&f)]);
        assert_eq!(c, 2, "verify accepted a flip in {what}");
        assert!(
            e.contains("byte") || e.contains("record"),
            "{what}: message does not say where: {e}"
        );
        // One line per damaged stretch, then the error.
        let lines: Vec<&str> = e.trim().lines().collect();
        assert!(lines.len() <= 2, "{what}: {e}");
        assert!(
            lines.last().unwrap().starts_with("snapdump: error:"),
            "{what}: {e}"
        );
        let target = t.dir.path().join(format!("out-{what}"));
        let (c, _, e) = run_s(&["restore", "-r", "-f", p(&f), "--target", p(&target)]);
        let recorded = target.join(".snapdump-restore/state").exists();
        match what {
            // Nothing can be restored without the header and metadata.
            "header" | "metadata" | "image" => {
                assert_eq!(c, 2, "restore accepted a flip in {what}: {e}");
                assert!(!recorded, "{what}: damaged restore recorded as complete");
            }
            // A data record is lost: restore goes round it, names the file,
            // and does not record the target as the snapshot.
            "data" | "data-header" => {
                assert_eq!(c, 1, "{what}: {e}");
                assert!(
                    e.contains("lost bytes") && e.contains("unreadable"),
                    "{what}: {e}"
                );
                assert!(!recorded, "{what}: damaged restore recorded as complete");
            }
            // The relocation table and the trailer hold no file data: the
            // restore is whole, with a warning about the damage.
            _ => {
                assert_eq!(c, 1, "{what}: {e}");
                assert!(!e.contains("lost bytes"), "{what}: {e}");
                assert!(recorded, "{what}");
                assert_same_tree(&t.src, &target);
            }
        }
    }
    // Truncated copies: anywhere, including right at a record boundary.
    for cut in [
        10,
        41,
        first_data_record(&good),
        good.len() / 2,
        good.len() - 1,
    ] {
        let f = t.dir.path().join("trunc");
        std::fs::write(&f, &good[..cut]).unwrap();
        let (c, _, e) = run_s(&["verify", "-f", p(&f)]);
        assert_eq!(c, 2, "verify accepted a stream cut at {cut}");
        assert!(e.contains("truncated") || e.contains("byte"), "{e}");
        let target = t.dir.path().join(format!("out-trunc-{cut}"));
        let (c, _, e) = run_s(&["restore", "-r", "-f", p(&f), "--target", p(&target)]);
        let recorded = target.join(".snapdump-restore/state").exists();
        if cut < first_data_record(&good) {
            assert_eq!(c, 2, "cut at {cut}: {e}");
        } else if cut == good.len() - 1 {
            // Only the end record is cut: every block arrived.
            assert_eq!((c, recorded), (1, true), "cut at {cut}: {e}");
            assert_same_tree(&t.src, &target);
        } else {
            assert_eq!((c, recorded), (1, false), "cut at {cut}: {e}");
            assert!(e.contains("lost bytes"), "cut at {cut}: {e}");
        }
    }
}

#[test]
fn bad_input_gets_a_clear_error_and_exit_2() {
    let t = paths();
    std::fs::write(t.src.join("f"), b"data").unwrap();
    // Missing source.
    let (c, _, e) = run_s(&[
        "dump",
        "-0",
        "-f",
        p(&t.stream),
        "--catalog",
        p(&t.cat),
        "/nonexistent/src",
    ]);
    assert_eq!(c, 2);
    assert!(e.contains("/nonexistent/src"), "{e}");
    // Unwritable output.
    let (c, _, e) = run_s(&[
        "dump",
        "-0",
        "-f",
        "/nonexistent/dir/out",
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    assert_eq!(c, 2);
    assert!(e.contains("/nonexistent/dir/out"), "{e}");
    // Neither left a snapshot in the catalog.
    let (c, _, e) = run_s(&["snapshots", "--catalog", p(&t.cat), p(&t.src)]);
    assert_eq!(c, 2, "{e}");
    // Wrong magic.
    let junk = t.dir.path().join("junk");
    std::fs::write(
        &junk,
        b"this is not a snapdump stream at all, just text.....",
    )
    .unwrap();
    let (c, _, e) = run_s(&["verify", "-f", p(&junk)]);
    assert_eq!(c, 2);
    assert!(e.contains("not a snapdump stream"), "{e}");
    // A stream of a newer format version.
    assert_eq!(dump_full(&t).0, 0);
    let good = std::fs::read(&t.stream).unwrap();
    let hlen = 40 + u32::from_le_bytes(good[16..20].try_into().unwrap()) as usize;
    let mut payload = good[40..hlen].to_vec();
    let next = snapdump::stream::header::FORMAT_VERSION + 1;
    payload[8..12].copy_from_slice(&next.to_le_bytes());
    let mut newer = snapdump::stream::record::seal(
        snapdump::stream::record::RecordKind::Header,
        0,
        &payload,
        None,
        0,
    );
    newer.extend_from_slice(&good[hlen..]);
    let nf = t.dir.path().join("newer");
    std::fs::write(&nf, &newer).unwrap();
    for args in [
        vec!["verify", "-f", p(&nf)],
        vec!["restore", "-r", "-f", p(&nf), "--target", p(&t.out)],
    ] {
        let (c, _, e) = run_s(&args);
        assert_eq!(c, 2);
        assert!(e.contains("newer") && e.contains("upgrade"), "{e}");
    }
    // A restore target that is a file.
    let file = t.dir.path().join("afile");
    std::fs::write(&file, b"x").unwrap();
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&t.stream), "--target", p(&file)]);
    assert_eq!(c, 2);
    assert!(e.contains("not a directory"), "{e}");
    // A non-empty target without --force; with --force it is overwritten.
    std::fs::create_dir(&t.out).unwrap();
    std::fs::write(t.out.join("f"), b"other contents").unwrap();
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&t.stream), "--target", p(&t.out)]);
    assert_eq!(c, 2);
    assert!(e.contains("not empty") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(t.out.join("f")).unwrap(), b"other contents");
    let (c, _, e) = run_s(&[
        "restore",
        "-r",
        "--force",
        "-f",
        p(&t.stream),
        "--target",
        p(&t.out),
    ]);
    // The file in the way is replaced, and named.
    assert_eq!(c, 1, "{e}");
    assert!(e.contains("f: was in the way"), "{e}");
    assert_same_tree(&t.src, &t.out);
    // No stream named at all.
    let out = bin().args(["verify"]).env_remove("TAPE").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("$TAPE"));
}

#[test]
fn tape_variable_names_the_default_stream() {
    let t = paths();
    std::fs::write(t.src.join("f"), b"data").unwrap();
    let out = bin()
        .args(["dump", "-0", "--catalog", p(&t.cat), p(&t.src)])
        .env("TAPE", &t.stream)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .args(["verify"])
        .env("TAPE", &t.stream)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn a_failed_dump_leaves_catalog_and_earlier_stream_intact() {
    let t = paths();
    std::fs::write(t.src.join("f"), b"first").unwrap();
    assert_eq!(dump_full(&t).0, 0);
    let first = std::fs::read(&t.stream).unwrap();
    let cat_before = std::fs::read_dir(t.cat.join("sources")).unwrap().count();
    // A dump whose output dies mid-stream (a closed pipe) fails with exit 2.
    std::fs::write(t.src.join("big"), bytes(5, 8 << 20)).unwrap();
    let mut child = bin()
        .args([
            "dump",
            "-0",
            "-z",
            "0",
            "-f",
            "-",
            "--catalog",
            p(&t.cat),
            p(&t.src),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut so = child.stdout.take().unwrap();
    let mut buf = [0u8; 1000];
    use std::io::Read;
    so.read_exact(&mut buf).unwrap();
    drop(so);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The catalog still has exactly the first snapshot.
    let (c, o, _) = run_s(&["snapshots", "--json", "--catalog", p(&t.cat), p(&t.src)]);
    assert_eq!(c, 0);
    let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
    assert_eq!(v[0]["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(
        std::fs::read_dir(t.cat.join("sources")).unwrap().count(),
        cat_before
    );
    assert_eq!(std::fs::read(&t.stream).unwrap(), first);
    // A failing dump to a file leaves no partial file behind.
    let names: Vec<_> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!names
        .iter()
        .any(|n| n.as_bytes().windows(7).any(|w| w == b"partial")));
}

#[test]
fn unreadable_files_are_reported_skipped_and_exit_1() {
    if !is_root() {
        eprintln!("skipped: needs root to drop privileges with setpriv");
        return;
    }
    let t = paths();
    std::fs::write(t.src.join("ok"), b"readable").unwrap();
    std::fs::write(t.src.join("secret"), b"unreadable").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t.src.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(t.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run_as_nobody(&[
        "dump",
        "-0",
        "--json",
        "-f",
        p(&t.stream),
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("secret") && err.contains("Permission denied"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "warnings");
    assert_eq!(v["warnings"][0]["path"], "secret");
    let (c, o, _) = run_s(&["restore", "-t", "-f", p(&t.stream)]);
    assert_eq!(c, 0);
    assert_eq!(String::from_utf8(o).unwrap(), "ok\n");
}

#[test]
fn catalog_records_the_snapshot_after_the_stream() {
    let t = paths();
    std::fs::write(t.src.join("f"), bytes(7, 50_000)).unwrap();
    assert_eq!(dump_full(&t).0, 0);
    assert_eq!(dump_full(&t).0, 0);
    let (c, o, _) = run_s(&["snapshots", "--json", "--catalog", p(&t.cat)]);
    assert_eq!(c, 0);
    let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
    let snaps = v[0]["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1]["id"], 2);
    assert_eq!(snaps[1]["level"], 0);
    assert_eq!(snaps[1]["data_blocks"], 13);
    assert_eq!(
        snaps[1]["stream_bytes"],
        std::fs::metadata(&t.stream).unwrap().len()
    );
}

#[test]
fn only_the_digest_list_catches_a_payload_rewritten_with_its_xxh3() {
    let t = paths();
    std::fs::write(t.src.join("f"), bytes(11, 100_000)).unwrap();
    assert_eq!(dump_raw(&t.stream, &t.cat, &t.src, &[]).0, 0);
    let mut b = std::fs::read(&t.stream).unwrap();
    let at = first_data_record(&b);
    let len = u32::from_le_bytes(b[at + 16..at + 20].try_into().unwrap()) as usize;
    // Change a data byte and recompute the record's payload and header
    // checksums: a forgery (or a bug) that XXH3 alone cannot see.
    b[at + 40 + 10] ^= 0xff;
    let seed = stream_seed(&b);
    let ph = xxhash_rust::xxh3::xxh3_64_with_seed(&b[at + 40..at + 40 + len], seed);
    b[at + 24..at + 32].copy_from_slice(&ph.to_le_bytes());
    let hh = xxhash_rust::xxh3::xxh3_64_with_seed(&b[at..at + 32], seed);
    b[at + 32..at + 40].copy_from_slice(&hh.to_le_bytes());
    std::fs::write(&t.stream, &b).unwrap();
    let (c, _, e) = run_s(&["verify", "-f", p(&t.stream)]);
    assert_eq!(c, 2);
    assert!(e.contains("stream digest (BLAKE3) mismatch"), "{e}");
    let (c, _, e) = run_s(&[
        "restore",
        "-r",
        "--verify-digest",
        "-f",
        p(&t.stream),
        "--target",
        p(&t.out),
    ]);
    assert_eq!(c, 2, "{e}");
    assert!(!t.out.join(".snapdump-restore/state").exists());
}

#[test]
fn concurrent_dumps_and_restores_are_serialised_by_locks() {
    let t = paths();
    std::fs::write(t.src.join("f"), bytes(3, 10_000)).unwrap();
    assert_eq!(dump_full(&t).0, 0);
    // Hold the source's catalog lock as another dump would.
    let dir = std::fs::read_dir(t.cat.join("sources"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let held =
        snapdump::lock::acquire(&dir.join("lock"), "test", snapdump::lock::Wait::No).unwrap();
    let out2 = t.dir.path().join("second");
    let (c, _, e) = run_s(&[
        "dump",
        "-0",
        "--no-wait",
        "-f",
        p(&out2),
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    assert_eq!(c, 2);
    assert!(
        e.contains("in use by process") && e.contains("--no-wait"),
        "{e}"
    );
    assert!(!out2.exists());
    // Without --no-wait the dump waits, then runs when the lock is released.
    let mut child = bin()
        .args([
            "dump",
            "-0",
            "-f",
            p(&out2),
            "--catalog",
            p(&t.cat),
            p(&t.src),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the second dump did not wait"
    );
    drop(held);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("waiting for"));
    // A lock held by a process that was killed is released by the kernel.
    let mut holder = std::process::Command::new("flock")
        .args(["-o", p(&dir.join("lock")), "sleep", "30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out3 = t.dir.path().join("third");
    let (c, _, e) = run_s(&[
        "dump",
        "-0",
        "--no-wait",
        "-f",
        p(&out3),
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    assert_eq!(c, 0, "a dead holder's lock was not released: {e}");
    // Two restores into one target: the second is refused while the first holds it.
    let st = t.out.join(".snapdump-restore");
    std::fs::create_dir_all(&st).unwrap();
    let held = snapdump::lock::acquire(&st.join("lock"), "test", snapdump::lock::Wait::No).unwrap();
    let (c, _, e) = run_s(&[
        "restore",
        "-r",
        "--no-wait",
        "-f",
        p(&t.stream),
        "--target",
        p(&t.out),
    ]);
    assert_eq!(c, 2);
    assert!(e.contains("in use"), "{e}");
    drop(held);
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&t.stream), "--target", p(&t.out)]);
    assert_eq!(c, 0, "{e}");
}

/// A dump stays on its source's file system, as dump(8) does: a tmpfs
/// mounted below the source is recorded as an empty directory (the place
/// to mount it on), with a note naming it and exit status 0; with
/// `--cross-mounts` its contents are dumped too, and a level 1 taken
/// without it records the directory empty again.
#[test]
fn a_dump_stays_on_its_file_system_unless_told_to_cross_mounts() {
    if !snapdump::fsx::is_root() {
        return; // mounting needs root
    }
    let t = paths();
    std::fs::create_dir_all(t.src.join("data")).unwrap();
    std::fs::write(t.src.join("data/kept"), b"on the source's file system").unwrap();
    let mnt = t.src.join("data/mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "mode=0750", "tmpfs", p(&mnt)])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("cannot mount a tmpfs: skipped");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    std::fs::create_dir(mnt.join("deep")).unwrap();
    std::fs::write(mnt.join("deep/other"), b"on the tmpfs").unwrap();
    let work = t.dir.path();
    let dump = |level: &str, extra: &[&str], out: &str| {
        let stream = work.join(out);
        let mut args = vec!["dump", level, "-f", p(&stream), "--catalog", p(&t.cat)];
        args.extend_from_slice(extra);
        args.push(p(&t.src));
        let (c, _, e) = run_s(&args);
        (c, e, stream)
    };
    let restored = |streams: &[&std::path::Path], name: &str| {
        let target = work.join(name);
        for s in streams {
            let (c, _, e) = run_s(&["restore", "-r", "-f", p(s), "--target", p(&target)]);
            assert_eq!(c, 0, "{e}");
        }
        target
    };
    let (c, e, s0) = dump("-0", &[], "s0");
    assert_eq!(c, 0, "a note is not a warning: {e}");
    assert!(
        e.contains("note") && e.contains("data/mnt") && e.contains("--cross-mounts"),
        "{e}"
    );
    let r = restored(&[&s0], "r0");
    assert_eq!(
        std::fs::read(r.join("data/kept")).unwrap(),
        b"on the source's file system"
    );
    assert!(r.join("data/mnt").is_dir(), "the mount point is recorded");
    assert_eq!(std::fs::read_dir(r.join("data/mnt")).unwrap().count(), 0);
    let (c, e, s1) = dump("-1", &["--cross-mounts"], "s1");
    assert_eq!(c, 0, "{e}");
    assert!(!e.contains("note"), "{e}");
    let r = restored(&[&s0, &s1], "r1");
    assert_same_tree(&t.src, &r);
    let (c, e, s2) = dump("-2", &["-q"], "s2");
    assert_eq!(c, 0, "{e}");
    assert!(!e.contains("note"), "-q prints no notes: {e}");
    let r = restored(&[&s0, &s1, &s2], "r2");
    assert_eq!(std::fs::read_dir(r.join("data/mnt")).unwrap().count(), 0);
    assert!(r.join("data/kept").exists());
}

/// A second disk below the source (a loop-mounted ext4 inside a
/// loop-mounted ext4: two fresh file systems, so their first files have
/// the same inode numbers): not entered by default; entered with
/// --cross-mounts, its hard links stay its own, never joined with the
/// source's files of the same inode number, at level 0 and at the levels
/// after (the catalog matches files by device and inode).
#[test]
fn hard_links_never_join_across_file_systems() {
    let t = tmp();
    let Some(outer) = LoopFs::mount("ext4", &t.path().join("a.img"), &t.path().join("a"), 32)
    else {
        return;
    };
    // The source is the outer file system's root: its first file and the
    // inner one's get the same inode number.
    let src = outer.mnt.clone();
    std::fs::write(src.join("x"), b"outer file").unwrap();
    std::fs::hard_link(src.join("x"), src.join("x-link")).unwrap();
    let inner_at = src.join("disk2");
    std::fs::create_dir(&inner_at).unwrap();
    let Some(inner) = LoopFs::mount("ext4", &t.path().join("b.img"), &inner_at, 32) else {
        return;
    };
    std::fs::write(inner.mnt.join("y"), b"inner file").unwrap();
    std::fs::hard_link(inner.mnt.join("y"), inner.mnt.join("y-link")).unwrap();
    use std::os::unix::fs::MetadataExt;
    let (mx, my) = (
        std::fs::metadata(src.join("x")).unwrap(),
        std::fs::metadata(inner.mnt.join("y")).unwrap(),
    );
    assert_ne!(mx.dev(), my.dev());
    assert_eq!(
        mx.ino(),
        my.ino(),
        "two fresh ext4s give their first files one number"
    );
    let cat = t.path().join("cat");
    let dump = |level: &str, extra: &[&str]| {
        let s = t.path().join(format!("s{level}"));
        let mut args = vec!["dump", level, "-f", p(&s), "--catalog", p(&cat)];
        args.extend_from_slice(extra);
        args.push(p(&src));
        let (c, _, e) = run_s(&args);
        assert_eq!(c, 0, "{e}");
        (s, e)
    };
    let (s0, e) = dump("-0", &[]);
    assert!(e.contains("disk2") && e.contains("--cross-mounts"), "{e}");
    let r0 = t.path().join("r0");
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&r0)]).0,
        0
    );
    assert_eq!(std::fs::read_dir(r0.join("disk2")).unwrap().count(), 0);
    let (s1, _) = dump("-1", &["--cross-mounts"]);
    std::fs::write(inner.mnt.join("z"), b"new on the inner disk").unwrap();
    std::fs::write(src.join("x"), b"outer file, changed").unwrap();
    let (s2, _) = dump("-2", &["--cross-mounts"]);
    for (name, streams) in [("r1", vec![&s0, &s1]), ("r2", vec![&s0, &s1, &s2])] {
        let r = t.path().join(name);
        for s in streams {
            let (c, _, e) = run_s(&["restore", "-r", "-f", p(s), "--target", p(&r)]);
            assert_eq!(c, 0, "{e}");
        }
        let m = |rel: &str| std::fs::metadata(r.join(rel)).unwrap();
        assert_eq!(m("x").ino(), m("x-link").ino(), "{name}");
        assert_eq!(m("disk2/y").ino(), m("disk2/y-link").ino(), "{name}");
        assert_ne!(
            m("x").ino(),
            m("disk2/y").ino(),
            "{name}: joined across file systems"
        );
        assert_eq!(m("x").nlink(), 2, "{name}");
        assert_eq!(m("disk2/y").nlink(), 2, "{name}");
        if name == "r2" {
            assert_same_tree(&src, &r);
        }
        // (Reading moves atimes: after the comparison.)
        assert_eq!(std::fs::read(r.join("disk2/y")).unwrap(), b"inner file");
    }
}

/// Every exclusion form on a level 0 and on later levels: patterns given
/// and read from a file, a cache directory and a marked one keeping only
/// their tag, nodump files left out from level 1 (not at level 0); a later
/// dump that names no rules follows the recorded ones, one that names
/// others is refused until --rules-changed, and that increment carries
/// what the new rules bring in and leave out.
#[test]
fn exclusions_hold_across_levels_and_a_rule_change_is_explicit() {
    let t = paths();
    let s = &t.src;
    for d in ["src", "build", "src/build", "logs", "cache", "marked"] {
        std::fs::create_dir_all(s.join(d)).unwrap();
    }
    let put = |rel: &str, data: &[u8]| std::fs::write(s.join(rel), data).unwrap();
    put("src/main.c", b"int main;");
    put("src/main.o", b"object");
    put("src/keep.o", b"kept object");
    put("build/out", b"top build");
    put("src/build/inner", b"not anchored: kept");
    put("logs/today", b"log");
    put(
        "cache/CACHEDIR.TAG",
        b"Signature: 8a477f597d28d172789f06886806bc55\n",
    );
    put("cache/blob", b"cached");
    put("marked/.nobackup", b"");
    put("marked/private", b"secret");
    put("nodump-file", b"flagged");
    let chattr = std::process::Command::new("chattr")
        .args(["+d", p(&s.join("nodump-file"))])
        .status()
        .is_ok_and(|st| st.success());
    let work = t.dir.path();
    let excludes = work.join("excludes");
    std::fs::write(&excludes, b"# object files\n*.o\n!keep.o\n\nlogs/\n").unwrap();
    let rules = [
        "--exclude",
        "/build",
        "--exclude-from",
        p(&excludes),
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
    ];
    let dump = |level: &str, extra: &[&str], out: &str| {
        let stream = work.join(out);
        let mut args = vec!["dump", level, "-f", p(&stream), "--catalog", p(&t.cat)];
        args.extend_from_slice(extra);
        args.push(p(s));
        let (c, _, e) = run_s(&args);
        (c, e, stream)
    };
    let names = |streams: &[&std::path::Path]| {
        let target = work.join(format!("r{}", streams.len()));
        let _ = std::fs::remove_dir_all(&target);
        for st in streams {
            let (c, _, e) = run_s(&["restore", "-r", "-f", p(st), "--target", p(&target)]);
            assert_eq!(c, 0, "{e}");
        }
        let mut v: Vec<String> = snapshot_tree(&target)
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .filter(|k| k != "." && !k.starts_with(".snapdump-restore"))
            .collect();
        v.sort();
        v
    };
    let (c, e, s0) = dump("-0", &rules, "s0");
    assert_eq!(c, 0, "{e}");
    let mut want = vec![
        "build",
        "cache",
        "cache/CACHEDIR.TAG",
        "logs",
        "marked",
        "marked/.nobackup",
        "nodump-file",
        "src",
        "src/build",
        "src/build/inner",
        "src/keep.o",
        "src/main.c",
    ];
    // "logs/" excludes the directory itself; "/build" the top one.
    want.retain(|n| *n != "logs" && *n != "build");
    assert_eq!(
        names(&[&s0]),
        want,
        "level 0 (nodump honoured from level 1 only)"
    );
    // Level 1 with no rules given follows the recorded ones; a new
    // excluded file stays out, nodump now applies.
    put("src/new.o", b"new object");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (c, e, s1) = dump("-1", &[], "s1");
    assert_eq!(c, 0, "{e}");
    let mut want1 = want.clone();
    if chattr {
        want1.retain(|n| *n != "nodump-file");
    }
    assert_eq!(
        names(&[&s0, &s1]),
        want1,
        "level 1 follows the recorded rules"
    );
    // Other rules: refused, naming the recorded ones, until --rules-changed.
    let (c, e, _) = dump("-2", &["--exclude", "*.c"], "s2-refused");
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("--rules-changed") && e.contains("/build"), "{e}");
    let (c, e, s2) = dump("-2", &["--exclude", "*.c", "--rules-changed"], "s2");
    assert_eq!(c, 0, "{e}");
    let mut want2: Vec<&str> = vec![
        "build",
        "build/out",
        "cache",
        "cache/CACHEDIR.TAG",
        "cache/blob",
        "logs",
        "logs/today",
        "marked",
        "marked/.nobackup",
        "marked/private",
        "nodump-file",
        "src",
        "src/build",
        "src/build/inner",
        "src/keep.o",
        "src/main.o",
        "src/new.o",
    ];
    if chattr {
        want2.retain(|n| *n != "nodump-file");
    }
    assert_eq!(
        names(&[&s0, &s1, &s2]),
        want2,
        "the increment carries what came in and went out"
    );
    // A bad pattern is refused before anything is read.
    let (c, e, _) = dump("-3", &["--exclude", "[z-a]", "--rules-changed"], "s3");
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("[z-a]"), "{e}");
}

/// `-v` lists every entry dumped and restored on stderr (the stream may be
/// on stdout), one escaped path a line, directories with a trailing `/`.
#[test]
fn verbose_lists_each_entry_dumped_and_restored() {
    let t = paths();
    std::fs::create_dir_all(t.src.join("d/e")).unwrap();
    std::fs::write(t.src.join("d/e/f"), b"1").unwrap();
    std::fs::write(t.src.join("odd\nname"), b"2").unwrap();
    let want = "d/\nd/e/\nd/e/f\nodd\\012name\n";
    let out = bin()
        .args([
            "-v",
            "dump",
            "-0",
            "-f",
            "-",
            "--catalog",
            p(&t.cat),
            p(&t.src),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err, want, "dump -v");
    std::fs::write(&t.stream, &out.stdout).unwrap();
    let target = t.dir.path().join("r");
    let (c, _, e) = run_s(&[
        "restore",
        "-r",
        "-v",
        "-f",
        p(&t.stream),
        "--target",
        p(&target),
    ]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(e, want, "restore -v");
}

/// A user other than root restores a snapshot whose root directory is
/// mode 000 (or 555): the target's root keeps rwx for its owner while it
/// holds the restore state, so the level 0, the increments after it (both
/// finishes) and `--finish` all work; `--finish` then gives the root the
/// snapshot's mode, and the tree is exact.
#[test]
fn a_user_restores_a_snapshot_whose_root_is_unwritable() {
    if !is_root() {
        eprintln!("skipped: needs root to drop privileges with setpriv");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    for (m0, m1, inplace) in [
        (0o000, 0o000, false),
        (0o755, 0o555, true),
        (0o500, 0o000, false),
    ] {
        let t = paths();
        std::fs::set_permissions(t.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let parent = t.dir.path().join("p");
        std::fs::create_dir(&parent).unwrap();
        std::os::unix::fs::chown(&parent, Some(65534), Some(65534)).unwrap();
        std::fs::write(t.src.join("a"), b"first").unwrap();
        std::os::unix::fs::chown(&t.src, Some(65534), Some(65534)).unwrap();
        std::os::unix::fs::chown(t.src.join("a"), Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&t.src, std::fs::Permissions::from_mode(m0)).unwrap();
        let s0 = t.dir.path().join("s0");
        assert_eq!(dump_to(0, &s0, &t.cat, &t.src), 0);
        std::fs::set_permissions(&t.src, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(t.src.join("b"), b"second").unwrap();
        std::os::unix::fs::chown(t.src.join("b"), Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&t.src, std::fs::Permissions::from_mode(m1)).unwrap();
        let s1 = t.dir.path().join("s1");
        assert_eq!(dump_to(1, &s1, &t.cat, &t.src), 0);
        for s in [&s0, &s1] {
            std::fs::set_permissions(s, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let target = parent.join("t");
        for s in [&s0, &s1] {
            let mut args = vec!["restore", "-r", "-f", p(s), "--target", p(&target)];
            if inplace {
                args.push("--inplace");
            }
            let o = run_as_nobody(&args);
            assert!(
                o.status.success(),
                "modes {m0:o}/{m1:o}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let o = run_as_nobody(&["restore", "--finish", "--target", p(&target)]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mode = |p: &std::path::Path| {
            std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
        };
        assert_eq!(mode(&target), m1, "the snapshot's root mode after --finish");
        assert!(!target.join(".snapdump-restore").exists());
        // Compare as root (the tree is not readable otherwise).
        assert_same_tree(&t.src, &target);
    }
}

/// What a hostile tester found: a refused increment leaves a directory
/// that never held a restore as it was (no state directory, same times)
/// and creates no missing target; a level 0 into an existing empty
/// directory drops the directory's own xattrs; a target given as a symlink
/// to a directory is that directory, for full restores and increments.
#[test]
fn targets_are_left_as_found_and_symlinked_targets_are_followed() {
    let t = paths();
    std::fs::write(t.src.join("a"), b"a").unwrap();
    let s0 = t.dir.path().join("s0");
    assert_eq!(dump_to(0, &s0, &t.cat, &t.src), 0);
    std::fs::write(t.src.join("b"), b"b").unwrap();
    let s1 = t.dir.path().join("s1");
    assert_eq!(dump_to(1, &s1, &t.cat, &t.src), 0);
    let other = t.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("mine"), b"not a restore").unwrap();
    set_times(&other, (1_600_000_000, 1), (1_600_000_000, 2));
    let before = snapshot_tree(&other);
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&other)]);
    assert_eq!(c, 2);
    assert!(e.contains("holds no restored snapshot"), "{e}");
    assert_eq!(
        snapshot_tree(&other),
        before,
        "the refused increment changed the directory"
    );
    let missing = t.dir.path().join("missing");
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s1), "--target", p(&missing)]);
    assert_eq!(c, 2);
    assert!(e.contains("does not exist") && e.contains("level-0"), "{e}");
    assert!(!missing.exists());
    let empty = t.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(setxattr(&empty, "user.stale", b"1"));
    assert_eq!(
        run_s(&["restore", "-r", "-f", p(&s0), "--target", p(&empty)]).0,
        0
    );
    assert!(snapshot_tree(&empty)[&b"."[..]].xattrs.is_empty());
    let real = t.dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = t.dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    for s in [&s0, &s1] {
        let (c, _, e) = run_s(&["restore", "-r", "-f", p(s), "--target", p(&link)]);
        assert_eq!(c, 0, "{e}");
    }
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_same_tree(&t.src, &real);
}
