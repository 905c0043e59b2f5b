//! The plan as a pure function of (policy, catalog, clock), over random
//! policies and random clocks (structural: the catalog is modelled, as
//! `policy simulate` models it): every snapshot left is restorable from
//! the streams left (its chain of bases ends at a full image), nothing a
//! rule keeps is pruned, and what is dumped does not depend on how often
//! `run` runs within a period.

use proptest::prelude::*;
use snapdump::policy::plan::{plan, Inputs};
use snapdump::policy::retain::{chain, kept, Snap};
use snapdump::policy::Policy;
use std::path::Path;

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

fn policy(schedule: &str, keep: &str, coalesce: &str) -> Policy {
    let text = format!(
        "source = \"/src\"\n[streams]\ndir = \"/streams\"\n[schedule]\n{schedule}\n{keep}\n[coalesce]\n{coalesce}\n"
    );
    Policy::parse(&text, Path::new("random.toml")).unwrap_or_else(|e| panic!("{e:#}\n{text}"))
}

fn schedule() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            prop_oneof![Just("1h"), Just("6h"), Just("1d")],
            prop_oneof![
                Just("\"hanoi\"".to_string()),
                Just("[0]".to_string()),
                proptest::collection::vec(1u8..10, 0..8).prop_map(|v| {
                    let mut l = vec!["0".to_string()];
                    l.extend(v.iter().map(|x| x.to_string()));
                    format!("[{}]", l.join(", "))
                }),
            ]
        )
            .prop_map(|(e, l)| format!("every = \"{e}\"\nlevels = {l}")),
        (
            prop_oneof![Just("2d"), Just("7d")],
            prop_oneof![Just("6h"), Just("1d")]
        )
            .prop_map(|(f, i)| format!("full_every = \"{f}\"\nincrements_every = \"{i}\"")),
    ]
}

fn keep() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (0u32..4, 0u32..4, 0u32..5, 0u32..3, 0u32..3, 0u32..2)
            .prop_filter("some rule", |k| k.0 + k.1 + k.2 + k.3 + k.4 + k.5 > 0)
            .prop_map(|(l, h, d, w, m, y)| format!(
                "[keep]\nlast = {l}\nhourly = {h}\ndaily = {d}\nweekly = {w}\nmonthly = {m}\nyearly = {y}"
            )),
    ]
}

fn coalesce() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (2u32..6).prop_map(|n| format!("chain = {n}")),
        (10u32..80).prop_map(|n| format!("increments_percent = {n}")),
    ]
}

/// One `run` at `now` on the model: dump, coalesce, prune, as run does.
/// Returns the levels dumped. Checks the invariants after each step.
fn run_once(
    p: &Policy,
    snaps: &mut Vec<Snap>,
    next: &mut u64,
    now: i64,
) -> Option<(u8, Option<u64>)> {
    let i = |s: &[Snap]| {
        plan(
            p,
            &Inputs {
                snaps: s,
                now,
                free_percent: None,
                pinned: Vec::new(),
                hold: None,
                broken: Vec::new(),
            },
        )
    };
    let mut dumped = None;
    if let Some(d) = i(snaps).dump {
        if let Some(b) = d.base {
            assert!(
                snaps.iter().any(|s| s.id == b),
                "the base {b} is in the catalog"
            );
        }
        snaps.push(Snap {
            id: *next,
            time: now,
            level: d.level,
            base: d.base,
            stream_bytes: if d.base.is_none() { 1000 } else { 100 },
            output: format!("s{next}"),
        });
        *next += 1;
        dumped = Some((d.level, d.base));
    }
    if let Some(c) = i(snaps).coalesce {
        let n = snaps.iter_mut().find(|s| s.id == c.snapshot).unwrap();
        n.base = None;
        n.stream_bytes = 1000;
    }
    let pl = i(snaps);
    let rules = kept(
        snaps,
        p.keep.as_ref(),
        now,
        p.schedule.interval().as_secs() as i64,
    );
    let doomed = pl.prune();
    for id in rules.keys() {
        assert!(
            !doomed.contains(id),
            "snapshot {id} is kept by {:?} but pruned",
            rules[id]
        );
    }
    snaps.retain(|s| !doomed.contains(&s.id));
    for s in snaps.iter() {
        let c = chain(snaps, s.id);
        assert!(
            c[0].base.is_none(),
            "snapshot {} is not restorable: its chain {:?} lacks its full",
            s.id,
            c.iter().map(|x| x.id).collect::<Vec<_>>()
        );
    }
    // Running again at once does nothing more.
    let again = i(snaps);
    assert!(
        again.dump.is_none() && again.prune().is_empty(),
        "a second run at the same time has work: {again:?}"
    );
    dumped
}

