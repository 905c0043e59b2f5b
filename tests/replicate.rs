//! `snapdump replicate` / `serve` through the real binary: the seed-003
//! flow into volumes and directory targets, locally and through `--rsh`,
//! the decision cases, lost acknowledgements, and kills on either side.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;

type Tree = BTreeMap<Vec<u8>, Entry>;

/// A local stand-in for ssh: `local-rsh HOST COMMAND` runs COMMAND with
/// sh, as sshd would (the host is ignored).
fn local_rsh(dir: &Path) -> String {
    let p = dir.join("local-rsh");
    std::fs::write(&p, "#!/bin/sh\nshift\nexec sh -c \"$*\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

fn replicate(
    cat: &Path,
    extra: &[&str],
    src: &str,
    dest: &str,
) -> (i32, serde_json::Value, String) {
    let mut args = vec!["replicate", "--json", "--catalog", p(cat)];
    args.extend_from_slice(extra);
    args.push(src);
    args.push(dest);
    let (code, out, err) = run_s(&args);
    let v = serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null);
    (code, v, err)
}

fn ok(r: (i32, serde_json::Value, String)) -> serde_json::Value {
    assert_eq!(r.0, 0, "replicate failed: {}", r.2);
    r.1
}

/// The source tree as a replica must hold it.
fn source_state(src: &Path) -> Tree {
    snapshot_tree(src)
}

/// A directory replica without snapdump's own state directory, and with
/// the root's link count and times left out (the state directory adds a
/// link; the root's mtime changes when it is created).
fn replica_state(dir: &Path) -> Tree {
    let mut t = snapshot_tree(dir);
    t.retain(|k, _| !k.starts_with(b".snapdump-restore"));
    t
}

fn same_content(want: &Tree, got: &Tree, what: &str) {
    let mut w = want.clone();
    let mut g = got.clone();
    w.remove(b".".as_slice());
    g.remove(b".".as_slice());
    // Reading a symlink (this test's own snapshot of the source does)
    // can move its atime after the dump read it.
    for m in [&mut w, &mut g] {
        for e in m.values_mut() {
            if e.target.is_some() {
                e.atime = (0, 0);
            }
        }
    }
    let keys = |m: &Tree| {
        m.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&g), keys(&w), "{what}: different entries");
    for (k, e) in &w {
        if &g[k] != e {
            panic!(
                "{what}: {} differs: {}",
                String::from_utf8_lossy(k),
                describe_diff(e, &g[k])
            );
        }
    }
}

/// The newest snapshot of a volume, extracted.
fn volume_state(vol: &Path, work: &Path, sel: &str) -> Tree {
    let out = work.join(format!("extract-{}", rand_name()));
    let spec = format!("{}{}", vol.display(), sel);
    let (code, _, err) = run_s(&["volume", "extract", &spec, p(&out)]);
    assert_eq!(code, 0, "extract {spec}: {err}");
    let t = snapshot_tree(&out);
    std::fs::remove_dir_all(&out).unwrap();
    t
}

fn rand_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn write(path: &Path, seed: u64, n: usize) {
    std::fs::write(path, bytes(seed, n)).unwrap();
}

fn small_tree(src: &Path) {
    std::fs::create_dir_all(src.join("d/e")).unwrap();
    write(&src.join("a"), 1, 300_000);
    write(&src.join("d/b"), 2, 5000);
    write(&src.join("d/e/c"), 3, 70_000);
    std::os::unix::fs::symlink("a", src.join("link")).unwrap();
}

/// Changes some blocks, adds and removes files: the next snapshot's change.
fn mutate(src: &Path, round: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("a"))
        .unwrap();
    f.seek(SeekFrom::Start(4096 * (round % 50))).unwrap();
    f.write_all(&bytes(100 + round, 6000)).unwrap();
    write(
        &src.join(format!("new{round}")),
        200 + round,
        10_000 + round as usize,
    );
    let _ = std::fs::remove_file(src.join(format!("new{}", round.wrapping_sub(2))));
    // Times coarser than the clock can hide a change made within the same
    // second as the snapshot; step past it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

/// Seed 003's flow, to a volume and to a directory target, through the
/// local `--rsh` command: level 0, then increments; after each step every
/// snapshot so far is compared with the source as it was.
#[test]
fn seed_003_flow_through_rsh_into_volume_and_directory() {
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    let rsh = local_rsh(work);
    let bin = bin_path().into_string().unwrap();
    let vol = work.join("replica.vol");
    let dir = work.join("replica-dir");
    let vdest = format!("localhost:{}", vol.display());
    let ddest = format!("localhost:{}", dir.display());
    let extra = ["--rsh", &rsh, "--remote-snapdump", &bin];
    let mut states: Vec<Tree> = Vec::new();
    for round in 0..4u64 {
        if round > 0 {
            mutate(&t.src, round);
        }
        let want = source_state(&t.src);
        let v = ok(replicate(&t.cat, &extra, p(&t.src), &vdest));
        let d = ok(replicate(&t.cat, &extra, p(&t.src), &ddest));
        let expect = if round == 0 { "full" } else { "increment" };
        assert_eq!(v["decision"], expect, "{v}");
        assert_eq!(d["decision"], expect, "{d}");
        // Wire bytes: the stream plus a little framing.
        let stream = v["stream_bytes"].as_u64().unwrap();
        assert!(
            v["wire_bytes_sent"].as_u64().unwrap() <= stream + stream / 50 + 4096,
            "{v}"
        );
        states.push(want);
        same_content(
            states.last().unwrap(),
            &replica_state(&dir),
            "directory replica",
        );
        for (i, s) in states.iter().enumerate() {
            // Volume snapshots are numbered in the order received: @1.. here.
            same_content(
                s,
                &volume_state(&vol, work, &format!("@{}", i + 1)),
                "volume snapshot",
            );
        }
    }
    let (code, _, err) = run_s(&["volume", "check", p(&vol)]);
    assert_eq!(code, 0, "{err}");
    // Nothing changed: nothing but the handshake.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let _ = ok(replicate(&t.cat, &extra, p(&t.src), &vdest));
    let v = ok(replicate(&t.cat, &extra, p(&t.src), &vdest));
    assert_eq!(v["decision"], "current", "{v}");
    assert_eq!(v["stream_bytes"], 0);
    assert!(v["wire_bytes_sent"].as_u64().unwrap() < 2048, "{v}");
}

