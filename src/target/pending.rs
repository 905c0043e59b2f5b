//! The working directory of an incremental apply, `TARGET/.snapdump-restore/apply/`
//! (formats/restore-state.md): where the new snapshot's namespace is
//! being built (beside the target, named by the marker `beside`, or in
//! `next/`), the old entries on their way out (`old/`), the carried blocks
//! that go into files the target already has (`spool`), the modes changed
//! to reach unreadable directories (`modes`), and the phase markers.
//!
//! The directory's existence means an apply is pending. Until the marker
//! `checked` exists, nothing the user sees has changed except the modes the
//! journal lists, and undoing the apply is removing the directory after
//! putting those modes back; once it exists, the increment has been read
//! to its end and checked, and the apply is finished from what is kept
//! here, without the stream.

use super::exchange::{Site, BESIDE_MARKER};
use super::state::{StatePaths, STATE_DIR};
use crate::atomic::replace_file;
use crate::fsx::{self, dirstack::DirStack};
use crate::stream::payload::Segment;
use crate::tree::Tree;
use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use xxhash_rust::xxh3::xxh3_64;

/// The new snapshot's namespace, inside the apply directory.
pub const NEXT: &[u8] = b"next";
/// The old entries, moved aside during the swap.
pub const OLD: &[u8] = b"old";
/// Marker of the in-place finish that moves only what changed (an apply
/// directory without it or `beside` is an older snapdump's).
pub const DELTA_MARKER: &str = "delta";

/// The apply directory of a target.
pub struct Pending {
    /// The apply directory.
    pub dir: PathBuf,
    /// Its descriptor.
    pub fd: OwnedFd,
    /// Where the new tree is built when it is swapped in whole (marker
    /// `beside`); None when it is built in `next/` and moved in entry by
    /// entry (the in-place finish).
    pub site: Option<Site>,
}

impl Pending {
    /// Whether an apply is pending in the target.
    pub fn exists(paths: &StatePaths) -> bool {
        paths.apply_dir().exists()
    }

    /// Starts an apply: creates the directory and the staging directory,
    /// `next/` in it or, given a site, the one beside the target (the
    /// marker naming it written first, so a kill never leaves a staging
    /// directory nothing points at).
    pub fn create(paths: &StatePaths, site: Option<Site>) -> Result<Pending> {
        let dir = paths.apply_dir();
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let fd =
            fsx::open_dir_path(&dir).with_context(|| format!("cannot open {}", dir.display()))?;
        match &site {
            Some(site) => {
                replace_file(&dir.join(BESIDE_MARKER), &site.stage_name)?;
                let parent = site.open_parent()?;
                fsx::mkdir_at(parent.as_fd(), &site.stage_name, 0o700)
                    .map_err(|e| anyhow!("cannot create {}: {e}", site.stage().display()))?;
            }
            None => {
                replace_file(&dir.join(DELTA_MARKER), b"")?;
                fsx::mkdir_at(fd.as_fd(), NEXT, 0o700)
                    .map_err(|e| anyhow!("cannot create the staging directory: {e}"))?
            }
        }
        Ok(Pending { dir, fd, site })
    }

    /// Opens the directory of a pending apply.
    pub fn open(paths: &StatePaths) -> Result<Pending> {
        let dir = paths.apply_dir();
        let fd =
            fsx::open_dir_path(&dir).with_context(|| format!("cannot open {}", dir.display()))?;
        let site = if dir.join(BESIDE_MARKER).exists() {
            let target = paths
                .dir
                .parent()
                .expect("the state directory is in a target");
            let mut site = Site::of(target)?.ok_or_else(|| {
                anyhow!(
                    "{}: an apply staged beside a target that has no parent",
                    target.display()
                )
            })?;
            // The name it was staged under (the target may have been
            // renamed since: the staging directory is looked for by it in
            // the target's parent; if it is not there, the finish fails
            // and the apply is undone, the target being its old snapshot).
            site.stage_name = std::fs::read(dir.join(BESIDE_MARKER))
                .with_context(|| format!("cannot read {}", dir.join(BESIDE_MARKER).display()))?;
            Some(site)
        } else {
            None
        };
        Ok(Pending { dir, fd, site })
    }

