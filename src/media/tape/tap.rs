//! The virtual tape: a SIMH .tap image file that keeps record boundaries
//! and filemarks (formats/tape.md), with an optional capacity and
//! early-warning point so that end-of-medium handling can be exercised
//! without a drive.

use super::{Device, ReadItem};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// SIMH's end-of-medium marker.
const EOM: u32 = 0xFFFF_FFFF;
/// SIMH's "bad record" flag in a length word.
const BAD: u32 = 0x8000_0000;

/// A tape image file, positioned like a tape.
pub struct VirtualTape {
    file: io::BufReader<File>,
    name: String,
    /// Byte position in the image.
    pos: u64,
    /// Capacity in image bytes (0: unlimited).
    capacity: u64,
    /// Whether the image was written (what follows the last write is then
    /// gone, as on a real tape).
    written: bool,
    /// Where the buffered reader stands, when known (a seek discards its
    /// buffer, so it seeks only when it must).
    rpos: Option<u64>,
}

impl VirtualTape {
    /// Opens (creating it when `create`) a tape image at its beginning.
    pub fn open(path: &Path, create: bool, capacity: u64) -> io::Result<VirtualTape> {
        let file = OpenOptions::new()
            .read(true)
            .write(create)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(VirtualTape {
            file: io::BufReader::with_capacity(1 << 20, file),
            name: path.display().to_string(),
            pos: 0,
            capacity,
            written: false,
            rpos: None,
        })
    }

    /// The early-warning point, in image bytes (formats/tape.md).
    fn early_warning(&self, block_size: u64) -> u64 {
        if self.capacity == 0 {
            return u64::MAX;
        }
        self.capacity
            .saturating_sub((self.capacity / 50).max(2 * block_size))
    }

    fn raw_write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.capacity != 0 && self.pos + bytes.len() as u64 > self.capacity {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.rpos = None;
        let f = self.file.get_mut();
        f.seek(SeekFrom::Start(self.pos))?;
        f.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        self.written = true;
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at the current position; false at
    /// the end of the image before the first byte.
    fn read_at_pos(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.rpos != Some(self.pos) {
            self.file.seek(SeekFrom::Start(self.pos))?;
        }
        let mut got = 0;
        while got < buf.len() {
            match self.file.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.rpos = None;
                    return Err(e);
                }
            }
        }
        self.pos += got as u64;
        self.rpos = Some(self.pos);
        if got == 0 && !buf.is_empty() {
            return Ok(false);
        }
        if got < buf.len() {
            return Err(damaged(&self.name, self.pos, "cut short"));
        }
        Ok(true)
    }

    fn read_u32(&mut self) -> io::Result<Option<u32>> {
        let mut b = [0u8; 4];
        Ok(self.read_at_pos(&mut b)?.then(|| u32::from_le_bytes(b)))
    }
}

fn damaged(name: &str, at: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("virtual tape {name}: damaged at byte {at}: {what}"),
    )
}

impl VirtualTape {
    fn image_len(&self) -> io::Result<u64> {
        Ok(self.file.get_ref().metadata()?.len())
    }

    /// The first position from `from` on where an intact record starts:
    /// a sane length word, that many bytes, and the same length word after
    /// them.
    fn find_record(&mut self, from: u64) -> io::Result<Option<u64>> {
        use std::os::unix::fs::FileExt;
        let len = self.image_len()?;
        let f = self.file.get_ref();
        let word = |at: u64| -> io::Result<u32> {
            let mut b = [0u8; 4];
            f.read_exact_at(&mut b, at)?;
            Ok(u32::from_le_bytes(b))
        };
        let mut chunk = vec![0u8; 1 << 20];
        let mut base = from;
        while base + 4 <= len {
            let n = chunk.len().min((len - base) as usize);
            f.read_exact_at(&mut chunk[..n], base)?;
            for i in 0..n.saturating_sub(3) {
                let p = base + i as u64;
                let w = u32::from_le_bytes(chunk[i..i + 4].try_into().unwrap());
                if w == 0 || w & BAD != 0 || w as u64 > super::MAX_BLOCK_SIZE {
                    continue;
                }
                let tail = p + 4 + w as u64 + (w % 2) as u64;
                if tail + 4 <= len && word(tail)? == w {
                    return Ok(Some(p));
                }
            }
            base += n.saturating_sub(3).max(1) as u64;
        }
        Ok(None)
    }

