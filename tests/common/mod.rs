//! Helpers for integration tests: build trees with every fidelity case,
//! run the real binary, and compare trees attribute by attribute.
#![allow(dead_code)]

use snapdump::fsx::{self, xattr, AsFdBorrow};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The snapdump binary under test: the one cargo built, or the one
/// `SNAPDUMP_TEST_BIN` names (to show that a test fails on an older build).
pub fn bin() -> Command {
    Command::new(bin_path())
}

/// Starts the binary with `args`, to stop at pause point `point`
/// (`SNAPDUMP_PAUSE`), and returns once it waits there: the test acts,
/// then removes `pause` to let it go on.
pub fn spawn_paused(args: &[&str], point: &str, pause: &Path) -> std::process::Child {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let child = bin()
        .args(args)
        .env("SNAPDUMP_PAUSE", point)
        .env("SNAPDUMP_PAUSE_FILE", pause)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !pause.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{args:?} never paused at {point}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// The path of the binary under test.
pub fn bin_path() -> std::ffi::OsString {
    std::env::var_os("SNAPDUMP_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_snapdump").into())
}

/// Runs the binary; returns (exit code, stdout, stderr).
pub fn run(args: &[&OsStr]) -> (i32, Vec<u8>, String) {
    let out = bin().args(args).output().expect("run snapdump");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Shorthand for string arguments.
pub fn run_s(args: &[&str]) -> (i32, Vec<u8>, String) {
    let v: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    run(&v)
}

pub fn is_root() -> bool {
    fsx::is_root()
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Sets atime and mtime to exact nanosecond values (no following).
pub fn set_times(path: &Path, a: (i64, i64), m: (i64, i64)) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: a.0,
            tv_nsec: a.1,
        },
        libc::timespec {
            tv_sec: m.0,
            tv_nsec: m.1,
        },
    ];
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", path.display());
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn setxattr(path: &Path, k: &str, v: &[u8]) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let kc = std::ffi::CString::new(k).unwrap();
    unsafe { libc::lsetxattr(c.as_ptr(), kc.as_ptr(), v.as_ptr() as *const _, v.len(), 0) == 0 }
}

