//! Walking a source tree to build the metadata of a new snapshot.
//!
//! The walk is descriptor-based (every directory is opened relative to its
//! parent with `O_NOFOLLOW`), so it reaches names deeper than PATH_MAX and
//! never follows a symlink out of the source. It reads no file data: regular
//! files are opened only to find their data regions (SEEK_DATA/SEEK_HOLE).
//! Anything that cannot be read is reported and left out; nothing else is
//! affected.

use crate::fsx::{self, xattr, AsFdBorrow};
use crate::report::Report;
use crate::tree::{Extent, Inode, Kind, SourceKey, Tree};
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::os::fd::BorrowedFd;
use std::path::Path;
use xxhash_rust::xxh3::xxh3_64;

/// Name of the restore state directory; never dumped at a source's root,
/// so a restored tree can be dumped again cleanly.
pub const RESTORE_STATE_DIR: &[u8] = b".snapdump-restore";

/// What to leave out of a scan, and what the previous snapshot knew.
#[derive(Default)]
pub struct ScanOptions<'a> {
    /// Block size the extents are expressed in.
    pub block_size: u64,
    /// (st_dev, st_ino) of entries never to record: the stream being
    /// written, the catalog directory.
    pub exclude: HashSet<(u64, u64)>,
    /// The newest snapshot's metadata: a regular file whose stat matches its
    /// previous version there is not even opened (its data regions and
    /// xattrs cannot have changed without changing its ctime).
    pub prev: Option<&'a Tree>,
    /// Enter directories on other file systems than the source's (mount
    /// points below it). Off by default, as dump(8) and `tar
    /// --one-file-system`: a dump of `/` must not take in `/proc`, a
    /// tmpfs or another disk unasked.
    pub cross_mounts: bool,
    /// Whether `prev` records file flags (a catalog from before they were
    /// recorded does not: an unchanged file's flags are then read).
    pub prev_has_flags: bool,
    /// The exclusion rules of this scan (None: nothing left out).
    pub rules: Option<&'a crate::rules::Matcher>,
    /// What the change tracker saw change since `prev` was taken: with it,
    /// the scan copies `prev` and stats only what the tracker names (no
    /// walk). Needs `prev`, taken under the same rules.
    pub tracked: Option<&'a Changed<'a>>,
}

/// Entries the change tracker saw change, by source inode number.
pub struct Changed<'a> {
    /// Directories whose entries changed (those are listed again).
    pub dirs: &'a HashMap<u64, HashSet<Vec<u8>>>,
    /// Inodes whose metadata or data changed (those are stat-ed again).
    pub inodes: &'a HashSet<u64>,
}

/// The previous snapshot's directories: children by name, directories by
/// source identity.
struct PrevDirs {
    children: HashMap<u64, Vec<usize>>,
    dirs_by_key: HashMap<(u64, u64), u64>,
}

impl PrevDirs {
    fn new(tree: &Tree) -> Self {
        let mut children: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, d) in tree.dirents.iter().enumerate().skip(1) {
            children.entry(d.parent).or_default().push(i);
        }
        let dirs_by_key = tree
            .inodes
            .iter()
            .filter(|i| i.kind == Kind::Dir)
            .map(|i| ((i.src.dev, i.src.ino), i.ino))
            .collect();
        PrevDirs {
            children,
            dirs_by_key,
        }
    }
}

/// Finds the previous version of a regular file: by source identity
/// (follows renames and hard links), else by path (follows a source moved
/// to new inodes or another disk).
pub struct PrevIndex<'a> {
    tree: &'a Tree,
    by_key: HashMap<(u64, u64), u64, BuildHasherDefault<xxhash_rust::xxh3::Xxh3Default>>,
    /// XXH3 of each file's path to its inode, built on the first file not
    /// found by its key (a copied or restored source, or a new file): an
    /// unchanged tree never needs the paths. Hashes, not paths: a million
    /// paths held as keys cost some 100 MB; a hit is checked against the
    /// tree's own path.
    by_path:
        std::cell::OnceCell<HashMap<u64, u64, BuildHasherDefault<xxhash_rust::xxh3::Xxh3Default>>>,
}

