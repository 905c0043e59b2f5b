//! The real tape path, end to end through the binary: `-f /dev/nstN` and
//! `-f /dev/stN` go through the tape writer and reader and the st driver
//! logic, on the simulated drive `SNAPDUMP_SIMULATED_ST=DIR` selects (the
//! same `TapeIo` trait as the real ioctls; nothing under /dev is touched).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A simulated drive: its cartridge directory, and the binary run with it.
struct Drive {
    dir: PathBuf,
    capacity: Option<String>,
}

impl Drive {
    fn new(root: &Path) -> Drive {
        let dir = root.join("drive");
        std::fs::create_dir_all(&dir).unwrap();
        Drive {
            dir,
            capacity: None,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = bin();
        c.args(args).env("SNAPDUMP_SIMULATED_ST", &self.dir);
        if let Some(cap) = &self.capacity {
            c.env("SNAPDUMP_SIMULATED_ST_CAPACITY", cap);
        }
        c.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {e}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{args:?} should fail: {e}");
        e
    }

    /// Puts the cartridge in the drive on the shelf `root` (as cart.N, N
    /// the volume the changer script loaded) and loads cart.1, as an
    /// operator does before reading a tape set from its start.
    fn load_first(&self, root: &Path) {
        let loaded =
            std::fs::read_to_string(self.dir.join("loaded")).unwrap_or_else(|_| "1".into());
        if loaded.trim() != "1" {
            std::fs::rename(
                self.dir.join("cartridge"),
                root.join(format!("cart.{}", loaded.trim())),
            )
            .unwrap();
            std::fs::rename(root.join("cart.1"), self.dir.join("cartridge")).unwrap();
        }
        std::fs::write(self.dir.join("loaded"), "1").unwrap();
    }

    /// Restores the tape set from its first cartridge into `target`, the
    /// changer `script` loading the others.
    fn restore_set(&self, root: &Path, script: &Path, target: &Path) {
        self.load_first(root);
        self.ok(&[
            "restore",
            "-r",
            "-f",
            "/dev/nst0",
            "--new-volume",
            p(script),
            "--target",
            p(target),
        ]);
    }

    /// The cartridge's items: Some(record length) or None for a filemark.
    fn items(&self) -> Vec<Option<usize>> {
        items_of(&std::fs::read(self.dir.join("cartridge")).unwrap())
    }
}

fn items_of(b: &[u8]) -> Vec<Option<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= b.len() {
        let n = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        at += 4;
        if n == 0 {
            out.push(None);
        } else {
            out.push(Some(n));
            at += n;
        }
    }
    out
}

#[test]
fn dumps_to_dev_nst0_are_tape_files_with_headers_records_and_filemarks() {
    let t = paths();
    build_change_tree(&t.src);
    let d = Drive::new(t.dir.path());
    let cat = p(&t.cat);
    d.ok(&[
        "dump",
        "-0",
        "-b",
        "64",
        "-f",
        "/dev/nst0",
        "--catalog",
        cat,
        p(&t.src),
    ]);
    assert!(
        !Path::new("/dev/nst0").exists(),
        "a file was created under /dev"
    );
    let items = d.items();
    // Volume header, records of exactly 64 KiB but the last, filemark.
    assert_eq!(items[0], Some(128), "{items:?}");
    assert_eq!(items.last(), Some(&None));
    let data = &items[1..items.len() - 1];
    assert!(data.len() >= 2, "{items:?}");
    for r in &data[..data.len() - 1] {
        assert_eq!(*r, Some(64 << 10), "{items:?}");
    }
    let snap1 = snapshot_tree(&t.src);
    // A level 1 appended as the second tape file.
    let mutated = mutate_for_level_1(&t.src);
    assert!(!mutated.is_empty());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    d.ok(&[
        "dump",
        "-1",
        "-f",
        "/dev/nst0",
        "--append",
        "--catalog",
        cat,
        p(&t.src),
    ]);
    let snap2 = snapshot_tree(&t.src);
    assert_eq!(d.items().iter().filter(|i| i.is_none()).count(), 2);
    d.ok(&["verify", "-f", "/dev/nst0", "--file-number", "2"]);
    let listing = d.ok(&["restore", "-t", "-f", "/dev/nst0", "--file-number", "2"]);
    assert!(listing.contains("moved"), "{listing}");
    // The chain restored from the tape, file by file.
    d.ok(&["restore", "-r", "-f", "/dev/nst0", "--target", p(&t.out)]);
    assert_tree_is(&snap1, &t.out, "tape file 1");
    d.ok(&[
        "restore",
        "-r",
        "-f",
        "/dev/nst0",
        "--file-number",
        "2",
        "--target",
        p(&t.out),
    ]);
    assert_tree_is(&snap2, &t.out, "tape file 2");
    let e = d.fails(&["restore", "-t", "-f", "/dev/nst0", "--file-number", "3"]);
    assert!(e.contains("there is no dump number 3"), "{e}");
    // The rewinding device cannot position between runs.
    let e = d.fails(&[
        "dump",
        "-0",
        "-f",
        "/dev/st0",
        "--append",
        "--catalog",
        cat,
        p(&t.src),
    ]);
    assert!(e.contains("rewinds the tape"), "{e}");
    let e = d.fails(&["restore", "-t", "-f", "/dev/st0", "--file-number", "2"]);
    assert!(e.contains("rewinds the tape"), "{e}");
    // A rewinding device reads the first file from the start every time.
    d.ok(&["restore", "-t", "-f", "/dev/st0"]);
    d.ok(&["restore", "-t", "-f", "/dev/st0"]);
    // Write protection.
    std::fs::write(d.dir.join("write-protect"), b"").unwrap();
    let e = d.fails(&["dump", "-0", "-f", "/dev/nst0", "--catalog", cat, p(&t.src)]);
    assert!(e.contains("write-protected"), "{e}");
    std::fs::remove_file(d.dir.join("write-protect")).unwrap();
    assert_eq!(d.items().iter().filter(|i| i.is_none()).count(), 2);
}

