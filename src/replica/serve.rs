//! `snapdump serve`: the receiving end of a replication, on stdin/stdout.
//!
//! The destination says what it holds (hello), receives the stream into
//! an incoming file next to what it protects, syncs it and says so, and
//! applies it only when the source says commit — with the volume's commit
//! or the directory target's checked apply, so it is at its old snapshot
//! or its new one, never between. A cut transfer stays in the incoming
//! file; the next hello offers it, with chunk digests, for resuming.

use super::early::Early;
use super::protocol::{
    chunk_digest, Ack, Action, Channel, Decision, End, Failure, Followed, Frame, Hello, Incoming,
    Kind, Received, Snap, CHUNK, PROTOCOL_VERSION,
};
use crate::lock::Wait;
use crate::media::Input;
use crate::report::Report;
use crate::stream::reader::Digest;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// What receives.
#[derive(Clone, Debug)]
pub enum Destination {
    /// A volume file (created on first use).
    Volume(PathBuf),
    /// A restore target directory.
    Target(PathBuf),
}

impl Destination {
    /// Where a transfer is received before it is applied.
    fn incoming(&self) -> PathBuf {
        match self {
            Destination::Volume(p) => {
                let dir = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                dir.join(format!(
                    ".{}.snapdump-incoming",
                    name.unwrap_or_else(|| "volume".into())
                ))
            }
            Destination::Target(t) => t.join(crate::target::state::STATE_DIR).join("incoming"),
        }
    }

    fn complete_marker(&self) -> PathBuf {
        let mut p = self.incoming().into_os_string();
        p.push(".complete");
        p.into()
    }

    fn path(&self) -> &Path {
        match self {
            Destination::Volume(p) | Destination::Target(p) => p,
        }
    }
}

/// Runs the destination side over stdin/stdout. A failure the source was
/// told about returns `Ok(false)` (the source prints it); one that could
/// not be delivered is the error.
pub fn serve(dest: &Destination, wait: Wait, inplace: bool, report: &Report) -> Result<bool> {
    let stdin: Box<dyn Read + Send> = Box::new(std::io::stdin());
    let stdout: Box<dyn Write + Send> = Box::new(std::io::BufWriter::with_capacity(
        1 << 16,
        std::io::stdout(),
    ));
    let mut ch = Channel::new(stdin, stdout, "the replication source");
    match serve_on(dest, &mut ch, wait, inplace, report) {
        Ok(()) => Ok(true),
        // The source gave up and said why; it prints that itself.
        Err(e) if e.downcast_ref::<super::protocol::PeerFailure>().is_some() => Ok(false),
        Err(e) => {
            let told = ch.send(
                Kind::Failure,
                &Failure {
                    message: format!("{e:#}"),
                },
            );
            match told {
                Ok(()) => Ok(false),
                Err(_) => Err(e),
            }
        }
    }
}

