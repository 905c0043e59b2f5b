//! The change tracker (`snapdump track`): sees changes as they happen, so
//! an increment needs no walk of the tree and reads only changed pages.
//!
//! Seeds 000/001 keep two block maps per source: writes mark the active
//! one; at each point-in-time image the maps swap roles, the image is made
//! from the frozen one while new writes go to the other. Here the maps are
//! BPF hash maps filled by programs on the kernel's dirty-page and
//! data-changing tracepoints (`kernel.rs`, `programs.rs`), and the name
//! space and metadata changes come from fanotify (`fanotify.rs`). A daemon
//! per source (`daemon.rs`) swaps at each dump's request and writes what the
//! frozen epoch saw as a delta file (`delta.rs`); the dump takes in the
//! deltas since its base snapshot's epoch (`Tracked::since`).
//!
//! Trust is earned, not assumed: each snapshot records the tracker
//! identity and epoch it was taken at (`snapshot` beside the deltas); a
//! dump uses the deltas only when the same tracker has run since then with
//! every delta present and nothing lost, and walks the tree otherwise,
//! saying why.

pub mod bpf;
pub mod btf;
pub mod daemon;
pub mod delta;
pub mod fanotify;
pub mod kernel;
pub mod programs;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Who a tracker is: a random id per daemon start and the boot it runs in.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Random per daemon start.
    pub tracker: [u8; 16],
    /// The kernel's boot id.
    pub boot: String,
}

/// `track status`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Status {
    /// The tracked source.
    pub source: String,
    /// The daemon's process id.
    pub pid: u32,
    /// The tracker's identity.
    pub tracker: String,
    /// The boot it runs in.
    pub boot: String,
    /// When it started.
    pub since: String,
    /// The last epoch ended (swaps so far, counting on from earlier trackers).
    pub epoch: u64,
    /// ext4, xfs or btrfs.
    pub file_system: String,
    /// Page ranges marked since the last swap.
    pub ranges_marked: u64,
    /// Ranges the page map had no room for since the last swap.
    pub ranges_refused: u64,
    /// Room of each page map.
    pub capacity: u64,
    /// Inodes changed since the last swap (fanotify).
    pub inodes_changed: u64,
    /// Directories whose entries changed since the last swap.
    pub directories_changed: u64,
    /// Why the changes since the last swap are incomplete, if they are.
    pub lost: Option<String>,
}

/// The tracker directory of `source` in the catalog under `catalog_root`.
pub fn tracker_dir(catalog_root: &Path, source: &Path) -> PathBuf {
    crate::catalog::source_dir(
        catalog_root,
        std::os::unix::ffi::OsStrExt::as_bytes(source.as_os_str()),
    )
    .join("tracker")
}

/// The file system type of `path`, if the tracker can follow it.
pub fn fs_type(path: &Path) -> Result<String> {
    let st = nix::sys::statfs::statfs(path)
        .with_context(|| format!("cannot statfs {}", path.display()))?;
    let t = st.filesystem_type().0 as u64;
    Ok(match t {
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        _ => bail!(
            "{} is on a file system the change tracker cannot follow (type {t:#x}); ext4, xfs and btrfs can be tracked",
            path.display()
        ),
    }
    .to_string())
}

/// Whether a file system's tracepoints report every data change that
/// dirties no page (fallocate modes, reflinks): then only marked pages of a
/// modified file are read. On btrfs, reflinks are seen by nothing, so a
/// file fanotify calls modified is compared whole.
pub fn ranges_complete(fstype: &str) -> bool {
    matches!(fstype, "ext4" | "xfs")
}

/// The kernel's boot id.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn socket_name(dir: &Path) -> Vec<u8> {
    // However the catalog is spelled (relative, through a symlink), the
    // same directory names the same socket.
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let h = crate::digest::sha256(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()));
    format!("snapdump-track-{}", crate::ids::hex(&h[..16])).into_bytes()
}

