//! File flags (`chattr`) and project ids: recorded by dump, restored by
//! restore (full and both increment finishes), immutable and append-only
//! last, lifted while an increment applies, skipped with a warning when
//! restore may not set them, checked by `restore -C`.
//!
//! `C` (no copy on write) needs btrfs and project ids need xfs or ext4
//! with the project feature, so these tests make their own loop-mounted
//! file systems (root only; CI sets SNAPDUMP_REQUIRE_LOOPFS=1).

mod common;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Streams of one source, restored by both finishes, compared each time.
struct FlagChain {
    src: PathBuf,
    cat: PathBuf,
    work: PathBuf,
    streams: Vec<PathBuf>,
}

impl FlagChain {
    fn new(root: &Path) -> FlagChain {
        let c = FlagChain {
            src: root.join("src"),
            cat: root.join("cat"),
            work: root.to_path_buf(),
            streams: Vec::new(),
        };
        fs::create_dir_all(&c.src).unwrap();
        c
    }

    /// Dumps the next level (nodump entries kept, so that the flag itself
    /// travels: `--honor-nodump 10`).
    fn dump(&mut self) -> PathBuf {
        let level = self.streams.len();
        let s = self.work.join(format!("s{level}"));
        let mut args = vec![
            "dump".to_string(),
            format!("-{level}"),
            "-f".into(),
            p(&s).into(),
            "--catalog".into(),
            p(&self.cat).into(),
        ];
        if level == 0 {
            args.extend(["--honor-nodump".into(), "10".into()]);
        }
        args.push(p(&self.src).into());
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let (c, _, e) = run_s(&a);
        assert_eq!(c, 0, "dump -{level}: {e}");
        self.streams.push(s.clone());
        s
    }

    /// Applies the newest stream to `target` (restoring the whole chain
    /// into a new one) and checks it against the source, flags included.
    fn restore(&self, target: &Path, inplace: bool) {
        let first = if target.exists() {
            self.streams.len() - 1
        } else {
            0
        };
        for s in &self.streams[first..] {
            let mut args = vec!["restore", "-r", "-f", p(s), "--target", p(target)];
            if inplace {
                args.push("--inplace");
            }
            let (c, _, e) = run_s(&args);
            assert_eq!(c, 0, "restore of {} (inplace {inplace}): {e}", s.display());
            assert!(!e.contains("warning"), "{e}");
        }
        assert_same_tree(&self.src, target);
        let mut args = vec!["restore", "-C", "--target", p(target)];
        for s in &self.streams {
            args.extend(["-f", p(s)]);
        }
        let (c, out, e) = run_s(&args);
        assert_eq!(c, 0, "restore -C: {e} {}", String::from_utf8_lossy(&out));
    }
}

/// Writes `data` to a file that may be immutable or append-only, lifting
/// the flags around the write as an administrator would.
fn rewrite(path: &Path, data: &[u8], flags: &str) {
    let _ = std::process::Command::new("chattr")
        .args(["-i", "-a"])
        .arg(path)
        .status();
    fs::write(path, data).unwrap();
    chattr(flags, path);
}

