//! `snapdump replicate` and `snapdump serve`: one replication step, and
//! its receiving end.

use super::args::{CatalogArg, WaitArg};
use super::print;
use crate::replica::serve::{serve, Destination};
use crate::replica::{replicate, ReplicateOptions};
use crate::report::Report;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `snapdump replicate`.
#[derive(Args)]
pub struct ReplicateArgs {
    #[command(flatten)]
    catalog: CatalogArg,
    /// Remote shell for HOST:PATH destinations, split on spaces (as rsync's -e).
    #[arg(long, value_name = "CMD", default_value = "ssh")]
    rsh: String,
    /// The snapdump binary on the remote host.
    #[arg(long, value_name = "PATH", default_value = "snapdump")]
    remote_snapdump: String,
    /// Send a full copy whatever the destination holds (resolves a conflict).
    #[arg(long)]
    full: bool,
    /// A directory destination finishes increments in place instead of
    /// swapping a new tree in (see restore --inplace).
    #[arg(long)]
    inplace: bool,
    /// A tree source: enter file systems mounted below it (see dump
    /// --cross-mounts).
    #[arg(long)]
    cross_mounts: bool,
    /// For a volume source: the snapshot to send, a pointer name or what
    /// PATH@SNAPSHOT takes (default: its newest).
    #[arg(long, value_name = "NAME|ID")]
    snapshot: Option<String>,
    /// zstd level of the stream (0: none).
    #[arg(short = 'z', long = "compress", value_name = "LEVEL", default_value_t = crate::dump::DEFAULT_COMPRESSION)]
    compression: i32,
    /// Print a JSON summary: decision, reason, base, top, stream_bytes,
    /// bytes_sent, bytes_resumed, wire_bytes_sent, wire_bytes_received,
    /// elapsed_seconds.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    wait: WaitArg,
    /// A source tree (a new snapshot is taken now) or a volume PATH.vol[@SNAPSHOT].
    source: String,
    /// A volume PATH.vol, a directory, or [USER@]HOST:PATH (PATH ending in .vol: a volume).
    dest: String,
}

/// Runs `snapdump replicate`.
pub fn run(a: ReplicateArgs, report: &Report) -> Result<i32> {
    let opts = ReplicateOptions {
        source: a.source,
        dest: a.dest,
        catalog_root: a.catalog.root(),
        rsh: a.rsh,
        remote_snapdump: a.remote_snapdump,
        full: a.full,
        inplace: a.inplace,
        cross_mounts: a.cross_mounts,
        compression: a.compression,
        wait: a.wait.policy(),
        snapshot: a.snapshot,
    };
    let s = replicate(&opts, report)?;
    if a.json {
        print::json_stdout(&s)?;
    } else {
        let top = s
            .top
            .as_ref()
            .map(|t| t.id.to_string())
            .unwrap_or("-".into());
        let line = match s.decision.as_str() {
            "current" => format!("{}: up to date at snapshot {top}", s.destination),
            d => format!(
                "{}: {d} to snapshot {top}{}: {} stream bytes, {} sent, {} resumed, {:.2} s",
                s.destination,
                s.base
                    .as_ref()
                    .map(|b| format!(" from {}", b.id))
                    .unwrap_or_default(),
                s.stream_bytes,
                s.bytes_sent,
                s.bytes_resumed,
                s.elapsed_seconds
            ),
        };
        print::lines(std::iter::once(line))?;
    }
    Ok(report.exit_status())
}

/// Arguments of `snapdump serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    dest: ServeDest,
    /// Into a target: finish increments in place (see restore --inplace).
    #[arg(long)]
    inplace: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    wait: super::args::WaitArg,
}

/// Where `snapdump serve` receives: one of the two.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct ServeDest {
    /// Receive into this volume (created if missing).
    #[arg(long, value_name = "PATH")]
    volume: Option<PathBuf>,
    /// Receive into this restore target directory.
    #[arg(long, value_name = "DIR")]
    target: Option<PathBuf>,
}

