//! `snapdump mirror`: an incremental mirror, base on slow media and the
//! blocks that differ from it on disk.

use super::args::{JsonArgs, ReadMediumArgs, WaitArg};
use super::print;
use crate::report::Report;
use anyhow::{bail, Result};
use clap::Subcommand;
use std::path::PathBuf;

/// The mirror subcommands.
#[derive(Subcommand)]
pub enum MirrorCmd {
    /// Make a mirror whose base is the full image on MEDIUM (not copied).
    Create {
        /// The base: a level 0 or synthetic full on a tape, virtual tape,
        /// file or device (only its front is read).
        #[arg(long, value_name = "MEDIUM")]
        base: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        medium: ReadMediumArgs,
        #[command(flatten)]
        #[allow(missing_docs)]
        json: JsonArgs,
        /// The mirror's directory (new or empty).
        path: PathBuf,
    },
    /// Add increments: the blocks they carry enter the mirror, the blocks
    /// they free leave it; one atomic commit each.
    Add {
        /// An increment on the mirror's newest snapshot; repeat, in order.
        #[arg(short = 'f', value_name = "INCREMENT", action = clap::ArgAction::Append, required = true)]
        file: Vec<String>,
        #[command(flatten)]
        #[allow(missing_docs)]
        medium: ReadMediumArgs,
        #[command(flatten)]
        #[allow(missing_docs)]
        wait: WaitArg,
        #[command(flatten)]
        #[allow(missing_docs)]
        json: JsonArgs,
        /// The mirror's directory.
        path: PathBuf,
    },
    /// Base, newest snapshot, blocks held and their size against the base.
    Status {
        #[command(flatten)]
        #[allow(missing_docs)]
        json: JsonArgs,
        /// The mirror's directory.
        path: PathBuf,
    },
    /// Write the newest snapshot as a synthetic full (base + mirror).
    Reintegrate {
        /// The mirror's base, read once in order.
        #[arg(long, value_name = "MEDIUM")]
        base: String,
        /// Output: a file, device, tape, virtual tape, or - (as dump -f).
        #[arg(short = 'o', value_name = "OUT", action = clap::ArgAction::Append, required = true)]
        output: Vec<String>,
        /// zstd level for the output's records; 0 turns compression off.
        #[arg(short = 'z', long = "compress", value_name = "LEVEL", default_value_t = crate::dump::DEFAULT_COMPRESSION,
              value_parser = clap::value_parser!(i32).range(0..=19))]
        compress: i32,
        #[command(flatten)]
        #[allow(missing_docs)]
        medium: ReadMediumArgs,
        #[command(flatten)]
        #[allow(missing_docs)]
        wait: WaitArg,
        /// The mirror's directory.
        path: PathBuf,
    },
}

fn one_input(medium: &ReadMediumArgs, spec: &str) -> Result<crate::media::Input> {
    let mut v = medium.inputs(&[spec.to_string()])?;
    if v.len() != 1 {
        bail!("{spec}: give the base as one medium");
    }
    Ok(v.remove(0))
}

fn status_line(s: &crate::mirror::MirrorStatus) -> String {
    format!(
        "{}: base snapshot {} ({}, on {}), newest snapshot {}: {} blocks held ({} bytes, {} on disk), {:.3} of the base's {} blocks",
        s.mirror,
        s.base.id,
        s.base.time.rfc3339(),
        s.base_medium,
        s.newest.id,
        s.blocks_held,
        s.bytes_held,
        s.disk_bytes,
        s.ratio_to_base,
        s.base_blocks
    )
}

/// Runs `snapdump mirror`.
pub fn run(cmd: MirrorCmd, report: &Report) -> Result<i32> {
    match cmd {
        MirrorCmd::Create {
            base,
            medium,
            json,
            path,
        } => {
            let input = one_input(&medium, &base)?;
            let s = crate::mirror::create(&input, &path)?;
            print::json_or_lines(&json, &s, [status_line(&s)])?;
        }
        MirrorCmd::Add {
            file,
            medium,
            wait,
            json,
            path,
        } => {
            let inputs = medium.inputs(&file)?;
            let added = crate::mirror::add(&path, &inputs, wait.policy())?;
            print::json_or_lines(
                &json,
                &added,
                added.iter().map(|a| {
                    format!(
                        "{}: added to {}: now at snapshot {}, {} blocks written, {} dropped",
                        a.stream,
                        path.display(),
                        a.snapshot.id,
                        a.blocks_written,
                        a.blocks_dropped
                    )
                }),
            )?;
        }
        MirrorCmd::Status { json, path } => {
            let s = crate::mirror::status(&path)?;
            print::json_or_lines(&json, &s, [status_line(&s)])?;
        }
        MirrorCmd::Reintegrate {
            base,
            output,
            compress,
            medium,
            wait,
            path,
        } => {
            let input = one_input(&medium, &base)?;
            let m = crate::mirror::Mirror::open(&path, wait.policy())?;
            let tape = crate::media::tape::writer::TapeOptions {
                block_size: crate::media::tape::DEFAULT_RECORD_KIB * 1024,
                append: false,
                capacity: 0,
                new_volume: None,
            };
            let bytes =
                crate::restore::reintegrate::reintegrate(&m, &input, &output, &tape, compress)?;
            if !crate::progress::quiet() {
                crate::progress::println_err(&format!(
                "snapdump: {}: snapshot {} as a synthetic full from {} and {}: {bytes} stream bytes",
                output[0],
                m.state.newest.id,
                base,
                path.display()
            ));
            }
        }
    }
    Ok(report.exit_status())
}