fn serve_on(
    dest: &Destination,
    ch: &mut Channel,
    wait: Wait,
    inplace: bool,
    report: &Report,
) -> Result<()> {
    // One receiver per destination at a time: the destination's own lock
    // is taken by the apply; this one covers the incoming file.
    let lock_path = {
        let mut p = dest.incoming().into_os_string();
        p.push(".lock");
        PathBuf::from(p)
    };
    if let Destination::Target(t) = dest {
        refuse_foreign_directory(t)?;
        std::fs::create_dir_all(t.join(crate::target::state::STATE_DIR))
            .with_context(|| format!("cannot create restore target {}", t.display()))?;
    }
    let _lock = crate::lock::acquire(
        &lock_path,
        &format!("replication into {}", dest.path().display()),
        wait,
    )?;
    if let Destination::Target(t) = dest {
        // The old tree an increment killed after its swap left beside.
        let paths = crate::target::state::StatePaths::new(t);
        if !crate::target::pending::Pending::exists(&paths) {
            let _lock = paths.lock(t, wait)?;
            crate::target::apply::settle_beside(t, &paths, report)?;
        }
        // A full copy staged beside the target by a run that was killed:
        // before the swap it is partial, after it the old tree; either
        // way not wanted.
        if let Ok(staging) = staging_beside(t) {
            if staging.exists() {
                std::fs::remove_dir_all(&staging).with_context(|| {
                    format!(
                        "cannot remove {}, left by an earlier full copy",
                        staging.display()
                    )
                })?;
            }
        }
    }
    // A volume stays open (shared) from the hello to the apply: its
    // metadata is decoded once.
    let (hello, held) = hello(dest)?;
    ch.send(Kind::Hello, &hello)?;
    let decision: Decision = ch.expect(Kind::Decision)?;
    let snap = match decision.action {
        Action::Current | Action::Conflict => return Ok(()),
        Action::Commit => {
            if !dest.complete_marker().exists() {
                bail!("the source asked to apply a transfer that is not here completely; run replicate again");
            }
            ch.expect::<serde_json::Value>(Kind::Commit)?;
            apply(dest, held, inplace, report)
        }
        Action::Full | Action::Increment | Action::Resume => std::thread::scope(|s| {
            // The stream is applied while it arrives, up to its commit.
            let mut held = held;
            let mut early = Head::None;
            let incoming = dest.incoming();
            receive(dest, ch, &mut |tap| match tap {
                Tap::Start(at) => {
                    early = match (dest, held.take()) {
                        (Destination::Volume(_), Some(v)) => {
                            Head::Volume(super::early::place(s, v, incoming.clone(), at))
                        }
                        (Destination::Target(t), _) => Head::Target(super::early::stage(
                            s,
                            t,
                            inplace,
                            incoming.clone(),
                            at,
                            report,
                        )),
                        _ => Head::None,
                    }
                }
                Tap::Data(b) => early.push(b),
                Tap::End => early.end(),
            })?;
            ch.expect::<serde_json::Value>(Kind::Commit)?;
            Ok::<_, anyhow::Error>(match early {
                Head::Volume(e) => match e.finish() {
                    Some((vol, prepared)) => commit_early(dest, vol, prepared, report),
                    None => apply(dest, held, inplace, report),
                },
                Head::Target(e) => match e.finish() {
                    Some(staged) => {
                        crate::failpoint::hit("serve-before-early-commit");
                        let opts = super::early::options(dest.path(), &incoming, inplace)?;
                        staged.finish(&opts, report).map(|s| s.snapshot)
                    }
                    None => apply(dest, None, inplace, report),
                },
                Head::None => apply(dest, held, inplace, report),
            })
        })?,
    };
    // Whatever the apply did, the incoming transfer is used up: a stream
    // that would not apply is not offered again.
    let _ = std::fs::remove_file(dest.complete_marker());
    let _ = std::fs::remove_file(dest.incoming());
    let snap = snap?;
    crate::failpoint::hit("serve-before-ack");
    ch.send(
        Kind::Ack,
        &Ack {
            snapshot: Snap::of(&snap),
        },
    )?;
    Ok(())
}

