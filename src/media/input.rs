//! Streams to read: a file, a device, stdin, or the volumes of a dump on
//! tape, probed once and opened for the reader that wants them.

use super::kind::{probe, MediumKind};
use super::IO_BUF;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufReader, Read};
use std::sync::{Arc, Mutex};

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

    /// Whether the medium holds one stream only, so nothing after its end
    /// record is read (a tape file, a block device), unlike a file or a
    /// pipe, which may carry several back to back.
    pub fn holds_one_stream(&self) -> bool {
        self.is_tape() || self.kind == MediumKind::BlockDevice
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

    /// The stream read by offset, if the medium allows it: a regular file,
    /// or a dump whole on one virtual tape, in full records (a dump given
    /// as several volumes, or a damaged image, is read in order instead).
    pub fn seekable(&self) -> Result<Option<Box<dyn super::ByOffset>>> {
        match self.kind {
            MediumKind::File => {
                let f = match self.take() {
                    Some(f) => f,
                    None => File::open(&self.specs[0])
                        .with_context(|| format!("cannot open stream {}", self.specs[0]))?,
                };
                Ok(Some(Box::new(f)))
            }
            MediumKind::VirtualTape if self.specs.len() == 1 && self.new_volume.is_none() => {
                let f = File::open(&self.specs[0])
                    .with_context(|| format!("cannot open virtual tape {}", self.specs[0]))?;
                let dump =
                    super::tape::tap_offsets::TapDump::open(f, &self.specs[0], self.file_number)
                        .with_context(|| format!("cannot read virtual tape {}", self.specs[0]))?;
                Ok(dump.map(|d| Box::new(d) as Box<dyn super::ByOffset>))
            }
            _ => Ok(None),
        }
    }

    fn take(&self) -> Option<File> {
        self.opened.lock().ok().and_then(|mut g| g.take())
    }

    /// Opens the stream for sequential reading. A sequential medium can be
    /// opened once (its bytes are gone once read).
    pub fn open(&self) -> Result<Box<dyn Read + Send>> {
        if self.is_tape() {
            let r = crate::media::tape::reader::TapeReader::open(
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
            && crate::media::tape::reader::first_volume_number(spec)? > 1;
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
