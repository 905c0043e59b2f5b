//! Streams on tape-like media: record-oriented devices with filemarks and
//! an end of medium, volume headers, and dumps that span volumes
//! (formats/tape.md).
//!
//! The stream layer above writes and reads plain bytes; [`writer`] cuts
//! them into fixed-size tape records behind a volume header and changes
//! volumes at the end of a medium, and [`reader`] puts them back together,
//! checking that each volume is the one expected. A [`Device`] is what a
//! medium must do; the virtual tape ([`tap`]) is one.

pub mod changer;
pub mod file_volume;
pub mod reader;
pub mod sim;
pub mod st;
pub mod tap;
pub mod tap_offsets;
pub mod volume;
pub mod writer;

use std::io;

/// KiB per tape record unless `-b` says otherwise: large enough to keep a
/// drive streaming, small enough to buffer cheaply.
pub const DEFAULT_RECORD_KIB: u64 = 256;
/// Largest accepted `-b`.
pub const MAX_BLOCK_SIZE: u64 = 16 << 20;

/// What reading a tape position gave.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadItem {
    /// A record of this many bytes (in the buffer).
    Record(usize),
    /// A filemark (the tape is now after it).
    Filemark,
    /// The end of the recorded data.
    EndOfData,
}

/// What a tape medium does. Errors are the device's (ENOSPC at physical
/// end of medium, EIO, ...).
pub trait Device: Send {
    /// Writes one record; returns true once the medium is in its
    /// early-warning zone (the volume should be ended soon).
    fn write_record(&mut self, data: &[u8], block_size: u64) -> io::Result<bool>;
    /// Writes a filemark.
    fn write_filemark(&mut self) -> io::Result<()>;
    /// Makes what was written durable and ends the recorded data there.
    fn finish_writing(&mut self) -> io::Result<()>;
    /// Reads the next record (at most `max` bytes) into `buf`.
    fn read_record(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<ReadItem>;
    /// Passes the next record without handing over its bytes (a virtual
    /// tape steps over them; a drive reads them); what it was.
    fn skip_record(&mut self) -> io::Result<ReadItem> {
        let mut scratch = Vec::new();
        self.read_record(&mut scratch, MAX_BLOCK_SIZE as usize)
    }
    /// Goes back to the beginning of the medium.
    fn rewind(&mut self) -> io::Result<()>;
    /// Spaces forward over `count` filemarks; returns how many were passed
    /// (fewer at the end of the recorded data).
    fn space_filemarks(&mut self, count: u64) -> io::Result<u64>;
    /// Spaces to the end of the recorded data (to append after it).
    fn space_to_end_of_data(&mut self) -> io::Result<()>;
    /// For resuming: if the next record equals `data`, passes it and
    /// returns whether the medium is now in its early-warning zone;
    /// otherwise stays before it (the writer overwrites from there) and
    /// returns `None`.
    fn skip_if_equal(&mut self, data: &[u8], block_size: u64) -> io::Result<Option<bool>>;
    /// The device's name, for messages.
    fn name(&self) -> &str;
}

/// Parses a size such as `4096`, `512K`, `100M`, `2G`, `1T` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("{s}: unknown unit (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s}: not a size (e.g. 4096, 512K, 100M, 2G)"))?;
    n.checked_mul(mult).ok_or_else(|| format!("{s}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("3m"), Ok(3 << 20));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
