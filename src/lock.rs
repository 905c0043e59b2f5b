//! Serialising dumps of one source and restores into one target.
//!
//! Locks are `flock(2)` locks on a file holding the owner's pid (for
//! messages). The kernel drops a flock when its holder dies, however it
//! dies, so a lock left by a killed process is never stale: the next
//! process simply gets it. The file itself is left in place (removing it
//! could race with a waiter that already opened it).

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

/// A held lock; released when dropped or when the process exits.
pub struct Lock {
    _file: File,
}

/// How to behave when another process holds the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Wait for it, saying so on stderr.
    Yes,
    /// Fail at once.
    No,
}

/// Takes the exclusive lock `path` guarding `what` (a phrase for messages).
pub fn acquire(path: &Path, what: &str, wait: Wait) -> Result<Lock> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    let holder = || {
        let mut holder = String::new();
        let _ = (&file).read_to_string(&mut holder);
        match holder.trim() {
            "" => "another process".to_string(),
            h => format!("process {h}"),
        }
    };
    let who = std::cell::OnceCell::new();
    lock_file(
        &file,
        true,
        wait,
        || {
            format!(
                "{what} is in use by {} (lock {}); try again later, or run without --no-wait to wait",
                who.get_or_init(holder),
                path.display()
            )
        },
        || {
            format!(
                "snapdump: waiting for {} to finish with {what}...",
                who.get_or_init(holder)
            )
        },
    )?;
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(Lock { _file: file })
}

/// Locks `file` (shared or exclusive); when another holder has it, fails
/// with `busy()` under [`Wait::No`], else says `waiting()` on stderr and
/// waits. The one place snapdump takes a flock.
pub fn lock_file(
    file: &File,
    exclusive: bool,
    wait: Wait,
    busy: impl FnOnce() -> String,
    waiting: impl FnOnce() -> String,
) -> Result<()> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    if try_lock(file, op | libc::LOCK_NB)? {
        return Ok(());
    }
    if wait == Wait::No {
        bail!("{}", busy());
    }
    crate::progress::println_err(&waiting());
    if !try_lock(file, op)? {
        bail!("{}", busy());
    }
    Ok(())
}

fn try_lock(file: &File, op: libc::c_int) -> Result<bool> {
    use std::os::fd::AsFd;
    crate::fsx::flock(file.as_fd(), op).context("flock")
}
