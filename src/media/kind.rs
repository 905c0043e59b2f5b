//! What a `-f` name is: decided once, from the opened descriptor (or the
//! tape drive behind the name), for every reader and writer.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

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
pub(super) fn dup_fd(fd: i32, spec: &str) -> Result<File> {
    crate::fsx::dup_cloexec(fd).with_context(|| format!("cannot use {spec} (descriptor {fd})"))
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
    if st_device(spec).is_some() {
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
    if is_virtual_tape(spec) {
        return Ok((MediumKind::VirtualTape, None));
    }
    let mut magic = [0u8; 8];
    use std::os::unix::fs::FileExt;
    if f.read_exact_at(&mut magic, 0).is_ok()
        && crate::media::tape::volume::VolumeHeader::looks_like(&magic)
    {
        return Ok((MediumKind::VolumeFile, None));
    }
    Ok((MediumKind::File, Some(f)))
}

fn set_blocking(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    crate::fsx::set_blocking(f.as_fd())
}

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

/// Whether `spec` names a virtual tape (by its `.tap` extension).
pub fn is_virtual_tape(spec: &str) -> bool {
    spec != "-" && spec.ends_with(".tap")
}

/// An st tape drive a `-f` name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StDrive {
    /// The device rewinds the tape when closed (`/dev/stN`, not `/dev/nstN`).
    pub rewinds: bool,
    /// Served by the simulated drive ([`super::tape::sim`]), not the st driver.
    pub simulated: bool,
}

/// Whether `spec` names a Linux SCSI tape drive: a character device of
/// major 9 (the st driver; minor bit 7 set for the non-rewinding device),
/// or, with `SNAPDUMP_SIMULATED_ST` set, a name `/dev/nstN` or `/dev/stN`,
/// which the simulated drive serves without anything under `/dev` being
/// looked at.
pub fn st_device(spec: &str) -> Option<StDrive> {
    if super::tape::sim::dir().is_some() {
        if let Some(rewinds) = super::tape::sim::st_name(spec) {
            return Some(StDrive {
                rewinds,
                simulated: true,
            });
        }
    }
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::fs::MetadataExt;
    if spec == "-" {
        return None;
    }
    let m = std::fs::metadata(spec).ok()?;
    (m.file_type().is_char_device() && libc::major(m.rdev()) == 9).then(|| StDrive {
        rewinds: libc::minor(m.rdev()) & 0x80 == 0,
        simulated: false,
    })
}

/// Refuses positioning on a rewinding st device: `what` needs the tape to
/// stay where it is between operations.
pub fn require_non_rewinding(spec: &str, what: &str) -> anyhow::Result<()> {
    if st_device(spec).is_some_and(|d| d.rewinds) {
        anyhow::bail!(
            "{spec} rewinds the tape when closed; {what} needs the non-rewinding device (/dev/nstN)"
        );
    }
    Ok(())
}

/// Whether a dump to `specs` goes through the tape writer (volume headers,
/// fixed-size records, filemarks, volume changes): a tape drive, a virtual
/// tape, several volumes, or a volume size. The one place that decides it.
pub fn writes_tape(specs: &[String], capacity: u64) -> bool {
    let virtual_tape = is_virtual_tape(&specs[0])
        && descriptor_name(&specs[0]).is_none()
        && std::fs::metadata(&specs[0]).map_or(true, |m| m.is_file());
    specs.len() > 1 || capacity > 0 || virtual_tape || st_device(&specs[0]).is_some()
}

/// Which tape-layer device a `-f` name of a tape dump is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapeDevice {
    /// An st drive (real or simulated).
    St(StDrive),
    /// A virtual tape (SIMH `.tap` file).
    Virtual,
    /// A volume file (a volume header, then the stream's bytes).
    VolumeFile,
    /// Standard input or output, which cannot hold volumes.
    Stdio,
}

/// The device the tape layer opens for `spec`, decided here with the rest
/// of the classification: an st drive by its device (or the simulation),
/// a virtual tape by its `.tap` name, anything else a volume file.
pub fn tape_device(spec: &str) -> TapeDevice {
    if let Some(drive) = st_device(spec) {
        TapeDevice::St(drive)
    } else if spec == "-" {
        TapeDevice::Stdio
    } else if is_virtual_tape(spec) {
        TapeDevice::Virtual
    } else {
        TapeDevice::VolumeFile
    }
}
