//! The tape index of a policy whose streams go to tape: which tape file
//! of which cartridge holds each of its snapshots' dumps
//! (formats/policy-state.md). A catalog row names only the drive; the
//! index says where on the tapes the stream is, so that replication and
//! restores find it, and which cartridges still hold a kept dump.
//!
//! Cartridges carry no label of their own in snapdump's tape format, so a
//! cartridge is named by the first record on it, which is always a
//! volume header: "12v1-3fa2c1d0" is the cartridge that begins with
//! volume 1 of snapshot 12 (whose uuid begins 3fa2c1d0). The name stays
//! true until the cartridge is erased, and an erased cartridge holds no
//! dump the index could name.

use super::file::Tape;
use crate::media::tape::volume::VolumeHeader;
use crate::media::tape::ReadItem;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// The index file in the streams directory.
pub const INDEX: &str = ".snapdump-policy.tape";

/// One dump on tape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The snapshot's uuid, in hex (ids can repeat across catalogs).
    pub uuid: String,
    /// The snapshot's catalog id.
    pub id: u64,
    /// The tape file (from 1) the dump starts at on its first cartridge.
    pub file: u64,
    /// How many cartridges (volumes) the dump fills.
    pub volumes: u32,
    /// The cartridge its first volume is on.
    pub cartridge: String,
}

impl Entry {
    /// Every cartridge the dump is on, first volume first: a dump's
    /// volume 2 and later each begin a cartridge of their own.
    pub fn cartridges(&self) -> Vec<String> {
        let mut v = vec![self.cartridge.clone()];
        for k in 2..=self.volumes {
            v.push(label(self.id, k, &self.uuid));
        }
        v
    }

    /// Where the dump is, for people: "/dev/nst0 file 3 (tape 12v1-3fa2c1d0)".
    pub fn location(&self, device: &str) -> String {
        let tapes = self.cartridges().join(", then ");
        format!("{device} file {} (tape {tapes})", self.file)
    }
}

/// A dump a run started and had not recorded yet: the snapshot id it was
/// to get. A run killed between the catalog's commit and the index's
/// leaves it, and the next run finds the dump's tape file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The snapshot id the dump was to get.
    pub id: u64,
    /// Where it was to begin: the tape file and the cartridge loaded then
    /// (None: a blank one, named by the dump's own first volume). A dump
    /// that filled its cartridge ends on another, so the next run, which
    /// sees only the last, learns its beginning from here. None in a line
    /// an older build wrote.
    pub start: Option<(u64, Option<String>)>,
}

/// The index as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Index {
    /// The dumps, in the order they were written.
    pub entries: Vec<Entry>,
    /// Dumps started and not recorded.
    pub pending: Vec<Pending>,
    /// Cartridges that may have been written over (a cartridge the policy
    /// did not write, free or find blank turned up holding a dump): the
    /// dumps the index places on them are never built on again.
    pub lost: Vec<String>,
    /// Cartridges a prune freed (no kept dump on them): one loaded again
    /// as it was is the policy's to append to.
    pub freed: Vec<String>,
    /// Dumps made by hand to the policy's drive (catalog rows the policy
    /// did not make) that a run has looked for: the snapshot uuid, and the
    /// cartridge found holding it (None: not on the cartridge loaded then,
    /// so it may have begun any). No cartridge holding one is called free.
    pub hand: Vec<(String, Option<String>)>,
}

impl Index {
    /// Whether the index places a dump (or a doubt) on cartridge `name`,
    /// or freed it.
    pub fn knows(&self, name: &str) -> bool {
        self.lost.iter().any(|l| l == name)
            || self.freed.iter().any(|l| l == name)
            || self
                .entries
                .iter()
                .any(|e| e.cartridges().iter().any(|c| c == name))
    }

    /// The dumps on a cartridge that may have been written over, each with
    /// the cartridge.
    pub fn on_lost(&self) -> Vec<(&Entry, &str)> {
        self.entries
            .iter()
            .filter_map(|e| {
                let c = e.cartridges();
                let l = self.lost.iter().find(|l| c.contains(l))?;
                Some((e, l.as_str()))
            })
            .collect()
    }
}

/// The name of the cartridge that begins with volume `volume` of the dump
/// of snapshot `id` (uuid `uuid`, hex).
pub fn label(id: u64, volume: u32, uuid: &str) -> String {
    format!("{id}v{volume}-{}", &uuid[..uuid.len().min(8)])
}

