//! `snapdump restore`: -r, -x, -t, -C, -i and --finish.

use super::args::{JsonArgs, ReadMediumArgs, WaitArg};
use super::print;
use crate::at::At;
use crate::report::{Report, EXIT_WARNINGS};
use crate::stream::reader::Digest;
use anyhow::{anyhow, bail, Result};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `snapdump restore`.
#[derive(Args)]
#[command(
    group = clap::ArgGroup::new("mode").required(true).multiple(false),
    override_usage = "snapdump restore -r [-f IN]... [--target DIR] [--force] [--json]\n       \
snapdump restore -r [-f IN]... --volume PATH\n       \
snapdump restore -x [-f IN]... [--at SNAPSHOT|TIME] [--target DIR] [--force] [PATH]...\n       \
snapdump restore -C [-f IN]... [--at SNAPSHOT|TIME] [--target DIR] [PATH]...\n       \
snapdump restore -i [-f IN]... [--at SNAPSHOT|TIME] [--target DIR]\n       \
snapdump restore -t [-f IN]... [--at SNAPSHOT|TIME] [--json] [PATH]...\n       \
snapdump restore --finish [--target DIR]"
)]
pub struct RestoreArgs {
    /// Restore the whole stream into the target (see DESCRIPTION).
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
    ///
    /// Ends the target's chain: an apply left pending by an interruption is
    /// first finished (if it had been checked) or undone, so the target is
    /// at a snapshot; then the restore state is removed.
    #[arg(long, group = "mode")]
    finish: bool,
    /// Input: a file, a device, or - for stdin (default: $TAPE); repeat for
    /// a chain.
    ///
    /// A file, a block or character device, a FIFO, /dev/stdin, a process
    /// substitution (/dev/fd/N), a tape drive (/dev/nstN, /dev/stN), a
    /// virtual tape (*.tap), or - for standard input (once). A chain is a
    /// level 0 and its increments, in any order: -x, -C, -t and -i combine
    /// them, -r applies them in the order given. The volumes of a dump on
    /// tapes or volume files are given in order, one -f each.
    ///
    /// What the medium is is decided once, from the opened descriptor; a
    /// pipe or FIFO is never read to find out, and is read once, front to
    /// back. /dev/stdin, /dev/fd/N and /proc/self/fd/N are read from the
    /// descriptor, where it is, as - is; one pipe given under two names is
    /// refused where inputs are read side by side (-x, -t, -C, -i). Zero
    /// bytes after a stream's end (padding of fixed-block tapes, block
    /// devices and transfer tools) are ignored; other bytes after it are
    /// named in a warning (exit status 1). On a block device, nothing after
    /// the stream's end is read.
    #[arg(short = 'f', value_name = "IN", action = clap::ArgAction::Append)]
    file: Vec<String>,
    /// Work on this snapshot of the chain (default the newest given).
    ///
    /// Its id, or the newest snapshot taken at or before a time given in RFC
    /// 3339 (2026-11-22T10:00:00Z, '2026-11-22 10:00:00', UTC). A time given
    /// to the second covers that whole second, so a time as snapdump prints
    /// it selects the snapshot it was printed for.
    #[arg(long, value_name = "SNAPSHOT|TIME", value_parser = parse_at)]
    at: Option<At>,
    /// Directory to restore into (default: the current directory).
    #[arg(long, value_name = "DIR", default_value = ".")]
    target: PathBuf,
    /// With -r: apply the streams to this volume instead of a directory.
    ///
    /// One atomic commit per stream, relocating blocks and rewriting
    /// pointers where needed; see snapdump volume create and
    /// snapdump-volume(1).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["list", "extract", "compare", "interactive", "finish"])]
    volume: Option<PathBuf>,
    /// With -r, -x, -C or -t: the newest snapshot of this incremental
    /// mirror, whose base is the one -f names; the blocks that differ from
    /// the base come from the mirror. -r reads the base once, in order; -x
    /// and -C read of a base in a file only the records they need; -t reads
    /// only the mirror. See snapdump mirror.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["interactive", "finish", "volume"])]
    mirror: Option<PathBuf>,
    /// Restore into a non-empty target, replacing entries in the way.
    ///
    /// A full image: existing directories where the stream has directories
    /// are merged into (what else they
    /// hold stays), other entries in the way are replaced, each named in a
    /// warning (exit status 1); entries not in the way stay. With an
    /// increment: replace entries that are not part of the chain and are in
    /// the way, and files of the chain changed in the target, naming each.
    #[arg(long)]
    force: bool,
    /// With -r and an increment: finish it in place instead of building the
    /// new tree beside the target and swapping it in: only changed entries
    /// move, directories and unchanged files keep their inodes, no copies of
    /// changed files; a kill mid-finish leaves a mix of the two snapshots
    /// until the next restore finishes it.
    #[arg(long)]
    inplace: bool,
    #[command(flatten)]
    wait: WaitArg,
    /// Also recompute the stream's digest list (as verify does).
    ///
    /// Every record's XXH3 checksums are checked in any case, so
    /// damage is always detected; the digest list is the strong end-to-end
    /// digest and, on CPUs without SHA extensions, costs more than the rest
    /// of a restore.
    #[arg(long)]
    verify_digest: bool,
    #[command(flatten)]
    medium: ReadMediumArgs,
    #[command(flatten)]
    json: JsonArgs,
    /// Paths inside the stream (for -t, -x and -C; a directory brings its
    /// contents).
    paths: Vec<String>,
}

