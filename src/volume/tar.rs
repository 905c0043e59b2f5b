//! `volume export-tar`: a snapshot as a POSIX (pax) tar stream, written
//! with the `tar` crate. Long names, link targets, sub-second times, big
//! ids and xattrs go in pax records (SCHILY.xattr.*, as GNU tar and bsdtar
//! read them); files with holes use the GNU pax sparse format 1.0, so
//! `tar --xattrs --sparse -x` recreates them exactly.

use super::format::VolSnapshot;
use super::read::read_run;
use super::store::{Access, Volume};
use crate::lock::Wait;
use crate::report::Report;
use crate::tree::{Inode, Kind, Time};
use anyhow::{anyhow, Context, Result};
use std::io::{Read, Write};
use std::path::Path;
use tar::{EntryType, Header};

/// Bytes of the ustar name field.
const NAME_LEN: usize = 100;
/// Largest uid/gid the ustar header holds (7 octal digits).
const MAX_ID: u64 = 0o7777777;

/// What an export wrote.
pub struct ExportSummary {
    /// Entries written.
    pub entries: u64,
    /// File data bytes written.
    pub data_bytes: u64,
}

/// Writes snapshot `sel` of the volume at `path` to `out` as a tar stream.
pub fn export(
    path: &Path,
    sel: Option<&str>,
    out: impl Write,
    report: &Report,
) -> Result<ExportSummary> {
    let vol = Volume::open(path, Access::Read, Wait::Yes)?;
    let snap = vol.snapshot(sel)?;
    let t = &snap.tree;
    let mut b = tar::Builder::new(out);
    let mut sum = ExportSummary {
        entries: 0,
        data_bytes: 0,
    };
    let io = |e: std::io::Error| anyhow!("cannot write the tar stream: {e}");
    for (i, d) in t.dirents.iter().enumerate() {
        let inode = t.inode(d.ino);
        let mut name = if i == 0 {
            b"./".to_vec()
        } else {
            t.dirent_path(d)
        };
        if inode.kind == Kind::Dir && i != 0 {
            name.push(b'/');
        }
        let primary = std::ptr::eq(t.primary(d.ino), d);
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut h = Header::new_ustar();
        set_common(&mut h, inode, &mut pax);
        if !primary {
            h.set_entry_type(EntryType::Link);
            h.set_size(0);
            link_name(&mut h, &t.path(d.ino), &mut pax);
            finish(&mut b, h, &name, pax, std::io::empty()).map_err(io)?;
            sum.entries += 1;
            continue;
        }
        xattr_records(inode, &t.path(d.ino), &mut pax, report);
        match inode.kind {
            Kind::Dir => {
                h.set_entry_type(EntryType::Directory);
                h.set_size(0);
                finish(&mut b, h, &name, pax, std::io::empty()).map_err(io)?;
            }
            Kind::Symlink => {
                h.set_entry_type(EntryType::Symlink);
                h.set_size(0);
                link_name(&mut h, &inode.target, &mut pax);
                finish(&mut b, h, &name, pax, std::io::empty()).map_err(io)?;
            }
            Kind::CharDev | Kind::BlockDev | Kind::Fifo => {
                h.set_entry_type(match inode.kind {
                    Kind::CharDev => EntryType::Char,
                    Kind::BlockDev => EntryType::Block,
                    _ => EntryType::Fifo,
                });
                h.set_size(0);
                let rdev = inode.attrs.rdev;
                h.set_device_major(libc::major(rdev)).map_err(io)?;
                h.set_device_minor(libc::minor(rdev)).map_err(io)?;
                finish(&mut b, h, &name, pax, std::io::empty()).map_err(io)?;
            }
            Kind::Socket => {
                report.warn(
                    &t.path(d.ino),
                    "socket not exported: tar cannot hold sockets",
                );
                continue;
            }
            Kind::File => {
                let regions = regions(inode, vol.bs());
                let data: u64 = regions.iter().map(|r| r.1).sum();
                h.set_entry_type(EntryType::Regular);
                let reader = FileData::new(&vol, snap, inode);
                if data == inode.size {
                    h.set_size(inode.size);
                    finish(&mut b, h, &name, pax, reader).map_err(io)?;
                } else {
                    // GNU pax sparse format 1.0: the map, in decimal lines
                    // padded to a 512-byte block, precedes the data.
                    let mut map = format!("{}\n", regions.len() + 1);
                    for (off, len) in &regions {
                        map += &format!("{off}\n{len}\n");
                    }
                    map += &format!("{}\n0\n", inode.size);
                    let mut map = map.into_bytes();
                    map.resize(map.len().div_ceil(512) * 512, 0);
                    pax.push(("GNU.sparse.major".into(), b"1".to_vec()));
                    pax.push(("GNU.sparse.minor".into(), b"0".to_vec()));
                    pax.push(("GNU.sparse.name".into(), name.clone()));
                    pax.push((
                        "GNU.sparse.realsize".into(),
                        inode.size.to_string().into_bytes(),
                    ));
                    h.set_size(map.len() as u64 + data);
                    let base = name.rsplit(|&c| c == b'/').next().unwrap_or(b"f").to_vec();
                    let mut shown = b"GNUSparseFile.0/".to_vec();
                    shown.extend_from_slice(&base);
                    finish(
                        &mut b,
                        h,
                        &shown,
                        pax,
                        std::io::Cursor::new(map).chain(reader),
                    )
                    .map_err(io)?;
                }
                sum.data_bytes += data;
            }
        }
        sum.entries += 1;
    }
    b.finish().map_err(io)?;
    Ok(sum)
}

