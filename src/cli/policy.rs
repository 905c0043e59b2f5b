//! `snapdump policy check|plan|simulate|install` and `snapdump run`.

use super::args::{JsonArgs, WaitArg};
use super::print;
use crate::policy::install::Scheduler;
use crate::policy::Policy;
use crate::report::Report;
use crate::tree::Time;
use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// The policy subcommands.
#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Read and check a policy file; every mistake is named with its line.
    Check {
        /// The policy file (man 5 snapdump-policy).
        file: PathBuf,
    },
    /// What is due now (or at --at) and why: the dump and its level, a
    /// synthetic full, and every snapshot kept or pruned with the rule
    /// that decided it. Touches nothing.
    Plan {
        /// The policy file.
        file: PathBuf,
        /// Plan for this time instead of now (RFC 3339, UTC).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<Time>,
        /// Also list every snapshot with the rules that keep it.
        #[arg(long)]
        explain: bool,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Play the policy forward day by day on a model of the catalog (the
    /// levels dumped, synthetic fulls, streams kept, space, restore chain
    /// lengths), touching nothing.
    Simulate {
        /// The policy file.
        file: PathBuf,
        /// Days to simulate.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=36600))]
        days: u32,
        /// Start at this time instead of now (RFC 3339, UTC).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        from: Option<Time>,
        /// Start from an empty catalog instead of the source's.
        #[arg(long)]
        fresh: bool,
        /// Bytes of a full image in the model (e.g. 40G); default the
        /// newest full the catalog holds, else 1G.
        #[arg(long, value_name = "SIZE", value_parser = crate::media::tape::parse_size)]
        full_bytes: Option<u64>,
        /// Share of the full an increment carries per day, in per cent.
        #[arg(long, value_name = "PERCENT", default_value_t = 2.0, value_parser = parse_percent)]
        daily_change: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a systemd service and timer, or a cron.d file, that runs the
    /// policy every few minutes (the plan decides what is due).
    Install {
        /// The policy file.
        file: PathBuf,
        /// A systemd service and timer (Persistent=true).
        #[arg(long, conflicts_with = "cron", required_unless_present = "cron")]
        systemd: bool,
        /// A cron.d file.
        #[arg(long)]
        cron: bool,
        /// Where to write (default /etc/systemd/system or /etc/cron.d).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Minutes between runs.
        #[arg(long, value_name = "N", default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=59))]
        every_minutes: u32,
    },
}

/// Arguments of `snapdump run`.
#[derive(Args)]
pub struct RunArgs {
    /// The policy file.
    file: PathBuf,
    /// Act as if the clock said TIME (RFC 3339, UTC): plan for it and give
    /// the snapshots it takes that time. For testing a policy (with its
    /// own scratch catalog and streams directory: snapshots stamped ahead
    /// of the real clock make the next real run a level 0 that prunes
    /// nothing), or catching up a run at the time it was due.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    at: Option<Time>,
    /// Dump the source even when it is empty while its newest snapshot was
    /// not (by default such a run dumps nothing and warns: an unmounted
    /// file system looks like that).
    #[arg(long)]
    allow_empty: bool,
    #[command(flatten)]
    wait: WaitArg,
    #[command(flatten)]
    json: JsonArgs,
}

/// A share in per cent, 0 to 100 (NaN, infinities and negative shares
/// would make every figure of the model meaningless).
fn parse_percent(s: &str) -> Result<f64> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(anyhow!("{s:?} is not a share in per cent from 0 to 100")),
    }
}

/// A clock for `--at`: a UTC time from 1970 on (not a snapshot id: a
/// policy's clock is a time).
fn parse_time(s: &str) -> Result<Time> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|_| {
        anyhow!("{s:?} is not a time; give a UTC time such as 2026-12-01T03:00:00Z (from 1970 on)")
    })?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| anyhow!("{s:?}: times before 1970 are not supported"))?;
    Ok(Time {
        sec: d.as_secs() as i64,
        nsec: 0,
    })
}

