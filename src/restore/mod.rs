//! `snapdump restore` and `snapdump verify`.

pub mod apply;
pub mod chain;
pub mod changes;
pub mod compare;
pub mod extract;
pub mod fetch;
pub mod full;
pub mod history;
pub mod list;
pub mod pending;
pub mod select;
pub mod shell;
pub mod state;
pub mod survey;
pub mod verify;

use crate::media::Input;
use crate::stream::reader::{Digest, StreamReader};
use anyhow::Result;

/// Opens a stream for reading and checks its header.
pub fn open_stream_salvaging(input: &Input, digest: Digest) -> Result<StreamReader> {
    StreamReader::open_salvaging(input.open()?, input.name(), digest)
}

/// Opens a stream for reading and checks its header.
pub fn open_stream(input: &Input, digest: Digest) -> Result<StreamReader> {
    StreamReader::open(input.open()?, input.name(), digest)
}
