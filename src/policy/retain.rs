//! Retention: which snapshots the policy's rules keep, and why (restic's
//! keep-last/hourly/daily/weekly/monthly/yearly/within, by snapshot time in
//! UTC), then every snapshot a kept one needs to be restored (its chain of
//! bases), so that pruning never breaks a chain.

use super::file::Keep;
use std::collections::BTreeMap;

/// What retention sees of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snap {
    /// Catalog id.
    pub id: u64,
    /// Snapshot time, seconds since 1970 (UTC).
    pub time: i64,
    /// Dump level.
    pub level: u8,
    /// The snapshot its stream is an increment on (None: a full image).
    pub base: Option<u64>,
    /// Bytes of its stream.
    pub stream_bytes: u64,
    /// Where its stream is.
    pub output: String,
}

/// Days since 1970-01-01 to (year, month), proleptic Gregorian (Howard
/// Hinnant's civil_from_days).
fn year_month(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + (m <= 2) as i64;
    (y, m)
}

/// The bucket a time falls in for each calendar rule, and the rule's name.
fn buckets(t: i64) -> [(&'static str, i64); 5] {
    let days = t.div_euclid(86_400);
    let (y, m) = year_month(days);
    [
        ("hourly", t.div_euclid(3600)),
        ("daily", days),
        // ISO weeks start on Monday; 1970-01-01 was a Thursday.
        ("weekly", (days + 3).div_euclid(7)),
        ("monthly", y * 12 + m as i64),
        ("yearly", y),
    ]
}

/// A bucket as a person reads it, for reasons.
fn bucket_name(rule: &str, t: i64) -> String {
    let d = crate::tree::Time { sec: t, nsec: 0 }.rfc3339();
    match rule {
        "hourly" => format!("hour {}", &d[..13]),
        "daily" => format!("day {}", &d[..10]),
        "weekly" => {
            let days = t.div_euclid(86_400);
            let monday = (days + 3).div_euclid(7) * 7 - 3;
            let m = crate::tree::Time {
                sec: monday * 86_400,
                nsec: 0,
            }
            .rfc3339();
            format!("week of {}", &m[..10])
        }
        "monthly" => format!("month {}", &d[..7]),
        _ => format!("year {}", &d[..4]),
    }
}

/// The time each snapshot counts at for the time rules: its own stamp,
/// except that a stamp out of line with both neighbours (by id: after
/// both, or before both, of two in order) is pulled between them, and the
/// newest never counts later than the clock. Snapshots are made in id
/// order, so such a stamp is a clock that was wrong for a run: it takes
/// its neighbours' place instead of a day, week or month of its own, and
/// a stamp in the future ages out with the clock. `snaps` is in id order.
pub fn counted_times(snaps: &[Snap], now: i64) -> Vec<i64> {
    let n = snaps.len();
    let mut out: Vec<i64> = snaps.iter().map(|s| s.time).collect();
    for i in 1..n.saturating_sub(1) {
        let (prev, next) = (snaps[i - 1].time, snaps[i + 1].time);
        if prev <= next {
            out[i] = snaps[i].time.clamp(prev, next);
        }
    }
    if let Some(last) = out.last_mut() {
        *last = (*last).min(now);
    }
    out
}

/// How long before the newest each snapshot was taken, for `within`: the
/// counted times' gaps summed from it to the newest, each gap at most
/// `period` (the schedule's interval; a gap backwards counts as none). So
/// a pause, or a clock that jumps ahead for good or for a run or two,
/// ages the snapshots before it by one period, not by the jump: they age
/// out as later dumps come, never all at once.
pub fn ages(times: &[i64], period: i64) -> Vec<i64> {
    let mut out = vec![0i64; times.len()];
    for i in (0..times.len().saturating_sub(1)).rev() {
        let gap = times[i + 1]
            .saturating_sub(times[i])
            .clamp(0, period.max(1));
        out[i] = out[i + 1].saturating_add(gap);
    }
    out
}

/// Whether the clock is in doubt: the newest snapshot is stamped after it,
/// or before the snapshot made before it (a clock set back, or the run
/// after one that was ahead). Nothing is pruned then: which stamps are
/// right is not known.
pub fn clock_doubt(snaps: &[Snap], now: i64) -> Option<String> {
    let newest = snaps.last()?;
    if newest.time > now {
        return Some(format!(
            "the newest snapshot ({}) is stamped {}, after the clock ({}): nothing is pruned while the clock is in doubt; check it",
            newest.id,
            stamp(newest.time),
            stamp(now)
        ));
    }
    let prev = snaps.len().checked_sub(2).map(|i| &snaps[i])?;
    (newest.time < prev.time).then(|| {
        format!(
            "snapshot {} is stamped {}, before snapshot {} ({}): the clock went back or had been ahead, so nothing is pruned this run; check the clock",
            newest.id,
            stamp(newest.time),
            prev.id,
            stamp(prev.time)
        )
    })
}

fn counted_note(s: &Snap, t: i64) -> String {
    if t == s.time {
        String::new()
    } else {
        format!(" (stamped {}, counted at {})", stamp(s.time), stamp(t))
    }
}

fn stamp(t: i64) -> String {
    crate::tree::Time { sec: t, nsec: 0 }.rfc3339()
}

/// The snapshots `keep` keeps (all when `None`) at clock `now` under a
/// schedule of interval `period` (seconds), each with the rules that keep
/// it; the newest is always kept (the next increment's base). `snaps` is
/// in id order. The time rules go by [`counted_times`]; `within` by
/// [`ages`].
pub fn kept(
    snaps: &[Snap],
    keep: Option<&Keep>,
    now: i64,
    period: i64,
) -> BTreeMap<u64, Vec<String>> {
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let Some(newest) = snaps.last() else {
        return out;
    };
    out.entry(newest.id).or_default().push("newest".into());
    let Some(k) = keep else {
        for s in snaps {
            out.entry(s.id)
                .or_default()
                .push("no [keep]: everything is kept".into());
        }
        return out;
    };
    for s in snaps.iter().rev().take(k.last as usize) {
        out.entry(s.id)
            .or_default()
            .push(format!("last {}", k.last));
    }
    let times = counted_times(snaps, now);
    let counts = [k.hourly, k.daily, k.weekly, k.monthly, k.yearly];
    for (r, &n) in counts.iter().enumerate() {
        let mut seen = 0u32;
        let mut last_bucket = None;
        for (s, &t) in snaps.iter().zip(&times).rev() {
            if seen == n {
                break;
            }
            let (rule, b) = buckets(t)[r];
            if last_bucket != Some(b) {
                last_bucket = Some(b);
                seen += 1;
                out.entry(s.id).or_default().push(format!(
                    "{rule} {n}: {}{}",
                    bucket_name(rule, t),
                    counted_note(s, t)
                ));
            }
        }
    }
    if let Some(w) = k.within {
        let span = w.as_secs().min(i64::MAX as u64) as i64;
        let shown = humantime::format_duration(w);
        for ((s, &t), &age) in snaps.iter().zip(&times).zip(&ages(&times, period)) {
            if age <= span {
                let counted = if age < newest.time.saturating_sub(s.time) {
                    " (gaps longer than the schedule's interval count as one)"
                } else {
                    ""
                };
                out.entry(s.id).or_default().push(format!(
                    "within {shown} of the newest{counted}{}",
                    counted_note(s, t)
                ));
            }
        }
    }
    out
}

/// `kept` and every snapshot one of them needs: the bases down its chain,
/// each with the reason "base of N". Returns the ids with their reasons.
pub fn needed(snaps: &[Snap], kept: BTreeMap<u64, Vec<String>>) -> BTreeMap<u64, Vec<String>> {
    let by_id: BTreeMap<u64, &Snap> = snaps.iter().map(|s| (s.id, s)).collect();
    let mut out = kept.clone();
    for &id in kept.keys() {
        let mut cur = by_id.get(&id).and_then(|s| s.base);
        let mut from = id;
        while let Some(b) = cur {
            let Some(s) = by_id.get(&b) else { break };
            let reasons = out.entry(b).or_default();
            let why = format!("base of {from}");
            if !reasons.contains(&why) {
                reasons.push(why);
            }
            from = b;
            cur = s.base;
        }
    }
    out
}

/// The chain of snapshot `id`, oldest first (the full first when the
/// catalog still has it).
pub fn chain(snaps: &[Snap], id: u64) -> Vec<&Snap> {
    let by_id: BTreeMap<u64, &Snap> = snaps.iter().map(|s| (s.id, s)).collect();
    let mut out = Vec::new();
    let mut cur = Some(id);
    while let Some(c) = cur {
        let Some(s) = by_id.get(&c) else { break };
        out.push(*s);
        cur = s.base;
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_buckets_are_utc_days_iso_weeks_months_years() {
        // 2024-02-29 12:00 UTC, a Thursday.
        let t = 1_709_208_000;
        assert_eq!(year_month(t / 86_400), (2024, 2));
        assert_eq!(bucket_name("weekly", t), "week of 2024-02-26");
        assert_eq!(bucket_name("daily", t), "day 2024-02-29");
        assert_eq!(year_month(-1), (1969, 12));
        // Monday and Sunday of one ISO week share it.
        let monday = 1_708_905_600; // 2024-02-26 00:00
        assert_eq!(
            buckets(monday)[2].1,
            buckets(monday + 6 * 86_400 + 86_399)[2].1
        );
        assert_ne!(buckets(monday)[2].1, buckets(monday - 1)[2].1);
    }

    fn daily(times: &[i64]) -> Vec<Snap> {
        times
            .iter()
            .enumerate()
            .map(|(i, &time)| Snap {
                id: i as u64 + 1,
                time,
                level: 0,
                base: None,
                stream_bytes: 1,
                output: String::new(),
            })
            .collect()
    }

    #[test]
    fn a_stamp_ahead_of_the_clock_or_a_successor_counts_at_the_earlier() {
        let s = daily(&[100, 5_000, 300, 400]);
        assert_eq!(counted_times(&s, 10_000), [100, 300, 300, 400]);
        assert_eq!(counted_times(&s, 350), [100, 300, 300, 350]);
    }

    #[test]
    fn a_clock_set_back_prunes_none_of_the_snapshots_stamped_after_it() {
        let day = 86_400;
        let mut times: Vec<i64> = (0..10).map(|d| d * day + 3_600).collect();
        times.push(3 * day + 7_200);
        let s = daily(&times);
        let now = 3 * day + 7_200;
        let keep = Keep {
            daily: 7,
            ..Keep::default()
        };
        let k = kept(&s, Some(&keep), now, day);
        for id in 5..=11 {
            assert!(k.contains_key(&id), "snapshot {id}: {k:?}");
        }
        // And the run that made it prunes nothing at all.
        assert!(clock_doubt(&s, now).is_some_and(|w| w.contains("before snapshot 10")));
        assert!(clock_doubt(&s[..10], 3 * day).is_some_and(|w| w.contains("after the clock")));
        assert!(clock_doubt(&s[..10], 10 * day).is_none());
    }

    #[test]
    fn one_stamp_out_of_line_takes_its_neighbours_place() {
        let day = 86_400;
        // Days 0..9, one run with the clock set back to day 3, then day 10.
        let mut times: Vec<i64> = (0..10).map(|d| d * day).collect();
        times.push(3 * day);
        times.push(10 * day);
        assert_eq!(counted_times(&daily(&times), 10 * day)[10], 9 * day);
        let keep = Keep {
            within: Some(std::time::Duration::from_secs(3 * day as u64)),
            ..Keep::default()
        };
        let ids = |k: BTreeMap<u64, Vec<String>>| k.into_keys().collect::<Vec<_>>();
        assert_eq!(
            ids(kept(&daily(&times), Some(&keep), 10 * day, day)),
            [8, 9, 10, 11, 12]
        );
        // A stamp in the future between two in order ages like them.
        times[10] = 9_000 * day;
        assert_eq!(counted_times(&daily(&times), 10 * day)[10], 10 * day);
        times.extend([11 * day, 12 * day, 13 * day, 14 * day]);
        let k = ids(kept(&daily(&times), Some(&keep), 14 * day, day));
        assert_eq!(k, [13, 14, 15, 16], "{k:?}");
    }

    #[test]
    fn within_ages_snapshots_by_at_most_one_interval_per_gap() {
        let day = 86_400;
        let keep = Keep {
            within: Some(std::time::Duration::from_secs(3 * day as u64)),
            ..Keep::default()
        };
        let ids = |k: BTreeMap<u64, Vec<String>>| k.into_keys().collect::<Vec<_>>();
        let mut times: Vec<i64> = (0..10).map(|d| d * day).collect();
        // Steady daily snapshots: the last three days and the newest.
        assert_eq!(
            ids(kept(&daily(&times), Some(&keep), 9 * day, day)),
            [7, 8, 9, 10]
        );
        // A jump of years (a clock ahead for good, or a long pause): the
        // older snapshots age by one day per dump, not by the jump.
        times.push(5_000 * day);
        assert_eq!(
            ids(kept(&daily(&times), Some(&keep), 5_000 * day, day)),
            [8, 9, 10, 11]
        );
        times.push(5_000 * day + 3_600);
        times.push(5_000 * day + 7_200);
        assert_eq!(
            ids(kept(&daily(&times), Some(&keep), 5_000 * day + 7_200, day)),
            [9, 10, 11, 12, 13]
        );
        times.extend([5_001 * day, 5_002 * day, 5_003 * day]);
        assert_eq!(
            ids(kept(&daily(&times), Some(&keep), 5_003 * day, day)),
            [11, 12, 13, 14, 15, 16]
        );
    }
}