impl<'a> PrevIndex<'a> {
    /// Indexes the regular files of `tree`.
    pub fn new(tree: &'a Tree) -> Self {
        let mut by_key = HashMap::with_capacity_and_hasher(tree.inodes.len(), Default::default());
        for i in tree.inodes.iter().filter(|i| i.kind == Kind::File) {
            by_key.insert((i.src.dev, i.src.ino), i.ino);
        }
        PrevIndex {
            tree,
            by_key,
            by_path: std::cell::OnceCell::new(),
        }
    }
    /// The previous version of the file at `path` with source key `key`.
    pub fn find(&self, key: (u64, u64), path: &[u8]) -> Option<&'a Inode> {
        self.find_with(key, || path.to_vec())
    }
    /// As `find`, with the path made only when the key is not found (most
    /// files keep their inode, and a path costs a walk up the tree).
    pub fn find_with(&self, key: (u64, u64), path: impl FnOnce() -> Vec<u8>) -> Option<&'a Inode> {
        if let Some(ino) = self.by_key.get(&key) {
            return Some(self.tree.inode(*ino));
        }
        let by_path = self.by_path.get_or_init(|| {
            let files = self.tree.inodes.iter().filter(|i| i.kind == Kind::File);
            let mut m = HashMap::with_capacity_and_hasher(self.by_key.len(), Default::default());
            for i in files {
                // The first of two paths with one hash keeps it; the other
                // is then found by its key only (and read whole if not).
                m.entry(xxh3_64(&self.tree.path(i.ino))).or_insert(i.ino);
            }
            m
        });
        let path = path();
        let ino = *by_path.get(&xxh3_64(&path))?;
        (self.tree.path(ino) == path).then(|| self.tree.inode(ino))
    }
}

/// Whether a file's stat says it is untouched since its previous version
/// was recorded. A zero recorded ctime marks a file that was unstable when
/// last read (changed while read, or changed too recently to trust).
pub fn stat_unchanged(f: &Inode, g: &Inode) -> bool {
    f.size == g.size
        && f.attrs.mtime == g.attrs.mtime
        && f.attrs.ctime == g.attrs.ctime
        && g.attrs.ctime != crate::tree::Time::default()
        && f.src == g.src
}

struct Walker<'a> {
    tree: Tree,
    links: HashMap<(u64, u64), u64>,
    opts: &'a ScanOptions<'a>,
    prev: Option<PrevIndex<'a>>,
    report: &'a Report,
    path: Vec<u8>,
    /// The source's file system (`st_dev` of its root).
    root_dev: u64,
    /// With a tracker: the previous snapshot's directories.
    prev_dirs: Option<PrevDirs>,
}

/// Open flags for regular files: never follow a link, never block on a
/// fifo swapped in, and leave atimes alone where permitted (dump never
/// modifies the source).
pub const FILE_OPEN_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;

/// Opens a regular file for reading without touching its atime when the
/// kernel allows it (O_NOATIME needs ownership or CAP_FOWNER).
pub fn open_file(dir: BorrowedFd, name: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    match fsx::openat(dir, name, FILE_OPEN_FLAGS | libc::O_NOATIME, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            fsx::openat(dir, name, FILE_OPEN_FLAGS, 0)
        }
        r => r,
    }
}

