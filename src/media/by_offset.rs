//! Media read by stream offset: a stream in a regular file, and a dump on
//! a virtual tape whose records map stream offsets to image positions.
//! The stream layer's random access (`restore -x`, `-C`, `-t`, a mirror's
//! base) reads through this one trait, so a tape image needs no copy.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// A stream's bytes, read at any offset.
pub trait ByOffset: Send {
    /// The stream's length in bytes (for a file: the file's).
    fn len(&self) -> u64;
    /// Whether it holds no byte.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads exactly `buf.len()` bytes at stream offset `off`.
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// A reader of the same bytes from offset 0, for full passes.
    fn sequential(&self) -> io::Result<Box<dyn Read + Send>>;
}

impl ByOffset for File {
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, off)
    }

    fn sequential(&self) -> io::Result<Box<dyn Read + Send>> {
        use std::io::{Seek, SeekFrom};
        let mut f = self.try_clone()?;
        f.seek(SeekFrom::Start(0))?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, f)))
    }
}

/// Reads a [`ByOffset`] front to back.
pub struct Sequential<T: ByOffset> {
    src: T,
    pos: u64,
}

impl<T: ByOffset> Sequential<T> {
    /// From offset 0.
    pub fn new(src: T) -> Self {
        Sequential { src, pos: 0 }
    }
}

impl<T: ByOffset> Read for Sequential<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.src.len().saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.src.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