/// Reads the index in `dir` (empty when missing). A line that cannot be
/// read is an error: dropping it would forget where a kept dump is.
pub fn read(dir: &Path) -> Result<Index> {
    let path = dir.join(INDEX);
    let text = match std::fs::read(&path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Index::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut index = Index::default();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let bad = || {
            anyhow::anyhow!(
                "{} line {}: not a tape index line ({line:?}); put the file back from a copy",
                path.display(),
                n + 1
            )
        };
        match f.as_slice() {
            ["dump", uuid, id, file, volumes, cartridge]
                if uuid.len() == 32 && uuid.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                index.entries.push(Entry {
                    uuid: uuid.to_string(),
                    id: id.parse().map_err(|_| bad())?,
                    file: file.parse().ok().filter(|&f| f >= 1).ok_or_else(bad)?,
                    volumes: volumes.parse().ok().filter(|&v| v >= 1).ok_or_else(bad)?,
                    cartridge: cartridge.to_string(),
                })
            }
            ["pending", id] => index.pending.push(Pending {
                id: id.parse().map_err(|_| bad())?,
                start: None,
            }),
            ["pending", id, file, cartridge] if !cartridge.is_empty() => {
                index.pending.push(Pending {
                    id: id.parse().map_err(|_| bad())?,
                    start: Some((
                        file.parse().ok().filter(|&f| f >= 1).ok_or_else(bad)?,
                        Some(cartridge.to_string()).filter(|c| c != "-"),
                    )),
                })
            }
            ["lost", cartridge] if !cartridge.is_empty() => index.lost.push(cartridge.to_string()),
            ["freed", cartridge] if !cartridge.is_empty() => {
                index.freed.push(cartridge.to_string())
            }
            ["hand", uuid, cartridge]
                if uuid.len() == 32
                    && uuid.bytes().all(|b| b.is_ascii_hexdigit())
                    && !cartridge.is_empty() =>
            {
                index.hand.push((
                    uuid.to_string(),
                    Some(cartridge.to_string()).filter(|c| c != "-"),
                ))
            }
            _ => return Err(bad()),
        }
    }
    Ok(index)
}

/// Replaces the index in `dir` atomically.
pub fn write(dir: &Path, index: &Index) -> Result<()> {
    let mut text = String::new();
    for e in &index.entries {
        text.push_str(&format!(
            "dump\t{}\t{}\t{}\t{}\t{}\n",
            e.uuid, e.id, e.file, e.volumes, e.cartridge
        ));
    }
    for p in &index.pending {
        match &p.start {
            None => text.push_str(&format!("pending\t{}\n", p.id)),
            Some((file, c)) => text.push_str(&format!(
                "pending\t{}\t{file}\t{}\n",
                p.id,
                c.as_deref().unwrap_or("-")
            )),
        }
    }
    let mut seen = std::collections::HashSet::new();
    for l in index.lost.iter().filter(|l| seen.insert(l.as_str())) {
        text.push_str(&format!("lost\t{l}\n"));
    }
    let mut seen = std::collections::HashSet::new();
    for l in index.freed.iter().filter(|l| seen.insert(l.as_str())) {
        text.push_str(&format!("freed\t{l}\n"));
    }
    for (uuid, c) in &index.hand {
        text.push_str(&format!("hand\t{uuid}\t{}\n", c.as_deref().unwrap_or("-")));
    }
    crate::atomic::replace_file(&dir.join(INDEX), text.as_bytes())
}

/// What the first record of the loaded cartridge is.
pub enum Loaded {
    /// Nothing is recorded on it: the next dump begins it.
    Blank,
    /// A snapdump dump's volume.
    Named {
        /// The cartridge's name.
        name: String,
        /// How many filemarks (complete tape files) it holds.
        files: u64,
        /// The tape file an append would begin: after the filemarks, and
        /// after a cut-off dump, which the append closes first.
        next_file: u64,
        /// The snapshot id the first dump is of.
        id: u64,
        /// The source (of its catalog) the first dump is of.
        source: [u8; 16],
        /// The snapshot the first dump is of.
        snapshot: [u8; 16],
    },
}

fn open(tape: &Tape) -> Result<Option<Box<dyn crate::media::tape::Device>>> {
    if crate::media::kind::is_virtual_tape(&tape.device) && !Path::new(&tape.device).exists() {
        return Ok(None);
    }
    crate::media::tape::writer::open_device(&tape.device, false, 0).map(Some)
}

