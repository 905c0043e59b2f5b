//! Fault injection for crash tests.
//!
//! `SNAPDUMP_FAILPOINT=NAME:N` makes the process abort (as abruptly as a
//! SIGKILL: no destructors, no flushing) the N-th time it reaches the point
//! called NAME. Tests use it to stop a dump or a restore inside each of its
//! phases and check that the re-run ends in exactly the right state. Without
//! the variable, a point costs one relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// Marks a point where a crash test may stop the process.
pub fn hit(name: &str) {
    let target = TARGET.get_or_init(|| {
        let v = std::env::var("SNAPDUMP_FAILPOINT").ok()?;
        let (n, c) = v.rsplit_once(':')?;
        Some((n.to_string(), c.parse().ok()?))
    });
    if let Some((n, c)) = target {
        if n == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *c {
            std::process::abort();
        }
    }
}

/// Lets a test act at a precise moment: when `SNAPDUMP_PAUSE` names this
/// point, the process creates the file `SNAPDUMP_PAUSE_FILE` and waits (up
/// to a minute) until the test removes it.
pub fn pause(name: &str) {
    if std::env::var("SNAPDUMP_PAUSE").ok().as_deref() != Some(name) {
        return;
    }
    let Some(file) = std::env::var_os("SNAPDUMP_PAUSE_FILE") else {
        return;
    };
    if std::fs::write(&file, b"").is_err() {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::path::Path::new(&file).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
