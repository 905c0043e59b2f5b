//! `snapdump history`: every snapshot in which a file changed, from a set of
//! streams or from the streams a catalog recorded.
//!
//! Only metadata and images are read: a change of contents shows as block
//! pointers that moved or VBNs the snapshot's stream carries (see
//! [`super::changes`]), so the history of a file across many large dumps
//! costs a few metadata sections.

use super::chain::{Link, StreamSet};
use super::changes::{entry_change, PathIndex, Relation, Side};
use super::list::side;
use crate::catalog::Catalog;
use crate::names::escape;
use crate::report::Report;
use crate::stream::header::SnapshotRef;
use crate::stream::reader::Digest;
use crate::target::select::normalize;
use crate::tree::Kind;
use anyhow::{bail, Result};
use serde::Serialize;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Where the snapshots come from.
pub enum HistorySource {
    /// Streams named on the command line.
    Streams(Vec<crate::media::Input>),
    /// The streams a catalog recorded for the source holding the path.
    Catalog(PathBuf),
    /// An incremental mirror and its base (one stream): the base's
    /// snapshot and the mirror's newest, whose changed blocks are those
    /// the mirror holds.
    Mirror(Box<crate::mirror::Mirror>, Vec<crate::media::Input>),
}

/// One snapshot as the history reads it: from a stream, or a mirror's
/// newest (its tree, and the VBNs it holds apart from its base).
struct View<'a> {
    snapshot: &'a SnapshotRef,
    base: Option<&'a SnapshotRef>,
    full: bool,
    name: String,
    side: Side<'a>,
}

