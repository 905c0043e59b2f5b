//! An sshd of the tests' own on 127.0.0.1, for replication over a real
//! ssh: a temporary host key, a temporary client key authorized for the
//! current user, its own sshd_config, all in a temporary directory under
//! /tmp, and stopped by its process id when dropped.
//!
//! [`Sshd::start`] gives `None` (saying why on stderr) when sshd, ssh or
//! ssh-keygen is missing or sshd cannot start. [`Sshd::start_or_skip`] is
//! the same for a test that skips without sshd, except that with
//! `SNAPDUMP_REQUIRE_SSHD=1` (set by `.ci/run`) it fails instead.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// sshd re-executes itself and so must be run by its absolute path.
pub const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd listening on 127.0.0.1:`port`.
pub struct Sshd {
    pub port: u16,
    /// Holds the keys, `sshd_config`, `authorized_keys`, `sshd.pid` and
    /// `sshd.log`; removed after sshd has stopped.
    pub dir: tempfile::TempDir,
    /// The client's private key, the one `authorized_keys` lists.
    pub key: PathBuf,
    /// sshd's own log (`-e`: what it writes to standard error).
    pub log: PathBuf,
    child: Child,
}

/// Whether tests over ssh must run rather than skip:
/// `SNAPDUMP_REQUIRE_SSHD` set to anything but empty or `0`.
pub fn required() -> bool {
    std::env::var_os("SNAPDUMP_REQUIRE_SSHD").is_some_and(|v| !v.is_empty() && v != "0")
}

/// A program named on PATH, as the shell would find it.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn keygen(path: &Path) -> Result<(), String> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "snapdump-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ssh-keygen: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ssh-keygen -f {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The last lines of a log, for a message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))
}

impl Sshd {
    /// Starts sshd on 127.0.0.1 on a free port with a temporary host key
    /// and a temporary client key authorized for the current user; `None`
    /// (with the reason on stderr) if sshd, ssh or ssh-keygen is not
    /// installed or sshd cannot start.
    pub fn start() -> Option<Sshd> {
        match Sshd::try_start() {
            Ok(s) => Some(s),
            Err(why) => {
                eprintln!("note: no test sshd: {why}");
                None
            }
        }
    }

    /// [`Sshd::start`] for a test that skips without sshd: `None` after a
    /// note, or a panic when [`required`] (`SNAPDUMP_REQUIRE_SSHD=1`).
    pub fn start_or_skip() -> Option<Sshd> {
        let s = Sshd::start();
        if s.is_none() {
            assert!(
                !required(),
                "SNAPDUMP_REQUIRE_SSHD is set but the test sshd did not start (reason above; \
                 apt-get install openssh-server openssh-client)"
            );
            eprintln!(
                "note: skipping the test over ssh (set SNAPDUMP_REQUIRE_SSHD=1 to fail instead)"
            );
        }
        s
    }

    fn try_start() -> Result<Sshd, String> {
        if !Path::new(SSHD).is_file() {
            return Err(format!(
                "{SSHD} is not installed (apt-get install openssh-server)"
            ));
        }
        for tool in ["ssh-keygen", "ssh"] {
            if on_path(tool).is_none() {
                return Err(format!(
                    "{tool} is not on PATH (apt-get install openssh-client)"
                ));
            }
        }
        // The privilege separation directory sshd insists on (as root).
        if !Path::new("/run/sshd").is_dir() {
            if let Err(e) = std::fs::create_dir_all("/run/sshd") {
                eprintln!("note: cannot create /run/sshd: {e}");
            }
        }
        // Under /tmp, whatever TMPDIR says: rsh() is split on spaces.
        let dir = tempfile::Builder::new()
            .prefix("snapdump-sshd.")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot make a directory under /tmp: {e}"))?;
        let d = dir.path();
        if d.to_str().is_none_or(|s| s.contains(char::is_whitespace)) {
            return Err(format!("{} has spaces or is not UTF-8", d.display()));
        }
        let host = d.join("host_key");
        let key = d.join("client_key");
        let auth = d.join("authorized_keys");
        let cfg = d.join("sshd_config");
        let log = d.join("sshd.log");
        keygen(&host)?;
        keygen(&key)?;
        std::fs::copy(d.join("client_key.pub"), &auth)
            .map_err(|e| format!("authorized_keys: {e}"))?;
        let mut why = String::new();
        // The port may be taken between its release and sshd's bind: retry.
        for _ in 0..5 {
            let port = free_port()?;
            std::fs::write(
                &cfg,
                format!(
                    "ListenAddress 127.0.0.1\n\
                     Port {port}\n\
                     HostKey {}\n\
                     AuthorizedKeysFile {}\n\
                     PidFile {}\n\
                     PermitRootLogin yes\n\
                     StrictModes no\n\
                     PubkeyAuthentication yes\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     UsePAM no\n\
                     AcceptEnv SNAPDUMP_*\n\
                     PrintMotd no\n\
                     PrintLastLog no\n\
                     MaxStartups 100\n\
                     LogLevel INFO\n",
                    host.display(),
                    auth.display(),
                    d.join("sshd.pid").display()
                ),
            )
            .map_err(|e| format!("sshd_config: {e}"))?;
            let errfile = std::fs::File::create(&log).map_err(|e| format!("sshd.log: {e}"))?;
            // -D: stays in the foreground as our child, so its pid is
            // child.id(); -e: logs to standard error, here sshd.log.
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(errfile)
                .spawn()
                .map_err(|e| format!("cannot run {SSHD}: {e}"))?;
            // Ready when sshd says it listens on this port and a connection
            // is accepted (the log line tells our sshd from another program
            // that took the port); up to 10 s.
            let listening = format!("Server listening on 127.0.0.1 port {port}");
            let deadline = Instant::now() + Duration::from_secs(10);
            let exited = loop {
                if let Ok(Some(st)) = child.try_wait() {
                    break Some(st);
                }
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                if said.contains(&listening) && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(Sshd {
                        port,
                        dir,
                        key,
                        log,
                        child,
                    });
                }
                if Instant::now() > deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let _ = child.kill();
            let _ = child.wait();
            let said = tail(&log);
            match exited {
                Some(st) => why = format!("sshd exited ({st}) on port {port}:\n{said}"),
                None => {
                    return Err(format!(
                        "sshd did not listen on port {port} within 10 s:\n{said}"
                    ))
                }
            }
            // Only a bind failure is worth another port.
            if !(said.contains("in use") || said.contains("bind")) {
                break;
            }
        }
        Err(why)
    }

    /// The `--rsh` command for this sshd, words separated by single spaces.
    pub fn rsh(&self) -> String {
        format!(
            "ssh -p {} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
            self.port,
            self.key.display()
        )
    }

    /// sshd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of sshd's log, for a failing assertion's message.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for Sshd {
    /// SIGTERM to sshd's pid, then SIGKILL if it has not exited within
    /// 5 s; waited for, so no zombie is left. Sessions still open end with
    /// their clients (sshd does not kill them when it stops).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id() as libc::pid_t;
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.wait();
    }
}
