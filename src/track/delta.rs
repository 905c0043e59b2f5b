//! A delta file: what the tracker saw change between two swaps (epochs),
//! kept beside the catalog until a dump no longer needs it.
//! formats/tracker.md specifies the bytes.

use super::fanotify::Changes;
use super::kernel::PageRange;
use crate::wire::{Dec, Enc};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SDTRACK1";
const VERSION: u32 = 1;

/// One epoch's changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// The tracker that recorded it (random per daemon start).
    pub tracker: [u8; 16],
    /// The epoch it ends (the swap that froze it).
    pub epoch: u64,
    /// log2 of the page size the ranges count in.
    pub page_shift: u32,
    /// Name space and inode changes.
    pub changes: Changes,
    /// Changed page ranges.
    pub ranges: Vec<PageRange>,
}

/// The file of epoch `epoch` in tracker directory `dir`.
pub fn path(dir: &Path, epoch: u64) -> PathBuf {
    dir.join(format!("delta.{epoch}"))
}

/// Encodes a delta (sorted, so equal deltas are equal bytes).
pub fn encode(d: &Delta) -> Vec<u8> {
    let mut d = d.clone();
    d.ranges.sort();
    let mut out = Vec::new();
    encode_into(&d, &mut |b| out.extend_from_slice(b));
    out
}

/// Emits the encoding of `d`, whose ranges are sorted, piece by piece
/// (a million ranges are 24 MB: they are never held twice).
fn encode_into(d: &Delta, put: &mut dyn FnMut(&[u8])) {
    let mut sum = crate::digest::Sha256Stream::default();
    let mut emit = |e: &mut Enc| {
        sum.update(&e.buf);
        put(&e.buf);
        e.buf.clear();
    };
    let mut e = Enc::new();
    e.fixed(MAGIC);
    e.u32(VERSION);
    e.fixed(&d.tracker);
    e.u64(d.epoch);
    match &d.changes.lost {
        Some(why) => {
            e.u8(1);
            e.bytes(why.as_bytes());
        }
        None => e.u8(0),
    }
    e.u32(d.page_shift);
    e.u32(d.ranges.len() as u32);
    for chunk in d.ranges.chunks(4096) {
        for r in chunk {
            e.u64(r.ino);
            e.u64(r.first);
            e.u64(r.pages);
        }
        emit(&mut e);
    }
    for set in [&d.changes.inodes, &d.changes.modified] {
        let mut v: Vec<u64> = set.iter().copied().collect();
        v.sort();
        e.u32(v.len() as u32);
        for i in v {
            e.u64(i);
        }
    }
    let mut dirs: Vec<_> = d.changes.names.iter().collect();
    dirs.sort_by_key(|(k, _)| **k);
    e.u32(dirs.len() as u32);
    for (dir, names) in dirs {
        e.u64(*dir);
        let mut names: Vec<_> = names.iter().collect();
        names.sort();
        e.u32(names.len() as u32);
        for n in names {
            e.bytes(n);
        }
    }
    emit(&mut e);
    put(&sum.current());
}

/// Decodes and checks a delta.
pub fn decode(b: &[u8]) -> Result<Delta> {
    if b.len() < 8 + 32 || &b[..8] != MAGIC {
        bail!("not a tracker delta (bad magic)");
    }
    let (body, sum) = b.split_at(b.len() - 32);
    if crate::digest::sha256(body) != sum {
        bail!("checksum mismatch");
    }
    let mut d = Dec::new(&body[8..], "tracker delta");
    let v = d.u32()?;
    if v != VERSION {
        bail!("version {v}, this snapdump reads {VERSION}");
    }
    let mut out = Delta {
        tracker: d.fixed(16)?.try_into()?,
        epoch: d.u64()?,
        ..Delta::default()
    };
    if d.u8()? == 1 {
        out.changes.lost = Some(String::from_utf8_lossy(d.bytes(4096)?).into_owned());
    }
    out.page_shift = d.u32()?;
    for _ in 0..d.count(24)? {
        out.ranges.push(PageRange {
            ino: d.u64()?,
            first: d.u64()?,
            pages: d.u64()?,
        });
    }
    for _ in 0..d.count(8)? {
        out.changes.inodes.insert(d.u64()?);
    }
    for _ in 0..d.count(8)? {
        out.changes.modified.insert(d.u64()?);
    }
    for _ in 0..d.count(12)? {
        let dir = d.u64()?;
        let set = out.changes.names.entry(dir).or_default();
        for _ in 0..d.count(4)? {
            set.insert(d.bytes(4096)?.to_vec());
        }
    }
    d.finish()?;
    Ok(out)
}

/// Writes a delta durably (its ranges sorted in place first).
pub fn write(dir: &Path, d: &mut Delta) -> Result<()> {
    use std::io::Write;
    d.ranges.sort_unstable();
    let to = path(dir, d.epoch);
    let tmp = dir.join(format!(".delta.{}.tmp", d.epoch));
    let r = (|| -> std::io::Result<()> {
        let f = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 16, &f);
        let mut err = None;
        encode_into(d, &mut |b| {
            if err.is_none() {
                err = w.write_all(b).err();
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        w.flush()?;
        drop(w);
        f.sync_all()
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e)
            .with_context(|| format!("cannot write {} (is the file system full?)", to.display()));
    }
    crate::atomic::rename_durably(&tmp, &to)
}

/// Reads the delta of `epoch`.
pub fn read(dir: &Path, epoch: u64) -> Result<Delta> {
    let p = path(dir, epoch);
    let b = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
    decode(&b).with_context(|| format!("tracker delta {} is damaged", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The delta of formats/tracker.md's golden file: every field used.
    fn golden() -> Delta {
        let mut d = Delta {
            tracker: *b"0123456789abcdef",
            epoch: 3,
            page_shift: 12,
            ..Default::default()
        };
        d.ranges = vec![
            PageRange {
                ino: 12,
                first: 7,
                pages: 2,
            },
            PageRange {
                ino: 14,
                first: 0,
                pages: 1 << 40,
            },
        ];
        d.changes.inodes.extend([2, 12, 14]);
        d.changes.modified.insert(14);
        d.changes
            .names
            .entry(2)
            .or_default()
            .extend([b"new".to_vec(), b"gone".to_vec()]);
        d
    }

    #[test]
    fn golden_file() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tracker-v1/delta.3");
        let want = encode(&golden());
        if std::env::var_os("SNAPDUMP_BLESS").is_some() {
            std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read(path).unwrap();
        assert_eq!(have, want, "run SNAPDUMP_BLESS=1 after a deliberate change");
        assert_eq!(decode(&have).unwrap(), golden());
    }

    #[test]
    fn round_trip_and_damage() {
        let mut d = Delta {
            tracker: [7; 16],
            epoch: 3,
            page_shift: 12,
            ..Default::default()
        };
        d.ranges.push(PageRange {
            ino: 12,
            first: 1,
            pages: 2,
        });
        d.changes.inodes.insert(12);
        d.changes.modified.insert(12);
        d.changes
            .names
            .entry(2)
            .or_default()
            .insert(b"a name".to_vec());
        d.changes.lost = Some("why".into());
        let b = encode(&d);
        assert_eq!(decode(&b).unwrap(), d);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 1;
            assert!(decode(&c).is_err());
        }
        assert!(decode(&b[..b.len() - 1]).is_err());
    }
}
