//! The change tracker through the real binary, on loop-mounted ext4, xfs
//! and btrfs: every kind of change under the tracker, each increment built
//! from it and checked against a walk (`--verify-tracker`), and the chain
//! restored exactly. Root only (fanotify file-system marks, BPF, loop
//! mounts); skipped otherwise unless SNAPDUMP_REQUIRE_LOOPFS is set.

mod common;
use common::*;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A running tracker, stopped when dropped.
struct Tracker {
    cat: PathBuf,
    src: PathBuf,
}

impl Tracker {
    fn start(cat: &Path, src: &Path, extra: &[&str]) -> Tracker {
        let mut args = vec!["track", "start", "--catalog", p(cat)];
        args.extend_from_slice(extra);
        args.push(p(src));
        let (c, out, e) = run_s(&args);
        assert_eq!(c, 0, "track start: {e}");
        assert!(String::from_utf8_lossy(&out).contains("tracking"), "{e}");
        Tracker {
            cat: cat.to_path_buf(),
            src: src.to_path_buf(),
        }
    }

    fn status(&self) -> serde_json::Value {
        let (c, out, e) = run_s(&[
            "track",
            "status",
            "--json",
            "--catalog",
            p(&self.cat),
            p(&self.src),
        ]);
        assert_eq!(c, 0, "track status: {e}");
        serde_json::from_slice::<serde_json::Value>(&out).unwrap()[0].clone()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = run_s(&["track", "stop", "--catalog", p(&self.cat), p(&self.src)]);
        // A stop that failed (a test that broke the tracker's directory
        // or source on purpose) must not leave a daemon running after the
        // suite: kill, by process id, any tracker still naming this test's
        // catalog.
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for e in procs.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            let ours = args.windows(2).any(|w| w == [&b"track"[..], &b"start"[..]])
                && args.iter().any(|a| *a == p(&self.cat).as_bytes());
            if ours {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// A dump's `--json` summary (panics with stderr on failure).
fn dump_json(
    level: u8,
    out: &Path,
    cat: &Path,
    src: &Path,
    extra: &[&str],
) -> (serde_json::Value, String) {
    let lvl = format!("-{level}");
    let mut args = vec![
        "dump",
        lvl.as_str(),
        "-f",
        p(out),
        "--catalog",
        p(cat),
        "--json",
    ];
    args.extend_from_slice(extra);
    args.push(p(src));
    let (c, o, e) = run_s(&args);
    assert!(c == 0 || c == 1, "dump -{level} failed ({c}): {e}");
    (
        serde_json::from_slice(&o).unwrap_or_else(|_| panic!("no json: {e}")),
        e,
    )
}

fn write_at(path: &Path, off: u64, data: &[u8]) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(data, off)
        .unwrap();
}

fn fallocate(path: &Path, mode: libc::c_int, off: i64, len: i64) -> bool {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    // SAFETY: plain system call on an open descriptor.
    unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) == 0 }
}

/// Stores through a shared writable mapping.
fn mmap_write(path: &Path, off: usize, data: &[u8]) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = f.metadata().unwrap().len() as usize;
    Mapping::new(&f, len).copy(off, data);
}

/// One aligned O_DIRECT write of 4 KiB at `off`.
fn direct_write(path: &Path, off: u64, seed: u64) {
    let f = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let start = (4096 - (buf.as_ptr() as usize % 4096)) % 4096;
    buf[start..start + 4096].copy_from_slice(&bytes(seed, 4096));
    f.write_all_at(&buf[start..start + 4096], off).unwrap();
}

fn reflink_range(from: &Path, to: &Path, src_off: u64, len: u64, dst_off: u64) -> bool {
    let a = fs::File::open(from).unwrap();
    let b = fs::OpenOptions::new().write(true).open(to).unwrap();
    #[repr(C)]
    struct Range {
        fd: i64,
        src_offset: u64,
        src_length: u64,
        dest_offset: u64,
    }
    let r = Range {
        fd: a.as_raw_fd() as i64,
        src_offset: src_off,
        src_length: len,
        dest_offset: dst_off,
    };
    // SAFETY: FICLONERANGE with a valid struct file_clone_range.
    unsafe { libc::ioctl(b.as_raw_fd(), 0x4020_940d, &r) == 0 }
}

fn copy_range(from: &Path, to: &Path, src_off: i64, len: usize, dst_off: i64) {
    let a = fs::File::open(from).unwrap();
    let b = fs::OpenOptions::new().write(true).open(to).unwrap();
    let (mut so, mut dof) = (src_off, dst_off);
    // SAFETY: copy_file_range between two open descriptors.
    let n =
        unsafe { libc::copy_file_range(a.as_raw_fd(), &mut so, b.as_raw_fd(), &mut dof, len, 0) };
    assert!(
        n > 0,
        "copy_file_range: {}",
        std::io::Error::last_os_error()
    );
}

fn build(s: &Path) {
    build_change_tree(s);
    fs::write(s.join("large"), bytes(10, 8 << 20)).unwrap();
    fs::write(s.join("mapped"), bytes(11, 1 << 20)).unwrap();
    fs::write(s.join("direct"), bytes(12, 1 << 20)).unwrap();
    fs::write(s.join("ranges"), bytes(13, 1 << 20)).unwrap();
    fs::write(s.join("clone-src"), bytes(14, 256 << 10)).unwrap();
    fs::write(s.join("clone-dst"), bytes(15, 256 << 10)).unwrap();
    fs::create_dir_all(s.join("tree/deep/er")).unwrap();
    for i in 0..40 {
        fs::write(
            s.join(format!("tree/deep/f{i}")),
            bytes(100 + i, 3000 + i as usize * 97),
        )
        .unwrap();
    }
    fs::write(s.join("tree/deep/er/leaf"), b"leaf").unwrap();
}

