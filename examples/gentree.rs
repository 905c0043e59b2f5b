//! Generates the benchmark tree, deterministically, and applies the
//! benchmark mutation.
//!
//! `gentree create DIR [--big-gib N] [--small N]`: N one-GiB "half-random"
//! files (each 4 KiB block is 2 KiB of random bytes and 2 KiB of text), N
//! small text-like files of 100 B to 64 KiB in 200 directories, and a 4 GiB
//! sparse file holding 64 MiB of data.
//!
//! `gentree runs DIR [--gib N]`: N one-GiB files of 64 KiB runs that
//! alternate random bytes and written (allocated) zeros, the level-0
//! benchmark's second tree.
//!
//! `gentree scale DIR [--files N] [--dirs D] [--big N] [--big-gib G]`: the
//! scale benchmark's tree: N text files of 1 to 16 KiB in D directories
//! (`small/dNNN`), and N big files of G GiB of text blocks (`big/`).
//!
//! `gentree mutate DIR SEED`: rewrites 1% of the 4 KiB blocks of each big
//! file in place, and rewrites, adds and deletes about 1% of the small
//! files each. Prints the bytes of changed data.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "backup",
    "snapshot",
    "block",
    "volume",
    "tape",
    "restore",
    "level",
    "plane",
    "stream",
    "catalog",
    "the",
    "of",
    "and",
    "data",
    "file",
    "directory",
    "inode",
    "checksum",
    "record",
    "mirror",
];

fn text(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 16);
    while v.len() < n {
        v.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
        v.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
    }
    v.truncate(n);
    v
}

/// One 4 KiB half-random block.
fn block(rng: &mut Rng, out: &mut [u8]) {
    rng.fill(&mut out[..2048]);
    let t = text(rng, 2048);
    out[2048..].copy_from_slice(&t);
}

fn small_size(rng: &mut Rng) -> usize {
    // Log-uniform between 100 B and 64 KiB.
    let e = rng.below(1000) as f64 / 1000.0;
    (100.0 * (655.36f64).powf(e)) as usize
}

fn create(dir: &Path, big_gib: u64, small: u64) {
    fs::create_dir_all(dir.join("big")).unwrap();
    let mut rng = Rng(0x5eed_0000_0000_0001);
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..big_gib {
        let mut f = File::create(dir.join(format!("big/file{i}.bin"))).unwrap();
        for _ in 0..1024 {
            for b in buf.chunks_mut(4096) {
                block(&mut rng, b);
            }
            f.write_all(&buf).unwrap();
        }
    }
    for i in 0..small {
        let d = dir.join(format!("small/d{:03}", i % 200));
        if i < 200 {
            fs::create_dir_all(&d).unwrap();
        }
        let n = small_size(&mut rng);
        fs::write(d.join(format!("f{i:06}.txt")), text(&mut rng, n)).unwrap();
    }
    let f = File::create(dir.join("sparse.img")).unwrap();
    f.set_len(4 << 30).unwrap();
    for r in 0..16u64 {
        for j in 0..4 {
            for b in buf.chunks_mut(4096) {
                block(&mut rng, b);
            }
            f.write_all_at(&buf, r * (256 << 20) + j * (1 << 20))
                .unwrap();
        }
    }
}

fn mutate(dir: &Path, seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut changed = 0u64;
    let mut b = vec![0u8; 4096];
    for ent in fs::read_dir(dir.join("big")).unwrap() {
        let p = ent.unwrap().path();
        let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
        let blocks = f.metadata().unwrap().len() / 4096;
        for _ in 0..blocks / 100 {
            block(&mut rng, &mut b);
            f.write_all_at(&b, rng.below(blocks) * 4096).unwrap();
            changed += 4096;
        }
    }
    let mut files: Vec<_> = Vec::new();
    for d in fs::read_dir(dir.join("small")).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            files.push(f.unwrap().path());
        }
    }
    files.sort();
    let n = files.len() as u64;
    for _ in 0..n / 100 {
        let p = &files[rng.below(n) as usize];
        if p.exists() {
            let size = small_size(&mut rng);
            fs::write(p, text(&mut rng, size)).unwrap();
            changed += size as u64;
        }
    }
    for _ in 0..n / 100 {
        let _ = fs::remove_file(&files[rng.below(n) as usize]);
    }
    for i in 0..n / 100 {
        let size = small_size(&mut rng);
        let p = dir.join(format!("small/d{:03}/new-{seed}-{i}.txt", i % 200));
        fs::write(p, text(&mut rng, size)).unwrap();
        changed += size as u64;
    }
    println!("{changed}");
}

