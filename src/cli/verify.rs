//! `snapdump verify`: check a stream end to end.

use super::args::{JsonArgs, ReadMediumArgs};
use super::print;
use crate::report::Report;
use anyhow::Result;
use clap::Args;

/// Arguments of `snapdump verify`.
#[derive(Args)]
#[command(
    long_about = "Read a whole stream and check every checksum and structural rule without writing anything. Prints one line on success. A damaged stream is read to its end regardless: every damaged stretch (stream bytes, records, and what was wrong) is named on a line of its own, then the exit status is 2. An input holding several streams back to back (an image set) is checked stream by stream."
)]
pub struct VerifyArgs {
    /// Input: a file, a device, or - for stdin (default: $TAPE); repeat
    /// for the volumes of a dump on tape.
    #[arg(short = 'f', value_name = "IN", action = clap::ArgAction::Append)]
    file: Vec<String>,
    #[command(flatten)]
    medium: ReadMediumArgs,
    #[command(flatten)]
    json: JsonArgs,
}

/// Runs `snapdump verify`.
pub fn run(a: VerifyArgs, report: &Report) -> Result<i32> {
    let inputs = a.medium.inputs(&a.file)?;
    let (input, all) = crate::restore::verify::verify_one(inputs, report)?;
    if a.json.wanted() {
        print::json_one_or_many(&a.json, &all)?;
    } else {
        print::lines(all.iter().map(|s| {
            format!(
                "{}: ok: snapshot {} level {} of {}, {} entries, {} data blocks ({} bytes), {} stream bytes",
                input.name(),
                s.header.snapshot.id,
                s.header.snapshot.level,
                crate::names::escape(&s.header.source_path),
                s.entries,
                s.data_blocks,
                s.data_bytes,
                s.stream_bytes
            )
        }))?;
    }
    Ok(report.exit_status())
}
