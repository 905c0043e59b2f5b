//! The plan: what is due now and why, a pure function of the policy, the
//! catalog's snapshot table and the clock (and, for one trigger, the free
//! space of the streams directory), so that it can be property-tested and
//! `policy plan` shows exactly what `run` will do.

use super::file::{Policy, Schedule};
use super::retain::{chain, kept, needed, Snap};
use serde::Serialize;
use std::collections::BTreeMap;

/// A dump that is due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DumpDue {
    /// Its level.
    pub level: u8,
    /// The snapshot it is an increment on (None: a full image).
    pub base: Option<u64>,
    /// Why it is due, and why at that level.
    pub why: String,
}

/// A synthetic full that is due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CoalesceDue {
    /// The snapshot it makes a full image of (the newest).
    pub snapshot: u64,
    /// The chain coalesced, oldest first.
    pub chain: Vec<u64>,
    /// The trigger that fired.
    pub why: String,
}

/// What becomes of one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The snapshot.
    pub snapshot: u64,
    /// Its level.
    pub level: u8,
    /// Its time.
    pub time: String,
    /// Its stream.
    pub stream: String,
    /// Kept (true) or pruned.
    pub keep: bool,
    /// The rules that keep it, or why it goes.
    pub why: Vec<String>,
}

/// What is due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The clock the plan was made for.
    pub at: String,
    /// A dump, if one is due.
    pub dump: Option<DumpDue>,
    /// A synthetic full, if a trigger fired.
    pub coalesce: Option<CoalesceDue>,
    /// Every snapshot, oldest first, kept or pruned.
    pub snapshots: Vec<Decision>,
    /// What the run prunes too once the due dump is made (the new
    /// snapshot moves the retention rules on), oldest first; empty when
    /// no dump is due.
    pub then_prune: Vec<u64>,
}

impl Plan {
    /// The snapshots to prune, oldest first.
    pub fn prune(&self) -> Vec<u64> {
        self.snapshots
            .iter()
            .filter(|d| !d.keep)
            .map(|d| d.snapshot)
            .collect()
    }
}

/// What the plan is made from besides the policy.
pub struct Inputs<'a> {
    /// The catalog's snapshots, in id order.
    pub snaps: &'a [Snap],
    /// The clock, seconds since 1970.
    pub now: i64,
    /// Free space of the streams directory's file system, per cent.
    pub free_percent: Option<f64>,
    /// Snapshots something outside the policy still needs (a replica's),
    /// with why.
    pub pinned: Vec<(u64, String)>,
    /// Why nothing may be pruned now, if something is in doubt (a record
    /// of replicas or a mirror's state that cannot be read): every
    /// snapshot is kept with this reason.
    pub hold: Option<String>,
    /// Snapshots whose stream is missing or damaged, or that cannot be a
    /// base for another reason, each with a clause that says what is wrong
    /// ("snapshot 2's stream s2 is missing"): never a base or part of a
    /// coalesced chain (what is built on them could not be restored).
    pub broken: Vec<(u64, String)>,
}

fn period(t: i64, every: std::time::Duration) -> i64 {
    t.div_euclid(every.as_secs().max(1) as i64)
}

fn when(t: i64) -> String {
    crate::tree::Time { sec: t, nsec: 0 }.rfc3339()
}

fn is_full(s: &Snap) -> bool {
    s.base.is_none()
}

/// The start of the period `t` falls in.
fn period_start(t: i64, every: std::time::Duration) -> i64 {
    period(t, every) * every.as_secs().max(1) as i64
}

