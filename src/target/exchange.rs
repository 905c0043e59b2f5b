//! The atomic finish of an incremental apply: the new snapshot's tree is
//! built beside the target, in `.NAME.snapdump-next` (same parent, so the
//! same file system), and swapped with the target in one
//! `renameat2(RENAME_EXCHANGE)`. Until that call the target is T0 exactly;
//! after it, T1 exactly (with its restore state saying so); a kill at any
//! moment leaves one or the other, and the next restore or serve removes
//! whichever tree is left beside.
//!
//! Files T1 inherits from T0 are hard links in the new tree, shared with
//! the old one; one the finish must change (blocks written or trimmed,
//! attributes or extended attributes changed) is first made a private
//! copy ([`Privatizer`]): cloned where the file system shares extents
//! (xfs, btrfs), copied otherwise. So the cost of atomicity is the size
//! of the changed files on file systems without reflinks, nothing on
//! those with them; `--inplace` chooses the older in-place finish instead.
//!
//! Not possible when the target is a mount point (its parent is another
//! file system), its parent is not writable, or the file system cannot
//! exchange names: then the apply is finished in place, as `--inplace`.

use super::state::{StatePaths, TargetState, APPLY_DIR, STATE_DIR};
use crate::fsx::{self, dirstack::DirStack};
use crate::names::escape;
use crate::tree::Tree;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The marker in the apply directory saying its new tree is built beside
/// the target (its content: the staging directory's name).
pub const BESIDE_MARKER: &str = "beside";

/// Where the new tree of a target is built and swapped.
pub struct Site {
    /// The directory holding the target.
    pub parent: PathBuf,
    /// The target's own name in it.
    pub target_name: Vec<u8>,
    /// The staging directory's name in it.
    pub stage_name: Vec<u8>,
}

impl Site {
    /// The site of `target`, whether or not an exchange is possible there
    /// (recovery finds an interrupted apply's staging directory by it).
    pub fn of(target: &Path) -> Result<Option<Site>> {
        let real = std::fs::canonicalize(target)
            .with_context(|| format!("cannot access restore target {}", target.display()))?;
        let (Some(parent), Some(name)) = (real.parent(), real.file_name()) else {
            return Ok(None);
        };
        let mut stage_name = b".".to_vec();
        stage_name.extend_from_slice(name.as_bytes());
        stage_name.extend_from_slice(b".snapdump-next");
        Ok(Some(Site {
            parent: parent.to_path_buf(),
            target_name: name.as_bytes().to_vec(),
            stage_name,
        }))
    }

