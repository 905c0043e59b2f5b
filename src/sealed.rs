//! Small state files sealed the same way (the catalog, a mirror's state):
//! `magic [8], version u32, raw_length u64, stored_length u64`, the body
//! as one zstd frame, and the SHA-256 of everything before it. One place
//! frames and checks them, so the two formats cannot drift apart.

use anyhow::{bail, Context, Result};

/// Frames `body` under `magic` and `version`.
pub fn seal(magic: &[u8; 8], version: u32, body: &[u8]) -> Vec<u8> {
    // Level 1: most of a catalog is block checksums, which do not
    // compress; level 3 cost a third more time for 0.2% less.
    let stored = zstd::bulk::compress(body, 1).expect("zstd compresses in memory");
    let mut out = Vec::with_capacity(stored.len() + 60);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&(stored.len() as u64).to_le_bytes());
    out.extend_from_slice(&stored);
    let h = crate::digest::sha256(&out);
    out.extend_from_slice(&h);
    out
}

/// What a sealed file holds: its version (for the caller to accept or
/// refuse) and its body, checked and decompressed. `what` names the file
/// in errors; `damaged` is the advice given when its checksum fails.
pub fn open(bytes: &[u8], magic: &[u8; 8], what: &str, damaged: &str) -> Result<(u32, Vec<u8>)> {
    if bytes.len() < 28 + 32 || bytes[..8] != magic[..] {
        bail!("not a snapdump {what} (bad magic)");
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    let (content, sum) = bytes.split_at(bytes.len() - 32);
    if crate::digest::sha256(content) != sum {
        bail!("{what} checksum mismatch (damaged){damaged}");
    }
    let raw_len = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
    let stored_len = u64::from_le_bytes(bytes[20..28].try_into().unwrap());
    if stored_len != content.len() as u64 - 28 || raw_len > 1 << 40 {
        bail!("{what} length fields are inconsistent");
    }
    let body = zstd::bulk::decompress(&content[28..], raw_len as usize)
        .with_context(|| format!("{what} body does not decompress"))?;
    Ok((version, body))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_sealed_body_opens_and_any_flipped_byte_is_refused() {
        let s = super::seal(b"SDTESTXX", 7, b"some body");
        assert_eq!(
            super::open(&s, b"SDTESTXX", "test", "").unwrap(),
            (7, b"some body".to_vec())
        );
        for i in 0..s.len() {
            let mut b = s.clone();
            b[i] ^= 1;
            assert!(
                super::open(&b, b"SDTESTXX", "test", "").is_err(),
                "byte {i}"
            );
        }
    }
}
