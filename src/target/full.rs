//! `restore -r`: streams applied in turn to a directory target. A full
//! image goes into an empty directory (the tree is made from the metadata
//! before any data arrives, files at their final size so holes stay holes);
//! an increment goes to [`super::apply`]. A damaged full image is salvaged:
//! everything readable is restored and the target is not recorded as the
//! snapshot.

use super::state::{StatePaths, STATE_DIR};
use super::summary::{committed, RestoreOptions, RestoreSummary};
use super::writer::DirWriter;
use crate::fsx;
use crate::progress::Progress;
use crate::report::Report;
use crate::stream::check::read_data;
use crate::stream::front::read_front;
use crate::stream::header::SnapshotRef;
use crate::stream::reader::{Digest, StreamReader};
use crate::stream::set::ImageSetReader;
use anyhow::{anyhow, bail, Context, Result};
use std::io;
use std::os::fd::AsFd;

/// `restore -r` of several inputs in the order given, each applied to
/// what the one before left; the summaries of all streams applied.
pub fn restore_all(
    inputs: Vec<crate::media::Input>,
    target: &std::path::Path,
    force: bool,
    digest: Digest,
    wait: crate::lock::Wait,
    inplace: bool,
    report: &Report,
) -> Result<Vec<RestoreSummary>> {
    check_order(&inputs, target)?;
    let mut summaries: Vec<RestoreSummary> = Vec::new();
    for input in inputs {
        let opts = RestoreOptions {
            input,
            target: target.to_path_buf(),
            force,
            digest,
            wait,
            restored_before: summaries.last().map(|s| s.snapshot.clone()),
            inplace,
        };
        summaries.extend(restore(&opts, report)?);
    }
    Ok(summaries)
}

/// Before anything is applied, the inputs that are files (read by their
/// headers and end records, a few KiB each) must form one chain in the
/// order given: a full image only first, each increment on the snapshot
/// the input before it brings. Otherwise the first streams would be
/// committed before the misfit was found, and a failure would leave a
/// target half-way along a chain it was not asked for.
fn check_order(inputs: &[crate::media::Input], target: &std::path::Path) -> Result<()> {
    use crate::media::MediumKind;
    if inputs.len() < 2 {
        return Ok(());
    }
    // The snapshot the input before brings (None: not known, not checked).
    let mut prev: Option<(SnapshotRef, &str)> = None;
    for (k, input) in inputs.iter().enumerate() {
        if input.kind != MediumKind::File {
            prev = None;
            continue;
        }
        let name = input.name();
        let Ok(file) = std::fs::File::open(&input.specs[0]) else {
            prev = None;
            continue; // the restore names it when it gets there
        };
        let Ok(first) = StreamReader::open(Box::new(file), name, Digest::Skip) else {
            prev = None;
            continue;
        };
        let first = first.header.clone();
        if k > 0 && first.full {
            bail!(
                "{name} is a full image, but a chain has one, first: give one snapshot's chain, its full image then its increments in order; nothing was restored into {}",
                target.display()
            );
        }
        if let (Some((p, pname)), Some(base)) = (&prev, &first.base) {
            if base.uuid != p.uuid {
                bail!(
                    "{name} is an increment on snapshot {}, but {pname} before it brings snapshot {}: give the chain in order; nothing was restored into {}",
                    base.id,
                    p.id,
                    target.display()
                );
            }
        }
        // A file may hold several streams back to back: the one its end
        // record closes is the one the next input follows.
        let last = std::fs::File::open(&input.specs[0])
            .ok()
            .and_then(|f| crate::stream::seek::SeekStream::open(Box::new(f), name).ok())
            .map(|s| crate::stream::reader::Records::header(&s).snapshot.clone());
        prev = last.map(|s| (s, name));
    }
    Ok(())
}

/// Runs `restore -r` of one input (which may hold several streams).
pub fn restore(opts: &RestoreOptions, report: &Report) -> Result<Vec<RestoreSummary>> {
    let target = opts.target.display();
    let nothing = |e: anyhow::Error, last: Option<&SnapshotRef>| match last {
        None => anyhow!("{e:#}; nothing was restored into {target}"),
        Some(s) => anyhow!(
            "{e:#}; the streams before it were restored: {target} holds snapshot {}",
            s.id
        ),
    };
    let mut set =
        ImageSetReader::open(&opts.input).map_err(|e| nothing(e, opts.restored_before.as_ref()))?;
    let mut out: Vec<RestoreSummary> = Vec::new();
    loop {
        // Without the digest check, damaged records are skipped and named
        // (a full image restores everything else; an increment refuses
        // them).
        let r = match opts.digest {
            Digest::Skip => set.next_salvaging(Digest::Skip),
            Digest::Check => set.next_stream(opts.digest),
        };
        let r = match r {
            Err(e) if !out.is_empty() => {
                // After a stream that was restored, what follows does not
                // open as a stream: named, and left alone; the restore of
                // what came before stands (exit status 1, not 2).
                report.warn(
                    opts.input.name().as_bytes(),
                    format!(
                        "the input goes on at byte {} after the stream(s) restored into {target}, but not with a stream that can be read ({e:#}); that part was not applied",
                        set.position()
                    ),
                );
                break;
            }
            r => {
                let last = out
                    .last()
                    .map(|s| &s.snapshot)
                    .or(opts.restored_before.as_ref());
                r.map_err(|e| nothing(e, last))?
            }
        };
        let Some(r) = r else { break };
        let summary = restore_stream(opts, r, report)?;
        let damaged = summary.damaged;
        out.push(summary);
        if damaged {
            break;
        }
    }
    if let Some(t) = set.trailing() {
        report.warn(opts.input.name().as_bytes(), t);
    }
    Ok(out)
}

