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
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                "; run as the user who owns it (or as root)"
            } else {
                ""
            };
            anyhow::anyhow!("cannot open lock file {}: {e}{hint}", path.display())
        })?;
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

/// Whether process `pid` is still running: a zombie (killed, not yet
/// reaped, as under a container's init that reaps late) holds no locks
/// and writes nothing more, so its partial files are left-overs.
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

#[cfg(test)]
mod alive_tests {
    #[test]
    fn a_zombie_is_not_alive() {
        assert!(super::process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        // Not waited for yet: a zombie once it has exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while super::process_alive(child.id()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!super::process_alive(child.id()));
        assert!(std::path::Path::new(&format!("/proc/{}", child.id())).exists());
        child.wait().unwrap();
        assert!(!super::process_alive(u32::MAX));
    }
}
