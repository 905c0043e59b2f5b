//! Streams being written: a temporary file renamed into place on commit,
//! stdout, a device, or the tape writer.

use super::kind::{descriptor_name, dup_fd, writes_tape};
use super::IO_BUF;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How an output is finished.
enum Finish {
    Stdout,
    /// A writer the producer's caller owns (a replication channel).
    Sink,
    /// Written to `tmp`, renamed to `path` on commit.
    Replace {
        tmp: PathBuf,
        path: PathBuf,
        file: File,
    },
    /// A device or fifo, written in place.
    Direct {
        file: File,
    },
    /// A tape (virtual or real): records, volumes, a filemark at the end.
    Tape {
        writer: Arc<Mutex<crate::media::tape::writer::TapeWriter>>,
    },
}

/// Writes a resumed stream over a partial file: bytes equal to what the
/// file holds are skipped; at the first difference (or the file's end) the
/// file is cut there and written on.
struct ResumeFile {
    file: File,
    /// Bytes of the file still to compare (0 once they differed).
    existing: u64,
    pos: u64,
    kept: Arc<std::sync::atomic::AtomicU64>,
    buf: Vec<u8>,
}

impl Write for ResumeFile {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut rest = data;
        if self.pos < self.existing {
            let n = (self.existing - self.pos).min(rest.len() as u64) as usize;
            self.buf.resize(n, 0);
            self.file.read_exact_at(&mut self.buf, self.pos)?;
            let same = self
                .buf
                .iter()
                .zip(&rest[..n])
                .take_while(|(a, b)| a == b)
                .count();
            self.pos += same as u64;
            self.kept
                .store(self.pos, std::sync::atomic::Ordering::Relaxed);
            rest = &rest[same..];
            if same < n {
                // The stream differs from here: what follows on the file
                // is not this stream.
                self.existing = self.pos;
            }
        }
        if !rest.is_empty() {
            if self.existing > 0 && self.pos == self.existing {
                self.file.set_len(self.pos)?;
                self.existing = 0;
            }
            self.file.write_all_at(rest, self.pos)?;
            self.pos += rest.len() as u64;
        }
        Ok(data.len())
    }

    /// The stream writer flushes once, at the end of the stream: a partial
    /// file longer than the stream is cut to it.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.pos < self.existing {
            self.file.set_len(self.pos)?;
            self.existing = self.pos;
        }
        Ok(())
    }
}

/// The handle the stream writer writes a tape dump through; the tape
/// writer itself stays with the [`Output`], which finishes it on commit.
struct SharedTape(Arc<Mutex<crate::media::tape::writer::TapeWriter>>);

impl Write for SharedTape {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("tape writer poisoned"))?
            .write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An output being written.
pub struct Output {
    finish: Finish,
    /// What the user named (for messages and the catalog).
    pub name: String,
}

impl Output {
    /// Opens the dump's destination: a tape (its first volume `specs[0]`,
    /// further volumes from the rest of `specs` and `tape.new_volume`), or
    /// a file, device or stdout.
    pub fn open_medium(
        specs: &[String],
        tape: &crate::media::tape::writer::TapeOptions,
    ) -> Result<(Output, Box<dyn Write + Send>)> {
        if writes_tape(specs, tape.capacity) {
            let w = crate::media::tape::writer::TapeWriter::open(specs.to_vec(), tape.clone())?;
            let shared = Arc::new(Mutex::new(w));
            return Ok((
                Output {
                    finish: Finish::Tape {
                        writer: shared.clone(),
                    },
                    name: specs[0].clone(),
                },
                Box::new(SharedTape(shared)),
            ));
        }
        Self::open(&specs[0])
    }

    /// Reopens the tape (or volume) of an interrupted dump that started at
    /// tape file `tape_file`, to continue it; the counter tells how many
    /// stream bytes were found on the medium and kept.
    pub fn resume_tape(
        specs: &[String],
        tape: &crate::media::tape::writer::TapeOptions,
        tape_file: u64,
    ) -> Result<(
        Output,
        Box<dyn Write + Send>,
        Arc<std::sync::atomic::AtomicU64>,
    )> {
        let opener = crate::media::tape::writer::default_opener(tape.capacity);
        let w = crate::media::tape::writer::TapeWriter::resume_with(
            specs.to_vec(),
            tape.clone(),
            tape_file,
            opener,
        )?;
        let kept = w.kept.clone();
        let shared = Arc::new(Mutex::new(w));
        Ok((
            Output {
                finish: Finish::Tape {
                    writer: shared.clone(),
                },
                name: specs[0].clone(),
            },
            Box::new(SharedTape(shared)),
            kept,
        ))
    }

    /// Names the dump on its tape volumes' headers (nothing to do on other
    /// media); called before the first byte of the stream is written.
    pub fn set_label(&self, label: crate::media::tape::volume::TapeLabel) {
        if let Finish::Tape { writer } = &self.finish {
            if let Ok(mut w) = writer.lock() {
                w.set_label(label);
            }
        }
    }

    /// For a dump to tape: the tape file (from 1) it starts at.
    pub fn tape_file(&self) -> Option<u64> {
        match &self.finish {
            Finish::Tape { writer } => writer.lock().ok().map(|w| w.tape_file),
            _ => None,
        }
    }

    /// The temporary file a regular-file output is written to (what an
    /// interrupted dump leaves, and `--resume` continues).
    pub fn partial_path(&self) -> Option<PathBuf> {
        match &self.finish {
            Finish::Replace { tmp, .. } => Some(tmp.clone()),
            _ => None,
        }
    }

