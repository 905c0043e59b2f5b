//! The snapdump command line. Everything but argument parsing and printing
//! lives in the library.

use clap::{Args, Parser, Subcommand};
use snapdump::report::{Report, EXIT_FAILURE};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "snapdump",
    version,
    about = "Snapshot image dump and restore for directory trees"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a level-0..9 image stream of a source tree.
    Dump(DumpArgs),
    /// Restore, list or check a stream.
    Restore(RestoreArgs),
    /// Check every checksum of a stream without restoring it.
    Verify(VerifyArgs),
    /// List the snapshots recorded in the catalog.
    Snapshots(SnapshotsArgs),
    /// Show every snapshot in which a file changed.
    History(HistoryArgs),
    /// Create, list, extract, export, check and manage volumes.
    #[command(subcommand)]
    Volume(VolumeCmd),
}

#[derive(Subcommand)]
enum VolumeCmd {
    /// Create an empty volume file.
    Create {
        /// Block size in bytes (the streams received must use it).
        #[arg(long, value_name = "BYTES", default_value_t = 4096)]
        block_size: u32,
        /// Pack blocks at the lowest free VBNs instead of their source VBNs.
        #[arg(long)]
        compact: bool,
        /// Largest size the volume may grow to (e.g. 10G); default no limit.
        #[arg(long, value_name = "SIZE", value_parser = snapdump::media::tape::parse_size)]
        size: Option<u64>,
        /// The volume file to create.
        path: PathBuf,
    },
    /// List a snapshot's entries (PATH@SNAPSHOT; default the newest).
    Ls {
        #[command(flatten)]
        json: JsonArgs,
        /// The volume, optionally @SNAPSHOT (an id or a time).
        volume: String,
        /// Only these paths (and what lies below them).
        paths: Vec<String>,
    },
    /// Extract a snapshot, or some of its paths, into a directory.
    Extract {
        /// Replace existing entries in the way.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        json: JsonArgs,
        /// The volume, optionally @SNAPSHOT.
        volume: String,
        /// Directory to extract into (created if missing).
        target: PathBuf,
        /// Paths to extract (default everything).
        paths: Vec<String>,
    },
    /// Write a snapshot as a POSIX tar stream to stdout.
    ExportTar {
        /// The volume, optionally @SNAPSHOT.
        volume: String,
    },
    /// Check every checksum, pointer and bit plane of a volume.
    Check {
        #[command(flatten)]
        json: JsonArgs,
        /// The volume.
        volume: PathBuf,
    },
    /// List the snapshots a volume holds.
    Snapshots {
        #[command(flatten)]
        json: JsonArgs,
        /// The volume.
        volume: PathBuf,
    },
    /// Remove a snapshot; blocks nothing else uses are freed.
    DeleteSnapshot {
        /// Fail at once if the volume is in use (default: wait).
        #[arg(long)]
        no_wait: bool,
        /// PATH@SNAPSHOT, or the volume followed by the snapshot.
        volume: String,
        /// The snapshot (an id or a time), unless given as PATH@SNAPSHOT.
        snapshot: Option<String>,
    },
    /// Make a snapshot a shadow: its blocks become reusable.
    Shadow {
        /// Fail at once if the volume is in use (default: wait).
        #[arg(long)]
        no_wait: bool,
        /// PATH@SNAPSHOT, or the volume followed by the snapshot.
        volume: String,
        /// The snapshot (an id or a time), unless given as PATH@SNAPSHOT.
        snapshot: Option<String>,
    },
}

#[derive(Args)]
struct HistoryArgs {
    /// Streams to read (repeat); without -f, the streams the catalog
    /// recorded for the source holding PATH.
    #[arg(short = 'f', value_name = "IN", action = clap::ArgAction::Append)]
    file: Vec<String>,
    /// Catalog directory (default: /var/lib/snapdump, or $XDG_STATE_HOME/snapdump).
    #[arg(long, value_name = "DIR")]
    catalog: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The file: relative to the dump's root, or an absolute path inside the source.
    path: String,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("lvl").multiple(false))]
