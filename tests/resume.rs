//! dump --resume: an interrupted dump is continued, the bytes already
//! written are kept, and the finished stream is byte for byte the stream
//! one uninterrupted run with the same snapshot writes.

mod common;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};

fn partial_of(dir: &Path) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(".snapdump-partial."))
        .expect("the interrupted dump left its partial file")
}

fn copy_dir(from: &Path, to: &Path) {
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(o.status.success());
}

fn dump(t: &Paths, out: &Path, cat: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut a = vec!["dump", "-0", "--json", "-f", p(out), "--catalog", p(cat)];
    a.extend(extra);
    a.push(p(&t.src));
    let (c, o, e) = run_s(&a);
    let v = serde_json::from_slice(&o).unwrap_or(serde_json::Value::Null);
    (c, v, e)
}

#[test]
fn an_interrupted_dump_resumes_to_the_stream_a_single_run_writes() {
    let t = paths();
    build_fidelity_tree(&t.src);
    for i in 0..4 {
        fs::write(t.src.join(format!("big{i}")), bytes(70 + i, 2 << 20)).unwrap();
    }
    let work = t.dir.path().join("work");
    fs::create_dir(&work).unwrap();
    let out = work.join("s.sdump");
    let cat = t.dir.path().join("cat");
    // Killed in the middle of the data.
    let o = bin()
        .args(["dump", "-0", "-f", p(&out), "--catalog", p(&cat), p(&t.src)])
        .env("SNAPDUMP_FAILPOINT", "dump-data:20")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        !out.exists(),
        "an interrupted dump left a stream under its name"
    );
    let partial = partial_of(&work);
    let written = fs::metadata(&partial).unwrap().len();
    assert!(written > 1 << 20, "{written} bytes written before the kill");
    // Keep the interrupted state to replay it.
    let saved = t.dir.path().join("saved");
    fs::create_dir(&saved).unwrap();
    copy_dir(&cat, &saved.join("cat"));
    copy_dir(&work, &saved.join("work"));

    // Resumed: the bytes on the medium are kept.
    let (c, v, e) = dump(&t, &out, &cat, &["--resume"]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(v["resumed_bytes"].as_u64().unwrap(), written, "{v}");
    assert!(!partial.exists());
    let resumed = fs::read(&out).unwrap();
    let (c, _, e) = run_s(&["verify", "-f", p(&out)]);
    assert_eq!(c, 0, "{e}");
    let (c, _, e) = run_s(&["restore", "-r", "-f", p(&out), "--target", p(&t.out)]);
    assert_eq!(c, 0, "{e}");
    assert_same_tree(&t.src, &t.out);

    // The same interrupted state, with nothing kept on the medium: one run
    // writes the whole stream with that snapshot. It is the same stream.
    let replay = |mangle: &dyn Fn(&Path)| -> (Vec<u8>, u64) {
        let r = t.dir.path().join("replay");
        let _ = fs::remove_dir_all(&r);
        fs::create_dir(&r).unwrap();
        copy_dir(&saved.join("cat"), &r.join("cat"));
        copy_dir(&saved.join("work"), &r.join("work"));
        // The resume point names the partial file by its path: move the
        // copy there (the original is gone).
        let p0 = partial_of(&r.join("work"));
        fs::rename(&p0, &partial).unwrap();
        mangle(&partial);
        let (c, v, e) = dump(&t, &out, &r.join("cat"), &["--resume"]);
        assert_eq!(c, 0, "{e}");
        (
            fs::read(&out).unwrap(),
            v["resumed_bytes"].as_u64().unwrap(),
        )
    };
    let (whole, kept) = replay(&|p: &Path| fs::File::create(p).map(|_| ()).unwrap());
    assert_eq!(kept, 0);
    assert!(
        whole == resumed,
        "the resumed stream differs from a single run's"
    );
    // Damage at the end of what was written (a torn write): kept up to it,
    // rewritten from it, and still the same stream.
    let (torn, kept) = replay(&|p: &Path| {
        let mut b = fs::read(p).unwrap();
        let n = b.len();
        b[n - 1000..].fill(0xEE);
        fs::write(p, b).unwrap();
    });
    // (A damaged byte may equal the stream's by chance: kept is at least
    // the undamaged part.)
    assert!(
        kept >= written - 1000 && kept < written,
        "{kept} of {written}"
    );
    assert!(torn == resumed);
}