/// The daemon's socket (abstract: a catalog path can be longer than a
/// socket path may be; peers are checked by credentials).
pub fn listen(dir: &Path) -> Result<UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(socket_name(dir))?;
    UnixListener::bind_addr(&addr).with_context(|| {
        format!(
            "cannot open the tracker's socket for {} (is another tracker running?)",
            dir.display()
        )
    })
}

/// Only root and the process's own user are trusted on either end.
pub fn peer_allowed(conn: &UnixStream) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let r = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(conn),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    r == 0 && (cred.uid == 0 || cred.uid == nix::unistd::geteuid().as_raw())
}

/// Sends one request to the daemon of `dir`; None when no daemon runs.
pub fn request(dir: &Path, what: &str) -> Result<Option<serde_json::Value>> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(socket_name(dir))?;
    let conn = match UnixStream::connect_addr(&addr) {
        Ok(c) => c,
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => return Ok(None),
        Err(e) => return Err(e).context("cannot reach the change tracker"),
    };
    let refused = || {
        anyhow::anyhow!(
            "the change tracker of {} runs as another user and does not answer this one; run as root (or give --no-tracker)",
            dir.display()
        )
    };
    // The answer decides what a dump reads: only a daemon of root or of
    // this user is believed (anyone may bind an abstract name first).
    if !peer_allowed(&conn) {
        bail!(
            "the process answering as the change tracker of {} is neither root's nor this user's; not trusted",
            dir.display()
        );
    }
    // A swap writes data back (on xfs and btrfs, the whole file system's),
    // which can take a while: say so after ten seconds, give up after two
    // minutes.
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut w = &conn;
    if writeln!(w, "{what}").is_err() {
        return Err(refused());
    }
    let mut line = String::new();
    let mut reader = BufReader::new(&conn);
    let mut waited = false;
    loop {
        match reader.read_line(&mut line) {
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => return Err(refused()),
            Err(e)
                if !waited
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
            {
                crate::progress::println_err(&format!(
                    "snapdump: waiting for the change tracker of {} to answer (a swap writes the file system's dirty data back; a stopped tracker is given up on after two minutes)",
                    dir.display()
                ));
                conn.set_read_timeout(Some(std::time::Duration::from_secs(110)))?;
                waited = true;
            }
            Err(e) => return Err(e).context("the change tracker did not answer in two minutes"),
            Ok(_) => break,
        }
    }
    if line.trim().is_empty() {
        if !nix::unistd::geteuid().is_root() {
            return Err(refused());
        }
        bail!("the change tracker closed the connection without answering");
    }
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).context("the change tracker answered garbage")?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("the change tracker failed: {e}");
    }
    Ok(Some(v))
}

/// The tracker's state file: identity and last epoch.
fn state_path(dir: &Path) -> PathBuf {
    dir.join("state")
}

/// Records the tracker's identity and the epoch last ended.
pub fn write_state(dir: &Path, id: &Identity, epoch: u64) -> Result<()> {
    crate::atomic::replace_file(
        &state_path(dir),
        format!("{} {} {}\n", crate::ids::hex(&id.tracker), epoch, id.boot).as_bytes(),
    )
}

/// The epoch last ended by any tracker of this directory.
pub fn read_epoch(dir: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(state_path(dir)).ok()?;
    s.split(' ').nth(1)?.parse().ok()
}

/// Where a snapshot's tracker identity and epoch are recorded.
fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("snapshot")
}

/// What a swap answered: the tracker and the epoch that just ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swap {
    /// The tracker's id (hex).
    pub tracker: String,
    /// The epoch the swap ended.
    pub epoch: u64,
}

/// Asks the daemon of `dir` to swap; None when no tracker runs.
pub fn swap(dir: &Path) -> Result<Option<Swap>> {
    let Some(v) = request(dir, "swap")? else {
        return Ok(None);
    };
    Ok(Some(Swap {
        tracker: v["tracker"].as_str().unwrap_or_default().to_string(),
        epoch: v["epoch"]
            .as_u64()
            .context("the tracker's answer has no epoch")?,
    }))
}

