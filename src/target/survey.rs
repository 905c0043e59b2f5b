//! What a restore target holds besides the snapshot its state records.
//!
//! Before an increment changes anything, every directory of the snapshot
//! the target holds (T0) is read: names T0 does not have are the user's
//! (or another program's) entries; T0 files whose size or modification time
//! differ were changed in the target; T0 entries that are gone, or of
//! another type, were removed or replaced. The apply keeps foreign entries
//! where the new snapshot (T1) still has their directory and the name is
//! free, refuses the others by name (or, with `--force`, replaces them,
//! naming each), and never builds on a changed or missing file.

use super::state::STATE_DIR;
use crate::fsx::{self, dirstack::DirStack};
use crate::tree::{Kind, Tree, ROOT_INO};
use anyhow::{anyhow, Result};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::os::fd::{BorrowedFd, OwnedFd};

/// An entry of the target that is not part of the snapshot it holds.
#[derive(Clone, Debug)]
pub struct Foreign {
    /// The T0 directory holding it.
    pub dir: u64,
    /// Its name there.
    pub name: Vec<u8>,
    /// The T1 directory at the same path, when T1 has one and the name is
    /// free in it: the entry is kept there.
    pub home: Option<u64>,
    /// It is a directory.
    pub is_dir: bool,
    /// It is the empty `lost+found` of a fresh file system at the target's
    /// root: replacing it loses nothing.
    pub empty_dir: bool,
    /// Its owner.
    pub uid: u32,
}

/// What the survey found.
#[derive(Default)]
pub struct Survey {
    /// Entries that are not T0's.
    pub foreign: Vec<Foreign>,
    /// T0 files whose size or modification time differ from T0's.
    pub changed: Vec<u64>,
    /// T0 inodes whose primary name is missing, or holds another type.
    pub missing: Vec<u64>,
    /// Owner and mode bits of each T0 inode found (by inode number).
    pub owner: Vec<Option<(u32, u32)>>,
    /// The attributes each T0 file was found with (by inode number).
    pub attrs: Vec<Option<crate::tree::Attrs>>,
    /// The extended attribute names each T0 file was found with.
    pub xattr_names: Vec<Option<Vec<Vec<u8>>>>,
    /// T0 files with more names than T0 gives them (a hard link made in
    /// the target or outside it): writing into them in place would change
    /// what those names show.
    pub shared: Vec<bool>,
}

/// Names of a tree's directories: (directory inode, name) to dirent index.
/// Borrows the names and hashes with XXH3 (not SipHash): a survey looks
/// up every entry of both trees, and a tree can hold millions.
pub struct Names<'a>(
    HashMap<(u64, &'a [u8]), usize, BuildHasherDefault<xxhash_rust::xxh3::Xxh3Default>>,
);

impl<'a> Names<'a> {
    /// Indexes `tree`'s dirents.
    pub fn new(tree: &'a Tree) -> Names<'a> {
        let mut map = HashMap::with_capacity_and_hasher(tree.dirents.len(), Default::default());
        for (i, d) in tree.dirents.iter().enumerate().skip(1) {
            map.insert((d.parent, &d.name[..]), i);
        }
        Names(map)
    }
    /// The dirent named `name` in directory `dir`.
    pub fn get(&self, dir: u64, name: &[u8]) -> Option<usize> {
        self.0.get(&(dir, name)).copied()
    }
}

/// For every T0 directory, the T1 directory at the same path (if any).
pub fn matching_dirs(t0: &Tree, t1: &Tree, t1_names: &Names) -> Vec<Option<u64>> {
    let mut out = vec![None; t0.inodes.len() + 1];
    out[ROOT_INO as usize] = Some(ROOT_INO);
    for d in t0.dirents.iter().skip(1) {
        if t0.inode(d.ino).kind != Kind::Dir {
            continue;
        }
        out[d.ino as usize] = out[d.parent as usize].and_then(|p| {
            t1_names
                .get(p, &d.name)
                .map(|i| t1.dirents[i].ino)
                .filter(|&i| t1.inode(i).kind == Kind::Dir)
        });
    }
    out
}

/// Whether a file on disk still looks as T0 recorded it: same size and
/// modification time (nanoseconds compared where the file system keeps
/// them).
pub(super) fn unchanged(st: &libc::stat, i: &crate::tree::Inode) -> bool {
    let m = i.attrs.mtime;
    st.st_size as u64 == i.size
        && st.st_mtime == m.sec
        && (st.st_mtime_nsec as u32 == m.nsec || st.st_mtime_nsec == 0)
}

/// Called for a T0 directory the process cannot read: `(parent, name,
/// inode, stat)`; may open it up, and returns whether to retry.
pub type OpenUp<'a> = &'a mut dyn FnMut(BorrowedFd, &[u8], u64, &libc::stat) -> Result<bool>;

/// How much a survey learns of the entries that are T0's.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Depth {
    /// Only whether each is still there with its kind (from the directory
    /// listing where the file system gives types): enough to find the
    /// foreign entries, one system call per directory rather than per
    /// entry.
    Names,
    /// Owner, mode, times and size of each (a stat per entry).
    Attrs,
    /// Those and each file's extended attribute names.
    Xattrs,
}

