//! `restore -C`: compare a snapshot (a stream or a chain) with a live tree.
//!
//! Every chosen entry is looked up by name under the target: missing
//! entries, entries of another type, and attributes that differ (mode,
//! owner, mtime, size, symlink target, device number, xattrs, hard-link
//! structure) are reported; so are names on disk that the snapshot lacks.
//! Contents are compared block by block as the chain's data arrives (only
//! the records holding the files' blocks are read from seekable streams),
//! and a file's bytes where the snapshot has holes must be zero. atime and
//! ctime are not compared: reading changes the one, restoring the other.

use super::chain::{At, Chosen};
use super::changes::attr_changes;
use super::fetch::{deliver, Plan};
use crate::fsx::{self, dirstack::DirStack, xattr, AsFdBorrow};
use crate::names::escape;
use crate::report::{Report, Warning};
use crate::stream::header::SnapshotRef;
use crate::stream::reader::Digest;
use crate::target::select::{cut, mark_paths, normalize};
use crate::target::state::STATE_DIR;
use crate::tree::{Inode, Kind, Tree, ROOT_INO};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

/// What the user asked for.
pub struct CompareOptions {
    /// The streams (`-f`, any order).
    pub inputs: Vec<crate::media::Input>,
    /// The live tree to compare with.
    pub target: PathBuf,
    /// Paths to compare (relative to the dump's root); none = everything.
    pub paths: Vec<String>,
    /// The snapshot to compare (default: the newest given).
    pub at: Option<At>,
    /// Read every stream whole and check its digest list.
    pub digest: Digest,
    /// Compare the newest snapshot of this incremental mirror, whose base
    /// is the one input, instead of a chain's.
    pub mirror: Option<std::path::PathBuf>,
}

/// One difference between the snapshot and the live tree.
#[derive(Clone, Debug, Serialize)]
pub struct Difference {
    /// Path relative to the target, escaped.
    pub path: String,
    /// "missing", "extra", "type", "content", "links", or an attribute:
    /// "mode", "owner", "size", "mtime", "target", "xattrs", "flags",
    /// "device".
    pub what: &'static str,
    /// The value in the snapshot, when there is one to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The value on disk, when there is one to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
}

impl Difference {
    /// The one-line form: `path: what (stream ..., disk ...)`.
    pub fn line(&self) -> String {
        let what = match self.what {
            "missing" => "missing on disk".to_string(),
            "extra" => "on disk but not in the snapshot".to_string(),
            "content" => "contents differ".to_string(),
            w => match (&self.stream, &self.disk) {
                (Some(s), Some(d)) => format!("{w} differs: {s} in the snapshot, {d} on disk"),
                _ => format!("{w} differs"),
            },
        };
        format!("{}: {what}", self.path)
    }
}

/// The result of a comparison.
#[derive(Serialize)]
pub struct CompareSummary {
    /// Always "compare".
    pub command: &'static str,
    /// The snapshot compared.
    pub snapshot: SnapshotRef,
    /// The streams of its chain, full stream first.
    pub chain: Vec<String>,
    /// The live tree.
    pub target: String,
    /// Entries of the snapshot compared.
    pub entries: u64,
    /// Every difference, by path.
    pub differences: Vec<Difference>,
    /// Stream bytes read, all inputs together.
    pub stream_bytes_read: u64,
    /// Wall-clock seconds.
    pub elapsed_seconds: f64,
    /// Entries that could not be compared.
    pub warnings: Vec<Warning>,
}