/// Names the cartridge loaded in `tape` by its first record. A cartridge
/// that begins with something else (a tar archive, another program's
/// data) is refused: appending to it would look as if it were ours.
pub fn loaded(tape: &Tape) -> Result<Loaded> {
    // A virtual tape is checked by its bytes first: its reader skips what
    // does not parse as records (to carry on past damage), so a foreign
    // file would read as a blank tape and be written over.
    if crate::media::kind::is_virtual_tape(&tape.device) {
        let n = crate::media::tape::volume::VOLUME_HEADER_LEN;
        let mut head = Vec::with_capacity(n + 8);
        match std::fs::File::open(&tape.device) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Blank),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", tape.device)),
            Ok(f) => {
                use std::io::Read;
                f.take(n as u64 + 8)
                    .read_to_end(&mut head)
                    .with_context(|| format!("cannot read {}", tape.device))?;
            }
        }
        if head.is_empty() {
            return Ok(Loaded::Blank);
        }
        let ok = head.len() >= n + 8
            && head[..4] == (n as u32).to_le_bytes()
            && VolumeHeader::decode(&head[4..4 + n]).is_ok();
        if !ok {
            bail!(
                "the virtual tape {} does not begin with a snapdump dump; nothing was written to it (move it away, or give another streams.tape)",
                tape.device
            );
        }
    }
    let Some(mut dev) = open(tape)? else {
        return Ok(Loaded::Blank);
    };
    dev.rewind()
        .with_context(|| format!("cannot rewind {}", tape.device))?;
    let mut buf = Vec::new();
    let item = dev
        .read_record(&mut buf, crate::media::tape::MAX_BLOCK_SIZE as usize)
        .with_context(|| format!("cannot read the first record of {}", tape.device))?;
    match item {
        ReadItem::EndOfData => Ok(Loaded::Blank),
        ReadItem::Record(n) => match VolumeHeader::decode(&buf[..n]) {
            Ok(h) => {
                dev.rewind()?;
                let files = dev
                    .space_filemarks(u64::MAX >> 2)
                    .with_context(|| format!("cannot space {} to its end", tape.device))?;
                dev.rewind()?;
                dev.space_filemarks(files)?;
                let cut_off = matches!(
                    dev.read_record(&mut buf, crate::media::tape::MAX_BLOCK_SIZE as usize),
                    Ok(ReadItem::Record(_))
                );
                Ok(Loaded::Named {
                    name: label(h.snapshot_id, h.volume, &crate::ids::hex(&h.snapshot_uuid)),
                    files,
                    next_file: files + 1 + cut_off as u64,
                    id: h.snapshot_id,
                    source: h.source_uuid,
                    snapshot: h.snapshot_uuid,
                })
            }
            Err(e) => bail!(
                "the tape in {} does not begin with a snapdump dump ({e}); load a blank cartridge or one of this policy's",
                tape.device
            ),
        },
        ReadItem::Filemark => bail!(
            "the tape in {} begins with a filemark, not a snapdump dump; load a blank cartridge or one of this policy's",
            tape.device
        ),
    }
}

/// Refuses to append to the loaded cartridge `name`, holding `files`
/// complete tape files, when the index places a dump on it beyond them:
/// the cartridge was cut short or written over, and a dump appended now
/// would take a kept dump's tape file.
pub fn check_loaded(index: &Index, device: &str, name: &str, files: u64) -> Result<()> {
    for e in &index.entries {
        // A dump's volume 2 and later begin their cartridge (tape file 1).
        let needed = if e.cartridge == name {
            e.file
        } else if e.cartridges().iter().any(|c| c == name) {
            1
        } else {
            continue;
        };
        if files < needed {
            bail!(
                "the tape in {device} (tape {name}) holds {files} complete tape file(s), but the tape index has snapshot {}'s dump as file {needed} of it: the cartridge was cut short or written over; nothing was appended (load another cartridge; the dumps past its end are lost)",
                e.id
            );
        }
    }
    Ok(())
}

/// One tape file of the loaded cartridge, as [`scan`] found it.
pub struct TapeFile {
    /// Its number, from 1.
    pub file: u64,
    /// Its volume header (None: it does not begin with one).
    pub header: Option<VolumeHeader>,
    /// Whether a filemark closes it (a dump closes a volume when it ends,
    /// and when the volume is full and it goes on to the next one).
    pub closed: bool,
    /// Whether its last bytes are a stream's end record (zeros after it
    /// aside): the dump ends on this volume.
    pub ends_stream: bool,
}