fn period(p: &Policy) -> i64 {
    match &p.schedule {
        snapdump::policy::file::Schedule::Levels { every, .. } => every.as_secs() as i64,
        snapdump::policy::file::Schedule::Periodic {
            increments_every, ..
        } => increments_every.as_secs() as i64,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random run times: whatever the clock does (forward), the
    /// invariants hold after every run.
    #[test]
    fn every_snapshot_left_is_restorable_and_nothing_kept_is_pruned(
        s in schedule(), k in keep(), c in coalesce(),
        steps in proptest::collection::vec(1i64..(3 * DAY), 1..120),
    ) {
        let p = policy(&s, &k, &c);
        let mut snaps = Vec::new();
        let mut next = 1;
        let mut now = 1_800_000_000;
        for st in steps {
            now += st;
            run_once(&p, &mut snaps, &mut next, now);
        }
    }

    /// The same days, `run` every 20 minutes or once a period (at a random
    /// moment of it): the same dumps, at the same levels on the same
    /// bases, and the same snapshots left.
    #[test]
    fn what_is_done_does_not_depend_on_how_often_run_runs(
        s in schedule(), k in keep(), c in coalesce(),
        days in 2i64..30, offset in 0i64..HOUR,
    ) {
        let p = policy(&s, &k, &c);
        let per = period(&p);
        let start = 1_800_000_000i64.div_euclid(DAY) * DAY;
        let end = start + days * DAY;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (mut na, mut nb) = (1, 1);
        let (mut da, mut db) = (Vec::new(), Vec::new());
        let mut t = start;
        while t < end {
            if let Some(d) = run_once(&p, &mut a, &mut na, t) { da.push(d); }
            t += 20 * 60;
        }
        let mut t = start + offset.min(per - 1);
        while t < end {
            if let Some(d) = run_once(&p, &mut b, &mut nb, t) { db.push(d); }
            t += per;
        }
        prop_assert_eq!(da, db);
        let ids = |v: &[Snap]| v.iter().map(|s| (s.id, s.level, s.base)).collect::<Vec<_>>();
        prop_assert_eq!(ids(&a), ids(&b));
    }
}

/// Check messages name the line of the mistake.
#[test]
fn mistakes_are_named_with_their_line() {
    let long = format!(
        "source = \"/s\"\n[streams]\ndir = \"/d\"\nname = \"{{id}}{}.sdump\"\n[schedule]\nevery = \"1d\"\n",
        "x".repeat(230)
    );
    let bad: [(&str, &str); 26] = [
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1 fortnight\"\n", "line 5"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\nlevels = [1, 2]\n", "line 6"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\n\n[schedule]\nevery = \"1d\"\nfull_every = \"7d\"\n", "line 5"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\n[keep]\ndialy = 3\n", "line 7"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\n[keep]\nlast = 0\n", "line 6"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\ncompression = 42\n[schedule]\nevery = \"1d\"\n", "line 4"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\nname = \"{source}.sdump\"\n[schedule]\nevery = \"1d\"\n", "line 4"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\nname = \"{id}{host}.sdump\"\n[schedule]\nevery = \"1d\"\n", "line 4"),
        ("source = \"s\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\n", "line 1"),
        ("source = \"/s\"\n[streams]\ndir = \"/s/b\"\n[schedule]\nevery = \"1d\"\n", "line 3"),
        ("source = \"/s\"\ncatalog = \"/s/.cat\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\n", "line 2"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\n[[replicate]]\nto = \"/r.vol\"\n[[replicate]]\nto = \"/r.vol\"\n", "line 9"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\n[[replicate]]\nto = \"/r\"\n", "line 7"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\n[[mirror]]\ndir = \"/d/m\"\n", "line 7"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\nlevels = [0, 1, 0, 2]\n", "line 6"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"30s\"\n", "line 4"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\n[coalesce]\nchain = 0\n", "line 7"),
        ("source = \"/s\"\ncatalog = \"/d\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\n", "line 2"),
        ("source = \"/d/s\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\n", "line 1"),
        ("source = \"/s\"\n[streams]\ndir = \"/x/../s/./b\"\n[schedule]\nevery = \"1d\"\n", "line 3"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\nname = \"{id}\\u0000.sdump\"\n[schedule]\nevery = \"1d\"\n", "control character"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\nname = \"{id}\\n.sdump\"\n[schedule]\nevery = \"1d\"\n", "line 4"),
        (&long, "at most 255"),
        ("source = \"/s\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\n[[replicate]]\nto = \"/d/r.vol\"\n", "line 7"),
        ("source = \"/s\"\ncatalog = \"/c\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\n[[replicate]]\nto = \"/c/r.vol\"\n", "line 8"),
        ("source = \"/s\"\ncatalog = \"/c\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\n[[mirror]]\ndir = \"/c\"\n", "line 8"),
    ];
    for (text, want) in bad {
        let e = format!(
            "{:#}",
            Policy::parse(text, Path::new("p.toml")).unwrap_err()
        );
        assert!(e.starts_with("p.toml:") && e.contains(want), "{want}: {e}");
    }
    // Every mistake at once, earliest first, each with its line.
    let e = format!(
        "{:#}",
        Policy::parse(
            "source = \"/s\"\ncatalog = \"c\"\n[streams]\ndir = \"/s/d\"\n[schedule]\nevery = \"1d\"\n[keep]\nlast = 0\n",
            Path::new("p.toml"),
        )
        .unwrap_err()
    );
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 3, "{e}");
    assert!(
        lines[0].starts_with("p.toml: line 2: catalog c is not an absolute"),
        "{e}"
    );
    assert!(
        lines[1].starts_with("p.toml: line 4: streams.dir /s/d is inside"),
        "{e}"
    );
    assert!(
        lines[2].starts_with("p.toml: line 7: [keep] keeps nothing"),
        "{e}"
    );
    let e = Policy::parse(
        "source = \"s\"\n[streams]\ndir = \"/d\"\n[schedule]\nevery = \"1d\"\n",
        Path::new("p.toml"),
    )
    .unwrap_err();
    assert!(format!("{e}").contains("absolute"), "{e}");
    let e = Policy::parse(
        "source = \"/s\"\n[streams]\ndir = \"/s/b\"\n[schedule]\nevery = \"1d\"\n",
        Path::new("p.toml"),
    )
    .unwrap_err();
    assert!(format!("{e}").contains("inside the source"), "{e}");
}