/// Scans the directory tree at `root` into a [`Tree`] whose extents carry
/// VBN 0 (VBNs are assigned by the dump).
pub fn scan(root: &Path, opts: &ScanOptions, report: &Report) -> Result<Tree> {
    let fd = fsx::open_dir_path(root)
        .with_context(|| format!("cannot open source {}", root.display()))?;
    let st = fsx::fstat(fd.as_fd_borrow())?;
    let (kind, attrs) = fsx::attrs_of(&st);
    if kind != Some(Kind::Dir) {
        bail!("source {} is not a directory", root.display());
    }
    let mut w = Walker {
        // About the previous tree's size: grown by doubling, a large
        // tree is copied and faulted in again and again.
        tree: Tree::with_capacity(
            opts.prev
                .map_or(0, |p| p.dirents.len() + p.dirents.len() / 16),
        ),
        links: HashMap::new(),
        opts,
        prev: opts.prev.map(PrevIndex::new),
        report,
        path: Vec::new(),
        root_dev: st.st_dev,
        prev_dirs: match (opts.tracked, opts.prev) {
            (Some(_), Some(prev)) => Some(PrevDirs::new(prev)),
            _ => None,
        },
    };
    let mut inode = Inode::new(0, Kind::Dir, attrs);
    inode.src = SourceKey {
        dev: st.st_dev,
        ino: st.st_ino,
    };
    inode.xattrs = w.xattrs(fd.as_fd_borrow(), b"");
    w.flags(fd.as_fd_borrow(), &mut inode);
    let key = (st.st_dev, st.st_ino);
    let ino = w.tree.push_inode(0, Vec::new(), inode);
    let prev_root = w
        .prev_dirs
        .as_ref()
        .and_then(|p| p.dirs_by_key.get(&key).copied());
    match prev_root {
        Some(prev) => w.walk_tracked(fd.as_fd_borrow(), prev, ino, true),
        None => w.walk(fd.as_fd_borrow(), ino, true),
    }
    Ok(w.tree)
}

