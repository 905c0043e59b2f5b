//! Placing a replication stream's blocks in the destination volume while
//! the stream arrives, so that once the source says commit only the
//! volume's commit is left to do.
//!
//! The stream still goes to the incoming file first (it is what a cut
//! transfer resumes from, and what the source is told is synced); a worker
//! reads the same bytes — the held prefix from the file, then each frame
//! as it is written — and writes the blocks to VBNs the volume's committed
//! state does not use, under a shared lock, so readers of the volume are
//! not held up. It is only a head start: if it fails for any reason (a
//! damaged stream, a block size the volume cannot take, a writer that
//! committed in between) the stream is applied from the incoming file as
//! if it had not run.

use crate::lock::Wait;
use crate::stream::reader::Digest;
use crate::volume::receive::{prepare_stream, Prepared};
use crate::volume::store::{Access, Volume};
use anyhow::{anyhow, Result};
use crossbeam_channel::{Receiver, Sender};
use std::io::Read;
use std::path::PathBuf;
use std::thread::{Scope, ScopedJoinHandle};

/// Frames waiting for the worker at most (each at most a data frame).
const QUEUE: usize = 64;

/// The worker's outcome: the volume it placed into and the prepared commit.
type Placed = Result<(Volume, Prepared)>;

/// A head start on applying a stream to a volume.
pub struct EarlyPlacement<'scope> {
    feed: Option<Sender<Vec<u8>>>,
    worker: Option<ScopedJoinHandle<'scope, Placed>>,
}

impl<'scope> EarlyPlacement<'scope> {
    /// Starts the worker on `vol` (as the hello read it): it reads bytes
    /// `0..at` of the incoming file, then what [`push`](Self::push) gives.
    pub fn start(
        s: &'scope Scope<'scope, '_>,
        vol: Volume,
        incoming: PathBuf,
        at: u64,
    ) -> EarlyPlacement<'scope> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let worker = s.spawn(move || place(vol, incoming, at, rx));
        EarlyPlacement {
            feed: Some(tx),
            worker: Some(worker),
        }
    }

    /// Hands the worker the stream bytes that follow; a worker that gave
    /// up gets nothing more.
    pub fn push(&mut self, bytes: Vec<u8>) {
        if let Some(f) = &self.feed {
            if f.send(bytes).is_err() {
                self.feed = None;
            }
        }
    }

    /// The stream is complete: the worker reads to its end.
    pub fn end(&mut self) {
        self.feed = None;
    }

    /// Waits for the worker: the volume and the prepared commit, or `None`
    /// when it did not get there (the caller applies from the file).
    pub fn finish(mut self) -> Option<(Volume, Prepared)> {
        self.feed = None;
        self.worker.take()?.join().ok()?.ok()
    }
}

impl Drop for EarlyPlacement<'_> {
    fn drop(&mut self) {
        // A cut transfer: the worker sees the end of its feed, fails, and
        // gives back what it wrote past the committed data region.
        self.feed = None;
        if let Some(w) = self.worker.take() {
            // Placed but never committed: give the space back too.
            if let Ok(Ok((vol, _))) = w.join() {
                vol.trim_to_committed();
            }
        }
    }
}

fn place(vol: Volume, incoming: PathBuf, at: u64, rx: Receiver<Vec<u8>>) -> Placed {
    let vol = vol.reopen(Access::Place, Wait::No)?;
    let name = incoming.display().to_string();
    let prefix = std::fs::File::open(&incoming)?.take(at);
    let feed = FeedReader {
        rx,
        buf: Vec::new(),
        pos: 0,
    };
    let mut set = crate::stream::set::ImageSetReader::new(Box::new(prefix.chain(feed)), &name);
    let placed = set
        .next_stream(Digest::Check)
        .and_then(|r| r.ok_or_else(|| anyhow!("{name}: no stream")))
        .and_then(|r| prepare_stream(&vol, r));
    match placed {
        Ok(p) => Ok((vol, p)),
        Err(e) => {
            vol.trim_to_committed();
            Err(e)
        }
    }
}

/// The frames the worker is handed, as a byte stream.
struct FeedReader {
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for FeedReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
