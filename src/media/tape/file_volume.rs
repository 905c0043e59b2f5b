//! A volume that is a plain file: the volume header, then the stream's
//! bytes, with no record framing (formats/tape.md, "Volumes in files").
//! Used when a dump to files is cut into volumes (`--volume-size`, several
//! `-f`), e.g. to fit removable disks or size-limited stores.

use super::volume::{VolumeHeader, VOLUME_HEADER_LEN};
use super::{Device, ReadItem};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// A plain file holding one volume.
pub struct FileVolume {
    file: File,
    name: String,
    pos: u64,
    /// Largest size of the file (0: unlimited).
    limit: u64,
    /// Data record size, once the volume header was read.
    block: Option<usize>,
    written: bool,
}

impl FileVolume {
    /// Opens (creating it when `write`) a volume file.
    pub fn open(path: &Path, write: bool, limit: u64) -> io::Result<FileVolume> {
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .create(write)
            .truncate(false)
            .open(path)?;
        Ok(FileVolume {
            file,
            name: path.display().to_string(),
            pos: 0,
            limit,
            block: None,
            written: false,
        })
    }
}

impl Device for FileVolume {
    fn write_record(&mut self, data: &[u8], block_size: u64) -> io::Result<bool> {
        let end = self.pos + data.len() as u64;
        if self.limit != 0 && end > self.limit {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(data, self.pos)?;
        self.pos = end;
        self.written = true;
        Ok(self.limit != 0 && end + block_size > self.limit)
    }

    fn write_filemark(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn finish_writing(&mut self) -> io::Result<()> {
        if self.written {
            self.file.set_len(self.pos)?;
            self.file.flush()?;
            self.file.sync_all()?;
        }
        Ok(())
    }

    fn read_record(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<ReadItem> {
        let want = match self.block {
            None => VOLUME_HEADER_LEN,
            Some(b) => b.min(max),
        };
        buf.resize(want, 0);
        use std::os::unix::fs::FileExt;
        let mut got = 0;
        while got < want {
            match self.file.read_at(&mut buf[got..], self.pos + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        if got == 0 {
            return Ok(ReadItem::EndOfData);
        }
        if self.block.is_none() {
            if got < VOLUME_HEADER_LEN || !VolumeHeader::looks_like(buf) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a snapdump volume", self.name),
                ));
            }
            let bs = u32::from_le_bytes(buf[24..28].try_into().unwrap()) as usize;
            self.block = Some(bs.clamp(512, super::MAX_BLOCK_SIZE as usize));
        }
        self.pos += got as u64;
        Ok(ReadItem::Record(got))
    }

    fn skip_if_equal(&mut self, data: &[u8], block_size: u64) -> io::Result<Option<bool>> {
        let (at, block) = (self.pos, self.block);
        let mut buf = Vec::new();
        let same = matches!(self.read_record(&mut buf, data.len()), Ok(ReadItem::Record(_)) if buf == data);
        if !same {
            self.pos = at;
            self.block = block;
            return Ok(None);
        }
        Ok(Some(self.limit != 0 && self.pos + block_size > self.limit))
    }

    fn rewind(&mut self) -> io::Result<()> {
        self.pos = 0;
        self.block = None;
        Ok(())
    }

    fn space_filemarks(&mut self, _count: u64) -> io::Result<u64> {
        // A volume file holds one dump.
        Ok(0)
    }

    fn space_to_end_of_data(&mut self) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{}: a volume file holds one dump; --append works on tapes",
                self.name
            ),
        ))
    }

    fn name(&self) -> &str {
        &self.name
    }
}
