//! `snapdump volume`: create, list, extract, export, check and manage
//! volume images.

use super::args::{JsonArgs, WaitArg};
use super::print;
use crate::report::{Report, EXIT_FAILURE};
use crate::volume;
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

/// The volume subcommands.
#[derive(Subcommand)]
pub enum VolumeCmd {
    /// Create an empty volume file.
    Create {
        /// Block size in bytes (the streams received must use it).
        ///
        /// The default is the block size of snapdump's dumps. It may be
        /// smaller than the streams': each of their blocks then takes
        /// several of the volume's, and every pointer is rewritten at the
        /// volume's granularity.
        #[arg(long, value_name = "BYTES", default_value_t = 4096)]
        block_size: u32,
        /// Pack blocks at the lowest free VBNs instead of their source VBNs.
        ///
        /// A fragmented source then takes only its live size.
        #[arg(long)]
        compact: bool,
        /// Largest size the volume may grow to (e.g. 10G); default no limit.
        ///
        /// A receive that would not fit is refused.
        #[arg(long, value_name = "SIZE", value_parser = crate::media::tape::parse_size)]
        size: Option<u64>,
        /// The volume file to create.
        path: PathBuf,
    },
    /// List a snapshot's entries (PATH@SNAPSHOT; default the newest).
    Ls {
        #[command(flatten)]
        #[allow(missing_docs)]
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
        #[allow(missing_docs)]
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
        #[allow(missing_docs)]
        json: JsonArgs,
        /// The volume.
        volume: PathBuf,
    },
    /// List the snapshots a volume holds.
    Snapshots {
        #[command(flatten)]
        #[allow(missing_docs)]
        json: JsonArgs,
        /// The volume.
        volume: PathBuf,
    },
    /// Remove a snapshot; blocks nothing else uses are freed.
    DeleteSnapshot(SnapshotArgs),
    /// Make a snapshot a shadow: its blocks become reusable.
    Shadow(SnapshotArgs),
}

/// One snapshot of a volume, for the commands that change it.
#[derive(clap::Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    wait: WaitArg,
    #[command(flatten)]
    #[allow(missing_docs)]
    catalog: super::args::CatalogArg,
    /// Go ahead even if the snapshot is the newest master of a replica
    /// this volume feeds (its next replicate is then a full copy).
    #[arg(long)]
    force: bool,
    /// PATH@SNAPSHOT, or the volume followed by the snapshot.
    volume: String,
    /// The snapshot (an id or a time), unless given as PATH@SNAPSHOT.
    snapshot: Option<String>,
}

/// `PATH@SNAP` or `PATH SNAP`.
fn snapshot_arg(volume: &str, snapshot: Option<String>) -> Result<(PathBuf, String)> {
    match (volume::split_spec(volume), snapshot) {
        ((p, None), Some(s)) => Ok((p, s)),
        ((p, Some(s)), None) => Ok((p, s)),
        _ => anyhow::bail!("name one snapshot: PATH@SNAPSHOT, or PATH SNAPSHOT"),
    }
}

/// Refuses to delete or shadow a snapshot a replica still needs as its
/// base, unless forced.
fn keep_masters(
    path: &std::path::Path,
    sel: &str,
    catalog: super::args::CatalogArg,
    force: bool,
    verb: &str,
) -> Result<()> {
    if force {
        return Ok(());
    }
    let (what, needing) = crate::replica::replicas_needing(path, &catalog.root(), sel)?;
    if let Some(r) = needing.first() {
        anyhow::bail!(
            "{what} is the newest master of replica {} ({}{}): without it that replica's next replicate is a full copy; replicate to it first, forget it (snapdump replicas --forget {}), or {verb} with --force",
            r.replica_id,
            r.destination,
            if needing.len() > 1 {
                format!(", and {} more", needing.len() - 1)
            } else {
                String::new()
            },
            r.replica_id
        );
    }
    Ok(())
}

/// Runs a volume subcommand.
pub fn run(cmd: VolumeCmd, report: &Report) -> Result<i32> {
    match cmd {
        VolumeCmd::Create {
            block_size,
            compact,
            size,
            path,
        } => {
            let opts = volume::store::CreateOptions {
                uuid: None,
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
            print::json_or_lines(
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
            print::json(&json, false, &s)?;
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
            print::json_or_lines(
                &json,
                &c,
                c.problems.iter().cloned().chain(std::iter::once(summary)),
            )?;
            Ok(if ok { 0 } else { EXIT_FAILURE })
        }
        VolumeCmd::Snapshots { json, volume } => {
            let t = volume::admin::snapshots(&volume)?;
            print::json_or_lines(
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
        VolumeCmd::DeleteSnapshot(a) => {
            let (p, s) = snapshot_arg(&a.volume, a.snapshot)?;
            keep_masters(&p, &s, a.catalog, a.force, "delete")?;
            volume::admin::delete_snapshot(&p, &s, a.wait.policy())?;
            Ok(0)
        }
        VolumeCmd::Shadow(a) => {
            let (p, s) = snapshot_arg(&a.volume, a.snapshot)?;
            keep_masters(&p, &s, a.catalog, a.force, "shadow")?;
            volume::admin::shadow(&p, &s, a.wait.policy())?;
            Ok(0)
        }
    }
}
