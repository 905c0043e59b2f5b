//! Image sets: complete streams back to back on one input.
//!
//! A dump of several snapshots from a volume (`--image 'S5+S4-S3'`) writes
//! one stream per snapshot, in order, to one output. A stream reader stops
//! right after its end record without reading ahead, so the next stream
//! starts exactly where the last one ended.

use super::reader::{Digest, StreamReader};
use anyhow::{anyhow, Result};
use std::io::Read;
use std::sync::{Arc, Mutex};

struct Input {
    inner: Box<dyn Read + Send>,
    peeked: Option<u8>,
}

/// The input, shared by the readers of its consecutive streams.
#[derive(Clone)]
struct Shared(Arc<Mutex<Input>>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut g = self.0.lock().expect("input lock");
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(b) = g.peeked.take() {
            buf[0] = b;
            return Ok(1);
        }
        g.inner.read(buf)
    }
}

/// Reads the streams of one input in turn.
pub struct ImageSetReader {
    shared: Shared,
    name: String,
    started: bool,
    single: bool,
}

impl ImageSetReader {
    /// Wraps an input; `name` is used in messages.
    pub fn new(inner: Box<dyn Read + Send>, name: &str) -> Self {
        ImageSetReader {
            shared: Shared(Arc::new(Mutex::new(Input {
                inner,
                peeked: None,
            }))),
            name: name.to_string(),
            started: false,
            single: false,
        }
    }

    /// Opens `input`: on tape (where reading past a stream's end asks for
    /// the next volume) one stream only, since dumps never write image
    /// sets to tape; elsewhere every stream on it.
    pub fn open(input: &crate::media::Input) -> anyhow::Result<Self> {
        let mut r = Self::new(input.open()?, input.name());
        r.single = input.is_tape();
        Ok(r)
    }

    /// The next stream; `None` at the end of the input. The first stream
    /// always exists (an empty input is an error). The previous stream must
    /// have been read to its end record.
    pub fn next_stream(&mut self, digest: Digest) -> Result<Option<StreamReader>> {
        self.next(digest, false)
    }

    /// As [`ImageSetReader::next_stream`], with a salvaging reader (see
    /// [`StreamReader::open_salvaging`]). A stream read with damage may
    /// have been read past its end, so no stream after it can be trusted
    /// to start where it should: the caller stops there.
    pub fn next_salvaging(&mut self, digest: Digest) -> Result<Option<StreamReader>> {
        self.next(digest, true)
    }

    fn next(&mut self, digest: Digest, salvage: bool) -> Result<Option<StreamReader>> {
        if self.started && (self.single || !self.has_more()?) {
            return Ok(None);
        }
        self.started = true;
        let input = Box::new(self.shared.clone());
        if salvage {
            StreamReader::open_salvaging(input, &self.name, digest).map(Some)
        } else {
            StreamReader::open(input, &self.name, digest).map(Some)
        }
    }

    fn has_more(&self) -> Result<bool> {
        let mut g = self.shared.0.lock().expect("input lock");
        if g.peeked.is_some() {
            return Ok(true);
        }
        let mut b = [0u8; 1];
        loop {
            match g.inner.read(&mut b) {
                Ok(0) => return Ok(false),
                Ok(_) => {
                    g.peeked = Some(b[0]);
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(anyhow!("{}: read error: {e}", self.name)),
            }
        }
    }
}