/// A directory that holds files but no replica is somebody else's: refused
/// before anything is written into it (not even snapdump's state).
fn refuse_foreign_directory(t: &Path) -> Result<()> {
    let state = t.join(crate::target::state::STATE_DIR);
    // Ours: a replica, a held transfer, or a full copy that did not finish
    // (a full file system, a kill), which the next full copy replaces.
    if state.join("state").exists()
        || state.join("incoming").exists()
        || state.join("incomplete").exists()
    {
        return Ok(());
    }
    let occupied = match std::fs::read_dir(t) {
        Ok(mut d) => d.any(|e| {
            e.map(|e| e.file_name() != crate::target::state::STATE_DIR)
                .unwrap_or(true)
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", t.display())),
    };
    if occupied {
        bail!(
            "{} holds files but no replica; replicate into an empty or new directory",
            t.display()
        );
    }
    Ok(())
}

/// What the destination holds, and a cut transfer if one is here; a
/// volume destination is returned open.
fn hello(dest: &Destination) -> Result<(Hello, Option<crate::volume::Volume>)> {
    let (replica_id, follows, held) = match dest {
        Destination::Volume(p) => {
            let (id, follows, vol) = volume_hello(p)?;
            (id, follows, Some(vol))
        }
        Destination::Target(t) => {
            let (id, follows) = target_hello(t)?;
            (id, follows, None)
        }
    };
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        replica_id,
        kind: match dest {
            Destination::Volume(_) => "volume",
            Destination::Target(_) => "target",
        }
        .to_string(),
        path: dest.path().display().to_string(),
        incoming: incoming(dest).filter(|inc| {
            // Applied already (killed before the held transfer was
            // removed): not offered again.
            let applied = follows
                .iter()
                .any(|f| f.snapshots.iter().any(|s| s.uuid == inc.snapshot.uuid));
            if applied {
                let _ = std::fs::remove_file(dest.complete_marker());
                let _ = std::fs::remove_file(dest.incoming());
            }
            !applied
        }),
        follows,
    };
    Ok((hello, held))
}

fn volume_hello(path: &Path) -> Result<(String, Vec<Followed>, crate::volume::Volume)> {
    if !path.exists() {
        crate::volume::store::create(
            path,
            &crate::volume::store::CreateOptions {
                block_size: crate::dump::DEFAULT_BLOCK_SIZE,
                compact: false,
                max_bytes: 0,
                uuid: None,
            },
        )
        .with_context(|| format!("cannot create volume {}", path.display()))?;
    }
    let vol = crate::volume::Volume::open(path, crate::volume::store::Access::Read, Wait::Yes)?;
    let follows = vol
        .state
        .sources
        .iter()
        .map(|e| {
            let mut snaps: Vec<Snap> = vol
                .state
                .snapshots
                .iter()
                .filter(|s| s.source == e.uuid && s.snap.uuid != e.latest.uuid)
                .map(|s| Snap::of(&s.snap))
                .collect();
            // The newest master is the one the relocation map describes,
            // the only base an increment may have here.
            snaps.push(Snap::of(&e.latest));
            Followed {
                source_uuid: crate::ids::hex(&e.uuid),
                source_path: String::from_utf8_lossy(&e.path).into_owned(),
                snapshots: snaps,
            }
        })
        .collect();
    Ok((crate::ids::hex(&vol.sb.uuid), follows, vol))
}

fn target_hello(target: &Path) -> Result<(String, Vec<Followed>)> {
    let paths = crate::target::state::StatePaths::new(target);
    let id_file = paths.dir.join("replica-id");
    let id = match std::fs::read_to_string(&id_file) {
        Ok(s) if super::protocol::uuid16(s.trim()).is_ok() => s.trim().to_string(),
        _ => {
            let id = crate::ids::hex(&crate::ids::random_id());
            crate::atomic::replace_file(&id_file, id.as_bytes())?;
            id
        }
    };
    let follows = match paths.load()? {
        Some(st) => vec![Followed {
            source_uuid: crate::ids::hex(&st.source_uuid),
            source_path: String::new(),
            snapshots: vec![Snap::of(&st.snapshot)],
        }],
        None => Vec::new(),
    };
    Ok((id, follows))
}

/// Chunk digests a hello offers at most (1 TiB of a held transfer; about
/// 35 MiB of JSON, within a frame).
const MAX_OFFERED_CHUNKS: usize = 1 << 20;

/// The cut (or complete but unapplied) transfer held here, if its header
/// can be read; anything else is discarded.
fn incoming(dest: &Destination) -> Option<Incoming> {
    let path = dest.incoming();
    let len = std::fs::metadata(&path).ok()?.len();
    let header = read_header(&path).ok();
    let Some(h) = header else {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(dest.complete_marker());
        return None;
    };
    let mut f = std::fs::File::open(&path).ok()?;
    let mut chunks = Vec::new();
    let mut buf = vec![0u8; CHUNK as usize];
    loop {
        let mut got = 0;
        while got < buf.len() {
            match f.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(_) => return None,
            }
        }
        if got == 0 {
            break;
        }
        chunks.push(chunk_digest(&buf[..got]));
        if got < buf.len() || chunks.len() >= MAX_OFFERED_CHUNKS {
            // Past the digests offered the source sends everything again:
            // the hello stays within a frame (and its reading bounded).
            break;
        }
    }
    Some(Incoming {
        source_uuid: crate::ids::hex(&h.source_uuid),
        snapshot: Snap::of(&h.snapshot),
        base: h.base.as_ref().map(Snap::of),
        stream_id: crate::ids::hex(&h.stream_id),
        bytes: len,
        complete: dest.complete_marker().exists(),
        chunks,
    })
}

