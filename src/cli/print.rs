//! What the commands print: JSON summaries where asked for, else lines.
//! The one place that decides between stdout, stderr and a file.

use super::args::JsonArgs;
use anyhow::Result;
use serde::Serialize;
use std::io::Write;

/// Prints a JSON summary where the user asked for it: a file, stderr when
/// stdout carries the stream, else stdout. Nothing when not asked.
pub fn json<T: Serialize + ?Sized>(j: &JsonArgs, stdout_busy: bool, v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    if let Some(f) = &j.json_file {
        if let Err(e) = write_summary(f, &text) {
            // The work is done by now: losing its summary must not make it
            // look failed, nor be silent. The summary goes to stderr, and
            // the exit status becomes 1 (warnings).
            SUMMARY_LOST.store(true, std::sync::atomic::Ordering::Relaxed);
            crate::progress::println_err(&format!(
                "snapdump: warning: the work is done, but its summary could not be written to {} ({e}); here it is instead:\n{text}",
                f.display()
            ));
        }
    } else if j.json {
        if stdout_busy {
            writeln!(std::io::stderr().lock(), "{text}")?;
        } else {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}")?;
            out.flush()?;
        }
    }
    Ok(())
}

static SUMMARY_LOST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a `--json-file` summary could not be written (it went to
/// stderr instead); the command's exit status is then at least 1.
pub fn summary_lost() -> bool {
    SUMMARY_LOST.load(std::sync::atomic::Ordering::Relaxed)
}

/// Writes the summary file; a regular file left half-written is emptied,
/// so no reader takes a cut summary for a whole one.
fn write_summary(f: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::File::create(f)?;
    let r = file
        .write_all(text.as_bytes())
        .and_then(|_| file.write_all(b"\n"))
        .and_then(|_| file.flush());
    if r.is_err() && file.metadata().is_ok_and(|m| m.is_file()) {
        let _ = file.set_len(0);
    }
    r
}

/// Prints one summary as JSON, or several as a JSON list.
pub fn json_one_or_many<T: Serialize>(j: &JsonArgs, v: &[T]) -> Result<()> {
    match v {
        [one] => json(j, false, one),
        many => json(j, false, many),
    }
}

/// Prints `v` as JSON when asked, else `lines`, one per line, on stdout.
pub fn json_or_lines<T: Serialize>(
    j: &JsonArgs,
    v: &T,
    lines: impl IntoIterator<Item = String>,
) -> Result<()> {
    if j.wanted() {
        return json(j, false, v);
    }
    self::lines(lines)
}

/// Prints `lines` on stdout, one per line, buffered.
pub fn lines(lines: impl IntoIterator<Item = String>) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for l in lines {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    Ok(())
}

/// Prints a value as pretty JSON on stdout.
pub fn json_stdout<T: Serialize>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(v)?)?;
    out.flush()?;
    Ok(())
}

/// Prints a command's error on stderr, as one line (clearing a progress
/// bar first).
pub fn error(e: &anyhow::Error) {
    crate::progress::println_err(&format!("snapdump: error: {e:#}"));
}
