//! The volume header: the first record of a dump on every volume, naming
//! the dump, the volume number and where in the stream the volume starts.

use anyhow::{bail, Result};
use xxhash_rust::xxh3::xxh3_64;

/// Size of an encoded volume header.
pub const VOLUME_HEADER_LEN: usize = 128;
/// Magic of a volume header.
pub const VOLUME_MAGIC: [u8; 8] = *b"SDVOLUME";
/// Version of the tape layout.
pub const TAPE_FORMAT_VERSION: u32 = 1;

/// A decoded volume header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeHeader {
    /// Volume number, from 1.
    pub volume: u32,
    /// Stream byte at which this volume's data begins.
    pub stream_offset: u64,
    /// Bytes per data record.
    pub block_size: u32,
    /// The stream's source.
    pub source_uuid: [u8; 16],
    /// The stream's snapshot.
    pub snapshot_uuid: [u8; 16],
    /// The stream's snapshot id.
    pub snapshot_id: u64,
    /// When the volume was started (seconds since 1970).
    pub started: i64,
}

impl VolumeHeader {
    /// The 128-byte record.
    pub fn encode(&self) -> [u8; VOLUME_HEADER_LEN] {
        let mut b = [0u8; VOLUME_HEADER_LEN];
        b[0..8].copy_from_slice(&VOLUME_MAGIC);
        b[8..12].copy_from_slice(&TAPE_FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.volume.to_le_bytes());
        b[16..24].copy_from_slice(&self.stream_offset.to_le_bytes());
        b[24..28].copy_from_slice(&self.block_size.to_le_bytes());
        b[32..48].copy_from_slice(&self.source_uuid);
        b[48..64].copy_from_slice(&self.snapshot_uuid);
        b[64..72].copy_from_slice(&self.snapshot_id.to_le_bytes());
        b[72..80].copy_from_slice(&self.started.to_le_bytes());
        let h = xxh3_64(&b[..120]);
        b[120..128].copy_from_slice(&h.to_le_bytes());
        b
    }

    /// Whether `b` starts like a volume header (to tell volumes from plain
    /// streams).
    pub fn looks_like(b: &[u8]) -> bool {
        b.len() >= 8 && b[..8] == VOLUME_MAGIC
    }

    /// Decodes and checks a volume header record.
    pub fn decode(b: &[u8]) -> Result<VolumeHeader> {
        if b.len() != VOLUME_HEADER_LEN || !Self::looks_like(b) {
            bail!("not a snapdump volume header");
        }
        if xxh3_64(&b[..120]) != u64::from_le_bytes(b[120..128].try_into().unwrap()) {
            bail!("volume header checksum mismatch (damaged)");
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let version = u32_at(8);
        if version != TAPE_FORMAT_VERSION {
            bail!("volume written with tape format version {version}; this snapdump reads version {TAPE_FORMAT_VERSION}");
        }
        let h = VolumeHeader {
            volume: u32_at(12),
            stream_offset: u64_at(16),
            block_size: u32_at(24),
            source_uuid: b[32..48].try_into().unwrap(),
            snapshot_uuid: b[48..64].try_into().unwrap(),
            snapshot_id: u64_at(64),
            started: u64_at(72) as i64,
        };
        if h.volume == 0
            || h.block_size < 512
            || h.block_size as u64 > super::MAX_BLOCK_SIZE
            || (h.volume == 1) != (h.stream_offset == 0)
        {
            bail!("volume header with impossible fields (damaged)");
        }
        Ok(h)
    }

    /// "volume N of snapshot ID".
    pub fn describe(&self) -> String {
        format!(
            "volume {} of snapshot {} (source {})",
            self.volume,
            self.snapshot_id,
            &crate::ids::hex(&self.source_uuid)[..8]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let h = VolumeHeader {
            volume: 3,
            stream_offset: 1 << 33,
            block_size: 262144,
            source_uuid: [1; 16],
            snapshot_uuid: [2; 16],
            snapshot_id: 7,
            started: 1_700_000_000,
        };
        let b = h.encode();
        assert_eq!(VolumeHeader::decode(&b).unwrap(), h);
        for i in 0..b.len() {
            let mut bad = b;
            bad[i] ^= 4;
            assert!(VolumeHeader::decode(&bad).is_err(), "flip at {i}");
        }
    }
}

/// What every volume header of one dump names: the dump's source and
/// snapshot, and the snapshot's time (so a resumed dump writes the same
/// headers). The producer of the stream gives it to the tape writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapeLabel {
    /// The source's UUID.
    pub source_uuid: [u8; 16],
    /// The snapshot's UUID.
    pub snapshot_uuid: [u8; 16],
    /// The snapshot's id.
    pub snapshot_id: u64,
    /// The snapshot's time, in seconds since the epoch.
    pub started: i64,
}