/// What `receive` tells its tap: where the data frames start, each
/// frame's bytes, and the end of a complete stream.
enum Tap {
    Start(u64),
    Data(Vec<u8>),
    End,
}

/// The head start a stream's apply has while it arrives.
enum Head<'scope> {
    None,
    Volume(Early<'scope, (crate::volume::Volume, crate::volume::receive::Prepared)>),
    Target(Early<'scope, crate::target::apply::Staged>),
}

impl Head<'_> {
    fn push(&mut self, b: Vec<u8>) {
        match self {
            Head::None => {}
            Head::Volume(e) => e.push(b),
            Head::Target(e) => e.push(b),
        }
    }
    fn end(&mut self) {
        match self {
            Head::None => {}
            Head::Volume(e) => e.end(),
            Head::Target(e) => e.end(),
        }
    }
}

/// Commits a stream placed early; if the volume changed since it was
/// placed (another writer committed), the stream is applied from the
/// incoming file instead.
fn commit_early(
    dest: &Destination,
    vol: crate::volume::Volume,
    prepared: crate::volume::receive::Prepared,
    report: &Report,
) -> Result<crate::stream::header::SnapshotRef> {
    let generation = vol.sb.generation;
    let mut vol = vol.reopen_for_write(Wait::Yes)?;
    if vol.sb.generation != generation {
        drop(vol);
        return apply(dest, None, false, report);
    }
    crate::failpoint::hit("serve-before-early-commit");
    match crate::volume::receive::commit_prepared(&mut vol, prepared) {
        Ok(r) => Ok(r.snapshot),
        Err(e) => {
            vol.trim_to_committed();
            Err(e)
        }
    }
}

/// Receives the stream into the incoming file, synced, and says so.
fn receive(dest: &Destination, ch: &mut Channel, tap: &mut dyn FnMut(Tap)) -> Result<()> {
    let path = dest.incoming();
    let _ = std::fs::remove_file(dest.complete_marker());
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let held = f.metadata()?.len();
    let mut pos: Option<u64> = None;
    let mut since_hit = 0u64;
    loop {
        match ch.recv()? {
            Some(Frame::Data(at, bytes)) => {
                match pos {
                    None => {
                        if at > held {
                            bail!(
                                "the source resumed at byte {at}, past the {held} bytes held here"
                            );
                        }
                        f.set_len(at)?;
                        f.seek(std::io::SeekFrom::Start(at))?;
                        tap(Tap::Start(at));
                    }
                    Some(p) if p != at => {
                        bail!("the source sent bytes at {at} where {p} was expected")
                    }
                    _ => {}
                }
                f.write_all(&bytes).with_context(|| {
                    format!("cannot write {} (is the file system full?)", path.display())
                })?;
                let n = bytes.len() as u64;
                // The frame's buffer goes on to the tap: no copy.
                tap(Tap::Data(bytes));
                pos = Some(at + n);
                since_hit += n;
                if since_hit >= 1 << 20 {
                    since_hit = 0;
                    crate::failpoint::hit("serve-data");
                }
            }
            Some(Frame::Message(Kind::End, body)) => {
                let end: End = serde_json::from_slice(&body)?;
                let have = match pos {
                    Some(p) => p,
                    None => held,
                };
                if have != end.bytes {
                    bail!(
                        "the stream is {} bytes but {have} are here; run replicate again",
                        end.bytes
                    );
                }
                f.set_len(have)?;
                f.sync_all()
                    .with_context(|| format!("cannot sync {}", path.display()))?;
                crate::atomic::replace_file(&dest.complete_marker(), b"")?;
                tap(Tap::End);
                ch.send(Kind::Received, &Received { bytes: have })?;
                return Ok(());
            }
            Some(Frame::Message(Kind::Failure, body)) => {
                let _ = f.sync_all();
                let m: Failure = serde_json::from_slice(&body).unwrap_or(Failure {
                    message: String::from_utf8_lossy(&body).into_owned(),
                });
                return Err(super::protocol::PeerFailure(format!(
                    "the source gave up: {}",
                    m.message
                ))
                .into());
            }
            Some(Frame::Message(k, _)) => bail!("the source sent {k:?} inside the stream"),
            None => {
                let _ = f.sync_all();
                bail!("the source closed the connection after byte {}; what arrived is kept for the next replicate", pos.unwrap_or(held));
            }
        }
    }
}

