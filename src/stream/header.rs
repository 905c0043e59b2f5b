//! The stream header record: what a stream is, where it came from, and
//! which snapshot (and base) it carries. It is never compressed so that any
//! version of snapdump can at least read it and say what it is.

use crate::tree::Time;
use crate::wire::{Dec, Enc};
use anyhow::{bail, Result};
use serde::Serialize;

/// Magic at the start of the header payload.
pub const STREAM_MAGIC: [u8; 8] = *b"SNAPDUMP";
/// The stream format version this build writes and the newest it reads.
/// Version 2 added the stream id, which seeds every record's checksums so
/// that records of two streams cannot be spliced into one; version 3 file
/// flags; version 4 gap segments in data records (coalescing copies
/// records whole and leaves the bytes of dropped blocks as gaps); version
/// 5 the BLAKE3 digest list (SHA-256 was the largest CPU cost of a dump
/// after compression on CPUs without SHA extensions).
pub const FORMAT_VERSION: u32 = 5;

/// The fields of metadata items in a stream of format `version`: file
/// flags and project ids from version 3 on.
pub fn item_form(version: u32) -> crate::tree::ItemForm {
    if version >= 3 {
        crate::tree::ItemForm::CURRENT
    } else {
        crate::tree::ItemForm::NO_FLAGS
    }
}

/// Identity of a snapshot, as carried in headers and kept in catalogs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotRef {
    /// Per-source sequence number (1, 2, ...).
    pub id: u64,
    /// Globally unique id; tells apart snapshots of different catalogs.
    #[serde(serialize_with = "crate::ids::ser_hex")]
    pub uuid: [u8; 16],
    /// When the snapshot was taken.
    #[serde(serialize_with = "crate::tree::ser_time")]
    pub time: Time,
    /// Dump level 0..9.
    pub level: u8,
}

/// The decoded header of a stream.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamHeader {
    /// Format version the stream was written with.
    pub format_version: u32,
    /// snapdump version that wrote it.
    pub tool_version: String,
    /// Random id of the source's catalog; chains never mix sources.
    #[serde(serialize_with = "crate::ids::ser_hex")]
    pub source_uuid: [u8; 16],
    /// The source path as given to dump (lossy UTF-8 in JSON).
    #[serde(serialize_with = "crate::names::ser_bytes")]
    pub source_path: Vec<u8>,
    /// Host the dump ran on.
    pub hostname: String,
    /// The snapshot this stream brings a target to.
    pub snapshot: SnapshotRef,
    /// True when the stream is a full image: it needs no base (a level 0, a
    /// dump with no lower snapshot, or a synthetic full at any level).
    pub full: bool,
    /// The snapshot a target must hold before applying this stream.
    pub base: Option<SnapshotRef>,
    /// Data block size in bytes.
    pub block_size: u32,
    /// zstd level used for payloads (0: none).
    pub compression_level: i32,
    /// Number of metadata items that follow the header, so a listing can
    /// stop at the end of the metadata section without reading further.
    pub entries: u64,
    /// Random id of this stream (format version 2 on; zeros in version 1):
    /// its first 8 bytes seed every later record's checksums.
    #[serde(serialize_with = "crate::ids::ser_hex")]
    pub stream_id: [u8; 16],
}

pub(crate) fn enc_snap(e: &mut Enc, s: &SnapshotRef) {
    e.u64(s.id);
    e.fixed(&s.uuid);
    e.i64(s.time.sec);
    e.u32(s.time.nsec);
    e.u8(s.level);
}

pub(crate) fn dec_snap(d: &mut Dec) -> Result<SnapshotRef> {
    let id = d.u64()?;
    let uuid = d.fixed(16)?.try_into().unwrap();
    let sec = d.i64()?;
    let nsec = d.u32()?;
    let level = d.u8()?;
    if level > 9 {
        bail!("snapshot level {level} out of range");
    }
    if nsec >= 1_000_000_000 {
        bail!("snapshot time: nanoseconds {nsec} out of range");
    }
    Ok(SnapshotRef {
        id,
        uuid,
        time: Time { sec, nsec },
        level,
    })
}

/// What a producer of an image stream knows of it; [`StreamHeader::new`]
/// fills in the rest (format and tool versions, host name, the full flag),
/// so every producer writes the same kind of header.
pub struct ImageHeader {
    /// The source's id (a tree's catalog, or derived for a volume's source).
    pub source_uuid: [u8; 16],
    /// The source path.
    pub source_path: Vec<u8>,
    /// The snapshot the stream brings a target to.
    pub snapshot: SnapshotRef,
    /// The base a target must hold (None for a full image).
    pub base: Option<SnapshotRef>,
    /// Data block size in bytes.
    pub block_size: u32,
    /// zstd level of the records (0: none).
    pub compression_level: i32,
    /// Metadata items in the stream.
    pub entries: u64,
    /// The stream's random id (kept when a dump is resumed).
    pub stream_id: [u8; 16],
}

