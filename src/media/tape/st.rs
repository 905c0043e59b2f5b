//! Linux SCSI tape drives through the st driver (`/dev/nstN`, the
//! non-rewinding device), in variable-block mode: one `write(2)` is one
//! tape record.
//!
//! The driver's interface is small: `MTIOCTOP` (rewind, write filemarks,
//! space over filemarks, space to end of data, set the block size) and
//! `MTIOCGET` (status: write protection, beginning and end of tape, file
//! number). [`StDevice`] holds the logic — which operations to issue, and
//! the end-of-medium sequence — over a [`TapeIo`], so that it is tested
//! against a simulated drive ([`tests`]); [`RealSt`] issues the calls.
//!
//! End of medium, as the st driver reports it: when a write reaches the
//! early-warning zone it fails with ENOSPC and writes nothing; after that,
//! further writes (a filemark, a trailer) are allowed until the physical
//! end, where writes fail with ENOSPC (or EIO) for good. The tape writer
//! answers the first ENOSPC by writing the filemark that closes the volume
//! and continuing the record on the next volume.
//!
//! Tested here against the simulation; on a real drive by hand (see
//! README: `mt -f /dev/nst0 status`, a dump with `-f /dev/nst0`, restore
//! with `--file-number`).

use super::{Device, ReadItem};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// `struct mtop` of <linux/mtio.h>.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MtOp {
    /// Operation code (`MT*` below).
    pub mt_op: libc::c_short,
    /// How many times.
    pub mt_count: libc::c_int,
}

/// `struct mtget` of <linux/mtio.h>.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MtGet {
    /// Drive type.
    pub mt_type: libc::c_long,
    /// Residual count.
    pub mt_resid: libc::c_long,
    /// Density and block size.
    pub mt_dsreg: libc::c_long,
    /// Generic status bits (`GMT_*`).
    pub mt_gstat: libc::c_long,
    /// Error register.
    pub mt_erreg: libc::c_long,
    /// File number of the current position.
    pub mt_fileno: libc::c_int,
    /// Block number in the current file.
    pub mt_blkno: libc::c_int,
}

/// Space forward over filemarks.
pub const MTFSF: libc::c_short = 1;
/// Space backward over filemarks (stopping before the last one passed).
pub const MTBSF: libc::c_short = 2;
/// Write filemarks (count 0 flushes the drive's buffer).
pub const MTWEOF: libc::c_short = 5;
/// Rewind.
pub const MTREW: libc::c_short = 6;
/// Space to the end of the recorded data.
pub const MTEOM: libc::c_short = 12;
/// Space backward over records.
pub const MTBSR: libc::c_short = 4;
/// Set the block size (0: variable).
pub const MTSETBLK: libc::c_short = 20;

/// Status bit: at a filemark.
pub const GMT_EOF: libc::c_long = 0x8000_0000;
/// Status bit: at the beginning of the tape.
pub const GMT_BOT: libc::c_long = 0x4000_0000;
/// Status bit: in the early-warning zone / at the end of the tape.
pub const GMT_EOT: libc::c_long = 0x2000_0000;
/// Status bit: at the end of the recorded data.
pub const GMT_EOD: libc::c_long = 0x0800_0000;
/// Status bit: the cartridge is write-protected.
pub const GMT_WR_PROT: libc::c_long = 0x0400_0000;
/// Status bit: a tape is loaded and the drive ready.
pub const GMT_ONLINE: libc::c_long = 0x0100_0000;

nix::ioctl_write_ptr!(
    /// MTIOCTOP: a tape operation (rewind, space, write filemarks, ...).
    mtioctop,
    b'm',
    1,
    MtOp
);
nix::ioctl_read!(
    /// MTIOCGET: the drive's status (ready, write protection, position).
    mtiocget,
    b'm',
    2,
    MtGet
);

/// The request numbers, for checking against <linux/mtio.h>.
#[cfg(test)]
fn request_numbers() -> (u64, u64) {
    (
        nix::request_code_write!(b'm', 1, std::mem::size_of::<MtOp>()) as u64,
        nix::request_code_read!(b'm', 2, std::mem::size_of::<MtGet>()) as u64,
    )
}

/// The `MTIOCTOP` argument for an operation.
pub fn mtop(op: libc::c_short, count: u32) -> MtOp {
    MtOp {
        mt_op: op,
        mt_count: count.min(i32::MAX as u32) as libc::c_int,
    }
}

