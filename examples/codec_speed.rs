//! Measures, on this machine and a given file, the per-core speed of what a
//! dump spends CPU on: zstd per 256 KiB record at several levels, the
//! whole-stream SHA-256, and the XXH3 block checksums. Used to choose the
//! defaults recorded in BENCHMARKS.md.
//!
//! `cargo run --release --example codec_speed -- FILE`

use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: codec_speed FILE");
    let data = std::fs::read(path).unwrap();
    let data = &data[..data.len().min(512 << 20)];
    let mb = data.len() as f64 / 1e6;
    for (level, rec) in [(1, 256), (3, 256), (4, 256), (5, 256), (3, 1024)] {
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
}
