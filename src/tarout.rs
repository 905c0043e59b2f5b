//! A snapshot's tree as a POSIX (pax) tar stream, written with the `tar`
//! crate: the one writer behind `volume export-tar` (data from a volume)
//! and `export-tar` (data from image streams).
//!
//! Long names, link targets, sub-second times, big ids and xattrs go in
//! pax records (SCHILY.xattr.*, as GNU tar and bsdtar read them); files
//! with holes use the GNU pax sparse format 1.0, so `tar --xattrs
//! --xattrs-include='*' --sparse -x` recreates them exactly. The pax
//! extended headers are assembled here rather than with the crate's
//! `append_pax_extensions`, which takes keywords as `&str`: an xattr name
//! is any bytes, and GNU tar reads a keyword as the bytes before `=`.

use crate::report::Report;
use crate::tree::{Inode, Kind, Time, Tree};
use anyhow::{anyhow, Result};
use std::io::{Read, Write};
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

/// The data of one regular file, as the reader of its data regions (the
/// bytes of [`regions`], concatenated, holes left out).
pub type FileReader<'a> = Box<dyn Read + 'a>;

/// Writes `tree` (the whole of it, root first, in its order) to `out` as a
/// tar stream; `data` opens the data of each regular file. Sockets cannot
/// be in a tar stream: each is named in a warning and left out.
pub fn write_tree<'t>(
    t: &'t Tree,
    bs: u64,
    out: impl Write,
    report: &Report,
    data: &mut dyn FnMut(&'t Inode) -> Result<FileReader<'t>>,
) -> Result<ExportSummary> {
    let mut b = tar::Builder::new(out);
    let mut sum = ExportSummary {
        entries: 0,
        data_bytes: 0,
    };
    let io = |e: std::io::Error| anyhow!("cannot write the tar stream: {e}");
    crate::progress::list_entries(t);
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
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
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
        xattr_records(inode, &mut pax);
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
                let regions = regions(inode, bs);
                let bytes: u64 = regions.iter().map(|r| r.1).sum();
                h.set_entry_type(EntryType::Regular);
                let reader = CheckedLen {
                    inner: data(inode)?,
                    left: bytes,
                };
                if bytes == inode.size {
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
                    pax.push((b"GNU.sparse.major".to_vec(), b"1".to_vec()));
                    pax.push((b"GNU.sparse.minor".to_vec(), b"0".to_vec()));
                    pax.push((b"GNU.sparse.name".to_vec(), name.clone()));
                    pax.push((
                        b"GNU.sparse.realsize".to_vec(),
                        inode.size.to_string().into_bytes(),
                    ));
                    h.set_size(map.len() as u64 + bytes);
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
                sum.data_bytes += bytes;
            }
        }
        sum.entries += 1;
    }
    b.into_inner().map_err(io)?.flush().map_err(io)?;
    Ok(sum)
}

/// A file's data reader that must yield exactly its regions' bytes: a
/// short one would shift every later entry of the tar stream, so it is an
/// error, never padding.
struct CheckedLen<'a> {
    inner: FileReader<'a>,
    left: u64,
}

impl Read for CheckedLen<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let cap = out.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut out[..cap])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("a file's data ended {} bytes early", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The byte ranges of a file that hold data, merged, in order.
pub fn regions(inode: &Inode, bs: u64) -> Vec<(u64, u64)> {
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
/// `%25` and `=` is written `%3D`; other bytes (a name need not be UTF-8)
/// are written as they are, which GNU tar reads back as they are.
fn xattr_records(inode: &Inode, pax: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    for (k, v) in &inode.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        for &c in k {
            match c {
                b'%' => key.extend_from_slice(b"%25"),
                b'=' => key.extend_from_slice(b"%3D"),
                c => key.push(c),
            }
        }
        pax.push((key, v.clone()));
    }
}

fn set_common(h: &mut Header, inode: &Inode, pax: &mut Vec<(Vec<u8>, Vec<u8>)>) {
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
    pax.push((b"mtime".to_vec(), pax_time(a.mtime)));
    pax.push((b"atime".to_vec(), pax_time(a.atime)));
}

fn pax_time(t: Time) -> Vec<u8> {
    // pax times are decimal seconds; before 1970 the fraction still counts
    // forward from the (negative) whole second.
    format!("{}.{:09}", t.sec, t.nsec).into_bytes()
}

fn link_name(h: &mut Header, target: &[u8], pax: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    if target.len() < NAME_LEN && std::str::from_utf8(target).is_ok() {
        let _ = h.set_link_name_literal(target);
    } else {
        // Bytes that are not UTF-8 go as they are: GNU tar reads them so
        // (and warns at every `hdrcharset` record, which it does not know).
        pax.push((b"linkpath".to_vec(), target.to_vec()));
    }
}

/// One pax record: `LEN KEY=VALUE\n`, LEN counting the whole record, its
/// own digits included.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len.to_string().len() + rest > len {
        len += 1;
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    debug_assert_eq!(r.len(), len);
    r
}

/// Writes the pax extended header (if any records), the header with
/// `name` (in pax when it does not fit) and the data.
fn finish<W: Write>(
    b: &mut tar::Builder<W>,
    mut h: Header,
    name: &[u8],
    mut pax: Vec<(Vec<u8>, Vec<u8>)>,
    data: impl Read,
) -> std::io::Result<()> {
    let fits = name.len() <= NAME_LEN && name.is_ascii();
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    if fits {
        field[..name.len()].copy_from_slice(name);
    } else {
        pax.push((b"path".to_vec(), name.to_vec()));
        let short: Vec<u8> = name
            .iter()
            .copied()
            .filter(u8::is_ascii)
            .take(NAME_LEN)
            .collect();
        field[..short.len()].copy_from_slice(&short);
    }
    h.set_cksum();
    if !pax.is_empty() {
        let body: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let mut x = Header::new_ustar();
        x.set_entry_type(EntryType::XHeader);
        x.set_size(body.len() as u64);
        // Unnamed, as the tar crate writes them: readers take the entry's
        // name from the records and the header after.
        x.set_cksum();
        b.append(&x, &body[..])?;
    }
    b.append(&h, data)
}

#[cfg(test)]
mod tests {
    use super::pax_record;

    #[test]
    fn pax_record_lengths_count_themselves() {
        assert_eq!(pax_record(b"path", b"a"), b"9 path=a\n");
        // Around the lengths where the count gains a digit.
        for n in 0..2000 {
            let r = pax_record(b"k", &vec![b'v'; n]);
            let sp = r.iter().position(|&c| c == b' ').unwrap();
            let len: usize = std::str::from_utf8(&r[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, r.len(), "value of {n} bytes");
        }
    }
}
