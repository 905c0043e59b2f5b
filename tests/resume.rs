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
