//! Applying a replication stream while it arrives, so that once the
//! source says commit only the last step is left to do: a volume's blocks
//! are placed at VBNs its committed state does not use, and a directory
//! target's increment is read, checked and staged (its new tree built,
//! nothing the user sees changed).
//!
//! The stream still goes to the incoming file first (it is what a cut
//! transfer resumes from, and what the source is told is synced); a worker
//! reads the same bytes — the held prefix from the file, then each frame
//! as it is written. It is only a head start: if it fails or gives up for
//! any reason (a damaged stream, a full copy into a directory, a block
//! size the volume cannot take, a writer that committed in between, a
//! target another restore holds) the stream is applied from the incoming
//! file as if it had not run. What it did is given back when the transfer
//! is cut: a volume's placed blocks trimmed, a target's staged apply
//! undone (a kill instead leaves that to the next run's recovery, which
//! undoes an apply that was never declared checked).

use crate::lock::Wait;
use crate::report::Report;
use crate::stream::reader::Digest;
use crate::target::apply::{prepare, Prepared, Staged};
use crate::target::state::StatePaths;
use crate::target::summary::RestoreOptions;
use crate::volume::receive::{prepare_stream, Prepared as Placed};
use crate::volume::store::{Access, Volume};
use anyhow::{anyhow, bail, Result};
use crossbeam_channel::{Receiver, Sender};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::thread::{Scope, ScopedJoinHandle};

/// Frames waiting for the worker at most (each at most a data frame).
const QUEUE: usize = 64;

/// A head start on applying a stream; `T` is what the worker prepared.
pub struct Early<'scope, T: Send + 'scope> {
    feed: Option<Sender<Vec<u8>>>,
    worker: Option<ScopedJoinHandle<'scope, Result<T>>>,
    /// Gives back what a prepared but never committed `T` holds.
    abandon: fn(T),
}

impl<'scope, T: Send + 'scope> Early<'scope, T> {
    /// Starts `work` on the stream: bytes `0..at` of the incoming file,
    /// then what [`push`](Self::push) gives. `work` gets the stream and a
    /// name for messages.
    fn start(
        s: &'scope Scope<'scope, '_>,
        incoming: PathBuf,
        at: u64,
        work: impl FnOnce(Box<dyn Read + Send>, String) -> Result<T> + Send + 'scope,
        abandon: fn(T),
    ) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let worker = s.spawn(move || {
            let name = incoming.display().to_string();
            let prefix = std::fs::File::open(&incoming)?.take(at);
            let feed = FeedReader {
                rx,
                buf: Vec::new(),
                pos: 0,
            };
            work(Box::new(prefix.chain(feed)), name)
        });
        Early {
            feed: Some(tx),
            worker: Some(worker),
            abandon,
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

    /// Waits for the worker: what it prepared, or `None` when it did not
    /// get there (the caller applies from the file).
    pub fn finish(mut self) -> Option<T> {
        self.feed = None;
        self.worker.take()?.join().ok()?.ok()
    }
}

impl<T: Send> Drop for Early<'_, T> {
    fn drop(&mut self) {
        // A cut transfer: the worker sees the end of its feed and fails
        // (giving back what it did), or has prepared everything, which is
        // given back here.
        self.feed = None;
        if let Some(w) = self.worker.take() {
            if let Ok(Ok(t)) = w.join() {
                (self.abandon)(t);
            }
        }
    }
}

/// Places the stream's blocks into `vol` (as the hello read it).
pub fn place<'scope>(
    s: &'scope Scope<'scope, '_>,
    vol: Volume,
    incoming: PathBuf,
    at: u64,
) -> Early<'scope, (Volume, Placed)> {
    Early::start(
        s,
        incoming,
        at,
        move |input, name| {
            let vol = vol.reopen(Access::Place, Wait::No)?;
            let mut set = crate::stream::set::ImageSetReader::new(input, &name);
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
        },
        |(vol, _)| vol.trim_to_committed(),
    )
}

/// Reads, checks and stages an increment for the directory target `t`.
/// Gives up (and the apply from the file does it all) on a full copy, an
/// interrupted apply to recover first, or a target another restore holds.
pub fn stage<'scope>(
    s: &'scope Scope<'scope, '_>,
    t: &'scope Path,
    inplace: bool,
    incoming: PathBuf,
    at: u64,
    report: &'scope Report,
) -> Early<'scope, Staged> {
    Early::start(
        s,
        incoming.clone(),
        at,
        move |input, name| {
            let mut set = crate::stream::set::ImageSetReader::new(input, &name);
            let r = set
                .next_stream(Digest::Check)?
                .ok_or_else(|| anyhow!("{name}: no stream"))?;
            if r.header.full {
                bail!("a full copy is restored from the file");
            }
            let paths = StatePaths::new(t);
            let lock = paths.lock(t, Wait::No)?;
            if crate::target::pending::Pending::exists(&paths) {
                bail!("an interrupted apply is recovered first");
            }
            let opts = options(t, &incoming, inplace)?;
            match prepare(&opts, r, report, std::time::Instant::now(), Some(lock))? {
                Prepared::Staged(staged) => Ok(*staged),
                Prepared::Finished(_) => bail!("nothing was staged"),
            }
        },
        |staged| {
            let _ = staged.abandon();
        },
    )
}

/// The options of an apply into target `t` of the incoming file.
pub fn options(t: &Path, incoming: &Path, inplace: bool) -> Result<RestoreOptions> {
    Ok(RestoreOptions {
        input: crate::media::Input::plain(&incoming.to_string_lossy())?,
        target: t.to_path_buf(),
        force: false,
        digest: Digest::Check,
        wait: Wait::Yes,
        restored_before: None,
        inplace,
    })
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
