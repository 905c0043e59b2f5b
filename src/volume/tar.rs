//! `volume export-tar`: a snapshot of a volume as a POSIX (pax) tar
//! stream, by the writer all tar exports share ([`crate::tarout`]), with
//! each file's data read from the volume and checked block by block.

use super::format::VolSnapshot;
use super::read::read_run;
use super::store::{Access, Volume};
use crate::lock::Wait;
use crate::report::Report;
use crate::tarout::{write_tree, ExportSummary};
use crate::tree::Inode;
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::path::Path;

/// Writes snapshot `sel` of the volume at `path` to `out` as a tar stream.
pub fn export(
    path: &Path,
    sel: Option<&str>,
    out: impl Write,
    report: &Report,
) -> Result<ExportSummary> {
    let vol = Volume::open(path, Access::Read, Wait::Yes)?;
    let snap = vol.snapshot(sel)?;
    write_tree(&snap.tree, vol.bs(), out, report, &mut |inode| {
        Ok(Box::new(FileData::new(&vol, snap, inode)))
    })
}

/// A regular file's data regions, read from the volume in order (checked
/// block by block), as one `Read`.
struct FileData<'a> {
    vol: &'a Volume,
    snap: &'a VolSnapshot,
    inode: &'a Inode,
    extent: usize,
    k: u64,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
}

impl<'a> FileData<'a> {
    fn new(vol: &'a Volume, snap: &'a VolSnapshot, inode: &'a Inode) -> Self {
        FileData {
            vol,
            snap,
            inode,
            extent: 0,
            k: 0,
            buf: Vec::new(),
            pos: 0,
            len: 0,
        }
    }

    fn refill(&mut self) -> Result<bool> {
        let bs = self.vol.bs();
        while let Some(x) = self.inode.extents.get(self.extent) {
            if self.k >= x.count {
                self.extent += 1;
                self.k = 0;
                continue;
            }
            let n = (x.count - self.k).min(super::read::READ_BLOCKS);
            read_run(self.vol, self.snap, self.inode, x, self.k, n, &mut self.buf)?;
            let off = (x.block + self.k) * bs;
            self.len = (n * bs).min(self.inode.size.saturating_sub(off)) as usize;
            self.pos = 0;
            self.k += n;
            return Ok(true);
        }
        Ok(false)
    }
}

impl Read for FileData<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.len {
            match self.refill() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => return Err(std::io::Error::other(format!("{e:#}"))),
            }
        }
        let n = out.len().min(self.len - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Runs the export to stdout, refusing a terminal.
pub fn export_stdout(path: &Path, sel: Option<&str>, report: &Report) -> Result<ExportSummary> {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        anyhow::bail!(
            "volume export-tar writes a tar stream to stdout; redirect it to a file or a pipe"
        );
    }
    let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    export(path, sel, out, report).context("volume export-tar")
}