/// Builds a tree holding every fidelity case the level-0 issue lists.
pub fn build_fidelity_tree(root: &Path) {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    fs::write(root.join("hello.txt"), b"hello world\n").unwrap();
    fs::write(root.join("dir/random.bin"), bytes(1, 300_000)).unwrap();
    fs::write(root.join("dir/sub/partial-block"), bytes(2, 4097)).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::create_dir(root.join("emptydir")).unwrap();
    // Text-like data that compresses.
    let text: Vec<u8> = (0..20000)
        .flat_map(|i| format!("line {i} of a log file\n").into_bytes())
        .collect();
    fs::write(root.join("dir/log.txt"), &text).unwrap();
    // Sparse: data, hole, data, trailing hole.
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(root.join("sparse")).unwrap();
        f.write_all_at(&bytes(3, 8192), 0).unwrap();
        f.write_all_at(&bytes(4, 5000), 3 << 20).unwrap();
        f.set_len(64 << 20).unwrap();
    }
    // Entirely a hole.
    fs::File::create(root.join("allhole"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    // Symlinks, one dangling, one to a directory, one absolute.
    symlink("hello.txt", root.join("link")).unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    symlink("/etc", root.join("abslink")).unwrap();
    symlink("dir", root.join("dirlink")).unwrap();
    // Hardlink groups (one across directories).
    fs::write(root.join("dir/h1"), b"linked content").unwrap();
    fs::hard_link(root.join("dir/h1"), root.join("h2")).unwrap();
    fs::hard_link(root.join("dir/h1"), root.join("dir/sub/h3")).unwrap();
    fs::write(root.join("g1"), b"second group").unwrap();
    fs::hard_link(root.join("g1"), root.join("g2")).unwrap();
    // Special files.
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    {
        let l = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        drop(l);
    }
    // Permission bits.
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(root.join("setgid"), b"x").unwrap();
    fs::set_permissions(root.join("setgid"), fs::Permissions::from_mode(0o2711)).unwrap();
    fs::create_dir(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(root.join("private"), b"secret").unwrap();
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    // Hostile-looking but legal names.
    let nl = OsStr::from_bytes(b"new\nline");
    fs::write(root.join(nl), b"newline name").unwrap();
    let bad = OsStr::from_bytes(b"latin1-\xe9t\xe9");
    fs::write(root.join(bad), b"not utf-8").unwrap();
    let long = "L".repeat(255);
    fs::write(root.join(&long), b"long name").unwrap();
    fs::write(root.join("back\\slash"), b"b").unwrap();
    // Deeper than PATH_MAX (4096): 40 levels of 120-byte names.
    let mut deep = root.join("deep");
    fs::create_dir(&deep).unwrap();
    let comp = "d".repeat(120);
    let dfd = fsx::open_dir_path(&deep).unwrap();
    let mut cur = dfd;
    for _ in 0..40 {
        fsx::mkdir_at(cur.as_fd(), comp.as_bytes(), 0o755).unwrap();
        cur = fsx::open_dir(cur.as_fd(), comp.as_bytes()).unwrap();
    }
    let f = fsx::openat(
        cur.as_fd(),
        b"bottom",
        libc::O_WRONLY | libc::O_CREAT,
        0o644,
    )
    .unwrap();
    fsx::pwrite_all(f.as_fd(), b"at the bottom", 0).unwrap();
    deep.push("x");
    // xattrs.
    assert!(setxattr(
        &root.join("hello.txt"),
        "user.comment",
        b"greeting"
    ));
    setxattr(&root.join("dir"), "user.dirattr", b"");
    setxattr(&root.join("dir/random.bin"), "user.bin", &bytes(9, 3000));
    if is_root() {
        setxattr(&root.join("hello.txt"), "trusted.t", b"trusted value");
        setxattr(&root.join("setuid"), "security.sec", b"sec");
        setxattr(&root.join("link"), "trusted.onlink", b"v");
        // A POSIX ACL (user 1234 rw-, mask rw-) in the kernel's xattr form.
        let mut acl = vec![2, 0, 0, 0];
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 6, 1234),
            (4, 4, u32::MAX),
            (0x10, 6, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        assert!(
            setxattr(&root.join("private"), "system.posix_acl_access", &acl),
            "set ACL"
        );
        // Device nodes and other owners.
        nix::sys::stat::mknod(
            &root.join("null-dev"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        nix::sys::stat::mknod(
            &root.join("blk-dev"),
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o660),
            nix::sys::stat::makedev(7, 200),
        )
        .unwrap();
        std::os::unix::fs::lchown(root.join("private"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("dangling"), Some(4321), Some(8765)).unwrap();
        std::os::unix::fs::chown(root.join("setgid"), Some(99), Some(99)).unwrap();
        fs::set_permissions(root.join("setgid"), fs::Permissions::from_mode(0o2711)).unwrap();
    }
    // Read-only directory with contents.
    fs::create_dir(root.join("readonly")).unwrap();
    fs::write(root.join("readonly/inside"), b"inside a read-only dir").unwrap();
    fs::set_permissions(root.join("readonly"), fs::Permissions::from_mode(0o555)).unwrap();
    // Exact times with nanoseconds on a few entries (including a symlink
    // and a directory), set last so nothing above disturbs them.
    set_times(
        &root.join("hello.txt"),
        (1_000_000_000, 123_456_789),
        (1_100_000_000, 987_654_321),
    );
    set_times(
        &root.join("link"),
        (1_200_000_000, 1),
        (1_300_000_000, 999_999_999),
    );
    set_times(
        &root.join("emptydir"),
        (1_400_000_000, 42),
        (1_500_000_000, 43),
    );
    set_times(
        &root.join("readonly"),
        (1_600_000_000, 5),
        (1_600_000_001, 6),
    );
    // readlink(2) bumps a symlink's atime once under relatime (no flag
    // prevents it, for dump or for this comparison); read every link once so
    // later reads leave the source as it is.
    snapshot_tree(root);
}

/// A regular file's bytes and data regions.
pub type FileData = (Vec<u8>, Vec<(u64, u64)>);

/// Everything compared about one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    /// Data regions (SEEK_DATA/SEEK_HOLE) in 4 KiB blocks: holes must stay
    /// holes. (`st_blocks` is not compared: it also counts file-system
    /// metadata such as ext4 extent-tree blocks, which depend on how
    /// fragmented the writes were, not on the file.)
    pub data_runs: Vec<(u64, u64)>,
    pub content: Option<Vec<u8>>,
    pub target: Option<Vec<u8>>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// File flags (`lsattr`) and project id of files and directories.
    pub flags: (u32, u32),
    pub link_group: Option<Vec<Vec<u8>>>,
}

/// Reads a whole tree into path -> entry, without following links and
/// without updating atimes; hardlink groups are listed by path.
pub fn snapshot_tree(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let fd = fsx::open_dir_path(root).unwrap();
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    let st = fsx::fstat(fd.as_fd_borrow()).unwrap();
    out.insert(b".".to_vec(), entry(fd.as_fd(), b"", &st, None));
    walk(fd.as_fd(), b"", &mut out, &mut inodes, true);
    for (_, paths) in inodes {
        if paths.len() > 1 {
            for p in &paths {
                out.get_mut(p).unwrap().link_group = Some(paths.clone());
            }
        }
    }
    out
}

fn entry(dir: BorrowedFd, name: &[u8], st: &libc::stat, content: Option<FileData>) -> Entry {
    let (content, data_runs) = match content {
        Some((c, r)) => (Some(c), r),
        None => (None, Vec::new()),
    };
    let kind = st.st_mode & libc::S_IFMT;
    Entry {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev,
        size: if kind == libc::S_IFDIR {
            0
        } else {
            st.st_size as u64
        },
        atime: (st.st_atime, st.st_atime_nsec),
        mtime: if kind == libc::S_IFDIR && name.is_empty() {
            (0, 0)
        } else {
            (st.st_mtime, st.st_mtime_nsec)
        },
        data_runs,
        content,
        target: (kind == libc::S_IFLNK).then(|| fsx::readlink_at(dir, name).unwrap()),
        xattrs: xattr::list(dir, name).unwrap(),
        flags: match kind {
            libc::S_IFREG | libc::S_IFDIR => {
                fsx::flags::read_at(dir, name, kind == libc::S_IFDIR).unwrap()
            }
            _ => (0, 0),
        },
        link_group: None,
    }
}

fn walk(
    dir: BorrowedFd,
    prefix: &[u8],
    out: &mut BTreeMap<Vec<u8>, Entry>,
    inodes: &mut BTreeMap<(u64, u64), Vec<Vec<u8>>>,
    top: bool,
) {
    for name in fsx::read_dir_names(dir).unwrap() {
        if top && name == b".snapdump-restore" {
            continue;
        }
        let mut path = prefix.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&name);
        let st = fsx::stat_at(dir, &name).unwrap();
        let kind = st.st_mode & libc::S_IFMT;
        let content = (kind == libc::S_IFREG).then(|| {
            let f = snapdump::scan::open_file(dir, &name).unwrap();
            let mut buf = vec![0u8; st.st_size as usize];
            let n = fsx::pread_full(f.as_fd(), &mut buf, 0).unwrap();
            assert_eq!(n, buf.len());
            let runs = fsx::data_runs(f.as_fd(), st.st_size as u64, 4096).unwrap();
            (buf, runs)
        });
        if kind != libc::S_IFDIR && st.st_nlink > 1 {
            inodes
                .entry((st.st_dev, st.st_ino))
                .or_default()
                .push(path.clone());
        }
        if kind == libc::S_IFDIR {
            let sub = fsx::open_dir(dir, &name).unwrap();
            walk(sub.as_fd(), &path, out, inodes, false);
        }
        // Stat again after reading so directory atimes are compared as they
        // are now (reading a directory does not change them with O_NOATIME).
        out.insert(path, entry(dir, &name, &st, content));
    }
}

/// Asserts two trees are identical in every compared attribute; the root
/// directory's mtime is not compared (the restore state dir changes it).
pub fn assert_same_tree(a: &Path, b: &Path) {
    same_trees(snapshot_tree(a), snapshot_tree(b));
}

/// As [`assert_same_tree`] for a target that was read since it was
/// restored: reading a symlink moves its atime (relatime), which no
/// restore can undo, so symlinks' atimes are not compared.
pub fn assert_same_tree_links_read(a: &Path, b: &Path) {
    let unread = |mut t: BTreeMap<Vec<u8>, Entry>| {
        for e in t.values_mut() {
            if e.target.is_some() {
                e.atime = (0, 0);
            }
        }
        t
    };
    same_trees(unread(snapshot_tree(a)), unread(snapshot_tree(b)));
}

fn same_trees(ta: BTreeMap<Vec<u8>, Entry>, tb: BTreeMap<Vec<u8>, Entry>) {
    let ka: Vec<_> = ta.keys().collect();
    let kb: Vec<_> = tb.keys().collect();
    assert_eq!(
        ka.iter()
            .map(|k| String::from_utf8_lossy(k))
            .collect::<Vec<_>>(),
        kb.iter()
            .map(|k| String::from_utf8_lossy(k))
            .collect::<Vec<_>>(),
        "different entries"
    );
    for (k, ea) in &ta {
        let eb = &tb[k];
        if ea != eb {
            panic!(
                "entry {} differs: {}",
                String::from_utf8_lossy(k),
                describe_diff(ea, eb)
            );
        }
    }
}

/// Asserts that the tree at `dir` is exactly `want` (a [`snapshot_tree`]
/// taken of the source when it was dumped); the root's mtime is not
/// compared.
pub fn assert_tree_is(want: &BTreeMap<Vec<u8>, Entry>, dir: &Path, what: &str) {
    let got = snapshot_tree(dir);
    let show = |m: &BTreeMap<Vec<u8>, Entry>| {
        m.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(show(&got), show(want), "{what}: different entries");
    for (k, w) in want {
        let g = &got[k];
        if g != w {
            panic!(
                "{what}: entry {} differs: {}",
                String::from_utf8_lossy(k),
                describe_diff(w, g)
            );
        }
    }
}

/// Whether the tree at `dir` is exactly `want`.
pub fn tree_is(want: &BTreeMap<Vec<u8>, Entry>, dir: &Path) -> bool {
    &snapshot_tree(dir) == want
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("snapdump-test")
        .tempdir()
        .unwrap()
}

pub struct Paths {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub out: PathBuf,
    pub cat: PathBuf,
    pub stream: PathBuf,
}

pub fn paths() -> Paths {
    let dir = tmp();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    Paths {
        src,
        out: dir.path().join("out"),
        cat: dir.path().join("catalog"),
        stream: dir.path().join("stream.sdump"),
        dir,
    }
}

/// The fields in which two entries differ, briefly (contents by length and
/// first differing offset).
pub fn describe_diff(a: &Entry, b: &Entry) -> String {
    let mut out = Vec::new();
    macro_rules! field {
        ($f:ident) => {
            if a.$f != b.$f {
                out.push(format!("{}: {:?} vs {:?}", stringify!($f), a.$f, b.$f));
            }
        };
    }
    field!(kind);
    field!(mode);
    field!(uid);
    field!(gid);
    field!(rdev);
    field!(size);
    field!(atime);
    field!(mtime);
    field!(data_runs);
    field!(target);
    field!(xattrs);
    field!(flags);
    field!(link_group);
    if a.content != b.content {
        let (x, y) = (
            a.content.clone().unwrap_or_default(),
            b.content.clone().unwrap_or_default(),
        );
        let at = x.iter().zip(&y).position(|(p, q)| p != q);
        out.push(format!(
            "content: {} vs {} bytes, first difference at {:?}",
            x.len(),
            y.len(),
            at
        ));
    }
    out.join("; ")
}

/// `snapdump dump -LEVEL -f out --catalog cat src`; returns the exit code.
pub fn dump_to(level: u8, out: &Path, cat: &Path, src: &Path) -> i32 {
    run_s(&[
        "dump",
        &format!("-{level}"),
        "-f",
        p(out),
        "--catalog",
        p(cat),
        p(src),
    ])
    .0
}

/// Peak resident memory of all finished child processes, in KiB.
pub fn max_child_rss_kib() -> i64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    ru.ru_maxrss
}

/// Runs the binary as the unprivileged user nobody (via setpriv; needs root).
pub fn run_as_nobody(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin_path())
        .args(args)
        .output()
        .unwrap()
}

/// The tree the level-1 tests change: one file or directory for every kind
/// of change [`mutate_for_level_1`] makes.
pub fn build_change_tree(s: &Path) {
    let write = |p: &Path, d: &[u8]| std::fs::write(p, d).unwrap();
    use std::fs;
    use std::os::unix::fs::symlink;
    fs::create_dir_all(s.join("a/b")).unwrap();
    write(&s.join("big"), &bytes(1, 400_000));
    write(&s.join("a/app"), &bytes(2, 10_000));
    write(&s.join("a/trunc"), &bytes(3, 50_000));
    write(&s.join("a/b/moveme"), &bytes(4, 30_000));
    write(&s.join("delete-me"), b"bye");
    write(&s.join("becomes-dir"), b"file for now");
    fs::create_dir(s.join("becomes-file")).unwrap();
    write(&s.join("becomes-file/inner"), b"x");
    write(&s.join("linked"), b"shared");
    fs::hard_link(s.join("linked"), s.join("a/linked2")).unwrap();
    write(&s.join("attr-only"), &bytes(5, 9000));
    {
        let f = fs::File::create(s.join("holes")).unwrap();
        f.set_len(1 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&bytes(6, 200_000), 0).unwrap();
    }
    symlink("big", s.join("sym")).unwrap();
}

/// Every kind of change an increment must carry: in-place block rewrite,
/// append, truncate, rename across directories, delete, type changes both
/// ways, a new hard link, a broken hard link, attribute-only change, a
/// punched hole, a retargeted symlink. Returns the paths whose entry on
/// disk now differs from before (names gone, names new, and changed
/// entries, parents whose listing changed included).
pub fn mutate_for_level_1(s: &Path) -> Vec<&'static str> {
    let write = |p: &Path, d: &[u8]| std::fs::write(p, d).unwrap();
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(s.join("big"))
            .unwrap();
        f.write_all_at(&bytes(7, 4096), 8192 * 5).unwrap();
    }
    fs::OpenOptions::new()
        .append(true)
        .open(s.join("a/app"))
        .unwrap();
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(s.join("a/app"))
            .unwrap();
        f.write_all(&bytes(8, 7000)).unwrap();
    }
    fs::OpenOptions::new()
        .write(true)
        .open(s.join("a/trunc"))
        .unwrap()
        .set_len(5000)
        .unwrap();
    fs::rename(s.join("a/b/moveme"), s.join("moved")).unwrap();
    fs::remove_file(s.join("delete-me")).unwrap();
    fs::remove_file(s.join("becomes-dir")).unwrap();
    fs::create_dir(s.join("becomes-dir")).unwrap();
    write(&s.join("becomes-dir/child"), b"child");
    fs::remove_dir_all(s.join("becomes-file")).unwrap();
    write(&s.join("becomes-file"), b"now a file");
    fs::hard_link(s.join("big"), s.join("a/big-link")).unwrap();
    fs::remove_file(s.join("a/linked2")).unwrap();
    fs::set_permissions(s.join("attr-only"), fs::Permissions::from_mode(0o600)).unwrap();
    {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(s.join("holes"))
            .unwrap();
        snapdump::fsx::punch_hole(std::os::fd::AsFd::as_fd(&f), 4096 * 10, 4096 * 5).unwrap();
    }
    fs::remove_file(s.join("sym")).unwrap();
    symlink("a/app", s.join("sym")).unwrap();
    vec![
        ".",
        "a",
        "a/b",
        "big",
        "a/app",
        "a/trunc",
        "a/b/moveme",
        "moved",
        "delete-me",
        "becomes-dir",
        "becomes-file",
        "a/big-link",
        "a/linked2",
        "attr-only",
        "holes",
        "sym",
    ]
}

