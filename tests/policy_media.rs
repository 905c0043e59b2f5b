//! Policies whose streams go to a tape or into a volume instead of files.
//! Tape (a virtual tape, and the simulated st drive): each run appends
//! its dump as the next tape file, the tape index says where each kept
//! snapshot is, pruning names the cartridges it frees, and every kept
//! snapshot restores from the tape, also after runs killed at each step
//! and dumps that span cartridges. Volume: each dump is received into it,
//! pruning deletes there, and every kept snapshot extracts from it, also
//! after runs killed at each step.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

type Tree = BTreeMap<Vec<u8>, Entry>;

fn json(args: &[&str]) -> Value {
    let (c, o, e) = run_s(args);
    assert_eq!(c, 0, "{args:?}: {e}");
    serde_json::from_slice(&o)
        .unwrap_or_else(|_| panic!("{args:?}: not JSON: {}", String::from_utf8_lossy(&o)))
}

fn time_of(day: u64) -> String {
    let t = 1_798_772_400 + day as i64 * 86_400; // 2027-01-01T03:00:00Z
    snapdump::tree::Time { sec: t, nsec: 0 }.rfc3339()
}

fn churn(src: &Path, day: u64) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(src.join("log"))
        .unwrap();
    f.write_all(&bytes(day, 3000 + day as usize)).unwrap();
    fs::write(src.join(format!("day{day}")), bytes(100 + day, 9000)).unwrap();
    if day % 3 == 0 && day >= 2 {
        let _ = fs::remove_file(src.join(format!("day{}", day - 2)));
    }
}

fn tape_policy(t: &Paths, tape: &Path, streams_extra: &str, body: &str) -> PathBuf {
    let pol = t.dir.path().join("policy.toml");
    fs::write(
        &pol,
        format!(
            "source = \"{}\"\ncatalog = \"{}\"\n\n[streams]\ndir = \"{}\"\ntape = \"{}\"\ncompression = 1\n{streams_extra}\n{body}",
            t.src.display(),
            t.cat.display(),
            t.dir.path().join("state").display(),
            tape.display()
        ),
    )
    .unwrap();
    pol
}

/// The kept snapshots as the plan names them: id -> (base, tape file).
fn kept(pol: &Path, day: u64) -> BTreeMap<u64, (Option<u64>, u64)> {
    let plan = json(&["policy", "plan", "--json", "--at", &time_of(day), p(pol)]);
    let mut bases = BTreeMap::new();
    for s in plan["snapshots"].as_array().unwrap() {
        let stream = s["stream"].as_str().unwrap();
        let file: u64 = stream
            .split(" file ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no tape file in {stream:?}"));
        bases.insert(s["snapshot"].as_u64().unwrap(), (None, file));
    }
    bases
}

/// id -> base, from the catalog.
fn bases(cat: &Path) -> BTreeMap<u64, Option<u64>> {
    let v = json(&["snapshots", "--json", "--catalog", p(cat)]);
    let mut out = BTreeMap::new();
    for src in v.as_array().unwrap() {
        for s in src["snapshots"].as_array().unwrap() {
            let base = if s["full"].as_bool().unwrap() {
                None
            } else {
                s["base"].as_u64()
            };
            out.insert(s["id"].as_u64().unwrap(), base);
        }
    }
    out
}

/// Restores each snapshot in `check` from the tape files of its chain and
/// compares it with the tree it was taken of.
fn check_restores(t: &Paths, pol: &Path, tape: &Path, day: u64, trees: &BTreeMap<u64, Tree>) {
    let mut kept = kept(pol, day);
    let bases = bases(&t.cat);
    for (id, v) in kept.iter_mut() {
        v.0 = bases[id];
    }
    for &id in kept.keys() {
        let mut chain = vec![id];
        while let Some(b) = kept[chain.last().unwrap()].0 {
            assert!(
                kept.contains_key(&b),
                "day {day}: snapshot {id}'s base {b} was pruned"
            );
            chain.push(b);
        }
        chain.reverse();
        let target = t.dir.path().join(format!("r{id}"));
        let _ = fs::remove_dir_all(&target);
        for s in &chain {
            let file = kept[s].1.to_string();
            let (c, _, e) = run_s(&[
                "restore",
                "-r",
                "-f",
                p(tape),
                "--file-number",
                &file,
                "--target",
                p(&target),
            ]);
            assert_eq!(
                c, 0,
                "day {day}: snapshot {id}, tape file {file} (of {s}): {e}"
            );
        }
        assert_tree_is(&trees[&id], &target, &format!("day {day}: snapshot {id}"));
        fs::remove_dir_all(&target).unwrap();
    }
}

