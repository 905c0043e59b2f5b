//! `snapdump verify`: read a whole stream and check every checksum and
//! every structural rule, writing nothing.

use crate::stream::check::read_data;
use crate::stream::front::read_front;
use crate::stream::header::StreamHeader;
use crate::stream::reader::{Digest, StreamReader};
use crate::stream::set::ImageSetReader;
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

/// Verifies the one stream the inputs name (its volumes, on tape); several
/// streams are refused, since verify reports on one stream at a time.
pub fn verify_one(
    mut inputs: Vec<crate::media::Input>,
    report: &crate::report::Report,
) -> Result<(crate::media::Input, Vec<VerifySummary>)> {
    if inputs.len() != 1 {
        anyhow::bail!(
            "verify checks one stream at a time; give its volumes, or run verify once per stream"
        );
    }
    let input = inputs.remove(0);
    let all = verify(&input, report)?;
    Ok((input, all))
}

/// Verifies `input` end to end, including the digest list.
/// Damage does not stop it: every damaged stretch is named on stderr, then
/// it fails.
/// An image set (several streams back to back) is verified stream by
/// stream.
pub fn verify(
    input: &crate::media::Input,
    report: &crate::report::Report,
) -> Result<Vec<VerifySummary>> {
    let mut set = ImageSetReader::open(input)?;
    let mut out = Vec::new();
    while let Some(r) = set.next_salvaging(Digest::Check)? {
        out.push(verify_stream(r, report)?);
    }
    if let Some(t) = set.trailing() {
        report.warn(input.name().as_bytes(), t);
    }
    Ok(out)
}

fn verify_stream(mut r: StreamReader, report: &crate::report::Report) -> Result<VerifySummary> {
    let front = read_front(&mut r);
    let data = match &front {
        Ok(f) => Some(read_data(&mut r, f, |_, _| Ok(()))),
        Err(_) => None,
    };
    let failed = front.is_err() || data.as_ref().is_some_and(|d| d.is_err());
    if failed && !r.damage().is_empty() {
        // Read on past what stopped the check, to name every damaged
        // stretch.
        while let Ok(Some(_)) = r.next_record() {}
    }
    if !r.damage().is_empty() {
        for d in r.damage() {
            let to =
                d.to.map(|t| t.to_string())
                    .unwrap_or_else(|| "the end".into());
            let recs = match d.end_seq {
                Some(e) if e == d.first_seq + 1 => format!("record {}", d.first_seq),
                Some(e) => format!("records {}..{}", d.first_seq, e),
                None => format!("records from {}", d.first_seq),
            };
            report.warn(
                r.name().as_bytes(),
                format!("damaged: stream bytes {}..{to}, {recs}: {}", d.from, d.why),
            );
        }
        anyhow::bail!(
            "{}: {} damaged stretch(es) (listed above); the stream is damaged",
            r.name(),
            r.damage().len()
        );
    }
    let front = front?;
    let t = data.expect("read after the front")?;
    let end = r.end.clone().expect("end record read");
    Ok(VerifySummary {
        command: "verify",
        status: "ok",
        header: r.header.clone(),
        records: end.records + 1,
        entries: front.entries,
        data_blocks: t.blocks,
        data_bytes: t.bytes,
        deallocated: front
            .image
            .dealloc
            .iter()
            .fold(0u64, |a, x| a.saturating_add(x.count)),
        stream_bytes: r.offset(),
    })
}