/// The byte ranges of a file that hold data, merged, in order.
fn regions(inode: &Inode, bs: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for x in &inode.extents {
        let off = x.block * bs;
        let len = (x.count * bs).min(inode.size.saturating_sub(off));
        match out.last_mut() {
            Some((o, l)) if *o + *l == off => *l += len,
            _ => out.push((off, len)),
        }
    }
    out
}

/// The pax records of an inode's extended attributes, `SCHILY.xattr.NAME`
/// as GNU tar and bsdtar read them. A pax keyword ends at the first `=`,
/// so, as GNU tar (1.32 on) writes and reads them, `%` in a name is written
/// `%25` and `=` is written `%3D`. A keyword is UTF-8: a name that is not is
/// left out with a warning (exit status 1), never written as another name.
fn xattr_records(inode: &Inode, path: &[u8], pax: &mut Vec<(String, Vec<u8>)>, report: &Report) {
    for (k, v) in &inode.xattrs {
        match std::str::from_utf8(k) {
            Ok(name) => {
                let encoded = name.replace('%', "%25").replace('=', "%3D");
                pax.push((format!("SCHILY.xattr.{encoded}"), v.clone()));
            }
            Err(_) => report.warn(
                path,
                format!(
                    "extended attribute {} not exported: a pax header cannot carry a name that is not UTF-8",
                    crate::names::escape(k)
                ),
            ),
        }
    }
}

fn set_common(h: &mut Header, inode: &Inode, pax: &mut Vec<(String, Vec<u8>)>) {
    let a = &inode.attrs;
    h.set_mode(a.mode & 0o7777);
    for (id, key) in [(a.uid as u64, "uid"), (a.gid as u64, "gid")] {
        if id > MAX_ID {
            pax.push((key.into(), id.to_string().into_bytes()));
        }
    }
    h.set_uid((a.uid as u64).min(MAX_ID));
    h.set_gid((a.gid as u64).min(MAX_ID));
    h.set_mtime(a.mtime.sec.max(0) as u64);
    pax.push(("mtime".into(), pax_time(a.mtime)));
    pax.push(("atime".into(), pax_time(a.atime)));
}

fn pax_time(t: Time) -> Vec<u8> {
    // pax times are decimal seconds; before 1970 the fraction still counts
    // forward from the (negative) whole second.
    format!("{}.{:09}", t.sec, t.nsec).into_bytes()
}

fn link_name(h: &mut Header, target: &[u8], pax: &mut Vec<(String, Vec<u8>)>) {
    if target.len() < NAME_LEN && std::str::from_utf8(target).is_ok() {
        let _ = h.set_link_name_literal(target);
    } else {
        pax.push(("linkpath".into(), target.to_vec()));
        if std::str::from_utf8(target).is_err() {
            pax.push(("hdrcharset".into(), b"BINARY".to_vec()));
        }
    }
}

/// Writes the pax record (if any), the header with `name` (in pax when it
/// does not fit) and the data.
fn finish<W: Write>(
    b: &mut tar::Builder<W>,
    mut h: Header,
    name: &[u8],
    mut pax: Vec<(String, Vec<u8>)>,
    data: impl Read,
) -> std::io::Result<()> {
    let fits = name.len() <= NAME_LEN && name.is_ascii();
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    if fits {
        field[..name.len()].copy_from_slice(name);
    } else {
        pax.push(("path".into(), name.to_vec()));
        if std::str::from_utf8(name).is_err() && !pax.iter().any(|p| p.0 == "hdrcharset") {
            pax.push(("hdrcharset".into(), b"BINARY".to_vec()));
        }
        let short: Vec<u8> = name
            .iter()
            .copied()
            .filter(u8::is_ascii)
            .take(NAME_LEN)
            .collect();
        field[..short.len()].copy_from_slice(&short);
    }
    h.set_cksum();
    b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
    b.append(&h, data)
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
