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
}

impl DirStack {
    /// A stack whose root is the given directory.
    pub fn new(root: OwnedFd) -> Self {
        DirStack {
            root,
            stack: Vec::new(),
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
        self.stack.truncate(common);
        for &ino in &chain[common..] {
            let parent = match self.stack.last() {
                Some((_, fd)) => fd.as_fd_borrow(),
                None => self.root.as_fd_borrow(),
            };
            let fd = open_dir(parent, name_of(ino))?;
            self.stack.push((ino, fd));
        }
        Ok(match self.stack.last() {
            Some((_, fd)) => fd.as_fd_borrow(),
            None => self.root.as_fd_borrow(),
        })
    }

    /// Forgets the open path (after directories were renamed or removed).
    pub fn reset(&mut self) {
        self.stack.clear();
    }
}
