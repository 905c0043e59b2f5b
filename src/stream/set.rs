//! Image sets: complete streams back to back on one input.
//!
//! A dump of several snapshots from a volume (`--image 'S5+S4-S3'`) writes
//! one stream per snapshot, in order, to one output. A stream reader stops
//! right after its end record without reading ahead, so the next stream
//! starts exactly where the last one ended.
//!
//! After a stream's end record, zeros are padding (fixed-block tape drives,
//! block devices and some transfer tools pad the last block) and end the
//! input; other bytes that do not start a stream end it too, and are
//! reported ([`ImageSetReader::trailing`]) rather than taken for a damaged
//! stream.

use super::reader::{Digest, StreamReader};
use anyhow::{anyhow, Result};
use std::io::Read;
use std::sync::{Arc, Mutex};

struct Input {
    inner: Box<dyn Read + Send>,
    /// Bytes read ahead, to be read again.
    peeked: Vec<u8>,
    /// Bytes handed out so far (the input offset of the next byte).
    consumed: u64,
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
        if !g.peeked.is_empty() {
            let n = buf.len().min(g.peeked.len());
            buf[..n].copy_from_slice(&g.peeked[..n]);
            g.peeked.drain(..n);
            g.consumed += n as u64;
            return Ok(n);
        }
        let n = g.inner.read(buf)?;
        g.consumed += n as u64;
        Ok(n)
    }
}

/// Reads the streams of one input in turn.
pub struct ImageSetReader {
    shared: Shared,
    name: String,
    started: bool,
    single: bool,
    trailing: Option<String>,
    member_start: u64,
}

impl ImageSetReader {
    /// Wraps an input; `name` is used in messages.
    pub fn new(inner: Box<dyn Read + Send>, name: &str) -> Self {
        ImageSetReader {
            shared: Shared(Arc::new(Mutex::new(Input {
                inner,
                peeked: Vec::new(),
                consumed: 0,
            }))),
            name: name.to_string(),
            started: false,
            single: false,
            trailing: None,
            member_start: 0,
        }
    }

    /// The input byte where the last stream opened starts (offsets in a
    /// stream's messages count from its own start).
    pub fn position(&self) -> u64 {
        self.member_start
    }

    /// After the last stream: what followed it that is neither a stream nor
    /// zero padding (a message for a warning), if anything did.
    pub fn trailing(&self) -> Option<&str> {
        self.trailing.as_deref()
    }

    /// Opens `input`: on tape (where reading past a stream's end asks for
    /// the next volume) and on block devices (whose bytes after the stream
    /// are whatever the device held before) one stream only, since dumps
    /// never write image sets there; elsewhere every stream on it.
    pub fn open(input: &crate::media::Input) -> anyhow::Result<Self> {
        let mut r = Self::new(input.open()?, input.name());
        r.single = input.holds_one_stream();
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
        self.member_start = self.shared.0.lock().expect("input lock").consumed;
        let input = Box::new(self.shared.clone());
        if salvage {
            StreamReader::open_salvaging(input, &self.name, digest).map(Some)
        } else {
            StreamReader::open(input, &self.name, digest).map(Some)
        }
    }

    /// Whether another stream follows: zeros are skipped (padding); a
    /// record magic starts the next stream; anything else ends the input,
    /// is read to its end and described in [`ImageSetReader::trailing`].
    fn has_more(&mut self) -> Result<bool> {
        let mut g = self.shared.0.lock().expect("input lock");
        let mut zeros = 0u64;
        let at = g.consumed;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            if g.peeked.is_empty() {
                match read_some(&mut g.inner, &mut buf) {
                    Ok(0) => return Ok(false),
                    Ok(n) => g.peeked.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(anyhow!("{}: read error: {e}", self.name)),
                }
            }
            let z = g.peeked.iter().take_while(|&&b| b == 0).count();
            g.peeked.drain(..z);
            g.consumed += z as u64;
            zeros += z as u64;
            if g.peeked.is_empty() {
                continue;
            }
            // A non-zero byte: the start of another stream, or not.
            while g.peeked.len() < super::record::MAGIC.len() {
                match read_some(&mut g.inner, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => g.peeked.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(anyhow!("{}: read error: {e}", self.name)),
                }
            }
            if g.peeked.starts_with(&super::record::MAGIC) {
                return Ok(true);
            }
            let from = g.consumed;
            let mut rest = g.peeked.len() as u64;
            g.peeked.clear();
            loop {
                match read_some(&mut g.inner, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => rest += n as u64,
                    Err(e) => return Err(anyhow!("{}: read error: {e}", self.name)),
                }
            }
            let padding = if zeros > 0 {
                format!(" and {zeros} zero bytes")
            } else {
                String::new()
            };
            self.trailing = Some(format!(
                "{rest} bytes at input byte {from} (after the stream's end at byte {at}{padding}) are not a snapdump stream; ignored",
            ));
            return Ok(false);
        }
    }
}

fn read_some(r: &mut Box<dyn Read + Send>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}