/// Restores one stream of the input (an image set holds several).
fn restore_stream(
    opts: &RestoreOptions,
    mut r: StreamReader,
    report: &Report,
) -> Result<RestoreSummary> {
    let started = std::time::Instant::now();
    let h = r.header.clone();
    let target = &opts.target;
    match std::fs::symlink_metadata(target) {
        Ok(m) if !m.is_dir() => bail!("restore target {} is not a directory", target.display()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound && !h.full => bail!(
            "{}: snapshot {} is an increment (on snapshot {}), and the restore target {} does not exist: restore the chain from its level-0 stream first",
            r.name(),
            h.snapshot.id,
            h.base.as_ref().map(|b| b.id).unwrap_or(0),
            target.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir_all(target)
            .with_context(|| format!("cannot create restore target {}", target.display()))?,
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot access restore target {}", target.display()))
        }
    }
    // The lock first: what the target holds is only looked at while no
    // other restore can change it.
    let paths = StatePaths::new(target);
    // A refused increment leaves a directory that never held a restore as
    // it was: no state directory, its own times.
    let untouched = (!h.full && !paths.dir.exists())
        .then(|| std::fs::symlink_metadata(target).ok())
        .flatten();
    let lock = paths.lock(target, opts.wait)?;
    if !h.full {
        let r = super::apply::apply(opts, r, report, started);
        drop(lock);
        if let (Err(_), Some(before)) = (&r, untouched) {
            leave_as_found(target, &paths, &before);
        }
        return r;
    }
    let _lock = lock;
    if opts.force {
        // A pending increment is finished or undone first: entries a user
        // had in the target may be inside its working directory.
        super::apply::recover(target, true, &paths, report)?;
    } else {
        check_empty(target)?;
    }
    let root = fsx::open_dir_path(target)
        .with_context(|| format!("cannot open restore target {}", target.display()))?;
    let bs = h.block_size as u64;
    let front = read_front(&mut r).map_err(|e| {
        let e = match r.damage().first() {
            Some(d) => anyhow!(
                "{e:#} (the metadata section is damaged at stream byte {}: {})",
                d.from,
                d.why
            ),
            None => e,
        };
        anyhow!("{e:#}; nothing was restored into {}", target.display())
    })?;
    paths.begin(&h.snapshot, r.name())?;
    let mut apply = DirWriter::new(root, opts.force, report)?;
    let fail = |e: anyhow::Error| {
        anyhow!(
            "{e:#}; the target {} is incomplete: remove it, or rerun the restore with --force",
            target.display()
        )
    };
    apply.skeleton(&front.tree).map_err(fail)?;
    crate::progress::list_entries(&front.tree);
    let progress = Progress::bytes(front.image.carried_blocks().saturating_mul(bs), "restore");
    let tree = &front.tree;
    let totals = read_data(&mut r, &front, |s, d| {
        progress.inc(s.len as u64);
        apply.write(tree, s, d)
    })
    .map_err(fail)?;
    drop(progress);
    apply.finish(tree).map_err(fail)?;
    // A target that existed (empty) may have extended attributes of its
    // own: the snapshot's root has only its own.
    let root = fsx::open_dir_path(target)
        .with_context(|| format!("cannot open restore target {}", target.display()))?;
    if let Err(e) = super::delta::drop_stale_dir_xattrs(
        root.as_fd(),
        b"",
        tree.inode(crate::tree::ROOT_INO),
        tree,
    ) {
        report.warn(b".", format!("{e:#}"));
    }
    let damaged = !r.damage().is_empty();
    if damaged && salvaged(&r, &front, &totals, bs, target, report) > 0 {
        return Ok(RestoreSummary {
            damaged: true,
            ..RestoreSummary::new(
                opts,
                report,
                h.snapshot.clone(),
                front.entries,
                &totals,
                r.offset(),
                started,
            )
        });
    }
    let mut summary = committed(
        opts,
        report,
        &paths,
        &h,
        front,
        &totals,
        r.offset(),
        started,
    )?;
    summary.damaged = damaged;
    Ok(summary)
}

/// Removes the state directory a refused increment made in a directory
/// that held no restore (only its lock is in it), and gives the directory
/// its times back.
fn leave_as_found(target: &std::path::Path, paths: &StatePaths, before: &std::fs::Metadata) {
    let only_lock = std::fs::read_dir(&paths.dir)
        .map(|d| d.filter_map(|e| e.ok()).all(|e| e.file_name() == "lock"))
        .unwrap_or(false);
    if !only_lock {
        return;
    }
    let _ = std::fs::remove_file(paths.dir.join("lock"));
    if std::fs::remove_dir(&paths.dir).is_ok() {
        use std::os::unix::fs::MetadataExt;
        if let Ok(root) = fsx::open_dir_path(target) {
            let t = |sec: i64, nsec: i64| crate::tree::Time {
                sec,
                nsec: nsec as u32,
            };
            let _ = fsx::utimes_at(
                root.as_fd(),
                b"",
                t(before.atime(), before.atime_nsec()),
                t(before.mtime(), before.mtime_nsec()),
            );
        }
    }
}

/// Names what a damaged stream lost: each unreadable stretch, and each
/// file with the byte ranges it did not get; returns how many files lost
/// data. The target keeps everything else, but when files lost data it is
/// not recorded as holding the snapshot (increments cannot be applied to
/// it). Damage that lost no data (in the relocation table or the end
/// record) leaves a complete restore.
fn salvaged(
    r: &crate::stream::reader::StreamReader,
    front: &crate::stream::front::Front,
    totals: &crate::stream::check::DataTotals,
    bs: u64,
    target: &std::path::Path,
    report: &Report,
) -> usize {
    for d in r.damage() {
        let to =
            d.to.map(|t| t.to_string())
                .unwrap_or_else(|| "the end".into());
        report.warn(
            r.name().as_bytes(),
            format!(
                "stream bytes {}..{to} unreadable ({}); skipped",
                d.from, d.why
            ),
        );
    }
    let lost = crate::stream::check::lost_ranges(front, &totals.seen, bs);
    let mut files = std::collections::BTreeSet::new();
    let mut names: std::collections::HashMap<u64, Vec<&crate::tree::Dirent>> = Default::default();
    if !lost.is_empty() {
        for d in &front.tree.dirents {
            names.entry(d.ino).or_default().push(d);
        }
    }
    for (ino, from, to) in &lost {
        files.insert(*ino);
        // Every name of a hard-linked file shows the loss.
        for d in names.get(ino).map(|v| &v[..]).unwrap_or(&[]) {
            report.warn(
                &front.tree.dirent_path(d),
                format!("lost bytes {from}..{to} (zeros in the restored file)"),
            );
        }
    }
    if !files.is_empty() {
        report.warn(
            r.name().as_bytes(),
            format!(
                "{} damaged stretch(es); {} file(s) lost data (named above); everything else was restored into {}, which is not recorded as snapshot {}, so increments cannot be applied to it",
                r.damage().len(),
                files.len(),
                target.display(),
                r.header.snapshot.id
            ),
        );
    }
    files.len()
}

/// Refuses a target that holds anything but an empty `lost+found` (as on a
/// freshly made file system). Directories are read without touching their
/// access times (a refused restore leaves the target as it was).
fn check_empty(target: &std::path::Path) -> Result<()> {
    let root = fsx::open_dir_path(target)
        .with_context(|| format!("cannot read restore target {}", target.display()))?;
    let names = fsx::read_dir_names(root.as_fd())
        .with_context(|| format!("cannot read restore target {}", target.display()))?;
    for name in names {
        if name == b"lost+found"
            && fsx::open_dir(root.as_fd(), &name)
                .and_then(|d| fsx::read_dir_names(d.as_fd()))
                .is_ok_and(|n| n.is_empty())
        {
            continue;
        }
        if name == STATE_DIR.as_bytes() && is_only_lock(&target.join(STATE_DIR)) {
            // A lock file left by a restore that failed before it began.
            continue;
        }
        let what = if name == STATE_DIR.as_bytes() {
            " (it holds an earlier restore)"
        } else {
            ""
        };
        bail!(
            "restore target {} is not empty{what}; restore into an empty directory, or use --force to replace what is there",
            target.display()
        );
    }
    Ok(())
}

fn is_only_lock(state_dir: &std::path::Path) -> bool {
    fsx::open_dir_path(state_dir)
        .and_then(|d| fsx::read_dir_names(d.as_fd()))
        .is_ok_and(|n| n.iter().all(|e| e == b"lock"))
}
