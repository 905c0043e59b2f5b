//! Writing a stream to tape: fixed-size records behind a volume header, a
//! filemark at the end, and a new volume whenever the medium reports its
//! early-warning zone.

use super::changer::Changer;
use super::volume::{TapeLabel, VolumeHeader};
use super::Device;
use anyhow::{anyhow, Context, Result};
use std::io;

/// Options of a dump to tape.
#[derive(Clone, Debug)]
pub struct TapeOptions {
    /// Bytes per data record.
    pub block_size: u64,
    /// Add the dump after the recorded data instead of at the beginning.
    pub append: bool,
    /// Capacity of virtual tapes (0: unlimited).
    pub capacity: u64,
    /// Command that provides the next volume.
    pub new_volume: Option<String>,
}

/// Opens a volume's device: (spec, for writing) -> device. Tests pass
/// simulated drives; [`default_opener`] opens real ones.
pub type Opener = Box<dyn FnMut(&str, bool) -> Result<Box<dyn Device>> + Send>;

/// The opener of real devices, with `capacity` for what is written.
pub fn default_opener(capacity: u64) -> Opener {
    Box::new(move |spec, write| open_device(spec, write, capacity))
}

/// Opens the device `spec` names: a tape drive (st), a virtual tape
/// (`.tap`), else a volume file; `capacity` limits what is written to
/// virtual tapes and files (0: unlimited).
pub fn open_device(spec: &str, write: bool, capacity: u64) -> Result<Box<dyn Device>> {
    use crate::media::kind::TapeDevice;
    let path = std::path::Path::new(spec);
    let device = crate::media::kind::tape_device(spec);
    if let TapeDevice::St(drive) = device {
        let ctx = || format!("cannot open tape drive {spec}");
        if drive.simulated {
            let dir = super::sim::dir().expect("the simulation is on");
            let io = super::sim::SimSt::open(&dir, drive.rewinds).with_context(ctx)?;
            return Ok(Box::new(super::st::StDevice::new(io, spec, write)?));
        }
        let io = super::st::RealSt::open(path, write).with_context(ctx)?;
        return Ok(Box::new(super::st::StDevice::new(io, spec, write)?));
    }
    if device == TapeDevice::Stdio {
        return Err(anyhow!(
            "standard input and output cannot hold volumes; name files or tapes"
        ));
    }
    if write && !path.exists() && crate::fsx::on_dev_fs(path) {
        return Err(anyhow!(
            "{spec}: no such device (snapdump does not create files under /dev)"
        ));
    }
    if device == TapeDevice::Virtual {
        let t = super::tap::VirtualTape::open(path, write, capacity)
            .with_context(|| format!("cannot open virtual tape {spec}"))?;
        return Ok(Box::new(t));
    }
    if path.is_dir() {
        return Err(anyhow!("{spec} is a directory, not a volume"));
    }
    let f = super::file_volume::FileVolume::open(path, write, capacity)
        .with_context(|| format!("cannot open volume {spec}"))?;
    Ok(Box::new(f))
}

/// A stream being written to one or more volumes.
pub struct TapeWriter {
    changer: Changer,
    opener: Opener,
    opts: TapeOptions,
    device: Box<dyn Device>,
    /// Stream bytes not yet written as a record.
    pending: Vec<u8>,
    /// Stream bytes written as records so far.
    written: u64,
    volume: u32,
    header_done: bool,
    /// The last record reached the early-warning point: the next record
    /// goes on the next volume. Deferred until there is a next record, so
    /// that a dump ending there writes its filemark on this volume (there
    /// is room for it) instead of a next cartridge holding only that.
    at_warning: bool,
    ident: Option<TapeLabel>,
    /// Volumes used: (device, volume number).
    pub volumes: Vec<(String, u32)>,
    /// Resuming: records are compared with what the medium holds and
    /// passed while equal; false from the first difference on.
    verifying: bool,
    /// Stream bytes found on the medium and kept (resuming).
    pub kept: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The tape file (from 1) the dump starts at on its first volume.
    pub tape_file: u64,
}

impl TapeWriter {
    /// Opens the first volume, at its beginning or, with `append`, after
    /// its recorded data.
    pub fn open(specs: Vec<String>, opts: TapeOptions) -> Result<TapeWriter> {
        let opener = default_opener(opts.capacity);
        Self::open_with(specs, opts, opener)
    }