/// What a drive does at the system-call level.
pub trait TapeIo: Send {
    /// One `write(2)`: one record.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// One `read(2)`: one record, 0 at a filemark.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// `MTIOCTOP`.
    fn op(&mut self, op: MtOp) -> io::Result<()>;
    /// `MTIOCGET`.
    fn status(&mut self) -> io::Result<MtGet>;
}

/// A drive opened through the st driver.
pub struct RealSt {
    fd: OwnedFd,
}

impl RealSt {
    /// Opens a tape device (use the non-rewinding `/dev/nstN`).
    pub fn open(path: &std::path::Path, write: bool) -> io::Result<RealSt> {
        let flags = if write { libc::O_RDWR } else { libc::O_RDONLY };
        let fd = crate::fsx::open_path(path, flags)?;
        Ok(RealSt { fd })
    }
}

impl TapeIo for RealSt {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
    fn op(&mut self, op: MtOp) -> io::Result<()> {
        unsafe { mtioctop(self.fd.as_raw_fd(), &op) }
            .map(|_| ())
            .map_err(io::Error::from)
    }
    fn status(&mut self) -> io::Result<MtGet> {
        let mut g = MtGet::default();
        unsafe { mtiocget(self.fd.as_raw_fd(), &mut g) }.map_err(io::Error::from)?;
        Ok(g)
    }
}

/// A tape drive as a [`Device`]: the operations snapdump needs, and the
/// end-of-medium and end-of-data sequences of the st driver.
pub struct StDevice<T: TapeIo> {
    io: T,
    name: String,
    /// The last read returned a filemark (a second one means end of data).
    after_filemark: bool,
}

impl<T: TapeIo> StDevice<T> {
    /// Prepares a drive: checks it is online (and, to write, not
    /// write-protected), and sets variable-block mode.
    pub fn new(mut io: T, name: &str, write: bool) -> io::Result<StDevice<T>> {
        let st = io.status()?;
        if st.mt_gstat & GMT_ONLINE == 0 {
            return Err(io::Error::other(format!(
                "tape drive {name} is not ready (no tape loaded?)"
            )));
        }
        if write && st.mt_gstat & GMT_WR_PROT != 0 {
            return Err(io::Error::other(format!(
                "the tape in {name} is write-protected"
            )));
        }
        io.op(mtop(MTSETBLK, 0))?;
        Ok(StDevice {
            io,
            name: name.to_string(),
            after_filemark: false,
        })
    }
}

impl<T: TapeIo> Device for StDevice<T> {
    fn write_record(&mut self, data: &[u8], _block_size: u64) -> io::Result<bool> {
        match self.io.write(data) {
            Ok(n) if n == data.len() => Ok(false),
            Ok(n) => Err(io::Error::other(format!(
                "{}: short write ({n} of {} bytes): is the drive in fixed-block mode?",
                self.name,
                data.len()
            ))),
            // Early warning (or end of tape): nothing was written; the
            // writer closes the volume and goes on with the next.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => Err(e),
            Err(e) => Err(e),
        }
    }

    fn write_filemark(&mut self) -> io::Result<()> {
        self.io.op(mtop(MTWEOF, 1))
    }

    fn finish_writing(&mut self) -> io::Result<()> {
        // Zero filemarks: flush the drive's buffer to the medium.
        self.io.op(mtop(MTWEOF, 0))
    }