/// Reads the target against T0, to `depth`. `open_up(dir, name, ino, st)` is called
/// for a T0 directory the process cannot read (a non-root owner's mode
/// 000 directory): it may change the mode, and returns whether to retry.
pub fn survey(
    root: &OwnedFd,
    t0: &Tree,
    t1: &Tree,
    open_up: OpenUp,
    depth: Depth,
) -> Result<Survey> {
    let t0_names = Names::new(t0);
    let t1_names = Names::new(t1);
    let homes = matching_dirs(t0, t1, &t1_names);
    let mut out = Survey {
        owner: vec![None; t0.inodes.len() + 1],
        attrs: vec![None; t0.inodes.len() + 1],
        xattr_names: vec![None; t0.inodes.len() + 1],
        shared: vec![false; t0.inodes.len() + 1],
        ..Survey::default()
    };
    let mut names_of = vec![0u64; t0.inodes.len() + 1];
    for d in t0.dirents.iter().skip(1) {
        names_of[d.ino as usize] += 1;
    }
    if let Ok(st) = fsx::stat_at(std::os::fd::AsFd::as_fd(root), b"") {
        out.owner[ROOT_INO as usize] = Some((st.st_uid, st.st_mode & 0o7777));
    }
    let mut seen = vec![false; t0.dirents.len()];
    let mut walked = vec![false; t0.inodes.len() + 1];
    let mut gone = vec![false; t0.inodes.len() + 1];
    let mut dirs = DirStack::new(root.try_clone()?);
    let mut parents = DirStack::new(root.try_clone()?);
    let path = |ino: u64| crate::names::escape(&t0.path(ino));
    for (index, d) in t0.dirents.iter().enumerate() {
        let ino = d.ino;
        if t0.inode(ino).kind != Kind::Dir || gone[ino as usize] {
            continue;
        }
        if d.parent != 0 && gone[d.parent as usize] {
            gone[ino as usize] = true;
            continue;
        }
        if index > 0 && !seen[index] {
            // Its parent's listing did not hold it (counted there).
            gone[ino as usize] = true;
            continue;
        }
        if ino != ROOT_INO {
            let parent = parents.enter_in(t0, d.parent).map_err(|e| {
                anyhow!(
                    "cannot open directory {} of the target: {e}",
                    path(d.parent)
                )
            })?;
            let st = fsx::stat_at(parent, &d.name)
                .map_err(|e| anyhow!("cannot read {} in the target: {e}", path(ino)))?;
            if !fsx::is_root()
                && st.st_mode & 0o500 != 0o500
                && !open_up(parent, &d.name, ino, &st)?
            {
                return Err(anyhow!(
                    "cannot read directory {} of the target (mode {:04o}, owned by uid {}): make it readable, or apply the increment as root",
                    path(ino),
                    st.st_mode & 0o7777,
                    st.st_uid
                ));
            }
        }
        let dir = dirs
            .enter_in(t0, ino)
            .map_err(|e| anyhow!("cannot open directory {} of the target: {e}", path(ino)))?;
        walked[ino as usize] = true;
        for (name, typed) in fsx::read_dir_typed(dir)
            .map_err(|e| anyhow!("cannot read directory {} of the target: {e}", path(ino)))?
        {
            if ino == ROOT_INO && name == STATE_DIR.as_bytes() {
                continue;
            }
            let t0_entry = t0_names.get(ino, &name);
            if depth == Depth::Names {
                // The directory entry's type says whether T0's name still
                // holds T0's kind: no stat needed (file systems that do
                // not give types are stat-ed below).
                if let (Some(i), Some(kind)) = (t0_entry, typed) {
                    if kind == t0.inode(t0.dirents[i].ino).kind {
                        seen[i] = true;
                        continue;
                    }
                }
            }
            let st = fsx::stat_at(dir, &name);
            let on_disk = st.as_ref().ok().and_then(|s| Kind::from_mode(s.st_mode));
            if let Some(i) = t0_entry {
                let child = &t0.inodes[(t0.dirents[i].ino - 1) as usize];
                if on_disk == Some(child.kind) {
                    seen[i] = true;
                    if depth == Depth::Names {
                        continue;
                    }
                    let s = st.as_ref().expect("stat worked");
                    out.owner[child.ino as usize] = Some((s.st_uid, s.st_mode & 0o7777));
                    if child.kind == Kind::File {
                        out.attrs[child.ino as usize] = Some(fsx::attrs_of(s).1);
                        out.shared[child.ino as usize] = s.st_nlink > names_of[child.ino as usize];
                        if depth == Depth::Xattrs {
                            out.xattr_names[child.ino as usize] =
                                fsx::xattr::names(dir, &name).ok();
                        }
                    }
                    if child.kind == Kind::File
                        && !unchanged(s, child)
                        && std::ptr::eq(t0.primary(child.ino), &t0.dirents[i])
                    {
                        out.changed.push(child.ino);
                    }
                    continue;
                }
            }
            // Not T0's (or T0's name holding something else now).
            let is_dir = on_disk == Some(Kind::Dir);
            let empty_dir = is_dir
                && ino == ROOT_INO
                && name == b"lost+found"
                && fsx::open_dir(dir, &name)
                    .and_then(|f| fsx::read_dir_names(std::os::fd::AsFd::as_fd(&f)))
                    .is_ok_and(|n| n.is_empty());
            let home = homes[ino as usize].filter(|&h| t1_names.get(h, &name).is_none());
            out.foreign.push(Foreign {
                dir: ino,
                name,
                home,
                is_dir,
                empty_dir,
                uid: st.as_ref().map(|s| s.st_uid).unwrap_or(u32::MAX),
            });
        }
    }
    for (i, d) in t0.dirents.iter().enumerate().skip(1) {
        let lost = (walked[d.parent as usize] && !seen[i]) || gone[d.parent as usize];
        if lost && std::ptr::eq(t0.primary(d.ino), d) {
            out.missing.push(d.ino);
        }
    }
    Ok(out)
}