/// Every tape file of the loaded cartridge. The records of a tape file
/// are stepped over, but for those of a file that `read_whole` says to
/// read, whose last bytes are looked at for the end record.
pub fn scan(tape: &Tape, read_whole: impl Fn(&VolumeHeader) -> bool) -> Result<Vec<TapeFile>> {
    let Some(mut dev) = open(tape)? else {
        return Ok(Vec::new());
    };
    dev.rewind()?;
    let max = crate::media::tape::MAX_BLOCK_SIZE as usize;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for file in 1u64.. {
        let header = match dev.read_record(&mut buf, max)? {
            ReadItem::EndOfData => break,
            ReadItem::Filemark => {
                out.push(TapeFile {
                    file,
                    header: None,
                    closed: true,
                    ends_stream: false,
                });
                continue;
            }
            ReadItem::Record(n) => VolumeHeader::decode(&buf[..n]).ok(),
        };
        let whole = header.as_ref().is_some_and(&read_whole);
        // The last bytes read: the end record (128 bytes) may straddle
        // two records.
        let mut tail: Vec<u8> = Vec::new();
        let closed = loop {
            let item = if whole {
                dev.read_record(&mut buf, max)?
            } else {
                dev.skip_record()?
            };
            match item {
                ReadItem::Record(n) if whole => {
                    tail.extend_from_slice(&buf[..n]);
                    let keep = tail.len().saturating_sub(n.max(128) + 128);
                    tail.drain(..keep);
                }
                ReadItem::Record(_) => {}
                ReadItem::Filemark => break true,
                ReadItem::EndOfData => break false,
            }
        };
        out.push(TapeFile {
            file,
            header,
            closed,
            ends_stream: whole && ends_with_end_record(&tail),
        });
        if !closed {
            break;
        }
    }
    Ok(out)
}

/// Whether `tail` ends with a stream's end record (formats/stream.md:
/// a 40-byte record header with magic `SDRC` and kind 6, and its 88-byte
/// payload), zero bytes after it aside.
fn ends_with_end_record(tail: &[u8]) -> bool {
    const END_LEN: usize = 128;
    let trimmed = tail.len() - tail.iter().rev().take_while(|&&b| b == 0).count();
    // The record's own last bytes may be zeros: try each place it could
    // start from the end of the non-zero bytes back to the end of `tail`.
    (trimmed..=tail.len()).any(|end| {
        end >= END_LEN
            && tail[end - END_LEN..end - END_LEN + 4] == *b"SDRC"
            && tail[end - END_LEN + 4] == 6
    })
}

/// Finds, on the loaded cartridge, the tape file whose dump is of the
/// snapshot with uuid `uuid` (hex): the file number and its volume
/// header's volume number.
pub fn find(tape: &Tape, uuid: &str) -> Result<Option<(u64, u32)>> {
    let Some(mut dev) = open(tape)? else {
        return Ok(None);
    };
    dev.rewind()?;
    let mut buf = Vec::new();
    for file in 1u64.. {
        match dev.read_record(&mut buf, crate::media::tape::MAX_BLOCK_SIZE as usize)? {
            ReadItem::EndOfData => return Ok(None),
            ReadItem::Filemark => continue,
            ReadItem::Record(n) => {
                if let Ok(h) = VolumeHeader::decode(&buf[..n]) {
                    if crate::ids::hex(&h.snapshot_uuid) == uuid {
                        return Ok(Some((file, h.volume)));
                    }
                }
            }
        }
        if dev.space_filemarks(1)? == 0 {
            return Ok(None);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips_and_refuses_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index {
            entries: vec![Entry {
                uuid: "3fa2c1d0".repeat(4),
                id: 12,
                file: 3,
                volumes: 2,
                cartridge: "9v1-00112233".into(),
            }],
            pending: vec![
                Pending {
                    id: 13,
                    start: None,
                },
                Pending {
                    id: 14,
                    start: Some((4, Some("9v1-00112233".into()))),
                },
                Pending {
                    id: 15,
                    start: Some((1, None)),
                },
            ],
            lost: vec!["7v1-00aa00bb".into()],
            freed: vec!["3v1-00cc00dd".into()],
            hand: vec![
                ("ab".repeat(16), Some("9v1-00112233".into())),
                ("cd".repeat(16), None),
            ],
        };
        write(dir.path(), &index).unwrap();
        let mut twice = index.clone();
        twice.lost.push("7v1-00aa00bb".into());
        write(dir.path(), &twice).unwrap();
        assert_eq!(read(dir.path()).unwrap(), index);
        assert!(index.knows("12v2-3fa2c1d0") && index.knows("7v1-00aa00bb"));
        assert!(!index.knows("12v3-3fa2c1d0"));
        assert!(index.on_lost().is_empty());
        assert_eq!(
            index.entries[0].cartridges(),
            vec!["9v1-00112233".to_string(), "12v2-3fa2c1d0".to_string()]
        );
        std::fs::write(dir.path().join(INDEX), "dump\tzz\t1\t1\t1\tx\n").unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
