//! A simulated st drive, for testing the binary's own tape path without
//! hardware: with `SNAPDUMP_SIMULATED_ST=DIR` set, every `-f` name of the
//! form `/dev/nstN` or `/dev/stN` is served by this drive instead of the st
//! driver (nothing under `/dev` is opened or created). It sits under the
//! same [`TapeIo`] trait as the real system calls ([`super::st::RealSt`]),
//! so everything above it — [`super::st::StDevice`], the tape writer and
//! reader, the command line — is the code a real drive runs.
//!
//! The cartridge lives in DIR (formats/tape.md, "The simulated st drive"):
//! `DIR/cartridge` holds its records and filemarks, `DIR/position` the head
//! position (kept across runs for `/dev/nstN`; `/dev/stN` rewinds when
//! closed), `DIR/write-protect` write-protects it. The drive reports the
//! early warning (one write refused with ENOSPC) once the records before
//! the head hold `SNAPDUMP_SIMULATED_ST_CAPACITY` bytes, and the physical
//! end (ENOSPC for good) a sixteenth further plus 64 KiB. A `--new-volume`
//! script changes cartridges by moving `DIR/cartridge` out and another in.

use super::st::{
    MtGet, MtOp, TapeIo, GMT_BOT, GMT_EOD, GMT_EOF, GMT_EOT, GMT_ONLINE, GMT_WR_PROT, MTBSF, MTBSR,
    MTEOM, MTFSF, MTREW, MTSETBLK, MTWEOF,
};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The environment variable that turns the simulation on.
pub const ENV_DIR: &str = "SNAPDUMP_SIMULATED_ST";
/// The environment variable giving the cartridge's capacity.
pub const ENV_CAPACITY: &str = "SNAPDUMP_SIMULATED_ST_CAPACITY";