    /// The site for an atomic finish of an apply into `target`, or why
    /// there is none (the caller then finishes in place).
    pub fn for_exchange(target: &Path, paths: &StatePaths) -> Result<Result<Site, String>> {
        let Some(site) = Site::of(target)? else {
            return Ok(Err("it has no parent directory".into()));
        };
        let parent = fsx::open_dir_path(&site.parent)
            .with_context(|| format!("cannot open {}", site.parent.display()))?;
        let root = fsx::open_dir_path(target)
            .with_context(|| format!("cannot open restore target {}", target.display()))?;
        let (ps, ts) = (fsx::fstat(parent.as_fd())?, fsx::fstat(root.as_fd())?);
        if ps.st_dev != ts.st_dev || ps.st_ino == ts.st_ino || is_mount_root(&root) {
            return Ok(Err("it is a mount point".into()));
        }
        if site.stage_name.len() > 255 {
            return Ok(Err(
                "its name is too long for a staging directory beside it".into(),
            ));
        }
        // SAFETY: faccessat reads a NUL-terminated name relative to an fd.
        let writable =
            unsafe { libc::faccessat(fsx::raw(parent.as_fd()), c".".as_ptr(), libc::W_OK, 0) } == 0;
        if !writable {
            return Ok(Err(format!(
                "its parent directory {} is not writable",
                site.parent.display()
            )));
        }
        if let Err(e) = probe_exchange(paths) {
            return Ok(Err(format!(
                "its file system cannot exchange names atomically ({e})"
            )));
        }
        match fsx::stat_at(parent.as_fd(), &site.stage_name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ok(site)),
            Err(e) => Err(e).with_context(|| format!("cannot look at {}", site.stage().display())),
            Ok(_) if site.is_ours()? => {
                site.remove_stage()?;
                Ok(Ok(site))
            }
            Ok(_) => bail!(
                "{} is in the way of the next snapshot's tree, and it is not snapdump's: move it away and run the restore again",
                site.stage().display()
            ),
        }
    }

    /// The staging directory's path.
    pub fn stage(&self) -> PathBuf {
        self.parent
            .join(std::ffi::OsStr::from_bytes(&self.stage_name))
    }

    /// Opens the parent directory.
    pub fn open_parent(&self) -> Result<OwnedFd> {
        fsx::open_dir_path(&self.parent)
            .with_context(|| format!("cannot open {}", self.parent.display()))
    }

    /// Removes the staging directory and everything in it, if it exists;
    /// the `beside` marker of the restore state inside it goes last, so a
    /// kill while it is removed leaves a directory still known as ours
    /// ([`Site::is_ours`]).
    pub fn remove_stage(&self) -> Result<()> {
        let fail = |e: io::Error| anyhow!("cannot remove {}: {e}", self.stage().display());
        let parent = self.open_parent()?;
        let stage = match fsx::open_dir(parent.as_fd(), &self.stage_name) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(fail(e)),
        };
        // Innermost on the marker's path last: stage/.snapdump-restore/apply/beside.
        let path: [&[u8]; 3] = [
            STATE_DIR.as_bytes(),
            APPLY_DIR.as_bytes(),
            BESIDE_MARKER.as_bytes(),
        ];
        let mut dirs = vec![stage];
        for (depth, keep) in path.iter().enumerate() {
            let dir = dirs.last().expect("one at least");
            let _ = fsx::chmod_at(dir.as_fd(), b"", 0o700);
            for name in fsx::read_dir_names(dir.as_fd()).map_err(fail)? {
                if name != *keep {
                    fsx::remove_tree_at(dir.as_fd(), &name).map_err(fail)?;
                }
            }
            if depth + 1 < path.len() {
                match fsx::open_dir(dir.as_fd(), keep) {
                    Ok(d) => dirs.push(d),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) => return Err(fail(e)),
                }
            }
        }
        // Now the marker, then the directories holding it, inside out.
        for (i, dir) in dirs.iter().enumerate().rev() {
            let is_dir = i + 1 < path.len();
            match fsx::unlink_at(dir.as_fd(), path[i], is_dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(fail(e)),
                _ => {}
            }
        }
        drop(dirs);
        match fsx::unlink_at(parent.as_fd(), &self.stage_name, true) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(fail(e)),
            _ => Ok(()),
        }
    }

    /// Renames the staging directory to a name of its own,
    /// `.NAME.snapdump-kept-SECONDS`, without its `beside` marker, so no
    /// later run removes it; returns the new path.
    pub fn keep_stage(&self) -> Result<PathBuf> {
        let parent = self.open_parent()?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut name = b".".to_vec();
        name.extend_from_slice(&self.target_name);
        name.extend_from_slice(format!(".snapdump-kept-{secs}").as_bytes());
        let _ = std::fs::remove_file(
            self.stage()
                .join(STATE_DIR)
                .join(APPLY_DIR)
                .join(BESIDE_MARKER),
        );
        fsx::rename_at(parent.as_fd(), &self.stage_name, parent.as_fd(), &name)
            .map_err(|e| anyhow!("cannot rename {}: {e}", self.stage().display()))?;
        Ok(self.parent.join(std::ffi::OsStr::from_bytes(&name)))
    }

    /// Whether the directory at the staging name is snapdump's: it holds
    /// the `beside` marker (the old tree of an apply killed after its
    /// exchange), or nothing but what is left of the marker's directories
    /// (one killed while that tree was removed).
    pub fn is_ours(&self) -> Result<bool> {
        let stage = self.stage();
        if stage
            .join(STATE_DIR)
            .join(APPLY_DIR)
            .join(BESIDE_MARKER)
            .exists()
        {
            return Ok(true);
        }
        let only = |dir: &Path, allowed: &str| -> Result<Option<bool>> {
            let names: Vec<_> = match std::fs::read_dir(dir) {
                Ok(r) => r.filter_map(|e| e.ok()).map(|e| e.file_name()).collect(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
            };
            Ok(Some(names.iter().all(|n| n == allowed)))
        };
        let state = stage.join(STATE_DIR);
        Ok(only(&stage, STATE_DIR)? == Some(true)
            && only(&state, APPLY_DIR)? != Some(false)
            && only(&state.join(APPLY_DIR), "")? != Some(false))
    }

    /// Swaps the new tree in: one rename exchanging the two names, made
    /// durable before the old tree (now beside) is removed.
    pub fn swap(&self) -> Result<()> {
        let parent = self.open_parent()?;
        crate::failpoint::hit("apply-exchange");
        fsx::exchange_at(
            parent.as_fd(),
            &self.stage_name,
            parent.as_fd(),
            &self.target_name,
        )
        .map_err(|e| {
            anyhow!(
                "cannot swap the new tree {} in for {}: {e}",
                self.stage().display(),
                self.parent
                    .join(std::ffi::OsStr::from_bytes(&self.target_name))
                    .display()
            )
        })?;
        fsx::fsync(parent.as_fd())
            .with_context(|| format!("cannot sync {}", self.parent.display()))?;
        crate::failpoint::hit("apply-exchanged");
        Ok(())
    }
}