#[test]
fn nothing_is_built_on_or_coalesced_from_a_broken_stream() {
    let p = policy(
        "every = \"1d\"\nlevels = [0, 1, 2, 3, 4, 5, 6]",
        "",
        "chain = 2",
    );
    let day = 86_400;
    let snaps: Vec<Snap> = (1..=3u64)
        .map(|id| Snap {
            id,
            time: id as i64 * day,
            level: id as u8 - 1,
            base: (id > 1).then(|| id - 1),
            stream_bytes: 100,
            output: format!("s{id}"),
        })
        .collect();
    let at = |broken: Vec<(u64, String)>| {
        plan(
            &p,
            &Inputs {
                snaps: &snaps,
                now: 4 * day + 60,
                free_percent: None,
                pinned: Vec::new(),
                hold: None,
                broken,
            },
        )
    };
    let whole = at(Vec::new());
    assert_eq!(
        whole.dump.as_ref().map(|d| (d.level, d.base)),
        Some((3, Some(3)))
    );
    assert_eq!(
        whole.coalesce.as_ref().map(|c| c.chain.clone()),
        Some(vec![1, 2, 3])
    );
    let cut = at(vec![(2, "snapshot 2's stream s2 is missing".into())]);
    let d = cut.dump.unwrap();
    assert_eq!((d.level, d.base), (0, None), "{}", d.why);
    assert!(
        d.why.contains("snapshot 2's stream s2 is missing"),
        "{}",
        d.why
    );
    assert!(cut.coalesce.is_none());
}

#[test]
fn paths_that_overlap_through_a_symlink_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::os::unix::fs::symlink(&src, d.path().join("link")).unwrap();
    let text = format!(
        "source = \"{}\"\n[streams]\ndir = \"{}\"\n[schedule]\nevery = \"1d\"\n",
        d.path().join("link").display(),
        src.join("streams").display()
    );
    let e = format!(
        "{:#}",
        Policy::parse(&text, Path::new("p.toml")).unwrap_err()
    );
    assert!(
        e.contains("line 3") && e.contains("inside the source"),
        "{e}"
    );
}