/// A `--new-volume` script for the simulated drive: keeps the cartridge in
/// the drive as cart.N (N = the volume it holds) and loads cart.M for the
/// volume M asked for (a blank one if there is none).
fn changer(root: &Path, drive: &Path) -> PathBuf {
    let script = root.join("change.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\nd='{d}'\nn=$(cat \"$d/loaded\" 2>/dev/null || echo 1)\n\
             [ -f \"$d/cartridge\" ] && mv \"$d/cartridge\" '{r}'/cart.$n\n\
             if [ -f '{r}'/cart.$SNAPDUMP_VOLUME ]; then mv '{r}'/cart.$SNAPDUMP_VOLUME \"$d/cartridge\"; fi\n\
             echo $SNAPDUMP_VOLUME > \"$d/loaded\"\n",
            d = drive.display(),
            r = root.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn a_dump_spans_cartridges_at_the_early_warning_and_resumes_after_a_kill() {
    let t = paths();
    for i in 0..3 {
        std::fs::write(t.src.join(format!("big{i}")), bytes(i, 1_500_000)).unwrap();
    }
    let mut d = Drive::new(t.dir.path());
    d.capacity = Some("1M".into());
    let script = changer(t.dir.path(), &d.dir);
    let cat = p(&t.cat);
    let want = snapshot_tree(&t.src);
    d.ok(&[
        "dump",
        "-0",
        "-z",
        "0",
        "-f",
        "/dev/nst0",
        "--new-volume",
        p(&script),
        "--catalog",
        cat,
        p(&t.src),
    ]);
    let loaded: u32 = std::fs::read_to_string(d.dir.join("loaded"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(loaded >= 4, "4.5 MB on 1 MiB cartridges: {loaded} volumes");
    // Every cartridge stays within its capacity and ends with a filemark.
    std::fs::rename(
        d.dir.join("cartridge"),
        t.dir.path().join(format!("cart.{loaded}")),
    )
    .unwrap();
    for v in 1..=loaded {
        let b = std::fs::read(t.dir.path().join(format!("cart.{v}"))).unwrap();
        assert!(
            b.len() < (1 << 20) + (1 << 20) / 16 + (64 << 10),
            "cartridge {v}: {} bytes",
            b.len()
        );
        assert_eq!(items_of(&b).last(), Some(&None), "cartridge {v}");
    }
    // Restore: volume 1 in the drive, the script loads the others.
    std::fs::write(d.dir.join("loaded"), loaded.to_string()).unwrap();
    std::fs::rename(
        t.dir.path().join(format!("cart.{loaded}")),
        d.dir.join("cartridge"),
    )
    .unwrap();
    d.restore_set(t.dir.path(), &script, &t.out);
    assert_tree_is(&want, &t.out, "restored across cartridges");

    // Killed in the middle, then resumed: the finished tape set restores.
    let t2 = paths();
    for i in 0..3 {
        std::fs::write(t2.src.join(format!("big{i}")), bytes(10 + i, 1_500_000)).unwrap();
    }
    let want = snapshot_tree(&t2.src);
    let mut d2 = Drive::new(t2.dir.path());
    d2.capacity = Some("1M".into());
    let script = changer(t2.dir.path(), &d2.dir);
    let args = [
        "dump",
        "-0",
        "-z",
        "0",
        "-f",
        "/dev/nst0",
        "--new-volume",
        p(&script),
        "--catalog",
        p(&t2.cat),
        p(&t2.src),
    ];
    let o = bin()
        .args(args)
        .env("SNAPDUMP_SIMULATED_ST", &d2.dir)
        .env("SNAPDUMP_SIMULATED_ST_CAPACITY", "1M")
        .env("SNAPDUMP_FAILPOINT", "dump-data:12")
        .output()
        .unwrap();
    assert!(!o.status.success(), "the failpoint was not reached");
    d2.load_first(t2.dir.path());
    let mut resumed = args.to_vec();
    resumed.insert(1, "--resume");
    resumed.insert(2, "--json");
    let v: serde_json::Value = serde_json::from_str(&d2.ok(&resumed)).unwrap();
    assert!(v["resumed_bytes"].as_u64().unwrap_or(0) > 0, "{v}");
    d2.restore_set(t2.dir.path(), &script, &t2.out);
    assert_tree_is(&want, &t2.out, "resumed across cartridges");
}

#[test]
fn a_full_cartridge_without_a_way_to_change_it_stops_with_a_clear_message() {
    let t = paths();
    std::fs::write(t.src.join("big"), bytes(1, 3_000_000)).unwrap();
    let mut d = Drive::new(t.dir.path());
    d.capacity = Some("1M".into());
    let e = d.fails(&[
        "dump",
        "-0",
        "-z",
        "0",
        "-f",
        "/dev/nst0",
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    assert!(e.contains("is full") && e.contains("--new-volume"), "{e}");
    // The catalog records no snapshot: the next dump is a full one again.
    let (_, o, _) = run_s(&["snapshots", "--json", "--catalog", p(&t.cat)]);
    let v: serde_json::Value = serde_json::from_slice(&o).unwrap_or_default();
    assert!(
        v.as_array().is_none_or(|a| a
            .iter()
            .all(|s| s["snapshots"].as_array().is_none_or(|x| x.is_empty()))),
        "{v}"
    );
}

#[test]
fn a_changer_that_leaves_the_same_cartridge_in_never_gets_it_overwritten() {
    let t = paths();
    std::fs::write(t.src.join("big"), bytes(1, 3_000_000)).unwrap();
    let mut d = Drive::new(t.dir.path());
    d.capacity = Some("1M".into());
    let e = d.fails(&[
        "dump",
        "-0",
        "-z",
        "0",
        "-f",
        "/dev/nst0",
        "--new-volume",
        "true",
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    assert!(e.contains("still holds volume 1 of this dump"), "{e}");
    // Volume 1 is still whole on the cartridge.
    let items = d.items();
    assert_eq!(items[0], Some(128));
    assert!(items.len() >= 4, "{items:?}");
}

#[test]
fn an_append_after_a_dump_cut_off_before_its_filemark_is_a_tape_file_of_its_own() {
    let t = paths();
    std::fs::write(t.src.join("f"), b"first").unwrap();
    let big = t.dir.path().join("big");
    std::fs::create_dir(&big).unwrap();
    std::fs::write(big.join("r"), bytes(2, 3_000_000)).unwrap();
    let d = Drive::new(t.dir.path());
    d.ok(&[
        "dump",
        "-0",
        "-f",
        "/dev/nst0",
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    // A second dump cut off mid-way (as by a power loss: no filemark).
    let o = bin()
        .args([
            "dump",
            "-0",
            "-z",
            "0",
            "-f",
            "/dev/nst0",
            "--append",
            "--catalog",
        ])
        .arg(t.dir.path().join("cat2"))
        .arg(&big)
        .env("SNAPDUMP_SIMULATED_ST", &d.dir)
        .env("SNAPDUMP_FAILPOINT", "dump-data:5")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(
        d.items().last().map(|i| i.is_some()),
        Some(true),
        "cut off mid-file"
    );
    std::fs::write(t.src.join("g"), b"third").unwrap();
    let want = snapshot_tree(&t.src);
    d.ok(&[
        "dump",
        "-0",
        "-f",
        "/dev/nst0",
        "--append",
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    // The cut-off dump is tape file 2 (and unreadable); the new one is 3.
    d.ok(&[
        "restore",
        "-r",
        "-f",
        "/dev/nst0",
        "--file-number",
        "3",
        "--target",
        p(&t.out),
    ]);
    assert_tree_is(&want, &t.out, "the dump appended after a cut-off one");
    let o = d.run(&["verify", "-f", "/dev/nst0", "--file-number", "2"]);
    assert_eq!(o.status.code(), Some(2), "the cut-off dump verifies");
}
