//! Replays every input kept in `testdata/fuzz-regressions/TARGET/` (crashes
//! found by fuzzing, and seeds) through the fuzzed functions: each must
//! return without panicking.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/fuzz-regressions")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        f(&data);
        n += 1;
    }
    n
}

#[test]
fn stream_regressions() {
    replay("stream", snapdump::fuzzing::stream);
    // The golden stream and every truncation of its first kilobyte.
    let golden = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden-v1/stream.sdump"),
    )
    .unwrap();
    snapdump::fuzzing::stream(&golden);
    for cut in (0..1024.min(golden.len())).step_by(7) {
        snapdump::fuzzing::stream(&golden[..cut]);
    }
}

#[test]
fn catalog_regressions() {
    replay("catalog", snapdump::fuzzing::catalog);
}

#[test]
fn records_regressions() {
    replay("records", snapdump::fuzzing::records);
}

#[test]
fn stream_sealed_regressions() {
    replay("stream_sealed", snapdump::fuzzing::stream_sealed);
}

#[test]
fn tape_regressions() {
    replay("tape", snapdump::fuzzing::tape);
}