fn parse_at(s: &str) -> Result<At, String> {
    crate::at::parse_at(s).map_err(|e| format!("{e:#}"))
}

/// Runs `snapdump restore` in the mode asked for.
pub fn run(mut a: RestoreArgs, report: &Report) -> Result<i32> {
    a.target = super::args::target_dir(a.target);
    if a.finish {
        crate::target::apply::finish_chain(&a.target, a.wait.policy(), a.force, report)?;
        return Ok(report.exit_status());
    }
    let inputs = a.medium.inputs(&a.file)?;
    let digest = if a.verify_digest {
        Digest::Check
    } else {
        Digest::Skip
    };
    if let (true, Some(mirror)) = (a.extract, &a.mirror) {
        if inputs.len() != 1 {
            bail!("restore --mirror takes the mirror's base, one -f");
        }
        let m = crate::mirror::Mirror::open(mirror, a.wait.policy())?;
        let (blocks, bytes, read) = crate::restore::reintegrate::extract(
            &m, &inputs[0], &a.target, &a.paths, a.force, report,
        )?;
        let v = serde_json::json!({
            "command": "extract",
            "status": report.status_word(),
            "snapshot": m.state.newest,
            "target": a.target.display().to_string(),
            "data_blocks": blocks,
            "data_bytes": bytes,
            "base_bytes_read": read,
            "warnings": report.warnings(),
        });
        print::json(&a.json, false, &v)?;
    } else if let (true, Some(mirror)) = (a.list, &a.mirror) {
        let m = crate::mirror::Mirror::open(mirror, a.wait.policy())?;
        let t = &m.state.tree;
        let wanted: Vec<Vec<u8>> = a
            .paths
            .iter()
            .map(|p| crate::target::select::normalize(p))
            .collect();
        let (marks, missing) = crate::target::select::mark_paths(t, &wanted);
        for p in &missing {
            report.warn(
                p,
                format!("not in snapshot {} of the mirror", m.state.newest.id),
            );
        }
        let chosen = || {
            t.dirents
                .iter()
                .enumerate()
                .skip(1)
                .filter(|(i, _)| marks[*i])
                .map(|(_, d)| d)
        };
        if a.json.wanted() {
            let entries: Vec<_> = chosen().map(|d| crate::tree::EntryInfo::of(t, d)).collect();
            let v = serde_json::json!({
                "command": "list",
                "snapshot": m.state.newest,
                "entries": entries,
            });
            print::json(&a.json, false, &v)?;
        } else {
            print::lines(chosen().map(|d| {
                let mut line = crate::names::escape(&t.dirent_path(d));
                if t.inode(d.ino).kind == crate::tree::Kind::Dir {
                    line.push('/');
                }
                line
            }))?;
        }
    } else if a.list {
        list(&a, &inputs, report)?;
    } else if a.extract {
        let opts = crate::restore::extract::ExtractOptions {
            inputs,
            target: a.target,
            paths: a.paths,
            at: a.at,
            force: a.force,
            digest,
        };
        let s = crate::restore::extract::extract(&opts, report)?;
        print::json(&a.json, false, &s)?;
    } else if a.compare {
        let opts = crate::restore::compare::CompareOptions {
            inputs,
            target: a.target,
            paths: a.paths,
            at: a.at,
            digest,
            mirror: a.mirror.clone(),
        };
        let s = crate::restore::compare::compare(&opts, report)?;
        print::json_or_lines(&a.json, &s, s.differences.iter().map(|d| d.line()))?;
        if !s.differences.is_empty() {
            return Ok(EXIT_WARNINGS);
        }
    } else if a.interactive {
        let opts = crate::restore::shell::ShellOptions {
            inputs,
            target: a.target,
            at: a.at,
            force: a.force,
        };
        crate::restore::shell::shell(&opts, report)?;
    } else if !a.paths.is_empty() {
        bail!(
            "restore -r restores whole streams; to restore only {}, use restore -x",
            a.paths.join(" ")
        );
    } else if let Some(mirror) = a.mirror {
        if inputs.len() != 1 {
            bail!("restore --mirror takes the mirror's base, one -f");
        }
        let m = crate::mirror::Mirror::open(&mirror, a.wait.policy())?;
        let opts = crate::target::summary::RestoreOptions {
            input: inputs.into_iter().next().expect("one input"),
            target: a.target,
            force: a.force,
            digest,
            wait: a.wait.policy(),
            restored_before: None,
            inplace: a.inplace,
        };
        let s = crate::restore::reintegrate::restore(&m, &opts.input, &opts, report)?;
        print::json(&a.json, false, &s)?;
    } else if let Some(volume) = a.volume {
        let opts = crate::volume::receive::ReceiveOptions {
            inputs,
            volume,
            wait: a.wait.policy(),
            digest,
        };
        let s = crate::volume::receive::receive(&opts, report)?;
        if a.json.wanted() {
            print::json(&a.json, false, &s)?;
        } else {
            print::lines(s.received.iter().map(|r| {
                format!(
                    "{}: snapshot {} (level {}, {}) received as @{}: {} blocks carried, {} relocated",
                    r.stream,
                    r.snapshot.id,
                    r.snapshot.level,
                    r.snapshot.time.rfc3339(),
                    r.volume_id,
                    r.data_blocks,
                    r.relocated_blocks
                )
            }))?;
        }
    } else {
        let summaries = crate::target::full::restore_all(
            inputs,
            &a.target,
            a.force,
            digest,
            a.wait.policy(),
            a.inplace,
            report,
        )?;
        print::json_one_or_many(&a.json, &summaries)?;
    }
    Ok(report.exit_status())
}

/// `restore -t`: entries stream out as they are found, as lines or JSON.
fn list(a: &RestoreArgs, inputs: &[crate::media::Input], report: &Report) -> Result<()> {
    use crate::restore::list::{list, Json, Lines, ListSink};
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut sink: Box<dyn ListSink> = match &a.json.json_file {
        Some(f) => {
            let file = std::fs::File::create(f)
                .map_err(|e| anyhow!("cannot write {}: {e}", f.display()))?;
            Box::new(Json::new(std::io::BufWriter::new(file)))
        }
        None if a.json.json => Box::new(Json::new(out)),
        None => Box::new(Lines(out)),
    };
    list(inputs, a.at, &a.paths, report, sink.as_mut())
}
