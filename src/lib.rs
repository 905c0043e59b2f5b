//! snapdump: snapshot image dump and restore for directory trees.
//!
//! A source's snapshots are kept in a catalog as bit planes over virtual
//! block numbers (VBNs); a dump turns the selected image (a plane
//! difference) into a stream of VBN-tagged block records with the metadata
//! in front and a relocation table and checksummed trailer at the end;
//! restore rebuilds the tree, or applies an increment to one. See
//! `formats/` for the byte-level formats, the man pages for the contracts users rely on, and
//! ARCHITECTURE.md for the map of this crate.
//!
//! The data path, and the folder that owns each step:
//!
//! ```text
//! out:  source tree ─ scan ─ catalog/planes ─ dump/ (plan, data phase)
//!       volume file ─ volume/image ──────────┐
//!                                            ├─ stream/ (front, record stage, writer)
//!                                            └─ media/ (file, pipe, device, tape/)
//! back: media/ ─ stream/ (reader, checks, image sets)
//!         ├─ restore/ (chains of streams: -x -t -C -i, verify, history)
//!         ├─ target/  (a directory: full restore, checked incremental apply)
//!         └─ volume/  (a volume file: receive, extract, export, check)
//! cli/: the command line over all of them.
//! ```
//!
//! Layers import downward only: `media` knows nothing of streams, `stream`
//! nothing of commands, `target` and `volume` nothing of the dump and
//! restore commands (`scripts/module-graph.py` checks it).

#![warn(missing_docs)]

pub mod at;
pub(crate) mod atomic;
pub mod catalog;
pub mod cli;
pub mod digest;
pub mod dump;
pub(crate) mod failpoint;
pub mod fileflags;
pub mod fsx;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod ids;
pub mod lock;
pub mod media;
pub mod mirror;
pub mod names;
pub mod planes;
pub mod policy;
pub(crate) mod progress;
pub mod replica;
pub mod report;
pub mod restore;
pub mod rules;
pub(crate) mod runs;
pub mod scan;
pub mod sealed;
pub(crate) mod snapshots;
pub mod stream;
pub mod target;
pub mod tarout;
pub mod track;
pub mod tree;
pub mod volume;
pub mod wire;