/// Runs `restore -C`.
pub fn compare(opts: &CompareOptions, report: &Report) -> Result<CompareSummary> {
    let started = std::time::Instant::now();
    let mirror = match &opts.mirror {
        Some(dir) => Some(crate::mirror::Mirror::open(dir, crate::lock::Wait::Yes)?),
        None => None,
    };
    let Chosen {
        mut set,
        top,
        chain,
    } = match &mirror {
        Some(m) => super::reintegrate::base_of(m, &opts.inputs)?,
        None => Chosen::open(&opts.inputs, opts.digest, opts.at)?,
    };
    let top_tree = match &mirror {
        Some(m) => &m.state.tree,
        None => &set.links[top].front.tree,
    };
    let what = match &mirror {
        Some(m) => format!("snapshot {} of the mirror", m.state.newest.id),
        None => set.links[top].describe(),
    };
    let paths: Vec<Vec<u8>> = opts.paths.iter().map(|p| normalize(p)).collect();
    let (marks, missing) = mark_paths(top_tree, &paths);
    for m in &missing {
        report.warn(m, format!("not in {what}"));
    }
    let sel = cut(top_tree, &marks);
    check_target(&opts.target)?;
    let root = fsx::open_dir_path(&opts.target)
        .with_context(|| format!("cannot open {} to compare with", opts.target.display()))?;
    let mut w = Walker {
        tree: &sel.tree,
        ancestor: &sel.ancestor,
        whole: sel.whole,
        dirs: DirStack::new(root.try_clone()?),
        root,
        report,
        diffs: Vec::new(),
        present: vec![false; sel.tree.inodes.len() + 1],
        ids: vec![None; sel.tree.inodes.len() + 1],
        same_size: vec![false; sel.tree.inodes.len() + 1],
        found: vec![0; sel.tree.inodes.len() + 1],
    };
    w.walk()?;
    // Contents of the files present with the right type and size.
    let mut content = Content {
        differs: vec![false; sel.tree.inodes.len() + 1],
        open: None,
    };
    let bs = set.links[top].header.block_size as u64;
    let (plan, files) = {
        let files: Vec<(u64, &Inode)> = sel
            .files(top_tree)
            .filter(|(ino, _)| w.same_size[*ino as usize])
            .collect();
        let inos: Vec<u64> = files.iter().map(|f| f.0).collect();
        match &mirror {
            // The mirror's blocks are compared here; the others come from
            // the base.
            Some(m) => {
                let wants = super::reintegrate::from_mirror(m, files, |ino, off, data| {
                    if !content.differs[ino as usize] {
                        let same = content.matches(&mut w, ino, off, data)?;
                        content.differs[ino as usize] = !same;
                    }
                    Ok(())
                })?;
                (
                    Plan {
                        per_link: vec![wants],
                    },
                    inos,
                )
            }
            None => {
                let links: Vec<_> = chain.iter().map(|&i| &set.links[i]).collect();
                (Plan::new(&links, files)?, inos)
            }
        }
    };
    for (k, wants) in plan.per_link.into_iter().enumerate() {
        deliver(&mut set.links[chain[k]], wants, |want, off, data| {
            if !content.differs[want.ino as usize] {
                let same = content.matches(&mut w, want.ino, off, data)?;
                content.differs[want.ino as usize] = !same;
            }
            Ok(())
        })?;
    }
    for ino in files {
        let inode = w.tree.inode(ino);
        if !content.differs[ino as usize] && !content.zero_outside(&mut w, inode, bs)? {
            content.differs[ino as usize] = true;
        }
        if content.differs[ino as usize] {
            w.diff(ino, "content", None, None);
        }
    }
    let mut diffs = w.diffs;
    diffs.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.what.cmp(b.1.what)));
    Ok(CompareSummary {
        command: "compare",
        snapshot: match &mirror {
            Some(m) => m.state.newest.clone(),
            None => set.links[top].header.snapshot.clone(),
        },
        chain: chain.iter().map(|&i| set.links[i].name.clone()).collect(),
        target: opts.target.display().to_string(),
        entries: sel.tree.dirents.len() as u64,
        differences: diffs.into_iter().map(|(_, d)| d).collect(),
        stream_bytes_read: set.bytes_read(),
        elapsed_seconds: started.elapsed().as_secs_f64(),
        warnings: report.warnings(),
    })
}

/// Walks the chosen entries and compares their metadata.
struct Walker<'a> {
    tree: &'a Tree,
    ancestor: &'a [bool],
    whole: bool,
    root: OwnedFd,
    dirs: DirStack,
    report: &'a Report,
    /// (raw path for sorting, difference)
    diffs: Vec<(Vec<u8>, Difference)>,
    /// Inodes found on disk with the right type.
    present: Vec<bool>,
    /// (st_dev, st_ino) of each inode's first name on disk.
    ids: Vec<Option<(u64, u64)>>,
    /// Regular files whose size matches: their contents are compared.
    same_size: Vec<bool>,
    /// The dirent (index) through which each inode was found on disk.
    found: Vec<usize>,
}

