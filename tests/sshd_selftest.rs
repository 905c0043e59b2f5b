//! The test sshd of `tests/common/sshd.rs`: it starts, commands run
//! through its `rsh()` (an absolute-path binary, an accepted SNAPDUMP_*
//! variable), and dropping it stops it. Without sshd the tests skip,
//! unless `SNAPDUMP_REQUIRE_SSHD=1` (as `.ci/run` sets), when they fail.

// The helper by its path, not through `mod common`: this file then builds
// whether or not tests/common/mod.rs declares `pub mod sshd` (loading the
// file both ways would be clippy's duplicate_mod).
#[path = "common/sshd.rs"]
mod sshd;

use sshd::Sshd;
use std::process::{Command, Output, Stdio};

/// Runs `RSH 127.0.0.1 ARGS...` as `--rsh` would: the command split on
/// whitespace.
fn over_ssh(sshd: &Sshd, extra: &[&str], args: &[&str]) -> Output {
    let rsh = sshd.rsh();
    let mut words = rsh.split_whitespace();
    Command::new(words.next().unwrap())
        .args(words)
        .args(extra)
        .arg("127.0.0.1")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh")
}

fn assert_ran(sshd: &Sshd, out: &Output, want: &str) {
    assert!(
        out.status.success() && out.stdout == want.as_bytes(),
        "ssh exited {}, stdout {:?} (want {want:?}), stderr {:?}; sshd log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sshd.log_tail()
    );
}

#[test]
fn echo_hello_through_the_test_sshd() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let rsh = sshd.rsh();
    assert!(
        rsh.starts_with(&format!("ssh -p {} -i /tmp/", sshd.port)),
        "{rsh}"
    );
    let out = over_ssh(&sshd, &[], &["echo", "hello"]);
    assert_ran(&sshd, &out, "hello\n");
}

#[test]
fn runs_an_absolute_path_binary_with_snapdump_variables() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    // The binary under test, by its absolute path, as --remote-snapdump.
    let exe = env!("CARGO_BIN_EXE_snapdump");
    let out = over_ssh(&sshd, &[], &[exe, "--version"]);
    assert_ran(
        &sshd,
        &out,
        &format!("snapdump {}\n", env!("CARGO_PKG_VERSION")),
    );
    // AcceptEnv SNAPDUMP_*: a variable the client sends arrives.
    let out = over_ssh(
        &sshd,
        &["-o", "SetEnv=SNAPDUMP_SELFTEST=arrived"],
        &["echo", "$SNAPDUMP_SELFTEST"],
    );
    assert_ran(&sshd, &out, "arrived\n");
}

#[test]
fn dropping_stops_sshd_and_removes_its_directory() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let (pid, port, dir) = (sshd.pid(), sshd.port, sshd.dir.path().to_owned());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(sshd);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "sshd {pid} still runs"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}