impl Walker<'_> {
    fn warn(&self, msg: String) {
        let p = if self.path.is_empty() {
            b".".to_vec()
        } else {
            self.path.clone()
        };
        self.report.warn(&p, msg);
    }

    fn xattrs(&self, dir: BorrowedFd, name: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        match xattr::list(dir, name) {
            Ok(x) => x,
            Err(e) => {
                self.warn(format!(
                    "cannot read extended attributes: {e}; recorded without them"
                ));
                Vec::new()
            }
        }
    }

    /// Records the file flags and project id of an open file or directory.
    fn flags(&self, fd: BorrowedFd, inode: &mut Inode) {
        let got = fsx::flags::get(fd).and_then(|f| Ok((f, fsx::flags::project(fd)?)));
        match got {
            Ok((flags, projid)) => {
                inode.flags = flags;
                inode.projid = projid;
            }
            Err(e) => self.warn(format!(
                "cannot read file flags: {e}; recorded without them"
            )),
        }
    }

    /// Appends `name` to the current path; returns the length to cut back to.
    fn push_name(&mut self, name: &[u8]) -> usize {
        let saved = self.path.len();
        if !self.path.is_empty() {
            self.path.push(b'/');
        }
        self.path.extend_from_slice(name);
        saved
    }

    fn walk(&mut self, dir: BorrowedFd, dir_ino: u64, is_root: bool) {
        let Some(names) = self.list(dir) else {
            return;
        };
        for name in names {
            if is_root && name == RESTORE_STATE_DIR {
                continue;
            }
            let saved = self.push_name(&name);
            self.entry(dir, dir_ino, name);
            self.path.truncate(saved);
        }
    }

    /// Copies directory `prev_dir` of the previous snapshot as directory
    /// `dir_ino` of this one, looking at the disk only where the tracker
    /// saw a change: a directory whose entries changed is listed again,
    /// an entry that is new or changed is stat-ed, the rest is the
    /// previous snapshot's record.
    fn walk_tracked(&mut self, dir: BorrowedFd, prev_dir: u64, dir_ino: u64, is_root: bool) {
        let (tracked, prev) = (self.opts.tracked.unwrap(), self.opts.prev.unwrap());
        let src = prev.inode(prev_dir).src;
        let children: Vec<usize> = self
            .prev_dirs
            .as_ref()
            .and_then(|p| p.children.get(&prev_dir).cloned())
            .unwrap_or_default();
        let by_name: HashMap<&[u8], usize> = children
            .iter()
            .map(|&i| (prev.dirents[i].name.as_slice(), i))
            .collect();
        let changed_names = tracked.dirs.get(&src.ino);
        // A changed tag file (CACHEDIR.TAG, an --exclude-if-present name)
        // changes what the listing keeps: list the directory again.
        let tag_changed = self.opts.rules.is_some_and(|m| {
            children.iter().any(|&i| {
                let d = &prev.dirents[i];
                m.is_tag_name(&d.name) && tracked.inodes.contains(&prev.inode(d.ino).src.ino)
            })
        });
        let names: Vec<Vec<u8>> = if changed_names.is_some() || tag_changed {
            match self.list(dir) {
                Some(n) => n,
                None => return,
            }
        } else {
            children
                .iter()
                .map(|&i| prev.dirents[i].name.clone())
                .collect()
        };
        for name in names {
            if is_root && name == RESTORE_STATE_DIR {
                continue;
            }
            let saved = self.push_name(&name);
            let prev_child = by_name.get(name.as_slice()).map(|&i| &prev.dirents[i]);
            let copy = prev_child.filter(|d| {
                let g = prev.inode(d.ino);
                let unstable =
                    g.kind == Kind::File && g.attrs.ctime == crate::tree::Time::default();
                // A mount point was recorded empty: once unmounted, what
                // is under it must be read.
                let mount_point = g.src.dev != self.root_dev;
                // chattr raises no event on every file system: directories
                // (few) are stat-ed and their flags read again; their
                // entries are still copied unless they changed.
                let dir = g.kind == Kind::Dir;
                !(dir
                    || changed_names.is_some_and(|n| n.contains(&name))
                    || tracked.inodes.contains(&g.src.ino)
                    || unstable
                    || mount_point
                    || tag_changed)
            });
            match copy {
                Some(d) => self.copy_entry(d.ino, dir_ino, name),
                None => self.entry(dir, dir_ino, name),
            }
            self.path.truncate(saved);
        }
    }

    /// Records entry `prev_ino` of the previous snapshot (not a directory:
    /// those are always stat-ed) unchanged.
    fn copy_entry(&mut self, prev_ino: u64, dir_ino: u64, name: Vec<u8>) {
        let prev = self.opts.prev.unwrap();
        let g = prev.inode(prev_ino);
        let key = (g.src.dev, g.src.ino);
        if self.opts.exclude.contains(&key) {
            return;
        }
        // A level that honours nodump leaves out what an earlier one kept.
        if self.opts.rules.is_some_and(|m| m.nodump) && g.flags & crate::fileflags::NODUMP != 0 {
            return;
        }
        if let Some(&ino) = self.links.get(&key) {
            self.tree.push_link(dir_ino, name, ino);
            return;
        }
        let mut inode = g.clone();
        inode.sums = crate::tree::Sums::default();
        for x in inode.extents.iter_mut() {
            x.vbn = 0;
        }
        let ino = self.tree.push_inode(dir_ino, name, inode);
        self.links.insert(key, ino);
    }

    /// The names of a directory, as the rules leave them.
    fn list(&self, dir: BorrowedFd) -> Option<Vec<Vec<u8>>> {
        let mut names = match fsx::read_dir_names(dir) {
            Ok(n) => n,
            Err(e) => {
                self.warn(format!(
                    "cannot read directory: {e}; its contents are not in this dump"
                ));
                return None;
            }
        };
        if let Some(m) = self.opts.rules {
            // A cache directory, or one holding a marker: only the marker
            // is kept (so a restore brings back the mark).
            let read_tag = |name: &[u8]| {
                let fd = open_file(dir, name).ok()?;
                let mut buf = vec![0u8; crate::rules::CACHEDIR_SIGNATURE.len()];
                let n = fsx::pread_full(fd.as_fd_borrow(), &mut buf, 0).ok()?;
                buf.truncate(n);
                Some(buf)
            };
            if let Some(tag) = m.tagged(&names, &read_tag) {
                names = vec![tag];
            }
        }
        Some(names)
    }

    fn entry(&mut self, dir: BorrowedFd, dir_ino: u64, name: Vec<u8>) {
        // Honouring nodump asks statx for the flag: one call for both.
        let stat = if self.opts.rules.is_some_and(|m| m.nodump) {
            match fsx::stat_nodump_at(dir, &name) {
                // statx refused (an old seccomp profile): no flag known.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                    fsx::stat_at(dir, &name).map(|st| (st, false))
                }
                r => r,
            }
        } else {
            fsx::stat_at(dir, &name).map(|st| (st, false))
        };
        let (st, nodump) = match stat {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.warn("vanished during the scan; not in this dump".into());
                return;
            }
            Err(e) => {
                self.warn(format!("cannot stat: {e}; not in this dump"));
                return;
            }
        };
        if self.opts.exclude.contains(&(st.st_dev, st.st_ino)) {
            return;
        }
        if let Some(m) = self.opts.rules {
            let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            if m.excluded(&self.path, is_dir) || (m.nodump && nodump) {
                return;
            }
        }
        let (kind, attrs) = fsx::attrs_of(&st);
        let Some(kind) = kind else {
            self.warn(format!(
                "unsupported file type {:o}; not in this dump",
                st.st_mode & libc::S_IFMT
            ));
            return;
        };
        if st.st_dev != self.root_dev && !self.opts.cross_mounts {
            // A mount point: the directory is recorded (a restore brings
            // back the place to mount on), not what is mounted there.
            let what = if kind == Kind::Dir {
                "recorded empty"
            } else {
                "not in this dump"
            };
            crate::progress::note(&format!(
                "{}: another file system is mounted here; {what} (--cross-mounts enters it)",
                crate::names::escape(&self.path)
            ));
            if kind == Kind::Dir {
                let mut inode = Inode::new(0, kind, attrs);
                inode.src = SourceKey {
                    dev: st.st_dev,
                    ino: st.st_ino,
                };
                self.tree.push_inode(dir_ino, name, inode);
            }
            return;
        }
        let key = (st.st_dev, st.st_ino);
        if kind != Kind::Dir && st.st_nlink > 1 {
            if let Some(&ino) = self.links.get(&key) {
                self.tree.push_link(dir_ino, name, ino);
                return;
            }
        }
        let mut inode = Inode::new(0, kind, attrs);
        inode.src = SourceKey {
            dev: st.st_dev,
            ino: st.st_ino,
        };
        match kind {
            Kind::Dir => match fsx::open_dir(dir, &name) {
                Ok(fd) => {
                    inode.xattrs = self.xattrs(fd.as_fd_borrow(), b"");
                    self.flags(fd.as_fd_borrow(), &mut inode);
                    let ino = self.tree.push_inode(dir_ino, name, inode);
                    let prev = self
                        .prev_dirs
                        .as_ref()
                        .and_then(|p| p.dirs_by_key.get(&key).copied());
                    match prev {
                        Some(prev) => self.walk_tracked(fd.as_fd_borrow(), prev, ino, false),
                        None => self.walk(fd.as_fd_borrow(), ino, false),
                    }
                }
                Err(e) => {
                    self.warn(format!("cannot open directory: {e}; recorded empty"));
                    inode.xattrs = self.xattrs(dir, &name);
                    self.tree.push_inode(dir_ino, name, inode);
                }
            },
            Kind::File => {
                inode.size = st.st_size as u64;
                let known = self
                    .prev
                    .as_ref()
                    .and_then(|p| p.find(key, &self.path))
                    .filter(|g| stat_unchanged(&inode, g));
                if let Some(g) = known {
                    // Untouched since the last dump: reuse what it recorded.
                    inode.extents = g.extents.iter().map(|x| Extent { vbn: 0, ..*x }).collect();
                    inode.xattrs = g.xattrs.clone();
                    if self.opts.prev_has_flags {
                        (inode.flags, inode.projid) = (g.flags, g.projid);
                    } else if let Ok(fd) = open_file(dir, &name) {
                        // The catalog predates file flags: read them once.
                        self.flags(fd.as_fd_borrow(), &mut inode);
                    }
                    let ino = self.tree.push_inode(dir_ino, name, inode);
                    if st.st_nlink > 1 {
                        self.links.insert(key, ino);
                    }
                    return;
                }
                let fd = match open_file(dir, &name) {
                    Ok(fd) => fd,
                    Err(e) => {
                        self.warn(format!("cannot open: {e}; not in this dump"));
                        return;
                    }
                };
                let st2 = match fsx::fstat(fd.as_fd_borrow()) {
                    Ok(s)
                        if (s.st_dev, s.st_ino) == key
                            && s.st_mode & libc::S_IFMT == libc::S_IFREG =>
                    {
                        s
                    }
                    _ => {
                        self.warn("replaced during the scan; not in this dump".into());
                        return;
                    }
                };
                let (_, attrs2) = fsx::attrs_of(&st2);
                inode.attrs = attrs2;
                inode.size = st2.st_size as u64;
                let bs = self.opts.block_size;
                match fsx::data_runs(fd.as_fd_borrow(), inode.size, bs) {
                    Ok(runs) => {
                        inode.extents = runs
                            .into_iter()
                            .map(|(block, count)| Extent {
                                block,
                                vbn: 0,
                                count,
                            })
                            .collect()
                    }
                    Err(e) => {
                        self.warn(format!("cannot map data regions: {e}; not in this dump"));
                        return;
                    }
                }
                inode.xattrs = self.xattrs(fd.as_fd_borrow(), b"");
                self.flags(fd.as_fd_borrow(), &mut inode);
                let ino = self.tree.push_inode(dir_ino, name, inode);
                if st.st_nlink > 1 {
                    self.links.insert(key, ino);
                }
            }
            Kind::Symlink => {
                match fsx::readlink_at(dir, &name) {
                    Ok(t) if !t.is_empty() => {
                        inode.size = t.len() as u64;
                        inode.target = t;
                        // readlink(2) updates a symlink's atime under the
                        // relatime rule and no flag prevents it, so record
                        // the atime as it stands after reading the target.
                        if let Ok(st2) = fsx::stat_at(dir, &name) {
                            if (st2.st_dev, st2.st_ino) == key {
                                inode.attrs.atime = fsx::attrs_of(&st2).1.atime;
                            }
                        }
                    }
                    Ok(_) => {
                        self.warn("empty symlink target; not in this dump".into());
                        return;
                    }
                    Err(e) => {
                        self.warn(format!("cannot read symlink: {e}; not in this dump"));
                        return;
                    }
                }
                inode.xattrs = self.xattrs(dir, &name);
                let ino = self.tree.push_inode(dir_ino, name, inode);
                if st.st_nlink > 1 {
                    self.links.insert(key, ino);
                }
            }
            _ => {
                inode.xattrs = self.xattrs(dir, &name);
                let ino = self.tree.push_inode(dir_ino, name, inode);
                if st.st_nlink > 1 {
                    self.links.insert(key, ino);
                }
            }
        }
    }
}

