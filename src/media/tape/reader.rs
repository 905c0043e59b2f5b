//! Reading a stream from tape: the Nth dump on the first volume, then its
//! continuation on each following volume, each checked to be the volume
//! expected before its data is used.

use super::changer::{Changer, MAX_TRIES};
use super::volume::VolumeHeader;
use super::writer::{default_opener, Opener};
use super::{Device, ReadItem, MAX_BLOCK_SIZE};
use anyhow::{anyhow, bail, Result};
use std::io;

/// The stream of one dump, read across volumes.
pub struct TapeReader {
    changer: Changer,
    opener: Opener,
    device: Box<dyn Device>,
    first: VolumeHeader,
    volume: u32,
    /// Stream bytes delivered so far.
    stream_pos: u64,
    rec: Vec<u8>,
    rec_pos: usize,
}

/// Reads the volume header at the device's position; `None` at the end of
/// the recorded data.
fn read_volume_header(device: &mut dyn Device) -> Result<Option<VolumeHeader>> {
    let mut buf = Vec::new();
    match device.read_record(&mut buf, MAX_BLOCK_SIZE as usize)? {
        ReadItem::Record(_) => VolumeHeader::decode(&buf).map(Some).map_err(|e| {
            anyhow!(
                "{}: the dump does not start with a volume header: {e}",
                device.name()
            )
        }),
        ReadItem::Filemark => bail!(
            "{}: an empty tape file where a dump was expected",
            device.name()
        ),
        ReadItem::EndOfData => Ok(None),
    }
}

/// The volume number of the first dump on a tape (0 when it holds none),
/// to tell a continuation volume from a tape of its own.
pub fn first_volume_number(spec: &str) -> Result<u32> {
    let mut device = super::writer::open_device(spec, false, 0)?;
    device.rewind()?;
    Ok(read_volume_header(device.as_mut())
        .ok()
        .flatten()
        .map(|h| h.volume)
        .unwrap_or(0))
}

impl TapeReader {
    /// Opens dump number `file_number` (from 1) on the first of `specs`.
    pub fn open(
        specs: Vec<String>,
        file_number: u64,
        new_volume: Option<String>,
    ) -> Result<TapeReader> {
        Self::open_with(specs, file_number, new_volume, default_opener(0))
    }

    /// As [`TapeReader::open`], with devices from `opener`.
    pub fn open_with(
        specs: Vec<String>,
        file_number: u64,
        new_volume: Option<String>,
        mut opener: Opener,
    ) -> Result<TapeReader> {
        let mut changer = Changer::new(specs, new_volume);
        let first_spec = changer.first();
        if file_number > 1 {
            crate::media::kind::require_non_rewinding(&first_spec, "--file-number")?;
        }
        let mut device = opener(&first_spec, false)?;
        device.rewind()?;
        let passed = device.space_filemarks(file_number - 1)?;
        let first = match read_volume_header(device.as_mut())? {
            Some(h) => h,
            None if file_number == 1 => bail!("{first_spec} holds no dump (the tape is blank)"),
            None => {
                bail!("{first_spec} holds {passed} dump(s); there is no dump number {file_number}")
            }
        };
        if first.volume != 1 {
            bail!(
                "{first_spec} holds {}; a restore starts with volume 1",
                first.describe()
            );
        }
        Ok(TapeReader {
            changer,
            opener,
            device,
            first,
            volume: 1,
            stream_pos: 0,
            rec: Vec::new(),
            rec_pos: 0,
        })
    }

    /// The first volume's header.
    pub fn header(&self) -> &VolumeHeader {
        &self.first
    }

    /// Mounts the next volume, refusing wrong ones with a message and, when
    /// the volumes come from a command or the terminal, another chance.
    fn next_volume(&mut self) -> Result<()> {
        let want = self.volume + 1;
        let mut why = format!(
            "volume {} ({}) ended before the stream did (a dump that filled it goes on on the next volume; one that was killed or failed there left the stream cut, with no next volume)",
            self.volume,
            self.device.name()
        );
        for _ in 0..MAX_TRIES {
            let from_list = self.changer.from_list();
            let spec = self.changer.next(want, &why)?;
            let found = (self.opener)(&spec, false).and_then(|mut d| {
                d.rewind()?;
                let h =
                    read_volume_header(d.as_mut())?.ok_or_else(|| anyhow!("{spec} is blank"))?;
                Ok((d, h))
            });
            let problem = match found {
                Ok((d, h)) => {
                    if h.source_uuid != self.first.source_uuid
                        || h.snapshot_uuid != self.first.snapshot_uuid
                    {
                        format!(
                            "{spec} holds {}, not a volume of snapshot {}",
                            h.describe(),
                            self.first.snapshot_id
                        )
                    } else if h.volume != want {
                        format!(
                            "{spec} is volume {} of snapshot {}, volume {want} is needed",
                            h.volume, h.snapshot_id
                        )
                    } else if h.stream_offset != self.stream_pos {
                        format!(
                            "{spec}: volume {want} starts at stream byte {}, the previous volume ended at {} (damaged volume set)",
                            h.stream_offset, self.stream_pos
                        )
                    } else {
                        self.device = d;
                        self.volume = want;
                        return Ok(());
                    }
                }
                Err(e) => format!("{e:#}"),
            };
            if from_list {
                bail!("{problem}");
            }
            eprintln!("snapdump: {problem}");
            why = problem;
        }
        bail!("volume {want} was not provided after {MAX_TRIES} tries")
    }
}

impl io::Read for TapeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.rec_pos < self.rec.len() {
                let n = out.len().min(self.rec.len() - self.rec_pos);
                out[..n].copy_from_slice(&self.rec[self.rec_pos..self.rec_pos + n]);
                self.rec_pos += n;
                self.stream_pos += n as u64;
                return Ok(n);
            }
            match self
                .device
                .read_record(&mut self.rec, MAX_BLOCK_SIZE as usize)?
            {
                ReadItem::Record(_) => self.rec_pos = 0,
                ReadItem::Filemark | ReadItem::EndOfData => {
                    self.rec.clear();
                    self.rec_pos = 0;
                    self.next_volume()
                        .map_err(|e| io::Error::other(format!("{e:#}")))?;
                }
            }
        }
    }
}
