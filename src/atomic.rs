//! Atomic replacement of small state files (catalogs, restore state).
//!
//! Write to a temporary name in the same directory, fsync it, rename it over
//! the old name, then fsync the directory. rename(2) is atomic, so a crash
//! at any instant leaves either the old file or the new one, both complete;
//! the directory fsync makes the rename itself durable before we report
//! success (DESIGN contract 3).

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` atomically and durably.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().context("state file path has no name")?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| {
            format!(
                "cannot write {} (is the file system full or read-only?)",
                path.display()
            )
        });
    }
    Ok(())
}

/// Renames `from` over `to` (same directory) and syncs the directory, so
/// the rename survives a crash once this returns.
pub fn rename_durably(from: &Path, to: &Path) -> Result<()> {
    let dir = to
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::rename(from, to)
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))
}