/// The rounds of changes; each is followed by an increment.
type Change = Box<dyn Fn(&Path)>;

fn rounds(kind: &str) -> Vec<Change> {
    let reflinks = kind != "ext4";
    let shifts = kind != "btrfs";
    vec![
        // The classic set: rewrite, append, truncate, renames, deletes,
        // type changes, links, attributes, a punched hole, a symlink.
        Box::new(|s: &Path| {
            mutate_for_level_1(s);
        }),
        // Scattered writes into a large file, an mmap store, a direct write.
        Box::new(|s: &Path| {
            for i in 0..20u64 {
                write_at(&s.join("large"), i * 397 * 1024 + 13, &bytes(200 + i, 100));
            }
            mmap_write(&s.join("mapped"), 300_000, b"mapped store");
            direct_write(&s.join("direct"), 65536, 300);
        }),
        // Writes into folios readahead left large (ext4 marks them at the
        // writes' ranges), then what a dirty folio hides: a store through
        // a mapping made after a write, into that write's folio; a cut
        // inside a written folio, the file grown back to its size.
        Box::new(|s: &Path| {
            let l = s.join("large");
            evict(&l);
            fs::read(&l).unwrap();
            write_at(&l, 1605 * 4096 + 5, b"write");
            mmap_write(&l, 1606 * 4096 + 9, b"store after the write");
            write_at(&l, 1905 * 4096 + 17, b"w");
            let f = fs::OpenOptions::new().write(true).open(&l).unwrap();
            f.set_len(1900 * 4096 + 100).unwrap();
            f.set_len(8 << 20).unwrap();
        }),
        // fallocate modes and shrinking and growing truncations.
        Box::new(move |s: &Path| {
            let r = s.join("ranges");
            assert!(fallocate(
                &r,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                8192,
                16384
            ));
            assert!(fallocate(&r, libc::FALLOC_FL_ZERO_RANGE, 65536, 20000));
            if shifts {
                assert!(fallocate(
                    &r,
                    libc::FALLOC_FL_COLLAPSE_RANGE,
                    4096 * 40,
                    4096 * 4
                ));
                assert!(fallocate(
                    &r,
                    libc::FALLOC_FL_INSERT_RANGE,
                    4096 * 60,
                    4096 * 2
                ));
            }
            let f = fs::OpenOptions::new().write(true).open(&r).unwrap();
            f.set_len(500_000).unwrap();
            f.set_len(700_000).unwrap();
            drop(f);
            // Cut to nothing and grown back: the same size, all holes.
            let z = s.join("a/app");
            let len = fs::metadata(&z).unwrap().len();
            let f = fs::OpenOptions::new().write(true).open(&z).unwrap();
            f.set_len(0).unwrap();
            f.set_len(len).unwrap();
            drop(f);
            let t = s.join("large");
            let f = fs::OpenOptions::new().write(true).open(&t).unwrap();
            f.set_len(3 << 20).unwrap();
            f.set_len(4 << 20).unwrap();
            write_at(&t, (3 << 20) + 8192, &bytes(400, 5000));
        }),
        // Copies between files: copy_file_range and, where the file system
        // shares blocks, reflinks.
        Box::new(move |s: &Path| {
            copy_range(&s.join("clone-src"), &s.join("clone-dst"), 0, 20000, 40960);
            if reflinks {
                assert!(reflink_range(
                    &s.join("clone-src"),
                    &s.join("clone-dst"),
                    65536,
                    65536,
                    131072
                ));
                assert!(reflink_range(
                    &s.join("clone-src"),
                    &s.join("mapped"),
                    0,
                    65536,
                    0
                ));
            }
        }),
        // The name space and metadata: moves across directories (a whole
        // subtree too), hard links made and broken, mode, owner, times,
        // xattrs, new and removed subtrees, a type change.
        Box::new(|s: &Path| {
            fs::rename(s.join("tree/deep"), s.join("a/deep-moved")).unwrap();
            fs::hard_link(s.join("a/deep-moved/f1"), s.join("tree/f1-link")).unwrap();
            fs::remove_file(s.join("a/deep-moved/f2")).unwrap();
            fs::set_permissions(s.join("a/deep-moved/f3"), fs::Permissions::from_mode(0o640))
                .unwrap();
            std::os::unix::fs::chown(s.join("a/deep-moved/f4"), Some(1234), Some(5678)).unwrap();
            set_times(&s.join("a/deep-moved/f5"), (1_000_000, 0), (2_000_000, 5));
            assert!(setxattr(&s.join("a/deep-moved/f6"), "user.tag", b"v1"));
            fs::create_dir_all(s.join("new/sub")).unwrap();
            fs::write(s.join("new/sub/n"), b"new file").unwrap();
            fs::remove_dir_all(s.join("a/deep-moved/er")).unwrap();
            fs::remove_file(s.join("a/deep-moved/f7")).unwrap();
            fs::create_dir(s.join("a/deep-moved/f7")).unwrap();
            std::os::unix::fs::symlink("nowhere", s.join("new/dangling")).unwrap();
        }),
        // Nothing at all.
        Box::new(|_s: &Path| {}),
    ]
}

