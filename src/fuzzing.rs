//! Entry points for fuzzing the parsers of untrusted input: a whole stream
//! as restore and verify read it, a catalog file, and single records.
//!
//! `fuzz/` wraps each in a cargo-fuzz target; the test suite replays every
//! input kept in `testdata/fuzz-regressions/` through the same functions,
//! so a crash found once stays fixed. Each function must return (an error
//! is fine) for any input: never panic, never hang, never allocate beyond
//! the format's limits.

use crate::restore::check::{read_data, read_front};
use crate::stream::reader::{Digest, StreamReader};

/// Reads `data` as a stream, front to end, as verify does.
pub fn stream(data: &[u8]) {
    let input: Box<dyn std::io::Read + Send> = Box::new(std::io::Cursor::new(data.to_vec()));
    let Ok(mut r) = StreamReader::open(input, "fuzz", Digest::Check) else {
        return;
    };
    let Ok(front) = read_front(&mut r) else {
        return;
    };
    let _ = read_data(&mut r, &front, |_, _| Ok(()));
}

/// Parses `data` as a catalog file, and as a catalog body (the part behind
/// the checksum and compression, which random mutations rarely get past).
pub fn catalog(data: &[u8]) {
    let _ = crate::catalog::decode(data);
    let _ = crate::catalog::decode_body(data);
}

/// Parses `data` as one record, then its payload as every payload kind.
pub fn records(data: &[u8]) {
    use crate::stream::payload::{decode_data, decode_reloc, End, Image};
    use crate::stream::record::{open, parse_header, HEADER_LEN};
    if data.len() >= HEADER_LEN {
        if let Ok(h) = parse_header(data[..HEADER_LEN].try_into().unwrap()) {
            let _ = open(&h, &data[HEADER_LEN..]);
        }
    }
    let _ = crate::stream::header::StreamHeader::decode(data);
    let _ = Image::decode(data);
    let _ = decode_data(data);
    let _ = decode_reloc(data);
    let _ = End::decode(data);
    let mut b = crate::tree::TreeBuilder::new(4096);
    let _ = crate::restore::check::decode_meta(&mut b, data);
}
