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
/// `2026-11-22 10:00:00`, UTC).
pub fn parse_at(s: &str) -> Result<At> {
    if let Ok(id) = s.parse::<u64>() {
        return Ok(At::Id(id));
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|_| {
        anyhow!("--at {s}: give a snapshot id (a number) or a time such as 2026-11-22T10:00:00Z")
    })?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| anyhow!("--at {s}: times before 1970 are not supported"))?;
    Ok(At::Time(Time {
        sec: d.as_secs() as i64,
        nsec: d.subsec_nanos(),
    }))
}