#[test]
fn runs_append_to_the_tape_prune_by_catalog_and_every_kept_snapshot_restores() {
    let t = paths();
    fs::write(t.src.join("base"), bytes(1, 150_000)).unwrap();
    let tape = t.dir.path().join("drive.tap");
    let vol = t.dir.path().join("replica.vol");
    let pol = tape_policy(
        &t,
        &tape,
        "",
        &format!("[schedule]\nevery = \"1d\"\nlevels = [0, 1, 2, 3, 1, 2]\n\n[keep]\nlast = 3\nweekly = 2\n\n[[replicate]]\nto = \"{}\"\nkeep = {{ last = 2 }}\n", vol.display()),
    );
    let (c, out, e) = run_s(&["policy", "check", p(&pol)]);
    assert_eq!(c, 0, "{e}");
    assert!(
        String::from_utf8_lossy(&out).contains(&format!("onto the tape {}", tape.display())),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let mut trees = BTreeMap::new();
    let mut pruned = 0;
    for day in 0..16u64 {
        churn(&t.src, day);
        trees.insert(day + 1, snapshot_tree(&t.src));
        let v = json(&["run", "--json", "--at", &time_of(day), p(&pol)]);
        let d = &v["dumped"];
        assert_eq!(d["snapshot"], day + 1, "{v}");
        // One tape file per dump, appended: nothing is ever rewritten.
        assert!(
            d["stream"].as_str().unwrap().starts_with(&format!(
                "{} file {} (tape 1v1-",
                tape.display(),
                day + 1
            )),
            "{v}"
        );
        pruned += v["pruned"].as_array().unwrap().len();
        for x in v["pruned"].as_array().unwrap() {
            assert!(x["stream"].as_str().unwrap().contains(" file "), "{x}");
        }
        // The only cartridge holds the newest dump: never called free.
        assert!(v.get("tapes_freed").is_none(), "{v}");
        assert!(v["replicated"][0]["error"].is_null(), "{v}");
        let again = json(&["run", "--json", "--at", &time_of(day), p(&pol)]);
        assert!(
            again["dumped"].is_null() && again["pruned"].as_array().unwrap().is_empty(),
            "{again}"
        );
        if day % 5 == 4 || day == 15 {
            check_restores(&t, &pol, &tape, day, &trees);
        }
    }
    assert!(pruned >= 8, "retention pruned {pruned}");
    // The catalog holds only what is kept; the tape index no more.
    let rows = bases(&t.cat);
    let index = fs::read_to_string(t.dir.path().join("state/.snapdump-policy.tape")).unwrap();
    assert_eq!(index.lines().count(), rows.len(), "{index}");
    // The replica took every snapshot from the tape and kept its two.
    let v = json(&["volume", "snapshots", "--json", p(&vol)]);
    let held: Vec<u64> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(held, vec![15, 16], "{v}");
    let target = t.dir.path().join("from-replica");
    let (c, _, e) = run_s(&["volume", "extract", p(&vol), p(&target)]);
    assert_eq!(c, 0, "{e}");
    assert_tree_is(&trees[&16], &target, "the replica's newest");
}

#[test]
fn dumps_spanning_cartridges_name_the_cartridges_pruning_frees() {
    let t = paths();
    for k in 0..3 {
        fs::write(t.src.join(format!("f{k}")), bytes(10 + k, 100_000)).unwrap();
    }
    let tape = t.dir.path().join("drive.tap");
    let shelf = t.dir.path().join("shelf");
    fs::create_dir(&shelf).unwrap();
    // The changer: the full cartridge goes to the shelf, numbered, and a
    // blank one takes its place.
    let changer = format!(
        "new_volume = 'n=$(ls {0} | wc -l); mv \"$SNAPDUMP_DEVICE\" {0}/c$n.tap'\ntape_capacity = \"200K\"\nblock_kib = 16\n",
        shelf.display()
    );
    let pol = tape_policy(
        &t,
        &tape,
        &changer,
        "[schedule]\nevery = \"1d\"\nlevels = [0, 1]\n\n[keep]\nlast = 1\n",
    );
    let mut trees = BTreeMap::new();
    let mut freed: Vec<String> = Vec::new();
    let mut last = Value::Null;
    for day in 0..5u64 {
        fs::write(t.src.join(format!("g{day}")), bytes(50 + day, 60_000)).unwrap();
        trees.insert(day + 1, snapshot_tree(&t.src));
        last = json(&["run", "--json", "--at", &time_of(day), p(&pol)]);
        if let Some(f) = last["tapes_freed"].as_array() {
            freed.extend(f.iter().map(|x| x.as_str().unwrap().to_string()));
        }
    }
    let stream = last["dumped"]["stream"].as_str().unwrap().to_string();
    // The newest dump, a level 0, spans cartridges: "... (tape A, then B, then C)".
    let tapes: Vec<String> = stream
        .split("(tape ")
        .nth(1)
        .unwrap()
        .trim_end_matches(')')
        .split(", then ")
        .map(str::to_string)
        .collect();
    assert!(tapes.len() >= 2, "{stream}");
    // No cartridge holding a kept dump is called free; some were.
    assert!(!freed.is_empty(), "{last}");
    for t in &tapes {
        assert!(!freed.contains(t), "{t} holds the newest dump: {freed:?}");
    }
    // The cartridges on the shelf and in the drive, by the name each
    // one's first record gives (what `verify` says of a later volume).
    let mut cartridges: Vec<(String, PathBuf)> = Vec::new();
    let mut all: Vec<PathBuf> = fs::read_dir(&shelf)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    all.push(tape.clone());
    for c in all {
        let (code, _, e) = run_s(&["verify", "-f", p(&c)]);
        let name = if code == 0 {
            // A volume 1: the verify read it whole.
            None
        } else {
            // "holds volume 2 of snapshot 5 (source ...)"
            let v = e.split("holds volume ").nth(1).unwrap_or("");
            let vol = v.split(' ').next().unwrap_or("");
            let snap = v
                .split("of snapshot ")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .unwrap_or("");
            Some(format!("{snap}v{vol}-"))
        };
        if let Some(n) = name {
            cartridges.push((n, c));
        } else {
            cartridges.push((String::new(), c));
        }
    }
    // Restore the newest from its cartridges, in order.
    let file = stream
        .split(" file ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let mut args: Vec<String> = vec!["restore".into(), "-r".into()];
    for (k, name) in tapes.iter().enumerate() {
        let path = if k == 0 {
            // The first volume's cartridge: find it by the dump's place.
            let prefix = name.split('-').next().unwrap().to_string() + "-";
            cartridges
                .iter()
                .find(|(n, _)| *n == prefix)
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| {
                    cartridges
                        .iter()
                        .find(|(n, _)| n.is_empty())
                        .unwrap()
                        .1
                        .clone()
                })
        } else {
            let prefix = name.split('-').next().unwrap().to_string() + "-";
            cartridges
                .iter()
                .find(|(n, _)| *n == prefix)
                .unwrap_or_else(|| panic!("no cartridge {name} in {cartridges:?}"))
                .1
                .clone()
        };
        args.push("-f".into());
        args.push(path.display().to_string());
    }
    let target = t.dir.path().join("r");
    args.extend([
        "--file-number".into(),
        file,
        "--target".into(),
        p(&target).into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (c, _, e) = run_s(&args);
    assert_eq!(c, 0, "{args:?}: {e}");
    assert_tree_is(&trees[&5], &target, "the newest, across cartridges");
}

#[test]
fn runs_killed_at_each_step_of_a_tape_dump_are_finished_by_the_next() {
    let t = paths();
    fs::write(t.src.join("base"), bytes(1, 200_000)).unwrap();
    let tape = t.dir.path().join("drive.tap");
    let pol = tape_policy(
        &t,
        &tape,
        "",
        "[schedule]\nevery = \"1d\"\nlevels = [0, 1, 1, 1]\n\n[keep]\nlast = 3\n",
    );
    let points = [
        "dump-data",
        "policy-dumped",
        "policy-before-prune-commit",
        "policy-prune",
    ];
    let mut trees = BTreeMap::new();
    let mut rng = Rng(11);
    let mut killed = 0;
    for day in 0..24u64 {
        churn(&t.src, day);
        let tree = snapshot_tree(&t.src);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_snapdump"));
        cmd.args(["run", "--json", "--at", &time_of(day), p(&pol)])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let status = if day % 4 == 3 {
            let mut child = cmd.spawn().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(rng.below(80)));
            let _ = child.kill();
            child.wait().unwrap()
        } else {
            cmd.env(
                "SNAPDUMP_FAILPOINT",
                format!("{}:1", points[day as usize % points.len()]),
            )
            .status()
            .unwrap()
        };
        killed += !status.success() as u32;
        let (c, out, e) = run_s(&["run", "--json", "--at", &time_of(day), p(&pol)]);
        assert!(c == 0, "day {day}: the run after the kill: {e}");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v["plan"]["dump"].is_null(), "day {day}: {v}");
        for id in bases(&t.cat).keys() {
            trees.entry(*id).or_insert_with(|| tree.clone());
        }
        // The catalog's rows are all the policy's: each in the index.
        let rows = bases(&t.cat);
        assert_eq!(kept(&pol, day).len(), rows.len(), "day {day}: {e}");
        if day % 6 == 5 {
            check_restores(&t, &pol, &tape, day, &trees);
        }
    }
    assert!(killed >= 12, "only {killed} runs were killed");
    check_restores(&t, &pol, &tape, 23, &trees);
}

#[test]
fn check_refuses_what_a_tape_cannot_do_and_run_refuses_a_foreign_tape() {
    let t = paths();
    let tape = t.dir.path().join("drive.tap");
    let cases: [(&str, &str, &str); 6] = [
        (
            "",
            "[coalesce]\nchain = 3\n",
            "[coalesce] needs the streams on disk",
        ),
        (
            "name = \"{id}.sdump\"\n",
            "",
            "streams.name names stream files",
        ),
        ("block_kib = 0\n", "", "streams.block_kib 0"),
        ("tape_capacity = \"lots\"\n", "", "streams.tape_capacity"),
        (
            "",
            &format!(
                "[[mirror]]\ndir = \"{}\"\n",
                t.dir.path().join("m").display()
            ),
            "[[mirror]] needs the streams on disk",
        ),
        ("", "", ""),
    ];
    for (extra, body, want) in cases {
        let pol = tape_policy(
            &t,
            &tape,
            extra,
            &format!("[schedule]\nevery = \"1d\"\n\n{body}"),
        );
        let (c, _, e) = run_s(&["policy", "check", p(&pol)]);
        if want.is_empty() {
            assert_eq!(c, 0, "{e}");
        } else {
            assert_eq!(c, 2, "{extra}{body}: {e}");
            assert!(
                e.contains(want) && e.contains("line "),
                "{extra}{body}: {e}"
            );
        }
    }
    // Tape settings without a tape; a rewinding drive; a relative tape.
    let pol = t.dir.path().join("p2.toml");
    for (streams, want) in [
        (
            "new_volume = \"true\"\n",
            "streams.new_volume is a tape setting",
        ),
        ("tape = \"/dev/st0\"\n", "rewinds the tape when closed"),
        ("tape = \"rel.tap\"\n", "not an absolute path"),
        ("tape = \"/tmp/x.tar\"\n", "neither a tape drive"),
        ("tape = \"/tmp/.tap\"\n", "named only by its ending"),
        (
            "tape = \"/tmp/x.tap\"\ntape_capacity = \"64K\"\n",
            "less than 8 tape records of 256 KiB",
        ),
    ] {
        fs::write(
            &pol,
            format!(
                "source = \"{}\"\n[streams]\ndir = \"{}\"\n{streams}[schedule]\nevery = \"1d\"\n",
                t.src.display(),
                t.dir.path().join("s2").display()
            ),
        )
        .unwrap();
        let (c, _, e) = run_s(&["policy", "check", p(&pol)]);
        assert_eq!(c, 2, "{streams}: {e}");
        assert!(e.contains(want), "{streams}: {e}");
    }
    // A cartridge that holds something else is not appended to.
    fs::write(t.src.join("f"), b"data").unwrap();
    let pol = tape_policy(&t, &tape, "", "[schedule]\nevery = \"1d\"\n");
    // A virtual tape whose first record is not a volume header: the bytes
    // of a tape record frame around "hello" (formats/tape.md).
    let mut tap = Vec::new();
    tap.extend_from_slice(&5u32.to_le_bytes());
    tap.extend_from_slice(b"hello\0");
    tap.extend_from_slice(&5u32.to_le_bytes());
    fs::write(&tape, &tap).unwrap();
    let before = fs::read(&tape).unwrap();
    let (c, _, e) = run_s(&["run", "--at", &time_of(0), p(&pol)]);
    if c == 2 {
        assert!(
            e.contains("does not begin with a snapdump dump") || e.contains("drive.tap"),
            "{e}"
        );
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert_eq!(
            fs::read(&tape).unwrap(),
            before,
            "the foreign tape was written to"
        );
    } else {
        panic!("a run appended to a foreign tape: {c} {e}");
    }
}

#[test]
fn a_policy_on_the_simulated_st_drive_appends_and_restores() {
    let t = paths();
    fs::write(t.src.join("a"), bytes(3, 80_000)).unwrap();
    let drive = t.dir.path().join("drive");
    fs::create_dir(&drive).unwrap();
    let pol = t.dir.path().join("policy.toml");
    fs::write(
        &pol,
        format!(
            "source = \"{}\"\ncatalog = \"{}\"\n[streams]\ndir = \"{}\"\ntape = \"/dev/nst0\"\n[schedule]\nevery = \"1d\"\nlevels = [0, 1]\n[keep]\nlast = 2\n",
            t.src.display(),
            t.cat.display(),
            t.dir.path().join("state").display()
        ),
    )
    .unwrap();
    let sd = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_snapdump"))
            .args(args)
            .env("SNAPDUMP_SIMULATED_ST", &drive)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    };
    let mut trees = BTreeMap::new();
    for day in 0..4u64 {
        fs::write(t.src.join(format!("d{day}")), bytes(day, 20_000)).unwrap();
        trees.insert(day + 1, snapshot_tree(&t.src));
        let v: Value =
            serde_json::from_slice(&sd(&["run", "--json", "--at", &time_of(day), p(&pol)]))
                .unwrap();
        let stream = v["dumped"]["stream"].as_str().unwrap().to_string();
        assert!(
            stream.starts_with(&format!("/dev/nst0 file {} ", day + 1)),
            "{stream}"
        );
    }
    // Snapshot 4 is a level 1 on the level 0 of snapshot 3.
    let bases = bases(&t.cat);
    assert_eq!(bases.keys().copied().collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(bases[&4], Some(3));
    let target = t.dir.path().join("r");
    for f in ["3", "4"] {
        sd(&[
            "restore",
            "-r",
            "-f",
            "/dev/nst0",
            "--file-number",
            f,
            "--target",
            p(&target),
        ]);
    }
    assert_tree_is(&trees[&4], &target, "snapshot 4 from the drive");
}

fn volume_policy(t: &Paths, vol: &Path, body: &str) -> PathBuf {
    let pol = t.dir.path().join("policy.toml");
    fs::write(
        &pol,
        format!(
            "source = \"{}\"\ncatalog = \"{}\"\n\n[streams]\ndir = \"{}\"\nvolume = \"{}\"\ncompression = 1\n\n{body}",
            t.src.display(),
            t.cat.display(),
            t.dir.path().join("state").display(),
            vol.display()
        ),
    )
    .unwrap();
    pol
}

/// The volume's snapshots of the source: snapshot id -> volume id.
fn in_volume(vol: &Path) -> BTreeMap<u64, u64> {
    let v = json(&["volume", "snapshots", "--json", p(vol)]);
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["snapshot"]["id"].as_u64().unwrap(),
                s["volume_id"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The volume holds exactly the catalog's snapshots, the plan names each
/// as VOL@ID, no stream is left in the state directory, and each
/// snapshot in `check` extracts from the volume to its tree.
fn check_volume(
    t: &Paths,
    pol: &Path,
    vol: &Path,
    day: u64,
    trees: &BTreeMap<u64, Tree>,
    check: bool,
) {
    let held = in_volume(vol);
    let rows = bases(&t.cat);
    assert_eq!(
        held.keys().collect::<Vec<_>>(),
        rows.keys().collect::<Vec<_>>(),
        "day {day}: the volume holds the catalog's snapshots"
    );
    let plan = json(&["policy", "plan", "--json", "--at", &time_of(day), p(pol)]);
    let named: Vec<String> = plan["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = held
        .values()
        .map(|v| format!("{}@{v}", vol.display()))
        .collect();
    assert_eq!(named, want, "day {day}");
    let left: Vec<String> = fs::read_dir(t.dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("sdump"))
        .collect();
    assert!(
        left.is_empty(),
        "day {day}: left in the state directory: {left:?}"
    );
    if check {
        for (id, vid) in &held {
            let target = t.dir.path().join(format!("x{id}"));
            let _ = fs::remove_dir_all(&target);
            let at = format!("{}@{vid}", vol.display());
            let (c, _, e) = run_s(&["volume", "extract", &at, p(&target)]);
            assert_eq!(c, 0, "day {day}: {at}: {e}");
            assert_tree_is(
                &trees[id],
                &target,
                &format!("day {day}: snapshot {id} from {at}"),
            );
            fs::remove_dir_all(&target).unwrap();
        }
    }
}

#[test]
fn runs_into_a_volume_keep_there_what_retention_keeps_and_each_extracts() {
    let t = paths();
    fs::write(t.src.join("base"), bytes(1, 150_000)).unwrap();
    let vol = t.dir.path().join("disk").join("home.vol");
    fs::create_dir(vol.parent().unwrap()).unwrap();
    let pol = volume_policy(
        &t,
        &vol,
        "[schedule]\nevery = \"1d\"\nlevels = [0, 1, 2, 3, 1, 2]\n\n[keep]\nlast = 3\nweekly = 2\n",
    );
    let (c, out, e) = run_s(&["policy", "check", p(&pol)]);
    assert_eq!(c, 0, "{e}");
    assert!(String::from_utf8_lossy(&out).contains("into the volume"));
    let mut trees = BTreeMap::new();
    let mut pruned = 0;
    for day in 0..16u64 {
        churn(&t.src, day);
        trees.insert(day + 1, snapshot_tree(&t.src));
        let v = json(&["run", "--json", "--at", &time_of(day), p(&pol)]);
        assert_eq!(v["dumped"]["snapshot"], day + 1, "{v}");
        pruned += v["pruned"].as_array().unwrap().len();
        let again = json(&["run", "--json", "--at", &time_of(day), p(&pol)]);
        assert!(
            again["dumped"].is_null() && again["pruned"].as_array().unwrap().is_empty(),
            "{again}"
        );
        check_volume(&t, &pol, &vol, day, &trees, day % 5 == 4 || day == 15);
    }
    assert!(pruned >= 8, "retention pruned {pruned}");
    // A volume the policy made and that is gone (its disk did not mount)
    // is not made again below the mount point.
    fs::rename(&vol, t.dir.path().join("aside.vol")).unwrap();
    churn(&t.src, 16);
    let (c, _, e) = run_s(&["run", "--at", &time_of(16), p(&pol)]);
    assert_eq!(c, 2, "{e}");
    assert!(
        e.contains("is its disk mounted?") && e.trim_end().lines().count() == 1,
        "{e}"
    );
    assert!(!vol.exists());
}

#[test]
fn runs_into_a_volume_killed_at_each_step_are_finished_by_the_next() {
    let t = paths();
    fs::write(t.src.join("base"), bytes(1, 200_000)).unwrap();
    let vol = t.dir.path().join("home.vol");
    let pol = volume_policy(
        &t,
        &vol,
        "[schedule]\nevery = \"1d\"\nlevels = [0, 1, 2, 1]\n\n[keep]\nlast = 2\n",
    );
    let points = [
        "dump-data",
        "policy-dumped",
        "volume-before-commit",
        "policy-volume-received",
        "policy-volume-settled",
        "policy-volume-deleted",
        "policy-before-prune-commit",
    ];
    let mut trees = BTreeMap::new();
    let mut rng = Rng(17);
    let mut killed = 0;
    for day in 0..28u64 {
        churn(&t.src, day);
        let tree = snapshot_tree(&t.src);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_snapdump"));
        cmd.args(["run", "--json", "--at", &time_of(day), p(&pol)])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let status = if day % 4 == 3 {
            let mut child = cmd.spawn().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(rng.below(80)));
            let _ = child.kill();
            child.wait().unwrap()
        } else {
            cmd.env(
                "SNAPDUMP_FAILPOINT",
                format!("{}:1", points[day as usize % points.len()]),
            )
            .status()
            .unwrap()
        };
        killed += !status.success() as u32;
        let (c, out, e) = run_s(&["run", "--json", "--at", &time_of(day), p(&pol)]);
        assert_eq!(c, 0, "day {day}: the run after the kill: {e}");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v["plan"]["dump"].is_null(), "day {day}: {v}");
        for id in bases(&t.cat).keys() {
            trees.entry(*id).or_insert_with(|| tree.clone());
        }
        check_volume(&t, &pol, &vol, day, &trees, day % 3 == 2);
    }
    assert!(killed >= 16, "only {killed} runs were killed");
}

#[test]
fn check_refuses_what_a_volume_policy_cannot_do() {
    let t = paths();
    let vol = t.dir.path().join("v.vol");
    let tape = t.dir.path().join("t.tap");
    for (streams, body, want) in [
        (
            format!("tape = \"{}\"\n", tape.display()),
            String::new(),
            "give one",
        ),
        (
            "name = \"{id}.sdump\"\n".to_string(),
            String::new(),
            "streams.name names stream files",
        ),
        (
            String::new(),
            "[coalesce]\nchain = 2\n".to_string(),
            "[coalesce] makes synthetic fulls",
        ),
        (
            String::new(),
            format!(
                "[[replicate]]\nto = \"{}\"\n",
                t.dir.path().join("r.vol").display()
            ),
            "leave them out",
        ),
    ] {
        let pol = t.dir.path().join("p.toml");
        fs::write(
            &pol,
            format!(
                "source = \"{}\"\n[streams]\ndir = \"{}\"\nvolume = \"{}\"\n{streams}[schedule]\nevery = \"1d\"\n{body}",
                t.src.display(),
                t.dir.path().join("s").display(),
                vol.display()
            ),
        )
        .unwrap();
        let (c, _, e) = run_s(&["policy", "check", p(&pol)]);
        assert_eq!(c, 2, "{streams}{body}: {e}");
        assert!(
            e.contains(want) && e.contains("line "),
            "{streams}{body}: {e}"
        );
    }
    let pol = t.dir.path().join("p.toml");
    fs::write(
        &pol,
        format!(
            "source = \"{}\"\n[streams]\ndir = \"{}\"\nvolume = \"{}\"\n[schedule]\nevery = \"1d\"\n",
            t.src.display(),
            t.dir.path().join("s").display(),
            t.src.join("in.vol").display()
        ),
    )
    .unwrap();
    let (c, _, e) = run_s(&["policy", "check", p(&pol)]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("inside the source"), "{e}");
    // Inside the catalog, also by a symlink to it.
    fs::create_dir_all(&t.cat).unwrap();
    std::os::unix::fs::symlink(&t.cat, t.dir.path().join("link")).unwrap();
    // A symlink whose target is not there yet: a run would write there.
    std::os::unix::fs::symlink(
        t.cat.join("sub").join("real.tap"),
        t.dir.path().join("dangling.tap"),
    )
    .unwrap();
    for (key, at) in [
        ("volume", t.cat.join("in.vol")),
        ("tape", t.dir.path().join("link").join("in.tap")),
        ("tape", t.dir.path().join("dangling.tap")),
    ] {
        fs::write(
            &pol,
            format!(
                "source = \"{}\"\ncatalog = \"{}\"\n[streams]\ndir = \"{}\"\n{key} = \"{}\"\n[schedule]\nevery = \"1d\"\n",
                t.src.display(),
                t.cat.display(),
                t.dir.path().join("s").display(),
                at.display()
            ),
        )
        .unwrap();
        let (c, _, e) = run_s(&["policy", "check", p(&pol)]);
        assert_eq!(c, 2, "{key}: {e}");
        assert!(e.contains("inside the catalog"), "{key}: {e}");
    }
    // A directory where the file would be.
    for (key, at) in [
        ("volume", t.dir.path().join("d.vol")),
        ("tape", t.dir.path().join("d.tap")),
    ] {
        fs::create_dir(&at).unwrap();
        fs::write(
            &pol,
            format!(
                "source = \"{}\"\n[streams]\ndir = \"{}\"\n{key} = \"{}\"\n[schedule]\nevery = \"1d\"\n",
                t.src.display(),
                t.dir.path().join("s").display(),
                at.display()
            ),
        )
        .unwrap();
        let (c, _, e) = run_s(&["policy", "check", p(&pol)]);
        assert_eq!(c, 2, "{key}: {e}");
        assert!(e.contains("is a directory"), "{key}: {e}");
    }
}

#[test]
fn a_cut_short_or_foreign_cartridge_and_another_volume_are_refused_untouched() {
    let t = paths();
    fs::write(t.src.join("a"), bytes(7, 300_000)).unwrap();
    let tape = t.dir.path().join("drive.tap");
    let pol = tape_policy(
        &t,
        &tape,
        "",
        "[schedule]\nevery = \"1d\"\nlevels = [0, 1]\n\n[keep]\nlast = 3\n",
    );
    for day in 0..3u64 {
        churn(&t.src, day);
        json(&["run", "--json", "--at", &time_of(day), p(&pol)]);
    }
    // Cut short: the newest dump's tape file lost its end.
    let whole = fs::read(&tape).unwrap();
    fs::write(&tape, &whole[..whole.len() - 3000]).unwrap();
    let cut = fs::read(&tape).unwrap();
    let (c, _, e) = run_s(&["run", "--at", &time_of(3), p(&pol)]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("cut short or written over"), "{e}");
    assert_eq!(
        fs::read(&tape).unwrap(),
        cut,
        "appended to a cut-short cartridge"
    );
    // Foreign: bytes that are not a snapdump tape at all.
    let foreign = bytes(9, 100_000);
    fs::write(&tape, &foreign).unwrap();
    let (c, _, e) = run_s(&["run", "--at", &time_of(3), p(&pol)]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("does not begin with a snapdump dump"), "{e}");
    assert_eq!(
        fs::read(&tape).unwrap(),
        foreign,
        "a foreign file was written over"
    );
    // dump --append by hand: refused the same, the file untouched.
    let (c, _, e) = run_s(&[
        "dump",
        "-0",
        "--append",
        "-f",
        p(&tape),
        "--catalog",
        p(&t.dir.path().join("other-catalog")),
        p(&t.src),
    ]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("--append would write over it"), "{e}");
    assert_eq!(
        fs::read(&tape).unwrap(),
        foreign,
        "dump --append wrote over a foreign file"
    );
    // The right cartridge back: the run goes on.
    fs::write(&tape, &whole).unwrap();
    json(&["run", "--json", "--at", &time_of(3), p(&pol)]);

    // A volume policy, then an empty volume in the real one's place.
    let t = paths();
    fs::write(t.src.join("a"), bytes(8, 100_000)).unwrap();
    let vol = t.dir.path().join("home.vol");
    let pol = volume_policy(&t, &vol, "[schedule]\nevery = \"1d\"\n\n[keep]\nlast = 2\n");
    for day in 0..3u64 {
        churn(&t.src, day);
        json(&["run", "--json", "--at", &time_of(day), p(&pol)]);
    }
    let rows = bases(&t.cat);
    fs::rename(&vol, t.dir.path().join("real.vol")).unwrap();
    let (c, _, e) = run_s(&["volume", "create", p(&vol)]);
    assert_eq!(c, 0, "{e}");
    let (c, _, e) = run_s(&["run", "--at", &time_of(3), p(&pol)]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("it is another volume"), "{e}");
    assert_eq!(
        bases(&t.cat),
        rows,
        "the catalog forgot snapshots for a wrong volume"
    );
    fs::rename(t.dir.path().join("real.vol"), &vol).unwrap();
    let v = json(&["run", "--json", "--at", &time_of(3), p(&pol)]);
    assert!(!v["dumped"].is_null(), "{v}");
}
