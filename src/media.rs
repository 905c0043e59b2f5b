//! Where streams go to and come from: regular files, stdout/stdin and
//! devices. (Tape drives and virtual tapes build on this in later work.)
//!
//! A dump to a regular file writes a temporary sibling and renames it into
//! place only after the stream is complete and synced, so a failed dump
//! never leaves a half-written file under the requested name, and an
//! earlier good stream there survives the failure.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Write buffer size: large sequential writes suit pipes, disks and tapes.
const IO_BUF: usize = 1 << 20;

/// Resolves `-f`: the given value, else `$TAPE`, else an error.
pub fn stream_spec(f: Option<&str>) -> Result<String> {
    if let Some(f) = f {
        return Ok(f.to_string());
    }
    match std::env::var("TAPE") {
        Ok(t) if !t.is_empty() => Ok(t),
        _ => bail!("no stream given: use -f FILE (or -f - for stdin/stdout), or set $TAPE"),
    }
}

/// How an output is finished.
enum Finish {
    Stdout,
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
        writer: Arc<Mutex<crate::tape::writer::TapeWriter>>,
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
struct SharedTape(Arc<Mutex<crate::tape::writer::TapeWriter>>);

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

/// Whether a dump to `specs` goes through the tape writer (volume headers,
/// fixed-size records, filemarks, volume changes): a tape drive, a virtual
/// tape, several volumes, or a volume size. The one place that decides it.
pub fn writes_tape(specs: &[String], tape: &crate::tape::writer::TapeOptions) -> bool {
    let virtual_tape = crate::tape::is_virtual_tape(&specs[0])
        && descriptor_name(&specs[0]).is_none()
        && std::fs::metadata(&specs[0]).map_or(true, |m| m.is_file());
    specs.len() > 1
        || tape.capacity > 0
        || virtual_tape
        || crate::tape::st_device(&specs[0]).is_some()
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
        tape: &crate::tape::writer::TapeOptions,
    ) -> Result<(Output, Box<dyn Write + Send>)> {
        if writes_tape(specs, tape) {
            let w = crate::tape::writer::TapeWriter::open(specs.to_vec(), tape.clone())?;
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
        tape: &crate::tape::writer::TapeOptions,
        tape_file: u64,
    ) -> Result<(
        Output,
        Box<dyn Write + Send>,
        Arc<std::sync::atomic::AtomicU64>,
    )> {
        let opener = crate::tape::writer::default_opener(tape.capacity);
        let w = crate::tape::writer::TapeWriter::resume_with(
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

    /// Opens `spec` for writing a stream ("-" is stdout).
    pub fn open(spec: &str) -> Result<(Output, Box<dyn Write + Send>)> {
        if spec == "-" {
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

    /// Makes the finished stream durable and visible under its name. The
    /// writer must have been flushed and dropped.
    pub fn commit(self) -> Result<()> {
        match self.finish {
            Finish::Stdout => Ok(()),
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

/// The descriptor a name like `/dev/stdin`, `/dev/stdout`, `/dev/fd/N` or
/// `/proc/self/fd/N` stands for: such a medium is the descriptor the
/// process has, not a file to open again (a socket cannot be, a regular
/// file would start again at offset 0, and a symlink under /dev is no
/// place for a dump's temporary file).
pub fn descriptor_name(spec: &str) -> Option<i32> {
    match spec {
        "/dev/stdin" => return Some(0),
        "/dev/stdout" => return Some(1),
        "/dev/stderr" => return Some(2),
        _ => {}
    }
    let n = spec
        .strip_prefix("/dev/fd/")
        .or_else(|| spec.strip_prefix("/proc/self/fd/"))?;
    n.parse::<i32>().ok().filter(|&fd| fd >= 0)
}

/// A descriptor of this process, duplicated into a file of its own.
fn dup_fd(fd: i32, spec: &str) -> Result<File> {
    use std::os::fd::FromRawFd;
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if d < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot use {spec} (descriptor {fd})"));
    }
    Ok(unsafe { File::from_raw_fd(d) })
}

/// What a medium is. It is decided once, in [`probe`], from the opened
/// descriptor (tape drives from their device), so that nothing is read to
/// find out and a pipe's first bytes are never eaten (DESIGN contract 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediumKind {
    /// A regular file: readers that want little of it read it by offset.
    File,
    /// Standard input or output, a pipe, a FIFO, a socket, a terminal or a
    /// character device other than a tape: read once, front to back.
    Sequential,
    /// A block device: read front to back; it holds one stream, and what
    /// follows its end record on the device is not read.
    BlockDevice,
    /// A SCSI tape drive (the st driver, or the simulated drive).
    StTape,
    /// A virtual tape (a SIMH `.tap` file).
    VirtualTape,
    /// A regular file that starts with a tape volume header: one volume of
    /// a dump cut with `--volume-size`.
    VolumeFile,
}

impl MediumKind {
    /// Whether the medium holds tape volumes (volume headers, records,
    /// filemarks) read through the tape layer.
    pub fn is_tape(self) -> bool {
        matches!(
            self,
            MediumKind::StTape | MediumKind::VirtualTape | MediumKind::VolumeFile
        )
    }
}

/// Opens `spec` for reading just enough to know what it is: a regular
/// file, a block device, a pipe or FIFO or character device, a tape. The
/// descriptor is returned for the reader to use (a FIFO is reopened
/// blocking, which waits for its writer as reading it would).
pub fn probe(spec: &str) -> Result<(MediumKind, Option<File>)> {
    use std::os::unix::fs::OpenOptionsExt;
    if spec == "-" {
        return Ok((MediumKind::Sequential, None));
    }
    if let Some(fd) = descriptor_name(spec) {
        // Read from where the descriptor is, front to back, as `-f -`.
        return Ok((MediumKind::Sequential, Some(dup_fd(fd, spec)?)));
    }
    if crate::tape::st_device(spec).is_some() {
        return Ok((MediumKind::StTape, None));
    }
    let path = Path::new(spec);
    // A FIFO is opened blocking, as reading it does: the open waits for its
    // writer, and the descriptor it gives is the one read (opening it a
    // second time could wait for a writer that has come and gone). Other
    // files are opened non-blocking, so that a device without a medium
    // opens at once; the opened descriptor's type decides in both cases.
    let fifo = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo());
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    if !fifo {
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let f = opts
        .open(path)
        .with_context(|| format!("cannot open stream {spec}"))?;
    let t = f
        .metadata()
        .with_context(|| format!("cannot stat stream {spec}"))?
        .file_type();
    if t.is_dir() {
        bail!("input {spec} is a directory, not a stream");
    }
    set_blocking(&f).with_context(|| format!("cannot open stream {spec}"))?;
    if t.is_block_device() {
        return Ok((MediumKind::BlockDevice, Some(f)));
    }
    if !t.is_file() {
        return Ok((MediumKind::Sequential, Some(f)));
    }
    if crate::tape::is_virtual_tape(spec) {
        return Ok((MediumKind::VirtualTape, None));
    }
    let mut magic = [0u8; 8];
    use std::os::unix::fs::FileExt;
    if f.read_exact_at(&mut magic, 0).is_ok()
        && crate::tape::volume::VolumeHeader::looks_like(&magic)
    {
        return Ok((MediumKind::VolumeFile, None));
    }
    Ok((MediumKind::File, Some(f)))
}

fn set_blocking(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One stream to read: a file, a device, stdin, or the volumes of a dump
/// on tape.
#[derive(Clone, Debug)]
pub struct Input {
    /// The stream, or its volumes in order (several only for tapes).
    pub specs: Vec<String>,
    /// Which dump on a tape, from 1.
    pub file_number: u64,
    /// Command that provides the next volume when the given ones run out.
    pub new_volume: Option<String>,
    /// What the (first) medium is.
    pub kind: MediumKind,
    /// The descriptor [`probe`] opened, for the first reader to take.
    opened: Arc<Mutex<Option<File>>>,
}

/// (device, inode) of a sequential medium, to tell two names of one pipe.
fn identity(kind: MediumKind, spec: &str, file: Option<&File>) -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    if kind != MediumKind::Sequential {
        return None;
    }
    let st = match file {
        Some(f) => crate::fsx::fstat(f.as_fd()).ok()?,
        None if spec == "-" => crate::fsx::fstat(std::io::stdin().as_fd()).ok()?,
        None => return None,
    };
    Some((st.st_dev, st.st_ino))
}

impl Input {
    /// A stream named by `spec` (a file, a device, or "-"), probed.
    pub fn plain(spec: &str) -> Result<Input> {
        let (kind, file) = probe(spec)?;
        Ok(Input {
            specs: vec![spec.to_string()],
            file_number: 1,
            new_volume: None,
            kind,
            opened: Arc::new(Mutex::new(file)),
        })
    }

    /// The name used in messages ("stdin" for "-").
    pub fn name(&self) -> &str {
        match self.specs[0].as_str() {
            "-" => "stdin",
            s => s,
        }
    }

    /// Whether the stream is on tape (volume headers, records, filemarks).
    pub fn is_tape(&self) -> bool {
        self.kind.is_tape()
    }

    /// For a pipe, FIFO, socket or character device (stdin included): its
    /// (device, inode), the same for every name of it.
    pub fn identity(&self) -> Option<(u64, u64)> {
        let g = self.opened.lock().ok()?;
        identity(self.kind, &self.specs[0], g.as_ref())
    }

    /// The regular file to read by offset, if the stream is one.
    pub fn seekable(&self) -> Result<Option<File>> {
        if self.kind != MediumKind::File {
            return Ok(None);
        }
        match self.take() {
            Some(f) => Ok(Some(f)),
            None => File::open(&self.specs[0])
                .map(Some)
                .with_context(|| format!("cannot open stream {}", self.specs[0])),
        }
    }

    fn take(&self) -> Option<File> {
        self.opened.lock().ok().and_then(|mut g| g.take())
    }

    /// Opens the stream for sequential reading. A sequential medium can be
    /// opened once (its bytes are gone once read).
    pub fn open(&self) -> Result<Box<dyn Read + Send>> {
        if self.is_tape() {
            let r = crate::tape::reader::TapeReader::open(
                self.specs.clone(),
                self.file_number,
                self.new_volume.clone(),
            )?;
            return Ok(Box::new(BufReader::with_capacity(IO_BUF, r)));
        }
        if self.specs[0] == "-" {
            return Ok(Box::new(BufReader::with_capacity(IO_BUF, std::io::stdin())));
        }
        let f = match self.take() {
            Some(f) => f,
            None if self.kind == MediumKind::Sequential => bail!(
                "{} is a pipe or device that was read already; it can be read only once",
                self.specs[0]
            ),
            None => File::open(&self.specs[0])
                .with_context(|| format!("cannot open stream {}", self.specs[0]))?,
        };
        Ok(Box::new(BufReader::with_capacity(IO_BUF, f)))
    }
}

/// Groups `-f` values into streams: a virtual tape or volume file that
/// holds volume 2 or later of a dump joins the tape before it, as the next
/// volume.
pub fn group_inputs(
    specs: &[String],
    file_number: u64,
    new_volume: Option<String>,
) -> Result<Vec<Input>> {
    let mut out: Vec<Input> = Vec::new();
    for spec in specs {
        let (kind, file) = probe(spec)?;
        let continues = matches!(kind, MediumKind::VirtualTape | MediumKind::VolumeFile)
            && out.last().is_some_and(|i| i.is_tape())
            && crate::tape::reader::first_volume_number(spec)? > 1;
        if continues {
            out.last_mut().expect("checked").specs.push(spec.clone());
        } else {
            out.push(Input {
                specs: vec![spec.clone()],
                file_number,
                new_volume: new_volume.clone(),
                kind,
                opened: Arc::new(Mutex::new(file)),
            });
        }
    }
    Ok(out)
}
