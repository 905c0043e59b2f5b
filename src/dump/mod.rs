//! `snapdump dump`: scan a source, pick the image, write the stream, and
//! only then commit the new snapshot to the catalog.

pub mod pipeline;

use crate::catalog::{Catalog, SnapshotInfo};
use crate::fsx::{self, AsFdBorrow};
use crate::media::Output;
use crate::planes::Plane;
use crate::progress::Progress;
use crate::report::{Report, Warning};
use crate::scan::{scan, ScanOptions};
use crate::stream::header::{SnapshotRef, StreamHeader, FORMAT_VERSION};
use crate::stream::payload::encode_dealloc;
use crate::stream::record::RecordKind;
use crate::stream::writer::StreamWriter;
use crate::stream::META_RECORD_BYTES;
use crate::tree::{Kind, Time, Tree};
use crate::wire::Enc;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Data block size of new catalogs.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;
/// Default zstd level: on 256 KiB records it costs little more than level
/// 1-2 and matches `zstd -3` on whole streams (BENCHMARKS.md).
pub const DEFAULT_COMPRESSION: i32 = 3;

/// What the user asked for.
pub struct DumpOptions {
    /// Dump level 0..9.
    pub level: u8,
    /// Stream destination ("-" for stdout).
    pub output: String,
    /// Catalog root directory.
    pub catalog_root: PathBuf,
    /// zstd level (0 = off).
    pub compression: i32,
    /// The source tree.
    pub source: PathBuf,
}

/// The `--json` summary of a dump.
#[derive(Serialize)]
pub struct DumpSummary {
    /// Always "dump".
    pub command: &'static str,
    /// "ok" or "warnings".
    pub status: &'static str,
    /// Canonical source path.
    pub source: String,
    /// Where the stream went.
    pub output: String,
    /// The new snapshot.
    pub snapshot: SnapshotRef,
    /// Whether the stream is a full image.
    pub full: bool,
    /// The base snapshot, for increments.
    pub base: Option<SnapshotRef>,
    /// Bytes written.
    pub stream_bytes: u64,
    /// Directories, regular files, symlinks and other entries recorded.
    pub dirs: u64,
    /// Regular files recorded.
    pub files: u64,
    /// Symlinks recorded.
    pub symlinks: u64,
    /// Fifos, sockets and devices recorded.
    pub special: u64,
    /// Data blocks written.
    pub data_blocks: u64,
    /// Raw data bytes written.
    pub data_bytes: u64,
    /// Wall-clock seconds.
    pub elapsed_seconds: f64,
    /// Everything that was skipped or changed while read.
    pub warnings: Vec<Warning>,
}

/// Runs a dump. On error nothing is committed: the catalog is unchanged
/// and no partial stream is left under the output name.
pub fn dump(opts: &DumpOptions, report: &Report) -> Result<DumpSummary> {
    let started = std::time::Instant::now();
    if opts.level > 9 {
        bail!("dump level {} is out of range (0-9)", opts.level);
    }
    let source = std::fs::canonicalize(&opts.source)
        .with_context(|| format!("cannot access source {}", opts.source.display()))?;
    if !source.is_dir() {
        bail!("source {} is not a directory", source.display());
    }
    let source_bytes = source.as_os_str().as_bytes().to_vec();
    let mut catalog = Catalog::open(&opts.catalog_root, &source_bytes, DEFAULT_BLOCK_SIZE)?;
    let bs = catalog.state.block_size;
    if opts.level != 0 {
        bail!(
            "dump level {} is not supported yet by this build: run a level-0 dump (-0)",
            opts.level
        );
    }

    let (output, out) = Output::open(&opts.output)?;
    let result = run(opts, &mut catalog, &source, bs, output, out, report);
    let (summary, new_state) = result?;
    // The stream is complete, synced and in place: now it may become a base.
    catalog.state = new_state;
    catalog.commit()?;
    Ok(DumpSummary {
        elapsed_seconds: started.elapsed().as_secs_f64(),
        ..summary
    })
}

