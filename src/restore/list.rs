//! `restore -t`: list a stream's entries from its metadata section alone;
//! the data that follows is never read.

use super::check::decode_meta;
use super::open_stream;
use crate::names::{escape, unescape};
use crate::report::Report;
use crate::stream::header::StreamHeader;
use crate::stream::reader::Digest;
use crate::stream::record::RecordKind;
use crate::tree::{Kind, Tree, TreeBuilder};
use anyhow::{anyhow, bail, Result};
use serde::Serialize;

/// One listed entry (`--json`).
#[derive(Serialize)]
pub struct ListEntry {
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
    /// Snapshot id of the stream (the newest snapshot the entry is in).
    pub snapshot: u64,
}

/// The `--json` listing.
#[derive(Serialize)]
pub struct Listing {
    /// Always "list".
    pub command: &'static str,
    /// The stream header.
    pub header: StreamHeader,
    /// The entries, depth-first.
    pub entries: Vec<ListEntry>,
}

/// Reads the metadata section of `input`.
pub fn read_tree(input: &str) -> Result<(StreamHeader, Tree)> {
    let mut r = open_stream(input, Digest::Skip)?;
    let mut b = TreeBuilder::new(r.header.block_size as u64);
    let mut seen = 0u64;
    while seen < r.header.entries {
        let Some(rec) = r.next_record()? else { break };
        if rec.kind != RecordKind::Meta {
            bail!(
                "{}: metadata section ends after {seen} of {} entries",
                r.name(),
                r.header.entries
            );
        }
        seen += decode_meta(&mut b, &rec.raw).map_err(|e| {
            anyhow!(
                "{}: record {} at byte {}: {e:#}",
                r.name(),
                rec.seq,
                rec.offset
            )
        })?;
    }
    Ok((r.header.clone(), b.finish()?))
}

/// Lists `input`; with `paths`, only those entries and what lies below them.
pub fn list(input: &str, paths: &[String], report: &Report) -> Result<Listing> {
    let (header, tree) = read_tree(input)?;
    let wanted: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| {
            let b = unescape(p);
            let t = b.strip_prefix(b"./").unwrap_or(&b).to_vec();
            t.strip_suffix(b"/").map(|s| s.to_vec()).unwrap_or(t)
        })
        .collect();
    let mut found = vec![false; wanted.len()];
    let mut entries = Vec::new();
    for d in tree.dirents.iter().skip(1) {
        let path = tree.dirent_path(d);
        if !wanted.is_empty() {
            let hit = wanted.iter().position(|w| {
                path == *w || (path.len() > w.len() && path.starts_with(w) && path[w.len()] == b'/')
            });
            match hit {
                Some(i) => found[i] = true,
                None => continue,
            }
        }
        let i = tree.inode(d.ino);
        entries.push(ListEntry {
            path: escape(&path),
            kind: i.kind.name(),
            size: i.size,
            mode: format!("{:04o}", i.attrs.mode),
            uid: i.attrs.uid,
            gid: i.attrs.gid,
            mtime: i.attrs.mtime.rfc3339(),
            target: (i.kind == Kind::Symlink).then(|| escape(&i.target)),
            snapshot: header.snapshot.id,
        });
    }
    for (i, f) in found.iter().enumerate() {
        if !*f {
            report.warn(&wanted[i], "not in the stream");
        }
    }
    Ok(Listing {
        command: "list",
        header,
        entries,
    })
}
