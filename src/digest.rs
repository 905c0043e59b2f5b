//! SHA-256, the strong digest of streams and catalogs.

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
