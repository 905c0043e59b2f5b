//! Reading a modified file for comparison on worker threads: each chunk is
//! read and its blocks hashed by a worker, and the chunks are handed back
//! in file order.
//!
//! Comparing a changed big file with its previous version means reading
//! all of it (which block changed is only known from its checksum), and
//! the copy out of the page cache plus the hashing is most of an
//! increment's CPU time. One thread does it at the speed of one core;
//! workers reading alternate chunks use the others, while the caller keeps
//! the order-dependent part (which VBN a block keeps, what is spooled).

use anyhow::{anyhow, Result};
use std::os::fd::BorrowedFd;
use xxhash_rust::xxh3::xxh3_128;

/// One chunk of a file: consecutive file blocks read together.
pub struct Chunk {
    /// First file block.
    pub block: u64,
    /// Number of blocks.
    pub count: u64,
    /// The chunk's bytes (`count` blocks, the file's last one short), zero
    /// filled past what could be read.
    pub data: Vec<u8>,
    /// Whether the file ended before the chunk did (it shrank while read).
    pub short: bool,
    /// XXH3-128 of each block's bytes, as the catalog records them.
    pub sums: Vec<[u8; 16]>,
}

/// Chunks of at most this many blocks.
pub const CHUNK_BLOCKS: u64 = 64;

/// Files of fewer chunks are read on the calling thread.
const MIN_CHUNKS_FOR_WORKERS: usize = 4;

/// Reads and hashes `runs` (file block, count) of the file `fd` of `size`
/// bytes in chunks of at most `CHUNK_BLOCKS`, calling `each` with every
/// chunk in file order. An error of `each` stops the reading; a read
/// error names the file as `name`.
pub fn for_each_chunk(
    fd: BorrowedFd<'_>,
    runs: &[(u64, u64)],
    size: u64,
    bs: u64,
    name: &str,
    mut each: impl FnMut(&Chunk) -> Result<()>,
) -> Result<()> {
    let read_err = |e: std::io::Error| anyhow!("cannot read {name}: {e}");
    let mut chunks: Vec<(u64, u64)> = Vec::new();
    for &(block, count) in runs {
        let mut b = block;
        while b < block + count {
            let n = (block + count - b).min(CHUNK_BLOCKS);
            chunks.push((b, n));
            b += n;
        }
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    if workers < 2 || chunks.len() < MIN_CHUNKS_FOR_WORKERS {
        let mut buf = Vec::new();
        for &(b, n) in &chunks {
            let c = read_chunk(fd, b, n, size, bs, std::mem::take(&mut buf)).map_err(read_err)?;
            each(&c)?;
            buf = c.data;
        }
        return Ok(());
    }
    std::thread::scope(|s| -> Result<()> {
        let mut lanes = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = crossbeam_channel::bounded::<std::io::Result<Chunk>>(2);
            // Buffers come back for reuse: no fresh (zeroed) pages per chunk.
            let (give, back) = crossbeam_channel::unbounded::<Vec<u8>>();
            let mine: Vec<(u64, u64)> = chunks.iter().copied().skip(w).step_by(workers).collect();
            s.spawn(move || {
                for (b, n) in mine {
                    let buf = back.try_recv().unwrap_or_default();
                    let r = read_chunk(fd, b, n, size, bs, buf);
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        return;
                    }
                }
            });
            lanes.push((rx, give));
        }
        for i in 0..chunks.len() {
            let (rx, give) = &lanes[i % workers];
            let c = rx
                .recv()
                .map_err(|_| anyhow!("internal: a reader thread stopped"))?
                .map_err(read_err)?;
            each(&c)?;
            let _ = give.send(c.data);
        }
        Ok(())
    })
}

/// Reads file blocks `block..block+count` into `buf` and hashes them.
fn read_chunk(
    fd: BorrowedFd<'_>,
    block: u64,
    count: u64,
    size: u64,
    bs: u64,
    mut buf: Vec<u8>,
) -> std::io::Result<Chunk> {
    let off = block * bs;
    let len = (((block + count) * bs).min(size).saturating_sub(off)) as usize;
    buf.resize(len, 0);
    let got = crate::fsx::pread_full(fd, &mut buf, off)?;
    let short = got < len;
    if short {
        buf[got..].fill(0);
    }
    let sums = (0..count as usize)
        .map(|i| {
            let s = (i * bs as usize).min(len);
            let e = (s + bs as usize).min(len);
            xxh3_128(&buf[s..e]).to_le_bytes()
        })
        .collect();
    Ok(Chunk {
        block,
        count,
        data: buf,
        short,
        sums,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Chunks come back in file order with the file's bytes and their
    /// block checksums, on the worker path and the inline one; a file
    /// shorter than its recorded size reads as zeros past its end.
    #[test]
    fn chunks_in_order_with_their_sums() {
        let bs = 4096u64;
        let mut data = vec![0u8; (bs * 1000 + 123) as usize];
        let mut x = 0x9e3779b97f4a7c15u64;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &data).unwrap();
        let blocks = (data.len() as u64).div_ceil(bs);
        for runs in [
            vec![(0, blocks)],
            vec![(0, 3), (500, blocks - 500)],
            vec![(2, 5)],
        ] {
            let mut next = Vec::new();
            for &(b, n) in &runs {
                next.extend(b..b + n);
            }
            let mut it = next.into_iter();
            for_each_chunk(f.as_fd(), &runs, data.len() as u64, bs, "t", |c| {
                assert!(!c.short);
                for i in 0..c.count {
                    let blk = c.block + i;
                    assert_eq!(it.next(), Some(blk));
                    let s = (blk * bs) as usize;
                    let e = (s + bs as usize).min(data.len());
                    let at = (i * bs) as usize;
                    assert_eq!(&c.data[at..at + (e - s)], &data[s..e]);
                    assert_eq!(c.sums[i as usize], xxh3_128(&data[s..e]).to_le_bytes());
                }
                Ok(())
            })
            .unwrap();
            assert_eq!(it.next(), None);
        }
        // Recorded as 10 blocks longer than it is.
        let size = data.len() as u64 + 10 * bs;
        let mut short = false;
        let mut tail_zero = true;
        for_each_chunk(f.as_fd(), &[(0, size.div_ceil(bs))], size, bs, "t", |c| {
            short |= c.short;
            let end = ((c.block + c.count) * bs).min(size);
            if end > data.len() as u64 {
                let from = data.len().saturating_sub((c.block * bs) as usize);
                tail_zero &= c.data[from..].iter().all(|&b| b == 0);
            }
            Ok(())
        })
        .unwrap();
        assert!(short && tail_zero);
        // An error of the consumer stops the reading.
        let mut n = 0;
        let r = for_each_chunk(
            f.as_fd(),
            &[(0, blocks)],
            data.len() as u64,
            bs,
            "t",
            |_| {
                n += 1;
                if n == 3 {
                    anyhow::bail!("stop");
                }
                Ok(())
            },
        );
        assert!(r.is_err() && n == 3);
    }
}
