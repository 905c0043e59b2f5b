//! restore -i driven through a real pseudo-terminal (tmux): browse, complete
//! a name with Tab, mark two files and extract them.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env("TERM", "xterm")
            .output()
            .expect("tmux is needed for this test (.ci/run installs it)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "s"]).stdout).into_owned()
    }

    /// Waits until the screen shows `text` `times` times.
    fn wait_for(&self, text: &str, times: usize) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if s.matches(text).count() >= times {
                return s;
            }
            if start.elapsed() > Duration::from_secs(20) {
                panic!("timed out waiting for {text:?} x{times}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn keys(&self, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", "s"];
        a.extend(keys);
        assert!(self.cmd(&a).status.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn the_shell_browses_completes_marks_and_extracts_two_files() {
    let t = paths();
    build_fidelity_tree(&t.src);
    let s0 = t.dir.path().join("s0");
    assert_eq!(dump_to(0, &s0, &t.cat, &t.src), 0);
    std::fs::write(t.src.join("dir/random.bin"), bytes(42, 123_456)).unwrap();
    let s1 = t.dir.path().join("s1");
    assert_eq!(dump_to(1, &s1, &t.cat, &t.src), 0);
    let expected = snapshot_tree(&t.src);
    let target = t.dir.path().join("picked");
    let status = t.dir.path().join("status");

    let tmux = Tmux {
        socket: format!("snapdump-test-{}", std::process::id()),
    };
    let shell = format!(
        "{} restore -i -f {} -f {} --target {}; echo EXIT=$? > {}",
        env!("CARGO_BIN_EXE_snapdump"),
        p(&s0),
        p(&s1),
        p(&target),
        p(&status)
    );
    let o = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "s",
        "-x",
        "160",
        "-y",
        "50",
        &shell,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // capture-pane drops trailing blanks: the prompt shows as "snapdump >".
    let prompt = "snapdump >";
    tmux.wait_for(prompt, 1);
    tmux.keys(&["what", "Enter"]);
    tmux.wait_for("level 1", 1);
    tmux.wait_for(prompt, 2);
    tmux.keys(&["ls", "Enter"]);
    tmux.wait_for("emptydir/", 1);
    tmux.wait_for(prompt, 3);
    tmux.keys(&["cd dir/sub/..", "Enter"]);
    tmux.wait_for(prompt, 4);
    tmux.keys(&["pwd", "Enter"]);
    tmux.wait_for("\n/dir\n", 1);
    tmux.wait_for(prompt, 5);
    // Tab completes a unique prefix to the full name.
    tmux.keys(&["add rand", "Tab"]);
    tmux.wait_for("add random.bin", 1);
    tmux.keys(&["Enter"]);
    tmux.wait_for(prompt, 6);
    tmux.keys(&["add /hello.txt", "Enter"]);
    tmux.wait_for(prompt, 7);
    tmux.keys(&["ls", "Enter"]);
    tmux.wait_for("*random.bin", 1);
    tmux.wait_for(prompt, 8);
    tmux.keys(&["extract", "Enter"]);
    tmux.wait_for("extracted", 1);
    tmux.wait_for(prompt, 9);
    tmux.keys(&["quit", "Enter"]);
    // The shell creates the status file before it writes to it: wait for
    // the whole line.
    let start = Instant::now();
    let exit = loop {
        let text = std::fs::read_to_string(&status).unwrap_or_default();
        if text.ends_with('\n') {
            break text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.trim(), "EXIT=0");
    assert_extracted(&expected, &target, &["dir/random.bin", "hello.txt"]);
}

#[test]
fn the_shell_reads_commands_from_a_pipe() {
    let t = paths();
    build_fidelity_tree(&t.src);
    assert_eq!(dump_to(0, &t.stream, &t.cat, &t.src), 0);
    let expected = snapshot_tree(&t.src);
    let target = t.dir.path().join("picked");
    let mut child = Command::new(env!("CARGO_BIN_EXE_snapdump"))
        .args(["restore", "-i", "-f", p(&t.stream), "--target", p(&target)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"add dir\ndelete dir/random.bin\nls dir\nadd 'back\\\\slash' nosuch\nextract\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    // `add nosuch` failed: done, with a warning (exit status 1).
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains(" random.bin\n") && out.contains("*log.txt\n"),
        "{out}"
    );
    assert!(out.contains("nosuch: not in the snapshot"), "{out}");
    assert_extracted(
        &expected,
        &target,
        &["dir/log.txt", "dir/h1", "dir/sub", "back\\slash"],
    );
}
