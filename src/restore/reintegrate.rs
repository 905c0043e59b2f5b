//! Reintegration: the newest snapshot of an incremental mirror as a
//! synthetic full, from its base (read once, in order: a tape is read
//! forward once) and the blocks the mirror holds. `mirror reintegrate`
//! writes it to a medium; `restore -r --mirror` restores it into a
//! directory through an in-process pipe, so every block goes through the
//! same checks as any stream's.

use super::chain::StreamSet;
use super::coalesce::pass;
use crate::media::output::Output;
use crate::media::Input;
use crate::mirror::Mirror;
use crate::report::Report;
use crate::stream::front::{tree_vbns, write_front};
use crate::stream::header::{ImageHeader, StreamHeader};
use crate::stream::payload::{Image, VbnRun};
use crate::stream::place::Placer;
use crate::stream::reader::Digest;
use crate::stream::records::{write_records, RecordBatch};
use crate::stream::writer::StreamWriter;
use crate::target::summary::{RestoreOptions, RestoreSummary};
use anyhow::{anyhow, bail, Result};
use std::io::Write;

/// Writes the synthetic full of `m`'s newest snapshot from `base` to
/// `out`; returns the stream's bytes.
pub fn write(
    m: &Mirror,
    base: &Input,
    out: Box<dyn Write + Send>,
    compression: i32,
    label: Option<&Output>,
) -> Result<u64> {
    let set = base_of(m, std::slice::from_ref(base))?.set;
    write_from(m, set, out, compression, label)
}

/// As [`write`], from the base already opened and checked (`base_of`).
fn write_from(
    m: &Mirror,
    mut set: StreamSet,
    out: Box<dyn Write + Send>,
    compression: i32,
    label: Option<&Output>,
) -> Result<u64> {
    let s = &m.state;
    let link = &set.links[0];
    let bs = s.block_size as u64;
    let tree = &s.tree;
    let vbns = tree_vbns(tree);
    let held = s.held_vbns();
    let from_base = vbns.minus(&held);
    if !from_base.is_subset_of(&link.front.carried) {
        bail!(
            "{}: the base lacks blocks the mirror's snapshot {} takes from it; the mirror and the base do not belong together",
            link.name,
            s.newest.id
        );
    }
    let header = StreamHeader {
        hostname: s.hostname.clone(),
        ..StreamHeader::new(ImageHeader {
            source_uuid: s.source_uuid,
            source_path: s.source_path.clone(),
            snapshot: s.newest.clone(),
            base: None,
            block_size: s.block_size,
            compression_level: compression,
            entries: tree.dirents.len() as u64,
            stream_id: crate::ids::random_id(),
        })
    };
    if let Some(o) = label {
        o.set_label(header.tape_label());
    }
    let image = Image {
        carried: vbns
            .runs()
            .iter()
            .map(|&(vbn, count)| VbnRun { vbn, count })
            .collect(),
        dealloc: Vec::new(),
    };
    let placer = Placer::new(tree);
    let mut w = StreamWriter::new(out, compression, bs as u32)?;
    write_front(&mut w, &header, tree, &image)?;
    let ((), w, _) = write_records(
        w,
        compression,
        bs,
        crate::stream::records::Sums::Skip,
        |send, pool| {
            let mut batch = RecordBatch::new(send, pool, bs);
            pass(
                &mut set.links[0],
                &from_base,
                &placer,
                tree,
                bs,
                Some(super::coalesce::Waste::DEFAULT),
                &mut batch,
            )?;
            let mut buf = Vec::new();
            for r in &s.held {
                for k in 0..r.count() {
                    let v = r.vbn + k;
                    if !m.block(v, &mut buf)? {
                        return Err(anyhow!("VBN {v} left the mirror while it was read"));
                    }
                    placer.put(v, 1, &buf, tree, bs, &mut batch)?;
                }
            }
            batch.flush()
        },
    )?;
    let (_, out, bytes) = w.finish()?;
    drop(out);
    Ok(bytes)
}

/// `mirror reintegrate DIR --base MEDIUM -o OUT`: the synthetic full to
/// any medium, committed only when whole.
pub fn reintegrate(
    m: &Mirror,
    base: &Input,
    specs: &[String],
    tape: &crate::media::tape::writer::TapeOptions,
    compression: i32,
) -> Result<u64> {
    let (output, out) = Output::open_medium(specs, tape)?;
    match write(m, base, out, compression, Some(&output)) {
        Ok(n) => {
            output.commit()?;
            Ok(n)
        }
        Err(e) => {
            output.abort();
            Err(e)
        }
    }
}

/// `restore -r -f BASE --mirror DIR`: the mirror's newest snapshot into
/// `opts.target` (which then holds it, so later increments apply).
pub fn restore(
    m: &Mirror,
    base: &Input,
    opts: &RestoreOptions,
    report: &Report,
) -> Result<RestoreSummary> {
    let (reader, writer) = crate::fsx::pipe()?;
    use std::os::fd::AsRawFd;
    let spec = format!("/dev/fd/{}", reader.as_raw_fd());
    let input = crate::media::group_inputs(std::slice::from_ref(&spec), 1, None)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no input for the reintegrated stream"))?;
    let opts = RestoreOptions {
        input,
        target: opts.target.clone(),
        force: opts.force,
        digest: Digest::Skip,
        wait: opts.wait,
        restored_before: None,
        inplace: opts.inplace,
    };
    // The base is checked before the restore starts: a wrong one is refused
    // with its own message, nothing created.
    let set = base_of(m, std::slice::from_ref(base))?.set;
    // The restore runs beside (the opened base, which the producer
    // reads, stays on this thread); once it returns, the pipe's reading
    // end goes, so a producer writing to a restore that stopped gets EPIPE
    // rather than waiting on a full pipe.
    std::thread::scope(|scope| {
        let restorer = scope.spawn(move || {
            let r = crate::target::full::restore(&opts, report);
            drop(reader);
            r
        });
        let produced = write_from(m, set, Box::new(writer), 1, None);
        let restored = restorer
            .join()
            .map_err(|_| anyhow!("the restore thread panicked"))?;
        match (restored, produced) {
            (Ok(mut v), Ok(_)) => v.pop().ok_or_else(|| anyhow!("nothing was restored")),
            // The producer's error is the cause (the restore saw a cut
            // stream, and says what that left).
            (Err(r), Err(e)) => Err(anyhow!("{e:#}; {r:#}")),
            (Ok(_), Err(e)) => Err(e),
            (Err(e), Ok(_)) => Err(e),
        }
    })
}

