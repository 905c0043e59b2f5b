//! How a user names a snapshot: `--at SNAPSHOT|TIME` for chains of streams,
//! `PATH.vol@SNAPSHOT` for volumes. Below every layer that selects one.

use crate::tree::Time;
use anyhow::{anyhow, Result};

/// How a user names a snapshot (`--at`, `PATH.vol@SNAPSHOT`): an id, or
/// the newest taken at or before a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// The snapshot with this id.
    Id(u64),
    /// The newest snapshot taken at or before this time.
    Time(Time),
}

/// Parses `--at`: a snapshot id, or a time as RFC 3339 (`2026-11-22T10:00:00Z`,
/// `2026-11-22 10:00:00`, UTC). A time given to the second stands for the
/// whole of that second: snapdump prints snapshot times to the second, so
/// the time a listing shows selects the snapshot it was shown for.
pub fn parse_at(s: &str) -> Result<At> {
    if let Ok(id) = s.parse::<u64>() {
        return Ok(At::Id(id));
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|_| {
        anyhow!(
            "snapshot {s:?}: give a snapshot id (a number) or a time such as 2026-11-22T10:00:00Z"
        )
    })?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| anyhow!("snapshot {s:?}: times before 1970 are not supported"))?;
    let whole_second = !s.contains('.');
    Ok(At::Time(Time {
        sec: d.as_secs() as i64,
        nsec: if whole_second {
            999_999_999
        } else {
            d.subsec_nanos()
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_to_the_second_covers_that_second() {
        let At::Time(t) = parse_at("2026-12-01T23:45:09Z").unwrap() else {
            panic!("a time")
        };
        let taken = Time {
            sec: t.sec,
            nsec: 500_000_000,
        };
        assert!(
            taken <= t,
            "a snapshot taken within the second is at or before it"
        );
        let At::Time(t) = parse_at("2026-12-01T23:45:09.25Z").unwrap() else {
            panic!("a time")
        };
        assert_eq!(t.nsec, 250_000_000);
        assert!(taken > t);
        assert_eq!(parse_at("7").unwrap(), At::Id(7));
        assert!(parse_at("yesterday").is_err());
    }
}
