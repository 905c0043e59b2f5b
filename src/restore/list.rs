//! `restore -t`: list a snapshot's entries from the metadata sections of
//! its chain alone; no data is read.

use super::chain::{At, Link, StreamSet};
use super::changes::{entry_change, PathIndex, Relation, Side};
use crate::report::Report;
use crate::stream::header::{SnapshotRef, StreamHeader};
use crate::stream::reader::Digest;
use crate::target::select::{mark_paths, normalize};
pub use crate::tree::EntryInfo;
use crate::tree::{Inode, Kind};
use anyhow::Result;
use serde::Serialize;

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

/// Where a listing goes, entry by entry: a listing is never held whole
/// (a tree of a million entries, or one 30,000 directories deep, would
/// take gigabytes as a list of paths).
pub trait ListSink {
    /// Called first, with the header of the stream holding the listed
    /// snapshot and the streams whose metadata was read, oldest first.
    fn begin(&mut self, header: &StreamHeader, chain: &[String]) -> Result<()>;
    /// One entry, depth-first.
    fn entry(&mut self, e: &ListEntry) -> Result<()>;
    /// After the last entry.
    fn end(&mut self) -> Result<()>;
}

/// Prints each path on a line (directories with a trailing `/`).
pub struct Lines<W: std::io::Write>(pub W);

impl<W: std::io::Write> ListSink for Lines<W> {
    fn begin(&mut self, _: &StreamHeader, _: &[String]) -> Result<()> {
        Ok(())
    }
    fn entry(&mut self, e: &ListEntry) -> Result<()> {
        let slash = if e.entry.kind == "dir" { "/" } else { "" };
        writeln!(self.0, "{}{slash}", e.entry.path)?;
        Ok(())
    }
    fn end(&mut self) -> Result<()> {
        self.0.flush()?;
        Ok(())
    }
}

/// Writes the `--json` listing, `{"command": "list", "header": ...,
/// "chain": [...], "entries": [...]}`, one entry at a time.
pub struct Json<W: std::io::Write> {
    out: W,
    first: bool,
}

impl<W: std::io::Write> Json<W> {
    /// A JSON listing written to `out`.
    pub fn new(out: W) -> Self {
        Json { out, first: true }
    }
}

impl<W: std::io::Write> ListSink for Json<W> {
    fn begin(&mut self, header: &StreamHeader, chain: &[String]) -> Result<()> {
        write!(
            self.out,
            "{{\n  \"command\": \"list\",\n  \"header\": {},\n  \"chain\": {},\n  \"entries\": [",
            serde_json::to_string(header)?,
            serde_json::to_string(chain)?
        )?;
        Ok(())
    }
    fn entry(&mut self, e: &ListEntry) -> Result<()> {
        let sep = if self.first { "\n    " } else { ",\n    " };
        self.first = false;
        write!(self.out, "{sep}{}", serde_json::to_string(e)?)?;
        Ok(())
    }
    fn end(&mut self) -> Result<()> {
        writeln!(self.out, "\n  ]\n}}")?;
        self.out.flush()?;
        Ok(())
    }
}

/// Lists the snapshot `at` (default: the newest) of the streams `inputs`
/// into `sink`; with `paths`, only those entries and what lies below them.
/// Only the metadata and image sections are read. Given the streams
/// leading to the snapshot, each entry names the snapshot that last
/// changed it. Paths are built as the depth-first walk goes, so the work
/// is that of printing them, whatever the depth.
pub fn list(
    inputs: &[crate::media::Input],
    at: Option<At>,
    paths: &[String],
    report: &Report,
    sink: &mut dyn ListSink,
) -> Result<()> {
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
    let names: Vec<String> = links.iter().map(|l| l.name.clone()).collect();
    sink.begin(&set.links[top].header, &names)?;
    let mut walk = PathWalk::default();
    for (n, d) in tree.dirents.iter().enumerate().skip(1) {
        let path = walk.path_of(tree, d);
        if !marks[n] {
            continue;
        }
        let i = tree.inode(d.ino);
        let changed = last_changed(&links, &indexes, path, i);
        sink.entry(&ListEntry {
            entry: EntryInfo::at(tree, d, path),
            snapshot: set.links[top].header.snapshot.id,
            changed,
        })?;
    }
    sink.end()
}

/// The paths of a tree's dirents in depth-first order, each built from its
/// parent's: one buffer and a stack of directory path lengths, so a deep
/// tree costs what its paths' bytes cost.
#[derive(Default)]
pub struct PathWalk {
    path: Vec<u8>,
    /// (directory inode, length of its path in `path`), root first.
    stack: Vec<(u64, usize)>,
}

impl PathWalk {
    /// The path of `d` (a dirent after the root).
    pub fn path_of(&mut self, tree: &crate::tree::Tree, d: &crate::tree::Dirent) -> &[u8] {
        if self.stack.is_empty() {
            self.stack.push((crate::tree::ROOT_INO, 0));
        }
        while self.stack.last().is_some_and(|t| t.0 != d.parent) {
            self.stack.pop();
        }
        if self.stack.is_empty() {
            // Not below the current path (the format only asks parents to
            // come first): rebuild it from the parent's chain.
            self.stack.push((crate::tree::ROOT_INO, 0));
            self.path.clear();
            for ino in tree.dir_chain(d.parent) {
                if !self.path.is_empty() {
                    self.path.push(b'/');
                }
                self.path.extend_from_slice(&tree.primary(ino).name);
                self.stack.push((ino, self.path.len()));
            }
        }
        let len = self.stack.last().expect("the root at least").1;
        self.path.truncate(len);
        if !self.path.is_empty() {
            self.path.push(b'/');
        }
        self.path.extend_from_slice(&d.name);
        if tree.inode(d.ino).kind == Kind::Dir && std::ptr::eq(tree.primary(d.ino), d) {
            self.stack.push((d.ino, self.path.len()));
        }
        &self.path
    }
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
    // The oldest stream given: a level-0 full image starts the history; a
    // full image of a higher level (a synthetic full from coalesce or a
    // mirror) has none before it; an increment whose base was not given
    // knows only its own blocks.
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
            exact: h.full && h.snapshot.level == 0,
        },
    }
}
