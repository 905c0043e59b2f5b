//! Progress bars on a terminal only: under cron, or with stderr redirected,
//! snapdump prints nothing but warnings and errors.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;

static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A byte-count progress bar, or nothing when stderr is not a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts a bar for `total` bytes labelled `what`.
    pub fn bytes(total: u64, what: &str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        *BAR.lock().unwrap() = Some(bar.clone());
        Progress { bar: Some(bar) }
    }
    /// Advances by `n` bytes.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
            *BAR.lock().unwrap() = None;
        }
    }
}

/// Prints a line on stderr without tearing an active bar.
pub fn println_err(line: &str) {
    match &*BAR.lock().unwrap() {
        Some(b) => b.println(line),
        None => eprintln!("{line}"),
    }
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `-q`: notes (what was done differently from the usual, but on purpose)
/// are not printed; warnings and errors still are.
pub fn set_quiet(on: bool) {
    QUIET.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// `-v`: each entry dumped or restored is listed, as tar's `-v` does.
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether entries are listed (`-v`).
pub fn verbose() -> bool {
    VERBOSE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether `-q` was given (summary lines on stderr are left out too).
pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// Prints `snapdump: note: MSG` unless `-q`.
pub fn note(msg: &str) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        println_err(&format!("snapdump: note: {msg}"));
    }
}

/// Lists every entry of `tree` on stderr, one escaped path a line, in the
/// tree's order (directories with a trailing `/`), when `-v` was given.
/// On stderr because a dump's standard output may be the stream.
pub fn list_entries(tree: &crate::tree::Tree) {
    if !verbose() {
        return;
    }
    use std::io::Write;
    let stderr = std::io::stderr();
    let mut out = std::io::BufWriter::new(stderr.lock());
    for d in tree.dirents.iter().skip(1) {
        let mut line = crate::names::escape(&tree.dirent_path(d)).into_bytes();
        if tree.inode(d.ino).kind == crate::tree::Kind::Dir {
            line.push(b'/');
        }
        line.push(b'\n');
        let _ = out.write_all(&line);
    }
}
