//! The strong digests: SHA-256 of catalogs, sealed files and streams up to
//! format 4; BLAKE3 of the digest lists of streams from format 5.

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

/// The hash of a stream's digest list (formats/stream.md, Records): SHA-256
/// up to format 4, BLAKE3 from format 5. BLAKE3 is 2.5 times SHA-256's
/// speed on CPUs with SHA extensions and over ten times without them
/// (`examples/codec_speed`), and the digest list is computed over every
/// stored byte of a stream on each write and each checked read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListHash {
    /// SHA-256 (formats 1 to 4).
    Sha256,
    /// BLAKE3 with 32-byte output (format 5 on).
    Blake3,
}

impl ListHash {
    /// The list hash of stream format `version`.
    pub fn of_version(version: u32) -> ListHash {
        if version >= 5 {
            ListHash::Blake3
        } else {
            ListHash::Sha256
        }
    }
    /// The hash of `parts` concatenated (one record's entry in the list).
    pub fn of(self, parts: &[&[u8]]) -> [u8; 32] {
        match self {
            ListHash::Sha256 => sha256_parts(parts),
            ListHash::Blake3 => {
                let mut h = blake3::Hasher::new();
                for p in parts {
                    h.update(p);
                }
                *h.finalize().as_bytes()
            }
        }
    }
    /// A new, empty running hash (the list itself).
    pub fn running(self) -> Running {
        match self {
            ListHash::Sha256 => Running::Sha256(Box::default()),
            ListHash::Blake3 => Running::Blake3(Box::default()),
        }
    }
    /// The algorithm's name, as reports print it.
    pub fn name(self) -> &'static str {
        match self {
            ListHash::Sha256 => "SHA-256",
            ListHash::Blake3 => "BLAKE3",
        }
    }
}

/// A running hash of a stream's digest list, in the list's algorithm.
pub enum Running {
    /// SHA-256 list (formats 1 to 4).
    Sha256(Box<Sha256Stream>),
    /// BLAKE3 list (format 5 on).
    Blake3(Box<blake3::Hasher>),
}

impl Running {
    /// Feeds bytes.
    pub fn update(&mut self, b: &[u8]) {
        match self {
            Running::Sha256(s) => s.update(b),
            Running::Blake3(h) => {
                h.update(b);
            }
        }
    }
    /// The hash of everything fed so far (the state is kept).
    pub fn current(&self) -> [u8; 32] {
        match self {
            Running::Sha256(s) => s.current(),
            Running::Blake3(h) => *h.finalize().as_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published test vectors: an independent reader's anchor.
    #[test]
    fn list_hashes_match_their_published_vectors() {
        assert_eq!(
            crate::ids::hex(&ListHash::Sha256.of(&[b"abc"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            crate::ids::hex(&ListHash::Blake3.of(&[b"ab", b"c"])),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        let mut r = ListHash::Blake3.running();
        r.update(b"a");
        r.update(b"bc");
        assert_eq!(r.current(), ListHash::Blake3.of(&[b"abc"]));
        assert_eq!(ListHash::of_version(4), ListHash::Sha256);
        assert_eq!(ListHash::of_version(5), ListHash::Blake3);
    }
}