fn run(
    opts: &DumpOptions,
    catalog: &mut Catalog,
    source: &std::path::Path,
    bs: u32,
    output: Output,
    out: Box<dyn std::io::Write + Send>,
    report: &Report,
) -> Result<(DumpSummary, crate::catalog::CatalogState)> {
    let mut exclude = std::collections::HashSet::new();
    for p in [
        &PathBuf::from(&opts.output),
        &catalog.dir,
        &opts.catalog_root,
    ] {
        if let Ok(m) = std::fs::metadata(p) {
            exclude.insert((m.dev(), m.ino()));
        }
    }
    if let Some(tmp) = output_tmp_key(&opts.output) {
        exclude.insert(tmp);
    }
    let scan_opts = ScanOptions {
        block_size: bs as u64,
        exclude,
    };
    let written = (|| -> Result<_> {
        let mut tree = std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(256 << 20)
                .spawn_scoped(s, || scan(source, &scan_opts, report))
                .expect("spawn scan thread")
                .join()
                .expect("scan thread panicked")
        })?;
        let active = assign_vbns(&mut tree);
        let snap = SnapshotRef {
            id: catalog.state.next_snap_id,
            uuid: crate::util::random_id(),
            time: Time::now(),
            level: opts.level,
        };
        let header = StreamHeader {
            format_version: FORMAT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            source_uuid: catalog.state.source_uuid,
            source_path: catalog.state.source_path.clone(),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            snapshot: snap.clone(),
            full: true,
            base: None,
            block_size: bs,
            compression_level: opts.compression,
            entries: tree.dirents.len() as u64,
        };
        let mut w = StreamWriter::new(out, opts.compression, bs)?;
        w.write_record(RecordKind::Header, &header.encode())?;
        write_metadata(&mut w, &tree)?;
        let root = fsx::open_dir_path(source)
            .with_context(|| format!("cannot open source {}", source.display()))?;
        let _ = root.as_fd_borrow();
        let progress = Progress::bytes(
            tree.inodes
                .iter()
                .map(|i| i.block_count() * bs as u64)
                .sum(),
            "dump",
        );
        let data = pipeline::write_data(w, &tree, root, opts.compression, bs, report, &progress)?;
        drop(progress);
        let mut w = data.writer;
        w.write_record(RecordKind::Dealloc, &encode_dealloc(&[]))?;
        let (end, out, stream_bytes) = w.finish()?;
        drop(out);
        Ok((
            tree,
            active,
            snap,
            header,
            end,
            stream_bytes,
            data.sums,
            data.unstable,
        ))
    })();
    let (mut tree, active, snap, header, end, stream_bytes, sums, unstable) = match written {
        Ok(v) => v,
        Err(e) => {
            output.abort();
            return Err(e);
        }
    };
    let output_name = output.name.clone();
    output.commit()?;

    // Record the block checksums; files that changed while read get a zero
    // ctime so the next dump reads them again.
    let mut it = sums.into_iter();
    for inode in tree.inodes.iter_mut() {
        let n = inode.block_count() as usize;
        inode.sums = it.by_ref().take(n).collect();
        if unstable.contains(&inode.ino) {
            inode.attrs.ctime = Time::default();
        }
    }
    let mut state = catalog.state.clone();
    // A level-0 image reassigns every VBN: older snapshots are shadows, and
    // reuse clears their bits, which keeps them conservative as bases.
    for p in state.planes.iter_mut() {
        *p = p.and_not(&active);
    }
    state.planes.push(active.clone());
    state.snapshots.push(SnapshotInfo {
        snap: snap.clone(),
        base: None,
        full: true,
        stream_bytes,
        data_blocks: end.data_blocks,
        output: output_name.clone(),
    });
    state.active = active;
    state.next_snap_id += 1;
    let count = |k: Kind| tree.inodes.iter().filter(|i| i.kind == k).count() as u64;
    let summary = DumpSummary {
        command: "dump",
        status: report.status_word(),
        source: source.display().to_string(),
        output: output_name,
        snapshot: snap,
        full: header.full,
        base: header.base.clone(),
        stream_bytes,
        dirs: count(Kind::Dir),
        files: count(Kind::File),
        symlinks: count(Kind::Symlink),
        special: tree.inodes.len() as u64
            - count(Kind::Dir)
            - count(Kind::File)
            - count(Kind::Symlink),
        data_blocks: end.data_blocks,
        data_bytes: end.data_bytes,
        elapsed_seconds: 0.0,
        warnings: report.warnings(),
    };
    state.tree = Some(tree);
    Ok((summary, state))
}

/// (dev, ino) of the temporary file a regular-file output is written to, so
/// a stream written inside its own source is never dumped into itself.
fn output_tmp_key(spec: &str) -> Option<(u64, u64)> {
    if spec == "-" {
        return None;
    }
    let p = std::path::Path::new(spec);
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = format!(
        ".{}.snapdump-partial.{}",
        p.file_name()?.to_string_lossy(),
        std::process::id()
    );
    let m = std::fs::metadata(dir.join(name)).ok()?;
    Some((m.dev(), m.ino()))
}

/// Gives every data block a fresh VBN, file by file in stream order, so
/// each file's blocks are contiguous in the VBN space; returns the plane of
/// VBNs in use.
fn assign_vbns(tree: &mut Tree) -> Plane {
    let mut next = 1u64;
    let mut plane = Plane::new();
    for inode in tree.inodes.iter_mut() {
        for x in inode.extents.iter_mut() {
            x.vbn = next;
            plane.set_run(next, x.count);
            next += x.count;
        }
    }
    plane
}

/// Writes the metadata section: every dirent in depth-first order, with
/// its inode at its first appearance, in records of bounded size.
fn write_metadata(w: &mut StreamWriter, tree: &Tree) -> Result<()> {
    let mut e = Enc::new();
    let mut items = 0u32;
    let mut e2 = Enc::new();
    for i in 0..tree.dirents.len() {
        tree.encode_item(i, &mut e2, false);
        items += 1;
        if e2.buf.len() >= META_RECORD_BYTES {
            e.u32(items);
            e.fixed(&e2.buf);
            w.write_record(RecordKind::Meta, &e.buf)?;
            e = Enc::new();
            e2 = Enc::new();
            items = 0;
        }
    }
    if items > 0 {
        e.u32(items);
        e.fixed(&e2.buf);
        w.write_record(RecordKind::Meta, &e.buf)?;
    }
    w.end.entries = tree.dirents.len() as u64;
    w.end.inodes = tree.inodes.len() as u64;
    Ok(())
}