/// Whether `dir` is the root of a mount (a bind mount of a directory of
/// the same file system among them, which st_dev does not tell apart).
fn is_mount_root(dir: &OwnedFd) -> bool {
    // SAFETY: statx fills the zeroed struct for an open descriptor.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            fsx::raw(dir.as_fd()),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            0,
            &mut st,
        )
    };
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    r == 0 && st.stx_attributes_mask & bit != 0 && st.stx_attributes & bit != 0
}

/// Whether the file system of the target's state directory exchanges
/// names (`RENAME_EXCHANGE`): two empty files swapped and removed.
fn probe_exchange(paths: &StatePaths) -> io::Result<()> {
    let dir = fsx::open_dir_path(&paths.dir)?;
    let (a, b) = (&b"exchange-probe-a"[..], &b"exchange-probe-b"[..]);
    for n in [a, b] {
        let _ = fsx::unlink_at(dir.as_fd(), n, false);
        fsx::openat(
            dir.as_fd(),
            n,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )?;
    }
    let r = fsx::exchange_at(dir.as_fd(), a, dir.as_fd(), b);
    let _ = fsx::unlink_at(dir.as_fd(), a, false);
    let _ = fsx::unlink_at(dir.as_fd(), b, false);
    r
}

/// Whether the file system of `dir` clones files (`FICLONE` of an empty
/// file succeeds): then private copies cost no space.
pub fn clones(dir: &OwnedFd) -> bool {
    let (a, b) = (&b"clone-probe-a"[..], &b"clone-probe-b"[..]);
    let open = |n: &[u8]| {
        let _ = fsx::unlink_at(dir.as_fd(), n, false);
        fsx::openat(
            dir.as_fd(),
            n,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )
    };
    let r = match (open(a), open(b)) {
        (Ok(src), Ok(dst)) => fsx::copy::clone_or_copy(src.as_fd(), dst.as_fd(), 0)
            .is_ok_and(|k| k == fsx::copy::CopyKind::Cloned),
        _ => false,
    };
    let _ = fsx::unlink_at(dir.as_fd(), a, false);
    let _ = fsx::unlink_at(dir.as_fd(), b, false);
    r
}

