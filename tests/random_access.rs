//! Restoring one small file from a large stream reads only the records it
//! needs: the bytes read are counted by the kernel (rchar in /proc/PID/io of
//! a shell that ran and reaped the restore), not by snapdump itself.

mod common;
use common::*;
use std::fs;
use std::io::Write;
use std::path::Path;

/// Fills `path` with `size` bytes of incompressible data, quickly.
fn random_file(path: &Path, size: usize, seed: u64) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(path).unwrap());
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len());
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
}

#[test]
fn one_small_file_from_a_gigabyte_stream_reads_under_one_percent() {
    let t = paths();
    for (i, name) in ["a-bulk", "b-bulk", "y-bulk", "z-bulk"].iter().enumerate() {
        random_file(&t.src.join(name), 256 << 20, 0x9e37_79b9 + i as u64);
    }
    random_file(&t.src.join("needle"), 4096, 7);
    assert_eq!(dump_to(0, &t.stream, &t.cat, &t.src), 0);
    let stream_len = fs::metadata(&t.stream).unwrap().len();
    assert!(stream_len >= 1 << 30, "stream is {stream_len} bytes");
    let before = snapshot_tree(&t.src);

    let out = t.dir.path().join("x");
    let (c, read, e) = rchar_of(&[
        "restore",
        "-x",
        "-f",
        p(&t.stream),
        "--target",
        p(&out),
        "needle",
    ]);
    assert_eq!(c, 0, "{e}");
    assert_extracted(&before, &out, &["needle"]);
    eprintln!(
        "restore -x needle: {read} bytes read of a {stream_len}-byte stream ({:.4}%)",
        read as f64 * 100.0 / stream_len as f64
    );
    assert!(read * 100 < stream_len, "read {read} bytes of {stream_len}");

    // From a chain: the needle changes in a level 1; both streams together
    // are read for well under 1% as well.
    random_file(&t.src.join("needle"), 4096, 8);
    let s1 = t.dir.path().join("s1.sdump");
    assert_eq!(dump_to(1, &s1, &t.cat, &t.src), 0);
    let after = snapshot_tree(&t.src);
    let out = t.dir.path().join("y");
    let (c, read, e) = rchar_of(&[
        "restore",
        "-x",
        "-f",
        p(&t.stream),
        "-f",
        p(&s1),
        "--target",
        p(&out),
        "needle",
        "a-bulk",
    ]);
    assert_eq!(c, 0, "{e}");
    assert_extracted(&after, &out, &["needle", "a-bulk"]);
    // a-bulk's 256 MiB must be read; nothing of the other three files.
    let total = stream_len + fs::metadata(&s1).unwrap().len();
    assert!(read < (256 << 20) + total / 100, "read {read} bytes");

    // Compare the needle alone against the live tree: also a small read.
    let (c, read, e) = rchar_of(&[
        "restore",
        "-C",
        "-f",
        p(&t.stream),
        "-f",
        p(&s1),
        "--target",
        p(&t.src),
        "needle",
    ]);
    assert_eq!(c, 0, "{e}");
    assert!(read * 100 < total, "compare read {read} bytes");
}