/// A volume replica feeds the next one (A → B → C), and C keeps the
/// snapshots' identities.
#[test]
fn cascade_from_a_volume() {
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    let b = work.join("b.vol");
    let c = work.join("c.vol");
    let d = work.join("d-dir");
    // B packs its blocks, and already holds another source's at the low
    // VBNs: A's blocks are relocated there, so what B sends on is named
    // through its origin table.
    assert_eq!(run_s(&["volume", "create", "--compact", p(&b)]).0, 0);
    let other = work.join("other");
    std::fs::create_dir_all(&other).unwrap();
    write(&other.join("x"), 9, 200_000);
    let xs = work.join("x.sdump");
    let xcat = work.join("xcat");
    assert_eq!(
        run_s(&["dump", "-0", "--catalog", p(&xcat), "-f", p(&xs), p(&other)]).0,
        0
    );
    let (code, out, err) = run_s(&["restore", "-r", "--json", "-f", p(&xs), "--volume", p(&b)]);
    assert_eq!(code, 0, "{err}");
    let _ = out;
    for round in 0..3u64 {
        if round > 0 {
            mutate(&t.src, round);
        }
        let want = source_state(&t.src);
        ok(replicate(&t.cat, &[], p(&t.src), p(&b)));
        let vc = ok(replicate(&t.cat, &[], p(&b), p(&c)));
        assert_eq!(
            vc["decision"],
            if round == 0 { "full" } else { "increment" },
            "{vc}"
        );
        ok(replicate(&t.cat, &[], p(&c), p(&d)));
        same_content(&want, &volume_state(&c, work, ""), "C");
        same_content(&want, &replica_state(&d), "D");
        let vb: serde_json::Value =
            serde_json::from_slice(&run_s(&["volume", "snapshots", "--json", p(&b)]).1).unwrap();
        let vcs: serde_json::Value =
            serde_json::from_slice(&run_s(&["volume", "snapshots", "--json", p(&c)]).1).unwrap();
        let uuids = |v: &serde_json::Value| -> Vec<String> {
            v["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| !s["source"].as_str().unwrap().ends_with("/other"))
                .map(|s| s["snapshot"]["uuid"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(uuids(&vb).len(), round as usize + 1);
        assert_eq!(
            uuids(&vb),
            uuids(&vcs),
            "C holds B's snapshots under the same identities"
        );
    }
    let v = ok(replicate(&t.cat, &[], p(&b), p(&c)));
    assert_eq!(v["decision"], "current");
    // B is lost: A feeds C directly, from C's newest master (C follows A,
    // not B), and C still feeds D incrementally.
    let c_newest = v["top"]["uuid"].clone();
    std::fs::remove_file(&b).unwrap();
    for round in 3..5u64 {
        mutate(&t.src, round);
        let want = source_state(&t.src);
        let va = ok(replicate(&t.cat, &[], p(&t.src), p(&c)));
        assert_eq!(va["decision"], "increment", "A -> C after B is gone: {va}");
        if round == 3 {
            assert_eq!(va["base"]["uuid"], c_newest, "{va}");
        }
        same_content(&want, &volume_state(&c, work, ""), "C fed by A");
        let (code, out, err) = run_s(&["volume", "check", p(&c)]);
        assert_eq!(code, 0, "{err} {}", String::from_utf8_lossy(&out));
        let vd = ok(replicate(&t.cat, &[], p(&c), p(&d)));
        assert_eq!(vd["decision"], "increment", "{vd}");
        same_content(&want, &replica_state(&d), "D after C fed by A");
    }
    // D follows A as well: A can feed it directly.
    mutate(&t.src, 5);
    let want = source_state(&t.src);
    let vd = ok(replicate(&t.cat, &[], p(&t.src), p(&d)));
    assert_eq!(vd["decision"], "increment", "A -> D: {vd}");
    same_content(&want, &replica_state(&d), "D fed by A");
}

/// A destination fed from another source is refused, naming both sides
/// and --full; --full replaces it.
#[test]
fn divergence_is_refused_and_full_resolves_it() {
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    let vol = work.join("r.vol");
    ok(replicate(&t.cat, &[], p(&t.src), p(&vol)));
    // A second catalog of the same source: another snapshot history.
    let other = work.join("other-catalog");
    mutate(&t.src, 1);
    let (code, _, err) = replicate(&other, &[], p(&t.src), p(&vol));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--full") && err.contains("another source"),
        "{err}"
    );
    let v = ok(replicate(&other, &["--full"], p(&t.src), p(&vol)));
    assert_eq!(v["decision"], "full");
    same_content(
        &source_state(&t.src),
        &volume_state(&vol, work, ""),
        "after --full",
    );
    // A volume holds several sources: the first catalog's line of
    // snapshots is still there, and it continues incrementally.
    let v = ok(replicate(&t.cat, &[], p(&t.src), p(&vol)));
    assert_eq!(v["decision"], "increment", "{v}");
    // A directory holds one: a second source is refused.
    let dir = work.join("dir");
    ok(replicate(&t.cat, &[], p(&t.src), p(&dir)));
    let (code, _, err) = replicate(&other, &[], p(&t.src), p(&dir));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--full"), "{err}");
}

/// The acknowledgement is lost (the receiver dies after applying): the
/// next run sends no stream and finds the destination current.
#[test]
fn lost_acknowledgement_sends_nothing_new() {
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    let vol = work.join("r.vol");
    ok(replicate(&t.cat, &[], p(&t.src), p(&vol)));
    mutate(&t.src, 1);
    let want = source_state(&t.src);
    let out = bin()
        .args(["replicate", "--catalog", p(&t.cat), p(&t.src), p(&vol)])
        .env("SNAPDUMP_FAILPOINT", "serve-before-ack:1")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    same_content(
        &want,
        &volume_state(&vol, work, ""),
        "applied before the ack",
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let _ = ok(replicate(&t.cat, &[], p(&t.src), p(&vol)));
    let v = ok(replicate(&t.cat, &[], p(&t.src), p(&vol)));
    assert_eq!(v["decision"], "current", "{v}");
    // The source's record caught up with the destination at the hello.
    let (_, out, _) = run_s(&["replicas", "--json", "--catalog", p(&t.cat), p(&t.src)]);
    let l: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(l[0]["newest"]["uuid"], v["top"]["uuid"], "{l}");
}

/// Killed after the destination synced the whole stream but before the
/// source said commit: the next run applies what is there, sending nothing.
#[test]
fn a_whole_transfer_is_committed_by_the_next_run() {
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    let dir = work.join("r");
    ok(replicate(&t.cat, &[], p(&t.src), p(&dir)));
    mutate(&t.src, 1);
    let want = source_state(&t.src);
    let out = bin()
        .args(["replicate", "--catalog", p(&t.cat), p(&t.src), p(&dir)])
        .env("SNAPDUMP_FAILPOINT", "replicate-before-commit:1")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let v = ok(replicate(&t.cat, &[], p(&t.src), p(&dir)));
    assert!(
        v["decision"] == "resume" || v["decision"] == "commit",
        "{v}"
    );
    assert_eq!(v["bytes_sent"], 0, "{v}");
    same_content(&want, &replica_state(&dir), "after the next run");
}

fn big_change(src: &Path, round: u64) {
    for i in 0..3 {
        write(&src.join(format!("big{i}")), 1000 + round * 7 + i, 6 << 20);
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

/// Kills of the sender or the receiver at random moments: after each the
/// destination is at its old or its new snapshot, and the next run
/// completes; transfers cut after half their bytes keep them.
#[test]
fn kills_on_either_side_leave_old_or_new_and_resume() {
    let trials = trials("SNAPDUMP_REPLICA_KILL_TRIALS", 30);
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    big_change(&t.src, 0);
    let dests = [work.join("k.vol"), work.join("k-dir")];
    let mut whole_ms = 0u64;
    for d in &dests {
        let started = std::time::Instant::now();
        ok(replicate(&t.cat, &[], p(&t.src), p(d)));
        whole_ms = whole_ms.max(started.elapsed().as_millis() as u64);
    }
    let mut rng = Rng(0x5eed_2026);
    let mut resumed_late = 0;
    let mut cut_late = 0;
    for trial in 0..trials {
        let d = &dests[(trial % 2) as usize];
        let old = match trial % 2 {
            0 => volume_state(d, work, ""),
            _ => replica_state(d),
        };
        big_change(&t.src, trial + 1);
        let new = source_state(&t.src);
        let mut child = bin()
            .args(["replicate", "--catalog", p(&t.cat), p(&t.src), p(d)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Anywhere from the start to a little past the time a whole
        // transfer takes.
        let delay = rng.below(whole_ms * 5 / 4 + 20);
        std::thread::sleep(std::time::Duration::from_millis(delay));
        // The receiver is the sender's child.
        let kids = std::process::Command::new("pgrep")
            .args(["-P", &child.id().to_string()])
            .output()
            .unwrap();
        let kids: Vec<String> = String::from_utf8_lossy(&kids.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if trial % 3 == 1 {
            for pid in &kids {
                let _ = std::process::Command::new("kill")
                    .args(["-9", pid])
                    .status();
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        // A receiver whose sender died finishes on its own (it sees the
        // end of its input, keeps what arrived, and exits).
        for pid in &kids {
            let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
            for _ in 0..600 {
                let zombie_or_gone = std::fs::read_to_string(proc.join("stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true);
                if zombie_or_gone {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        // Old or new, never between.
        let now = match trial % 2 {
            0 => {
                let (code, _, err) = run_s(&["volume", "check", p(d)]);
                assert_eq!(code, 0, "trial {trial}: volume check: {err}");
                volume_state(d, work, "")
            }
            _ => replica_state(d),
        };
        let strip = |m: &Tree| {
            let mut m = m.clone();
            m.remove(b".".as_slice());
            for e in m.values_mut() {
                if e.target.is_some() {
                    e.atime = (0, 0);
                }
            }
            m
        };
        let is_old = strip(&now) == strip(&old);
        let is_new = strip(&now) == strip(&new);
        assert!(is_old || is_new, "trial {trial} (killed after {delay} ms): the destination is neither at its old nor its new snapshot");
        let v = ok(replicate(&t.cat, &[], p(&t.src), p(d)));
        let after = match trial % 2 {
            0 => volume_state(d, work, ""),
            _ => replica_state(d),
        };
        same_content(&new, &after, &format!("trial {trial}: after the next run"));
        let stream = v["stream_bytes"].as_u64().unwrap_or(0);
        let resumed = v["bytes_resumed"].as_u64().unwrap_or(0);
        if v["decision"] == "resume" && stream > 0 && resumed * 2 >= stream {
            resumed_late += 1;
        }
        if v["decision"] == "resume" {
            cut_late += 1;
        }
    }
    eprintln!(
        "{cut_late} transfers resumed, {resumed_late} of them keeping at least half their bytes"
    );
    assert!(
        trials < 10 || resumed_late > 0,
        "no kill landed in the second half of a transfer; the trial timing is off"
    );
}

/// A directory with files but no replica is refused before anything is
/// sent or written into it; a volume path in a missing directory is named.
#[test]
fn foreign_directories_are_left_alone() {
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    let junk = work.join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("mine"), b"keep").unwrap();
    let (code, v, err) = replicate(&t.cat, &[], p(&t.src), p(&junk));
    assert_eq!(code, 2, "{v}");
    assert!(err.contains("holds files but no replica"), "{err}");
    let names: Vec<_> = std::fs::read_dir(&junk)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("mine")]);
    let (code, _, err) = replicate(
        &t.cat,
        &[],
        p(&t.src),
        &format!("{}/no/such/r.vol", work.display()),
    );
    assert_eq!(code, 2);
    assert!(err.contains("no/such"), "{err}");
}

/// The source remembers each destination it served, with its newest
/// master; `replicas --forget` releases one.
#[test]
fn replicas_are_recorded_and_forgotten() {
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    let vol = work.join("r.vol");
    let dir = work.join("r-dir");
    let v = ok(replicate(&t.cat, &[], p(&t.src), p(&vol)));
    let d = ok(replicate(&t.cat, &[], p(&t.src), p(&dir)));
    let list = || -> serde_json::Value {
        let (code, out, err) = run_s(&["replicas", "--json", "--catalog", p(&t.cat), p(&t.src)]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_slice(&out).unwrap()
    };
    let l = list();
    let l = l.as_array().unwrap();
    assert_eq!(l.len(), 2, "{l:?}");
    assert_eq!(l[0]["kind"], "volume");
    assert_eq!(l[0]["newest"]["uuid"], v["top"]["uuid"]);
    assert_eq!(l[1]["kind"], "target");
    assert_eq!(l[1]["newest"]["uuid"], d["top"]["uuid"]);
    let id = l[0]["replica_id"].as_str().unwrap().to_string();
    let (code, _, err) = run_s(&[
        "replicas",
        "--catalog",
        p(&t.cat),
        "--forget",
        &id,
        p(&t.src),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(list().as_array().unwrap().len(), 1);
    let (code, _, err) = run_s(&[
        "replicas",
        "--catalog",
        p(&t.cat),
        "--forget",
        &id,
        p(&t.src),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("has no replica"), "{err}");
}

/// An sshd of the test's own on 127.0.0.1: temporary host and client
/// keys, its own config, stopped by its process id.
struct Sshd {
    child: std::process::Child,
    port: u16,
    key: std::path::PathBuf,
}

impl Sshd {
    fn start(dir: &Path) -> Option<Sshd> {
        if !Path::new("/usr/sbin/sshd").exists() {
            assert!(
                std::env::var_os("SNAPDUMP_REQUIRE_SSHD").is_none(),
                "sshd is not installed (apt-get install openssh-server)"
            );
            eprintln!("note: sshd is not installed; skipping the test over ssh");
            return None;
        }
        std::fs::create_dir_all("/run/sshd").ok();
        let keygen = |path: &Path| {
            let st = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f", p(path)])
                .status()
                .unwrap();
            assert!(st.success());
        };
        let host = dir.join("host_key");
        let key = dir.join("client_key");
        keygen(&host);
        keygen(&key);
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let cfg = dir.join("sshd_config");
            std::fs::write(
                &cfg,
                format!(
                    "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin yes\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPidFile {}\n",
                    host.display(),
                    dir.join("authorized_keys").display(),
                    dir.join("sshd.pid").display()
                ),
            )
            .unwrap();
            let mut child = std::process::Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f", p(&cfg)])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            for _ in 0..200 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Sshd { child, port, key });
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("sshd did not start");
    }

    fn rsh(&self) -> String {
        format!(
            "ssh -p {} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
            self.port,
            self.key.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seed 003's flow through a real sshd, into a volume and a directory;
/// then kills of the ssh process at random moments: the destination is at
/// its old or new snapshot and the next run completes.
#[test]
fn over_a_real_sshd() {
    if !is_root() {
        eprintln!("note: the sshd test runs as root only (its sshd logs in as the current user)");
        return;
    }
    let t = paths();
    let work = t.dir.path();
    let Some(sshd) = Sshd::start(work) else {
        return;
    };
    small_tree(&t.src);
    let rsh = sshd.rsh();
    let exe = bin_path().into_string().unwrap();
    let extra = ["--rsh", &rsh, "--remote-snapdump", &exe];
    let vol = work.join("ssh.vol");
    let dir = work.join("ssh-dir");
    let vdest = format!("127.0.0.1:{}", vol.display());
    let ddest = format!("127.0.0.1:{}", dir.display());
    for round in 0..3u64 {
        if round > 0 {
            mutate(&t.src, round);
        }
        let want = source_state(&t.src);
        let v = ok(replicate(&t.cat, &extra, p(&t.src), &vdest));
        let d = ok(replicate(&t.cat, &extra, p(&t.src), &ddest));
        let expect = if round == 0 { "full" } else { "increment" };
        assert_eq!(
            (v["decision"].as_str(), d["decision"].as_str()),
            (Some(expect), Some(expect))
        );
        same_content(&want, &volume_state(&vol, work, ""), "volume over ssh");
        same_content(&want, &replica_state(&dir), "directory over ssh");
    }
    // Kill the ssh process (the sender's child) mid-transfer.
    let mut rng = Rng(0x55d);
    for trial in 0..6u64 {
        let old = volume_state(&vol, work, "");
        big_change(&t.src, 50 + trial);
        let new = source_state(&t.src);
        let mut child = bin()
            .args(["replicate", "--catalog", p(&t.cat)])
            .args(extra)
            .args([p(&t.src), &vdest])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100 + rng.below(1500)));
        let kids = std::process::Command::new("pgrep")
            .args(["-P", &child.id().to_string(), "ssh"])
            .output()
            .unwrap();
        for pid in String::from_utf8_lossy(&kids.stdout).split_whitespace() {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid])
                .status();
        }
        let _ = child.wait();
        // The remote serve sees its input end and finishes; wait for its lock.
        let lock = work.join(".ssh.vol.snapdump-incoming.lock");
        for _ in 0..300 {
            let busy = std::process::Command::new("flock")
                .args(["-n", p(&lock), "true"])
                .status()
                .map(|s| !s.success())
                .unwrap_or(false);
            if !busy {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (code, _, err) = run_s(&["volume", "check", p(&vol)]);
        assert_eq!(code, 0, "trial {trial}: {err}");
        let now = volume_state(&vol, work, "");
        let strip = |m: &Tree| {
            let mut m = m.clone();
            m.remove(b".".as_slice());
            for e in m.values_mut() {
                if e.target.is_some() {
                    e.atime = (0, 0);
                }
            }
            m
        };
        assert!(
            strip(&now) == strip(&old) || strip(&now) == strip(&new),
            "trial {trial}: neither old nor new"
        );
        ok(replicate(&t.cat, &extra, p(&t.src), &vdest));
        same_content(
            &new,
            &volume_state(&vol, work, ""),
            &format!("trial {trial}: after the next run"),
        );
    }
}

/// A destination whose newest master the source no longer keeps (older
/// than every snapshot it keeps) gets a full copy.
#[test]
fn a_master_the_source_no_longer_keeps_means_a_full_copy() {
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    let b = work.join("b.vol");
    let c = work.join("c.vol");
    ok(replicate(&t.cat, &[], p(&t.src), p(&b)));
    ok(replicate(&t.cat, &[], p(&b), p(&c)));
    for round in 1..3 {
        mutate(&t.src, round);
        ok(replicate(&t.cat, &[], p(&t.src), p(&b)));
    }
    let (code, _, err) = run_s(&["volume", "delete-snapshot", &format!("{}@1", b.display())]);
    assert_eq!(code, 0, "{err}");
    let v = ok(replicate(&t.cat, &[], p(&b), p(&c)));
    assert_eq!(v["decision"], "full", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("older than every snapshot"),
        "{v}"
    );
    same_content(
        &source_state(&t.src),
        &volume_state(&c, work, ""),
        "C after the full copy",
    );
}

/// Pointers name snapshots; replicate keeps `master`; a volume source
/// sends a named snapshot with --snapshot.
#[test]
fn pointers_name_snapshots_and_replicate_sends_one() {
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    let b = work.join("b.vol");
    let first = source_state(&t.src);
    let v1 = ok(replicate(&t.cat, &[], p(&t.src), p(&b)));
    mutate(&t.src, 1);
    let v2 = ok(replicate(&t.cat, &[], p(&t.src), p(&b)));
    let ls = |src: &Path| -> serde_json::Value {
        let (code, out, err) = run_s(&["pointer", "ls", "--json", "--catalog", p(&t.cat), p(src)]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_slice(&out).unwrap()
    };
    let l = ls(&t.src);
    assert_eq!(l[0]["name"], "master");
    assert_eq!(l[0]["snapshot"]["uuid"], v2["top"]["uuid"]);
    let id = v1["top"]["id"].as_u64().unwrap().to_string();
    let (code, _, err) = run_s(&[
        "pointer",
        "set",
        "--catalog",
        p(&t.cat),
        p(&t.src),
        "first",
        &id,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(ls(&t.src).as_array().unwrap().len(), 2);
    // On the volume: name its @1 and send just that to a new replica.
    let (code, _, err) = run_s(&["pointer", "set", "--catalog", p(&t.cat), p(&b), "old", "@1"]);
    assert_eq!(code, 0, "{err}");
    let c = work.join("c.vol");
    let v = ok(replicate(&t.cat, &["--snapshot", "old"], p(&b), p(&c)));
    assert_eq!(v["top"]["uuid"], v1["top"]["uuid"], "{v}");
    same_content(&first, &volume_state(&c, work, ""), "the named snapshot");
    // C moves on to B's newest; the old one is then refused, not a
    // conflict that would advise --full.
    let v = ok(replicate(&t.cat, &[], p(&b), p(&c)));
    assert_eq!(v["decision"], "increment", "{v}");
    let (code, _, err) = replicate(&t.cat, &["--snapshot", "old"], p(&b), p(&c));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("newer than snapshot"), "{err}");
    let (code, _, err) = run_s(&["pointer", "rm", "--catalog", p(&t.cat), p(&t.src), "first"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_s(&["pointer", "rm", "--catalog", p(&t.cat), p(&t.src), "first"]);
    assert_eq!(code, 2);
    assert!(err.contains("no pointer first"), "{err}");
    let (code, _, err) = replicate(&t.cat, &["--snapshot", "old"], p(&t.src), p(&c));
    assert_eq!(code, 2);
    assert!(
        err.contains("tree source always sends a new snapshot"),
        "{err}"
    );
}

/// A destination that fails in the middle of the stream (its file system
/// fills up) is reported by its own message, in one line, not as a broken
/// pipe; it keeps its old snapshot, and the next replicate (with room)
/// completes.
#[test]
fn a_destination_failing_mid_stream_says_why() {
    let t = paths();
    let work = t.dir.path();
    write(&t.src.join("small"), 1, 100_000);
    let Some(fsys) = Tmpfs::new(&work.join("fs"), "6M") else {
        eprintln!("skipped: needs root for a tmpfs");
        return;
    };
    let vol = fsys.0.join("r.vol");
    let dir = fsys.0.join("r-dir");
    for dest in [&vol, &dir] {
        ok(replicate(&t.cat, &[], p(&t.src), p(dest)));
    }
    let want = source_state(&t.src);
    write(&t.src.join("big"), 2, 12 << 20);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for dest in [&vol, &dir] {
        let (code, _, err) = replicate(&t.cat, &[], p(&t.src), p(dest));
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("file system full"), "{err}");
        assert!(!err.to_lowercase().contains("broken pipe"), "{err}");
    }
    same_content(
        &want,
        &volume_state(&vol, work, ""),
        "volume kept its snapshot",
    );
    same_content(&want, &replica_state(&dir), "directory kept its snapshot");
    // Room again: the next run completes.
    std::fs::remove_file(t.src.join("big")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let want = source_state(&t.src);
    for dest in [&vol, &dir] {
        ok(replicate(&t.cat, &[], p(&t.src), p(dest)));
    }
    same_content(&want, &volume_state(&vol, work, ""), "volume after");
    same_content(&want, &replica_state(&dir), "directory after");
}

/// `--full` into a directory that holds a replica of another history:
/// the copy is staged beside it and swapped in whole. Killed before the
/// swap the old tree stays, killed after it the new one is there; the
/// staging directory is removed by the next run, and the replica keeps
/// its id.
#[test]
fn a_full_copy_replaces_a_directory_replica_whole() {
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    let dir = work.join("dir");
    ok(replicate(&t.cat, &[], p(&t.src), p(&dir)));
    let old = replica_state(&dir);
    let id_file = dir.join(".snapdump-restore/replica-id");
    let id = std::fs::read(&id_file).unwrap();
    let staging = work.join(".dir.snapdump-full");
    let other = work.join("other-catalog");
    mutate(&t.src, 1);
    let want = source_state(&t.src);
    let (code, _, err) = replicate(&other, &[], p(&t.src), p(&dir));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--full"), "{err}");
    let killed = |point: &str| {
        let out = bin()
            .args([
                "replicate",
                "--full",
                "--catalog",
                p(&other),
                p(&t.src),
                p(&dir),
            ])
            .env("SNAPDUMP_FAILPOINT", format!("{point}:1"))
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0), "{point}");
        assert!(staging.exists(), "{point}: staging left behind");
    };
    killed("serve-before-swap");
    same_content(
        &old,
        &replica_state(&dir),
        "killed before the swap: the old tree",
    );
    killed("serve-after-swap");
    same_content(
        &want,
        &replica_state(&dir),
        "killed after the swap: the new tree",
    );
    assert_eq!(
        std::fs::read(&id_file).unwrap(),
        id,
        "the replica keeps its id"
    );
    ok(replicate(&other, &[], p(&t.src), p(&dir)));
    assert!(
        !staging.exists(),
        "the next run removes the staging directory"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // Uninterrupted, with the source's first history.
    ok(replicate(&t.cat, &[], p(&t.src), p(&dir)));
    mutate(&t.src, 2);
    let want = source_state(&t.src);
    let v = ok(replicate(&other, &["--full"], p(&t.src), p(&dir)));
    assert_eq!(v["decision"], "full", "{v}");
    same_content(&want, &replica_state(&dir), "after --full");
    assert!(!staging.exists());
    mutate(&t.src, 3);
    let want = source_state(&t.src);
    let v = ok(replicate(&other, &[], p(&t.src), p(&dir)));
    assert_eq!(v["decision"], "increment", "{v}");
    same_content(&want, &replica_state(&dir), "increment after --full");
}

/// The destination volume places blocks while the stream arrives and
/// commits when the source says so: killed just before that commit it
/// holds its old snapshot (and checks clean); the next run commits the
/// held transfer without sending it again.
#[test]
fn a_volume_killed_before_its_early_commit_keeps_its_old_snapshot() {
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    let vol = work.join("r.vol");
    ok(replicate(&t.cat, &[], p(&t.src), p(&vol)));
    let old = source_state(&t.src);
    mutate(&t.src, 1);
    let want = source_state(&t.src);
    let out = bin()
        .args(["replicate", "--catalog", p(&t.cat), p(&t.src), p(&vol)])
        .env("SNAPDUMP_FAILPOINT", "serve-before-early-commit:1")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    same_content(
        &old,
        &volume_state(&vol, work, ""),
        "killed before the commit",
    );
    let (code, out, err) = run_s(&["volume", "check", p(&vol)]);
    assert_eq!(code, 0, "{err} {}", String::from_utf8_lossy(&out));
    let v = ok(replicate(&t.cat, &[], p(&t.src), p(&vol)));
    assert_eq!(v["bytes_sent"], 0, "{v}");
    same_content(&want, &volume_state(&vol, work, ""), "after the next run");
}

/// A directory replica checks and stages an increment while it arrives
/// and finishes it when the source says commit. Killed just before that
/// finish it holds its old snapshot exactly; the next run sends nothing
/// and finishes from the held transfer. A source that dies before its
/// commit leaves the staged apply undone by the receiver itself: the old
/// snapshot, nothing staged beside or inside the target. Both finishes.
#[test]
fn a_directory_stages_while_the_stream_arrives_and_applies_only_on_commit() {
    for mode in [&[][..], &["--inplace"][..]] {
        let t = paths();
        let work = t.dir.path();
        small_tree(&t.src);
        let dir = work.join("r");
        let apply_dir = dir.join(".snapdump-restore/apply");
        let beside = work.join(".r.snapdump-next");
        let run = |point: &str| {
            let mut args = vec!["replicate", "--catalog", p(&t.cat)];
            args.extend_from_slice(mode);
            args.extend([p(&t.src), p(&dir)]);
            bin()
                .args(&args)
                .env("SNAPDUMP_FAILPOINT", format!("{point}:1"))
                .output()
                .unwrap()
        };
        ok(replicate(&t.cat, mode, p(&t.src), p(&dir)));
        let old = replica_state(&dir);
        mutate(&t.src, 1);
        let want = source_state(&t.src);
        // Reached only when the stream was staged as it arrived.
        let out = run("serve-before-early-commit");
        assert_ne!(out.status.code(), Some(0), "{mode:?}");
        same_content(&old, &replica_state(&dir), "killed before the finish");
        let v = ok(replicate(&t.cat, mode, p(&t.src), p(&dir)));
        assert_eq!(v["bytes_sent"], 0, "{mode:?} {v}");
        same_content(&want, &replica_state(&dir), "after the next run");
        assert!(
            !apply_dir.exists() && !beside.exists(),
            "{mode:?}: left over"
        );
        // The source dies after the destination synced the stream (and
        // staged it), before it says commit.
        let before = want;
        mutate(&t.src, 2);
        let want = source_state(&t.src);
        let out = run("replicate-before-commit");
        assert_ne!(out.status.code(), Some(0), "{mode:?}");
        // The receiver sees the source go, undoes and exits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while (apply_dir.exists() || beside.exists()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            !apply_dir.exists(),
            "{mode:?}: the staged apply was not undone"
        );
        assert!(
            !beside.exists(),
            "{mode:?}: the staged tree was left beside"
        );
        same_content(&before, &replica_state(&dir), "no commit");
        let v = ok(replicate(&t.cat, mode, p(&t.src), p(&dir)));
        assert_eq!(v["bytes_sent"], 0, "{mode:?} {v}");
        same_content(&want, &replica_state(&dir), "committed by the next run");
    }
}

/// A new replica volume of a volume source with 1 KiB blocks: the early
/// placement cannot use the 4 KiB volume the hello created, so the stream
/// is applied from the incoming file, into the volume re-created with the
/// stream's block size.
#[test]
fn a_new_replica_volume_takes_its_first_streams_block_size() {
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    let k = work.join("k.vol");
    assert_eq!(
        run_s(&["volume", "create", "--block-size", "1024", p(&k)]).0,
        0
    );
    ok(replicate(&t.cat, &[], p(&t.src), p(&k)));
    let c = work.join("c.vol");
    let v = ok(replicate(&t.cat, &[], p(&k), p(&c)));
    assert_eq!(v["decision"], "full", "{v}");
    let info: serde_json::Value =
        serde_json::from_slice(&run_s(&["volume", "snapshots", "--json", p(&c)]).1).unwrap();
    assert_eq!(info["block_size"], 1024, "{info}");
    same_content(&source_state(&t.src), &volume_state(&c, work, ""), "C");
    mutate(&t.src, 1);
    ok(replicate(&t.cat, &[], p(&t.src), p(&k)));
    let v = ok(replicate(&t.cat, &[], p(&k), p(&c)));
    assert_eq!(v["decision"], "increment", "{v}");
    same_content(
        &source_state(&t.src),
        &volume_state(&c, work, ""),
        "C after",
    );
}

/// One source, two destinations served in turn: a destination behind the
/// newest snapshot, with the tree unchanged since, is sent that snapshot
/// (no new one is taken), so both reach "current" and the catalog does
/// not grow by a snapshot per run.
#[test]
fn destinations_served_in_turn_both_reach_current() {
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    // Older than the clock's granularity: not "racily clean" (a racy file
    // is recorded as changed, and the tree then differs from the newest).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = work.join("b.vol");
    let c = work.join("c-dir");
    let snapshots = || {
        let out = run_s(&["snapshots", "--json", "--catalog", p(&t.cat), p(&t.src)]).1;
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        v[0]["snapshots"].as_array().unwrap().len()
    };
    ok(replicate(&t.cat, &[], p(&t.src), p(&b)));
    ok(replicate(&t.cat, &[], p(&t.src), p(&c)));
    let want = source_state(&t.src);
    for round in 0..2 {
        if round == 1 {
            mutate(&t.src, 1);
            ok(replicate(&t.cat, &[], p(&t.src), p(&b)));
        }
        let want = if round == 1 {
            source_state(&t.src)
        } else {
            want.clone()
        };
        let n = snapshots();
        // C (round 1) or B (round 0) is one behind: it gets the newest.
        let behind = if round == 0 { &b } else { &c };
        let v = ok(replicate(&t.cat, &[], p(&t.src), p(behind)));
        assert_eq!(v["decision"], "increment", "{v}");
        assert_eq!(snapshots(), n, "no new snapshot for a resend: {v}");
        for dest in [&b, &c] {
            let v = ok(replicate(&t.cat, &[], p(&t.src), p(dest)));
            assert_eq!(v["decision"], "current", "{} {v}", dest.display());
        }
        same_content(&want, &volume_state(&b, work, ""), "B");
        same_content(&want, &replica_state(&c), "C");
        let (code, _, err) = run_s(&["volume", "check", p(&b)]);
        assert_eq!(code, 0, "{err}");
    }
}

/// A volume source keeps the snapshot a replica needs as its base: deleting
/// (or shadowing) it is refused, naming the replica and the ways out, until
/// the replica moved past it.
#[test]
fn a_volume_keeps_the_master_its_replicas_need() {
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    let b = work.join("b.vol");
    let c = work.join("c.vol");
    ok(replicate(&t.cat, &[], p(&t.src), p(&b)));
    ok(replicate(&t.cat, &[], p(&b), p(&c)));
    mutate(&t.src, 1);
    ok(replicate(&t.cat, &[], p(&t.src), p(&b)));
    for verb in ["delete-snapshot", "shadow"] {
        let (code, _, err) = run_s(&[
            "volume",
            verb,
            "--catalog",
            p(&t.cat),
            &format!("{}@1", p(&b)),
        ]);
        assert_eq!(code, 2, "{verb}: {err}");
        assert!(
            err.contains("newest master of replica")
                && err.contains("--forget")
                && err.contains("--force"),
            "{verb}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let v = ok(replicate(&t.cat, &[], p(&b), p(&c)));
    assert_eq!(v["decision"], "increment", "{v}");
    let (code, _, err) = run_s(&[
        "volume",
        "delete-snapshot",
        "--catalog",
        p(&t.cat),
        &format!("{}@1", p(&b)),
    ]);
    assert_eq!(code, 0, "{err}");
    mutate(&t.src, 2);
    ok(replicate(&t.cat, &[], p(&t.src), p(&b)));
    let v = ok(replicate(&t.cat, &[], p(&b), p(&c)));
    assert_eq!(v["decision"], "increment", "{v}");
    same_content(&source_state(&t.src), &volume_state(&c, work, ""), "C");
}

/// Two runs of one source into one destination at the same time (cron
/// runs that overlap) queue on the source's catalog lock: both finish,
/// neither deadlocks, and the destination holds the source.
#[test]
fn overlapping_runs_into_one_destination_queue_and_finish() {
    let t = paths();
    let work = t.dir.path();
    small_tree(&t.src);
    write(&t.src.join("big"), 7, 24 << 20);
    for dest in [work.join("d.vol"), work.join("d-dir")] {
        let start = || {
            bin()
                .args(["replicate", "--catalog", p(&t.cat), p(&t.src), p(&dest)])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut runs = [start(), start()];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        for r in runs.iter_mut() {
            loop {
                if let Some(status) = r.try_wait().unwrap() {
                    let mut err = String::new();
                    std::io::Read::read_to_string(r.stderr.as_mut().unwrap(), &mut err).unwrap();
                    assert!(status.success(), "{}: {err}", dest.display());
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let _ = r.kill();
                    panic!(
                        "{}: two overlapping runs did not finish (deadlock?)",
                        dest.display()
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        let want = source_state(&t.src);
        let got = if dest.extension().is_some() {
            volume_state(&dest, work, "")
        } else {
            replica_state(&dest)
        };
        same_content(&want, &got, "after overlapping runs");
    }
}

/// A first full copy into a directory that fails on a full file system
/// leaves an unfinished tree that the next run (with room) replaces; a
/// destination inside the source is refused; a path starting with '-' is
/// a path.
#[test]
fn an_unfinished_full_copy_is_replaced_by_the_next_run() {
    let t = paths();
    let work = t.dir.path();
    let Some(fsys) = Tmpfs::new(&work.join("fs"), "9M") else {
        eprintln!("skipped: needs root for a tmpfs");
        return;
    };
    write(&t.src.join("a"), 1, 3_000_000);
    write(&t.src.join("b"), 2, 3_000_000);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let dir = fsys.0.join("dd");
    let (code, _, err) = replicate(&t.cat, &[], p(&t.src), p(&dir));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("run replicate again"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let ok_remount = std::process::Command::new("mount")
        .args(["-o", "remount,size=40M", p(&fsys.0)])
        .status()
        .unwrap()
        .success();
    assert!(ok_remount);
    let v = ok(replicate(&t.cat, &[], p(&t.src), p(&dir)));
    assert_eq!(v["decision"], "full", "{v}");
    same_content(
        &source_state(&t.src),
        &replica_state(&dir),
        "after room was made",
    );
    // Inside the source: refused, nothing created.
    for inner in ["inner", "inner.vol"] {
        let (code, _, err) = replicate(&t.cat, &[], p(&t.src), p(&t.src.join(inner)));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("inside the source"), "{err}");
        assert!(!t.src.join(inner).exists());
    }
    // A destination named with a leading '-'.
    let out = bin()
        .current_dir(work)
        .args([
            "replicate",
            "--catalog",
            p(&t.cat),
            "--",
            p(&t.src),
            "-lead.vol",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(work.join("-lead.vol").exists());
}