/// `restore -x -f BASE --mirror DIR [PATH...]`: chosen files of the
/// mirror's newest snapshot. Blocks the mirror holds come from it; the
/// others from the base, and on a base in a file only the data records
/// that hold them are read (through its relocation table); on a tape or a
/// pipe the base is read in order until they have all arrived. Returns
/// (blocks, bytes, base stream bytes read).
pub fn extract(
    m: &Mirror,
    base: &Input,
    target: &std::path::Path,
    paths: &[String],
    force: bool,
    report: &Report,
) -> Result<(u64, u64, u64)> {
    use super::fetch::deliver;
    use crate::stream::payload::Segment;
    use crate::target::select::{cut, mark_paths, normalize};
    let s = &m.state;
    let mut set = base_of(m, std::slice::from_ref(base))?.set;
    let tree = &s.tree;
    let wanted: Vec<Vec<u8>> = paths.iter().map(|p| normalize(p)).collect();
    let (marks, missing) = mark_paths(tree, &wanted);
    for p in &missing {
        report.warn(p, format!("not in snapshot {} of the mirror", s.newest.id));
    }
    if !missing.is_empty() && missing.len() == wanted.len() {
        bail!(
            "none of the given paths is in snapshot {} of the mirror {}",
            s.newest.id,
            m.dir.display()
        );
    }
    let sel = cut(tree, &marks);
    crate::target::create::prepare_target(target, force)?;
    let link = &mut set.links[0];
    let n = crate::target::create::create_selection(&sel, target, force, report, |apply| {
        let (mut blocks, mut bytes) = (0u64, 0u64);
        let wants = from_mirror(m, sel.files(tree), |ino, offset, data| {
            let seg = Segment {
                ino,
                vbn: 0,
                offset,
                len: data.len() as u32,
            };
            blocks += 1;
            bytes += data.len() as u64;
            apply.write(&sel.tree, &seg, data)
        })?;
        blocks += deliver(link, wants, |w, off, data| {
            bytes += data.len() as u64;
            let seg = Segment {
                ino: w.ino,
                vbn: 0,
                offset: off,
                len: data.len() as u32,
            };
            apply.write(&sel.tree, &seg, data)
        })?;
        Ok((blocks, bytes))
    })?;
    Ok((n.0, n.1, set.bytes_read()))
}

/// The base of `m` among `inputs` (exactly one), opened for random access
/// where it is a file, as the one-stream chain a compare reads.
pub fn base_of(m: &Mirror, inputs: &[Input]) -> Result<super::chain::Chosen> {
    if inputs.len() != 1 {
        bail!("--mirror takes the mirror's base, one -f");
    }
    let mut set = StreamSet::open(inputs, Digest::Skip)?;
    let s = &m.state;
    if set.links[0].header.snapshot.uuid != s.base.uuid || !set.links[0].header.full {
        bail!(
            "{} holds {}, and the mirror {} is based on snapshot {} (read from {}): give the mirror's base",
            set.links[0].name,
            set.links[0].describe(),
            m.dir.display(),
            s.base.id,
            s.base_medium
        );
    }
    set.links[0].prepare()?;
    Ok(super::chain::Chosen {
        set,
        top: 0,
        chain: vec![0],
    })
}

/// Hands the blocks of `files` (output inode, inode of the mirror's tree)
/// that the mirror holds to `sink(ino, file offset, bytes)`, each checked
/// and cut at the file's size, and returns the pieces the base must give,
/// for [`super::fetch::deliver`]: what `restore -x` and `-C` share.
pub fn from_mirror<'a>(
    m: &Mirror,
    files: impl IntoIterator<Item = (u64, &'a crate::tree::Inode)>,
    mut sink: impl FnMut(u64, u64, &[u8]) -> Result<()>,
) -> Result<Vec<(u64, u64, super::fetch::Want)>> {
    let bs = m.state.block_size as u64;
    let held = m.state.held_vbns();
    let mut wants = Vec::new();
    let mut buf = Vec::new();
    for (ino, inode) in files {
        for x in &inode.extents {
            for (v, n, inside) in held.split(x.vbn, x.count) {
                let block = x.block + (v - x.vbn);
                if !inside {
                    let size = inode.size;
                    wants.push((v, n, super::fetch::Want { ino, block, size }));
                    continue;
                }
                for k in 0..n {
                    m.block(v + k, &mut buf)?;
                    let offset = (block + k) * bs;
                    let len = bs.min(inode.size.saturating_sub(offset)) as usize;
                    if len > 0 {
                        sink(ino, offset, &buf[..len])?;
                    }
                }
            }
        }
    }
    Ok(wants)
}
