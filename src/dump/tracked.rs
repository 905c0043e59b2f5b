//! Whether a dump may build its increment from the change tracker, and the
//! check that it found what a walk finds (`--verify-tracker`).

use crate::catalog::CatalogState;
use crate::track::{self, Swap, Tracked};
use crate::tree::{Kind, Tree};
use serde::Serialize;
use std::path::Path;

/// How a dump uses a running tracker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrackerMode {
    /// Use it when it can be trusted, else walk (saying why).
    #[default]
    Auto,
    /// Never ask it (`--no-tracker`): walk.
    Off,
    /// Do both and fail unless they agree (`--verify-tracker`).
    Verify,
}

/// The `tracker` part of a dump's `--json` summary.
#[derive(Serialize, Clone, Debug, Default)]
pub struct TrackerSummary {
    /// The epoch this snapshot was taken at (none when the tracker did not
    /// answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Whether the increment was built from the tracker's changes.
    pub used: bool,
    /// Why not, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub walked_because: Option<String>,
    /// With `--verify-tracker`: the walk agreed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

/// Swaps the tracker's maps, if one runs: first, before anything of the
/// tree is read, so every later change lands in the next epoch. The
/// second half says why not, when a tracker was expected (it died, or its
/// swap failed), after a warning saying so.
pub fn swap(mode: TrackerMode, dir: &Path) -> (Option<Swap>, Option<String>) {
    if mode == TrackerMode::Off {
        return (None, None);
    }
    let why = match track::swap(dir) {
        Ok(None) => {
            // None answers: a tracker that ran and died says so.
            let Ok(pid) = std::fs::read_to_string(dir.join("pid")) else {
                return (None, None);
            };
            format!(
                "the change tracker of this source (pid {}) is gone",
                pid.trim()
            )
        }
        Ok(s) => return (s, None),
        Err(e) => format!("{e:#}"),
    };
    let hint = if why.ends_with("is gone") {
        " (`snapdump track start` it again)"
    } else {
        ""
    };
    crate::progress::println_err(&format!(
        "snapdump: warning: {why}; this dump walks the tree{hint}"
    ));
    (None, Some(why))
}

/// The changes since the newest snapshot, when they can be trusted.
#[allow(clippy::too_many_arguments)]
pub fn changes(
    swap: &Swap,
    dir: &Path,
    state: &CatalogState,
    source: &Path,
    level: u8,
    rules_same: bool,
    cross_mounts: bool,
) -> Result<Tracked, String> {
    let newest = state
        .snapshots
        .last()
        .ok_or_else(|| "there is no earlier snapshot".to_string())?;
    if state.tree.is_none() {
        return Err("the catalog holds no tree to start from".into());
    }
    if !rules_same {
        return Err("the exclusion rules changed".into());
    }
    if let Some(r) = &state.rules {
        // Entries flagged nodump are known by their recorded flags only
        // when flags were recorded; one kept then is left out now.
        let now_honoured = level >= r.nodump_level;
        if now_honoured && newest.snap.level < r.nodump_level && !state.flags_recorded {
            return Err("the catalog predates recorded file flags".into());
        }
        if !now_honoured && newest.snap.level >= r.nodump_level {
            return Err(
                "the nodump flag counted at the last level and does not at this one".into(),
            );
        }
    }
    if cross_mounts || mounts_inside(source) {
        return Err("file systems are mounted inside the source".into());
    }
    let fstype = track::fs_type(source).map_err(|e| format!("{e:#}"))?;
    Tracked::since(dir, newest.snap.id, swap, &fstype)
}

/// Whether anything is mounted below `source` (mounts are not tracked).
fn mounts_inside(source: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    let src = source.as_os_str().as_encoded_bytes();
    table.lines().any(|l| {
        let Some(point) = l.split(' ').nth(4) else {
            return false;
        };
        let point = unescape_mount(point);
        point.len() > src.len()
            && point.starts_with(src)
            && (src.ends_with(b"/") || point[src.len()] == b'/')
    })
}

fn unescape_mount(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The first differences between a tree built from the tracker and the
/// walked one (after planning: block pointers and checksums included).
/// Access times are left out: reading a file moves them without an event.
pub fn differences(
    tracked: &Tree,
    walked: &Tree,
    sums: &crate::catalog::pack::SumsReader,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let index = |t: &Tree| {
        t.dirents
            .iter()
            .map(|d| (t.dirent_path(d), d.ino))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (a, b) = (index(tracked), index(walked));
    for (path, &wi) in &b {
        let name = crate::names::escape(path);
        let Some(&ti) = a.get(path) else {
            out.push(format!("{name}: missed (not in the tracked tree)"));
            continue;
        };
        let (t, w) = (tracked.inode(ti), walked.inode(wi));
        let mut tt = t.clone();
        tt.attrs.atime = w.attrs.atime;
        tt.ino = w.ino;
        if tt.kind != w.kind
            || tt.attrs != w.attrs
            || tt.size != w.size
            || tt.xattrs != w.xattrs
            || tt.target != w.target
            || tt.flags != w.flags
            || tt.projid != w.projid
            || tt.src != w.src
        {
            out.push(format!("{name}: metadata differs"));
        } else if w.kind == Kind::File && tt.extents != w.extents {
            out.push(format!("{name}: data differs"));
        } else if w.kind == Kind::File {
            // A damaged catalog is its own error, not the tracker's miss.
            if sums.get(&tt.sums)? != sums.get(&w.sums)? {
                out.push(format!("{name}: data differs"));
            }
        }
        if out.len() >= 8 {
            return Ok(out);
        }
    }
    for path in a.keys() {
        if !b.contains_key(path) {
            out.push(format!(
                "{}: in the tracked tree but gone",
                crate::names::escape(path)
            ));
        }
        if out.len() >= 8 {
            break;
        }
    }
    Ok(out)
}
