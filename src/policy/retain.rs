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

/// The snapshots `keep` keeps (all when `None`), each with the rules that
/// keep it; the newest is always kept (the next increment's base).
/// `snaps` is in id order.
pub fn kept(snaps: &[Snap], keep: Option<&Keep>) -> BTreeMap<u64, Vec<String>> {
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
    if let Some(w) = k.within {
        let from = newest.time - w.as_secs() as i64;
        for s in snaps.iter().filter(|s| s.time >= from) {
            out.entry(s.id).or_default().push(format!(
                "within {} of the newest",
                humantime::format_duration(w)
            ));
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
}
