//! `snapdump export-tar`: a snapshot of a chain of streams as a tar stream.

use super::args::ReadMediumArgs;
use crate::at::At;
use crate::report::Report;
use crate::stream::reader::Digest;
use anyhow::Result;
use clap::Args;

/// Arguments of `snapdump export-tar`.
#[derive(Args)]
#[command(
    override_usage = "snapdump export-tar [-f IN]... [--at SNAPSHOT|TIME] [PATH]... > OUT.tar"
)]
pub struct ExportTarArgs {
    /// Input: a file, a device, or - for stdin (default: $TAPE); repeat for
    /// a chain (a level 0 and its increments, in any order).
    #[arg(short = 'f', value_name = "IN", action = clap::ArgAction::Append)]
    file: Vec<String>,
    /// Export this snapshot of the chain (default the newest given): its
    /// id, or the newest taken at or before a time (RFC 3339, UTC).
    #[arg(long, value_name = "SNAPSHOT|TIME", value_parser = parse_at)]
    at: Option<At>,
    /// Also recompute each stream's digest list (as verify does);
    /// the streams are then read whole.
    #[arg(long)]
    verify_digest: bool,
    #[command(flatten)]
    medium: ReadMediumArgs,
    /// Paths inside the snapshot to export (a directory brings its
    /// contents; default everything).
    paths: Vec<String>,
}

fn parse_at(s: &str) -> Result<At, String> {
    crate::at::parse_at(s).map_err(|e| format!("{e:#}"))
}

/// Runs `snapdump export-tar`.
pub fn run(a: ExportTarArgs, report: &Report) -> Result<i32> {
    let opts = crate::restore::export::ExportOptions {
        inputs: a.medium.inputs(&a.file)?,
        paths: a.paths,
        at: a.at,
        digest: if a.verify_digest {
            Digest::Check
        } else {
            Digest::Skip
        },
    };
    crate::restore::export::export_stdout(&opts, report)?;
    Ok(report.exit_status())
}