    fn read_record(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<ReadItem> {
        buf.resize(max, 0);
        match self.io.read(buf) {
            Ok(0) => {
                buf.clear();
                // A zero-byte read is a filemark, or the end of the data:
                // the drive's status tells which.
                let st = self.io.status()?;
                if self.after_filemark || st.mt_gstat & GMT_EOD != 0 {
                    // Two filemarks in a row, or a filemark then nothing,
                    // or the end of the data itself.
                    return Ok(ReadItem::EndOfData);
                }
                self.after_filemark = true;
                Ok(ReadItem::Filemark)
            }
            Ok(n) => {
                buf.truncate(n);
                self.after_filemark = false;
                Ok(ReadItem::Record(n))
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ENOSPC)) => {
                let st = self.io.status()?;
                if st.mt_gstat & (GMT_EOD | GMT_EOT) != 0 {
                    buf.clear();
                    return Ok(ReadItem::EndOfData);
                }
                Err(e)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => Err(io::Error::other(format!(
                "{}: a tape record is larger than {max} bytes",
                self.name
            ))),
            Err(e) => Err(e),
        }
    }

    fn skip_if_equal(&mut self, data: &[u8], _block_size: u64) -> io::Result<Option<bool>> {
        let mut buf = Vec::new();
        match self.read_record(&mut buf, super::MAX_BLOCK_SIZE as usize)? {
            ReadItem::Record(_) if buf == data => {
                let st = self.io.status()?;
                Ok(Some(st.mt_gstat & GMT_EOT != 0))
            }
            ReadItem::Record(_) => {
                // Back over the record just read: the write replaces it.
                self.io.op(mtop(MTBSR, 1))?;
                Ok(None)
            }
            ReadItem::Filemark => {
                self.after_filemark = false;
                self.io.op(mtop(MTBSF, 1))?;
                Ok(None)
            }
            ReadItem::EndOfData => Ok(None),
        }
    }

    fn rewind(&mut self) -> io::Result<()> {
        self.after_filemark = false;
        self.io.op(mtop(MTREW, 1))
    }

    fn space_filemarks(&mut self, count: u64) -> io::Result<u64> {
        if count == 0 {
            return Ok(0);
        }
        let before = self.io.status()?.mt_fileno.max(0) as u64;
        match self.io.op(mtop(MTFSF, count as u32)) {
            Ok(()) => Ok(count),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                // Hit the end of data: the file number says how far it got.
                let after = self.io.status()?.mt_fileno.max(0) as u64;
                Ok(after.saturating_sub(before))
            }
            Err(e) => Err(e),
        }
    }

    fn space_to_end_of_data(&mut self) -> io::Result<()> {
        self.after_filemark = false;
        self.io.op(mtop(MTEOM, 1))
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
pub mod tests {
    //! A simulated st drive: records and filemarks in memory, an
    //! early-warning point and a physical end, write protection.
    use super::*;

    /// One item on the simulated tape.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Item {
        /// A record.
        Rec(Vec<u8>),
        /// A filemark.
        Mark,
    }

    /// The simulated cartridge in the drive.
    #[derive(Default)]
    pub struct Cart {
        /// The tape's contents.
        pub items: Vec<Item>,
        /// The head position (index into `items`).
        pub pos: usize,
        /// Items at which the early warning is reported.
        pub early_warning: usize,
        /// Items at which the tape physically ends.
        pub end: usize,
        /// Write protection.
        pub protected: bool,
        /// Whether the early warning was reported (later writes pass).
        pub warned: bool,
        /// Every MTIOCTOP issued.
        pub ops: Vec<MtOp>,
        /// The last read passed a filemark (a drive reports the end of the
        /// data only once it runs into it).
        pub after_mark: bool,
    }

    /// The simulated drive: a handle on a cartridge, so a test keeps
    /// seeing what was written after the device is gone.
    #[derive(Clone, Default)]
    pub struct FakeSt(pub std::sync::Arc<std::sync::Mutex<Cart>>);

    impl FakeSt {
        /// A blank tape with an early warning after `ew` items and its
        /// end after `end`.
        pub fn blank(ew: usize, end: usize) -> FakeSt {
            FakeSt(std::sync::Arc::new(std::sync::Mutex::new(Cart {
                early_warning: ew,
                end,
                ..Cart::default()
            })))
        }

        /// The cartridge.
        pub fn cart(&self) -> std::sync::MutexGuard<'_, Cart> {
            self.0.lock().unwrap()
        }
    }