/// The scale tree: many small text files, a few big text files.
fn scale(dir: &Path, files: u64, dirs: u64, big: u64, big_gib: u64) {
    fs::create_dir_all(dir.join("big")).unwrap();
    let mut rng = Rng(0x05_eed5_ca1e_u64 << 8 | 1);
    for i in 0..dirs {
        fs::create_dir_all(dir.join(format!("small/d{i:03}"))).unwrap();
    }
    for i in 0..files {
        let n = 1024 + rng.below(15 * 1024 + 1) as usize;
        let p = dir.join(format!("small/d{:03}/f{i:07}.txt", i % dirs));
        fs::write(p, text(&mut rng, n)).unwrap();
    }
    for i in 0..big {
        let mut f = File::create(dir.join(format!("big/file{i}.bin"))).unwrap();
        for _ in 0..big_gib * 256 {
            f.write_all(&text(&mut rng, 4 << 20)).unwrap();
        }
    }
}

/// Files of 64 KiB runs alternating random bytes and written zeros.
fn runs(dir: &Path, gib: u64) {
    fs::create_dir_all(dir).unwrap();
    let mut rng = Rng(0x05ee_d0f2_u64 << 8 | 1);
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..gib {
        let mut f = File::create(dir.join(format!("runs{i}.bin"))).unwrap();
        for _ in 0..1024 {
            for (k, run) in buf.chunks_mut(64 << 10).enumerate() {
                if k % 2 == 0 {
                    for w in run.chunks_mut(8) {
                        w.copy_from_slice(&rng.next().to_le_bytes());
                    }
                } else {
                    run.fill(0);
                }
            }
            f.write_all(&buf).unwrap();
        }
        f.sync_all().unwrap();
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let usage = "usage: gentree create DIR [--big-gib N] [--small N] | gentree runs DIR [--gib N] | gentree scale DIR [--files N] [--dirs D] [--big N] [--big-gib G] | gentree mutate DIR SEED";
    match a.get(1).map(String::as_str) {
        Some("create") => {
            let dir = Path::new(a.get(2).expect(usage));
            let opt = |name: &str, def: u64| {
                a.iter()
                    .position(|x| x == name)
                    .map(|i| a[i + 1].parse().expect(usage))
                    .unwrap_or(def)
            };
            create(dir, opt("--big-gib", 3), opt("--small", 20_000));
        }
        Some("runs") => {
            let dir = Path::new(a.get(2).expect(usage));
            let gib = a
                .iter()
                .position(|x| x == "--gib")
                .map(|i| a[i + 1].parse().expect(usage))
                .unwrap_or(2u64);
            runs(dir, gib);
        }
        Some("scale") => {
            let dir = Path::new(a.get(2).expect(usage));
            let opt = |name: &str, def: u64| {
                a.iter()
                    .position(|x| x == name)
                    .map(|i| a[i + 1].parse().expect(usage))
                    .unwrap_or(def)
            };
            scale(
                dir,
                opt("--files", 1_000_000),
                opt("--dirs", 10_000),
                opt("--big", 4),
                opt("--big-gib", 8),
            );
        }
        Some("mutate") => mutate(
            Path::new(a.get(2).expect(usage)),
            a.get(3).expect(usage).parse().expect(usage),
        ),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
