//! Volumes: block images that hold data and keep snapshots.
//!
//! A volume has the block structure of a catalog (snapshots as bit planes
//! over VBNs, metadata with block pointers and checksums) but keeps the
//! blocks themselves, so it can be listed, extracted, exported, checked and
//! dumped again, feeding another volume (seed 004's replication
//! hierarchy). Streams are applied to it with `restore -r --volume`; when a
//! block cannot stay at its source VBN it is relocated and every pointer to
//! it rewritten. Layout and commit protocol: formats/volume.md.

pub mod admin;
pub mod check;
pub mod format;
pub mod image;
pub mod read;
pub mod receive;
pub mod store;
pub mod tar;

pub use store::{is_volume, Volume};

/// Splits `PATH@SNAPSHOT` into the volume path and the snapshot selector.
/// A path that exists as given is taken whole (names may contain '@').
pub fn split_spec(spec: &str) -> (std::path::PathBuf, Option<String>) {
    let whole = std::path::Path::new(spec);
    if whole.exists() {
        return (whole.to_path_buf(), None);
    }
    match spec.rsplit_once('@') {
        Some((p, s)) if !p.is_empty() && !s.is_empty() => (p.into(), Some(s.to_string())),
        _ => (whole.to_path_buf(), None),
    }
}
