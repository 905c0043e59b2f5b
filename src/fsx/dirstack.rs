//! Reaching a directory of a tree by its chain of inodes, keeping the
//! descriptors of the current path open.
//!
//! Dump and restore both visit entries in depth-first order, so consecutive
//! lookups share most of their path: only the components that differ are
//! closed and opened, each with `O_NOFOLLOW`. No path string is ever built,
//! so depth is limited only by the open-file limit.

use super::{open_dir, AsFdBorrow};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

/// The open directories from the root down to the last directory reached.
pub struct DirStack {
    root: OwnedFd,
    stack: Vec<(u64, OwnedFd)>,
    /// Position in `stack` of each inode on it.
    at: std::collections::HashMap<u64, usize>,
}

impl DirStack {
    /// A stack whose root is the given directory.
    pub fn new(root: OwnedFd) -> Self {
        DirStack {
            root,
            stack: Vec::new(),
            at: std::collections::HashMap::new(),
        }
    }

    /// The root directory.
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd_borrow()
    }

    /// Opens (or reuses) the directory at the end of `chain` (directory
    /// inodes below the root, outermost first); `name_of` gives each one's
    /// name in its parent.
    pub fn enter<'n>(
        &mut self,
        chain: &[u64],
        mut name_of: impl FnMut(u64) -> &'n [u8],
    ) -> io::Result<BorrowedFd<'_>> {
        let common = self
            .stack
            .iter()
            .zip(chain)
            .take_while(|((a, _), b)| a == *b)
            .count();
        self.truncate(common);
        for &ino in &chain[common..] {
            self.push(ino, name_of(ino))?;
        }
        Ok(self.top())
    }

    /// Opens (or reuses) directory `dir` of `tree` (the root for
    /// [`ROOT_INO`](crate::tree::ROOT_INO)): only the components below the
    /// deepest directory already open on its path are opened, so a walk in
    /// depth-first order costs one open per directory, however deep.
    pub fn enter_in(&mut self, tree: &crate::tree::Tree, dir: u64) -> io::Result<BorrowedFd<'_>> {
        let mut missing = Vec::new();
        let mut cur = dir;
        let keep = loop {
            if cur == crate::tree::ROOT_INO || cur == 0 {
                break 0;
            }
            if let Some(&i) = self.at.get(&cur) {
                break i + 1;
            }
            missing.push(cur);
            cur = tree.primary(cur).parent;
        };
        self.truncate(keep);
        for &ino in missing.iter().rev() {
            self.push(ino, &tree.primary(ino).name)?;
        }
        Ok(self.top())
    }

    fn truncate(&mut self, n: usize) {
        for (ino, _) in self.stack.drain(n.min(self.stack.len())..) {
            self.at.remove(&ino);
        }
    }

    fn push(&mut self, ino: u64, name: &[u8]) -> io::Result<()> {
        let fd = open_dir(self.top(), name)?;
        self.at.insert(ino, self.stack.len());
        self.stack.push((ino, fd));
        Ok(())
    }

    fn top(&self) -> BorrowedFd<'_> {
        match self.stack.last() {
            Some((_, fd)) => fd.as_fd_borrow(),
            None => self.root.as_fd_borrow(),
        }
    }

    /// Forgets the open path (after directories were renamed or removed).
    pub fn reset(&mut self) {
        self.stack.clear();
        self.at.clear();
    }
}