    /// As [`TapeWriter::open`], with devices from `opener`.
    pub fn open_with(
        specs: Vec<String>,
        opts: TapeOptions,
        mut opener: Opener,
    ) -> Result<TapeWriter> {
        let mut changer = Changer::new(specs, opts.new_volume.clone());
        let first = changer.first();
        if opts.append {
            crate::media::kind::require_non_rewinding(&first, "--append")?;
        }
        let mut device = opener(&first, true)?;
        device.rewind()?;
        let mut tape_file = 1;
        if opts.append {
            // Over every filemark to the end of the data: the dump becomes
            // the next tape file.
            let passed = device
                .space_filemarks(u64::MAX >> 2)
                .with_context(|| format!("cannot space {first} to the end of its data"))?;
            tape_file += passed;
            // Records after the last filemark are a dump that was cut off
            // (power lost before its filemark): closed with a filemark of
            // its own, so the new dump is a tape file of its own.
            device.rewind()?;
            device.space_filemarks(passed)?;
            let mut buf = Vec::new();
            let unfinished = matches!(
                device.read_record(&mut buf, super::MAX_BLOCK_SIZE as usize),
                Ok(super::ReadItem::Record(_))
            );
            if unfinished {
                device.space_to_end_of_data()?;
                device.write_filemark().with_context(|| {
                    format!("cannot close the cut-off dump at the end of {first}")
                })?;
                tape_file += 1;
            } else {
                device.rewind()?;
                device.space_filemarks(passed)?;
            }
            // A virtual tape whose bytes hold no record at all (a foreign
            // file; the reader skips what does not parse, to carry on past
            // damage) reads as blank, and would be written over from its
            // first byte.
            let foreign = passed == 0
                && !unfinished
                && crate::media::kind::is_virtual_tape(&first)
                && std::fs::metadata(&first).is_ok_and(|m| m.len() > 0);
            if foreign {
                return Err(anyhow!(
                    "{first} holds data but no tape record of snapdump's; --append would write over it (move it away, or name another tape)"
                ));
            }
        }
        Ok(TapeWriter::on_first(
            changer, opener, device, first, opts, tape_file, false,
        ))
    }

    /// A writer positioned on its first volume `first`, at tape file
    /// `tape_file`; `verifying` when resuming (what the medium holds is
    /// compared and kept while it matches).
    fn on_first(
        changer: Changer,
        opener: Opener,
        device: Box<dyn Device>,
        first: String,
        opts: TapeOptions,
        tape_file: u64,
        verifying: bool,
    ) -> TapeWriter {
        TapeWriter {
            changer,
            opener,
            device,
            pending: Vec::new(),
            written: 0,
            volume: 1,
            header_done: false,
            at_warning: false,
            ident: None,
            volumes: vec![(first, 1)],
            opts,
            verifying,
            kept: Default::default(),
            tape_file,
        }
    }

    /// Reopens the first volume of an interrupted dump that started at tape
    /// file `tape_file`, to continue it: what the volumes hold is compared
    /// with the stream as it is written again and kept while it matches.
    pub fn resume_with(
        specs: Vec<String>,
        opts: TapeOptions,
        tape_file: u64,
        mut opener: Opener,
    ) -> Result<TapeWriter> {
        let mut changer = Changer::new(specs, opts.new_volume.clone());
        let first = changer.first();
        if tape_file > 1 {
            crate::media::kind::require_non_rewinding(&first, "resuming an appended dump")?;
        }
        let mut device = opener(&first, true)?;
        device.rewind()?;
        let passed = device.space_filemarks(tape_file - 1)?;
        if passed + 1 != tape_file {
            return Err(anyhow!(
                "{first} holds {passed} dump(s) before the end of its data; the interrupted dump started at tape file {tape_file}"
            ));
        }
        Ok(TapeWriter::on_first(
            changer, opener, device, first, opts, tape_file, true,
        ))
    }

    /// Writes (or, while resuming, finds) one record; true when the medium
    /// reports its early-warning zone after it.
    fn put(&mut self, data: &[u8]) -> io::Result<bool> {
        put(
            self.device.as_mut(),
            &mut self.verifying,
            data,
            self.opts.block_size,
        )
    }

    /// Labels the dump's volumes: the producer names what it writes before
    /// the first byte, so this layer never parses the stream it carries.
    pub fn set_label(&mut self, label: TapeLabel) {
        self.ident = Some(label);
    }

    /// The label, or an error when data comes before it.
    fn label(&self) -> io::Result<TapeLabel> {
        self.ident.ok_or_else(|| {
            io::Error::other("internal error: tape data written before the dump was labelled")
        })
    }

    fn volume_header(&self) -> [u8; super::volume::VOLUME_HEADER_LEN] {
        let TapeLabel {
            source_uuid,
            snapshot_uuid,
            snapshot_id,
            started: time,
        } = self.ident.expect("labelled before the first record");
        VolumeHeader {
            volume: self.volume,
            stream_offset: self.written,
            block_size: self.opts.block_size as u32,
            source_uuid,
            snapshot_uuid,
            snapshot_id,
            // The snapshot's time, not the clock's: a resumed dump writes
            // the same volume headers.
            started: time,
        }
        .encode()
    }

