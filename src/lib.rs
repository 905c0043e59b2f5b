//! snapdump: snapshot image dump and restore for directory trees.
//!
//! A source's snapshots are kept in a catalog as bit planes over virtual
//! block numbers (VBNs); a dump turns the selected image into a stream of
//! VBN-tagged block records with the metadata in front and a relocation
//! table and checksummed trailer at the end; restore rebuilds the tree.
//! See `formats/` for the byte-level formats and DESIGN.md for contracts.

pub mod atomic;
pub mod catalog;
pub mod cli;
pub mod dump;
pub mod failpoint;
pub mod fsx;
pub mod fuzzing;
pub mod lock;
pub mod media;
pub mod names;
pub mod planes;
pub mod progress;
pub mod report;
pub mod restore;
pub mod runs;
pub mod scan;
pub mod snapshots;
pub mod stream;
pub mod target;
pub mod tree;
pub mod util;
pub mod volume;
pub mod wire;
