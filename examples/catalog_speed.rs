//! Times a catalog's load and its parts of a commit on an existing source
//! directory (`CATALOG/sources/KEY`): load (read, check, decode), the
//! body's encoding, and the chunk store's work for an unchanged body.
//! Used to decide what the catalog format should change (BENCHMARKS.md).
//! It writes into the directory it is given: run it on a copy.
//!
//! `cargo run --release --example catalog_speed -- SOURCE_DIR`

use std::time::Instant;

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: catalog_speed DIR"));
    let t = Instant::now();
    let (state, manifest) = snapdump::catalog::load(&dir).unwrap().expect("a catalog");
    let load = t.elapsed();
    let t = Instant::now();
    let body = snapdump::catalog::encode_body(&state);
    let encode = t.elapsed();
    let t = Instant::now();
    let m = snapdump::catalog::pack::store(&dir, manifest.as_ref(), &body).unwrap();
    let store = t.elapsed();
    let t = Instant::now();
    let m2 = snapdump::catalog::pack::store(&dir, Some(&m), &body).unwrap();
    let again = t.elapsed();
    assert_eq!(m, m2);
    println!(
        "body {} B in {} chunks; load {load:?}  encode {encode:?}  store (from {}) {store:?}  store unchanged {again:?}",
        body.len(),
        m.chunks.len(),
        if manifest.is_some() { "a pack" } else { "format 3" },
    );
}