    /// Writes one data record, changing volumes as the medium requires.
    /// Writes `pending[start..start + len]` as one data record (the caller
    /// drops written bytes from `pending` once per batch, not per record).
    fn emit(&mut self, start: usize, len: usize) -> io::Result<()> {
        if std::mem::take(&mut self.at_warning) {
            self.next_volume("is full (early warning)")?;
        }
        loop {
            if !self.header_done {
                let h = self.volume_header();
                self.put(&h)?;
                self.header_done = true;
            }
            let rec = &self.pending[start..start + len];
            match put(
                self.device.as_mut(),
                &mut self.verifying,
                rec,
                self.opts.block_size,
            ) {
                Ok(warning) => {
                    self.written += len as u64;
                    if self.verifying {
                        self.kept
                            .store(self.written, std::sync::atomic::Ordering::Relaxed);
                    }
                    self.at_warning = warning;
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    // Physical end of medium: the record goes on the next.
                    self.next_volume("is full")?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn next_volume(&mut self, why: &str) -> io::Result<()> {
        if self.verifying {
            // The interrupted run ended this volume here: its filemark is
            // on the medium already.
        } else {
            let _ = self.device.write_filemark();
            self.device.finish_writing()?;
        }
        let mut why = format!("volume {} ({}) {why}", self.volume, self.device.name());
        let next = self.volume + 1;
        let to_io = |e: anyhow::Error| io::Error::other(format!("{e:#}"));
        for _ in 0..super::changer::MAX_TRIES {
            let from_list = self.changer.from_list();
            let spec = self.changer.next(next, &why).map_err(to_io)?;
            let mut device = match (self.opener)(&spec, true) {
                Ok(d) => d,
                // A write-protected or missing medium: asked for again.
                Err(e) if !from_list => {
                    let problem = format!("{e:#}");
                    crate::progress::println_err(&format!("snapdump: {problem}"));
                    why = problem;
                    continue;
                }
                Err(e) => return Err(to_io(e)),
            };
            device.rewind()?;
            // Never write over a volume this dump has already written (a
            // changer command that did not change the cartridge, a file
            // named twice).
            if let Some(old) = self.earlier_volume_on(device.as_mut(), next)? {
                let problem = format!(
                    "{spec} still holds volume {old} of this dump; volume {next} must go on another medium"
                );
                if from_list {
                    return Err(io::Error::other(problem));
                }
                crate::progress::println_err(&format!("snapdump: {problem}"));
                why = problem;
                continue;
            }
            self.device = device;
            self.volume = next;
            self.header_done = false;
            self.volumes.push((spec, next));
            return Ok(());
        }
        Err(io::Error::other(format!(
            "volume {next} was not provided after {} tries",
            super::changer::MAX_TRIES
        )))
    }

    /// If the medium starts with a volume header of this dump numbered
    /// below `next`, that number; the medium is left at its beginning.
    fn earlier_volume_on(&self, device: &mut dyn Device, next: u32) -> io::Result<Option<u32>> {
        let mut buf = Vec::new();
        let found = match device.read_record(&mut buf, super::MAX_BLOCK_SIZE as usize) {
            Ok(super::ReadItem::Record(_)) => VolumeHeader::decode(&buf).ok(),
            _ => None,
        };
        device.rewind()?;
        let TapeLabel {
            source_uuid: source,
            snapshot_uuid: snapshot,
            ..
        } = self.ident.expect("labelled before the first volume");
        Ok(found
            .filter(|h| h.source_uuid == source && h.snapshot_uuid == snapshot && h.volume < next)
            .map(|h| h.volume))
    }

    /// Writes the last (short) record and the filemark, and makes the dump
    /// durable.
    pub fn finish(&mut self) -> Result<()> {
        let name = self.device.name().to_string();
        let ctx = |e: io::Error| anyhow!("cannot finish the dump on {name}: {e}");
        self.label().map_err(ctx)?;
        let mut start = 0;
        while start < self.pending.len() {
            let n = (self.pending.len() - start).min(self.opts.block_size as usize);
            self.emit(start, n).map_err(ctx)?;
            start += n;
        }
        self.pending.clear();
        self.device.write_filemark().map_err(ctx)?;
        self.device.finish_writing().map_err(ctx)
    }

    /// Leaves what was written durable after a failed dump.
    pub fn abandon(&mut self) {
        let _ = self.device.finish_writing();
    }
}

/// Writes one record, or while `verifying` passes it if the medium holds
/// it already (the first difference ends verifying).
fn put(device: &mut dyn Device, verifying: &mut bool, data: &[u8], bs: u64) -> io::Result<bool> {
    if *verifying {
        if let Some(warning) = device.skip_if_equal(data, bs)? {
            return Ok(warning);
        }
        *verifying = false;
    }
    device.write_record(data, bs)
}

impl io::Write for TapeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.label()?;
        self.pending.extend_from_slice(buf);
        let bs = self.opts.block_size as usize;
        let mut start = 0;
        let result = loop {
            if self.pending.len() - start < bs {
                break Ok(buf.len());
            }
            if let Err(e) = self.emit(start, bs) {
                break Err(e);
            }
            start += bs;
        };
        self.pending.drain(..start);
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