struct DumpArgs {
    #[arg(
        short = '0',
        group = "lvl",
        help = "Level 0..9 (-0 .. -9): 0 is a full image, N carries what changed since the newest snapshot of a lower level"
    )]
    l0: bool,
    /// Base snapshot id (default: the newest snapshot of a lower level).
    #[arg(long, value_name = "ID")]
    base: Option<u64>,
    /// From a volume: the plane expression to dump, e.g. 'S5+S4-S3' (the
    /// snapshots summed, in order, over the base after '-').
    #[arg(long, value_name = "EXPR")]
    image: Option<String>,
    #[arg(short = '1', group = "lvl", hide = true)]
    l1: bool,
    #[arg(short = '2', group = "lvl", hide = true)]
    l2: bool,
    #[arg(short = '3', group = "lvl", hide = true)]
    l3: bool,
    #[arg(short = '4', group = "lvl", hide = true)]
    l4: bool,
    #[arg(short = '5', group = "lvl", hide = true)]
    l5: bool,
    #[arg(short = '6', group = "lvl", hide = true)]
    l6: bool,
    #[arg(short = '7', group = "lvl", hide = true)]
    l7: bool,
    #[arg(short = '8', group = "lvl", hide = true)]
    l8: bool,
    #[arg(short = '9', group = "lvl", hide = true)]
    l9: bool,
    /// Output: a file, a device, or - for stdout (default: $TAPE). On tape,
    /// repeat for the volumes to use in turn.
    #[arg(short = 'f', value_name = "OUT", action = clap::ArgAction::Append)]
    file: Vec<String>,
    /// On tape: KiB per data record (one record per write).
    #[arg(short = 'b', value_name = "KIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=16384))]
    block_kib: u64,
    /// On tape: add the dump after the dumps already on it.
    #[arg(long)]
    append: bool,
    /// Continue this source's interrupted dump (same level and -f): what
    /// is already on the medium is checked and kept, the rest written.
    #[arg(long)]
    resume: bool,
    /// Capacity of a virtual tape (e.g. 400M, 12T); the dump continues on
    /// the next volume when it fills up.
    #[arg(long, value_name = "SIZE", value_parser = snapdump::media::tape::parse_size)]
    tape_capacity: Option<u64>,
    /// Cut a dump to files into volumes of at most SIZE (e.g. 4G), written
    /// to the -f files in turn (or where --new-volume puts them).
    #[arg(long, value_name = "SIZE", value_parser = snapdump::media::tape::parse_size, conflicts_with = "tape_capacity")]
    volume_size: Option<u64>,
    /// Run CMD when the next volume is needed (with SNAPDUMP_VOLUME and
    /// SNAPDUMP_DEVICE set); without it, ask on the terminal.
    #[arg(long, value_name = "CMD")]
    new_volume: Option<String>,
    /// Catalog directory (default: /var/lib/snapdump, or $XDG_STATE_HOME/snapdump).
    #[arg(long, value_name = "DIR")]
    catalog: Option<PathBuf>,
    /// zstd level for the stream's records; 0 turns compression off.
    #[arg(short = 'z', long = "compress", value_name = "LEVEL", default_value_t = snapdump::dump::DEFAULT_COMPRESSION,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    compress: i32,
    /// Fail at once if another dump of this source is running (default: wait).
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    json: JsonArgs,
    /// The directory tree to dump, or a volume file (PATH.vol[@SNAPSHOT]).
    source: PathBuf,
}

/// Options of tape media (virtual tapes are files ending in .tap).
#[derive(Args)]
struct ReadMediumArgs {
    /// On a tape: restore the Nth dump (spacing over N-1 filemarks).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    file_number: u64,
    /// Run CMD when the next volume is needed (with SNAPDUMP_VOLUME and
    /// SNAPDUMP_DEVICE set); without it, ask on the terminal.
    #[arg(long, value_name = "CMD")]
    new_volume: Option<String>,
}

#[derive(Args)]
struct JsonArgs {
    /// Print a JSON summary (on stderr when the stream goes to stdout).
    #[arg(long)]
    json: bool,
    /// Write the JSON summary to this file instead.
    #[arg(long, value_name = "FILE")]
    json_file: Option<PathBuf>,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("mode").required(true).multiple(false))]