impl<'a> View<'a> {
    fn of(l: &'a Link) -> View<'a> {
        View {
            snapshot: &l.header.snapshot,
            base: l.header.base.as_ref(),
            full: l.header.full,
            name: l.name.clone(),
            side: side(l),
        }
    }
}

/// One snapshot in which the entry changed.
#[derive(Serialize)]
pub struct Version {
    /// The snapshot.
    pub snapshot: SnapshotRef,
    /// The stream it was read from.
    pub stream: String,
    /// "added", "modified", "attributes", "type", "deleted", or "present"
    /// (the oldest stream given is an increment: only its own blocks are
    /// known to have changed).
    pub change: &'static str,
    /// Attributes that changed.
    pub attributes: Vec<&'static str>,
    /// File blocks whose contents changed, as `[first, count]` runs.
    pub changed_blocks: Vec<(u64, u64)>,
    /// Number of changed blocks.
    pub changed_block_count: u64,
    /// The entry's type in this snapshot (absent when deleted).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// Its size in this snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Its modification time in this snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtime: Option<String>,
}

/// The history of one path.
#[derive(Serialize)]
pub struct History {
    /// Always "history".
    pub command: &'static str,
    /// The source the streams were dumped from.
    pub source: String,
    /// The path, relative to the source.
    pub path: String,
    /// Snapshots read, oldest first.
    pub snapshots: Vec<SnapshotRef>,
    /// Snapshots in which the entry changed, oldest first.
    pub versions: Vec<Version>,
}

/// Runs `snapdump history`.
pub fn history(from: &HistorySource, path: &str, report: &Report) -> Result<History> {
    let inputs: Vec<crate::media::Input> = match from {
        HistorySource::Streams(v) | HistorySource::Mirror(_, v) => v.clone(),
        HistorySource::Catalog(root) => catalog_streams(root, path, report)?
            .iter()
            .map(|s| crate::media::Input::plain(s))
            .collect::<Result<_>>()?,
    };
    let set = match from {
        HistorySource::Mirror(m, _) => super::reintegrate::base_of(m, &inputs)?.set,
        _ => StreamSet::open(&inputs, Digest::Skip)?,
    };
    let source = set.links[0].header.source_path.clone();
    let rel = relative(path, &source);
    let mut order: Vec<&Link> = set.links.iter().collect();
    order.sort_by_key(|l| (l.header.snapshot.id, l.header.snapshot.time));
    let mut views: Vec<View> = order.iter().map(|l| View::of(l)).collect();
    let held;
    if let HistorySource::Mirror(m, _) = from {
        let s = &m.state;
        held = s.held_vbns();
        if s.newest.uuid != s.base.uuid {
            views.push(View {
                snapshot: &s.newest,
                base: Some(&s.base),
                full: false,
                name: format!("mirror {}", m.dir.display()),
                side: Side {
                    tree: &s.tree,
                    carried: &held,
                    block_size: s.block_size as u64,
                },
            });
        }
    }
    let indexes: Vec<PathIndex> = views.iter().map(|v| PathIndex::new(v.side.tree)).collect();
    let mut versions = Vec::new();
    for k in 0..views.len() {
        let cur = &views[k];
        let prev = (k > 0).then(|| (views[k - 1].side, &indexes[k - 1]));
        let rel_kind = if k > 0 {
            Relation::between(views[k - 1].snapshot, views[k - 1].base, cur.base)
        } else {
            Relation::Other
        };
        let mut change = entry_change(&rel, prev, (cur.side, &indexes[k]), rel_kind);
        let now = indexes[k].get(&rel).map(|i| cur.side.tree.inode(i));
        if k == 0 && !cur.full {
            // No earlier snapshot: only the blocks this increment carries
            // are known to have changed.
            change = now.map(|i| {
                let blocks: Vec<(u64, u64)> = i
                    .extents
                    .iter()
                    .flat_map(|x| {
                        cur.side
                            .carried
                            .split(x.vbn, x.count)
                            .into_iter()
                            .filter(|p| p.2)
                            .map(move |p| (x.block + (p.0 - x.vbn), p.1))
                    })
                    .collect();
                super::changes::Change {
                    what: "present",
                    attributes: Vec::new(),
                    blocks,
                }
            });
        }
        let Some(change) = change else { continue };
        versions.push(Version {
            snapshot: cur.snapshot.clone(),
            stream: cur.name.clone(),
            change: change.what,
            changed_block_count: change.blocks.iter().map(|b| b.1).sum(),
            attributes: change.attributes,
            changed_blocks: change.blocks,
            kind: now.map(|i| i.kind.name()),
            size: now.filter(|i| i.kind != Kind::Dir).map(|i| i.size),
            mtime: now.map(|i| i.attrs.mtime.rfc3339_nanos()),
        });
    }
    if versions.is_empty() {
        report.warn(&rel, "not in any of the snapshots read");
    }
    Ok(History {
        command: "history",
        source: escape(&source),
        path: escape(&rel),
        snapshots: views.iter().map(|v| v.snapshot.clone()).collect(),
        versions,
    })
}

/// The path relative to the dump's root: an absolute path inside the
/// source loses the source's prefix; anything else is taken as relative.
fn relative(path: &str, source: &[u8]) -> Vec<u8> {
    let raw = path.as_bytes();
    let mut n = normalize(path);
    if raw.starts_with(b"/") {
        if let Some(rest) = raw.strip_prefix(source) {
            if rest.is_empty() || rest.starts_with(b"/") {
                n = normalize(&String::from_utf8_lossy(rest));
            }
        }
    }
    // The source's root itself is the dump's root entry.
    if n.is_empty() {
        b".".to_vec()
    } else {
        n
    }
}

/// The streams a catalog recorded for the source that holds `path` (an
/// absolute path, or relative to the current directory), those that are
/// still where the dump wrote them.
fn catalog_streams(root: &std::path::Path, path: &str, report: &Report) -> Result<Vec<String>> {
    let abs =
        std::path::absolute(path).map_err(|e| anyhow::anyhow!("cannot resolve {path}: {e}"))?;
    let abs = abs.as_os_str().as_bytes();
    let states = Catalog::list_all(root)?.loaded(report, "its source's streams are not looked for");
    let state = states
        .iter()
        .filter(|s| {
            let p = &s.source_path[..];
            abs.starts_with(p) && (abs.len() == p.len() || abs[p.len()] == b'/' || p == b"/")
        })
        .max_by_key(|s| s.source_path.len());
    let Some(state) = state else {
        bail!(
            "{path} is in none of the sources recorded in catalog {}; give the streams with -f",
            root.display()
        );
    };
    let mut out = Vec::new();
    for s in &state.snapshots {
        let usable = s.output != "-" && std::fs::metadata(&s.output).is_ok_and(|m| m.is_file());
        if !usable {
            report.warn(
                s.output.as_bytes(),
                format!(
                    "stream of snapshot {} is not available as a file; its changes are not shown",
                    s.snap.id
                ),
            );
            continue;
        }
        match crate::media::Input::plain(&s.output)
            .and_then(|i| StreamSet::open(&[i], Digest::Skip))
        {
            Ok(one) if one.links[0].header.snapshot.uuid == s.snap.uuid => {
                out.push(s.output.clone())
            }
            Ok(_) => report.warn(
                s.output.as_bytes(),
                format!(
                    "now holds another stream than snapshot {}; skipped",
                    s.snap.id
                ),
            ),
            Err(e) => report.warn(s.output.as_bytes(), format!("{e:#}; skipped")),
        }
    }
    if out.is_empty() {
        bail!(
            "none of the streams catalog {} recorded for {} is available; give the streams with -f",
            root.display(),
            escape(&state.source_path)
        );
    }
    Ok(out)
}