impl Walker<'_> {
    fn diff(&mut self, ino: u64, what: &'static str, stream: Option<String>, disk: Option<String>) {
        let p = self.tree.path(ino);
        self.diff_path(p, what, stream, disk);
    }

    fn diff_path(
        &mut self,
        p: Vec<u8>,
        what: &'static str,
        stream: Option<String>,
        disk: Option<String>,
    ) {
        let path = escape(&p);
        self.diffs.push((
            p,
            Difference {
                path,
                what,
                stream,
                disk,
            },
        ));
    }

    fn walk(&mut self) -> Result<()> {
        let tree = self.tree;
        let mut children: HashMap<u64, HashSet<&[u8]>> = HashMap::new();
        for d in tree.dirents.iter().skip(1) {
            children.entry(d.parent).or_default().insert(&d.name[..]);
        }
        for (index, d) in tree.dirents.iter().enumerate() {
            let inode = tree.inode(d.ino);
            let st = if d.parent == 0 {
                fsx::fstat(self.root.as_fd())
            } else {
                if !self.present[d.parent as usize] {
                    continue;
                }
                match self.dirs.enter_in(tree, d.parent) {
                    Ok(dir) => fsx::stat_at(dir, &d.name),
                    Err(e) => {
                        self.report
                            .warn(&tree.path(d.parent), format!("cannot open directory: {e}"));
                        continue;
                    }
                }
            };
            let st = match st {
                Ok(st) => st,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.diff_path(tree.dirent_path(d), "missing", None, None);
                    continue;
                }
                Err(e) => {
                    self.report
                        .warn(&tree.dirent_path(d), format!("cannot stat: {e}"));
                    continue;
                }
            };
            let (kind, attrs) = fsx::attrs_of(&st);
            if kind != Some(inode.kind) {
                let disk = kind.map(|k| k.name()).unwrap_or("unknown");
                self.diff_path(
                    tree.dirent_path(d),
                    "type",
                    Some(inode.kind.name().into()),
                    Some(disk.into()),
                );
                continue;
            }
            let id = (st.st_dev, st.st_ino);
            if let Some(first) = self.ids[d.ino as usize] {
                // Another name of a hard-linked file.
                if first != id {
                    let p = tree.dirent_path(d);
                    let primary = escape(&tree.path(d.ino));
                    self.diff_path(
                        p,
                        "links",
                        Some(format!("a hard link of {primary}")),
                        Some("a separate file".into()),
                    );
                }
                continue;
            }
            self.ids[d.ino as usize] = Some(id);
            self.present[d.ino as usize] = true;
            self.found[d.ino as usize] = index;
            if self.ancestor[d.ino as usize] || (d.ino == ROOT_INO && !self.whole) {
                continue;
            }
            let mut disk = Inode::new(d.ino, inode.kind, attrs);
            disk.size = st.st_size as u64;
            if inode.kind == Kind::Symlink || inode.kind == Kind::Dir {
                disk.size = inode.size;
            }
            let mut extras = Vec::new();
            let mut warns = Vec::new();
            {
                let (dir, name): (std::os::fd::BorrowedFd, &[u8]) = if d.parent == 0 {
                    (self.root.as_fd_borrow(), b"")
                } else {
                    (self.dirs.enter_in(tree, d.parent)?, &d.name[..])
                };
                if inode.kind == Kind::Symlink {
                    disk.target = fsx::readlink_at(dir, name).unwrap_or_default();
                }
                disk.xattrs = match xattr::list(dir, name) {
                    Ok(x) => x,
                    Err(e) => {
                        warns.push(format!("cannot read extended attributes: {e}"));
                        inode.xattrs.clone()
                    }
                };
                if matches!(inode.kind, Kind::File | Kind::Dir) {
                    match fsx::flags::read_at(dir, name, inode.kind == Kind::Dir) {
                        Ok((f, p)) => (disk.flags, disk.projid) = (f, p),
                        Err(e) => {
                            warns.push(format!("cannot read file flags: {e}"));
                            (disk.flags, disk.projid) = (inode.flags, inode.projid);
                        }
                    }
                }
                if inode.kind == Kind::Dir {
                    let names = if name.is_empty() {
                        fsx::read_dir_names(dir)
                    } else {
                        fsx::open_dir(dir, name).and_then(|fd| fsx::read_dir_names(fd.as_fd()))
                    };
                    match names {
                        Ok(names) => {
                            let known = children.get(&d.ino);
                            // Restore's own state, and the empty lost+found
                            // of a fresh file system, are not differences.
                            let ignored = |n: &[u8]| {
                                d.ino == ROOT_INO
                                    && (n == STATE_DIR.as_bytes()
                                        || (n == b"lost+found" && empty_dir(dir, name, n)))
                            };
                            extras = names
                                .into_iter()
                                .filter(|n| known.is_none_or(|k| !k.contains(&n[..])))
                                .filter(|n| !ignored(n))
                                .collect();
                        }
                        Err(e) => warns.push(format!("cannot list directory: {e}")),
                    }
                }
            }
            for m in warns {
                self.report.warn(&tree.dirent_path(d), m);
            }
            let mut stream = inode.clone();
            stream.xattrs.sort();
            if d.ino == ROOT_INO {
                // A restore never makes its target immutable or
                // append-only: its restore state lives there; nor, as a
                // user other than root, unwritable to its owner.
                stream.flags &= !fsx::flags::LATE;
                stream.attrs.mode = crate::target::writer::root_mode(&stream);
            }
            for what in attr_changes(&stream, &disk) {
                let (s, k) = show(what, &stream, &disk);
                self.diff_path(tree.dirent_path(d), what, Some(s), Some(k));
            }
            if inode.kind == Kind::File && disk.size == inode.size {
                self.same_size[d.ino as usize] = true;
            }
            for n in extras {
                let mut p = Vec::new();
                if d.parent != 0 {
                    p = tree.dirent_path(d);
                    p.push(b'/');
                }
                p.extend_from_slice(&n);
                self.diff_path(p, "extra", None, None);
            }
        }
        Ok(())
    }
}

