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
    let v2 = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden-v2/stream.sdump"),
    )
    .unwrap();
    snapdump::fuzzing::stream(&v2);
    for cut in (0..2048.min(v2.len())).step_by(11) {
        snapdump::fuzzing::stream(&v2[..cut]);
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

#[test]
fn volume_regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz-regressions/volume");
    if dir.exists() {
        replay("volume", snapdump::fuzzing::volume);
    }
    // The golden volume as a file, its metadata body inside valid framing,
    // and truncations of both.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden-volume-v1/volume.vol");
    let file = std::fs::read(&path).unwrap();
    snapdump::fuzzing::volume(&file);
    let vol = snapdump::volume::Volume::open(
        &path,
        snapdump::volume::store::Access::Read,
        snapdump::lock::Wait::No,
    )
    .unwrap();
    let mut body = vec![0xF0];
    body.extend(snapdump::volume::format::encode_state(&vol.state));
    snapdump::fuzzing::volume(&body);
    for cut in (1..body.len()).step_by(body.len() / 40 + 1) {
        snapdump::fuzzing::volume(&body[..cut]);
    }
    for cut in [0, 100, 4096, 8192, 8300, file.len() / 2, file.len() - 1] {
        snapdump::fuzzing::volume(&file[..cut]);
    }
}

#[test]
fn apply_regressions() {
    assert!(replay("apply", snapdump::fuzzing::apply) >= 5);
}