fn chain_on(kind: &str) {
    let t = tmp();
    let Some(fsys) = LoopFs::mount(kind, &t.path().join("fs.img"), &t.path().join("mnt"), 512)
    else {
        return;
    };
    let src = fsys.mnt.join("src");
    fs::create_dir(&src).unwrap();
    build(&src);
    let cat = t.path().join("cat");
    let tracker = Tracker::start(&cat, &src, &[]);
    let st = tracker.status();
    assert_eq!(st["file_system"], kind);
    let s = |i: usize| t.path().join(format!("s{i}"));
    let (j, _) = dump_json(0, &s(0), &cat, &src, &[]);
    assert_eq!(j["tracker"]["used"], false);
    for (i, change) in rounds(kind).into_iter().enumerate() {
        change(&src);
        let level = (i + 1) as u8;
        let (j, e) = dump_json(level, &s(i + 1), &cat, &src, &["--verify-tracker"]);
        assert_eq!(j["tracker"]["used"], true, "{kind} round {}: {e}", i + 1);
        assert_eq!(
            j["tracker"]["verified"],
            true,
            "{kind} round {}: {e}",
            i + 1
        );
    }
    // The same once more, without the walk beside it: what the tracker
    // alone builds restores exactly too.
    fs::write(src.join("new/after"), b"after").unwrap();
    write_at(&src.join("large"), 12345, b"late write");
    let n = rounds(kind).len() + 1;
    let (j, e) = dump_json(9, &s(n), &cat, &src, &[]);
    assert_eq!(j["tracker"]["used"], true, "{e}");
    let target = t.path().join("target");
    for i in 0..=n {
        let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s(i)), "--target", p(&target)]);
        assert_eq!(c, 0, "restore s{i}: {e}");
    }
    // A zeroed range is allocated on the source and a hole after the
    // restore (zero blocks are stored as holes): compare its bytes only.
    let mut want = snapshot_tree(&src);
    let got = snapshot_tree(&target);
    // Reading a symlink (the snapshot above) moves its atime.
    for (k, e) in want.iter_mut() {
        if e.target.is_some() {
            e.atime = got[k].atime;
        }
    }
    want.get_mut(&b"ranges"[..]).unwrap().data_runs = got[&b"ranges"[..]].data_runs.clone();
    want.get_mut(&b"."[..]).unwrap().mtime = got[&b"."[..]].mtime;
    let keys =
        |m: &std::collections::BTreeMap<Vec<u8>, Entry>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&want), keys(&got), "{kind}: different entries");
    for (k, w) in &want {
        assert!(
            w == &got[k],
            "{kind}: entry {} differs: {}",
            String::from_utf8_lossy(k),
            describe_diff(w, &got[k])
        );
    }
    drop(tracker);
}

#[test]
fn chain_under_the_tracker_on_ext4() {
    chain_on("ext4");
}

#[test]
fn chain_under_the_tracker_on_xfs() {
    chain_on("xfs");
}

#[test]
fn chain_under_the_tracker_on_btrfs() {
    chain_on("btrfs");
}

/// Tracker tests that change fanotify's queue limit run one at a time
/// (a tracker started meanwhile would get the small queue).
fn serial() -> std::fs::File {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/snapdump-track-tests.lock")
        .unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    f
}

/// A small tracked tree on a loop-mounted ext4 with its level 0 taken.
struct Setup {
    t: tempfile::TempDir,
    _fsys: LoopFs,
    src: PathBuf,
    cat: PathBuf,
    n: usize,
}

impl Setup {
    fn new(extra: &[&str]) -> Option<(Setup, Tracker)> {
        let t = tmp();
        let fsys = LoopFs::mount("ext4", &t.path().join("fs.img"), &t.path().join("mnt"), 256)?;
        let src = fsys.mnt.join("src");
        fs::create_dir(&src).unwrap();
        build_change_tree(&src);
        let cat = t.path().join("cat");
        let tracker = Tracker::start(&cat, &src, extra);
        let mut s = Setup {
            t,
            _fsys: fsys,
            src,
            cat,
            n: 0,
        };
        s.dump(&[]);
        Some((s, tracker))
    }
    fn stream(&self, i: usize) -> PathBuf {
        self.t.path().join(format!("s{i}"))
    }
    /// The next dump (level 0 first, then 1, 2, ...).
    fn dump(&mut self, extra: &[&str]) -> (serde_json::Value, String) {
        let r = dump_json(
            (self.n.min(9)) as u8,
            &self.stream(self.n),
            &self.cat,
            &self.src,
            extra,
        );
        self.n += 1;
        r
    }
    /// Restores the chain and compares it with the source.
    fn check_chain(&self) {
        let target = self.t.path().join("target");
        for i in 0..self.n {
            let (c, _, e) = run_s(&[
                "restore",
                "-r",
                "-f",
                p(&self.stream(i)),
                "--target",
                p(&target),
            ]);
            assert_eq!(c, 0, "restore s{i}: {e}");
        }
        assert_same_tree_links_read(&self.src, &target);
    }
}