struct RestoreArgs {
    /// Restore the whole stream into the target.
    #[arg(short = 'r', group = "mode")]
    restore: bool,
    /// List the stream's entries (only the PATHs given, if any).
    #[arg(short = 't', group = "mode")]
    list: bool,
    /// Extract the given PATHs.
    #[arg(short = 'x', group = "mode")]
    extract: bool,
    /// Compare the stream with the target tree.
    #[arg(short = 'C', group = "mode")]
    compare: bool,
    /// Browse the stream in an interactive shell and extract what you mark.
    #[arg(short = 'i', group = "mode")]
    interactive: bool,
    /// Remove the target's restore chain state (after the last increment).
    #[arg(long, group = "mode")]
    finish: bool,
    /// Input: a file, a device, or - for stdin (default: $TAPE). Repeat for
    /// a chain (level 0 and its increments, in any order): -x, -C, -t and -i
    /// combine them, -r applies them in the order given. The volumes of a
    /// dump on tapes or volume files are given in order, one -f each.
    #[arg(short = 'f', value_name = "IN", action = clap::ArgAction::Append)]
    file: Vec<String>,
    /// Work on this snapshot of the chain: an id, or the newest taken at or
    /// before a time (2026-11-22T10:00:00Z); default the newest given.
    #[arg(long, value_name = "SNAPSHOT|TIME", value_parser = parse_at)]
    at: Option<snapdump::restore::chain::At>,
    /// Directory to restore into (default: the current directory).
    #[arg(long, value_name = "DIR", default_value = ".")]
    target: PathBuf,
    /// With -r: apply the streams to this volume (see snapdump volume create)
    /// instead of a directory.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["list", "extract", "compare", "interactive", "finish"])]
    volume: Option<PathBuf>,
    /// Restore into a non-empty target, replacing entries in the way.
    #[arg(long)]
    force: bool,
    /// Fail at once if another restore into the target is running (default: wait).
    #[arg(long)]
    no_wait: bool,
    /// Also recompute the stream's SHA-256 digest list (as verify does);
    /// every record's XXH3 checksums are checked in any case.
    #[arg(long)]
    verify_digest: bool,
    #[command(flatten)]
    medium: ReadMediumArgs,
    #[command(flatten)]
    json: JsonArgs,
    /// Paths inside the stream (for -t, -x and -C; a directory brings its contents).
    paths: Vec<String>,
}

#[derive(Args)]
struct VerifyArgs {
    /// Input: a file, a device, or - for stdin (default: $TAPE); repeat
    /// for the volumes of a dump on tape.
    #[arg(short = 'f', value_name = "IN", action = clap::ArgAction::Append)]
    file: Vec<String>,
    #[command(flatten)]
    medium: ReadMediumArgs,
    #[command(flatten)]
    json: JsonArgs,
}

#[derive(Args)]
struct SnapshotsArgs {
    /// Catalog directory (default: /var/lib/snapdump, or $XDG_STATE_HOME/snapdump).
    #[arg(long, value_name = "DIR")]
    catalog: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Only this source.
    source: Option<PathBuf>,
}

fn parse_at(s: &str) -> Result<snapdump::restore::chain::At, String> {
    snapdump::restore::chain::parse_at(s).map_err(|e| format!("{e:#}"))
}

/// The `-f` values, or `$TAPE` when none was given.
fn inputs(files: &[String], m: &ReadMediumArgs) -> anyhow::Result<Vec<snapdump::media::Input>> {
    let specs = if files.is_empty() {
        vec![snapdump::media::stream_spec(None)?]
    } else {
        files.to_vec()
    };
    snapdump::media::group_inputs(&specs, m.file_number, m.new_volume.clone())
}

fn main() {
    snapdump::fsx::raise_fd_limit();
    let cli = Cli::parse();
    let report = Report::new();
    let code = match run(cli, &report) {
        Ok(code) => code,
        Err(e) => {
            snapdump::progress::println_err(&format!("snapdump: error: {e:#}"));
            EXIT_FAILURE
        }
    };
    std::process::exit(code);
}

