//! What the commands print: JSON summaries where asked for, else lines.
//! The one place that decides between stdout, stderr and a file.

use super::args::JsonArgs;
use anyhow::{anyhow, Result};
use serde::Serialize;
use std::io::Write;

/// Prints a JSON summary where the user asked for it: a file, stderr when
/// stdout carries the stream, else stdout. Nothing when not asked.
pub fn json<T: Serialize + ?Sized>(j: &JsonArgs, stdout_busy: bool, v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    if let Some(f) = &j.json_file {
        std::fs::write(f, text + "\n").map_err(|e| anyhow!("cannot write {}: {e}", f.display()))?;
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
