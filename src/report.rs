//! Warnings collected during a run, and the exit status they imply.
//!
//! Nothing may be lost silently (DESIGN contract 5): every skipped, vanished
//! or changed file becomes a warning that is printed on stderr as it happens,
//! listed in the `--json` summary, and turns the exit status into 1.

use serde::Serialize;
use std::sync::Mutex;

/// Exit status: everything done.
pub const EXIT_OK: i32 = 0;
/// Exit status: done, but with warnings (some entries skipped or changed).
pub const EXIT_WARNINGS: i32 = 1;
/// Exit status: failed; nothing was committed.
pub const EXIT_FAILURE: i32 = 2;

/// One problem with one path.
#[derive(Clone, Debug, Serialize)]
pub struct Warning {
    /// The path concerned, escaped as in listings.
    pub path: String,
    /// What happened and what it means.
    pub message: String,
}

/// Collects warnings; shared between threads of a pipeline.
#[derive(Default)]
pub struct Report {
    warnings: Mutex<Vec<Warning>>,
    quiet: bool,
}

impl Report {
    /// A report that prints each warning on stderr as it is added.
    pub fn new() -> Self {
        Report::default()
    }
    /// A report that only collects (used by tests of library code).
    pub fn quiet() -> Self {
        Report {
            warnings: Mutex::default(),
            quiet: true,
        }
    }
    /// Records and prints a warning about `path` (raw bytes).
    pub fn warn(&self, path: &[u8], message: impl Into<String>) {
        let w = Warning {
            path: crate::names::escape(path),
            message: message.into(),
        };
        if !self.quiet {
            crate::progress::println_err(&format!("snapdump: warning: {}: {}", w.path, w.message));
        }
        self.warnings.lock().unwrap().push(w);
    }
    /// All warnings so far.
    pub fn warnings(&self) -> Vec<Warning> {
        self.warnings.lock().unwrap().clone()
    }
    /// 0 without warnings, 1 with.
    pub fn exit_status(&self) -> i32 {
        if self.warnings.lock().unwrap().is_empty() {
            EXIT_OK
        } else {
            EXIT_WARNINGS
        }
    }
    /// "ok" or "warnings", for JSON summaries.
    pub fn status_word(&self) -> &'static str {
        if self.exit_status() == EXIT_OK {
            "ok"
        } else {
            "warnings"
        }
    }
}