/// Whether a dump is due at `now`, at which level, on which base.
pub fn due(schedule: &Schedule, snaps: &[Snap], now: i64) -> Option<DumpDue> {
    let every = match schedule {
        Schedule::Levels { every, .. } => *every,
        Schedule::Periodic {
            increments_every, ..
        } => *increments_every,
    };
    let Some(newest) = snaps.last() else {
        return Some(DumpDue {
            level: 0,
            base: None,
            why: "the policy holds no snapshot of the source yet (none of the catalog's is in its streams directory, tape index or volume)".into(),
        });
    };
    if newest.time > now {
        // The clock went back, or was ahead when the newest was taken:
        // waiting for the clock to pass it could mean no dump for years.
        return Some(DumpDue {
            level: 0,
            base: None,
            why: format!(
                "the newest snapshot, {}, is stamped {}, later than the clock ({}): the clock went back or was ahead; a level 0 starts again from the clock as it is",
                newest.id,
                when(newest.time),
                when(now)
            ),
        });
    }
    if newest.time >= period_start(now, every) {
        return None;
    }
    let since = format!(
        "no snapshot since {} (a dump every {})",
        when(period_start(now, every)),
        humantime::format_duration(every)
    );
    match schedule {
        Schedule::Levels { levels, .. } => {
            // The cycle restarts at each full image (a level 0, or a
            // synthetic full).
            let Some(anchor) = snaps.iter().rposition(|s| s.level == 0 || is_full(s)) else {
                return Some(DumpDue {
                    level: 0,
                    base: None,
                    why: format!(
                        "{since}; the catalog holds no full image to start the level cycle from"
                    ),
                });
            };
            // The slot of this dump: periods since the anchor's (not dumps
            // since it, which retention may have pruned). Once the list
            // is used up, missed periods or not, a level 0 is due.
            let k = period(now, every) - period(snaps[anchor].time, every);
            if k >= levels.len() as i64 {
                return Some(DumpDue {
                    level: 0,
                    base: None,
                    why: format!(
                        "{since}; the level cycle of {} periods begun by full snapshot {} at {} is over",
                        levels.len(),
                        snaps[anchor].id,
                        when(snaps[anchor].time)
                    ),
                });
            }
            let level = levels[k as usize];
            // dump(8)'s base: the newest snapshot of a lower level, a full
            // image counting as level 0.
            let base = snaps[anchor..]
                .iter()
                .rev()
                .find(|s| s.level < level || is_full(s))
                .expect("the anchor is full");
            Some(DumpDue {
                level,
                base: Some(base.id),
                why: format!(
                    "{since}; period {} of the level cycle begun by full snapshot {} takes level {level}, on snapshot {} (level {})",
                    k + 1,
                    snaps[anchor].id,
                    base.id,
                    base.level
                ),
            })
        }
        Schedule::Periodic { full_every, .. } => {
            let full = snaps.iter().rev().find(|s| s.level == 0 || is_full(s));
            let start = period_start(now, *full_every);
            match full {
                Some(f) if f.time >= start => Some(DumpDue {
                    level: 1,
                    base: Some(newest.id),
                    why: format!(
                        "{since}; an increment on the newest, snapshot {} (full snapshot {} is in the full period from {})",
                        newest.id,
                        f.id,
                        when(start)
                    ),
                }),
                _ => Some(DumpDue {
                    level: 0,
                    base: None,
                    why: format!(
                        "{since}; no full image since {} (a full every {})",
                        when(start),
                        humantime::format_duration(*full_every)
                    ),
                }),
            }
        }
    }
}

/// Whether a coalescing trigger fires for the newest snapshot's chain.
pub fn coalesce_due(p: &Policy, i: &Inputs) -> Option<CoalesceDue> {
    let newest = i.snaps.last()?;
    if is_full(newest) {
        return None;
    }
    let c = chain(i.snaps, newest.id);
    if c.len() < 2 || !is_full(c[0]) {
        return None;
    }
    let full = c[0];
    let inc: u64 = c[1..].iter().map(|s| s.stream_bytes).sum();
    let t = &p.coalesce;
    let why = if let Some(n) = t.chain.filter(|&n| c.len() > n as usize) {
        format!(
            "the newest snapshot's chain holds {} streams, more than {n}",
            c.len()
        )
    } else if let Some(x) = t
        .increments_percent
        .filter(|&x| inc as u128 * 100 > x as u128 * full.stream_bytes.max(1) as u128)
    {
        format!(
            "its increments take {inc} bytes, over {x}% of its full's {}",
            full.stream_bytes
        )
    } else if let Some(a) = t.age.filter(|a| i.now - full.time >= a.as_secs() as i64) {
        format!(
            "its full, snapshot {}, is older than {}",
            full.id,
            humantime::format_duration(a)
        )
    } else if let (Some(pc), Some(free)) = (t.free_percent, i.free_percent) {
        if free >= pc as f64 {
            return None;
        }
        format!("the streams directory has {free:.1}% free, under {pc}%")
    } else {
        return None;
    };
    Some(CoalesceDue {
        snapshot: newest.id,
        chain: c.iter().map(|s| s.id).collect(),
        why,
    })
}

