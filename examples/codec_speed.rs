//! Measures, on this machine and a given file, the per-core speed of what a
//! dump spends CPU on: zstd per 256 KiB record at several levels, the
//! stream digest (SHA-256, BLAKE3), the XXH3 block checksums, and the
//! early-abort tests (entropy, all-zero blocks) against zstd's own speed
//! on zeros and random bytes. Used to choose the
//! defaults recorded in BENCHMARKS.md.
//!
//! `cargo run --release --example codec_speed -- FILE`

use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: codec_speed FILE");
    let data = std::fs::read(path).unwrap();
    let data = &data[..data.len().min(512 << 20)];
    let mb = data.len() as f64 / 1e6;
    for (level, rec) in [(1, 256), (2, 256), (3, 256), (4, 256), (5, 256), (3, 1024)] {
        let mut c = zstd::bulk::Compressor::new(level).unwrap();
        let t = Instant::now();
        let mut out = 0usize;
        for chunk in data.chunks(rec << 10) {
            out += c.compress(chunk).unwrap().len();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "zstd {level:>3} {rec:>4}K: {:7.0} MB/s  ratio {:.3}",
            mb / s,
            out as f64 / data.len() as f64
        );
    }
    for (name, params) in [
        (
            "3 minmatch6",
            vec![zstd::zstd_safe::CParameter::MinMatch(6)],
        ),
        (
            "3 minmatch7",
            vec![zstd::zstd_safe::CParameter::MinMatch(7)],
        ),
        (
            "3 hash15",
            vec![
                zstd::zstd_safe::CParameter::HashLog(15),
                zstd::zstd_safe::CParameter::ChainLog(15),
            ],
        ),
        ("2 search2", vec![zstd::zstd_safe::CParameter::SearchLog(2)]),
    ] {
        let level = if name.starts_with('2') { 2 } else { 3 };
        let mut c = zstd::bulk::Compressor::new(level).unwrap();
        for p in params {
            c.set_parameter(p).unwrap();
        }
        let t = Instant::now();
        let mut out = 0usize;
        for chunk in data.chunks(256 << 10) {
            out += c.compress(chunk).unwrap().len();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "zstd {name:>12}: {:7.0} MB/s  ratio {:.4}",
            mb / s,
            out as f64 / data.len() as f64
        );
    }
    let t = Instant::now();
    let h = ring::digest::digest(&ring::digest::SHA256, data);
    println!(
        "sha256 (ring): {:7.0} MB/s {:02x}",
        mb / t.elapsed().as_secs_f64(),
        h.as_ref()[0]
    );
    let t = Instant::now();
    let mut x = 0u128;
    for b in data.chunks(4096) {
        x ^= xxhash_rust::xxh3::xxh3_128(b);
    }
    println!(
        "xxh3-128 4K:   {:7.0} MB/s {}",
        mb / t.elapsed().as_secs_f64(),
        x & 1
    );
    let t = Instant::now();
    let mut x = 0u64;
    for b in data.chunks(256 << 10) {
        x ^= xxhash_rust::xxh3::xxh3_64(b);
    }
    println!(
        "xxh3-64 256K:  {:7.0} MB/s {}",
        mb / t.elapsed().as_secs_f64(),
        x & 1
    );
    let t = Instant::now();
    let h = blake3::hash(data);
    println!(
        "blake3 whole:  {:7.0} MB/s {:02x}",
        mb / t.elapsed().as_secs_f64(),
        h.as_bytes()[0]
    );
    let t = Instant::now();
    let mut x = 0u8;
    for b in data.chunks(256 << 10) {
        x ^= blake3::hash(b).as_bytes()[0];
    }
    println!(
        "blake3 256K:   {:7.0} MB/s {x}",
        mb / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut x = 0u8;
    for b in data.chunks(256 << 10) {
        x ^= ring::digest::digest(&ring::digest::SHA256, b).as_ref()[0];
    }
    println!(
        "sha256 256K:   {:7.0} MB/s {x}",
        mb / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut e = 0f64;
    for b in data.chunks(256 << 10) {
        e += bits_per_byte(b);
    }
    println!(
        "entropy 256K:  {:7.0} MB/s mean {:.2} bits/byte",
        mb / t.elapsed().as_secs_f64(),
        e / data.len().div_ceil(256 << 10) as f64
    );
    for (name, buf) in [
        ("zeros", vec![0u8; 256 << 20]),
        ("random", {
            let mut v = vec![0u8; 256 << 20];
            let mut s = 0x9e3779b97f4a7c15u64;
            for w in v.chunks_mut(8) {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                w.copy_from_slice(&s.to_le_bytes());
            }
            v
        }),
    ] {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        let t = Instant::now();
        let mut out = 0usize;
        for chunk in buf.chunks(256 << 10) {
            out += c.compress(chunk).unwrap().len();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "zstd 3 {name:>7}: {:7.0} MB/s ratio {:.3}",
            268.0 / s,
            out as f64 / buf.len() as f64
        );
        let t = Instant::now();
        let z = buf
            .chunks(4096)
            .filter(|b| b.iter().all(|&x| x == 0))
            .count();
        println!(
            "zero test {name:>7}: {:7.0} MB/s {z}",
            268.0 / t.elapsed().as_secs_f64()
        );
    }
}

/// Shannon entropy of the byte distribution, bits per byte: what an
/// early-abort pre-test (ZFS, btrfs) would compute before compressing.
/// Measured here to show that zstd's own incompressible fast path (above,
/// on random data) is cheaper than such a test.
fn bits_per_byte(data: &[u8]) -> f64 {
    let mut t = [[0u32; 256]; 4];
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        for (i, &b) in c.iter().enumerate() {
            t[i][b as usize] += 1;
        }
    }
    for &b in chunks.remainder() {
        t[0][b as usize] += 1;
    }
    let n = data.len() as f64;
    (0..256)
        .map(|i| (t[0][i] + t[1][i] + t[2][i] + t[3][i]) as f64 / n)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.log2())
        .sum()
}