/// Asserts that `out` holds exactly the entries of `expected` (a
/// [`snapshot_tree`] of the source when it was dumped) chosen by `selected`
/// (paths and everything under them) and the directories leading to them,
/// each identical to the source's. Hard-link groups are compared within
/// what was extracted.
pub fn assert_extracted(expected: &BTreeMap<Vec<u8>, Entry>, out: &Path, selected: &[&str]) {
    let got = snapshot_tree(out);
    let under = |k: &[u8]| {
        selected.iter().any(|s| {
            let s = s.as_bytes();
            k == s || (k.len() > s.len() && k.starts_with(s) && k[s.len()] == b'/')
        })
    };
    let mut want: std::collections::BTreeSet<Vec<u8>> =
        expected.keys().filter(|k| under(k)).cloned().collect();
    for k in want.clone() {
        let mut p = &k[..];
        while let Some(i) = p.iter().rposition(|&b| b == b'/') {
            p = &p[..i];
            want.insert(p.to_vec());
        }
    }
    want.insert(b".".to_vec());
    let show = |v: &mut dyn Iterator<Item = &Vec<u8>>| {
        v.map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        show(&mut got.keys()),
        show(&mut want.iter()),
        "extracted entries of {selected:?}"
    );
    for (k, g) in &got {
        if k == b"." {
            continue;
        }
        let mut e = expected[k].clone();
        e.link_group = e.link_group.and_then(|grp| {
            let kept: Vec<Vec<u8>> = grp.into_iter().filter(|p| got.contains_key(p)).collect();
            (kept.len() > 1).then_some(kept)
        });
        if &e != g {
            panic!(
                "extracted {} differs from the source: {}",
                String::from_utf8_lossy(k),
                describe_diff(&e, g)
            );
        }
    }
}