#[test]
fn a_queue_overflow_falls_back_to_the_walk() {
    let _lock = serial();
    let limit = "/proc/sys/fs/fanotify/max_queued_events";
    let Ok(old) = fs::read_to_string(limit) else {
        return;
    };
    if !is_root() {
        return;
    }
    fs::write(limit, "64").unwrap();
    let started = Setup::new(&[]);
    fs::write(limit, old.trim()).unwrap();
    let Some((mut s, tracker)) = started else {
        return;
    };
    // The daemon stopped reading: 500 creations overflow its queue of 64.
    let pid = tracker.status()["pid"].as_i64().unwrap() as i32;
    // SAFETY: signals to the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    fs::create_dir(s.src.join("many")).unwrap();
    for i in 0..500 {
        fs::write(s.src.join(format!("many/{i}")), format!("{i}")).unwrap();
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(tracker.status()["lost"]
        .as_str()
        .unwrap_or("")
        .contains("overflow"));
    let (j, e) = s.dump(&[]);
    assert_eq!(j["tracker"]["used"], false, "{e}");
    assert!(
        j["tracker"]["walked_because"]
            .as_str()
            .unwrap()
            .contains("overflowed"),
        "{j}"
    );
    assert_eq!(
        e.lines()
            .filter(|l| l.contains("change tracker cannot be used"))
            .count(),
        1,
        "one line saying why: {e}"
    );
    // The walk's snapshot is a base the tracker continues from.
    fs::write(s.src.join("many/after"), b"after").unwrap();
    let (j, e) = s.dump(&["--verify-tracker"]);
    assert_eq!(j["tracker"]["used"], true, "{e}");
    s.check_chain();
}

#[test]
fn a_restarted_tracker_and_a_full_map_fall_back_to_the_walk() {
    let _lock = serial();
    let Some((mut s, tracker)) = Setup::new(&["--max-ranges", "16"]) else {
        return;
    };
    // More dirty pages than the map has room for.
    for i in 0..64 {
        fs::write(s.src.join(format!("f{i}")), bytes(i, 5000)).unwrap();
    }
    let (j, e) = s.dump(&[]);
    assert_eq!(j["tracker"]["used"], false, "{e}");
    assert!(
        j["tracker"]["walked_because"]
            .as_str()
            .unwrap()
            .contains("full"),
        "{j}"
    );
    // Restarted: whatever happened while none ran is unknown.
    drop(tracker);
    fs::write(s.src.join("unseen"), b"written while no tracker ran").unwrap();
    let tracker = Tracker::start(&s.cat, &s.src, &[]);
    let (j, e) = s.dump(&[]);
    assert_eq!(j["tracker"]["used"], false, "{e}");
    assert!(
        j["tracker"]["walked_because"]
            .as_str()
            .unwrap()
            .contains("restarted"),
        "{j}"
    );
    // --no-tracker walks and records no epoch: the next one walks too.
    fs::write(s.src.join("unseen2"), b"x").unwrap();
    let (j, _) = s.dump(&["--no-tracker"]);
    assert!(j.get("tracker").is_none() || j["tracker"].is_null(), "{j}");
    let (j, _) = s.dump(&[]);
    assert_eq!(j["tracker"]["used"], false);
    // A dump killed after its swap: the next one takes in both epochs.
    fs::write(s.src.join("before-kill"), b"1").unwrap();
    let lvl = format!("-{}", s.n);
    let o = std::process::Command::new(bin_path())
        .args([
            "dump",
            &lvl,
            "-f",
            p(&s.stream(99)),
            "--catalog",
            p(&s.cat),
            p(&s.src),
        ])
        .env("SNAPDUMP_FAILPOINT", "dump-after-swap:1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    fs::write(s.src.join("after-kill"), b"2").unwrap();
    write_at(&s.src.join("big"), 4096, b"rewritten after the kill");
    let (j, e) = s.dump(&["--verify-tracker"]);
    assert_eq!(j["tracker"]["used"], true, "{e}");
    assert_eq!(j["tracker"]["verified"], true, "{e}");
    // A tracker killed: the dump walks and says so.
    let pid = tracker.status()["pid"].as_i64().unwrap() as i32;
    // SAFETY: a signal to the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(200));
    fs::write(s.src.join("after-the-tracker"), b"3").unwrap();
    let (j, e) = s.dump(&[]);
    assert!(e.contains("is gone"), "{e}");
    // --json says so too, not only the warning.
    assert_eq!(j["tracker"]["used"], false, "{j}");
    assert!(
        j["tracker"]["walked_because"]
            .as_str()
            .is_some_and(|w| w.contains("is gone")),
        "{j}"
    );
    s.check_chain();
    drop(tracker);
}

#[test]
fn an_unchanged_tree_is_not_walked() {
    let _lock = serial();
    let Some((mut s, _tracker)) = Setup::new(&[]) else {
        return;
    };
    let (j, e) = s.dump(&["--verify-tracker"]);
    assert_eq!(j["tracker"]["used"], true, "{e}");
    let (j, e) = s.dump(&[]);
    assert_eq!(j["tracker"]["used"], true, "{e}");
    assert_eq!(j["files_compared"], 0, "{j}");
    assert_eq!(j["data_blocks"], 0, "{j}");
    // Status and refusals.
    let (c, _, e) = run_s(&["track", "start", "--catalog", p(&s.cat), p(&s.src)]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("already tracked"), "{e}");
    let (c, _, e) = run_s(&["track", "start", "--catalog", p(&s.cat), "/dev/shm"]);
    assert_eq!(c, 2);
    assert!(e.contains("cannot follow"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    s.check_chain();
}

/// Pages of `path` the kernel holds dirty (`cachestat(2)`).
fn dirty_pages(path: &Path) -> u64 {
    let f = fs::File::open(path).unwrap();
    let range = [0u64, 0]; // offset, length: the whole file
    let mut stat = [0u64; 5]; // cache, dirty, writeback, evicted, recently evicted
    const SYS_CACHESTAT: libc::c_long = 451;
    // SAFETY: cachestat fills the five counters of `stat`.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            f.as_raw_fd(),
            range.as_ptr(),
            stat.as_mut_ptr(),
            0,
        )
    };
    assert_eq!(r, 0, "cachestat: {}", std::io::Error::last_os_error());
    stat[1]
}

/// On ext4 a dump's swap writes back only files with writable shared
/// mappings: a file written just before stays dirty (the user's write-back
/// is the kernel's business), while stores through a mapping kept across
/// the dumps, into entries made writable epochs ago, are each seen by the
/// next increment, and the chain restores exactly.
#[test]
fn a_mapping_kept_across_dumps_is_seen_by_each_increment() {
    let _lock = serial();
    let Some((mut s, _tracker)) = Setup::new(&[]) else {
        return;
    };
    let mapped = s.src.join("mapped");
    fs::write(&mapped, vec![0u8; 1 << 20]).unwrap();
    let (j, e) = s.dump(&["--verify-tracker"]);
    assert_eq!(j["tracker"]["verified"], true, "{e}");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&mapped)
        .unwrap();
    let m = Mapping::new(&f, 1 << 20);
    let written = s.src.join("written");
    fs::write(&written, b"").unwrap();
    for round in 0..4u8 {
        // The same pages each round: after the first, their entries are
        // writable unless the swap wrote the file back.
        m.store(4096 * 3 + round as usize, round + 1);
        m.store(4096 * 200, round + 1);
        // Written in place (a file truncated and rewritten is flushed by
        // ext4 at its close: auto_da_alloc).
        write_at(&written, 0, &vec![round + 1; 256 << 10]);
        let extra: &[&str] = if round % 2 == 0 {
            &["--verify-tracker"]
        } else {
            &[]
        };
        let (j, e) = s.dump(extra);
        assert_eq!(j["tracker"]["used"], true, "round {round}: {e}");
        assert!(
            j["data_blocks"].as_u64().unwrap() >= 2,
            "round {round}: the stores were not carried: {j}"
        );
        assert!(
            dirty_pages(&written) > 0,
            "round {round}: the swap wrote back a file nothing maps"
        );
    }
    drop(m);
    s.check_chain();
}

/// More mapped files in one epoch than a swap opens one by one: it syncs
/// the whole file system instead (an unmapped file written before is clean
/// after the dump), and the increment is still exact.
#[test]
fn a_swap_past_its_write_back_limit_syncs_the_file_system() {
    let _lock = serial();
    let Some((mut s, _tracker)) = Setup::new(&[]) else {
        return;
    };
    let many = s.src.join("many");
    fs::create_dir(&many).unwrap();
    let n = snapdump::track::daemon::MAX_WRITE_BACKS + 10;
    for i in 0..n {
        fs::write(many.join(format!("{i}")), vec![0u8; 4096]).unwrap();
    }
    let written = s.src.join("written");
    fs::write(&written, b"").unwrap();
    let (j, e) = s.dump(&[]);
    assert_eq!(j["tracker"]["used"], true, "{e}");
    for i in 0..n {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(many.join(format!("{i}")))
            .unwrap();
        Mapping::new(&f, 4096).store(i % 4096, 1 + (i % 250) as u8);
    }
    write_at(&written, 0, &vec![5u8; 64 << 10]);
    assert!(dirty_pages(&written) > 0);
    let (j, e) = s.dump(&["--verify-tracker"]);
    assert_eq!(j["tracker"]["used"], true, "{e}");
    assert_eq!(j["tracker"]["verified"], true, "{e}");
    assert_eq!(
        dirty_pages(&written),
        0,
        "the swap did not sync the file system"
    );
    s.check_chain();
}

/// A mapped file whose generation changes (`chattr -v`, allowed without
/// metadata_csum) after the fault that named it is still written back at
/// the swap: the stores after it, through the same entries, are in the
/// next increment (a hostile test found them lost when the swap opened
/// the file by its old generation).
#[test]
fn a_mapped_file_whose_generation_changed_is_still_written_back() {
    let _lock = serial();
    let t = tmp();
    let Some(fsys) = Ext4With::new(t.path(), "^metadata_csum") else {
        return;
    };
    let src = fsys.mnt.join("src");
    fs::create_dir(&src).unwrap();
    let a = src.join("a");
    fs::write(&a, vec![0u8; 4 << 20]).unwrap();
    let cat = t.path().join("cat");
    let _tracker = Tracker::start(&cat, &src, &[]);
    let s = |i: usize| t.path().join(format!("s{i}"));
    dump_json(0, &s(0), &cat, &src, &[]);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&a)
        .unwrap();
    let m = Mapping::new(&f, 4 << 20);
    m.copy(100, b"first     ");
    m.store(8192, 1);
    let ok = std::process::Command::new("chattr")
        .args(["-v", "777", p(&a)])
        .status()
        .is_ok_and(|st| st.success());
    assert!(ok, "chattr -v failed");
    let (j, e) = dump_json(1, &s(1), &cat, &src, &[]);
    assert_eq!(j["tracker"]["used"], true, "{e}");
    m.copy(200, b"second    ");
    m.store(8192, 2);
    let (j, e) = dump_json(2, &s(2), &cat, &src, &[]);
    assert_eq!(j["tracker"]["used"], true, "{e}");
    drop(m);
    let target = t.path().join("target");
    for i in 0..3 {
        let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s(i)), "--target", p(&target)]);
        assert_eq!(c, 0, "restore s{i}: {e}");
    }
    assert!(
        fs::read(&a).unwrap() == fs::read(target.join("a")).unwrap(),
        "the stores after the generation change were lost"
    );
}

