//! `policy simulate`: the plan played forward on a model of the catalog,
//! day by day, touching nothing: the same plan `run` follows, with stream
//! sizes modelled (a full as large as the newest full the catalog holds,
//! increments a share of it per day).

use super::file::{Policy, Schedule};
use super::plan::{plan, Inputs};
use super::retain::{chain, Snap};
use serde::Serialize;

/// The model's assumptions.
pub struct Model {
    /// Bytes of a full image.
    pub full_bytes: u64,
    /// Share of the full an increment carries per day of changes, in per
    /// cent.
    pub daily_change_percent: f64,
}

/// One simulated day.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Day {
    /// The day (UTC).
    pub day: String,
    /// Levels of the dumps made that day, in order.
    pub dumps: Vec<u8>,
    /// Synthetic fulls written that day.
    pub coalesced: u32,
    /// Snapshots pruned that day.
    pub pruned: u32,
    /// Streams kept at the end of the day.
    pub streams_kept: usize,
    /// Their modelled bytes.
    pub bytes_kept: u64,
    /// Modelled bytes of every stream written so far (what a tape,
    /// which frees whole cartridges rather than streams, has taken).
    pub bytes_written: u64,
    /// Streams the newest snapshot's restore reads.
    pub newest_chain: usize,
    /// The most streams any kept snapshot's restore reads.
    pub worst_chain: usize,
    /// Snapshots each replication destination holds at the end of the
    /// day, in the policy's order.
    pub replica_snapshots: Vec<usize>,
}

/// The simulation's result.
#[derive(Serialize)]
pub struct Simulation {
    /// Always "simulate".
    pub command: &'static str,
    /// The policy file.
    pub policy: String,
    /// Days simulated.
    pub days: Vec<Day>,
    /// The largest space the kept streams took on any day.
    pub peak_bytes_kept: u64,
    /// The longest restore chain on any day.
    pub worst_chain: usize,
}

/// The step between simulated runs: the schedule's interval, so that
/// every period gets its run (the plan is the same however often `run`
/// runs within one).
fn step(p: &Policy) -> i64 {
    let every = match &p.schedule {
        Schedule::Levels { every, .. } => *every,
        Schedule::Periodic {
            increments_every, ..
        } => *increments_every,
    };
    (every.as_secs() as i64).clamp(60, 86_400)
}

/// Simulates `days` days of runs from `start` (seconds since 1970), from
/// the snapshot table `snaps` (the catalog's, or empty).
pub fn simulate(p: &Policy, mut snaps: Vec<Snap>, start: i64, days: u32, m: &Model) -> Simulation {
    let mut out = Vec::new();
    let step = step(p);
    let mut t = start;
    let mut next_id = snaps.last().map(|s| s.id + 1).unwrap_or(1);
    let (mut peak, mut worst_ever, mut written) = (0u64, 0usize, 0u64);
    // What each destination volume holds: (snapshot id, time).
    let mut volumes: Vec<Vec<Snap>> = vec![Vec::new(); p.replicate.len()];
    for d in 0..days {
        let day_start = start.div_euclid(86_400) * 86_400 + d as i64 * 86_400;
        let day_end = day_start + 86_400;
        let mut day = Day {
            day: crate::tree::Time {
                sec: day_start,
                nsec: 0,
            }
            .rfc3339()[..10]
                .to_string(),
            dumps: Vec::new(),
            coalesced: 0,
            pruned: 0,
            streams_kept: 0,
            bytes_kept: 0,
            bytes_written: written,
            newest_chain: 0,
            worst_chain: 0,
            replica_snapshots: Vec::new(),
        };
        while t < day_end {
            let inputs = |snaps: &[Snap]| {
                plan(
                    p,
                    &Inputs {
                        snaps,
                        now: t,
                        free_percent: None,
                        pinned: Vec::new(),
                        hold: None,
                        broken: Vec::new(),
                    },
                )
            };
            let pl = inputs(&snaps);
            if let Some(due) = pl.dump {
                let bytes = match due.base {
                    None => m.full_bytes,
                    Some(b) => {
                        let since = snaps
                            .iter()
                            .find(|s| s.id == b)
                            .map(|s| t - s.time)
                            .unwrap_or(86_400);
                        // An increment never carries more than the whole.
                        (m.full_bytes as f64 * m.daily_change_percent / 100.0 * since as f64
                            / 86_400.0)
                            .min(m.full_bytes as f64) as u64
                    }
                };
                snaps.push(Snap {
                    id: next_id,
                    time: t,
                    level: due.level,
                    base: due.base,
                    stream_bytes: bytes,
                    output: format!("model-{next_id}"),
                });
                next_id += 1;
                written = written.saturating_add(bytes);
                day.dumps.push(due.level);
            }
            if let Some(newest) = snaps.last() {
                for (v, dest) in volumes.iter_mut().zip(&p.replicate) {
                    if v.last().map(|s| s.id) != Some(newest.id) {
                        v.push(Snap {
                            base: None,
                            ..newest.clone()
                        });
                    }
                    if let Some(k) = &dest.keep {
                        let keep = super::retain::kept(
                            v,
                            Some(k),
                            t,
                            p.schedule.interval().as_secs() as i64,
                        );
                        v.retain(|s| keep.contains_key(&s.id));
                    }
                }
            }
            if let Some(c) = inputs(&snaps).coalesce {
                let n = snaps
                    .iter_mut()
                    .find(|s| s.id == c.snapshot)
                    .expect("the newest");
                n.base = None;
                n.stream_bytes = m.full_bytes;
                written = written.saturating_add(m.full_bytes);
                day.coalesced += 1;
            }
            let doomed = inputs(&snaps).prune();
            day.pruned += doomed.len() as u32;
            snaps.retain(|s| !doomed.contains(&s.id));
            t += step;
        }
        day.bytes_written = written;
        day.streams_kept = snaps.len();
        day.bytes_kept = snaps
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.stream_bytes));
        day.newest_chain = snaps.last().map(|s| chain(&snaps, s.id).len()).unwrap_or(0);
        day.worst_chain = snaps
            .iter()
            .map(|s| chain(&snaps, s.id).len())
            .max()
            .unwrap_or(0);
        day.replica_snapshots = volumes.iter().map(Vec::len).collect();
        peak = peak.max(day.bytes_kept);
        worst_ever = worst_ever.max(day.worst_chain);
        out.push(day);
    }
    Simulation {
        command: "simulate",
        policy: p.path.display().to_string(),
        days: out,
        peak_bytes_kept: peak,
        worst_chain: worst_ever,
    }
}
