//! Choosing entries of a snapshot's tree by path, and cutting the chosen
//! part (with the directories leading to it) into a tree of its own that
//! the restore machinery can create.

use crate::names::unescape;
use crate::tree::{Kind, Tree, ROOT_INO};
use std::collections::HashMap;

/// Normalises a path given by the user to the tree's form: escapes undone
/// (`\ooo`, `\\`), leading `/` and `./`, `.` components, repeated and
/// trailing slashes dropped. The empty result means the whole tree.
pub fn normalize(p: &str) -> Vec<u8> {
    let raw = unescape(p);
    let parts: Vec<&[u8]> = raw
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    parts.join(&b'/')
}

/// A chosen part of a tree.
pub struct Selection {
    /// The chosen entries and their ancestors, renumbered.
    pub tree: Tree,
    /// For each inode of `tree` (by number), the inode of the source tree.
    pub orig: Vec<u64>,
    /// Inodes of `tree` present only because something below them was
    /// chosen: created when missing, otherwise left as they are.
    pub ancestor: Vec<bool>,
    /// Whether the whole tree (its root included) was chosen.
    pub whole: bool,
}

impl Selection {
    /// The output inodes that are regular files, with their source inode.
    pub fn files<'a>(
        &'a self,
        src: &'a Tree,
    ) -> impl Iterator<Item = (u64, &'a crate::tree::Inode)> + 'a {
        self.tree
            .inodes
            .iter()
            .filter(|i| i.kind == Kind::File)
            .map(move |i| (i.ino, src.inode(self.orig[i.ino as usize])))
    }
}

/// Marks the dirents (by index) chosen by `paths` (normalised; empty =
/// everything); returns the marks and the paths that matched nothing.
pub fn mark_paths(tree: &Tree, paths: &[Vec<u8>]) -> (Vec<bool>, Vec<Vec<u8>>) {
    let mut marks = vec![false; tree.dirents.len()];
    if paths.is_empty() || paths.iter().any(|p| p.is_empty()) {
        marks.iter_mut().for_each(|m| *m = true);
        let missing = Vec::new();
        return (marks, missing);
    }
    // A path may be given twice, or inside another one given: each is
    // found where it is, not reported missing.
    let mut wanted: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, p) in paths.iter().enumerate() {
        wanted.entry(&p[..]).or_default().push(i);
    }
    let nested = paths.iter().any(|p| {
        paths
            .iter()
            .any(|q| p.len() > q.len() && p.starts_with(q) && p[q.len()] == b'/')
    });
    let mut found = vec![false; paths.len()];
    let mut dir_marked = vec![false; tree.inodes.len() + 1];
    for (i, d) in tree.dirents.iter().enumerate().skip(1) {
        let mut m = dir_marked[d.parent as usize];
        // Inside a marked directory the path is looked up only when a
        // given path lies inside another (building it costs the depth).
        if !m || nested {
            if let Some(ws) = wanted.get(&tree.dirent_path(d)[..]) {
                for &w in ws {
                    found[w] = true;
                }
                m = true;
            }
        }
        marks[i] = m;
        if m && tree.inode(d.ino).kind == Kind::Dir {
            dir_marked[d.ino as usize] = true;
        }
    }
    let missing = paths
        .iter()
        .zip(&found)
        .filter(|(_, f)| !**f)
        .map(|(p, _)| p.clone())
        .collect();
    (marks, missing)
}

/// Cuts the marked dirents, and the directories leading to them, out of
/// `tree`. A hard-linked file keeps only its marked names.
pub fn cut(tree: &Tree, marks: &[bool]) -> Selection {
    let whole = marks.iter().all(|&m| m);
    let mut needed = marks.to_vec();
    needed[0] = true;
    let mut ancestor_of = vec![false; tree.inodes.len() + 1];
    for (i, d) in tree.dirents.iter().enumerate().rev() {
        if needed[i] || ancestor_of[d.ino as usize] {
            needed[i] = true;
            if d.parent != 0 {
                ancestor_of[d.parent as usize] = true;
            }
        }
    }
    let mut out = Tree::default();
    let mut map = vec![0u64; tree.inodes.len() + 1];
    let mut orig = vec![0u64];
    let mut ancestor = vec![false];
    for (i, d) in tree.dirents.iter().enumerate() {
        if !needed[i] {
            continue;
        }
        let parent = if d.parent == 0 {
            0
        } else {
            map[d.parent as usize]
        };
        if map[d.ino as usize] != 0 {
            out.push_link(parent, d.name.clone(), map[d.ino as usize]);
            continue;
        }
        let mut inode = tree.inode(d.ino).clone();
        inode.ino = 0;
        let new = out.push_inode(parent, d.name.clone(), inode);
        map[d.ino as usize] = new;
        orig.push(d.ino);
        ancestor.push(!marks[i] && d.ino != ROOT_INO);
    }
    if !whole {
        ancestor[ROOT_INO as usize] = true;
    }
    Selection {
        tree: out,
        orig,
        ancestor,
        whole,
    }
}