/// One write of an epoch: file, byte offset, length, and whether it is a
/// store through a shared mapping.
#[derive(Clone, Debug)]
struct Op {
    file: usize,
    offset: u64,
    len: usize,
    mmap: bool,
    seed: u64,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    (
        0usize..3,
        0u64..(60 * 4096),
        1usize..9000,
        proptest::bool::weighted(0.25),
        any::<u64>(),
    )
        .prop_map(|(file, offset, len, mmap, seed)| Op {
            file,
            offset,
            len,
            mmap,
            seed,
        })
}

/// Keeps this thread on CPU 0: a write's record and the folio it dirties
/// are then seen on the same CPU. (A migration between them marks the
/// whole folio, which is safe but not the precision these tests measure.)
fn pin_to_one_cpu() {
    // SAFETY: a CPU set of this thread, zeroed then one bit set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Drops a file's cached pages, so the next writes start small folios.
fn evict(path: &Path) {
    let f = fs::File::open(path).unwrap();
    // SAFETY: plain advice on an open descriptor.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, .. Default::default() })]

    /// Random writes across swaps made as the daemon makes them, against
    /// the kernel maps directly, into pages evicted, cached (in the folios
    /// readahead made) or left dirty by the epoch before, with one file
    /// perhaps mapped throughout: the frozen map of each epoch holds every
    /// page whose bytes changed (none missed), and, for a file not mapped
    /// in that epoch, nothing but the pages written (ext4 leaves a folio a
    /// write dirtied to the write's range).
    #[test]
    fn the_two_maps_hold_exactly_the_written_pages(
        epochs in proptest::collection::vec(proptest::collection::vec(op(), 0..12), 2..4),
        warm in proptest::bool::ANY,
        keep_mapped in proptest::bool::ANY,
        keep_dirty in proptest::bool::ANY,
    ) {
        use snapdump::track::kernel::{kernel_dev, Kernel};
        use std::collections::{BTreeSet, HashMap};
        use std::os::unix::fs::MetadataExt;
        let _lock = serial();
        pin_to_one_cpu();
        let t = tmp();
        let Some(fsys) = LoopFs::mount("ext4", &t.path().join("fs.img"), &t.path().join("mnt"), 64) else {
            return Ok(());
        };
        // Evicted pages, or pages read back into the cache; or, between
        // epochs, the pages left as they are (dirty ones stay dirty across
        // the swap, so later writes into them raise no dirty event).
        let evict_and_read = |f: &Path| {
            evict(f);
            if warm {
                fs::read(f).unwrap();
            }
        };
        let files: Vec<PathBuf> = (0..3).map(|i| fsys.mnt.join(format!("f{i}"))).collect();
        for (i, f) in files.iter().enumerate() {
            fs::write(f, bytes(i as u64, 64 * 4096)).unwrap();
            fs::File::open(f).unwrap().sync_all().unwrap();
            evict_and_read(f);
        }
        let settle = |f: &Path| {
            if !keep_dirty {
                evict_and_read(f);
            }
        };
        let inos: HashMap<u64, usize> =
            files.iter().enumerate().map(|(i, f)| (fs::metadata(f).unwrap().ino(), i)).collect();
        let k = Kernel::start(kernel_dev(&fsys.mnt).unwrap(), "ext4", 1 << 16).unwrap();
        let root = fs::File::open(&fsys.mnt).unwrap();
        swap_as_daemon(&k, &root, true);
        // File 2 may stay mapped across the swaps: its stores then go
        // through entries a fault made writable epochs ago, which only the
        // swap's write-back of mapped files makes fault again.
        let kept = keep_mapped.then(|| {
            let f = fs::OpenOptions::new().read(true).write(true).open(&files[2]).unwrap();
            (Mapping::new(&f, 64 * 4096), f)
        });
        for (n, ops) in epochs.into_iter().enumerate() {
            let before: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
            let mut allowed: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); 3];
            let mut mapped = [false, false, kept.is_some()];
            if let Some((m, _)) = &kept {
                // The same page every epoch, through the same entry.
                m.store(8, n as u8 + 1);
            }
            for o in &ops {
                let data = bytes(o.seed, o.len);
                if o.mmap {
                    let data = &data[..data.len().min(4096)];
                    match &kept {
                        Some((m, _)) if o.file == 2 => m.copy(o.offset as usize, data),
                        _ => mmap_write(&files[o.file], o.offset as usize, data),
                    }
                    mapped[o.file] = true;
                } else {
                    write_at(&files[o.file], o.offset, &data);
                }
                let first = o.offset / 4096;
                let last = (o.offset + o.len as u64 - 1) / 4096;
                allowed[o.file].extend(first..=last);
            }
            let frozen = swap_as_daemon(&k, &root, false);
            let mut marked: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); 3];
            for r in &frozen.ranges {
                if r.first >= snapdump::track::programs::TOUCHED {
                    continue; // "stat it again": no pages
                }
                if let Some(&i) = inos.get(&r.ino) {
                    marked[i].extend(r.first..r.first + r.pages.min(1 << 20));
                }
            }
            proptest::prop_assert_eq!(frozen.overflowed, 0);
            proptest::prop_assert!(ops.iter().all(|o| o.mmap) || !frozen.ranges.is_empty());
            for i in 0..3 {
                let after = fs::read(&files[i]).unwrap();
                for (pg, (a, b)) in before[i].chunks(4096).zip(after.chunks(4096)).enumerate() {
                    proptest::prop_assert!(
                        a == b || marked[i].contains(&(pg as u64)),
                        "file {i} page {pg} changed but is not marked (marked {:?})",
                        marked[i]
                    );
                }
                if !mapped[i] {
                    proptest::prop_assert!(
                        marked[i].is_subset(&allowed[i]),
                        "file {i}: marked {:?} beyond the written pages {:?}",
                        marked[i],
                        allowed[i]
                    );
                }
                // (Evicting writes a file back, which would hide a swap
                // that leaves a kept mapping's entries writable.)
                if i != 2 || kept.is_none() {
                    settle(&files[i]);
                }
            }
        }
    }
}