    /// Reopens the partial file of an interrupted dump to `spec`: the
    /// stream written through the returned writer is compared with what the
    /// file holds and only written from where they differ or the file ends.
    /// The shared counter tells how many bytes were kept.
    pub fn resume_file(
        spec: &str,
        partial: &Path,
    ) -> Result<(
        Output,
        Box<dyn Write + Send>,
        Arc<std::sync::atomic::AtomicU64>,
    )> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(partial)
            .with_context(|| {
                format!(
                    "cannot reopen {} (the interrupted dump's partial file); run the dump again without --resume",
                    partial.display()
                )
            })?;
        let existing = file.metadata()?.len();
        let kept = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let w = ResumeFile {
            file: file.try_clone()?,
            existing,
            pos: 0,
            kept: kept.clone(),
            buf: Vec::new(),
        };
        Ok((
            Output {
                finish: Finish::Replace {
                    tmp: partial.to_path_buf(),
                    path: PathBuf::from(spec),
                    file,
                },
                name: spec.to_string(),
            },
            Box::new(BufWriter::with_capacity(IO_BUF, w)),
            kept,
        ))
    }

    /// An output whose bytes go to a writer the caller owns (the replication
    /// channel): nothing to commit or discard here; `name` is for messages.
    pub fn sink(name: &str) -> Output {
        Output {
            finish: Finish::Sink,
            name: name.to_string(),
        }
    }

    /// Opens `spec` for writing a stream ("-" is stdout).
    pub fn open(spec: &str) -> Result<(Output, Box<dyn Write + Send>)> {
        if spec == "-" {
            if crate::fsx::stdio_was_closed(1) {
                bail!("standard output is closed; redirect it to a file or a pipe, or name the output with -f");
            }
            let w = BufWriter::with_capacity(IO_BUF, std::io::stdout());
            return Ok((
                Output {
                    finish: Finish::Stdout,
                    name: "-".into(),
                },
                Box::new(w),
            ));
        }
        if let Some(fd) = descriptor_name(spec) {
            let file = dup_fd(fd, spec)?;
            let w = BufWriter::with_capacity(IO_BUF, file.try_clone()?);
            return Ok((
                Output {
                    finish: Finish::Direct { file },
                    name: spec.into(),
                },
                Box::new(w),
            ));
        }
        let path = Path::new(spec);
        let special = std::fs::metadata(path)
            .map(|m| {
                let t = m.file_type();
                t.is_char_device() || t.is_block_device() || t.is_fifo() || t.is_socket()
            })
            .unwrap_or(false);
        if path.is_dir() {
            bail!("output {spec} is a directory; name a file, a device, or - for stdout");
        }
        if !special && !path.exists() && crate::fsx::on_dev_fs(path) {
            // A missing device is not a file to create (a tape drive that
            // is not there, a typo): /dev belongs to the kernel.
            bail!("output {spec}: no such device (snapdump does not create files under /dev)");
        }
        if special {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("cannot open output {spec}"))?;
            let w = BufWriter::with_capacity(IO_BUF, file.try_clone()?);
            return Ok((
                Output {
                    finish: Finish::Direct { file },
                    name: spec.into(),
                },
                Box::new(w),
            ));
        }
        // Through a symlink, the file it points to is replaced, and the
        // link stays.
        let resolved;
        let path = if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            resolved = std::fs::canonicalize(path)
                .with_context(|| format!("cannot resolve the symlink {spec}"))?;
            resolved.as_path()
        } else {
            path
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = path
            .file_name()
            .with_context(|| format!("output {spec} has no file name"))?;
        let tmp = dir.join(format!(
            ".{}.snapdump-partial.{}",
            base.to_string_lossy(),
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot create output {spec} (in {})", dir.display()))?;
        let w = BufWriter::with_capacity(IO_BUF, file.try_clone()?);
        Ok((
            Output {
                finish: Finish::Replace {
                    tmp,
                    path: path.to_path_buf(),
                    file,
                },
                name: spec.into(),
            },
            Box::new(w),
        ))
    }

    /// [`Output::commit`], and for a dump to tape how many volumes it
    /// filled, counted once the last records are written (they may begin
    /// a volume of their own).
    pub fn commit_counting_volumes(self) -> Result<Option<u32>> {
        let writer = match &self.finish {
            Finish::Tape { writer } => Some(writer.clone()),
            _ => None,
        };
        self.commit()?;
        Ok(writer.and_then(|w| w.lock().ok().map(|w| w.volumes.len() as u32)))
    }

    /// Makes the finished stream durable and visible under its name. The
    /// writer must have been flushed and dropped.
    pub fn commit(self) -> Result<()> {
        match self.finish {
            Finish::Stdout | Finish::Sink => Ok(()),
            Finish::Tape { writer } => writer
                .lock()
                .map_err(|_| anyhow::anyhow!("tape writer poisoned"))?
                .finish(),
            Finish::Direct { file } => {
                // Devices may not support fsync; a pipe never does.
                let _ = file.sync_all();
                Ok(())
            }
            Finish::Replace { tmp, path, file } => {
                let r = (|| -> std::io::Result<()> {
                    file.sync_all()?;
                    std::fs::rename(&tmp, &path)?;
                    let dir = path
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(Path::new("."));
                    File::open(dir)?.sync_all()
                })();
                if let Err(e) = r {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e)
                        .with_context(|| format!("cannot finish output {}", path.display()));
                }
                Ok(())
            }
        }
    }

    /// Discards a failed stream: the temporary file is removed, so nothing
    /// half-written is left under the requested name.
    pub fn abort(self) {
        match self.finish {
            Finish::Replace { tmp, .. } => {
                let _ = std::fs::remove_file(tmp);
            }
            Finish::Tape { writer } => {
                if let Ok(mut w) = writer.lock() {
                    w.abandon();
                }
            }
            _ => {}
        }
    }
}
