//! `snapdump verify`: read a whole stream and check every checksum and
//! every structural rule, writing nothing.

use super::check::{decode_meta, DataCheck};
use super::open_stream;
use crate::stream::header::StreamHeader;
use crate::stream::payload::{decode_data, decode_dealloc, decode_reloc};
use crate::stream::reader::Digest;
use crate::stream::record::RecordKind;
use crate::tree::{Tree, TreeBuilder};
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::collections::HashSet;

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

/// Verifies `input` end to end.
pub fn verify(input: &str) -> Result<VerifySummary> {
    let mut r = open_stream(input, Digest::Check)?;
    let bs = r.header.block_size as u64;
    let mut builder = Some(TreeBuilder::new(bs));
    let mut tree: Option<Tree> = None;
    let mut entries = 0;
    let mut check = DataCheck::default();
    let mut data_offsets = HashSet::new();
    let mut reloc_blocks = 0u64;
    let mut dealloc = 0u64;
    let mut dealloc_seen = false;
    while let Some(rec) = r.next_record()? {
        if rec.kind != RecordKind::Meta && tree.is_none() {
            tree = Some(builder.take().unwrap().finish()?);
        }
        let name = r.name().to_string();
        let ctx =
            |e: anyhow::Error| anyhow!("{name}: record {} at byte {}: {e:#}", rec.seq, rec.offset);
        match rec.kind {
            RecordKind::Meta => {
                entries += decode_meta(builder.as_mut().unwrap(), &rec.raw).map_err(ctx)?
            }
            RecordKind::Data => {
                let (segs, _) = decode_data(&rec.raw).map_err(ctx)?;
                for s in &segs {
                    check.segment(tree.as_ref().unwrap(), s, bs).map_err(ctx)?;
                }
                data_offsets.insert(rec.offset);
            }
            RecordKind::Dealloc => {
                if dealloc_seen {
                    return Err(ctx(anyhow!("second deallocation record")));
                }
                dealloc_seen = true;
                dealloc += decode_dealloc(&rec.raw)
                    .map_err(ctx)?
                    .iter()
                    .map(|x| x.count)
                    .sum::<u64>();
            }
            RecordKind::Reloc => {
                for e in decode_reloc(&rec.raw).map_err(ctx)? {
                    if !data_offsets.contains(&e.offset) {
                        return Err(ctx(anyhow!(
                            "relocation entry for VBN {} points at no data record",
                            e.vbn
                        )));
                    }
                    reloc_blocks += e.count;
                }
            }
            RecordKind::End | RecordKind::Header => {}
        }
    }
    let end = r.end.clone().expect("end record read");
    let tree = tree.ok_or_else(|| anyhow!("{}: stream has no data section", r.name()))?;
    check
        .finish(&tree, entries, r.header.entries, &end)
        .map_err(|e| anyhow!("{}: {e:#}", r.name()))?;
    if !dealloc_seen {
        bail!("{}: stream has no deallocation record", r.name());
    }
    if reloc_blocks != check.blocks {
        bail!(
            "{}: relocation table covers {reloc_blocks} blocks, the stream holds {}",
            r.name(),
            check.blocks
        );
    }
    Ok(VerifySummary {
        command: "verify",
        status: "ok",
        header: r.header.clone(),
        records: end.records + 1,
        entries,
        data_blocks: check.blocks,
        data_bytes: check.bytes,
        deallocated: dealloc,
        stream_bytes: r.offset(),
    })
}