/// Applies the complete incoming stream (into `held`, the volume the
/// hello read, when it is still current); returns the snapshot now held.
fn apply(
    dest: &Destination,
    held: Option<crate::volume::Volume>,
    inplace: bool,
    report: &Report,
) -> Result<crate::stream::header::SnapshotRef> {
    let path = dest.incoming();
    let input = Input::plain(&path.to_string_lossy())?;
    match dest {
        Destination::Volume(v) => {
            let vol = match fit_empty_volume(v, held, read_header(&path)?.block_size)? {
                Some(vol) => vol.reopen_for_write(Wait::Yes)?,
                None => {
                    crate::volume::Volume::open(v, crate::volume::store::Access::Write, Wait::Yes)?
                }
            };
            let s = crate::volume::receive::receive_into(
                vol,
                &crate::volume::receive::ReceiveOptions {
                    inputs: vec![input],
                    volume: v.clone(),
                    wait: Wait::Yes,
                    digest: Digest::Check,
                },
                report,
            )?;
            s.received
                .last()
                .map(|r| r.snapshot.clone())
                .ok_or_else(|| anyhow!("the transfer held no stream"))
        }
        Destination::Target(t) => {
            let h = read_header(&path)?;
            // A full copy replaces a tree only as a whole: it is restored
            // beside the target and swapped in; into a directory that holds
            // nothing but snapdump's own state it goes directly.
            let incomplete = crate::target::state::StatePaths::new(t).incomplete();
            let force = if h.full {
                let others = std::fs::read_dir(t)?
                    .filter_map(|e| e.ok())
                    .any(|e| e.file_name() != crate::target::state::STATE_DIR);
                // An unfinished full copy of ours holds nothing to keep: it
                // is replaced in place.
                if others && !incomplete.exists() {
                    return full_beside(t, input, report);
                }
                if others {
                    clear_unfinished(t)?;
                }
                true
            } else {
                false
            };
            let s = crate::target::full::restore(
                &crate::target::summary::RestoreOptions {
                    input,
                    target: t.clone(),
                    force,
                    digest: Digest::Check,
                    wait: Wait::Yes,
                    restored_before: None,
                    inplace,
                },
                report,
            )
            .map_err(|e| {
                if h.full && incomplete.exists() {
                    // restore's advice (--force) is not replicate's.
                    let cause = e.root_cause().to_string();
                    let cause = cause.split("; the target ").next().unwrap_or_default();
                    anyhow!(
                        "the full copy did not complete: {cause}; run replicate again, it starts the full copy over"
                    )
                } else {
                    e
                }
            })?;
            s.last()
                .map(|r| r.snapshot.clone())
                .ok_or_else(|| anyhow!("the transfer held no stream"))
        }
    }
}

/// Removes what an unfinished full copy left in target `t` (everything
/// but the state directory), so the next one starts from an empty tree.
fn clear_unfinished(t: &Path) -> Result<()> {
    for e in std::fs::read_dir(t).with_context(|| format!("cannot read {}", t.display()))? {
        let e = e?;
        if e.file_name() == crate::target::state::STATE_DIR {
            continue;
        }
        let p = e.path();
        let r = if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.with_context(|| {
            format!(
                "cannot remove {}, left by an unfinished full copy",
                p.display()
            )
        })?;
    }
    Ok(())
}

/// Where a full copy for target `t` is staged: `.NAME.snapdump-full`
/// beside it (same file system, so the two can be swapped).
fn staging_beside(t: &Path) -> Result<PathBuf> {
    let real = std::fs::canonicalize(t)
        .with_context(|| format!("cannot access restore target {}", t.display()))?;
    match (real.parent(), real.file_name()) {
        (Some(parent), Some(name)) => {
            Ok(parent.join(format!(".{}.snapdump-full", name.to_string_lossy())))
        }
        _ => bail!(
            "{} has no parent directory to stage a full copy in",
            t.display()
        ),
    }
}

