//! `export-tar`: a tar stream of any snapshot of a chain, straight from
//! the streams, read back by GNU tar as the tree was at that moment.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

type Snap = BTreeMap<Vec<u8>, Entry>;

/// `snapdump export-tar ARGS > OUT`; returns (exit code, stderr).
fn export(args: &[&str], out: &Path) -> (i32, String) {
    let o = bin()
        .arg("export-tar")
        .args(args)
        .stdout(fs::File::create(out).unwrap())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Extracts `tar` into the new directory `dir` with GNU tar, as an
/// administrator restoring everything would.
fn gnu_extract(tar: &Path, dir: &Path) {
    fs::create_dir(dir).unwrap();
    let x = std::process::Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--sparse",
            "--numeric-owner",
            "-xpf",
        ])
        .arg(tar)
        .arg("-C")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        x.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&x.stderr)
    );
}

/// Compares an extracted tree with the source as it was. Access times are
/// left out (tar sets them at extraction), and so are sockets (tar cannot
/// hold them: export-tar names each) and the root's own entry.
fn assert_tar_tree(want: &Snap, dir: &Path, what: &str) {
    let mut want = want.clone();
    let mut got = snapshot_tree(dir);
    for m in [&mut want, &mut got] {
        m.retain(|k, e| e.kind != libc::S_IFSOCK && k != b".");
        for e in m.values_mut() {
            e.atime = (0, 0);
            // tar carries no file flags.
            e.flags = (0, 0);
        }
    }
    let keys = |m: &Snap| {
        m.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&got), keys(&want), "{what}");
    for (k, w) in &want {
        let g = &got[k];
        assert!(
            g == w,
            "{what}: {}: {}",
            String::from_utf8_lossy(k),
            describe_diff(w, g)
        );
    }
}

#[test]
fn each_snapshot_of_a_chain_exports_as_the_tree_was() {
    let t = paths();
    build_fidelity_tree(&t.src);
    // GNU tar cannot create paths longer than PATH_MAX (snapdump can).
    fs::remove_dir_all(t.src.join("deep")).unwrap();
    build_change_tree(&t.src.join("changing"));
    let sockets = snapshot_tree(&t.src)
        .values()
        .any(|e| e.kind == libc::S_IFSOCK);
    let mut moments = Vec::new();
    let mut streams = Vec::new();
    for level in 0..3u8 {
        if level == 1 {
            mutate_for_level_1(&t.src.join("changing"));
        }
        if level == 2 {
            fs::remove_dir_all(t.src.join("changing/a")).unwrap();
            fs::write(t.src.join("changing/big"), bytes(11, 123_456)).unwrap();
            fs::write(t.src.join("new at 2"), b"level two").unwrap();
        }
        let s = t.dir.path().join(format!("s{level}"));
        assert_eq!(dump_to(level, &s, &t.cat, &t.src), 0);
        moments.push(snapshot_tree(&t.src));
        streams.push(s);
    }
    let mut all = Vec::new();
    // Given in another order than the chain's: the chain is found.
    for s in streams.iter().rev() {
        all.extend(["-f", p(s)]);
    }
    for (k, want) in moments.iter().enumerate() {
        let tar = t.dir.path().join(format!("at{k}.tar"));
        let mut args = all.clone();
        let id = (k + 1).to_string();
        args.extend(["--at", &id]);
        let (c, e) = export(&args, &tar);
        assert_eq!(c, if sockets { 1 } else { 0 }, "{e}");
        assert!(!sockets || e.contains("socket not exported"), "{e}");
        let dir = t.dir.path().join(format!("x{k}"));
        gnu_extract(&tar, &dir);
        assert_tar_tree(want, &dir, &format!("snapshot {id}"));
    }

    // A subtree of snapshot 2: that subtree, and the directories leading
    // to it.
    let in_a = |k: &[u8]| k == b"changing/a" || k.starts_with(b"changing/a/");
    let tar = t.dir.path().join("sub.tar");
    let mut args = all.clone();
    args.extend(["--at", "2", "changing/a"]);
    let (c, e) = export(&args, &tar);
    assert_eq!(c, 0, "{e}");
    let dir = t.dir.path().join("sub");
    gnu_extract(&tar, &dir);
    let want: Snap = moments[1]
        .iter()
        .filter(|(k, _)| in_a(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut got = snapshot_tree(&dir);
    got.retain(|k, _| in_a(k));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, w) in &want {
        if w.kind == libc::S_IFREG {
            assert_eq!(got[k].content, w.content, "{}", String::from_utf8_lossy(k));
        }
    }

    // From a pipe: the full stream read in order.
    let tar = t.dir.path().join("pipe.tar");
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat '{}' | '{}' export-tar -f - > '{}'",
            p(&streams[0]),
            bin_path().to_str().unwrap(),
            p(&tar)
        ))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(if sockets { 1 } else { 0 }),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dir = t.dir.path().join("pipe");
    gnu_extract(&tar, &dir);
    assert_tar_tree(&moments[0], &dir, "from a pipe");
}

#[test]
fn a_damaged_or_missing_stream_gives_no_tar() {
    let t = paths();
    fs::write(t.src.join("f"), bytes(1, 300_000)).unwrap();
    let s0 = t.dir.path().join("s0");
    assert_eq!(dump_to(0, &s0, &t.cat, &t.src), 0);
    fs::write(t.src.join("f"), bytes(2, 300_000)).unwrap();
    let s1 = t.dir.path().join("s1");
    assert_eq!(dump_to(1, &s1, &t.cat, &t.src), 0);
    let tar = t.dir.path().join("out.tar");
    // The base missing: named.
    let (c, e) = export(&["-f", p(&s1)], &tar);
    assert_eq!(c, 2);
    assert!(e.contains("add the stream of that snapshot"), "{e}");
    // A damaged data record in the increment: an error, and not one byte
    // of tar written (the data is gathered before the tar is written).
    let bad = t.dir.path().join("s1.bad");
    let mut b = fs::read(&s1).unwrap();
    let n = b.len();
    b[n / 2] ^= 0x55;
    fs::write(&bad, &b).unwrap();
    let (c, e) = export(&["-f", p(&s0), "-f", p(&bad)], &tar);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("s1.bad") && e.contains("damaged"), "{e}");
    assert_eq!(
        fs::metadata(&tar).unwrap().len(),
        0,
        "a partial tar was written"
    );
    // A terminal is refused; a path not in the snapshot is named.
    let (c, e) = export(&["-f", p(&s0), "-f", p(&s1), "nothing-here"], &tar);
    assert_eq!(c, 2);
    assert!(e.contains("none of the given paths"), "{e}");
}
