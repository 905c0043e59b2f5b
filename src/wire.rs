//! Little-endian field encoding shared by the stream and catalog formats.
//!
//! Every format in `formats/` is built from these few primitives, so the
//! byte-level specs only have to describe them once. The decoder never trusts
//! a length: each read is checked against what is left, so a hostile or
//! damaged record yields an error instead of a panic or a huge allocation.

use anyhow::{bail, Result};

/// Builds a record payload field by field.
#[derive(Default)]
pub struct Enc {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Enc {
    /// An empty encoder.
    pub fn new() -> Self {
        Enc { buf: Vec::new() }
    }
    /// An empty encoder with room for `n` bytes: a large payload built
    /// in one allocation is not copied again at every doubling.
    pub fn with_capacity(n: usize) -> Self {
        Enc {
            buf: Vec::with_capacity(n),
        }
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// Four bytes, little-endian.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Eight bytes, little-endian.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Eight bytes, little-endian two's complement.
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Raw bytes of a length both sides know.
    pub fn fixed(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// A byte string: u32 length, then the bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
    }
}

/// Reads fields back, failing cleanly on anything out of bounds.
pub struct Dec<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Dec<'a> {
    /// A decoder over `data`; `what` names the structure in error messages.
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        Dec { data, pos: 0, what }
    }
    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    /// True when every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            bail!(
                "{} is truncated: wanted {} bytes at offset {}, {} left",
                self.what,
                n,
                self.pos,
                self.remaining()
            );
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    /// Four bytes, little-endian.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// Eight bytes, little-endian two's complement.
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// `n` raw bytes.
    pub fn fixed(&mut self, n: usize) -> Result<&'a [u8]> {
        self.take(n)
    }
    /// A u32-length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        if n > max {
            bail!(
                "{}: field length {} at offset {} exceeds the limit {}",
                self.what,
                n,
                self.pos - 4,
                max
            );
        }
        self.take(n)
    }
    /// A count that must fit in what is left, each item taking at least
    /// `min_item` bytes; guards allocations sized from untrusted counts.
    pub fn count(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            bail!(
                "{}: count {} at offset {} cannot fit in the {} bytes left",
                self.what,
                n,
                self.pos - 4,
                self.remaining()
            );
        }
        Ok(n)
    }
    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<()> {
        if !self.is_empty() {
            bail!(
                "{} has {} unexpected trailing bytes",
                self.what,
                self.remaining()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let mut e = Enc::new();
        e.u8(7);
        e.u32(0xdead_beef);
        e.u64(u64::MAX - 1);
        e.i64(-5);
        e.bytes(b"name");
        let mut d = Dec::new(&e.buf, "test");
        assert_eq!(d.u8().unwrap(), 7);
        assert_eq!(d.u32().unwrap(), 0xdead_beef);
        assert_eq!(d.u64().unwrap(), u64::MAX - 1);
        assert_eq!(d.i64().unwrap(), -5);
        assert_eq!(d.bytes(16).unwrap(), b"name");
        d.finish().unwrap();
        assert!(d.u8().is_err());
        let mut d = Dec::new(&e.buf[..3], "test");
        d.u8().unwrap();
        assert!(d.u32().is_err());
    }

    #[test]
    fn hostile_lengths_are_refused() {
        let mut e = Enc::new();
        e.u32(1_000_000);
        let mut d = Dec::new(&e.buf, "test");
        assert!(d.bytes(usize::MAX).is_err());
        let mut d = Dec::new(&e.buf, "test");
        assert!(d.count(1).is_err());
    }
}