    impl Cart {
        fn put(&mut self, item: Item) -> io::Result<()> {
            if self.pos >= self.end {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            if self.pos >= self.early_warning && !self.warned {
                self.warned = true;
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.items.truncate(self.pos);
            self.items.push(item);
            self.pos += 1;
            Ok(())
        }

        fn fileno(&self) -> i32 {
            self.items[..self.pos]
                .iter()
                .filter(|i| **i == Item::Mark)
                .count() as i32
        }
    }

    impl TapeIo for FakeSt {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.cart().put(Item::Rec(buf.to_vec()))?;
            Ok(buf.len())
        }
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let mut c = self.cart();
            c.after_mark = false;
            match c.items.get(c.pos).cloned() {
                None => Ok(0),
                Some(Item::Mark) => {
                    c.pos += 1;
                    c.after_mark = true;
                    Ok(0)
                }
                Some(Item::Rec(r)) => {
                    if r.len() > buf.len() {
                        return Err(io::Error::from_raw_os_error(libc::ENOMEM));
                    }
                    buf[..r.len()].copy_from_slice(&r);
                    c.pos += 1;
                    Ok(r.len())
                }
            }
        }
        fn op(&mut self, op: MtOp) -> io::Result<()> {
            let mut c = self.cart();
            c.ops.push(op);
            c.after_mark = false;
            match op.mt_op {
                MTREW => c.pos = 0,
                MTSETBLK => {}
                MTWEOF => {
                    for _ in 0..op.mt_count {
                        c.put(Item::Mark)?;
                    }
                }
                MTFSF => {
                    for _ in 0..op.mt_count {
                        let next = c.items[c.pos..].iter().position(|i| *i == Item::Mark);
                        match next {
                            Some(k) => c.pos += k + 1,
                            None => {
                                c.pos = c.items.len();
                                return Err(io::Error::from_raw_os_error(libc::EIO));
                            }
                        }
                    }
                }
                MTEOM => c.pos = c.items.len(),
                MTBSR => c.pos = c.pos.saturating_sub(op.mt_count as usize),
                MTBSF => {
                    for _ in 0..op.mt_count {
                        let prev = c.items[..c.pos].iter().rposition(|i| *i == Item::Mark);
                        c.pos = prev.unwrap_or(0);
                    }
                }
                _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
            }
            Ok(())
        }
        fn status(&mut self) -> io::Result<MtGet> {
            let c = self.cart();
            let mut g = GMT_ONLINE;
            if c.protected {
                g |= GMT_WR_PROT;
            }
            if c.pos == 0 {
                g |= GMT_BOT;
            }
            if c.pos >= c.items.len() && !c.after_mark {
                g |= GMT_EOD;
            }
            if c.pos >= c.early_warning {
                g |= GMT_EOT;
            }
            Ok(MtGet {
                mt_gstat: g,
                mt_fileno: c.fileno(),
                ..MtGet::default()
            })
        }
    }

