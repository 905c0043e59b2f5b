//! Where streams go to and come from: regular files, stdout/stdin, pipes,
//! block and character devices, st tape drives, virtual tapes and volume
//! files. This layer moves bytes and never parses the stream it carries
//! (a tape's volume label comes from the producer); the stream layer above
//! reads and writes through it.
//!
//! A dump to a regular file writes a temporary sibling and renames it into
//! place only after the stream is complete and synced, so a failed dump
//! never leaves a half-written file under the requested name, and an
//! earlier good stream there survives the failure.

//!
//! [`kind`] decides what a `-f` name is, once; [`input`] and [`output`]
//! open it for the stream layer above, which sees every medium through the
//! same two traits: `std::io::Read` front to back ([`Input::open`]) or
//! `std::io::Write` ([`Output::open_medium`]), plus reading by offset
//! ([`ByOffset`]) where the medium is a regular file or a dump on a virtual
//! tape ([`Input::seekable`]). [`tape`]
//! holds the record-oriented media (st drives, the simulated st drive,
//! virtual tapes, volume files) behind one [`tape::Device`] trait, framed
//! into volumes by one writer and one reader. A further backend (an object
//! store) is one more kind in [`kind`] and one more arm in `Input::open` /
//! `Output::open_medium`, next to `tape/`.

pub mod by_offset;
pub mod input;
pub mod kind;
pub mod output;
pub mod tape;

pub use by_offset::ByOffset;
pub use input::{group_inputs, Input};
pub use kind::writes_tape;
pub use kind::{stream_spec, MediumKind};
pub use output::Output;

/// Write buffer size: large sequential writes suit pipes, disks and tapes.
const IO_BUF: usize = 1 << 20;