/// Removes a tree left beside `target` by an apply whose exchange was
/// done (the old tree, whose restore state holds the finished apply's
/// directory); anything else by that name is left alone. Returns whether
/// there was one: the apply before was killed after its exchange.
pub fn clear_leftover(target: &Path) -> Result<bool> {
    let Some(site) = Site::of(target)? else {
        return Ok(false);
    };
    if !site.stage().exists() || !site.is_ours()? {
        return Ok(false);
    }
    site.remove_stage()?;
    Ok(true)
}

/// Gives the new tree its restore state: every file of the target's state
/// directory linked in (the locks among them, so whoever holds them holds
/// them in both trees), the apply's own directory left out, and the state
/// file saying the tree holds T1.
pub fn build_state(target: &Path, site: &Site, next: &OwnedFd, t1: &TargetState) -> Result<()> {
    let old = fsx::open_dir_path(&target.join(STATE_DIR))
        .with_context(|| format!("cannot open {}", target.join(STATE_DIR).display()))?;
    let mode = fsx::fstat(old.as_fd())?.st_mode & 0o7777;
    match fsx::mkdir_at(next.as_fd(), STATE_DIR.as_bytes(), mode) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            bail!("cannot create the new tree's {STATE_DIR}: {e}")
        }
        _ => {}
    }
    let new = fsx::open_dir(next.as_fd(), STATE_DIR.as_bytes())
        .map_err(|e| anyhow!("cannot open the new tree's {STATE_DIR}: {e}"))?;
    for name in fsx::read_dir_names(old.as_fd())? {
        if name == APPLY_DIR.as_bytes() || name == b"state" || name == b"incomplete" {
            continue;
        }
        let st = fsx::stat_at(old.as_fd(), &name)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || fsx::stat_at(new.as_fd(), &name).is_ok() {
            continue;
        }
        fsx::link_at(old.as_fd(), &name, new.as_fd(), &name).map_err(|e| {
            anyhow!(
                "cannot link {} into the new tree: {e}",
                target
                    .join(STATE_DIR)
                    .join(std::ffi::OsStr::from_bytes(&name))
                    .display()
            )
        })?;
    }
    StatePaths::new(&site.stage()).commit(t1)
}

/// Makes inherited files private copies before the finish changes them.
pub struct Privatizer<'a> {
    t0: &'a Tree,
    t1: &'a Tree,
    /// T1 inode -> the T0 inode it inherits.
    inherits: HashMap<u64, u64>,
    old_dirs: DirStack,
    new_dirs: DirStack,
    link_dirs: DirStack,
    /// The apply directory, where copies are made before being renamed in.
    work: OwnedFd,
    done: HashSet<u64>,
    /// T1 inode -> indexes of its dirents other than the primary one.
    more_names: HashMap<u64, Vec<usize>>,
}