    #[test]
    fn ioctl_numbers_and_arguments_match_linux_mtio() {
        // <linux/mtio.h> on 64-bit Linux: _IOW('m', 1, struct mtop) and
        // _IOR('m', 2, struct mtget), struct mtop being 8 bytes and
        // struct mtget 48.
        assert_eq!(std::mem::size_of::<MtOp>(), 8);
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(std::mem::size_of::<MtGet>(), 48);
            assert_eq!(request_numbers(), (0x4008_6d01, 0x8030_6d02));
        }
        assert_eq!(
            mtop(MTFSF, 3),
            MtOp {
                mt_op: 1,
                mt_count: 3
            }
        );
        assert_eq!(mtop(MTWEOF, u32::MAX).mt_count, i32::MAX);
        assert_eq!((MTREW, MTEOM, MTSETBLK, MTWEOF), (6, 12, 20, 5));
    }

    #[test]
    fn opening_checks_protection_and_sets_variable_blocks() {
        let f = FakeSt::blank(100, 110);
        f.cart().protected = true;
        let e = StDevice::new(f.clone(), "/dev/nst0", true).err().unwrap();
        assert!(e.to_string().contains("write-protected"), "{e}");
        let _d = StDevice::new(f.clone(), "/dev/nst0", false).unwrap();
        assert_eq!(f.cart().ops, vec![mtop(MTSETBLK, 0)]);
    }

    #[test]
    fn early_warning_refuses_one_write_then_allows_the_filemark() {
        let f = FakeSt::blank(3, 6);
        let mut d = StDevice::new(f.clone(), "t", true).unwrap();
        for _ in 0..3 {
            assert!(!d.write_record(b"abc", 3).unwrap());
        }
        let e = d.write_record(b"abc", 3).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        d.write_filemark().unwrap();
        d.finish_writing().unwrap();
        assert_eq!(f.cart().items.len(), 4);
        assert_eq!(f.cart().items[3], Item::Mark);
        assert_eq!(
            f.cart().ops.last(),
            Some(&mtop(MTWEOF, 0)),
            "the buffer is flushed"
        );
    }

    #[test]
    fn reading_tells_filemarks_from_the_end_of_data_and_spaces() {
        let f = FakeSt::blank(100, 200);
        f.cart().items = vec![
            Item::Rec(b"a1".to_vec()),
            Item::Mark,
            Item::Rec(b"b1".to_vec()),
            Item::Rec(b"b2".to_vec()),
            Item::Mark,
        ];
        let mut d = StDevice::new(f, "t", false).unwrap();
        let mut buf = Vec::new();
        d.rewind().unwrap();
        assert_eq!(d.space_filemarks(1).unwrap(), 1);
        assert_eq!(d.read_record(&mut buf, 16).unwrap(), ReadItem::Record(2));
        assert_eq!(buf, b"b1");
        assert_eq!(d.read_record(&mut buf, 16).unwrap(), ReadItem::Record(2));
        assert_eq!(d.read_record(&mut buf, 16).unwrap(), ReadItem::Filemark);
        assert_eq!(d.read_record(&mut buf, 16).unwrap(), ReadItem::EndOfData);
        d.rewind().unwrap();
        assert_eq!(
            d.space_filemarks(5).unwrap(),
            2,
            "only two filemarks on the tape"
        );
        let e = d.read_record(&mut buf, 1);
        assert!(e.is_ok(), "at the end of data: {e:?}");
        d.rewind().unwrap();
        let e = d.read_record(&mut buf, 1).unwrap_err();
        assert!(e.to_string().contains("larger than 1 bytes"), "{e}");
    }

    /// A whole stream through the tape writer and reader onto simulated
    /// cartridges: the early warning ends each volume, the reader finds
    /// the volumes in order and refuses a wrong one from a list.
    #[test]
    fn a_stream_spans_simulated_cartridges_and_reads_back() {
        use crate::media::tape::reader::TapeReader;
        use crate::media::tape::writer::{TapeOptions, TapeWriter};
        use std::io::{Read, Write};
        let mut stream = crate::stream::record::seal(
            crate::stream::record::RecordKind::Header,
            0,
            &crate::stream::header::StreamHeader {
                format_version: 1,
                block_size: 4096,
                full: true,
                ..Default::default()
            }
            .encode(),
            None,
            0,
        );
        stream.extend((0..20_000u32).map(|i| (i * 7 % 251) as u8));
        let carts: Vec<FakeSt> = (0..6).map(|_| FakeSt::blank(8, 12)).collect();
        let specs: Vec<String> = (0..6).map(|i| i.to_string()).collect();
        let opener = |carts: Vec<FakeSt>| -> crate::media::tape::writer::Opener {
            Box::new(move |spec: &str, write: bool| {
                let f = carts[spec.parse::<usize>().unwrap()].clone();
                Ok(Box::new(StDevice::new(f, &format!("cart{spec}"), write)?) as Box<dyn Device>)
            })
        };
        let opts = TapeOptions {
            block_size: 1024,
            append: false,
            capacity: 0,
            new_volume: None,
        };
        let mut w = TapeWriter::open_with(specs.clone(), opts, opener(carts.clone())).unwrap();
        w.set_label(crate::media::tape::volume::TapeLabel {
            source_uuid: [1; 16],
            snapshot_uuid: [2; 16],
            snapshot_id: 1,
            started: 0,
        });
        w.write_all(&stream).unwrap();
        w.finish().unwrap();
        let used = w.volumes.len();
        assert!(used >= 3, "{used} volumes");
        for c in &carts[..used] {
            let c = c.cart();
            assert!(
                c.items.len() <= 9,
                "volume overfilled: {} items",
                c.items.len()
            );
            assert_eq!(c.items.last(), Some(&Item::Mark));
        }
        let mut r = TapeReader::open_with(specs.clone(), 1, None, opener(carts.clone())).unwrap();
        let mut back = vec![0u8; stream.len()];
        r.read_exact(&mut back).unwrap();
        assert_eq!(back, stream);
        // Volumes out of order in a list: refused, naming both.
        let swapped = vec![specs[0].clone(), specs[2].clone(), specs[1].clone()];
        let mut r = TapeReader::open_with(swapped, 1, None, opener(carts)).unwrap();
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("volume 2 is needed"), "{e}");
    }
}
