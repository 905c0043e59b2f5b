//! `export-tar`: any snapshot of a chain of streams, or a subtree of it,
//! as a POSIX (pax) tar stream, straight from the streams (no restore, no
//! volume), by the writer `volume export-tar` uses.
//!
//! A tar stream holds each file's data right after its header, in tree
//! order, while a chain delivers blocks stream by stream (each block from
//! the newest stream that carries it, in that stream's order). The blocks
//! the chosen files need are therefore gathered first, by the same plan
//! and delivery as `restore -x` (only the data records that hold them, on
//! a seekable stream; one ordered pass on a pipe or tape), into an
//! unnamed scratch file in `$TMPDIR` (`O_TMPFILE`: gone with the process,
//! however it ends), each file at its own offset with its holes left
//! holes; the tar stream is then written from it. Memory stays bounded by
//! the metadata; the scratch file holds the exported data once.

use super::chain::{At, Chosen};
use super::fetch::{deliver, Plan};
use crate::fsx;
use crate::media::Input;
use crate::progress::Progress;
use crate::report::Report;
use crate::stream::reader::Digest;
use crate::target::select::{cut, mark_paths, normalize};
use crate::tarout::{regions, write_tree, ExportSummary, FileReader};
use crate::tree::{Inode, Kind};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsFd;

/// What the user asked for.
pub struct ExportOptions {
    /// The streams (`-f`, any order; unrelated ones are ignored).
    pub inputs: Vec<Input>,
    /// Paths to export, relative to the dump's root; none = everything.
    pub paths: Vec<String>,
    /// The snapshot to export (default: the newest given).
    pub at: Option<At>,
    /// Read every stream whole and check its digest list.
    pub digest: Digest,
}

/// Writes the chosen snapshot (or the chosen paths of it, with the
/// directories leading to them) to `out` as a tar stream.
pub fn export_tar(opts: &ExportOptions, out: impl Write, report: &Report) -> Result<ExportSummary> {
    let mut c = Chosen::open(&opts.inputs, opts.digest, opts.at)?;
    let top = c.top();
    let paths: Vec<Vec<u8>> = opts.paths.iter().map(|p| normalize(p)).collect();
    let (marks, missing) = mark_paths(&top.front.tree, &paths);
    for m in &missing {
        report.warn(m, format!("not in {}", top.describe()));
    }
    if !missing.is_empty() && missing.len() == paths.len() {
        bail!(
            "none of the given paths is in {}; list it with restore -t",
            top.describe()
        );
    }
    let sel = cut(&top.front.tree, &marks);
    let bs = top.header.block_size as u64;
    // Each file of the selection at its own block-aligned place.
    let mut place: HashMap<u64, u64> = HashMap::new();
    let mut end = 0u64;
    for (ino, inode) in sel.files(&top.front.tree) {
        place.insert(ino, end);
        end = end
            .checked_add(inode.size.div_ceil(bs) * bs)
            .ok_or_else(|| anyhow!("the chosen files are too large to export"))?;
    }
    let scratch_dir = std::env::temp_dir();
    let scratch = tempfile::tempfile_in(&scratch_dir).with_context(|| {
        format!(
            "cannot make a scratch file in {} (set TMPDIR to another directory)",
            scratch_dir.display()
        )
    })?;
    let plan = {
        let links: Vec<_> = c.chain.iter().map(|&i| &c.set.links[i]).collect();
        Plan::new(&links, sel.files(&c.top().front.tree))?
    };
    let need = plan.blocks().saturating_mul(bs);
    if let Some(free) = fsx::free_bytes(scratch.as_fd()) {
        if free < need {
            bail!(
                "export-tar gathers the {need} bytes it exports in a scratch file in {}, which has {free} bytes free; set TMPDIR to a directory with room",
                scratch_dir.display()
            );
        }
    }
    let progress = Progress::bytes(need, "export-tar");
    for (k, wants) in plan.per_link.into_iter().enumerate() {
        let link = &mut c.set.links[c.chain[k]];
        deliver(link, wants, |w, off, data| {
            progress.inc(data.len() as u64);
            fsx::pwrite_all(scratch.as_fd(), data, place[&w.ino] + off).map_err(|e| {
                anyhow!(
                    "cannot write the scratch file in {}: {e} (export-tar gathers the {need} bytes it exports there; set TMPDIR to a directory with room)",
                    scratch_dir.display()
                )
            })
        })?;
    }
    drop(progress);
    let tree = &sel.tree;
    write_tree(tree, bs, out, report, &mut |inode: &Inode| {
        debug_assert_eq!(inode.kind, Kind::File);
        Ok(Box::new(Scratch {
            file: &scratch,
            base: place[&inode.ino],
            regions: regions(inode, bs),
            next: 0,
            at: 0,
        }) as FileReader)
    })
}

/// One file's data regions, read back from the scratch file in order.
struct Scratch<'a> {
    file: &'a std::fs::File,
    base: u64,
    regions: Vec<(u64, u64)>,
    /// The region being read, and how far into it.
    next: usize,
    at: u64,
}

impl Read for Scratch<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while let Some(&(off, len)) = self.regions.get(self.next) {
            if self.at == len {
                self.next += 1;
                self.at = 0;
                continue;
            }
            let n = out.len().min((len - self.at).min(1 << 20) as usize);
            let got = fsx::pread_full(self.file.as_fd(), &mut out[..n], self.base + off + self.at)?;
            if got < n {
                // Every region was delivered whole (delivery fails
                // otherwise), so this is the scratch file gone wrong.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the scratch file is shorter than the data written to it",
                ));
            }
            self.at += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

/// Runs the export to stdout, refusing a terminal.
pub fn export_stdout(opts: &ExportOptions, report: &Report) -> Result<ExportSummary> {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        bail!("export-tar writes a tar stream to stdout; redirect it to a file or a pipe");
    }
    let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    export_tar(opts, out, report).context("export-tar")
}
