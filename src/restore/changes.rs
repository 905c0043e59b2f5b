//! What changed in one entry between two snapshots, from their metadata and
//! images alone (no data is read): used by `history` and by listings that
//! name the snapshot that last changed each entry.
//!
//! Content is compared through block pointers. A block whose VBN differs
//! changed. A block at the same VBN is unchanged when the newer snapshot's
//! base is the older one and its stream does not carry that VBN (a VBN's
//! block never changes while it stays allocated; an increment carries
//! exactly the VBNs its base lacks). Between snapshots that are not base and
//! increment — two level-1 dumps on the same level 0, say — a VBN carried by
//! both is the same block written once, so only a VBN the newer stream
//! carries and the older does not counts as changed.

use crate::runs::RunSet;
use crate::stream::header::StreamHeader;
use crate::tree::{Inode, Kind, Tree};
use serde::Serialize;
use std::collections::HashMap;

/// How the older and newer snapshot of a comparison are related.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// The newer stream is an increment on the older snapshot.
    BaseIsPrev,
    /// Both are increments on the same base.
    SameBase,
    /// Anything else (the comparison is conservative: it may report a block
    /// as changed that was rewritten with the same contents).
    Other,
}

impl Relation {
    /// The relation of stream `cur` to stream `prev`.
    pub fn of(prev: &StreamHeader, cur: &StreamHeader) -> Relation {
        Relation::between(&prev.snapshot, prev.base.as_ref(), cur.base.as_ref())
    }

    /// The relation of a snapshot whose base is `cur_base` to snapshot
    /// `prev` (whose base is `prev_base`).
    pub fn between(
        prev: &crate::stream::header::SnapshotRef,
        prev_base: Option<&crate::stream::header::SnapshotRef>,
        cur_base: Option<&crate::stream::header::SnapshotRef>,
    ) -> Relation {
        match (prev_base, cur_base) {
            (_, Some(b)) if b.uuid == prev.uuid => Relation::BaseIsPrev,
            (Some(a), Some(b)) if a.uuid == b.uuid => Relation::SameBase,
            _ => Relation::Other,
        }
    }
}

/// One side of a comparison: a snapshot's tree and the VBNs its stream
/// carries.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    /// The snapshot's tree.
    pub tree: &'a Tree,
    /// VBNs carried by its stream.
    pub carried: &'a RunSet,
    /// The stream's block size.
    pub block_size: u64,
}

/// How an entry changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Change {
    /// "added", "deleted", "type", "modified" or "attributes".
    pub what: &'static str,
    /// The attributes that differ (mode, owner, size, mtime, target,
    /// xattrs, device).
    pub attributes: Vec<&'static str>,
    /// File blocks whose contents changed, as `[first, count]` runs.
    pub blocks: Vec<(u64, u64)>,
}

/// Maps every path of a tree to its inode, to find an entry in another
/// snapshot by name.
pub struct PathIndex {
    map: HashMap<Vec<u8>, u64>,
}

impl PathIndex {
    /// Indexes every name of `tree`.
    pub fn new(tree: &Tree) -> PathIndex {
        PathIndex {
            map: tree
                .dirents
                .iter()
                .map(|d| (tree.dirent_path(d), d.ino))
                .collect(),
        }
    }

    /// The inode named `path`, if any.
    pub fn get(&self, path: &[u8]) -> Option<u64> {
        self.map.get(path).copied()
    }
}

/// The attributes of `b` that differ from `a` (times other than mtime are
/// not compared: reading changes atime, and ctime cannot be restored).
pub fn attr_changes(a: &Inode, b: &Inode) -> Vec<&'static str> {
    let mut v = Vec::new();
    if a.attrs.mode != b.attrs.mode {
        v.push("mode");
    }
    if (a.attrs.uid, a.attrs.gid) != (b.attrs.uid, b.attrs.gid) {
        v.push("owner");
    }
    if a.size != b.size && a.kind != Kind::Dir {
        v.push("size");
    }
    if a.attrs.mtime != b.attrs.mtime {
        v.push("mtime");
    }
    if a.target != b.target {
        v.push("target");
    }
    if a.xattrs != b.xattrs {
        v.push("xattrs");
    }
    if (a.flags, a.projid) != (b.flags, b.projid) {
        v.push("flags");
    }
    if a.attrs.rdev != b.attrs.rdev && matches!(a.kind, Kind::CharDev | Kind::BlockDev) {
        v.push("device");
    }
    v
}