/// Whether `dir`/`name`/`child` is an empty directory.
fn empty_dir(dir: std::os::fd::BorrowedFd, name: &[u8], child: &[u8]) -> bool {
    let parent = if name.is_empty() {
        fsx::open_dir(dir, b".")
    } else {
        fsx::open_dir(dir, name)
    };
    parent
        .and_then(|p| fsx::open_dir(p.as_fd(), child))
        .and_then(|c| fsx::read_dir_names(c.as_fd()))
        .is_ok_and(|v| v.is_empty())
}

/// The snapshot's and the disk's value of an attribute, for display.
fn show(what: &str, s: &Inode, d: &Inode) -> (String, String) {
    let f = |i: &Inode| match what {
        "mode" => format!("{:04o}", i.attrs.mode),
        "owner" => format!("{}:{}", i.attrs.uid, i.attrs.gid),
        "size" => i.size.to_string(),
        "mtime" => i.attrs.mtime.rfc3339_nanos(),
        "target" => escape(&i.target),
        "device" => format!(
            "{}:{}",
            libc::major(i.attrs.rdev),
            libc::minor(i.attrs.rdev)
        ),
        "flags" if i.projid != 0 => {
            format!("{} project {}", fsx::flags::letters(i.flags), i.projid)
        }
        "flags" => fsx::flags::letters(i.flags),
        "xattrs" => i
            .xattrs
            .iter()
            .map(|(k, _)| escape(k))
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    };
    (f(s), f(d))
}

/// Compares file contents with the live files, one open file at a time.
struct Content {
    differs: Vec<bool>,
    open: Option<(u64, OwnedFd)>,
}

impl Content {
    fn file(&mut self, w: &mut Walker, ino: u64) -> Result<&OwnedFd> {
        if self.open.as_ref().map(|o| o.0) != Some(ino) {
            self.open = None;
            let d = &w.tree.dirents[w.found[ino as usize]];
            let tree = w.tree;
            let dir = w.dirs.enter_in(tree, d.parent)?;
            let fd = crate::scan::open_file(dir, &d.name)
                .with_context(|| format!("cannot open {}", escape(&w.tree.dirent_path(d))))?;
            self.open = Some((ino, fd));
        }
        Ok(&self.open.as_ref().expect("just opened").1)
    }

    /// Whether the live file holds `data` at `off`.
    fn matches(&mut self, w: &mut Walker, ino: u64, off: u64, data: &[u8]) -> Result<bool> {
        let fd = self.file(w, ino)?;
        let mut buf = vec![0u8; data.len()];
        let n = fsx::pread_full(fd.as_fd(), &mut buf, off)
            .with_context(|| format!("cannot read {}", escape(&w.tree.path(ino))))?;
        Ok(n == data.len() && buf == data)
    }

    /// Whether the live file is all zeros where the snapshot has holes.
    fn zero_outside(&mut self, w: &mut Walker, inode: &Inode, bs: u64) -> Result<bool> {
        let fd = self.file(w, inode.ino)?;
        let runs = fsx::data_runs(fd.as_fd(), inode.size, bs)
            .with_context(|| format!("cannot map {}", escape(&w.tree.path(inode.ino))))?;
        let extents =
            crate::runs::RunSet::from_runs(inode.extents.iter().map(|x| (x.block, x.count)));
        let mut buf = Vec::new();
        for (start, count) in runs {
            for (s, c, covered) in extents.split(start, count) {
                if covered {
                    continue;
                }
                let from = s * bs;
                let to = ((s + c) * bs).min(inode.size);
                let mut off = from;
                while off < to {
                    let n = ((to - off) as usize).min(1 << 20);
                    buf.resize(n, 0);
                    let got = fsx::pread_full(fd.as_fd(), &mut buf, off)?;
                    if buf[..got].iter().any(|&b| b != 0) {
                        return Ok(false);
                    }
                    if got < n {
                        break;
                    }
                    off += n as u64;
                }
            }
        }
        Ok(true)
    }
}

/// Refuses a comparison target that does not exist, with a clear message.
pub fn check_target(target: &std::path::Path) -> Result<()> {
    match std::fs::metadata(target) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("{} is not a directory to compare with", target.display()),
        Err(e) => bail!("cannot compare with {}: {e}", target.display()),
    }
}
