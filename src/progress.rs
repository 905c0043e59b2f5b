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
