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
/// but never after the clock nor after a later snapshot's (snapshots are
/// made in id order, so a stamp after a successor's is a clock that was
/// ahead). A snapshot stamped in the future thus ages with the clock
/// instead of staying "newest" for ever, and a clock set back does not
/// make old snapshots look young. `snaps` is in id order.
pub fn counted_times(snaps: &[Snap], now: i64) -> Vec<i64> {
    let mut out = vec![0; snaps.len()];
    let mut cap = now;
    for (i, s) in snaps.iter().enumerate().rev() {
        cap = cap.min(s.time);
        out[i] = cap;
    }
    out
}

fn counted_note(s: &Snap, t: i64) -> String {
    if t == s.time {
        String::new()
    } else {
        format!(
            " (stamped {}, after a later snapshot or the clock: counted at {})",
            stamp(s.time),
            stamp(t)
        )
    }
}

fn stamp(t: i64) -> String {
    crate::tree::Time { sec: t, nsec: 0 }.rfc3339()
}

/// The snapshots `keep` keeps (all when `None`) at clock `now`, each with
/// the rules that keep it; the newest is always kept (the next
/// increment's base). `snaps` is in id order.
///
/// `within` keeps a snapshot whose own stamp or [`counted_times`] time is
/// in the window, measured back from the newest snapshot's counted time; when the newest came more than the window after
/// the one before it, and more than twice the gap before that (a clock
/// that jumped ahead, or a long pause), the window before that gap is
/// kept too, until a later snapshot shows the new clock holds: one run
/// with a wrong clock cannot prune everything.
pub fn kept(snaps: &[Snap], keep: Option<&Keep>, now: i64) -> BTreeMap<u64, Vec<String>> {
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
    // Calendar buckets go by each snapshot's own stamp, newest id first:
    // a stamp out of order takes one bucket and ages out as later
    // snapshots fill the newer ones, and a clock set back never merges the
    // snapshots stamped after it into one bucket.
    let counts = [k.hourly, k.daily, k.weekly, k.monthly, k.yearly];
    for (r, &n) in counts.iter().enumerate() {
        let mut seen = 0u32;
        let mut last_bucket = None;
        for s in snaps.iter().rev() {
            if seen == n {
                break;
            }
            let (rule, b) = buckets(s.time)[r];
            if last_bucket != Some(b) {
                last_bucket = Some(b);
                seen += 1;
                out.entry(s.id)
                    .or_default()
                    .push(format!("{rule} {n}: {}", bucket_name(rule, s.time)));
            }
        }
    }
    let times = counted_times(snaps, now);
    if let Some(w) = k.within {
        let span = w.as_secs().min(i64::MAX as u64) as i64;
        let shown = humantime::format_duration(w);
        let n = times.len();
        let mut windows = vec![(times[n - 1], "the newest".to_string())];
        if n >= 2 {
            let gap = times[n - 1].saturating_sub(times[n - 2]);
            let before = if n >= 3 {
                times[n - 2].saturating_sub(times[n - 3])
            } else {
                0
            };
            if gap > span && gap > before.saturating_mul(2) {
                windows.push((
                    times[n - 2],
                    format!(
                        "snapshot {}, the newest came {} after it (a clock jump or a pause: \
                         kept until a later snapshot)",
                        snaps[n - 2].id,
                        humantime::format_duration(std::time::Duration::from_secs(gap as u64))
                    ),
                ));
            }
        }
        for (anchor, what) in windows {
            let from = anchor.saturating_sub(span);
            let inside = |t: i64| t >= from && t <= anchor;
            for (s, &t) in snaps.iter().zip(&times) {
                // By its own stamp or by the one it counts at: one stamp out
                // of order (ahead or behind) never drags its neighbours out.
                let why = if inside(s.time) {
                    format!("within {shown} of {what}")
                } else if inside(t) {
                    format!("within {shown} of {what}{}", counted_note(s, t))
                } else {
                    continue;
                };
                out.entry(s.id).or_default().push(why);
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
        for keep in [
            Keep {
                daily: 7,
                ..Keep::default()
            },
            Keep {
                within: Some(std::time::Duration::from_secs(3 * day as u64)),
                ..Keep::default()
            },
        ] {
            let k = kept(&s, Some(&keep), 3 * day + 7_200);
            for id in 5..=11 {
                assert!(k.contains_key(&id), "{keep:?}: snapshot {id}: {k:?}");
            }
        }
    }

    #[test]
    fn one_stamp_behind_does_not_drag_the_snapshots_before_it_out_of_within() {
        let day = 86_400;
        // Days 0..9, one run with the clock set back to day 3, then day 10.
        let mut times: Vec<i64> = (0..10).map(|d| d * day).collect();
        times.push(3 * day);
        times.push(10 * day);
        let keep = Keep {
            within: Some(std::time::Duration::from_secs(3 * day as u64)),
            ..Keep::default()
        };
        // Day 10 came a week after the stamp before it: kept one more run.
        let k = kept(&daily(&times), Some(&keep), 10 * day);
        assert_eq!(k.len(), 12);
        // By its own stamp, day 8 is in the window of day 11; none is
        // dragged out by the one stamped behind.
        times.push(11 * day);
        let k = kept(&daily(&times), Some(&keep), 11 * day);
        assert_eq!(k.into_keys().collect::<Vec<_>>(), [9, 10, 12, 13]);
    }

    #[test]
    fn within_keeps_the_window_before_a_jump_until_a_later_snapshot() {
        let day = 86_400;
        let keep = Keep {
            within: Some(std::time::Duration::from_secs(3 * day as u64)),
            ..Keep::default()
        };
        let ids = |k: BTreeMap<u64, Vec<String>>| k.into_keys().collect::<Vec<_>>();
        let mut times: Vec<i64> = (0..10).map(|d| d * day).collect();
        // Steady daily snapshots: the last three days and the newest.
        assert_eq!(
            ids(kept(&daily(&times), Some(&keep), 9 * day)),
            [7, 8, 9, 10]
        );
        // A jump of years: the window before it stays.
        times.push(5_000 * day);
        assert_eq!(
            ids(kept(&daily(&times), Some(&keep), 5_000 * day)),
            [7, 8, 9, 10, 11]
        );
        // The next snapshot on the new clock confirms it.
        times.push(5_001 * day);
        assert_eq!(
            ids(kept(&daily(&times), Some(&keep), 5_001 * day)),
            [11, 12]
        );
    }
}
