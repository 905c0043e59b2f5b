//! A dump on a virtual tape read by stream offset, as a real drive's
//! LOCATE reaches a block: every data record of a dump holds exactly
//! `block_size` stream bytes but the last (formats/tape.md), so stream
//! offset `x` lies in data record `x / block_size`, at an image position
//! found by arithmetic. Opening walks the dump's tape file by its length
//! words only (8 bytes per record) to find its length and to check that it
//! is laid out so; anything else (damage, a dump that continues on another
//! volume) leaves the tape to the sequential reader, which names it.

use super::volume::{VolumeHeader, VOLUME_HEADER_LEN};
use crate::media::by_offset::{ByOffset, Sequential};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// SIMH's end-of-medium marker and "bad record" flag.
const EOM: u32 = 0xFFFF_FFFF;
const BAD: u32 = 0x8000_0000;

/// One dump's stream on a tape image, by stream offset.
#[derive(Clone)]
pub struct TapDump {
    file: Arc<File>,
    name: String,
    /// Image position of the first data record's leading length word.
    first: u64,
    /// Stream bytes per data record.
    block: u64,
    /// Stream bytes of the dump.
    len: u64,
}

/// What the walk met at an image position.
enum Item {
    Record(u32),
    Filemark,
    End,
}

fn word(f: &File, at: u64) -> io::Result<Option<u32>> {
    let mut b = [0u8; 4];
    match FileExt::read_exact_at(f, &mut b, at) {
        Ok(()) => Ok(Some(u32::from_le_bytes(b))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// The item at `at` and the position after it; `None` when the image is
/// not intact there.
fn item(f: &File, at: u64) -> io::Result<Option<(Item, u64)>> {
    Ok(match word(f, at)? {
        None | Some(EOM) => Some((Item::End, at)),
        Some(0) => Some((Item::Filemark, at + 4)),
        Some(w) if w & BAD != 0 || w as u64 > super::MAX_BLOCK_SIZE => None,
        Some(w) => {
            let next = at + 4 + w as u64 + (w as u64 & 1);
            (word(f, next)? == Some(w)).then_some((Item::Record(w), next + 4))
        }
    })
}

impl TapDump {
    /// Dump number `file_number` (from 1) of the tape image `file`, when it
    /// is whole on this image and laid out in full records; `Ok(None)`
    /// otherwise.
    pub fn open(file: File, name: &str, file_number: u64) -> io::Result<Option<TapDump>> {
        let f = &file;
        let mut at = 0u64;
        let mut skip = file_number.saturating_sub(1);
        while skip > 0 {
            match item(f, at)? {
                Some((Item::Filemark, next)) => {
                    skip -= 1;
                    at = next;
                }
                Some((Item::Record(_), next)) => at = next,
                _ => return Ok(None),
            }
        }
        let Some((Item::Record(n), first)) = item(f, at)? else {
            return Ok(None);
        };
        let mut head = vec![0u8; VOLUME_HEADER_LEN];
        if n as usize != VOLUME_HEADER_LEN || FileExt::read_exact_at(f, &mut head, at + 4).is_err()
        {
            return Ok(None);
        }
        let Ok(h) = VolumeHeader::decode(&head) else {
            return Ok(None);
        };
        if h.volume != 1 {
            return Ok(None);
        }
        let block = h.block_size as u64;
        let (mut len, mut at, mut short) = (0u64, first, false);
        loop {
            match item(f, at)? {
                Some((Item::Record(n), next)) if !short && n as u64 <= block => {
                    short = (n as u64) < block;
                    len += n as u64;
                    at = next;
                }
                Some((Item::Filemark | Item::End, _)) if len > 0 => break,
                _ => return Ok(None),
            }
        }
        Ok(Some(TapDump {
            file: Arc::new(file),
            name: name.to_string(),
            first,
            block,
            len,
        }))
    }
}

impl ByOffset for TapDump {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        if off
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.len)
        {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let stride = 8 + self.block + (self.block & 1);
        let mut done = 0usize;
        while done < buf.len() {
            let x = off + done as u64;
            let (k, within) = (x / self.block, x % self.block);
            let n = ((self.block - within) as usize).min(buf.len() - done);
            let at = self.first + k * stride;
            // The walk checked every length word when the dump was opened;
            // what the image holds now is checked again where it is read.
            let expect = self.block.min(self.len - k * self.block) as u32;
            if word(&self.file, at)? != Some(expect) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "virtual tape {}: data record {} at byte {at} changed since it was opened",
                        self.name,
                        k + 1
                    ),
                ));
            }
            FileExt::read_exact_at(&*self.file, &mut buf[done..done + n], at + 4 + within)?;
            done += n;
        }
        Ok(())
    }

    fn sequential(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::BufReader::with_capacity(
            1 << 20,
            Sequential::new(self.clone()),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(volume: u32, block: u32) -> Vec<u8> {
        VolumeHeader {
            volume,
            stream_offset: if volume == 1 { 0 } else { block as u64 },
            block_size: block,
            source_uuid: [1; 16],
            snapshot_uuid: [2; 16],
            snapshot_id: 3,
            started: 4,
        }
        .encode()
        .to_vec()
    }

    fn record(img: &mut Vec<u8>, b: &[u8]) {
        img.extend_from_slice(&(b.len() as u32).to_le_bytes());
        img.extend_from_slice(b);
        if b.len() % 2 == 1 {
            img.push(0);
        }
        img.extend_from_slice(&(b.len() as u32).to_le_bytes());
    }

    /// A tape image: one tape file per `dumps` entry (a header of volume
    /// `v`, then the records), each closed by a filemark.
    fn image(dumps: &[(u32, u32, Vec<Vec<u8>>)]) -> Vec<u8> {
        let mut img = Vec::new();
        for (v, block, recs) in dumps {
            record(&mut img, &header(*v, *block));
            for r in recs {
                record(&mut img, r);
            }
            img.extend_from_slice(&0u32.to_le_bytes());
        }
        img
    }

    fn open(img: &[u8], n: u64) -> Option<TapDump> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tap");
        std::fs::write(&path, img).unwrap();
        TapDump::open(File::open(&path).unwrap(), "t.tap", n).unwrap()
    }

    fn stream(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    #[test]
    fn the_second_dump_on_a_tape_reads_by_offset_across_records() {
        let (a, b) = (stream(1124, 1), stream(1031, 2));
        let cut = |s: &[u8], block: usize| s.chunks(block).map(<[u8]>::to_vec).collect();
        // An odd block size: records are padded in the image.
        let img = image(&[(1, 512, cut(&a, 512)), (1, 515, cut(&b, 515))]);
        let d = open(&img, 2).expect("laid out in full records");
        assert_eq!(d.len(), b.len() as u64);
        let mut buf = vec![0u8; 600];
        d.read_exact_at(&mut buf, 400).unwrap();
        assert_eq!(buf, b[400..1000]);
        assert!(d.read_exact_at(&mut buf, 500).is_err(), "past the end");
        let mut all = Vec::new();
        d.sequential().unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all, b);
        let d1 = open(&img, 1).unwrap();
        let mut all = Vec::new();
        d1.sequential().unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all, a);
        assert!(open(&img, 3).is_none(), "no third dump");
    }

    #[test]
    fn damage_short_records_and_later_volumes_are_left_to_the_sequential_reader() {
        let recs = vec![stream(512, 1), stream(512, 2), stream(40, 3)];
        let good = image(&[(1, 512, recs.clone())]);
        assert!(open(&good, 1).is_some());
        // A trailing length word that does not match.
        let mut bad = good.clone();
        let at = 4 + 128 + 4 + 4 + 512;
        bad[at] ^= 1;
        assert!(open(&bad, 1).is_none());
        // A short record before the last.
        let short = image(&[(1, 512, vec![stream(512, 1), stream(100, 2), stream(40, 3)])]);
        assert!(open(&short, 1).is_none());
        // Volume 2 of a dump: its offsets are not the stream's from 0.
        assert!(open(&image(&[(2, 512, recs)]), 1).is_none());
        // A record rewritten after the open is named, not read as data.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tap");
        std::fs::write(&path, &good).unwrap();
        let d = TapDump::open(File::open(&path).unwrap(), "t.tap", 1)
            .unwrap()
            .unwrap();
        let mut img = good.clone();
        img[4 + 128 + 4 + 4 + 512 + 4] = 9;
        std::fs::write(&path, &img).unwrap();
        let mut buf = [0u8; 10];
        let e = d.read_exact_at(&mut buf, 600).unwrap_err();
        assert!(e.to_string().contains("data record 2"), "{e}");
    }
}