/// Records that snapshot `id` was taken right after swap `s`.
pub fn record_snapshot(dir: &Path, id: u64, s: &Swap) -> Result<()> {
    crate::atomic::replace_file(
        &snapshot_path(dir),
        format!("{id} {} {}\n", s.tracker, s.epoch).as_bytes(),
    )
}

/// Everything the tracker saw change since a snapshot.
#[derive(Debug, Default)]
pub struct Tracked {
    /// Name space and metadata changes.
    pub changes: fanotify::Changes,
    /// Changed page ranges by inode: (first page, pages).
    pub ranges: HashMap<u64, Vec<(u64, u64)>>,
    /// log2 of the page size.
    pub page_shift: u32,
    /// Whether the ranges hold every data change (see [`ranges_complete`]).
    pub ranges_complete: bool,
}

impl Tracked {
    /// The changes between snapshot `snap_id` (which must be the one last
    /// recorded) and swap `now`. `Err(why)` when they are not all known.
    pub fn since(dir: &Path, snap_id: u64, now: &Swap, fstype: &str) -> Result<Tracked, String> {
        let rec = std::fs::read_to_string(snapshot_path(dir))
            .map_err(|_| "no snapshot was taken with it running".to_string())?;
        let f: Vec<&str> = rec.split_whitespace().collect();
        let (id, tracker, epoch) = match f[..] {
            [a, b, c] => (
                a.parse::<u64>()
                    .map_err(|_| "its snapshot record is damaged")?,
                b,
                c.parse::<u64>()
                    .map_err(|_| "its snapshot record is damaged")?,
            ),
            _ => return Err("its snapshot record is damaged".into()),
        };
        if id != snap_id {
            return Err(format!(
                "the newest snapshot ({snap_id}) was not taken with it running"
            ));
        }
        if tracker != now.tracker {
            return Err("it was restarted since the newest snapshot".into());
        }
        if epoch >= now.epoch {
            return Err("its epochs went backwards".into());
        }
        let mut t = Tracked {
            ranges_complete: ranges_complete(fstype),
            ..Tracked::default()
        };
        for e in epoch + 1..=now.epoch {
            let d = delta::read(dir, e).map_err(|e| format!("{e:#}"))?;
            if crate::ids::hex(&d.tracker) != now.tracker {
                return Err(format!("delta {e} is another tracker's"));
            }
            if let Some(why) = &d.changes.lost {
                return Err(why.clone());
            }
            t.page_shift = d.page_shift;
            for r in d.ranges {
                if r.first >= programs::TOUCHED {
                    t.changes.inodes.insert(r.ino);
                    continue;
                }
                t.ranges.entry(r.ino).or_default().push((r.first, r.pages));
            }
            t.changes.merge(d.changes);
        }
        // Any inode with marked pages changed (mmap writes raise no
        // fanotify event).
        t.changes.inodes.extend(t.ranges.keys().copied());
        Ok(t)
    }
}

/// Starts the daemon for `source` as a background process (the same
/// binary, `track start --foreground`), and waits until it is marking.
pub fn spawn(exe: &Path, args: &[std::ffi::OsString], dir: &Path) -> Result<Status> {
    use std::os::unix::process::CommandExt;
    crate::catalog::create_private_dir(dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .with_context(|| format!("cannot open {}", dir.join("log").display()))?;
    let mut child = std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start the tracker daemon")?;
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = request(dir, "status").ok().flatten() {
            return Ok(serde_json::from_value(v)?);
        }
        if let Some(st) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            let last = log.lines().last().unwrap_or("").to_string();
            bail!(
                "the tracker daemon exited ({st}): {}",
                last.trim_start_matches("snapdump: error: ")
            );
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            bail!(
                "the tracker daemon did not start within 30 s (see {})",
                dir.join("log").display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The mount id of the mount holding `path` (statx `STATX_MNT_ID`).
pub fn mount_id(path: &Path) -> Result<u64> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))?;
    // SAFETY: statx fills a zeroed statx struct; all-zero is a valid value.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a writable statx buffer.
    let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_MNT_ID, &mut buf) };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot stat {}", path.display()));
    }
    Ok(buf.stx_mnt_id)
}