    /// The next item, stepping over a record's bytes without reading
    /// them (its two length words are read and compared), as a drive's
    /// space command goes over a tape file: appending to a tape spaces
    /// over everything on it. Framing that does not check is read as
    /// [`Device::read_record`] reads it, which goes on past damage.
    fn skip_item(&mut self) -> io::Result<ReadItem> {
        use std::os::unix::fs::FileExt;
        let at = self.pos;
        let len = self.image_len()?;
        let word = |at: u64| -> io::Result<Option<u32>> {
            let mut b = [0u8; 4];
            if at + 4 > len {
                return Ok(None);
            }
            self.file.get_ref().read_exact_at(&mut b, at)?;
            Ok(Some(u32::from_le_bytes(b)))
        };
        if let Some(n) = word(at)? {
            if n != 0 && n != EOM && n & BAD == 0 && n as u64 <= super::MAX_BLOCK_SIZE {
                let tail = at + 4 + n as u64 + (n % 2) as u64;
                if word(tail)? == Some(n) {
                    self.pos = tail + 4;
                    self.rpos = None;
                    return Ok(ReadItem::Record(n as usize));
                }
            }
        }
        let mut scratch = Vec::new();
        self.read_record(&mut scratch, 1 << 30)
    }

    /// Reads the record at the position, refusing damaged framing.
    fn read_framed(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<ReadItem> {
        let at = self.pos;
        let Some(n) = self.read_u32()? else {
            return Ok(ReadItem::EndOfData);
        };
        if n == 0 {
            return Ok(ReadItem::Filemark);
        }
        if n == EOM {
            self.pos = at;
            return Ok(ReadItem::EndOfData);
        }
        if n & BAD != 0 || n as usize > max {
            return Err(damaged(&self.name, at, &format!("record length {n:#x}")));
        }
        // A length word is untrusted: the record must fit in the image
        // before anything is allocated for it.
        let image_len = self.file.get_ref().metadata()?.len();
        let end = self.pos + n as u64 + (n % 2) as u64 + 4;
        if end > image_len {
            return Err(damaged(
                &self.name,
                at,
                &format!("a record of {n} bytes runs past the end of the image"),
            ));
        }
        buf.resize(n as usize, 0);
        let mut pad = [0u8; 1];
        let whole = self.read_at_pos(buf)? && (n % 2 == 0 || self.read_at_pos(&mut pad)?);
        if !whole {
            return Err(damaged(&self.name, at, "record cut short"));
        }
        match self.read_u32()? {
            Some(m) if m == n => Ok(ReadItem::Record(n as usize)),
            _ => Err(damaged(
                &self.name,
                at,
                "record lengths differ at its two ends",
            )),
        }
    }
}

impl Device for VirtualTape {
    fn write_record(&mut self, data: &[u8], block_size: u64) -> io::Result<bool> {
        let n = data.len() as u32;
        let mut rec = Vec::with_capacity(data.len() + 9);
        rec.extend_from_slice(&n.to_le_bytes());
        rec.extend_from_slice(data);
        if n % 2 == 1 {
            rec.push(0);
        }
        rec.extend_from_slice(&n.to_le_bytes());
        self.raw_write(&rec)?;
        Ok(self.pos >= self.early_warning(block_size))
    }

    fn write_filemark(&mut self) -> io::Result<()> {
        self.raw_write(&0u32.to_le_bytes())
    }

    fn finish_writing(&mut self) -> io::Result<()> {
        if self.written {
            let f = self.file.get_mut();
            f.set_len(self.pos)?;
            f.sync_all()?;
        }
        Ok(())
    }

    fn read_record(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<ReadItem> {
        let at = self.pos;
        match self.read_framed(buf, max) {
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                // Damaged framing: go on at the next intact record. What
                // was skipped is missing from the stream, which the stream
                // reader detects, names and (for a full restore) goes round.
                let next = self.find_record(at + 1)?;
                let skipped = next.unwrap_or(self.image_len()?) - at;
                crate::progress::println_err(&format!(
                    "snapdump: warning: {e}; skipped {skipped} bytes of the tape image to the next intact record"
                ));
                match next {
                    Some(p) => {
                        self.pos = p;
                        self.read_framed(buf, max)
                    }
                    None => {
                        self.pos = self.image_len()?;
                        Ok(ReadItem::EndOfData)
                    }
                }
            }
            r => r,
        }
    }

    fn skip_if_equal(&mut self, data: &[u8], block_size: u64) -> io::Result<Option<bool>> {
        let at = self.pos;
        let mut buf = Vec::new();
        let same = matches!(self.read_record(&mut buf, data.len()), Ok(ReadItem::Record(_)) if buf == data);
        if !same {
            self.pos = at;
            return Ok(None);
        }
        Ok(Some(self.pos >= self.early_warning(block_size)))
    }

    fn skip_record(&mut self) -> io::Result<ReadItem> {
        self.skip_item()
    }

    fn rewind(&mut self) -> io::Result<()> {
        self.pos = 0;
        Ok(())
    }

    fn space_filemarks(&mut self, count: u64) -> io::Result<u64> {
        let mut done = 0;
        while done < count {
            match self.skip_item()? {
                ReadItem::Filemark => done += 1,
                ReadItem::Record(_) => {}
                ReadItem::EndOfData => break,
            }
        }
        Ok(done)
    }

    fn space_to_end_of_data(&mut self) -> io::Result<()> {
        loop {
            let at = self.pos;
            if let ReadItem::EndOfData = self.skip_item()? {
                self.pos = at;
                return Ok(());
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}
