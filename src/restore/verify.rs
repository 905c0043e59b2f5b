//! `snapdump verify`: read a whole stream and check every checksum and
//! every structural rule, writing nothing.

use super::check::{read_data, read_front};
use super::open_stream;
use crate::stream::header::StreamHeader;
use crate::stream::reader::Digest;
use anyhow::Result;
use serde::Serialize;

/// What a successful verify found.
#[derive(Serialize)]
pub struct VerifySummary {
    /// Always "verify".
    pub command: &'static str,
    /// Always "ok" (a damaged stream is an error).
    pub status: &'static str,
    /// The stream header.
    pub header: StreamHeader,
    /// Records read.
    pub records: u64,
    /// Metadata entries.
    pub entries: u64,
    /// Data blocks.
    pub data_blocks: u64,
    /// Data bytes.
    pub data_bytes: u64,
    /// VBNs in the deallocation set.
    pub deallocated: u64,
    /// Stream bytes.
    pub stream_bytes: u64,
}

/// Verifies `input` end to end, including the SHA-256 digest list.
pub fn verify(input: &crate::media::Input) -> Result<VerifySummary> {
    let mut r = open_stream(input, Digest::Check)?;
    let front = read_front(&mut r)?;
    let t = read_data(&mut r, &front, |_, _| Ok(()))?;
    let end = r.end.clone().expect("end record read");
    Ok(VerifySummary {
        command: "verify",
        status: "ok",
        header: r.header.clone(),
        records: end.records + 1,
        entries: front.entries,
        data_blocks: t.blocks,
        data_bytes: t.bytes,
        deallocated: front.image.dealloc.iter().map(|x| x.count).sum(),
        stream_bytes: r.offset(),
    })
}