/// A swap as the daemon makes it: the maps switched, then on ext4 only
/// the files the epoch saw mapped written back (`all`: the whole file
/// system, as the daemon's first swap does).
fn swap_as_daemon(
    k: &snapdump::track::kernel::Kernel,
    root: &fs::File,
    all: bool,
) -> snapdump::track::kernel::Frozen {
    use std::os::fd::AsFd;
    let frozen = k.swap().unwrap();
    snapdump::track::daemon::write_back(root.as_fd(), "ext4", all, &frozen.mapped).unwrap();
    frozen
}

/// The pages of `ino` in a frozen map (touch keys left out).
fn pages_of(frozen: &snapdump::track::kernel::Frozen, ino: u64) -> std::collections::BTreeSet<u64> {
    let mut set = std::collections::BTreeSet::new();
    for r in frozen.ranges.iter().filter(|r| r.ino == ino) {
        if r.first < snapdump::track::programs::TOUCHED {
            set.extend(r.first..r.first + r.pages.min(1 << 12));
        }
    }
    set
}

/// A shared writable mapping of all of `f`; unmapped when dropped.
struct Mapping(*mut u8, usize);

impl Mapping {
    fn new(f: &std::fs::File, len: usize) -> Mapping {
        // SAFETY: a shared mapping of an open file of `len` bytes.
        let m = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(m, libc::MAP_FAILED);
        Mapping(m as *mut u8, len)
    }