impl<'a> Privatizer<'a> {
    /// A privatizer for the tree under `next`, inheriting from the old
    /// tree under `root`.
    pub fn new(
        root: &OwnedFd,
        next: &OwnedFd,
        work: &OwnedFd,
        t0: &'a Tree,
        t1: &'a Tree,
        inherits: HashMap<u64, u64>,
    ) -> Result<Self> {
        let mut more_names: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, d) in t1.dirents.iter().enumerate() {
            if d.parent != 0 && !std::ptr::eq(t1.primary(d.ino), d) {
                more_names.entry(d.ino).or_default().push(i);
            }
        }
        Ok(Privatizer {
            more_names,
            t0,
            t1,
            inherits,
            old_dirs: DirStack::new(root.try_clone()?),
            new_dirs: DirStack::new(next.try_clone()?),
            link_dirs: DirStack::new(next.try_clone()?),
            work: work.try_clone()?,
            done: HashSet::new(),
        })
    }

    /// The T1 inodes made private so far (the finish sets all their
    /// attributes: a copy starts with none).
    pub fn done(&self) -> &HashSet<u64> {
        &self.done
    }

    /// Makes T1 inode `ino`'s file an inode of its own, holding the same
    /// bytes, unless it is one already (a finish run again after a kill
    /// finds the copies it made).
    pub fn make_private(&mut self, ino: u64) -> Result<()> {
        if self.done.contains(&ino) {
            return Ok(());
        }
        let Some(&g) = self.inherits.get(&ino) else {
            return Ok(()); // built fresh in the new tree: private already
        };
        let (t0, t1) = (self.t0, self.t1);
        let p = t1.primary(ino);
        let ndir = self
            .new_dirs
            .enter_in(t1, p.parent)
            .map_err(super::writer::io_ctx(t1, p.parent, "open directory"))?;
        let st_new =
            fsx::stat_at(ndir, &p.name).map_err(super::writer::io_ctx(t1, ino, "look at"))?;
        let gp = t0.primary(g);
        let shared = match self.old_dirs.enter_in(t0, gp.parent) {
            Ok(odir) => fsx::stat_at(odir, &gp.name)
                .map(|s| s.st_ino == st_new.st_ino && s.st_dev == st_new.st_dev)
                .unwrap_or(false),
            Err(_) => false,
        };
        if shared {
            crate::failpoint::hit("apply-privatize");
            let src =
                open_for_copy(ndir, &p.name).map_err(super::writer::io_ctx(t1, ino, "open"))?;
            let _ = fsx::unlink_at(self.work.as_fd(), b"copy", false);
            let dst = fsx::openat(
                self.work.as_fd(),
                b"copy",
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                0o600,
            )
            .map_err(|e| {
                anyhow!(
                    "cannot create a private copy of {}: {e}",
                    escape(&t1.path(ino))
                )
            })?;
            fsx::copy::clone_or_copy(src.as_fd(), dst.as_fd(), st_new.st_size as u64)
                .map_err(|e| anyhow!("cannot copy {}: {e}", escape(&t1.path(ino))))?;
            fsx::rename_at(self.work.as_fd(), b"copy", ndir, &p.name).map_err(|e| {
                anyhow!(
                    "cannot put the copy of {} in place: {e}",
                    escape(&t1.path(ino))
                )
            })?;
        }
        // The file's other names in T1 follow it to the copy.
        let new_ino = fsx::stat_at(ndir, &p.name)
            .map_err(super::writer::io_ctx(t1, ino, "look at"))?
            .st_ino;
        let pdir = ndir.try_clone_to_owned()?;
        let names = self.more_names.get(&ino).cloned().unwrap_or_default();
        for d in names.into_iter().map(|i| &t1.dirents[i]) {
            let ldir = self
                .link_dirs
                .enter_in(t1, d.parent)
                .map_err(super::writer::io_ctx(t1, d.parent, "open directory"))?;
            if fsx::stat_at(ldir, &d.name).is_ok_and(|s| s.st_ino == new_ino) {
                continue;
            }
            let _ = fsx::unlink_at(self.work.as_fd(), b"link", false);
            fsx::link_at(pdir.as_fd(), &p.name, self.work.as_fd(), b"link")
                .and_then(|_| fsx::rename_at(self.work.as_fd(), b"link", ldir, &d.name))
                .map_err(|e| {
                    anyhow!(
                        "cannot link {} to its private copy: {e}",
                        escape(&t1.dirent_path(d))
                    )
                })?;
        }
        self.done.insert(ino);
        Ok(())
    }
}

/// Opens a file for reading without touching its access time (it is the
/// old tree's file too), where the kernel allows that.
fn open_for_copy(dir: BorrowedFd, name: &[u8]) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW;
    match fsx::openat(dir, name, flags | libc::O_NOATIME, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => fsx::openat(dir, name, flags, 0),
        r => r,
    }
}
