//! The command line as a user meets it: the help subcommand, standard
//! output that cannot be written, and snapshot times as snapdump prints
//! them given back to --at.

mod common;
use common::*;
use std::process::Stdio;

#[test]
fn the_help_subcommand_prints_help() {
    for args in [&["help"][..], &["help", "dump"], &["volume", "help", "ls"]] {
        let out = bin().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{args:?}"
        );
    }
}

#[test]
fn a_dump_to_a_closed_stdout_fails_and_records_nothing() {
    let t = paths();
    std::fs::write(t.src.join("f"), bytes(1, 50_000)).unwrap();
    // The shell closes descriptor 1 (>&-); the runtime would put /dev/null
    // there and the stream would go nowhere, recorded as written.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec \"$0\" dump -0 -f - --catalog '{}' '{}' >&-",
            p(&t.cat),
            p(&t.src)
        ))
        .arg(bin_path())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("standard output is closed"), "{err}");
    let (_, listed, _) = run_s(&["snapshots", "--json", "--catalog", p(&t.cat)]);
    let v: serde_json::Value = serde_json::from_slice(&listed).unwrap_or_default();
    let recorded: usize = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["snapshots"].as_array().map_or(0, |x| x.len()))
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(recorded, 0, "no snapshot may be recorded: {v}");
    // A deliberate /dev/null is the user's choice and works.
    let out = bin()
        .args(["dump", "-0", "-f", "-", "--catalog", p(&t.cat), p(&t.src)])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn output_that_cannot_be_written_is_an_error_not_a_panic() {
    let t = paths();
    std::fs::write(t.src.join("f"), bytes(2, 10_000)).unwrap();
    assert_eq!(dump_to(0, &t.stream, &t.cat, &t.src), 0);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    for args in [
        vec!["verify", "-f", p(&t.stream)],
        vec!["verify", "--json", "-f", p(&t.stream)],
        vec!["snapshots", "--json", "--catalog", p(&t.cat)],
    ] {
        let out = bin()
            .args(&args)
            .stdout(full.try_clone().unwrap())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains("No space left"), "{args:?}: {err}");
    }
}

