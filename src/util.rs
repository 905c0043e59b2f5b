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