fn vbn_of(i: &Inode, block: u64) -> Option<u64> {
    let k = i.extents.partition_point(|x| x.block + x.count <= block);
    i.extents
        .get(k)
        .filter(|x| x.block <= block)
        .map(|x| x.vbn + (block - x.block))
}

/// The file blocks of `cur` whose contents differ from `prev`'s (blocks
/// that became holes included).
pub fn changed_blocks(
    prev: (&Inode, &RunSet),
    cur: (&Inode, &RunSet),
    block_size: u64,
    rel: Relation,
) -> Vec<(u64, u64)> {
    let (p, pc) = prev;
    let (c, cc) = cur;
    let span = |i: &Inode| i.extents.last().map(|x| x.block + x.count).unwrap_or(0);
    let in_file = c.size.div_ceil(block_size.max(1));
    let mut changed: Vec<(u64, u64)> = Vec::new();
    let mut push = |b: u64| match changed.last_mut() {
        Some((s, n)) if *s + *n == b => *n += 1,
        _ => changed.push((b, 1)),
    };
    let blocks = span(c).max(span(p)).min(in_file.max(span(c)));
    let mut b = 0;
    while b < blocks {
        let (cv, pv) = (vbn_of(c, b), vbn_of(p, b));
        let diff = match (pv, cv) {
            (None, None) => false,
            (Some(_), None) => b < in_file,
            (None, Some(_)) => true,
            (Some(x), Some(y)) if x != y => true,
            (Some(_), Some(v)) => match rel {
                Relation::BaseIsPrev => cc.contains(v),
                Relation::SameBase => cc.contains(v) && !pc.contains(v),
                Relation::Other => cc.contains(v),
            },
        };
        if diff {
            push(b);
        }
        b += 1;
        // Skip quickly over a hole in both.
        if cv.is_none() && pv.is_none() {
            let next = |i: &Inode| {
                let k = i.extents.partition_point(|x| x.block + x.count <= b);
                i.extents.get(k).map(|x| x.block.max(b)).unwrap_or(blocks)
            };
            b = next(c).min(next(p)).max(b);
        }
    }
    changed
}

/// How the entry `path` changed from `prev` to `cur` (`None`: unchanged).
pub fn entry_change(
    path: &[u8],
    prev: Option<(Side, &PathIndex)>,
    cur: (Side, &PathIndex),
    rel: Relation,
) -> Option<Change> {
    let (cs, ci) = cur;
    let now = ci.get(path).map(|i| cs.tree.inode(i));
    let before = prev.and_then(|(ps, pi)| pi.get(path).map(|i| (ps, ps.tree.inode(i))));
    match (before, now) {
        (None, None) => None,
        (None, Some(c)) => Some(Change {
            what: "added",
            blocks: if c.kind == Kind::File {
                c.extents.iter().map(|x| (x.block, x.count)).collect()
            } else {
                Vec::new()
            },
            ..Change::default()
        }),
        (Some(_), None) => Some(Change {
            what: "deleted",
            ..Change::default()
        }),
        (Some((_, p)), Some(c)) if p.kind != c.kind => Some(Change {
            what: "type",
            ..Change::default()
        }),
        (Some((ps, p)), Some(c)) => {
            let attributes = attr_changes(p, c);
            let blocks = if c.kind == Kind::File {
                changed_blocks((p, ps.carried), (c, cs.carried), cs.block_size, rel)
            } else {
                Vec::new()
            };
            if attributes.is_empty() && blocks.is_empty() {
                return None;
            }
            Some(Change {
                what: if blocks.is_empty() {
                    "attributes"
                } else {
                    "modified"
                },
                attributes,
                blocks,
            })
        }
    }
}
