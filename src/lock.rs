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
use std::os::fd::AsRawFd;
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
    if !try_lock(&file, libc::LOCK_EX | libc::LOCK_NB)? {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        let who = if holder.is_empty() {
            "another process".to_string()
        } else {
            format!("process {holder}")
        };
        if wait == Wait::No {
            bail!("{what} is in use by {who} (lock {}); try again later, or run without --no-wait to wait", path.display());
        }
        crate::progress::println_err(&format!(
            "snapdump: waiting for {who} to finish with {what}..."
        ));
        if !try_lock(&file, libc::LOCK_EX)? {
            bail!("cannot lock {}", path.display());
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(Lock { _file: file })
}

fn try_lock(file: &File, op: libc::c_int) -> Result<bool> {
    loop {
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e).context("flock"),
        }
    }
}