#[cfg(test)]
mod prev_index_tests {
    use super::*;
    use crate::tree::Attrs;

    #[test]
    fn a_file_not_found_by_its_key_is_found_by_its_path_and_only_by_it() {
        let mut t = Tree::default();
        let root = t.push_inode(0, Vec::new(), Inode::new(0, Kind::Dir, Attrs::default()));
        let dir = t.push_inode(
            root,
            b"b".to_vec(),
            Inode::new(0, Kind::Dir, Attrs::default()),
        );
        for (parent, name, key) in [(root, &b"a"[..], 10), (dir, b"c", 11)] {
            let mut f = Inode::new(0, Kind::File, Attrs::default());
            f.src = SourceKey { dev: 1, ino: key };
            t.push_inode(parent, name.to_vec(), f);
        }
        let index = PrevIndex::new(&t);
        assert_eq!(index.find((1, 11), b"elsewhere").unwrap().src.ino, 11);
        assert_eq!(index.find((2, 99), b"b/c").unwrap().src.ino, 11);
        assert_eq!(index.find((2, 99), b"a").unwrap().src.ino, 10);
        assert!(index.find((2, 99), b"b/d").is_none());
        assert!(
            index.find((2, 99), b"b").is_none(),
            "a directory is not a file's previous version"
        );
    }
}