impl StreamHeader {
    /// The header of a stream written now by this build.
    pub fn new(h: ImageHeader) -> StreamHeader {
        StreamHeader {
            format_version: FORMAT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            source_uuid: h.source_uuid,
            source_path: h.source_path,
            hostname: nix::unistd::gethostname()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            snapshot: h.snapshot,
            full: h.base.is_none(),
            base: h.base,
            block_size: h.block_size,
            compression_level: h.compression_level,
            entries: h.entries,
            stream_id: h.stream_id,
        }
    }

    /// What the tape volumes of this stream are labelled with.
    pub fn tape_label(&self) -> crate::media::tape::volume::TapeLabel {
        crate::media::tape::volume::TapeLabel {
            source_uuid: self.source_uuid,
            snapshot_uuid: self.snapshot.uuid,
            snapshot_id: self.snapshot.id,
            started: self.snapshot.time.sec,
        }
    }

    /// Encodes the header payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.fixed(&STREAM_MAGIC);
        e.u32(self.format_version);
        e.bytes(self.tool_version.as_bytes());
        e.fixed(&self.source_uuid);
        e.bytes(&self.source_path);
        e.bytes(self.hostname.as_bytes());
        enc_snap(&mut e, &self.snapshot);
        e.u8(self.full as u8);
        match &self.base {
            Some(b) => {
                e.u8(1);
                enc_snap(&mut e, b);
            }
            None => e.u8(0),
        }
        e.u32(self.block_size);
        e.u32(self.compression_level as u32);
        e.u64(self.entries);
        if self.format_version >= 2 {
            e.fixed(&self.stream_id);
        }
        e.buf
    }

    /// The checksum seed of every record after the header record: the
    /// stream id's first 8 bytes (little-endian) from format version 2 on,
    /// 0 in version 1 (formats/stream.md).
    pub fn seed(&self) -> u64 {
        if self.format_version >= 2 {
            u64::from_le_bytes(self.stream_id[..8].try_into().unwrap())
        } else {
            0
        }
    }

    /// Whether data records may hold gap segments (format 4 on).
    pub fn gaps(&self) -> bool {
        self.format_version >= 4
    }

    /// Decodes a header payload, refusing newer format versions by name.
    pub fn decode(raw: &[u8]) -> Result<StreamHeader> {
        let mut d = Dec::new(raw, "stream header");
        if d.fixed(8)? != STREAM_MAGIC {
            bail!("not a snapdump image stream (bad header magic)");
        }
        let format_version = d.u32()?;
        if format_version > FORMAT_VERSION {
            bail!(
                "stream format version {format_version} is newer than this snapdump reads ({FORMAT_VERSION}); upgrade snapdump"
            );
        }
        if format_version == 0 {
            bail!("stream format version 0 is invalid");
        }
        let tool_version = String::from_utf8_lossy(d.bytes(256)?).into_owned();
        let source_uuid = d.fixed(16)?.try_into().unwrap();
        let source_path = d.bytes(64 * 1024)?.to_vec();
        let hostname = String::from_utf8_lossy(d.bytes(1024)?).into_owned();
        let snapshot = dec_snap(&mut d)?;
        let full = match d.u8()? {
            0 => false,
            1 => true,
            v => bail!("stream header: bad full flag {v}"),
        };
        let base = match d.u8()? {
            0 => None,
            1 => Some(dec_snap(&mut d)?),
            v => bail!("stream header: bad base flag {v}"),
        };
        if !full && base.is_none() {
            bail!("stream header: an increment without a base snapshot");
        }
        if full && base.is_some() {
            bail!("stream header: a full image with a base snapshot");
        }
        let block_size = d.u32()?;
        crate::tree::check_block_size(block_size)
            .map_err(|e| anyhow::anyhow!("stream header: {e}"))?;
        let compression_level = d.u32()? as i32;
        let entries = d.u64()?;
        let stream_id = if format_version >= 2 {
            d.fixed(16)?.try_into().unwrap()
        } else {
            [0; 16]
        };
        d.finish()?;
        Ok(StreamHeader {
            format_version,
            tool_version,
            source_uuid,
            source_path,
            hostname,
            snapshot,
            full,
            base,
            block_size,
            compression_level,
            entries,
            stream_id,
        })
    }
}
