//! Small helpers shared across modules: hex, JSON serialisers, random ids.

use crate::tree::Time;
use serde::Serializer;

/// Lower-case hex of a byte string.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Serialises bytes as hex (ids in JSON).
pub fn ser_hex<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(v))
}

/// Serialises a time as RFC 3339.
pub fn ser_time<S: Serializer>(v: &Time, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.rfc3339())
}

/// Serialises raw name bytes with the listing escapes (lossless).
pub fn ser_bytes<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::names::escape(v))
}

/// 16 random bytes for snapshot and source ids.
pub fn random_id() -> [u8; 16] {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("the kernel random source is unavailable");
    b
}

/// SHA-256 of `data` (ring's assembly implementation: on CPUs without
/// SHA extensions it is about 1.6 times faster than portable code, and
/// SHA-256 is the largest CPU cost of writing and reading a stream).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .try_into()
        .unwrap()
}

/// SHA-256 of several byte strings concatenated.
pub fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        c.update(p);
    }
    c.finish().as_ref().try_into().unwrap()
}

/// An incremental SHA-256 (the stream's digest list).
pub struct Sha256Stream(ring::digest::Context);

impl Default for Sha256Stream {
    fn default() -> Self {
        Sha256Stream(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Sha256Stream {
    /// Feeds bytes.
    pub fn update(&mut self, b: &[u8]) {
        self.0.update(b);
    }
    /// The digest of everything fed so far (the state is kept).
    pub fn current(&self) -> [u8; 32] {
        self.0.clone().finish().as_ref().try_into().unwrap()
    }
}

/// Parses lowercase or uppercase hex; `None` if it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Block runs as "0-3,7,9-12" for one-line displays.
pub fn block_ranges(runs: &[(u64, u64)]) -> String {
    runs.iter()
        .map(|&(s, n)| {
            if n == 1 {
                s.to_string()
            } else {
                format!("{s}-{}", s + n - 1)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}
