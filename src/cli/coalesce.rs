//! `snapdump coalesce`: consecutive streams of a chain become one.

use super::args::{JsonArgs, ReadMediumArgs};
use super::print;
use crate::report::Report;
use crate::stream::reader::Digest;
use anyhow::Result;
use clap::Args;

/// Arguments of `snapdump coalesce`.
#[derive(Args)]
#[command(
    override_usage = "snapdump coalesce -f IN -f IN... -o OUT [-o OUT]... [-z LEVEL] [--json]"
)]
pub struct CoalesceArgs {
    /// Input: a stream of the chain (a file, a device, a tape, or - for
    /// stdin once); at least two, in any order.
    #[arg(short = 'f', value_name = "IN", action = clap::ArgAction::Append, required = true)]
    file: Vec<String>,
    /// Output: a file, a device, a tape (/dev/nstN), a virtual tape
    /// (*.tap), or - for stdout; repeat to name further volumes, as dump -f.
    ///
    /// A file is written under a temporary name and renamed into place only
    /// once the stream is whole; a failed or killed coalesce leaves no OUT.
    #[arg(short = 'o', value_name = "OUT", action = clap::ArgAction::Append, required = true)]
    output: Vec<String>,
    /// On tape: KiB per data record (one record per write).
    #[arg(short = 'b', value_name = "KIB", default_value_t = crate::media::tape::DEFAULT_RECORD_KIB, value_parser = clap::value_parser!(u64).range(1..=16384))]
    block_kib: u64,
    /// On tape: add the stream after the dumps already on it.
    #[arg(long)]
    append: bool,
    /// Capacity of a virtual tape (e.g. 400M, 12T).
    #[arg(long, value_name = "SIZE", value_parser = crate::media::tape::parse_size)]
    tape_capacity: Option<u64>,
    /// Cut the output into volume files of at most SIZE (e.g. 4G).
    #[arg(long, value_name = "SIZE", value_parser = crate::media::tape::parse_size, conflicts_with = "tape_capacity")]
    volume_size: Option<u64>,
    /// zstd level for the output's records; 0 turns compression off.
    #[arg(short = 'z', long = "compress", value_name = "LEVEL", default_value_t = crate::dump::DEFAULT_COMPRESSION,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    compress: i32,
    /// Also recompute each input's digest list (as verify does).
    #[arg(long)]
    verify_digest: bool,
    /// A data record whose kept blocks stay as they are is copied whole,
    /// not compressed again, its dropped blocks left in as gap bytes, when
    /// these are at most PERCENT of its data (0: only records that keep
    /// every block are copied).
    #[arg(long, value_name = "PERCENT", default_value_t = crate::restore::coalesce::Waste::DEFAULT.percent,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    max_waste: u8,
    /// Compress every record again at -z, copying none: the smallest
    /// output, at the cost of the time a fresh dump spends compressing.
    #[arg(long, conflicts_with = "max_waste")]
    recompress: bool,
    #[command(flatten)]
    medium: ReadMediumArgs,
    #[command(flatten)]
    json: JsonArgs,
}

/// Runs `snapdump coalesce`.
pub fn run(a: CoalesceArgs, report: &Report) -> Result<i32> {
    let opts = crate::restore::coalesce::CoalesceOptions {
        inputs: a.medium.inputs(&a.file)?,
        specs: a.output.clone(),
        tape: crate::media::tape::writer::TapeOptions {
            block_size: a.block_kib * 1024,
            append: a.append,
            capacity: a.tape_capacity.or(a.volume_size).unwrap_or(0),
            // --new-volume names the inputs' next tape; output volumes
            // are the -o given.
            new_volume: None,
        },
        compression: a.compress,
        waste: (!a.recompress).then_some(crate::restore::coalesce::Waste {
            percent: a.max_waste,
        }),
        digest: if a.verify_digest {
            Digest::Check
        } else {
            Digest::Skip
        },
    };
    let s = crate::restore::coalesce::coalesce(&opts)?;
    if a.json.wanted() {
        print::json(&a.json, a.output[0] == "-", &s)?;
    } else if !crate::progress::quiet() {
        let what = match &s.base {
            None => "a synthetic full".to_string(),
            Some(b) => format!("an increment on snapshot {}", b.id),
        };
        crate::progress::println_err(&format!(
            "snapdump: {}: snapshot {} as {what} from {} streams: {} blocks carried, {} dropped, {} stream bytes",
            s.output,
            s.snapshot.id,
            s.inputs.len(),
            s.blocks_carried,
            s.blocks_dropped,
            s.stream_bytes
        ));
    }
    Ok(report.exit_status())
}