#[test]
fn chattr_flags_travel_through_a_chain_and_both_finishes() {
    let t = tmp();
    let Some(fsys) = LoopFs::mount(
        "btrfs",
        &t.path().join("fs.img"),
        &t.path().join("mnt"),
        256,
    ) else {
        return;
    };
    let mut ch = FlagChain::new(&fsys.mnt);
    let s = ch.src.clone();
    for d in ["locked", "append", "nodump", "noatime", "nocow", "plain"] {
        fs::create_dir(s.join(d)).unwrap();
    }
    // C takes only while a file is empty (and is inherited from its dir).
    fs::write(s.join("nocow-file"), b"").unwrap();
    chattr("+C", &s.join("nocow-file"));
    fs::write(s.join("nocow-file"), bytes(1, 300_000)).unwrap();
    chattr("+C", &s.join("nocow"));
    fs::write(s.join("nocow/inherits"), bytes(2, 50_000)).unwrap();
    fs::write(s.join("locked/inside"), b"in an immutable directory").unwrap();
    fs::write(s.join("append/log"), b"line 1\n").unwrap();
    fs::write(s.join("immutable"), bytes(3, 70_000)).unwrap();
    fs::hard_link(s.join("immutable"), s.join("plain/immutable-link")).unwrap();
    fs::write(s.join("appendonly"), b"first\n").unwrap();
    fs::write(s.join("nodump-file"), b"skip me, says the flag").unwrap();
    fs::write(s.join("noatime-file"), b"never read").unwrap();
    fs::write(s.join("plain/file"), b"no flags").unwrap();
    fs::write(s.join("plain/becomes-nocow"), bytes(6, 100_000)).unwrap();
    chattr("+i", &s.join("immutable"));
    chattr("+a", &s.join("appendonly"));
    chattr("+a", &s.join("append/log"));
    chattr("+d", &s.join("nodump-file"));
    chattr("+A", &s.join("noatime-file"));
    chattr("+d +A", &s.join("plain/file"));
    chattr("+i", &s.join("locked"));
    chattr("+a", &s.join("append"));
    chattr("+d", &s.join("nodump"));
    chattr("+A", &s.join("noatime"));
    let atomic = fsys.mnt.join("atomic");
    let inplace = fsys.mnt.join("inplace");
    ch.dump();
    ch.restore(&atomic, false);
    ch.restore(&inplace, true);
    // The restored files are what chattr made them.
    let flags_of = |p: &Path| {
        let d = fsx_dir(p.parent().unwrap());
        let name = p.file_name().unwrap().as_encoded_bytes();
        snapdump::fsx::flags::read_at(d.as_fd_ref(), name, p.is_dir())
            .unwrap()
            .0
    };
    use snapdump::fsx::flags::*;
    assert_eq!(flags_of(&atomic.join("immutable")), IMMUTABLE);
    assert_eq!(flags_of(&atomic.join("locked")), IMMUTABLE);
    assert_eq!(flags_of(&atomic.join("append/log")), APPEND);
    assert_eq!(flags_of(&atomic.join("plain/file")), NODUMP | NOATIME);
    assert_eq!(flags_of(&atomic.join("nocow-file")), NOCOW);
    assert_eq!(flags_of(&atomic.join("nocow/inherits")), NOCOW);

    // Level 1: writes into flagged files and directories (lifted in the
    // source around each change), flags that change alone.
    fs::OpenOptions::new()
        .append(true)
        .open(s.join("append/log"))
        .unwrap();
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(s.join("appendonly"))
            .unwrap();
        f.write_all(b"second\n").unwrap();
    }
    chattr("-i", &s.join("locked"));
    fs::rename(s.join("locked/inside"), s.join("locked/renamed")).unwrap();
    fs::write(s.join("locked/new"), b"added under the lock").unwrap();
    chattr("+i", &s.join("locked/new"));
    chattr("+i", &s.join("locked"));
    rewrite(&s.join("immutable"), &bytes(4, 70_000), "+i");
    chattr("-d", &s.join("nodump-file"));
    chattr("+i", &s.join("plain/file"));
    fs::write(s.join("nocow/second"), bytes(5, 20_000)).unwrap();
    // The same blocks, now in a no-CoW file: a restore cannot keep the old
    // file (C takes only on an empty one).
    let fresh = s.join("plain/becomes-nocow.new");
    fs::write(&fresh, b"").unwrap();
    chattr("+C", &fresh);
    let mut data = bytes(6, 100_000);
    data.extend_from_slice(b"and a little more");
    fs::write(&fresh, &data).unwrap();
    fs::rename(&fresh, s.join("plain/becomes-nocow")).unwrap();
    ch.dump();
    ch.restore(&atomic, false);
    ch.restore(&inplace, true);

    // Level 2: flagged entries go, a flagged directory goes whole, flags
    // come off.
    chattr("-i", &s.join("locked"));
    chattr("-i", &s.join("locked/new"));
    fs::remove_dir_all(s.join("locked")).unwrap();
    chattr("-a", &s.join("append"));
    chattr("-a", &s.join("append/log"));
    fs::remove_file(s.join("append/log")).unwrap();
    chattr("-i", &s.join("immutable"));
    fs::remove_file(s.join("plain/immutable-link")).unwrap();
    chattr("-i -d -A", &s.join("plain/file"));
    ch.dump();
    ch.restore(&atomic, false);
    ch.restore(&inplace, true);
}