/// Runs `snapdump policy ...`.
pub fn run_policy(c: PolicyCmd) -> Result<i32> {
    match c {
        PolicyCmd::Check { file } => {
            let p = Policy::load(&file)?;
            let to = match &p.streams.tape {
                Some(t) => format!(
                    "onto the tape {} (its index in {})",
                    t.device,
                    p.streams.dir.display()
                ),
                None => match &p.streams.volume {
                    Some(v) => format!(
                        "into the volume {} (its state in {})",
                        v.display(),
                        p.streams.dir.display()
                    ),
                    None => format!("into {}", p.streams.dir.display()),
                },
            };
            print::lines(std::iter::once(format!(
                "{}: ok: dumps {} {to}",
                file.display(),
                p.source.display(),
            )))?;
            Ok(0)
        }
        PolicyCmd::Plan {
            file,
            at,
            explain,
            json,
        } => {
            let p = Policy::load(&file)?;
            let pl = crate::policy::run::plan_now(&p, at)?;
            if json {
                print::json_stdout(&pl)?;
                return Ok(0);
            }
            let mut out = vec![format!("plan of {} at {}:", file.display(), pl.at)];
            out.push(match &pl.dump {
                Some(d) => format!(
                    "  dump level {}{}: {}",
                    d.level,
                    d.base
                        .map(|b| format!(" on snapshot {b}"))
                        .unwrap_or_default(),
                    d.why
                ),
                None => "  no dump is due".into(),
            });
            if let Some(c) = &pl.coalesce {
                out.push(format!(
                    "  coalesce snapshots {:?} into a full of snapshot {}: {}",
                    c.chain, c.snapshot, c.why
                ));
            }
            let prune = pl.prune();
            if prune.is_empty() && pl.then_prune.is_empty() {
                out.push("  nothing to prune".into());
            }
            if !pl.then_prune.is_empty() {
                out.push(format!(
                    "  once the dump is made, also prune snapshots {:?} (the new snapshot moves the rules on)",
                    pl.then_prune
                ));
            }
            for d in &pl.snapshots {
                if !d.keep || explain {
                    out.push(format!(
                        "  {} snapshot {:>5}  level {}  {}  {}: {}",
                        if d.keep { "keep " } else { "prune" },
                        d.snapshot,
                        d.level,
                        d.time,
                        d.stream,
                        d.why.join("; ")
                    ));
                }
            }
            print::lines(out)?;
            Ok(0)
        }
        PolicyCmd::Simulate {
            file,
            days,
            from,
            fresh,
            full_bytes,
            daily_change,
            json,
        } => {
            let p = Policy::load(&file)?;
            let snaps = if fresh {
                Vec::new()
            } else {
                crate::policy::run::snaps_of(&p)?.0
            };
            let full = full_bytes
                .or_else(|| {
                    snaps
                        .iter()
                        .rev()
                        .find(|s| s.base.is_none())
                        .map(|s| s.stream_bytes)
                })
                .unwrap_or(1 << 30);
            let start = from.unwrap_or_else(Time::now).sec;
            // Times are written as RFC 3339, which ends with the year 9999.
            const LAST: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
            if start.saturating_add(i64::from(days) * 86_400) > LAST {
                anyhow::bail!(
                    "{days} days from {} pass the end of 9999; simulate fewer days",
                    Time {
                        sec: start,
                        nsec: 0
                    }
                    .rfc3339()
                );
            }
            let sim = crate::policy::simulate::simulate(
                &p,
                snaps,
                start,
                days,
                &crate::policy::simulate::Model {
                    full_bytes: full,
                    daily_change_percent: daily_change,
                },
            );
            if json {
                print::json_stdout(&sim)?;
                return Ok(0);
            }
            let mut out = vec![format!(
                "{:<10}  {:<14}  {:>5}  {:>6}  {:>7}  {:>14}  {:>6}  {:>5}",
                "day", "dumps", "fulls", "pruned", "streams", "bytes", "newest", "worst"
            )];
            for d in &sim.days {
                let levels: Vec<String> = d.dumps.iter().map(|l| l.to_string()).collect();
                out.push(format!(
                    "{:<10}  {:<14}  {:>5}  {:>6}  {:>7}  {:>14}  {:>6}  {:>5}",
                    d.day,
                    levels.join(" "),
                    d.coalesced,
                    d.pruned,
                    d.streams_kept,
                    d.bytes_kept,
                    d.newest_chain,
                    d.worst_chain
                ));
            }
            out.push(format!(
                "peak bytes kept {}, longest restore chain {} streams",
                sim.peak_bytes_kept, sim.worst_chain
            ));
            if let (Some(t), Some(last)) = (&p.streams.tape, sim.days.last()) {
                out.push(format!(
                    "{} bytes written to {} in all: a tape frees whole cartridges, once none of their dumps is kept",
                    last.bytes_written, t.device
                ));
            }
            print::lines(out)?;
            Ok(0)
        }
        PolicyCmd::Install {
            file,
            systemd,
            cron: _,
            dir,
            every_minutes,
        } => {
            let p = Policy::load(&file)?;
            let s = if systemd {
                Scheduler::Systemd
            } else {
                Scheduler::Cron
            };
            let dir = dir.unwrap_or_else(|| match s {
                Scheduler::Systemd => "/etc/systemd/system".into(),
                Scheduler::Cron => "/etc/cron.d".into(),
            });
            let binary = std::env::current_exe().unwrap_or_else(|_| "snapdump".into());
            let written = crate::policy::install::install(&p, s, &dir, &binary, every_minutes)?;
            let mut out: Vec<String> = written
                .iter()
                .map(|w| format!("wrote {}", w.display()))
                .collect();
            if s == Scheduler::Systemd {
                let unit = crate::policy::install::unit_name(&p);
                let standard = std::path::Path::new("/etc/systemd/system");
                if std::fs::canonicalize(&dir).ok().as_deref() == Some(standard) {
                    out.push(format!(
                        "enable it with: systemctl daemon-reload && systemctl enable --now {unit}.timer"
                    ));
                } else {
                    out.push(format!(
                        "systemd does not read {}: copy {unit}.service and {unit}.timer to /etc/systemd/system, then: systemctl daemon-reload && systemctl enable --now {unit}.timer",
                        dir.display()
                    ));
                }
            }
            print::lines(out)?;
            Ok(0)
        }
    }
}

