//! The source's decision (seed 004's master-snapshot rule), a pure
//! function of what the source keeps and what the destination said.

use super::protocol::{uuid16, Hello, Snap};
use crate::stream::header::SnapshotRef;

/// What the source should send.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// A full image: the destination holds nothing of this source, or
    /// nothing the source still keeps a plane of.
    Full(String),
    /// An increment from this source snapshot (the destination's newest).
    Increment(SnapshotRef),
    /// The destination holds what the source does not know.
    Conflict(String),
}

/// What the source keeps: its uuid (the streams' VBN space), its path, and
/// the snapshots it can be the base of an increment from, oldest first.
pub struct SourceView<'a> {
    /// Source uuid.
    pub uuid: [u8; 16],
    /// Source path (lossy), for messages and same-source detection.
    pub path: &'a str,
    /// Snapshots with planes, oldest first.
    pub snapshots: &'a [SnapshotRef],
}

fn name(s: &Snap) -> String {
    format!(
        "snapshot {} ({}, {})",
        s.id,
        &s.uuid[..8.min(s.uuid.len())],
        s.time
    )
}

/// Decides between a full image, an increment and a conflict. "Current"
/// is the caller's to see (the increment's base is what it would send).
pub fn decide(src: &SourceView, hello: &Hello, force_full: bool) -> Plan {
    let me = crate::ids::hex(&src.uuid);
    let entry = hello.follows.iter().find(|f| f.source_uuid == me);
    let others: Vec<_> = hello
        .follows
        .iter()
        .filter(|f| {
            f.source_uuid != me
                && !f.snapshots.is_empty()
                && (hello.kind == "target" || f.source_path == src.path)
        })
        .collect();
    if force_full {
        return Plan::Full("--full was given".into());
    }
    let known = |s: &Snap| {
        uuid16(&s.uuid)
            .ok()
            .and_then(|u| src.snapshots.iter().find(|k| k.uuid == u))
    };
    let src_range = match (src.snapshots.first(), src.snapshots.last()) {
        (Some(a), Some(b)) => format!("the source keeps snapshots {} to {}", a.id, b.id),
        _ => "the source keeps no snapshot yet".into(),
    };
    let Some(newest) = entry.and_then(|e| e.snapshots.last()) else {
        if let Some(o) = others.first() {
            return Plan::Conflict(format!(
                "{} {} holds {} of another source ({}{}), not of this one ({}); replicate --full replaces it with a full copy of this source",
                hello.kind,
                hello.path,
                o.snapshots.last().map(name).unwrap_or_default(),
                &o.source_uuid[..8.min(o.source_uuid.len())],
                if o.source_path.is_empty() { String::new() } else { format!(", {}", o.source_path) },
                &me[..8],
            ));
        }
        return Plan::Full(format!(
            "{} {} holds nothing of this source",
            hello.kind, hello.path
        ));
    };
    if let Some(base) = known(newest) {
        return Plan::Increment(base.clone());
    }
    match src.snapshots.first() {
        Some(oldest) if newest.id < oldest.id => Plan::Full(format!(
            "the destination's newest master, {}, is older than every snapshot the source keeps ({src_range})",
            name(newest)
        )),
        _ => Plan::Conflict(format!(
            "{} {} holds {} of this source, which the source does not know ({src_range}): it was fed from elsewhere or the source's catalog was restored from an older copy; replicate --full sends a full copy",
            hello.kind,
            hello.path,
            name(newest)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::protocol::Followed;
    use super::*;

    fn snap(id: u64, u: u8) -> SnapshotRef {
        SnapshotRef {
            id,
            uuid: [u; 16],
            ..Default::default()
        }
    }

    fn hello(kind: &str, follows: Vec<Followed>) -> Hello {
        Hello {
            protocol: 1,
            tool_version: "t".into(),
            replica_id: "00".repeat(16),
            kind: kind.into(),
            path: "/d".into(),
            follows,
            incoming: None,
        }
    }

    fn follows(src: u8, snaps: &[SnapshotRef]) -> Followed {
        Followed {
            source_uuid: crate::ids::hex(&[src; 16]),
            source_path: "/s".into(),
            snapshots: snaps.iter().map(Snap::of).collect(),
        }
    }

    #[test]
    fn the_seed_004_rule() {
        let keeps = [snap(3, 3), snap(4, 4), snap(5, 5)];
        let src = SourceView {
            uuid: [9; 16],
            path: "/s",
            snapshots: &keeps,
        };
        // Nothing there: full.
        assert!(matches!(
            decide(&src, &hello("volume", vec![]), false),
            Plan::Full(_)
        ));
        // Newest master known: increment from it.
        let h = hello("volume", vec![follows(9, &[snap(3, 3), snap(4, 4)])]);
        assert_eq!(decide(&src, &h, false), Plan::Increment(snap(4, 4)));
        // Older than anything kept: full.
        let h = hello("volume", vec![follows(9, &[snap(1, 1)])]);
        assert!(matches!(decide(&src, &h, false), Plan::Full(_)));
        // Unknown but within the kept range: conflict, unless --full.
        let h = hello("volume", vec![follows(9, &[snap(4, 0x44)])]);
        assert!(matches!(decide(&src, &h, false), Plan::Conflict(_)));
        assert!(matches!(decide(&src, &h, true), Plan::Full(_)));
        // Another source of the same path: conflict; in a volume another
        // path is simply another source.
        let h = hello("volume", vec![follows(7, &[snap(4, 0x44)])]);
        assert!(matches!(decide(&src, &h, false), Plan::Conflict(_)));
        let mut other = follows(7, &[snap(4, 0x44)]);
        other.source_path = "/elsewhere".into();
        assert!(matches!(
            decide(&src, &hello("volume", vec![other.clone()]), false),
            Plan::Full(_)
        ));
        assert!(matches!(
            decide(&src, &hello("target", vec![other]), false),
            Plan::Conflict(_)
        ));
    }
}