    /// Opens the staging directory, where the new tree is built.
    pub fn stage(&self) -> Result<OwnedFd> {
        match &self.site {
            Some(site) => fsx::open_dir_path(&site.stage())
                .with_context(|| format!("cannot open {}", site.stage().display())),
            None => fsx::open_dir(self.fd.as_fd(), NEXT)
                .map_err(|e| anyhow!("cannot open the staging directory: {e}")),
        }
    }

    /// Whether the phase marker `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.dir.join(name).exists()
    }

    /// Records that a phase is complete, after flushing the target's file
    /// system so the record never runs ahead of what it vouches for.
    pub fn mark(&self, root: &OwnedFd, name: &str) -> Result<()> {
        fsx::syncfs(root.as_fd()).context("cannot flush the target file system")?;
        replace_file(&self.dir.join(name), b"")
    }

    /// Takes back the records that the increment was checked and its new
    /// tree complete, durably, before an undo removes that tree: an undo
    /// cut short (the tree half removed) is then undone again by the next
    /// run, never finished by swapping in what is left of the tree.
    pub fn unmark_checked(&self) -> Result<()> {
        for name in ["swap1", "checked"] {
            match fsx::unlink_at(self.fd.as_fd(), name.as_bytes(), false) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(anyhow!(
                        "cannot remove {}: {e}",
                        self.dir.join(name).display()
                    ));
                }
                _ => {}
            }
        }
        fsx::fsync(self.fd.as_fd()).with_context(|| format!("cannot flush {}", self.dir.display()))
    }

    /// Removes the whole directory (what is in it is not needed anymore),
    /// and the tree beside the target: the unfinished new one when the
    /// apply is undone, the old one after the exchange.
    pub fn remove(self) -> Result<()> {
        if let Some(site) = &self.site {
            site.remove_stage()?;
        }
        let parent = self.dir.parent().expect("inside the state directory");
        let sdir = fsx::open_dir_path(parent)?;
        drop(self.fd);
        match fsx::remove_tree_at(sdir.as_fd(), super::state::APPLY_DIR.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(anyhow!(
                "cannot remove {}: {e}",
                std::path::Path::new(STATE_DIR)
                    .join(super::state::APPLY_DIR)
                    .display()
            )),
            _ => Ok(()),
        }
    }

    /// The spool, for writing.
    pub fn spool(&self) -> Result<SpoolWriter> {
        let path = self.dir.join("spool");
        let f = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(SpoolWriter {
            out: BufWriter::with_capacity(1 << 20, f),
            path,
            bytes: 0,
        })
    }

    /// The spool, for reading.
    pub fn read_spool(&self) -> Result<SpoolReader> {
        let path = self.dir.join("spool");
        let f = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(SpoolReader {
            input: BufReader::with_capacity(1 << 20, f),
            path,
        })
    }

    /// Records which files of the new snapshot inherit which of the old
    /// (`t1 ino u64, t0 ino u64` pairs), so a finish after an interruption
    /// makes the same choices whatever the target looks like by then.
    pub fn save_inherit(&self, pairs: &[(u64, u64)]) -> Result<()> {
        let mut b = Vec::with_capacity(pairs.len() * 16);
        for (a, g) in pairs {
            b.extend_from_slice(&a.to_le_bytes());
            b.extend_from_slice(&g.to_le_bytes());
        }
        replace_file(&self.dir.join("inherit"), &b)
    }

    /// What [`Pending::save_inherit`] kept.
    pub fn load_inherit(&self) -> Result<Vec<(u64, u64)>> {
        let path = self.dir.join("inherit");
        let b = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if b.len() % 16 != 0 {
            bail!("{} is damaged", path.display());
        }
        Ok(b.chunks_exact(16)
            .map(|c| {
                (
                    u64::from_le_bytes(c[..8].try_into().unwrap()),
                    u64::from_le_bytes(c[8..].try_into().unwrap()),
                )
            })
            .collect())
    }

    /// The journal of modes changed in the target.
    pub fn modes(&self) -> Result<ModeJournal> {
        let path = self.dir.join("modes");
        let entries = match std::fs::read(&path) {
            Ok(b) => decode_modes(&b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(ModeJournal { path, entries })
    }
}

/// Carried blocks bound for files the target already holds, kept until the
/// increment has been checked to its end: `ino u64, offset u64, len u32,
/// XXH3-64 of the data u64, data`, repeated.
pub struct SpoolWriter {
    out: BufWriter<File>,
    path: PathBuf,
    /// Data bytes spooled.
    pub bytes: u64,
}

impl SpoolWriter {
    /// Keeps one segment's data.
    pub fn put(&mut self, s: &Segment, data: &[u8]) -> Result<()> {
        let mut h = [0u8; 28];
        h[..8].copy_from_slice(&s.ino.to_le_bytes());
        h[8..16].copy_from_slice(&s.offset.to_le_bytes());
        h[16..20].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[20..28].copy_from_slice(&xxh3_64(data).to_le_bytes());
        self.out
            .write_all(&h)
            .and_then(|_| self.out.write_all(data))
            .with_context(|| {
                format!(
                    "cannot write {} (is the file system full?)",
                    self.path.display()
                )
            })?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Makes the spool durable.
    pub fn finish(self) -> Result<()> {
        let path = self.path.clone();
        let f = self
            .out
            .into_inner()
            .map_err(|e| anyhow!("cannot write {}: {}", path.display(), e.error()))?;
        f.sync_all()
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Reads the spool back, checking each entry.
pub struct SpoolReader {
    input: BufReader<File>,
    path: PathBuf,
}

impl SpoolReader {
    /// The next entry: (inode, offset, data) into `buf`; `None` at the end.
    pub fn next(&mut self, buf: &mut Vec<u8>) -> Result<Option<(u64, u64)>> {
        let mut h = [0u8; 28];
        match self.input.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.path.display()))
            }
        }
        let ino = u64::from_le_bytes(h[..8].try_into().unwrap());
        let offset = u64::from_le_bytes(h[8..16].try_into().unwrap());
        let len = u32::from_le_bytes(h[16..20].try_into().unwrap()) as usize;
        let sum = u64::from_le_bytes(h[20..28].try_into().unwrap());
        if len > crate::stream::record::MAX_PAYLOAD as usize {
            bail!(
                "{} is damaged (an entry of {len} bytes)",
                self.path.display()
            );
        }
        buf.resize(len, 0);
        self.input
            .read_exact(buf)
            .with_context(|| format!("{} is truncated", self.path.display()))?;
        if xxh3_64(buf) != sum {
            bail!("{} is damaged (checksum mismatch)", self.path.display());
        }
        Ok(Some((ino, offset)))
    }
}