/// `snapdump dump -0 -z 0 -f out --catalog cat src` with `extra` options
/// before the source (uncompressed, so tests can find and damage bytes);
/// returns the exit code and stderr.
pub fn dump_raw(out: &Path, cat: &Path, src: &Path, extra: &[&str]) -> (i32, String) {
    let mut a = vec!["dump", "-0", "-z", "0", "-f", p(out), "--catalog", p(cat)];
    a.extend(extra);
    a.push(p(src));
    let (c, _, e) = run_s(&a);
    (c, e)
}

/// The records of a stream: (offset, whole length, kind).
pub fn stream_records(b: &[u8]) -> Vec<(usize, usize, u8)> {
    let mut v = Vec::new();
    let mut at = 0;
    while at + 40 <= b.len() {
        let len = 40 + u32::from_le_bytes(b[at + 16..at + 20].try_into().unwrap()) as usize;
        v.push((at, len, b[at + 4]));
        at += len;
    }
    v
}

/// The checksum seed of a stream's records after the header (format 2 on:
/// from the stream id in its header record), for tests that forge records.
pub fn stream_seed(b: &[u8]) -> u64 {
    let len = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
    snapdump::stream::header::StreamHeader::decode(&b[40..40 + len])
        .expect("a stream header")
        .seed()
}