/// Opens a directory for `flags_of`.
fn fsx_dir(p: &Path) -> std::os::fd::OwnedFd {
    snapdump::fsx::open_dir_path(p).unwrap()
}

trait AsFdRef {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_>;
}
impl AsFdRef for std::os::fd::OwnedFd {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.as_fd()
    }
}

/// A kill at any step of an increment that lifted flags: the rerun
/// finishes it, flags and all; a damaged increment is undone with the
/// flags back on.
#[test]
fn a_killed_or_refused_increment_leaves_the_flags_on() {
    let t = tmp();
    let Some(fsys) = LoopFs::mount("ext4", &t.path().join("fs.img"), &t.path().join("mnt"), 64)
    else {
        return;
    };
    let mut ch = FlagChain::new(&fsys.mnt);
    let s = ch.src.clone();
    fs::create_dir(s.join("locked")).unwrap();
    fs::write(s.join("locked/a"), bytes(1, 40_000)).unwrap();
    fs::write(s.join("big"), bytes(2, 600_000)).unwrap();
    fs::write(s.join("log"), b"one\n").unwrap();
    chattr("+i", &s.join("locked/a"));
    chattr("+i", &s.join("locked"));
    chattr("+i", &s.join("big"));
    chattr("+a", &s.join("log"));
    ch.dump();
    chattr("-i", &s.join("locked"));
    fs::write(s.join("locked/b"), b"new").unwrap();
    chattr("+i", &s.join("locked"));
    let mut big = bytes(2, 600_000);
    big[300_000..300_100].copy_from_slice(&[9; 100]);
    rewrite(&s.join("big"), &big, "+i");
    rewrite(&s.join("log"), b"one\ntwo\n", "+a");
    let s1 = ch.dump();
    // A damaged increment: refused, the target keeps its flags.
    let bad = fsys.mnt.join("s1-damaged");
    let mut b = fs::read(&s1).unwrap();
    let n = b.len();
    b[n / 2] ^= 0xff;
    fs::write(&bad, &b).unwrap();
    for inplace in [false, true] {
        let target = fsys.mnt.join(format!("refused-{inplace}"));
        let (c, _, e) = run_s(&[
            "restore",
            "-r",
            "-f",
            p(&ch.streams[0]),
            "--target",
            p(&target),
        ]);
        assert_eq!(c, 0, "{e}");
        let before = snapshot_tree(&target);
        let mut args = vec!["restore", "-r", "-f", p(&bad), "--target", p(&target)];
        if inplace {
            args.push("--inplace");
        }
        let (c, _, e) = run_s(&args);
        assert_ne!(c, 0, "a damaged increment applied");
        assert!(e.contains("unchanged"), "{e}");
        assert_eq!(snapshot_tree(&target), before, "inplace {inplace}");
    }
    let points: &[(&str, bool)] = &[
        ("apply-checked", false),
        ("apply-privatize", false),
        ("apply-exchange", false),
        ("apply-exchanged", false),
        ("apply-checked", true),
        ("apply-spool", true),
        ("apply-swap-out", true),
        ("apply-swap-in", true),
        ("apply-commit", true),
    ];
    for &(point, inplace) in points {
        let target = fsys.mnt.join(format!("t-{point}-{inplace}"));
        let (c, _, e) = run_s(&[
            "restore",
            "-r",
            "-f",
            p(&ch.streams[0]),
            "--target",
            p(&target),
        ]);
        assert_eq!(c, 0, "{e}");
        let mut args = vec!["restore", "-r", "-f", p(&s1), "--target", p(&target)];
        if inplace {
            args.push("--inplace");
        }
        let out = bin()
            .args(&args)
            .env("SNAPDUMP_FAILPOINT", format!("{point}:1"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point} was not reached");
        let (c, _, e) = run_s(&args);
        assert_eq!(c, 0, "rerun after {point} (inplace {inplace}): {e}");
        assert_same_tree(&s, &target);
        let beside = fsys.mnt.join(format!(".t-{point}-{inplace}.snapdump-next"));
        assert!(!beside.exists(), "{point}: the old tree is left");
    }
}

/// Restore as a user other than root: immutable and append-only cannot be
/// set (CAP_LINUX_IMMUTABLE), so they are skipped with one warning naming
/// the first entry; the flags a file's owner may set still are.
#[test]
fn a_restore_that_may_not_set_flags_says_so_and_sets_the_rest() {
    let t = tmp();
    let Some(fsys) = LoopFs::mount("ext4", &t.path().join("fs.img"), &t.path().join("mnt"), 32)
    else {
        return;
    };
    let mut ch = FlagChain::new(&fsys.mnt);
    let s = ch.src.clone();
    fs::write(s.join("locked"), b"immutable").unwrap();
    fs::write(s.join("quiet"), b"nodump noatime").unwrap();
    chattr("+i +d", &s.join("locked"));
    chattr("+d +A", &s.join("quiet"));
    let s0 = ch.dump();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let home = fsys.mnt.join("home");
    fs::create_dir(&home).unwrap();
    let nobody = 65534;
    std::os::unix::fs::chown(&home, Some(nobody), Some(nobody)).unwrap();
    std::os::unix::fs::chown(&s0, Some(nobody), Some(nobody)).unwrap();
    let target = home.join("out");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin_path())
        .args(["restore", "-r", "-f", p(&s0), "--target", p(&target)])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a warning, not a failure: {e}");
    assert!(
        e.contains("file flags of 1 entries not restored")
            && e.contains("not running as root")
            && e.contains("locked"),
        "{e}"
    );
    let d = fsx_dir(&target);
    use snapdump::fsx::flags::*;
    let f = |n: &str| read_at(d.as_fd_ref(), n.as_bytes(), false).unwrap().0;
    assert_eq!(f("locked"), NODUMP, "the flags it may set are set");
    assert_eq!(f("quiet"), NODUMP | NOATIME);
    assert_eq!(fs::read(target.join("locked")).unwrap(), b"immutable");
}

/// Project ids (xfs) and the project-inheritance flag.
#[test]
fn project_ids_are_restored() {
    let t = tmp();
    let Some(fsys) = LoopFs::mount("xfs", &t.path().join("fs.img"), &t.path().join("mnt"), 320)
    else {
        return;
    };
    let mut ch = FlagChain::new(&fsys.mnt);
    let s = ch.src.clone();
    fs::create_dir(s.join("proj")).unwrap();
    chattr("-p 42 +P", &s.join("proj"));
    fs::write(s.join("proj/inherits"), b"project 42").unwrap();
    fs::write(s.join("own"), b"project 7").unwrap();
    chattr("-p 7", &s.join("own"));
    let target = fsys.mnt.join("out");
    ch.dump();
    ch.restore(&target, false);
    let d = fsx_dir(&target);
    let (flags, projid) = snapdump::fsx::flags::read_at(d.as_fd_ref(), b"proj", true).unwrap();
    assert_eq!((flags, projid), (snapdump::fsx::flags::PROJINHERIT, 42));
    chattr("-p 8", &s.join("own"));
    ch.dump();
    ch.restore(&target, true);
}
