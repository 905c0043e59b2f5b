//! `restore -t`: list a snapshot's entries from the metadata sections of
//! its chain alone; no data is read.

use super::chain::{At, Link, StreamSet};
use super::changes::{entry_change, PathIndex, Relation, Side};
use super::select::{mark_paths, normalize};
use crate::names::escape;
use crate::report::Report;
use crate::stream::header::{SnapshotRef, StreamHeader};
use crate::stream::reader::Digest;
use crate::tree::{Inode, Kind};
use anyhow::Result;
use serde::Serialize;

/// What a listing shows of one entry, shared by `restore -t` and
/// `volume ls`.
#[derive(Serialize)]
pub struct EntryInfo {
    /// Path relative to the dump's root, escaped.
    pub path: String,
    /// File type.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits, octal.
    pub mode: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: String,
    /// Symlink target, escaped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl EntryInfo {
    /// The entry `d` of `tree`.
    pub fn of(tree: &crate::tree::Tree, d: &crate::tree::Dirent) -> EntryInfo {
        let i = tree.inode(d.ino);
        EntryInfo {
            path: escape(&tree.dirent_path(d)),
            kind: i.kind.name(),
            size: i.size,
            mode: format!("{:04o}", i.attrs.mode),
            uid: i.attrs.uid,
            gid: i.attrs.gid,
            mtime: i.attrs.mtime.rfc3339(),
            target: (i.kind == Kind::Symlink).then(|| escape(&i.target)),
        }
    }
}

/// One listed entry (`--json`).
#[derive(Serialize)]
pub struct ListEntry {
    /// The entry.
    #[serde(flatten)]
    pub entry: EntryInfo,
    /// Snapshot id listed.
    pub snapshot: u64,
    /// The snapshot that last changed the entry (its contents, attributes,
    /// or its appearing under this name).
    pub changed: LastChanged,
}

/// The snapshot that last changed an entry.
#[derive(Clone, Serialize)]
pub struct LastChanged {
    /// The snapshot.
    #[serde(flatten)]
    pub snapshot: SnapshotRef,
    /// False when the streams given do not go back far enough to know: the
    /// entry then last changed at or before this snapshot.
    pub exact: bool,
}

/// The `--json` listing.
#[derive(Serialize)]
pub struct Listing {
    /// Always "list".
    pub command: &'static str,
    /// The header of the stream holding the listed snapshot.
    pub header: StreamHeader,
    /// The streams whose metadata was read, oldest first.
    pub chain: Vec<String>,
    /// The entries, depth-first.
    pub entries: Vec<ListEntry>,
}

/// Lists the snapshot `at` (default: the newest) of the streams `inputs`;
/// with `paths`, only those entries and what lies below them. Only the
/// metadata and image sections are read. Given the streams leading to the
/// snapshot, each entry names the snapshot that last changed it.
pub fn list(
    inputs: &[crate::media::Input],
    at: Option<At>,
    paths: &[String],
    report: &Report,
) -> Result<Listing> {
    let set = StreamSet::open(inputs, Digest::Skip)?;
    let top = set.select(at)?;
    let chain = set.chain(top, false)?;
    let links: Vec<&Link> = chain.iter().map(|&i| &set.links[i]).collect();
    let tree = &set.links[top].front.tree;
    let wanted: Vec<Vec<u8>> = paths.iter().map(|p| normalize(p)).collect();
    let (marks, missing) = mark_paths(tree, &wanted);
    for m in &missing {
        report.warn(m, "not in the stream");
    }
    let indexes: Vec<PathIndex> = if links.len() > 1 {
        links
            .iter()
            .map(|l| PathIndex::new(&l.front.tree))
            .collect()
    } else {
        Vec::new()
    };
    let mut entries = Vec::new();
    for (n, d) in tree.dirents.iter().enumerate().skip(1) {
        if !marks[n] {
            continue;
        }
        let path = tree.dirent_path(d);
        let i = tree.inode(d.ino);
        entries.push(ListEntry {
            entry: EntryInfo::of(tree, d),
            snapshot: set.links[top].header.snapshot.id,
            changed: last_changed(&links, &indexes, &path, i),
        });
    }
    Ok(Listing {
        command: "list",
        header: set.links[top].header.clone(),
        chain: links.iter().map(|l| l.name.clone()).collect(),
        entries,
    })
}

/// The comparison side of a stream.
pub fn side<'a>(l: &'a Link) -> Side<'a> {
    Side {
        tree: &l.front.tree,
        carried: &l.front.carried,
        block_size: l.header.block_size as u64,
    }
}

/// Walks the chain back from its top to the snapshot where `path` last
/// changed.
fn last_changed(links: &[&Link], indexes: &[PathIndex], path: &[u8], inode: &Inode) -> LastChanged {
    for k in (1..links.len()).rev() {
        let change = entry_change(
            path,
            Some((side(links[k - 1]), &indexes[k - 1])),
            (side(links[k]), &indexes[k]),
            Relation::BaseIsPrev,
        );
        if change.is_some() {
            return LastChanged {
                snapshot: links[k].header.snapshot.clone(),
                exact: true,
            };
        }
    }
    // The oldest stream given: a full image knows everything; an
    // increment whose base was not given knows only its own blocks.
    let oldest = links[0];
    let h = &oldest.header;
    let carried_here = inode.extents.iter().any(|x| {
        oldest
            .front
            .carried
            .split(x.vbn, x.count)
            .iter()
            .any(|p| p.2)
    });
    let in_oldest = indexes.first().is_none_or(|i| i.get(path).is_some());
    match &h.base {
        Some(base) if !h.full && in_oldest && !carried_here => LastChanged {
            snapshot: base.clone(),
            exact: false,
        },
        _ => LastChanged {
            snapshot: h.snapshot.clone(),
            exact: h.full,
        },
    }
}