/// Offset of a stream's first data record.
pub fn first_data_record(b: &[u8]) -> usize {
    stream_records(b)
        .into_iter()
        .find(|r| r.2 == 4)
        .expect("a data record")
        .0
}

/// A small deterministic random source (xorshift).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Spawns `args`, kills it with SIGKILL after `delay`; true if it was killed.
pub fn kill_after(args: &[&str], delay: std::time::Duration) -> bool {
    let mut child = bin()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let killed = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    killed
}

/// A trial count: `var` from the environment (the slow suite raises it),
/// else `default`.
pub fn trials(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small tmpfs mounted for the test's life (root only).
pub struct Tmpfs(pub std::path::PathBuf);
impl Tmpfs {
    pub fn new(at: &Path, size: &str) -> Option<Tmpfs> {
        if !is_root() {
            return None;
        }
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", p(at)])
            .status()
            .ok()?
            .success();
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A file system of `kind` (ext4, xfs, btrfs) made in a sparse image and
/// loop-mounted at `mnt`; unmounted (and its loop device freed) on drop.
/// `None` (with the reason on stderr) when this machine cannot: not root,
/// no mkfs for it, no loop devices. `SNAPDUMP_REQUIRE_LOOPFS=1` (CI) turns
/// that into a failure.
pub struct LoopFs {
    pub mnt: PathBuf,
}

impl LoopFs {
    pub fn mount(kind: &str, img: &Path, mnt: &Path, mib: u64) -> Option<LoopFs> {
        let fail = |why: String| {
            if std::env::var_os("SNAPDUMP_REQUIRE_LOOPFS").is_some() {
                panic!("cannot make a loop-mounted {kind}: {why}");
            }
            eprintln!("skipped: cannot make a loop-mounted {kind}: {why}");
            None
        };
        if !is_root() {
            return fail("not root".into());
        }
        std::fs::File::create(img)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let force = if kind == "xfs" || kind == "btrfs" {
            "-f"
        } else {
            "-F"
        };
        match Command::new(format!("mkfs.{kind}"))
            .args(["-q", force, p(img)])
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => return fail(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => return fail(format!("mkfs.{kind}: {e}")),
        }
        std::fs::create_dir_all(mnt).unwrap();
        let o = Command::new("mount")
            .args(["-o", "loop", p(img), p(mnt)])
            .output()
            .unwrap();
        if !o.status.success() {
            return fail(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        Some(LoopFs {
            mnt: mnt.to_path_buf(),
        })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

/// Runs `chattr ARGS PATH`; panics with its message on failure.
pub fn chattr(args: &str, path: &Path) {
    let o = Command::new("chattr")
        .args(args.split_whitespace())
        .arg(path)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "chattr {args} {}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Removes a tree that may hold immutable or append-only entries.
pub fn remove_flagged(path: &Path) {
    let _ = Command::new("chattr")
        .args(["-R", "-i", "-a"])
        .arg(path)
        .output();
    let _ = std::fs::remove_dir_all(path);
}

/// Runs `snapdump ARGS` under sh and returns (exit code, bytes the restore
/// read through read(2)-family calls, stderr). The kernel adds a reaped
/// child's I/O counters to its parent's, so the shell's rchar after the
/// restore exited is the restore's (plus the shell's own few bytes).
pub fn rchar_of(args: &[&str]) -> (i32, u64, String) {
    let dir = tmp();
    let io_file = dir.path().join("io");
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#""$0" "$@"; s=$?; grep '^rchar:' /proc/$$/io > "$IO_OUT"; exit $s"#)
        .arg(env!("CARGO_BIN_EXE_snapdump"))
        .args(args)
        .env("IO_OUT", &io_file)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&io_file).unwrap();
    let rchar = text
        .trim()
        .strip_prefix("rchar:")
        .unwrap_or_else(|| panic!("no rchar in {text:?}"))
        .trim()
        .parse()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        rchar,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