/// Runs `snapdump run`.
pub fn run(a: RunArgs, report: &Report) -> Result<i32> {
    let p = Policy::load(&a.file)?;
    if let Some(f) = &a.json.json_file {
        if let Some(what) = p.owns(f) {
            anyhow::bail!(
                "--json-file {} is {what} of policy {}; give a file the policy does not keep",
                f.display(),
                p.path.display()
            );
        }
    }
    let s = crate::policy::run::run(&p, a.at, a.allow_empty, a.wait.policy(), report)?;
    if a.json.wanted() {
        print::json(&a.json, false, &s)?;
    } else if !crate::progress::quiet() {
        let mut out = Vec::new();
        if let Some(d) = &s.dumped {
            out.push(format!(
                "dumped snapshot {} (level {}) to {}: {}",
                d.snapshot, d.level, d.stream, d.why
            ));
        }
        for r in s.replicated.iter().filter(|r| !r.received.is_empty()) {
            out.push(format!(
                "replicated snapshots {:?} to {} (deleted there: {:?})",
                r.received, r.to, r.deleted
            ));
        }
        for m in s
            .mirrored
            .iter()
            .filter(|m| !m.added.is_empty() || m.created.is_some())
        {
            if let Some(f) = m.created {
                out.push(format!("made mirror {} on full snapshot {f}", m.dir));
            }
            if !m.added.is_empty() {
                out.push(format!("mirror {} took in snapshots {:?}", m.dir, m.added));
            }
        }
        if let Some(c) = &s.coalesced {
            out.push(format!(
                "wrote a full of snapshot {} to {}: {}",
                c.snapshot, c.stream, c.why
            ));
        }
        for d in &s.pruned {
            out.push(format!("pruned snapshot {} ({})", d.snapshot, d.stream));
        }
        for w in &s.swept {
            out.push(format!("deleted {w}, left by a killed run"));
        }
        if out.is_empty() {
            out.push("nothing was due".into());
        }
        for l in out {
            crate::progress::println_err(&format!("snapdump: {l}"));
        }
    }
    Ok(report.exit_status())
}
