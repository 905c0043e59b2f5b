//! The stream's front: header, metadata section and image section, written
//! once for every producer (tree dump, volume dump) and read back with every
//! consistency rule checked before any data is used (formats/stream.md).

use super::header::StreamHeader;
use super::payload::Image;
use super::reader::Records;
use super::record::RecordKind;
use super::record::MAX_PAYLOAD;
use super::writer::StreamWriter;
use super::META_RECORD_BYTES;
use crate::runs::RunSet;
use crate::tree::{ItemForm, Tree, TreeBuilder};
use crate::wire::{Dec, Enc};
use anyhow::{anyhow, bail, Result};

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
    // A record holds at most MAX_PAYLOAD bytes: its item count and items.
    let room = MAX_PAYLOAD as usize - 4;
    for i in 0..tree.dirents.len() {
        let before = e2.buf.len();
        tree.encode_item(i, &mut e2, form);
        let len = e2.buf.len() - before;
        if len > room {
            // One item no record can hold (a file of ~700,000 extents):
            // refuse the dump clearly rather than write a stream no reader
            // accepts.
            bail!(
                "the metadata of {} takes {} bytes ({} extents), more than a stream record holds ({} bytes); this version cannot dump it (defragmenting the file, or a level 0, shortens its extent list)",
                String::from_utf8_lossy(&tree.dirent_path(&tree.dirents[i])),
                len,
                tree.inode(tree.dirents[i].ino).extents.len(),
                room
            );
        }
        if e2.buf.len() > room {
            // The item would overfill this record: it starts the next one.
            let item = e2.buf.split_off(before);
            e.u32(items);
            e.fixed(&e2.buf);
            w.write_record(RecordKind::Meta, &e.buf)?;
            e = Enc::new();
            e2 = Enc::new();
            e2.buf = item;
            items = 0;
        }
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
    let mut b = TreeBuilder::with_capacity(r.header().block_size as u64, r.header().entries);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Attrs, Extent, Inode, Kind};

    fn tree_with(extents: &[u64]) -> Tree {
        let mut t = Tree::default();
        let root = t.push_inode(0, vec![], Inode::new(0, Kind::Dir, Attrs::default()));
        for (k, &n) in extents.iter().enumerate() {
            let mut f = Inode::new(0, Kind::File, Attrs::default());
            f.extents = (0..n)
                .map(|b| Extent {
                    block: 2 * b,
                    vbn: 2 * b + 1,
                    count: 1,
                })
                .collect();
            t.push_inode(root, format!("f{k}").into_bytes(), f);
        }
        t
    }

    /// The stream bytes `t`'s metadata takes (header and end included).
    fn write(t: &Tree) -> Result<u64> {
        let mut w = StreamWriter::new(Box::new(std::io::sink()), 0, 4096)?;
        write_metadata(&mut w, t)?;
        Ok(w.finish()?.2)
    }

    #[test]
    fn an_item_no_record_can_hold_is_a_clear_error_not_a_panic() {
        let e = write(&tree_with(&[800_000])).unwrap_err().to_string();
        assert!(
            e.contains("the metadata of f0") && e.contains("800000 extents"),
            "{e}"
        );
    }

    #[test]
    fn items_that_would_overfill_a_record_start_the_next() {
        // A small item, then one that fits a record alone but not with it.
        let bytes = write(&tree_with(&[8_000, 695_000])).unwrap();
        assert!(bytes > 16_800_000);
    }
}