/// Prints a JSON summary where the user asked for it: a file, stderr when
/// stdout carries the stream, else stdout.
fn emit_json<T: serde::Serialize>(j: &JsonArgs, stdout_busy: bool, v: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    if let Some(f) = &j.json_file {
        std::fs::write(f, text + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", f.display()))?;
    } else if j.json {
        if stdout_busy {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
    Ok(())
}

/// The lock policy `--no-wait` asks for.
fn wait_policy(no_wait: bool) -> snapdump::lock::Wait {
    if no_wait {
        snapdump::lock::Wait::No
    } else {
        snapdump::lock::Wait::Yes
    }
}

/// Prints `v` as JSON when asked, else `lines`, one per line, on stdout.
fn json_or_lines<T: serde::Serialize>(
    j: &JsonArgs,
    v: &T,
    lines: impl Iterator<Item = String>,
) -> anyhow::Result<()> {
    if j.json || j.json_file.is_some() {
        return emit_json(j, false, v);
    }
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for l in lines {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    Ok(())
}

fn run(cli: Cli, report: &Report) -> anyhow::Result<i32> {
    use snapdump::media::stream_spec;
    match cli.cmd {
        Cmd::Dump(a) => {
            let levels = [a.l0, a.l1, a.l2, a.l3, a.l4, a.l5, a.l6, a.l7, a.l8, a.l9];
            let level = levels.iter().position(|&b| b).unwrap_or(0) as u8;
            let output = stream_spec(a.file.first().map(|s| s.as_str()))?;
            let tape = snapdump::media::tape::writer::TapeOptions {
                block_size: a.block_kib * 1024,
                append: a.append,
                capacity: a.tape_capacity.or(a.volume_size).unwrap_or(0),
                new_volume: a.new_volume.clone(),
            };
            let (vpath, vsel) = snapdump::volume::split_spec(&a.source.to_string_lossy());
            if snapdump::volume::is_volume(&vpath) {
                if a.base.is_some() || a.resume {
                    anyhow::bail!("--base and --resume are for tree sources; from a volume, name the planes with --image");
                }
                let mut specs = vec![output.clone()];
                specs.extend(a.file.iter().skip(1).cloned());
                let opts = snapdump::volume::image::VolumeDumpOptions {
                    volume: vpath,
                    at: vsel,
                    level,
                    image: a.image,
                    specs,
                    tape,
                    compression: a.compress,
                };
                let s = snapdump::volume::image::dump_volume(&opts, report)?;
                emit_json(&a.json, output == "-", &s)?;
                return Ok(report.exit_status());
            }
            if a.image.is_some() {
                anyhow::bail!(
                    "--image selects planes of a volume, and {} is not a volume",
                    a.source.display()
                );
            }
            let opts = snapdump::dump::DumpOptions {
                level,
                output: output.clone(),
                volumes: a.file.iter().skip(1).cloned().collect(),
                tape,
                catalog_root: a.catalog.unwrap_or_else(snapdump::catalog::default_root),
                compression: a.compress,
                source: a.source,
                base: a.base,
                wait: wait_policy(a.no_wait),
                resume: a.resume,
            };
            let s = snapdump::dump::dump(&opts, report)?;
            emit_json(&a.json, output == "-", &s)?;
            Ok(report.exit_status())
        }
        Cmd::Restore(a) => {
            if a.finish {
                snapdump::target::apply::finish_chain(
                    &a.target,
                    wait_policy(a.no_wait),
                    a.force,
                    report,
                )?;
                return Ok(report.exit_status());
            }
            let inputs = inputs(&a.file, &a.medium)?;
            let digest = if a.verify_digest {
                snapdump::stream::reader::Digest::Check
            } else {
                snapdump::stream::reader::Digest::Skip
            };
            if a.list {
                use snapdump::restore::list::{list, Json, Lines};
                let out = std::io::BufWriter::new(std::io::stdout().lock());
                match &a.json.json_file {
                    Some(f) => {
                        let file = std::fs::File::create(f)
                            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", f.display()))?;
                        list(
                            &inputs,
                            a.at,
                            &a.paths,
                            report,
                            &mut Json::new(std::io::BufWriter::new(file)),
                        )?
                    }
                    None if a.json.json => {
                        list(&inputs, a.at, &a.paths, report, &mut Json::new(out))?
                    }
                    None => list(&inputs, a.at, &a.paths, report, &mut Lines(out))?,
                }
                return Ok(report.exit_status());
            }
            if a.extract {
                let opts = snapdump::restore::extract::ExtractOptions {
                    inputs,
                    target: a.target,
                    paths: a.paths,
                    at: a.at,
                    force: a.force,
                    digest,
                };
                let s = snapdump::restore::extract::extract(&opts, report)?;
                emit_json(&a.json, false, &s)?;
                return Ok(report.exit_status());
            }
            if a.compare {
                let opts = snapdump::restore::compare::CompareOptions {
                    inputs,
                    target: a.target,
                    paths: a.paths,
                    at: a.at,
                    digest,
                };
                let s = snapdump::restore::compare::compare(&opts, report)?;
                json_or_lines(&a.json, &s, s.differences.iter().map(|d| d.line()))?;
                if !s.differences.is_empty() {
                    return Ok(snapdump::report::EXIT_WARNINGS);
                }
                return Ok(report.exit_status());
            }
            if a.interactive {
                let opts = snapdump::restore::shell::ShellOptions {
                    inputs,
                    target: a.target,
                    at: a.at,
                    force: a.force,
                };
                snapdump::restore::shell::shell(&opts, report)?;
                return Ok(report.exit_status());
            }
            if !a.paths.is_empty() {
                anyhow::bail!(
                    "restore -r restores whole streams; to restore only {}, use restore -x",
                    a.paths.join(" ")
                );
            }
            if let Some(volume) = a.volume {
                let opts = snapdump::volume::receive::ReceiveOptions {
                    inputs,
                    volume,
                    wait: wait_policy(a.no_wait),
                    digest,
                };
                let s = snapdump::volume::receive::receive(&opts, report)?;
                if a.json.json || a.json.json_file.is_some() {
                    emit_json(&a.json, false, &s)?;
                } else {
                    for r in &s.received {
                        println!(
                            "{}: snapshot {} (level {}, {}) received as @{}: {} blocks carried, {} relocated",
                            r.stream,
                            r.snapshot.id,
                            r.snapshot.level,
                            r.snapshot.time.rfc3339(),
                            r.volume_id,
                            r.data_blocks,
                            r.relocated_blocks
                        );
                    }
                }
                return Ok(report.exit_status());
            }
            let mut summaries = Vec::new();
            for input in inputs {
                let opts = snapdump::target::summary::RestoreOptions {
                    input,
                    target: a.target.clone(),
                    force: a.force,
                    digest,
                    wait: wait_policy(a.no_wait),
                    restored_before: summaries
                        .last()
                        .map(|s: &snapdump::target::summary::RestoreSummary| s.snapshot.clone()),
                };
                summaries.extend(snapdump::target::full::restore(&opts, report)?);
            }
            if summaries.len() == 1 {
                emit_json(&a.json, false, &summaries[0])?;
            } else {
                emit_json(&a.json, false, &summaries)?;
            }
            Ok(report.exit_status())
        }
        Cmd::Verify(a) => {
            let mut inputs = inputs(&a.file, &a.medium)?;
            if inputs.len() != 1 {
                anyhow::bail!("verify checks one stream at a time; give its volumes, or run verify once per stream");
            }
            let input = inputs.remove(0);
            let all = snapdump::restore::verify::verify(&input, report)?;
            if a.json.json || a.json.json_file.is_some() {
                if all.len() == 1 {
                    emit_json(&a.json, false, &all[0])?;
                } else {
                    emit_json(&a.json, false, &all)?;
                }
            } else {
                for s in &all {
                    println!(
                        "{}: ok: snapshot {} level {} of {}, {} entries, {} data blocks ({} bytes), {} stream bytes",
                        input.name(),
                        s.header.snapshot.id,
                        s.header.snapshot.level,
                        snapdump::names::escape(&s.header.source_path),
                        s.entries,
                        s.data_blocks,
                        s.data_bytes,
                        s.stream_bytes
                    );
                }
            }
            Ok(report.exit_status())
        }
        Cmd::History(a) => {
            use snapdump::restore::history::{history, HistorySource};
            let from = if a.file.is_empty() {
                HistorySource::Catalog(a.catalog.unwrap_or_else(snapdump::catalog::default_root))
            } else {
                HistorySource::Streams(
                    a.file
                        .iter()
                        .map(|f| snapdump::media::Input::plain(f))
                        .collect::<anyhow::Result<_>>()?,
                )
            };
            let h = history(&from, &a.path, report)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                println!("{} in {}:", h.path, h.source);
                for v in &h.versions {
                    let mut what = v.change.to_string();
                    if v.changed_block_count > 0 {
                        what += &format!(
                            ", blocks {}",
                            snapdump::util::block_ranges(&v.changed_blocks)
                        );
                    }
                    if !v.attributes.is_empty() {
                        what += &format!(", {}", v.attributes.join(" "));
                    }
                    let size = v.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
                    println!(
                        "  snapshot {:>4}  level {}  {}  {:>12}  {what}",
                        v.snapshot.id,
                        v.snapshot.level,
                        v.snapshot.time.rfc3339(),
                        size
                    );
                }
            }
            Ok(report.exit_status())
        }
        Cmd::Volume(v) => volume(v, report),
        Cmd::Snapshots(a) => {
            let root = a.catalog.unwrap_or_else(snapdump::catalog::default_root);
            let list = snapdump::snapshots::list(&root, a.source.as_deref())?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for s in &list {
                    println!("{}", s.source);
                    for i in &s.snapshots {
                        let base = i.base.map(|b| b.to_string()).unwrap_or_else(|| "-".into());
                        println!(
                            "  {:>4}  {}  level {}  base {:>4}  {}  {} bytes  {}",
                            i.snap.id,
                            i.snap.time.rfc3339(),
                            i.snap.level,
                            base,
                            if i.full { "full" } else { "incremental" },
                            i.stream_bytes,
                            i.output
                        );
                    }
                }
            }
            Ok(0)
        }
    }
}

/// `PATH@SNAP` or `PATH SNAP`.
fn snapshot_arg(volume: &str, snapshot: Option<String>) -> anyhow::Result<(PathBuf, String)> {
    match (snapdump::volume::split_spec(volume), snapshot) {
        ((p, None), Some(s)) => Ok((p, s)),
        ((p, Some(s)), None) => Ok((p, s)),
        _ => anyhow::bail!("name one snapshot: PATH@SNAPSHOT, or PATH SNAPSHOT"),
    }
}

fn volume(cmd: VolumeCmd, report: &Report) -> anyhow::Result<i32> {
    use snapdump::volume;
    match cmd {
        VolumeCmd::Create {
            block_size,
            compact,
            size,
            path,
        } => {
            let opts = volume::store::CreateOptions {
                block_size,
                compact,
                max_bytes: size.unwrap_or(0),
            };
            volume::store::create(&path, &opts)?;
            Ok(0)
        }
        VolumeCmd::Ls {
            json,
            volume,
            paths,
        } => {
            let (p, sel) = volume::split_spec(&volume);
            let l = volume::read::ls(&p, sel.as_deref(), &paths, report)?;
            json_or_lines(
                &json,
                &l,
                l.entries.iter().map(|e| {
                    let slash = if e.kind == "dir" { "/" } else { "" };
                    format!("{}{slash}", e.path)
                }),
            )?;
            Ok(report.exit_status())
        }
        VolumeCmd::Extract {
            force,
            json,
            volume,
            target,
            paths,
        } => {
            let (p, at) = volume::split_spec(&volume);
            let opts = volume::read::ExtractOptions {
                volume: p,
                at,
                target,
                paths,
                force,
            };
            let s = volume::read::extract(&opts, report)?;
            emit_json(&json, false, &s)?;
            Ok(report.exit_status())
        }
        VolumeCmd::ExportTar { volume } => {
            let (p, sel) = volume::split_spec(&volume);
            volume::tar::export_stdout(&p, sel.as_deref(), report)?;
            Ok(report.exit_status())
        }
        VolumeCmd::Check { json, volume } => {
            let c = volume::check::check(&volume)?;
            let ok = c.problems.is_empty();
            let summary = format!(
                "{}: {}: generation {}, {} snapshots, {} blocks in use, {} checksums verified{}",
                c.volume,
                if ok { "ok" } else { "PROBLEMS" },
                c.generation,
                c.snapshots,
                c.blocks_in_use,
                c.blocks_checked,
                if c.shadow_blocks_reused > 0 {
                    format!(", {} shadow blocks reused", c.shadow_blocks_reused)
                } else {
                    String::new()
                }
            );
            json_or_lines(
                &json,
                &c,
                c.problems.iter().cloned().chain(std::iter::once(summary)),
            )?;
            Ok(if ok { 0 } else { EXIT_FAILURE })
        }
        VolumeCmd::Snapshots { json, volume } => {
            let t = volume::admin::snapshots(&volume)?;
            json_or_lines(
                &json,
                &t,
                t.snapshots.iter().map(|s| {
                    format!(
                        "@{:<4} snapshot {:>4}  level {}  {}  {}  {} blocks, {} freed if deleted{}",
                        s.volume_id,
                        s.snapshot.id,
                        s.snapshot.level,
                        s.snapshot.time.rfc3339(),
                        s.source,
                        s.blocks,
                        s.exclusive_blocks,
                        if s.shadow { "  shadow" } else { "" }
                    )
                }),
            )?;
            Ok(0)
        }
        VolumeCmd::DeleteSnapshot {
            no_wait,
            volume,
            snapshot,
        } => {
            let (p, s) = snapshot_arg(&volume, snapshot)?;
            volume::admin::delete_snapshot(&p, &s, wait_policy(no_wait))?;
            Ok(0)
        }
        VolumeCmd::Shadow {
            no_wait,
            volume,
            snapshot,
        } => {
            let (p, s) = snapshot_arg(&volume, snapshot)?;
            volume::admin::shadow(&p, &s, wait_policy(no_wait))?;
            Ok(0)
        }
    }
}