/// A full copy into a target that holds a tree: restored into a staging
/// directory beside it, which takes over the replica's id, then swapped
/// with the target in one atomic rename (RENAME_EXCHANGE), after which the
/// old tree is removed. A crash leaves the old tree or the new one at the
/// target, and the staging directory, which the next serve removes.
fn full_beside(
    t: &Path,
    input: Input,
    report: &Report,
) -> Result<crate::stream::header::SnapshotRef> {
    let staging = staging_beside(t)?;
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging).with_context(|| {
        format!(
            "cannot create {} to stage the full copy in (is the directory above {} writable?)",
            staging.display(),
            t.display()
        )
    })?;
    let fail = |e: anyhow::Error| {
        let _ = std::fs::remove_dir_all(&staging);
        e
    };
    let s = crate::target::full::restore(
        &crate::target::summary::RestoreOptions {
            input,
            target: staging.clone(),
            force: false,
            digest: Digest::Check,
            wait: Wait::Yes,
            restored_before: None,
            inplace: false,
        },
        report,
    )
    .map_err(fail)?;
    let state = crate::target::state::STATE_DIR;
    let id = std::fs::read(t.join(state).join("replica-id")).map_err(|e| fail(e.into()))?;
    crate::atomic::replace_file(&staging.join(state).join("replica-id"), &id).map_err(fail)?;
    // Held across the swap: the lock file the target has afterwards.
    let mut lock = staging.join(state).join("incoming");
    lock.as_mut_os_string().push(".lock");
    let _lock = crate::lock::acquire(&lock, "replication", Wait::No).map_err(fail)?;
    crate::failpoint::hit("serve-before-swap");
    crate::fsx::exchange(&staging, t).map_err(|e| {
        fail(anyhow!(
            "cannot swap the full copy in for {}: {e} (the file system may not support RENAME_EXCHANGE); replicate into a new directory",
            t.display()
        ))
    })?;
    if let Some(parent) = staging.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", parent.display()))?;
    }
    crate::failpoint::hit("serve-after-swap");
    if let Err(e) = std::fs::remove_dir_all(&staging) {
        report.warn(
            staging.as_os_str().as_encoded_bytes(),
            format!("the replaced tree could not be removed ({e}); the next replicate removes it"),
        );
    }
    s.last()
        .map(|r| r.snapshot.clone())
        .ok_or_else(|| anyhow!("the transfer held no stream"))
}

/// A volume that holds nothing yet (as the hello created it) takes the
/// first stream's block size when its own cannot hold that stream's
/// blocks: it is created again, empty, under the same id, so the source's
/// record of this replica stays true. Returns `held` unless it was
/// replaced.
fn fit_empty_volume(
    path: &Path,
    held: Option<crate::volume::Volume>,
    stream_bs: u32,
) -> Result<Option<crate::volume::Volume>> {
    use crate::volume::store::{create, Access, CreateOptions, Volume};
    let (uuid, compact, max_bytes) = {
        let v = match held {
            Some(v) => v,
            None => Volume::open(path, Access::Read, Wait::Yes)?,
        };
        let bs = v.sb.block_size;
        let fits = stream_bs >= bs && stream_bs % bs == 0;
        if fits || !v.state.sources.is_empty() || !v.state.snapshots.is_empty() {
            return Ok(Some(v));
        }
        (
            v.sb.uuid,
            v.compact(),
            v.sb.max_blocks * v.sb.block_size as u64,
        )
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".snapdump-new");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    create(
        &tmp,
        &CreateOptions {
            block_size: stream_bs,
            compact,
            max_bytes,
            uuid: Some(uuid),
        },
    )?;
    crate::atomic::rename_durably(&tmp, path)?;
    Ok(None)
}

/// The header of the stream in `path`.
fn read_header(path: &Path) -> Result<crate::stream::header::StreamHeader> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let r = crate::stream::reader::StreamReader::open(
        Box::new(std::io::BufReader::new(f)),
        &path.display().to_string(),
        Digest::Skip,
    )?;
    Ok(r.header.clone())
}