/// `d`, or a level 0 in its place when its base's chain passes through a
/// snapshot whose stream is missing or damaged: an increment on it would
/// be as unrestorable as its base.
fn around_broken(d: DumpDue, i: &Inputs) -> DumpDue {
    let Some(base) = d.base else { return d };
    for s in chain(i.snaps, base) {
        if let Some((_, what)) = i.broken.iter().find(|(b, _)| *b == s.id) {
            return DumpDue {
                level: 0,
                base: None,
                why: format!("{}; but {what}, so a level 0 instead", d.why),
            };
        }
    }
    d
}

/// With streams into a volume, an increment is taken on the newest
/// snapshot whatever its level: a volume applies streams in order, each on
/// the snapshot it holds as newest. The level still sets the cycle (when
/// the next level 0 is due), and the chain is kept as any chain is.
fn on_the_newest(p: &Policy, d: DumpDue, i: &Inputs) -> DumpDue {
    match (&p.streams.volume, d.base, i.snaps.last()) {
        (Some(_), Some(b), Some(newest)) if b != newest.id => DumpDue {
            base: Some(newest.id),
            why: format!(
                "{}; taken on the newest, snapshot {}, instead, as the volume applies streams in order",
                d.why, newest.id
            ),
            ..d
        },
        _ => d,
    }
}

fn interval(p: &Policy) -> i64 {
    p.schedule.interval().as_secs().min(i64::MAX as u64) as i64
}

/// The plan for `inputs` under `p`.
pub fn plan(p: &Policy, i: &Inputs) -> Plan {
    let snapshots = decisions(p, i);
    let dump = due(&p.schedule, i.snaps, i.now)
        .map(|d| around_broken(d, i))
        .map(|d| on_the_newest(p, d, i));
    let then_prune = match &dump {
        Some(d) => {
            let mut after = i.snaps.to_vec();
            after.push(Snap {
                id: i.snaps.iter().map(|s| s.id).max().unwrap_or(0) + 1,
                time: i.now,
                level: d.level,
                base: d.base,
                stream_bytes: 0,
                output: String::new(),
            });
            let again = Inputs {
                snaps: &after,
                now: i.now,
                free_percent: i.free_percent,
                pinned: i.pinned.clone(),
                hold: i.hold.clone(),
                broken: i.broken.clone(),
            };
            let first: Vec<u64> = snapshots
                .iter()
                .filter(|d| !d.keep)
                .map(|d| d.snapshot)
                .collect();
            decisions(p, &again)
                .into_iter()
                .filter(|d| !d.keep && !first.contains(&d.snapshot))
                .map(|d| d.snapshot)
                .collect()
        }
        None => Vec::new(),
    };
    Plan {
        at: when(i.now),
        then_prune,
        dump,
        coalesce: coalesce_due(p, i).filter(|c| {
            !c.chain
                .iter()
                .any(|id| i.broken.iter().any(|(b, _)| b == id))
        }),
        snapshots,
    }
}

/// Each snapshot kept or pruned, with why.
fn decisions(p: &Policy, i: &Inputs) -> Vec<Decision> {
    let mut keep = kept(i.snaps, p.keep.as_ref(), i.now, interval(p));
    for why in [i.hold.clone(), super::retain::clock_doubt(i.snaps, i.now)]
        .into_iter()
        .flatten()
    {
        for s in i.snaps {
            keep.entry(s.id).or_default().push(why.clone());
        }
    }
    for (id, why) in &i.pinned {
        if i.snaps.iter().any(|s| s.id == *id) {
            keep.entry(*id).or_default().push(why.clone());
        }
    }
    let need: BTreeMap<u64, Vec<String>> = needed(i.snaps, keep);
    i.snaps
        .iter()
        .map(|s| {
            let why = need.get(&s.id).cloned();
            Decision {
                snapshot: s.id,
                level: s.level,
                time: when(s.time),
                stream: s.output.clone(),
                keep: why.is_some(),
                why: why.unwrap_or_else(|| {
                    vec!["kept by no rule, and no kept snapshot needs it".into()]
                }),
            }
        })
        .collect()
}