/// Modes of the target's entries changed so that a non-root user can read
/// them (a directory or file of mode 000 that the user owns), written ahead
/// of each change and put back when the apply is undone: `ino u64, mode
/// u32` per entry, inode numbers of the snapshot the target holds.
pub struct ModeJournal {
    path: PathBuf,
    /// (inode, original mode), in the order they were changed.
    pub entries: Vec<(u64, u32)>,
}

fn decode_modes(b: &[u8]) -> Vec<(u64, u32)> {
    b.chunks_exact(12)
        .map(|c| {
            (
                u64::from_le_bytes(c[..8].try_into().unwrap()),
                u32::from_le_bytes(c[8..12].try_into().unwrap()),
            )
        })
        .collect()
}

impl ModeJournal {
    /// Records (durably) that inode `ino`'s mode `mode` is about to change.
    pub fn record(&mut self, ino: u64, mode: u32) -> Result<()> {
        self.entries.push((ino, mode));
        let mut b = Vec::with_capacity(self.entries.len() * 12);
        for (i, m) in &self.entries {
            b.extend_from_slice(&i.to_le_bytes());
            b.extend_from_slice(&m.to_le_bytes());
        }
        replace_file(&self.path, &b)
    }

    /// Puts every recorded mode back (newest first), reaching each entry
    /// through `t0` from the target's root; entries gone are skipped. (The
    /// flags an apply lifted go back on once its working directory, which
    /// may hold links to them, is removed: [`super::flags::relock`].)
    pub fn restore(&self, root: &OwnedFd, t0: &Tree) -> Result<()> {
        let mut dirs = DirStack::new(root.try_clone()?);
        for &(ino, mode) in self.entries.iter().rev() {
            if ino == 0 || ino as usize > t0.inodes.len() {
                continue;
            }
            let d = t0.primary(ino);
            let Ok(dir) = dirs.enter_in(t0, d.parent) else {
                continue;
            };
            match fsx::chmod_at(dir, &d.name, mode) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(anyhow!(
                        "cannot put back the mode of {}: {e}",
                        crate::names::escape(&t0.path(ino))
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}