/// Runs `snapdump serve` on stdin/stdout.
pub fn run_serve(a: ServeArgs, report: &Report) -> Result<i32> {
    let dest = match (a.dest.volume, a.dest.target) {
        (Some(v), _) => Destination::Volume(v),
        (_, Some(t)) => Destination::Target(super::args::target_dir(t)),
        _ => unreachable!("clap requires one"),
    };
    if !serve(&dest, a.wait.policy(), a.inplace, report)? {
        return Ok(crate::report::EXIT_FAILURE);
    }
    Ok(report.exit_status())
}

/// Arguments of `snapdump replicas`.
#[derive(Args)]
pub struct ReplicasArgs {
    #[command(flatten)]
    catalog: CatalogArg,
    /// Print JSON: replica_id, kind, destination, newest (its newest
    /// master), updated.
    #[arg(long)]
    json: bool,
    /// Forget this replica (its id, or a unique prefix of it).
    #[arg(long, value_name = "ID")]
    forget: Option<String>,
    /// The source tree or volume whose replicas to show.
    source: String,
}

/// Runs `snapdump replicas`.
pub fn run_replicas(a: ReplicasArgs) -> Result<i32> {
    let reg = crate::replica::registry_of(&a.source, &a.catalog.root())?;
    if let Some(id) = &a.forget {
        if !reg.forget(id)? {
            anyhow::bail!(
                "{} has no replica {id}; `snapdump replicas {}` lists them",
                a.source,
                a.source
            );
        }
        return Ok(0);
    }
    let r = reg.load()?;
    if a.json {
        print::json_stdout(&r.replicas)?;
        return Ok(0);
    }
    print::lines(r.replicas.iter().map(|x| {
        let newest = x
            .newest
            .as_ref()
            .map(|s| format!("snapshot {} ({})", s.id, s.time))
            .unwrap_or_else(|| "nothing".into());
        format!(
            "{}  {:<6}  {}  holds {newest}  seen {}",
            x.replica_id, x.kind, x.destination, x.updated
        )
    }))?;
    Ok(0)
}

/// `snapdump pointer`: named snapshots of a source.
#[derive(clap::Subcommand)]
pub enum PointerCmd {
    /// Name a snapshot (a catalog id for a tree, PATH@SNAPSHOT's selector for a volume).
    Set {
        #[command(flatten)]
        #[allow(missing_docs)]
        catalog: CatalogArg,
        /// The source tree or volume.
        source: String,
        /// The name.
        name: String,
        /// The snapshot.
        snapshot: String,
    },
    /// List the pointers (master is kept by replicate).
    Ls {
        #[command(flatten)]
        #[allow(missing_docs)]
        catalog: CatalogArg,
        /// Print JSON: name, snapshot.
        #[arg(long)]
        json: bool,
        /// The source tree or volume.
        source: String,
    },
    /// Remove a pointer.
    Rm {
        #[command(flatten)]
        #[allow(missing_docs)]
        catalog: CatalogArg,
        /// The source tree or volume.
        source: String,
        /// The name.
        name: String,
    },
}

/// Runs `snapdump pointer`.
pub fn run_pointer(c: PointerCmd) -> Result<i32> {
    match c {
        PointerCmd::Set {
            catalog,
            source,
            name,
            snapshot,
        } => {
            let s = crate::replica::set_pointer(&source, &catalog.root(), &name, &snapshot)?;
            print::lines(std::iter::once(format!(
                "{name} -> snapshot {} ({})",
                s.id, s.time
            )))?;
        }
        PointerCmd::Ls {
            catalog,
            json,
            source,
        } => {
            let r = crate::replica::registry_of(&source, &catalog.root())?.load()?;
            if json {
                print::json_stdout(&r.pointers)?;
            } else {
                print::lines(r.pointers.iter().map(|p| {
                    format!(
                        "{:<16} snapshot {:>5}  {}  {}",
                        p.name, p.snapshot.id, p.snapshot.time, p.snapshot.uuid
                    )
                }))?;
            }
        }
        PointerCmd::Rm {
            catalog,
            source,
            name,
        } => {
            let reg = crate::replica::registry_of(&source, &catalog.root())?;
            let mut found = false;
            reg.update(|r| {
                let n = r.pointers.len();
                r.pointers.retain(|p| p.name != name);
                found = r.pointers.len() != n;
            })?;
            if !found {
                anyhow::bail!(
                    "{source} has no pointer {name}; snapdump pointer ls {source} lists them"
                );
            }
        }
    }
    Ok(0)
}