/// The simulation's cartridge directory, when it is on.
pub fn dir() -> Option<PathBuf> {
    std::env::var_os(ENV_DIR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Whether `spec` names an st device (`/dev/nstN`: false, `/dev/stN`:
/// true = rewinds when closed) by its name alone.
pub fn st_name(spec: &str) -> Option<bool> {
    let rest = spec.strip_prefix("/dev/")?;
    let (rewinds, digits) = match rest.strip_prefix("nst") {
        Some(d) => (false, d),
        None => (true, rest.strip_prefix("st")?),
    };
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(rewinds)
}

/// What sits at one place of the tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    /// A record of `len` bytes whose data starts at byte `at` of the file.
    Rec { at: u64, len: u32 },
    /// A filemark.
    Mark,
}

/// The simulated drive with its cartridge loaded.
pub struct SimSt {
    dir: PathBuf,
    file: File,
    /// The cartridge file's inode: a position saved for another cartridge
    /// (one changed by a script) is not taken for this one.
    ino: u64,
    items: Vec<Item>,
    /// Byte offset in the file where each item starts, and the end.
    starts: Vec<u64>,
    pos: usize,
    rewinds: bool,
    protected: bool,
    early_warning: u64,
    physical_end: u64,
    warned: bool,
    /// The last read hit the end of data once already.
    eod_seen: bool,
    /// The last positioning ran into the end of the data.
    at_eom: bool,
}

impl SimSt {
    /// Loads the cartridge in `dir` (a blank one when there is none); the
    /// head is where the last run left it, or at the beginning for a
    /// rewinding device name.
    pub fn open(dir: &Path, rewinds: bool) -> io::Result<SimSt> {
        if !dir.is_dir() {
            return Err(io::Error::other(format!(
                "{ENV_DIR}={}: not a directory",
                dir.display()
            )));
        }
        let path = dir.join("cartridge");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let meta = file.metadata()?;
        let capacity = match std::env::var(ENV_CAPACITY) {
            Ok(v) if !v.is_empty() => super::parse_size(&v)
                .map_err(|e| io::Error::other(format!("{ENV_CAPACITY}: {e}")))?,
            _ => u64::MAX / 4,
        };
        let mut sim = SimSt {
            dir: dir.to_path_buf(),
            file,
            ino: meta.ino(),
            items: Vec::new(),
            starts: Vec::new(),
            pos: 0,
            rewinds,
            protected: dir.join("write-protect").exists(),
            early_warning: capacity,
            physical_end: capacity.saturating_add(capacity / 16 + (64 << 10)),
            warned: false,
            eod_seen: false,
            at_eom: false,
        };
        sim.scan(meta.len())?;
        if !rewinds {
            sim.pos = sim.saved_position().min(sim.items.len());
        }
        Ok(sim)
    }

    /// Indexes the cartridge file: `u32 0` is a filemark, `u32 n` a record
    /// of n bytes that follow. A torn last item (a write cut by a crash)
    /// is not part of the tape.
    fn scan(&mut self, len: u64) -> io::Result<()> {
        let mut at = 0u64;
        let mut word = [0u8; 4];
        while at + 4 <= len {
            self.file.read_exact_at(&mut word, at)?;
            let n = u32::from_le_bytes(word);
            let item = if n == 0 {
                Item::Mark
            } else if at + 4 + n as u64 <= len {
                Item::Rec { at: at + 4, len: n }
            } else {
                break;
            };
            self.starts.push(at);
            self.items.push(item);
            at += 4 + if n == 0 { 0 } else { n as u64 };
        }
        self.starts.push(at);
        Ok(())
    }

    fn saved_position(&self) -> usize {
        let text = std::fs::read_to_string(self.dir.join("position")).unwrap_or_default();
        let mut it = text.split_whitespace().map(|w| w.parse::<u64>().ok());
        match (it.next().flatten(), it.next().flatten()) {
            (Some(ino), Some(pos)) if ino == self.ino => pos as usize,
            _ => 0,
        }
    }

    /// Keeps the head position for the next run (as the drive keeps it
    /// when a non-rewinding device is closed, or a process is killed).
    fn save_position(&self) {
        let pos = if self.rewinds { 0 } else { self.pos };
        let _ = std::fs::write(self.dir.join("position"), format!("{} {pos}\n", self.ino));
    }

    /// Data bytes of the records before the head.
    fn used(&self) -> u64 {
        self.starts[self.pos]
    }

    /// Writes one item at the head, destroying whatever followed it.
    fn put(&mut self, data: Option<&[u8]>) -> io::Result<()> {
        if self.protected {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        let size = 4 + data.map_or(0, |d| d.len() as u64);
        if self.used() >= self.early_warning && !self.warned {
            // The st driver's early warning: this write is refused, the
            // next ones pass until the physical end.
            self.warned = true;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if self.used() + size > self.physical_end {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let at = self.used();
        let mut buf = Vec::with_capacity(size as usize);
        buf.extend_from_slice(&(data.map_or(0, |d| d.len() as u32)).to_le_bytes());
        if let Some(d) = data {
            buf.extend_from_slice(d);
        }
        self.file.set_len(at)?;
        self.file.write_all_at(&buf, at)?;
        self.items.truncate(self.pos);
        self.starts.truncate(self.pos + 1);
        self.items.push(match data {
            Some(d) => Item::Rec {
                at: at + 4,
                len: d.len() as u32,
            },
            None => Item::Mark,
        });
        self.pos += 1;
        self.starts.push(at + size);
        self.eod_seen = false;
        self.save_position();
        Ok(())
    }
}

impl Drop for SimSt {
    fn drop(&mut self) {
        self.save_position();
    }
}

impl TapeIo for SimSt {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.put(Some(buf))?;
        Ok(buf.len())
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = match self.items.get(self.pos).copied() {
            None if !self.eod_seen => {
                // At the end of the data: 0 once, then EIO, as st does.
                self.eod_seen = true;
                Ok(0)
            }
            None => Err(io::Error::from_raw_os_error(libc::EIO)),
            Some(Item::Mark) => {
                self.pos += 1;
                Ok(0)
            }
            Some(Item::Rec { at, len }) => {
                let len = len as usize;
                if len > buf.len() {
                    // Variable-block mode: a record larger than the read.
                    return Err(io::Error::from_raw_os_error(libc::ENOMEM));
                }
                self.file.read_exact_at(&mut buf[..len], at)?;
                self.pos += 1;
                Ok(len)
            }
        };
        self.save_position();
        r
    }

    fn op(&mut self, op: MtOp) -> io::Result<()> {
        let count = op.mt_count.max(0) as usize;
        self.eod_seen = false;
        self.at_eom = false;
        let r = match op.mt_op {
            MTREW => {
                self.pos = 0;
                self.warned = false;
                Ok(())
            }
            MTSETBLK => Ok(()),
            MTWEOF => (0..count).try_for_each(|_| self.put(None)),
            MTFSF => {
                let mut r = Ok(());
                for _ in 0..count {
                    match self.items[self.pos..].iter().position(|i| *i == Item::Mark) {
                        Some(k) => self.pos += k + 1,
                        None => {
                            self.pos = self.items.len();
                            self.at_eom = true;
                            r = Err(io::Error::from_raw_os_error(libc::EIO));
                            break;
                        }
                    }
                }
                r
            }
            MTBSF => {
                for _ in 0..count {
                    let prev = self.items[..self.pos]
                        .iter()
                        .rposition(|i| *i == Item::Mark);
                    self.pos = prev.unwrap_or(0);
                }
                Ok(())
            }
            MTBSR => {
                self.pos = self.pos.saturating_sub(count);
                Ok(())
            }
            MTEOM => {
                self.pos = self.items.len();
                self.at_eom = true;
                Ok(())
            }
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        self.save_position();
        r
    }

    fn status(&mut self) -> io::Result<MtGet> {
        let mut g = GMT_ONLINE;
        if self.protected {
            g |= GMT_WR_PROT;
        }
        if self.pos == 0 {
            g |= GMT_BOT;
        }
        if self.pos >= self.items.len() && (self.eod_seen || self.at_eom) {
            // As a drive: the end of the data is known once a read or a
            // spacing operation ran into it.
            g |= GMT_EOD;
        }
        if self.pos > 0 && self.items[self.pos - 1] == Item::Mark {
            g |= GMT_EOF;
        }
        if self.used() >= self.early_warning {
            g |= GMT_EOT;
        }
        let fileno = self.items[..self.pos]
            .iter()
            .filter(|i| **i == Item::Mark)
            .count();
        Ok(MtGet {
            mt_gstat: g,
            mt_fileno: fileno as libc::c_int,
            ..MtGet::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::tape::st::{mtop, StDevice};
    use crate::media::tape::{Device, ReadItem};

    #[test]
    fn names_are_recognised() {
        assert_eq!(st_name("/dev/nst0"), Some(false));
        assert_eq!(st_name("/dev/st12"), Some(true));
        assert_eq!(st_name("/dev/nst"), None);
        assert_eq!(st_name("/dev/sda"), None);
        assert_eq!(st_name("/dev/st0x"), None);
        assert_eq!(st_name("st0"), None);
    }

    #[test]
    fn the_cartridge_and_position_survive_the_process() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut s = StDevice::new(SimSt::open(d.path(), false).unwrap(), "n", true).unwrap();
            s.write_record(b"one", 0).unwrap();
            s.write_filemark().unwrap();
            s.write_record(b"two", 0).unwrap();
        }
        // The non-rewinding device left the head after "two": a read finds
        // the end of the data, and the status says so from then on.
        let mut s = SimSt::open(d.path(), false).unwrap();
        let mut buf = vec![0u8; 16];
        assert_eq!(s.status().unwrap().mt_gstat & GMT_EOD, 0);
        assert_eq!(s.read(&mut buf).unwrap(), 0);
        assert_eq!(s.status().unwrap().mt_gstat & GMT_EOD, GMT_EOD);
        s.op(mtop(MTREW, 1)).unwrap();
        assert_eq!(s.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"one");
        drop(s);
        // The head stayed after "one": the next record is the filemark.
        let mut s = SimSt::open(d.path(), false).unwrap();
        assert_eq!(s.read(&mut buf).unwrap(), 0);
        drop(s);
        // A rewinding name starts at the beginning, and rewinds on close.
        let mut s = SimSt::open(d.path(), true).unwrap();
        assert_eq!(s.read(&mut buf).unwrap(), 3);
        drop(s);
        let mut s = StDevice::new(SimSt::open(d.path(), false).unwrap(), "n", false).unwrap();
        let mut v = Vec::new();
        assert_eq!(s.read_record(&mut v, 16).unwrap(), ReadItem::Record(3));
        assert_eq!(v, b"one");
        assert_eq!(s.read_record(&mut v, 16).unwrap(), ReadItem::Filemark);
        assert_eq!(s.read_record(&mut v, 16).unwrap(), ReadItem::Record(3));
        assert_eq!(v, b"two");
        // No filemark after "two": the status tells the end of the data
        // from a filemark.
        assert_eq!(s.read_record(&mut v, 16).unwrap(), ReadItem::EndOfData);
    }

    #[test]
    fn write_protection_and_a_torn_last_record() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut s = SimSt::open(d.path(), true).unwrap();
            s.write(b"abcdef").unwrap();
        }
        // A crash in the middle of a write leaves part of a record.
        let mut raw = std::fs::read(d.path().join("cartridge")).unwrap();
        raw.extend_from_slice(&100u32.to_le_bytes());
        raw.extend_from_slice(b"short");
        std::fs::write(d.path().join("cartridge"), raw).unwrap();
        let mut s = SimSt::open(d.path(), true).unwrap();
        assert_eq!(s.items.len(), 1);
        s.op(mtop(MTEOM, 1)).unwrap();
        s.write(b"next").unwrap();
        drop(s);
        std::fs::write(d.path().join("write-protect"), b"").unwrap();
        let e = StDevice::new(SimSt::open(d.path(), true).unwrap(), "/dev/st0", true)
            .err()
            .unwrap();
        assert!(e.to_string().contains("write-protected"), "{e}");
    }
}