    fn store(&self, off: usize, byte: u8) {
        self.copy(off, &[byte]);
    }

    fn copy(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.1);
        // SAFETY: within the mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.0.add(off), data.len()) };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new().
        unsafe { libc::munmap(self.0 as *mut libc::c_void, self.1) };
    }
}

/// Writes into folios that reading left large are marked at their
/// pages, not their folios; and what may change such a folio after a
/// write left it dirty is still marked: a store through a mapping made
/// after the write, a truncation and extension, a write while a mapping
/// whose pages are mapped exists (root only, on a loop-mounted ext4, whose files get
/// large folios).
#[test]
fn writes_into_large_folios_are_marked_at_their_pages() {
    use snapdump::track::kernel::{kernel_dev, Kernel};
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let _lock = serial();
    let t = tmp();
    let Some(fsys) = LoopFs::mount("ext4", &t.path().join("fs.img"), &t.path().join("mnt"), 64)
    else {
        return;
    };
    pin_to_one_cpu();
    let k = Kernel::start(kernel_dev(&fsys.mnt).unwrap(), "ext4", 1 << 14).unwrap();
    let root = std::fs::File::open(&fsys.mnt).unwrap();
    swap_as_daemon(&k, &root, true);
    const LEN: usize = 8 << 20;
    let p = fsys.mnt.join("f");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all_at(&vec![7u8; LEN], 0).unwrap();
    f.sync_all().unwrap();
    let warm = || {
        // SAFETY: advice on an open descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let mut all = Vec::new();
        std::fs::File::open(&p)
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
    };
    let ino = std::fs::metadata(&p).unwrap().ino();
    warm();
    swap_as_daemon(&k, &root, false);
    // Scattered writes past the first MiB, where readahead has grown its
    // folios: their pages, nothing else.
    let written = [1100u64, 1300, 1517, 1700, 2000];
    for &pg in &written {
        let len = if pg == 1700 { 10 } else { 4096 };
        f.write_all_at(&vec![1u8; len], pg * 4096 + (4096 - len as u64))
            .unwrap();
    }
    let marked = pages_of(&swap_as_daemon(&k, &root, false), ino);
    assert_eq!(marked, written.into_iter().collect(), "scattered writes");
    // A write, then a mapping made after it, and a store into the
    // write's folio through that mapping.
    warm();
    swap_as_daemon(&k, &root, false);
    f.write_all_at(b"w", 1605 * 4096).unwrap();
    let m = Mapping::new(&f, LEN);
    m.store(1606 * 4096 + 1, 2);
    drop(m);
    let marked = pages_of(&swap_as_daemon(&k, &root, false), ino);
    assert!(
        marked.contains(&1605) && marked.contains(&1606),
        "mapped later: {marked:?}"
    );
    // A write, then the file cut inside the write's folio and extended
    // again to its length: the cut page and everything after it.
    warm();
    swap_as_daemon(&k, &root, false);
    f.write_all_at(b"w", 1905 * 4096).unwrap();
    f.set_len(1900 * 4096 + 100).unwrap();
    f.set_len(LEN as u64).unwrap();
    let marked = pages_of(&swap_as_daemon(&k, &root, false), ino);
    assert!(
        marked.contains(&1900) && marked.contains(&1905) && marked.contains(&2047),
        "cut: {marked:?}"
    );
    // A write while a writable mapping exists marks its whole folio
    // (at least its page), and the mapping's own stores are seen.
    // The mapping's page is mapped before the swap, so the later store
    // takes no fault (the swap's writeback only write-protects it).
    warm();
    let m = Mapping::new(&f, LEN);
    m.store(1301 * 4096 + 7, 9);
    swap_as_daemon(&k, &root, false);
    f.write_all_at(b"w", 1300 * 4096).unwrap();
    m.store(1301 * 4096, 3);
    let marked = pages_of(&swap_as_daemon(&k, &root, false), ino);
    drop(m);
    assert!(
        marked.contains(&1300) && marked.contains(&1301),
        "mapped: {marked:?}"
    );
}