#[test]
fn a_summary_file_is_checked_first_and_a_lost_summary_is_a_warning() {
    let t = paths();
    std::fs::write(t.src.join("f"), bytes(3, 10_000)).unwrap();
    let dump = |json_file: &str, stream: &str| {
        run_s(&[
            "dump",
            "-0",
            "-f",
            stream,
            "--catalog",
            p(&t.cat),
            "--json-file",
            json_file,
            p(&t.src),
        ])
    };
    // A summary that cannot be created stops the dump before any work.
    let stream = t.dir.path().join("s0");
    let (c, _, e) = dump("/nonexistent/dir/sum.json", p(&stream));
    assert_eq!(c, 2, "{e}");
    assert!(
        e.lines()
            .next()
            .unwrap()
            .contains("/nonexistent/dir does not exist"),
        "{e}"
    );
    assert!(!stream.exists(), "no work was done");
    // One that fails after the work (a full disk): the dump stands, the
    // summary goes to stderr, exit status 1.
    let (c, _, e) = dump("/dev/full", p(&stream));
    assert_eq!(c, 1, "{e}");
    assert!(e.contains("warning") && e.contains("/dev/full"), "{e}");
    assert!(e.contains("\"snapshot\""), "the summary is on stderr: {e}");
    let (c, _, e) = run_s(&["verify", "-f", p(&stream)]);
    assert_eq!(c, 0, "{e}");
    // A writable one gets the summary whole.
    let sum = t.dir.path().join("sum.json");
    let (c, _, e) = dump(p(&sum), p(&t.dir.path().join("s1")));
    assert!(c <= 1, "{e}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&sum).unwrap()).unwrap();
    assert!(v["snapshot"].is_object() || v["snapshot"].is_u64(), "{v}");
}

#[test]
fn restore_of_several_files_not_in_chain_order_restores_nothing() {
    let t = paths();
    std::fs::write(t.src.join("f"), bytes(4, 10_000)).unwrap();
    let s = |n: &str| t.dir.path().join(n);
    assert_eq!(dump_to(0, &s("a0"), &t.cat, &t.src), 0);
    std::fs::write(t.src.join("g"), bytes(5, 10_000)).unwrap();
    assert_eq!(dump_to(1, &s("a1"), &t.cat, &t.src), 0);
    assert_eq!(dump_to(0, &s("b0"), &t.cat, &t.src), 0);
    std::fs::write(t.src.join("h"), bytes(6, 10_000)).unwrap();
    assert_eq!(dump_to(1, &s("b1"), &t.cat, &t.src), 0);
    for (order, want) in [
        (["a0", "b0"], "is a full image"),
        (["a0", "b1"], "is an increment on snapshot 3"),
        (["a1", "a0"], "is a full image"),
    ] {
        let target = s("target");
        let (c, _, e) = run_s(&[
            "restore",
            "-r",
            "-f",
            p(&s(order[0])),
            "-f",
            p(&s(order[1])),
            "--target",
            p(&target),
        ]);
        assert_eq!(c, 2, "{order:?}: {e}");
        assert!(
            e.contains(want) && e.contains("nothing was restored"),
            "{order:?}: {e}"
        );
        assert!(!target.exists(), "{order:?}: something was restored");
    }
    // In order, it restores.
    let target = s("target");
    let (c, _, e) = run_s(&[
        "restore",
        "-r",
        "-f",
        p(&s("b0")),
        "-f",
        p(&s("b1")),
        "--target",
        p(&target),
    ]);
    assert_eq!(c, 0, "{e}");
    assert_tree_is(&snapshot_tree(&t.src), &target, "b0 b1");
}

#[test]
fn the_time_snapdump_prints_for_a_snapshot_selects_it() {
    let t = paths();
    std::fs::write(t.src.join("f"), b"one").unwrap();
    let s1 = t.dir.path().join("s1.sdump");
    let s2 = t.dir.path().join("s2.sdump");
    assert_eq!(dump_to(0, &s1, &t.cat, &t.src), 0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(t.src.join("f"), b"two, longer").unwrap();
    assert_eq!(dump_to(1, &s2, &t.cat, &t.src), 0);
    let (_, listed, _) = run_s(&["snapshots", "--json", "--catalog", p(&t.cat)]);
    let v: serde_json::Value = serde_json::from_slice(&listed).unwrap();
    let snaps = v[0]["snapshots"].as_array().unwrap().clone();
    assert_eq!(snaps.len(), 2);
    for s in &snaps {
        let id = s["id"].as_u64().unwrap();
        let time = s["time"].as_str().unwrap();
        assert!(!time.contains('.'), "printed to the second: {time}");
        let (code, out, err) = run_s(&[
            "restore",
            "-t",
            "--json",
            "-f",
            p(&s1),
            "-f",
            p(&s2),
            "--at",
            time,
        ]);
        assert_eq!(code, 0, "--at {time}: {err}");
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains(&format!("\"snapshot\":{{\"id\":{id},")),
            "--at {time} must list snapshot {id}: {text}"
        );
    }
}

#[test]
fn paths_given_twice_or_inside_each_other_are_found() {
    let t = paths();
    std::fs::create_dir_all(t.src.join("dir/sub")).unwrap();
    std::fs::write(t.src.join("dir/sub/f"), b"inner").unwrap();
    std::fs::write(t.src.join("dir/g"), b"outer").unwrap();
    assert_eq!(dump_to(0, &t.stream, &t.cat, &t.src), 0);
    for (n, sel) in [
        &["dir", "dir/sub"][..],
        &["dir/sub", "dir"],
        &["dir", "dir"],
        &["dir/sub/f", "dir/sub"],
    ]
    .iter()
    .enumerate()
    {
        let target = t.dir.path().join(format!("t{n}"));
        let mut args = vec!["restore", "-x", "-f", p(&t.stream), "--target", p(&target)];
        args.extend(sel.iter());
        let (code, _, err) = run_s(&args);
        assert_eq!(code, 0, "{sel:?}: {err}");
        assert!(!err.contains("not in snapshot"), "{sel:?}: {err}");
        assert_eq!(std::fs::read(target.join("dir/sub/f")).unwrap(), b"inner");
    }
    // A path that is really missing is still named, even inside another.
    let target = t.dir.path().join("missing");
    let (code, _, err) = run_s(&[
        "restore",
        "-x",
        "-f",
        p(&t.stream),
        "--target",
        p(&target),
        "dir",
        "dir/nope",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("dir/nope") && err.contains("not in snapshot"),
        "{err}"
    );
}

#[test]
fn history_of_the_source_root_is_the_root_entry() {
    let t = paths();
    std::fs::write(t.src.join("f"), b"x").unwrap();
    assert_eq!(dump_to(0, &t.stream, &t.cat, &t.src), 0);
    let root = std::fs::canonicalize(&t.src).unwrap();
    let (code, out, err) = run_s(&["history", "--catalog", p(&t.cat), p(&root)]);
    assert_eq!(code, 0, "{err}");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with(". in "), "{text}");
    assert!(text.contains("snapshot    1"), "{text}");
}
