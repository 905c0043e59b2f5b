//! `snapdump track start|status|stop`: the change tracker daemon.

use super::args::CatalogArg;
use super::print;
use crate::track;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

/// The tracker's subcommands.
#[derive(Subcommand)]
pub enum TrackCmd {
    /// Start tracking changes of a source (a daemon; one per source and
    /// catalog).
    Start(StartArgs),
    /// Show what the trackers of a catalog have seen.
    Status(StatusArgs),
    /// Stop a source's tracker.
    Stop(StopArgs),
}

/// `track start`.
#[derive(Args)]
pub struct StartArgs {
    /// Stay in the foreground (for systemd's Type=simple); logs go to
    /// stderr.
    #[arg(long)]
    foreground: bool,
    /// Entries each of the two page maps holds before the tracker reports
    /// itself full (and the next increment walks the tree); an entry is a
    /// range of pages, or a bitmap of 64.
    #[arg(long, value_name = "N", default_value_t = 1 << 21, value_parser = clap::value_parser!(u32).range(16..))]
    max_ranges: u32,
    #[command(flatten)]
    catalog: CatalogArg,
    /// The source tree to track (on ext4, xfs or btrfs).
    source: PathBuf,
}

/// `track status`.
#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    catalog: CatalogArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Only this source's tracker (default: every tracked source).
    source: Option<PathBuf>,
}

/// `track stop`.
#[derive(Args)]
pub struct StopArgs {
    #[command(flatten)]
    catalog: CatalogArg,
    /// The source whose tracker to stop (default: every one of the catalog).
    source: Option<PathBuf>,
}

fn canonical(source: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(source)
        .with_context(|| format!("cannot resolve source {}", source.display()))
}

/// Runs a `track` subcommand.
pub fn run(cmd: TrackCmd) -> Result<i32> {
    match cmd {
        TrackCmd::Start(a) => start(a),
        TrackCmd::Status(a) => status(a),
        TrackCmd::Stop(a) => stop(a),
    }
}

fn start(a: StartArgs) -> Result<i32> {
    let source = canonical(&a.source)?;
    if !source.is_dir() {
        bail!("source {} is not a directory", source.display());
    }
    let root = a.catalog.root();
    let dir = track::tracker_dir(&root, &source);
    if let Some(v) = track::request(&dir, "status")? {
        bail!(
            "{} is already tracked (pid {}); `snapdump track stop` it first",
            source.display(),
            v["pid"]
        );
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("the change tracker needs root (fanotify file-system marks and BPF)");
    }
    track::fs_type(&source)?;
    if a.foreground {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        track::daemon::run(
            track::daemon::DaemonOptions {
                source: source.clone(),
                dir,
                capacity: a.max_ranges,
            },
            |s| {
                crate::progress::println_err(&format!(
                    "snapdump: tracking {} ({}, pid {})",
                    s.source, s.file_system, s.pid
                ))
            },
        )?;
        return Ok(0);
    }
    let exe = std::env::current_exe().context("cannot find the snapdump binary")?;
    let args: Vec<std::ffi::OsString> = vec![
        "track".into(),
        "start".into(),
        "--foreground".into(),
        "--max-ranges".into(),
        a.max_ranges.to_string().into(),
        "--catalog".into(),
        root.into(),
        source.into(),
    ];
    let s = track::spawn(&exe, &args, &dir)?;
    println!("tracking {} ({}, pid {})", s.source, s.file_system, s.pid);
    Ok(0)
}

/// The tracker directories of a catalog (of one source, or of all).
fn dirs(root: &Path, source: Option<&Path>) -> Result<Vec<PathBuf>> {
    if let Some(s) = source {
        return Ok(vec![track::tracker_dir(root, &canonical(s)?)]);
    }
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("sources")) {
        for e in rd.flatten() {
            let d = e.path().join("tracker");
            if d.is_dir() {
                out.push(d);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn status(a: StatusArgs) -> Result<i32> {
    let root = a.catalog.root();
    let mut all = Vec::new();
    for d in dirs(&root, a.source.as_deref())? {
        if let Some(v) = track::request(&d, "status")? {
            all.push(serde_json::from_value::<track::Status>(v)?);
        }
    }
    if a.source.is_some() && all.is_empty() {
        if a.json {
            print::json_stdout(&all)?;
        } else {
            println!("not tracked");
        }
        return Ok(3);
    }
    if a.json {
        print::json_stdout(&all)?;
        return Ok(0);
    }
    for s in &all {
        println!(
            "{}: {} since {}, pid {}, epoch {}, {} page ranges marked ({} refused, room for {}), {} inodes and {} directories changed{}",
            s.source,
            s.file_system,
            s.since,
            s.pid,
            s.epoch,
            s.ranges_marked,
            s.ranges_refused,
            s.capacity,
            s.inodes_changed,
            s.directories_changed,
            s.lost
                .as_ref()
                .map(|l| format!("; changes lost: {l}"))
                .unwrap_or_default()
        );
    }
    Ok(0)
}

fn stop(a: StopArgs) -> Result<i32> {
    let root = a.catalog.root();
    let mut stopped = 0;
    for d in dirs(&root, a.source.as_deref())? {
        let Some(v) = track::request(&d, "status")? else {
            continue;
        };
        let pid = v["pid"].as_u64().unwrap_or(0) as u32;
        track::request(&d, "stop")?;
        // Wait until it is gone: a start right after must not find it.
        let t = std::time::Instant::now();
        while crate::lock::process_alive(pid) && t.elapsed() < std::time::Duration::from_secs(10) {
            if track::request(&d, "status").ok().flatten().is_none() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        println!("stopped tracking {}", v["source"].as_str().unwrap_or("?"));
        stopped += 1;
    }
    if let (0, Some(source)) = (stopped, &a.source) {
        bail!(
            "{} is not tracked (no tracker runs for it in catalog {})",
            source.display(),
            root.display()
        );
    }
    Ok(0)
}