#[test]
fn resume_refuses_what_it_cannot_continue_and_a_new_dump_discards_it() {
    let t = paths();
    fs::write(t.src.join("big"), bytes(9, 4 << 20)).unwrap();
    let out = t.dir.path().join("s.sdump");
    // Nothing to resume.
    let (c, _, e) = dump(&t, &out, &t.cat, &["--resume"]);
    assert_eq!(c, 2);
    assert!(e.contains("no interrupted dump"), "{e}");
    let o = bin()
        .args([
            "dump",
            "-0",
            "-f",
            p(&out),
            "--catalog",
            p(&t.cat),
            p(&t.src),
        ])
        .env("SNAPDUMP_FAILPOINT", "dump-data:5")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let partial = partial_of(t.dir.path());
    // Another output, or another level: refused, nothing changed.
    let (c, _, e) = dump(&t, &t.dir.path().join("other.sdump"), &t.cat, &["--resume"]);
    assert_eq!(c, 2);
    assert!(e.contains("same -f"), "{e}");
    let (c, _, e) = run_s(&[
        "dump",
        "-1",
        "--resume",
        "-f",
        p(&out),
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    assert_eq!(c, 2);
    assert!(e.contains("level 0"), "{e}");
    assert!(partial.exists());
    // A new dump (without --resume) says it discards the interrupted one.
    let (c, _, e) = dump(&t, &out, &t.cat, &[]);
    assert_eq!(c, 0, "{e}");
    assert!(e.contains("discarded"), "{e}");
    assert!(!partial.exists());
    let (c, _, e) = dump(&t, &out, &t.cat, &["--resume"]);
    assert_eq!(c, 2, "{e}");
}

#[test]
fn an_interrupted_dump_across_virtual_tapes_resumes_and_matches_a_single_run() {
    let t = paths();
    for i in 0..5 {
        fs::write(t.src.join(format!("f{i}")), bytes(90 + i, 1 << 20)).unwrap();
    }
    let tapes: Vec<PathBuf> = (1..=4)
        .map(|i| t.dir.path().join(format!("t{i}.tap")))
        .collect();
    // A first dump (of another tree) on tape 1; ours is appended after it.
    let other = t.dir.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("a"), b"first dump").unwrap();
    let (c, _, e) = run_s(&[
        "dump",
        "-0",
        "-f",
        p(&tapes[0]),
        "--catalog",
        p(&t.dir.path().join("cat0")),
        p(&other),
    ]);
    assert_eq!(c, 0, "{e}");
    let first_len = fs::metadata(&tapes[0]).unwrap().len();
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "dump",
            "-0",
            "--json",
            "--append",
            "--tape-capacity",
            "2M",
            "-b",
            "64",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for tp in &tapes {
            a.extend(["-f".to_string(), p(tp).to_string()]);
        }
        a.extend(["--catalog".to_string(), p(&t.cat).to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(p(&t.src).to_string());
        a
    };
    let o = bin()
        .args(args(&[]))
        .env("SNAPDUMP_FAILPOINT", "dump-data:12")
        .output()
        .unwrap();
    assert!(!o.status.success(), "the dump should have been killed");
    assert!(
        tapes[1].exists(),
        "the kill should come on the second volume"
    );
    let saved = t.dir.path().join("saved");
    fs::create_dir(&saved).unwrap();
    copy_dir(&t.cat, &saved.join("cat"));

    let run = || {
        let (c, o, e) = run_s(
            &args(&["--resume"])
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
        );
        assert_eq!(c, 0, "{e}");
        let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
        v["resumed_bytes"].as_u64().unwrap()
    };
    let kept = run();
    assert!(
        kept > 2 << 20,
        "volume 1 and part of volume 2 are kept: {kept}"
    );
    let used: Vec<PathBuf> = tapes.iter().filter(|t| t.exists()).cloned().collect();
    let images: Vec<Vec<u8>> = used.iter().map(|t| fs::read(t).unwrap()).collect();
    let mut a = vec!["restore", "-r", "--file-number", "2", "--target", p(&t.out)];
    for u in &used {
        a.extend(["-f", p(u)]);
    }
    let (c, _, e) = run_s(&a);
    assert_eq!(c, 0, "{e}");
    assert_same_tree(&t.src, &t.out);
    let (c, o, _) = run_s(&["restore", "-t", "-f", p(&tapes[0])]);
    assert_eq!(
        (c, String::from_utf8(o).unwrap()),
        (0, "a\n".to_string()),
        "the first dump is intact"
    );

    // Replay: the same interrupted state with tape 1 cut back to the first
    // dump and no further tapes: one run writes everything. Same images.
    fs::remove_dir_all(&t.cat).unwrap();
    copy_dir(&saved.join("cat"), &t.cat);
    fs::OpenOptions::new()
        .write(true)
        .open(&tapes[0])
        .unwrap()
        .set_len(first_len)
        .unwrap();
    for tp in &tapes[1..] {
        let _ = fs::remove_file(tp);
    }
    assert_eq!(run(), 0);
    for (u, img) in used.iter().zip(&images) {
        assert!(
            fs::read(u).unwrap() == *img,
            "{} differs from the resumed one",
            u.display()
        );
    }
}
