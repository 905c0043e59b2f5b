//! The stream's front: header, metadata section and image section, written
//! once for every producer (tree dump, volume dump) and read back with every
//! consistency rule checked before any data is used (formats/stream.md).

use super::header::StreamHeader;
use super::payload::Image;
use super::reader::Records;
use super::record::RecordKind;
use super::writer::StreamWriter;
use super::META_RECORD_BYTES;
use crate::runs::RunSet;
use crate::tree::{ItemForm, Tree, TreeBuilder};
use crate::wire::{Dec, Enc};
use anyhow::{anyhow, Result};

/// Writes the front of a stream: its header, the metadata of `tree` and
/// the image section. The data records follow.
pub fn write_front(
    w: &mut StreamWriter,
    header: &StreamHeader,
    tree: &Tree,
    image: &Image,
) -> Result<()> {
    w.write_header(header)?;
    write_metadata(w, tree)?;
    w.write_record(RecordKind::Image, &image.encode())?;
    Ok(())
}

/// Writes the metadata section: every dirent in depth-first order, with
/// its inode at its first appearance, in records of bounded size.
pub fn write_metadata(w: &mut StreamWriter, tree: &Tree) -> Result<()> {
    let mut e = Enc::new();
    let mut items = 0u32;
    let mut e2 = Enc::new();
    let form = w.item_form();
    for i in 0..tree.dirents.len() {
        tree.encode_item(i, &mut e2, form);
        items += 1;
        if e2.buf.len() >= META_RECORD_BYTES {
            e.u32(items);
            e.fixed(&e2.buf);
            w.write_record(RecordKind::Meta, &e.buf)?;
            e = Enc::new();
            e2 = Enc::new();
            items = 0;
        }
    }
    if items > 0 {
        e.u32(items);
        e.fixed(&e2.buf);
        w.write_record(RecordKind::Meta, &e.buf)?;
    }
    w.end.entries = tree.dirents.len() as u64;
    w.end.inodes = tree.inodes.len() as u64;
    Ok(())
}

/// Decodes one metadata record payload, of a stream whose items have the
/// fields `form` says, into the builder.
pub fn decode_meta(builder: &mut TreeBuilder, raw: &[u8], form: ItemForm) -> Result<u64> {
    let mut d = Dec::new(raw, "metadata record");
    let n = d.count(1)?;
    for _ in 0..n {
        builder.decode_item(&mut d, form)?;
    }
    d.finish()?;
    Ok(n as u64)
}

/// Everything before the data: the new snapshot's metadata and its image.
pub struct Front {
    /// Metadata of the snapshot the stream brings a target to.
    pub tree: Tree,
    /// Carried and deallocated VBNs.
    pub image: Image,
    /// The carried VBNs, as runs (a stream's numbers are untrusted: no
    /// dense structure is ever indexed by them).
    pub carried: RunSet,
    /// Metadata items read.
    pub entries: u64,
}

/// The VBNs a tree's extents use.
pub fn tree_vbns(tree: &Tree) -> RunSet {
    RunSet::from_runs(
        tree.inodes
            .iter()
            .flat_map(|i| i.extents.iter().map(|x| (x.vbn, x.count))),
    )
}

/// Reads the metadata and image sections.
pub fn read_front(r: &mut impl Records) -> Result<Front> {
    let mut b = TreeBuilder::new(r.header().block_size as u64);
    let form = super::header::item_form(r.header().format_version);
    let mut entries = 0;
    loop {
        let rec = r
            .next_record()?
            .ok_or_else(|| anyhow!("{}: stream ended before its data", r.name()))?;
        let at = |e: anyhow::Error| rec.error_in(r.name(), e);
        match rec.kind {
            RecordKind::Meta => entries += decode_meta(&mut b, &rec.raw, form).map_err(at)?,
            RecordKind::Image => {
                let tree = b.finish().map_err(at)?;
                if entries != r.header().entries {
                    return Err(at(anyhow!(
                        "metadata holds {entries} entries, the header says {}",
                        r.header().entries
                    )));
                }
                let image = Image::decode(&rec.raw).map_err(at)?;
                let carried = RunSet::from_runs(image.carried.iter().map(|r| (r.vbn, r.count)));
                let used = tree_vbns(&tree);
                if !carried.is_subset_of(&used) {
                    return Err(at(anyhow!("image carries VBNs the metadata does not use")));
                }
                if r.header().full && carried != used {
                    return Err(at(anyhow!("a full image must carry every block")));
                }
                let dealloc = RunSet::from_runs(image.dealloc.iter().map(|r| (r.vbn, r.count)));
                if dealloc
                    .runs()
                    .iter()
                    .any(|&(v, n)| used.split(v, n).iter().any(|p| p.2))
                {
                    return Err(at(anyhow!(
                        "image deallocates VBNs the metadata still uses"
                    )));
                }
                return Ok(Front {
                    tree,
                    image,
                    carried,
                    entries,
                });
            }
            _ => return Err(at(anyhow!("no image record before the data section"))),
        }
    }
}