/// An ext4 made with the given `mkfs.ext4 -O` features, loop mounted;
/// unmounted when dropped.
struct Ext4With {
    mnt: PathBuf,
}

impl Ext4With {
    fn new(dir: &Path, features: &str) -> Option<Ext4With> {
        if !is_root() {
            return None;
        }
        let img = dir.join("ext4.img");
        fs::File::create(&img).unwrap().set_len(256 << 20).unwrap();
        let ok = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", features, p(&img)])
            .status()
            .is_ok_and(|s| s.success());
        let mnt = dir.join("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let mounted = ok
            && std::process::Command::new("mount")
                .args(["-o", "loop", p(&img), p(&mnt)])
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                std::env::var_os("SNAPDUMP_REQUIRE_LOOPFS").is_none(),
                "cannot make an ext4 with {features}"
            );
            return None;
        }
        Some(Ext4With { mnt })
    }
}

impl Drop for Ext4With {
    fn drop(&mut self) {
        // A tracker that just stopped may hold the file system a moment
        // longer (its fanotify mark): retry, then detach it lazily rather
        // than leave a mount behind every run.
        let umount = |args: &[&str]| {
            std::process::Command::new("umount")
                .args(args)
                .arg(&self.mnt)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        for _ in 0..50 {
            if umount(&[]) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = umount(&["-l"]);
    }
}

/// What a hostile round found the tracker missing: flags set with chattr
/// (no event), nodump on a directory, overwrites of inline data (no dirty
/// page), a CACHEDIR.TAG whose contents change, a mount point unmounted,
/// a catalog named by a relative path. Each increment is checked against
/// the walk, and the chain restores exactly.
#[test]
fn changes_no_event_reports_are_still_seen() {
    let _lock = serial();
    let t = tmp();
    let Some(fsys) = Ext4With::new(t.path(), "inline_data") else {
        return;
    };
    let src = fsys.mnt.join("src");
    for d in ["d/e", "c", "m", "keep"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("d/e/y"), b"under d").unwrap();
    fs::write(src.join("f"), b"hello").unwrap();
    fs::write(src.join("inl"), b"tiny").unwrap();
    for i in 1..=3 {
        fs::write(src.join(format!("c/g{i}")), format!("{i}")).unwrap();
    }
    fs::write(src.join("c/CACHEDIR.TAG"), b"not a valid tag").unwrap();
    let cat = t.path().join("cat");
    let _tracker = Tracker::start(&cat, &src, &[]);
    // The dumps name the catalog relatively, from its parent.
    let run_in = |args: &[&str]| {
        let o = std::process::Command::new(bin_path())
            .args(args)
            .current_dir(t.path())
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{args:?}: {e}");
        (
            serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap(),
            e,
        )
    };
    let dump = |i: usize, extra: &[&str]| {
        let lvl = format!("-{i}");
        let out = format!("s{i}");
        let mut args = vec![
            "dump",
            lvl.as_str(),
            "-f",
            out.as_str(),
            "--catalog",
            "cat",
            "--json",
            "--exclude-caches",
        ];
        args.extend_from_slice(extra);
        args.push(p(&src));
        run_in(&args)
    };
    dump(0, &[]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let changes: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| {
            chattr("+A", &src.join("f"));
            chattr("+S", &src.join("d"));
            write_at(&src.join("inl"), 0, b"TINY");
        }),
        Box::new(|| {
            fs::write(
                src.join("c/CACHEDIR.TAG"),
                b"Signature: 8a477f597d28d172789f06886806bc55",
            )
            .unwrap();
            chattr("+d", &src.join("d"));
            chattr("+A", &src.join("inl"));
        }),
        Box::new(|| {
            let m = src.join("m");
            assert!(std::process::Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs", p(&m)])
                .status()
                .unwrap()
                .success());
            fs::write(m.join("on-tmpfs"), b"x").unwrap();
        }),
        Box::new(|| {
            assert!(std::process::Command::new("umount")
                .arg(src.join("m"))
                .status()
                .unwrap()
                .success());
            fs::write(src.join("m/under"), b"under the mount point").unwrap();
            fs::write(src.join("keep/new"), b"new").unwrap();
        }),
    ];
    for (i, change) in changes.iter().enumerate() {
        change();
        let (j, e) = dump(i + 1, &["--verify-tracker"]);
        if i == 2 {
            assert_eq!(
                j["tracker"]["used"], false,
                "a mount inside the source: {e}"
            );
        } else {
            assert_eq!(j["tracker"]["used"], true, "change {}: {e}", i + 1);
            assert_eq!(j["tracker"]["verified"], true, "change {}: {e}", i + 1);
        }
    }
    let (j, e) = dump(5, &[]);
    assert_eq!(j["tracker"]["used"], true, "{e}");
    let target = t.path().join("target");
    for i in 0..=5 {
        let s = t.path().join(format!("s{i}"));
        let (c, _, e) = run_s(&["restore", "-r", "-f", p(&s), "--target", p(&target)]);
        assert_eq!(c, 0, "restore s{i}: {e}");
    }
    // What the dump left out is not in the source's copy either: the
    // nodump directory and the tagged cache directory's files.
    assert!(!target.join("d").exists());
    assert!(target.join("c/CACHEDIR.TAG").exists() && !target.join("c/g1").exists());
    assert_eq!(fs::read(target.join("inl")).unwrap(), b"TINY");
    assert_eq!(
        fs::read(target.join("m/under")).unwrap(),
        b"under the mount point"
    );
    drop(fsys);
}
