//! `snapdump run FILE`: does what the plan says is due — dump at the due
//! level, coalesce, prune — under one policy lock, re-planning after each
//! step, so that it is idempotent and safe to run every minute.
//!
//! Crash safety: a stream enters the catalog only once whole (the dump's
//! own commit); a synthetic full replaces the newest snapshot's stream in
//! the catalog before the increment it supersedes is deleted; pruned
//! snapshots leave the catalog (rows and planes, in one atomic commit)
//! before their streams are deleted. So a killed run leaves at worst
//! streams no catalog row names, which the next run's sweep deletes: a
//! stream of this source in the streams directory that the catalog does
//! not name is never needed.

use super::file::Policy;
use super::plan::{plan, Inputs, Plan};

use super::retain::Snap;
use crate::catalog::Catalog;
use crate::report::Report;
use crate::tree::Time;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What a run did.
#[derive(Serialize)]
pub struct RunSummary {
    /// Always "run".
    pub command: &'static str,
    /// "ok" or "warnings".
    pub status: &'static str,
    /// The policy file.
    pub policy: String,
    /// The clock the run used.
    pub at: String,
    /// The dump it made, if one was due.
    pub dumped: Option<Done>,
    /// Per replication destination: the snapshots received and deleted.
    pub replicated: Vec<Replicated>,
    /// Per mirror: what it took in.
    pub mirrored: Vec<Mirrored>,
    /// The synthetic full it wrote, if a trigger fired.
    pub coalesced: Option<Done>,
    /// Snapshots pruned (their catalog rows and streams).
    pub pruned: Vec<Done>,
    /// Streams a killed run left that no catalog row names, deleted.
    pub swept: Vec<String>,
    /// With streams on tape: cartridges that held a pruned dump and hold
    /// no kept one any more (free to erase and use again).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tapes_freed: Vec<String>,
    /// The plan after the run (nothing is due in it but what failed).
    pub plan: Plan,
}

/// What a run did to one replication destination.
#[derive(Serialize)]
pub struct Replicated {
    /// The volume.
    pub to: String,
    /// Snapshots received, in order.
    pub received: Vec<u64>,
    /// Snapshots its retention deleted.
    pub deleted: Vec<u64>,
    /// Why it failed, if it did (the run goes on; nothing is coalesced
    /// while a destination is behind, so its chain stays).
    pub error: Option<String>,
}

/// What a run did to one mirror.
#[derive(Serialize)]
pub struct Mirrored {
    /// The mirror's directory.
    pub dir: String,
    /// The full snapshot it was made on, when this run made it.
    pub created: Option<u64>,
    /// Snapshots added, in order.
    pub added: Vec<u64>,
    /// Why it could not follow, if it could not (the run goes on; its
    /// base and newest snapshot stay kept, and nothing is coalesced).
    pub error: Option<String>,
}

/// One snapshot a step made or removed.
#[derive(Serialize)]
pub struct Done {
    /// The snapshot.
    pub snapshot: u64,
    /// Its level.
    pub level: u8,
    /// The stream.
    pub stream: String,
    /// Its bytes.
    pub stream_bytes: u64,
    /// Why.
    pub why: String,
}

/// The catalog root a policy uses.
pub fn catalog_root(p: &Policy) -> PathBuf {
    p.catalog
        .clone()
        .unwrap_or_else(crate::catalog::default_root)
}

/// The snapshot table as the plan sees it (empty before the first dump).
pub fn snaps_of(p: &Policy) -> Result<(Vec<Snap>, Option<Catalog>)> {
    let Ok(source) = std::fs::canonicalize(&p.source) else {
        bail!(
            "{}: source {} is not there",
            p.path.display(),
            p.source.display()
        );
    };
    use std::os::unix::ffi::OsStrExt;
    let root = catalog_root(p);
    if !crate::catalog::source_dir(&root, source.as_os_str().as_bytes())
        .join("catalog")
        .exists()
    {
        return Ok((Vec::new(), None));
    }
    let c = Catalog::open(
        &root,
        source.as_os_str().as_bytes(),
        crate::dump::DEFAULT_BLOCK_SIZE,
    )?;
    Ok((table(&c, p)?, Some(c)))
}

/// The streams directory as the file system names it (symlinks, `.`,
/// `..` and doubled slashes resolved), so that whether a stream is the
/// policy's never depends on how a path was spelled; the literal path
/// while it does not exist.
pub fn streams_dir(p: &Policy) -> PathBuf {
    std::fs::canonicalize(&p.streams.dir).unwrap_or_else(|_| p.streams.dir.clone())
}

/// Whether `output` (a path as a catalog row names it) is a file directly
/// in `dir` (as [`streams_dir`] gives it), by what the path resolves to.
fn in_dir(dir: &Path, output: &str) -> bool {
    Path::new(output)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .is_some_and(|d| d == dir || std::fs::canonicalize(d).is_ok_and(|d| d == dir))
}

/// The rows the policy plans over: those whose stream is in its streams
/// directory `dir`. Everything else in the catalog (dumps by hand to other
/// files, to stdout or to tape, rows `snapdump replicate` made, another
/// policy's streams) is left to whoever made it: never a base of the
/// policy's dumps, never counted by its schedule or retention, never
/// pruned by it.
///
/// With streams on tape, the rows are those the tape index names (by
/// snapshot uuid), and a row's stream is its place on the tapes.
fn table(c: &Catalog, p: &Policy) -> Result<Vec<Snap>> {
    let dir = streams_dir(p);
    let index = match &p.streams.tape {
        Some(_) => Some(super::tape::read(&dir)?),
        None => None,
    };
    let held = match &p.streams.volume {
        Some(v) => Some(held_in_volume(v, &c.state.source_uuid)?),
        None => None,
    };
    Ok(c.state
        .snapshots
        .iter()
        .filter_map(|s| {
            let output = match (&index, &p.streams.tape) {
                (Some(index), Some(tape)) => {
                    let uuid = crate::ids::hex(&s.snap.uuid);
                    let e = index
                        .entries
                        .iter()
                        .find(|e| e.uuid == uuid && e.id == s.snap.id)?;
                    e.location(&tape.device)
                }
                _ if held.is_some() => {
                    let vol = p.streams.volume.as_ref().expect("held is the volume's");
                    let vid = held.as_ref().and_then(|h| h.ids.get(&s.snap.uuid))?;
                    if s.output != volume_label(vol) {
                        return None;
                    }
                    format!("{}@{vid}", vol.display())
                }
                _ if in_dir(&dir, &s.output) => s.output.clone(),
                _ => return None,
            };
            Some(Snap {
                id: s.snap.id,
                time: s.snap.time.sec,
                level: s.snap.level,
                base: if s.full { None } else { s.base },
                stream_bytes: s.stream_bytes,
                output,
            })
        })
        .collect())
}

/// What the catalog row of a snapshot in the policy's volume `vol` names
/// as its output (its stream is gone once the volume took it).
fn volume_label(vol: &Path) -> String {
    format!("volume {}", vol.display())
}

/// What volume `vol` holds of source `source`: each whole snapshot by
/// uuid with the volume's id of it (`VOL@ID`), the shadows apart (their
/// blocks may be reused, so they are not kept whole), and the snapshot
/// the volume continues from (an increment must be based on it, even
/// once it is deleted). Empty while the volume is not there (before the
/// first dump).
#[derive(Default)]
struct Held {
    ids: std::collections::HashMap<[u8; 16], u64>,
    shadows: std::collections::HashSet<[u8; 16]>,
    latest: Option<(u64, [u8; 16])>,
}

fn held_in_volume(vol: &Path, source: &[u8; 16]) -> Result<Held> {
    if !vol.exists() {
        return Ok(Held::default());
    }
    let v = crate::volume::Volume::open(
        vol,
        crate::volume::store::Access::Read,
        crate::lock::Wait::Yes,
    )?;
    let mine = || v.state.snapshots.iter().filter(|s| &s.source == source);
    Ok(Held {
        ids: mine()
            .filter(|s| !s.shadow)
            .map(|s| (s.snap.uuid, s.id))
            .collect(),
        shadows: mine().filter(|s| s.shadow).map(|s| s.snap.uuid).collect(),
        latest: v
            .state
            .sources
            .iter()
            .find(|e| &e.uuid == source)
            .map(|e| (e.latest.id, e.latest.uuid)),
    })
}

/// The stream a dump into the policy's volume goes through: a file in the
/// streams directory, from the dump's commit until the volume took it.
fn incoming_name(id: u64) -> String {
    format!("incoming.{id:06}.sdump")
}

fn is_incoming(dir: &Path, output: &str) -> bool {
    in_dir(dir, output)
        && Path::new(output)
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("incoming.") && n.ends_with(".sdump"))
}

/// Brings the policy's volume `vol` up to the catalog `cat` (locked by the
/// caller): each row whose stream is still on its way in (an incoming file
/// in the streams directory) is received into the volume, in id order, in
/// one commit each; then the rows name the volume instead, in one catalog
/// commit; then the incoming files no row names are deleted. Every step
/// can be cut by a kill and is done again, or found done, by the next
/// run: a stream the volume already holds (by snapshot uuid) is not
/// received twice.
fn settle_volume(p: &Policy, vol: &Path, cat: &mut Catalog, report: &Report) -> Result<()> {
    let dir = streams_dir(p);
    let label = volume_label(vol);
    let mut changed = false;
    // Rows whose stream never reached the volume and cannot: its file is
    // gone (a streams directory on a tmpfs, a reboot) or damaged.
    let mut lost: Vec<usize> = Vec::new();
    for k in 0..cat.state.snapshots.len() {
        let r = &cat.state.snapshots[k];
        if !is_incoming(&dir, &r.output) {
            continue;
        }
        let held = held_in_volume(vol, &cat.state.source_uuid)?;
        if held.ids.contains_key(&r.snap.uuid) || held.shadows.contains(&r.snap.uuid) {
            // Taken already; a run was killed before the row said so.
            cat.state.snapshots[k].output = label.clone();
            changed = true;
            continue;
        }
        if !Path::new(&r.output).exists() && vol.exists() {
            report.warn(
                r.output.as_bytes(),
                format!(
                    "snapshot {}'s stream is gone before the volume {} took it (was the streams directory emptied, or the file deleted?): the snapshot is in neither, so the catalog forgets it",
                    r.snap.id,
                    vol.display()
                ),
            );
            lost.push(k);
            continue;
        }
        if !Path::new(&r.output).exists() {
            continue; // whether the volume took it, the volume says when it is back
        }
        if !vol.exists() {
            may_make(&dir, "volume", vol)?;
            if let Some(parent) = vol.parent().filter(|d| !d.is_dir()) {
                bail!(
                    "the directory {} of the volume {} is not there (is its disk mounted?); make it, or change streams.volume",
                    parent.display(),
                    vol.display()
                );
            }
            crate::volume::store::create(
                vol,
                &crate::volume::store::CreateOptions {
                    block_size: cat.state.block_size,
                    compact: false,
                    max_bytes: 0,
                    uuid: None,
                },
            )?;
        }
        note_made(&dir, "volume", vol)?;
        let received = crate::volume::receive::receive(
            &crate::volume::receive::ReceiveOptions {
                inputs: vec![crate::media::Input::plain(&r.output)?],
                volume: vol.to_path_buf(),
                wait: crate::lock::Wait::Yes,
                digest: crate::stream::reader::Digest::Skip,
            },
            report,
        );
        if let Err(e) = received {
            // A damaged stream never goes in: said, kept aside, forgotten.
            // Anything else (a full disk) is tried again by the next run.
            let quiet = Report::quiet();
            let damage = crate::media::Input::plain(&r.output)
                .ok()
                .and_then(|input| crate::restore::verify::verify(&input, &quiet).err());
            let Some(d) = damage else {
                return Err(e).with_context(|| {
                    format!(
                        "snapshot {}'s stream {} could not go into the volume {} (it stays, and the next run tries again)",
                        r.snap.id,
                        r.output,
                        vol.display()
                    )
                });
            };
            let aside = format!("{}.damaged", r.output);
            std::fs::rename(&r.output, &aside)
                .with_context(|| format!("cannot rename {} to {aside}", r.output))?;
            report.warn(
                r.output.as_bytes(),
                format!(
                    "snapshot {}'s stream is damaged ({d:#}) and cannot go into the volume {}: it is kept as {aside}, and the catalog forgets the snapshot (the next dump is taken on the one before it, or is a level 0)",
                    r.snap.id,
                    vol.display()
                ),
            );
            lost.push(k);
            continue;
        }
        crate::failpoint::hit("policy-volume-received");
        cat.state.snapshots[k].output = label.clone();
        changed = true;
    }
    for &k in lost.iter().rev() {
        cat.state.snapshots.remove(k);
        cat.state.planes.remove(k);
        changed = true;
    }
    // Rows of the volume's that it no longer holds whole leave the
    // catalog: nothing is kept or built on what the volume lacks. A run
    // killed between a prune's deletions in the volume and its catalog
    // commit leaves such rows (the prune list names them); any other is a
    // snapshot deleted or made a shadow by hand, and is warned about. Only
    // while the volume is there: a missing one is a disk that did not
    // mount.
    if vol.exists() {
        let held = held_in_volume(vol, &cat.state.source_uuid)?;
        // A prune never deletes the newest snapshot, and the volume goes
        // on from it even when it is deleted by hand: a volume that
        // neither holds the catalog's newest nor continues from it is
        // another volume (another disk, a volume made anew, an old copy).
        if let Some(newest) = cat.state.snapshots.iter().rev().find(|r| r.output == label) {
            let u = newest.snap.uuid;
            if !held.ids.contains_key(&u)
                && !held.shadows.contains(&u)
                && held.latest.map(|l| l.1) != Some(u)
            {
                bail!(
                    "the volume {} does not hold snapshot {}, the newest the catalog has in it: it is another volume (another disk, or one made anew); nothing was changed. Put the right one back, or, if the old one is gone for good, give streams.volume a new path (a new volume starts there with a level 0)",
                    vol.display(),
                    newest.snap.id,
                );
            }
        }
        let pruning = read_list(&dir, VOLUME_PRUNE)?;
        let st = &mut cat.state;
        let mut k = 0;
        while k < st.snapshots.len() {
            let r = &st.snapshots[k];
            if r.output != label || held.ids.contains_key(&r.snap.uuid) {
                k += 1;
                continue;
            }
            let (id, uuid) = (r.snap.id, crate::ids::hex(&r.snap.uuid));
            if pruning.contains(&uuid) {
                crate::progress::note(&format!(
                    "snapshot {id} is no longer in the volume {} (a run pruning it was killed); the catalog forgets it too",
                    vol.display()
                ));
            } else if held.shadows.contains(&r.snap.uuid) {
                report.warn(
                    vol.as_os_str().as_encoded_bytes(),
                    format!("snapshot {id} was made a shadow in the volume (by hand): its blocks may be reused, so the policy no longer counts it as kept and the catalog forgets it"),
                );
            } else {
                report.warn(
                    vol.as_os_str().as_encoded_bytes(),
                    format!("snapshot {id} was deleted from the volume (by hand): it cannot be restored, so the policy no longer counts it as kept and the catalog forgets it"),
                );
            }
            st.snapshots.remove(k);
            st.planes.remove(k);
            changed = true;
        }
    }
    if changed {
        cat.commit()?;
        crate::failpoint::hit("policy-volume-settled");
    }
    if !read_list(&dir, VOLUME_PRUNE)?.is_empty() {
        write_list(&dir, VOLUME_PRUNE, &[])?;
    }
    let named: std::collections::HashSet<&str> = cat
        .state
        .snapshots
        .iter()
        .map(|r| r.output.as_str())
        .collect();
    for e in std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list streams directory {}", dir.display()))?
    {
        let path = e?.path().display().to_string();
        if is_incoming(&dir, &path) && !named.contains(path.as_str()) {
            remove(&path)?;
        }
    }
    Ok(())
}

/// The due dump `d`, into the policy's volume: dumped to an incoming
/// stream in the streams directory (the catalog takes it there), then
/// received into the volume and the stream deleted ([`settle_volume`]).
fn dump_to_volume(
    p: &Policy,
    vol: &Path,
    d: &super::plan::DumpDue,
    now: Time,
    wait: crate::lock::Wait,
    report: &Report,
) -> Result<Done> {
    let dir = streams_dir(p);
    claim_shared(p, "volume", vol)?;
    if !vol.exists() {
        // Refused before the dump, not after: a volume made before and
        // missing now is a disk that did not mount.
        may_make(&dir, "volume", vol)?;
        if let Some(parent) = vol.parent().filter(|d| !d.is_dir()) {
            bail!(
                "the directory {} of the volume {} is not there (is its disk mounted?); make it, or change streams.volume; nothing was dumped",
                parent.display(),
                vol.display()
            );
        }
    }
    let (_, cat) = snaps_of(p)?;
    let id = cat.as_ref().map(|c| c.state.next_snap_id).unwrap_or(1);
    let out = free_name(&dir, &incoming_name(id));
    let opts = crate::dump::DumpOptions {
        level: d.level,
        output: out.display().to_string(),
        volumes: Vec::new(),
        tape: tape_defaults(),
        catalog_root: catalog_root(p),
        compression: p.streams.compression,
        source: p.source.clone(),
        base: d.base,
        wait,
        resume: false,
        cross_mounts: false,
        rules: None,
        rules_changed: false,
        snapshot_time: Some(now),
        tracker: crate::dump::tracked::TrackerMode::Auto,
    };
    let s = crate::dump::dump(&opts, report).with_context(|| {
        format!(
            "the level {} dump for the volume {} failed (nothing of it was kept)",
            d.level,
            vol.display()
        )
    })?;
    crate::failpoint::hit("policy-dumped");
    let (_lock, mut cat) = locked_catalog(p, wait)?;
    settle_volume(p, vol, &mut cat, report)?;
    let vid = held_in_volume(vol, &cat.state.source_uuid)?
        .ids
        .get(&s.snapshot.uuid)
        .copied()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the volume {} lacks snapshot {} after receiving it",
                vol.display(),
                s.snapshot.id
            )
        })?;
    Ok(Done {
        snapshot: s.snapshot.id,
        level: s.snapshot.level,
        stream: format!("{}@{vid}", vol.display()),
        stream_bytes: s.stream_bytes,
        why: d.why.clone(),
    })
}

/// The stream of snapshot `s` (a row of [`table`]) to read: its file, or
/// its tape file on the policy's tape.
fn input_of(p: &Policy, s: &Snap) -> Result<crate::media::Input> {
    if let Some(v) = &p.streams.volume {
        bail!(
            "snapshot {} is in the volume {}, not in a stream",
            s.id,
            v.display()
        );
    }
    let Some(tape) = &p.streams.tape else {
        return crate::media::Input::plain(&s.output);
    };
    let index = super::tape::read(&streams_dir(p))?;
    let e = index
        .entries
        .iter()
        .find(|e| e.id == s.id)
        .ok_or_else(|| anyhow::anyhow!("snapshot {} is not in the tape index", s.id))?;
    let mut input = crate::media::Input::plain(&tape.device)?;
    input.file_number = e.file;
    input.new_volume = tape.new_volume.clone();
    Ok(input)
}

/// Free space of the file system holding `dir`, in per cent.
pub fn free_percent(dir: &Path) -> Option<f64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let total = st.blocks() as f64;
    (total > 0.0).then(|| st.blocks_available() as f64 * 100.0 / total)
}

/// Snapshots something outside the policy still needs, with why: the
/// newest master of each replica `snapdump replicate` serves from this
/// source (its next increment starts there), the snapshots `snapdump
/// pointer` names, and each mirror's base (its stream is the mirror's
/// base medium) and newest snapshot. When one of those records cannot be
/// read, nothing is pruned (the second value says why) until it is
/// repaired: pruning blind could delete what a replica or a mirror needs.
pub fn pinned(p: &Policy, source_uuid: Option<[u8; 16]>) -> (Vec<(u64, String)>, Option<String>) {
    let Ok(source) = std::fs::canonicalize(&p.source) else {
        return (Vec::new(), None);
    };
    use std::os::unix::ffi::OsStrExt;
    let dir = crate::catalog::source_dir(&catalog_root(p), source.as_os_str().as_bytes());
    let mut out = Vec::new();
    let mut hold = None;
    match crate::replica::registry::RegistryFile::new(&dir).load() {
        Ok(reg) => {
            out.extend(reg.replicas.iter().filter_map(|r| {
                r.newest.as_ref().map(|s| {
                    (
                        s.id,
                        format!(
                            "the newest master of replica {} ({})",
                            r.replica_id, r.destination
                        ),
                    )
                })
            }));
            out.extend(
                reg.pointers
                    .iter()
                    .map(|ptr| (ptr.snapshot.id, format!("named by pointer {}", ptr.name))),
            );
        }
        Err(e) => {
            hold = Some(format!(
                "nothing is pruned while the record of replicas cannot be read: {e:#}"
            ))
        }
    }
    for m in &p.mirror {
        match mirror_state(m) {
            Ok(None) => {}
            Ok(Some(st)) if source_uuid.is_some_and(|u| u != st.source_uuid) => {
                hold = Some(format!(
                    "nothing is pruned while mirror {} follows another source ({}); give it a directory of its own",
                    m.display(),
                    crate::names::escape(&st.source_path)
                ));
            }
            Ok(Some(st)) => {
                out.push((st.base.id, format!("the base of mirror {}", m.display())));
                out.push((
                    st.newest.id,
                    format!(
                        "the newest snapshot of mirror {} (its next increment starts there)",
                        m.display()
                    ),
                ));
            }
            Err(e) => {
                hold = Some(format!(
                    "nothing is pruned while mirror {} cannot be read: {e:#}",
                    m.display()
                ))
            }
        }
    }
    (out, hold)
}

/// A mirror's committed state (None before it is made). Read without the
/// mirror's lock: the state file is only ever replaced whole.
fn mirror_state(dir: &Path) -> Result<Option<crate::mirror::state::MirrorState>> {
    let path = dir.join("state");
    match std::fs::read(&path) {
        Ok(b) => crate::mirror::state::decode(&b)
            .map(Some)
            .with_context(|| format!("mirror {}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The plan over `snaps` at `now`, with what lives outside the policy
/// pinned (and all pruning held when that cannot be read).
fn plan_with_pins(p: &Policy, snaps: &[Snap], now: i64, cat: Option<&Catalog>) -> Plan {
    let source_uuid = cat.map(|c| c.state.source_uuid);
    let (mut pins, hold) = pinned(p, source_uuid);
    if let Some(c) = cat {
        pins.extend(bases_outside(c, snaps));
    }
    plan(
        p,
        &Inputs {
            snaps,
            now,
            free_percent: free_percent(&p.streams.dir),
            pinned: pins,
            hold,
            broken: broken_streams(p, snaps, source_uuid),
        },
    )
}

/// The policy's snapshots that an increment outside it is built on: a
/// dump by hand with the policy's catalog takes the newest snapshot as
/// its base, and pruning that would leave the hand dump's chain without
/// its start. Each such row pins the first of the policy's snapshots its
/// chain reaches (the rest of that chain is kept as any chain is).
fn bases_outside(c: &Catalog, snaps: &[Snap]) -> Vec<(u64, String)> {
    let ours: std::collections::HashSet<u64> = snaps.iter().map(|s| s.id).collect();
    let rows: std::collections::HashMap<u64, &crate::catalog::SnapshotInfo> =
        c.state.snapshots.iter().map(|r| (r.snap.id, r)).collect();
    let mut out = Vec::new();
    for r in c
        .state
        .snapshots
        .iter()
        .filter(|r| !ours.contains(&r.snap.id))
    {
        let mut at = Some(r);
        // (At most one step per row: a catalog whose bases go round in a
        // circle pins nothing rather than hanging.)
        let mut steps = 0;
        while let Some(row) = at.filter(|row| !row.full && steps <= rows.len()) {
            steps += 1;
            let Some(b) = row.base else { break };
            if ours.contains(&b) {
                out.push((
                    b,
                    format!(
                        "the base of snapshot {} (dumped to {}, outside the policy)",
                        r.snap.id, r.output
                    ),
                ));
                break;
            }
            at = rows.get(&b).copied();
        }
    }
    out
}

/// The snapshots whose stream is not as the catalog recorded it: missing,
/// of another length (cut short, or overwritten), or found damaged when a
/// run read it (recorded in the streams directory `dir`). A stream's every
/// byte is checked by `verify`; this costs one stat per stream and catches
/// a stream deleted or truncated by hand before anything is built on it.
pub fn broken(snaps: &[Snap], dir: &Path) -> Vec<(u64, String)> {
    let bad = damaged(dir);
    snaps
        .iter()
        .filter_map(|s| {
            let name = Path::new(&s.output)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(why) = bad.get(&name) {
                return Some((s.id, format!("{} is damaged ({why})", s.output)));
            }
            let what = match std::fs::metadata(&s.output) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    format!("{} is missing", s.output)
                }
                Err(e) => format!("{} cannot be read ({e})", s.output),
                Ok(m) if m.len() != s.stream_bytes => format!(
                    "{} is {} bytes, not the {} the catalog recorded (cut short or overwritten)",
                    s.output,
                    m.len(),
                    s.stream_bytes
                ),
                Ok(_) => return None,
            };
            Some((s.id, what))
        })
        .map(|(id, what)| (id, format!("snapshot {id}'s stream {what}")))
        .collect()
}

/// [`broken`] for the policy's medium. A tape cannot be checked without
/// reading it, so streams on tape are taken as whole (a damaged one is
/// found when it is read, as any tape's), except those on a cartridge the
/// tape index records as possibly written over.
///
/// Snapshots in the policy's volume have no stream; the volume's own
/// checksums guard them (`snapdump volume check`). But the volume takes
/// an increment only on the snapshot it continues from: when that is not
/// the newest the policy holds (the newest was deleted from the volume by
/// hand), nothing is built on the newest.
fn broken_streams(p: &Policy, snaps: &[Snap], source_uuid: Option<[u8; 16]>) -> Vec<(u64, String)> {
    if let Some(vol) = &p.streams.volume {
        let (Some(newest), Some(source)) = (snaps.last(), source_uuid) else {
            return Vec::new();
        };
        return match held_in_volume(vol, &source).map(|h| h.latest) {
            Ok(Some((id, _))) if id != newest.id => vec![(
                newest.id,
                format!(
                    "the volume {} continues from snapshot {id}, which was deleted from it, not from snapshot {}, so it takes no increment on snapshot {}",
                    vol.display(),
                    newest.id,
                    newest.id
                ),
            )],
            _ => Vec::new(),
        };
    }
    if p.streams.tape.is_some() {
        let Ok(index) = super::tape::read(&streams_dir(p)) else {
            return Vec::new();
        };
        return index
            .on_lost()
            .into_iter()
            .filter(|(e, _)| snaps.iter().any(|s| s.id == e.id))
            .map(|(e, c)| {
                (
                    e.id,
                    format!(
                        "snapshot {}'s stream is on tape {c}, which may have been written over",
                        e.id
                    ),
                )
            })
            .collect();
    }
    broken(snaps, &streams_dir(p))
}

/// The plan for the policy now (or at `at`).
pub fn plan_now(p: &Policy, at: Option<Time>) -> Result<Plan> {
    let (snaps, cat) = snaps_of(p)?;
    let now = at.unwrap_or_else(Time::now).sec;
    Ok(plan_with_pins(p, &snaps, now, cat.as_ref()))
}

fn stamp(t: Time) -> String {
    let s = t.rfc3339();
    s.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

fn stem(p: &Policy) -> String {
    p.source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into())
}

/// Runs the policy once.
pub fn run(
    p: &Policy,
    at: Option<Time>,
    allow_empty: bool,
    wait: crate::lock::Wait,
    report: &Report,
) -> Result<RunSummary> {
    std::fs::create_dir_all(&p.streams.dir).with_context(|| {
        format!(
            "cannot create streams directory {}",
            p.streams.dir.display()
        )
    })?;
    let dir = streams_dir(p);
    let _policy_lock = crate::lock::acquire(
        &dir.join(".snapdump-policy.lock"),
        &format!("the streams directory {}", p.streams.dir.display()),
        wait,
    )?;
    claim(p, &dir)?;
    // Two policies on one source (each with its own streams directory)
    // take turns: a snapshot id is chosen for a stream's name before the
    // dump takes the catalog's lock.
    let _source_lock = source_lock(p, wait)?;
    // Claimed at every run, dump due or not: a policy that finds another's
    // snapshots in its volume would take them for its own and prune them.
    if let Some(v) = &p.streams.volume {
        claim_shared(p, "volume", v)?;
    }
    if let Some(t) = &p.streams.tape {
        claim_shared(p, "tape", Path::new(&t.device))?;
    }
    let now = at.unwrap_or_else(Time::now);
    let root = catalog_root(p);
    let mut summary = RunSummary {
        command: "run",
        status: "ok",
        policy: p.path.display().to_string(),
        at: now.rfc3339(),
        dumped: None,
        replicated: Vec::new(),
        mirrored: Vec::new(),
        coalesced: None,
        pruned: Vec::new(),
        swept: sweep(p, wait, report)?,
        tapes_freed: Vec::new(),
        plan: plan_now(p, Some(now))?,
    };
    let (snaps, cat) = snaps_of(p)?;
    let source_uuid = cat.map(|c| c.state.source_uuid);
    if p.streams.tape.is_some() {
        // One line per cartridge in doubt, naming its kept snapshots.
        let index = super::tape::read(&streams_dir(p))?;
        let mut by_tape: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for (e, c) in index.on_lost() {
            if snaps.iter().any(|s| s.id == e.id) {
                by_tape.entry(c).or_default().push(e.id.to_string());
            }
        }
        for (c, ids) in by_tape {
            report.warn(
                p.path.as_os_str().as_encoded_bytes(),
                format!(
                    "tape {c} may have been written over (the tape index says it is lost): if so, snapshot(s) {} on it cannot be restored, nor any built on them; nothing new is built on them, and retention prunes them in time",
                    ids.join(", ")
                ),
            );
        }
    } else if p.streams.volume.is_none() {
        // (A volume's are said when it is settled, and are no loss.)
        for (_, what) in broken_streams(p, &snaps, source_uuid) {
            report.warn(
                p.path.as_os_str().as_encoded_bytes(),
                format!("{what}: neither it nor a snapshot built on it can be restored, and nothing new is built on it; put the stream back from a copy, or let retention prune it"),
            );
        }
    }
    // Prune first what is prunable now (it needs no space and breaks no
    // chain: the next dump's base is in the newest snapshot's chain, which
    // is kept), so that a full disk frees itself; then again at the end.
    if !summary.plan.prune().is_empty() {
        (summary.pruned, summary.tapes_freed) = prune(p, now, wait)?;
        summary.plan = plan_now(p, Some(now))?;
    }
    let empty = if allow_empty { None } else { empty_source(p)? };
    if let (Some(why), Some(_)) = (&empty, &summary.plan.dump) {
        report.warn(p.source.as_os_str().as_encoded_bytes(), why.clone());
    }
    if let (Some(_), None, Some(tape), (_, Some(cat))) =
        (&summary.plan.dump, &empty, &p.streams.tape, snaps_of(p)?)
    {
        if check_cartridge(p, tape, &cat, report)? {
            summary.plan = plan_now(p, Some(now))?;
        }
    }
    if let (Some(d), None, Some(tape)) = (summary.plan.dump.clone(), &empty, &p.streams.tape) {
        summary.dumped = Some(dump_to_tape(p, tape, &d, now, wait, report)?);
        summary.plan = plan_now(p, Some(now))?;
    } else if let (Some(d), None, Some(vol)) =
        (summary.plan.dump.clone(), &empty, &p.streams.volume)
    {
        summary.dumped = Some(dump_to_volume(p, vol, &d, now, wait, report)?);
        summary.plan = plan_now(p, Some(now))?;
    } else if let (Some(d), None) = (summary.plan.dump.clone(), &empty) {
        let (_, cat) = snaps_of(p)?;
        let id = cat.as_ref().map(|c| c.state.next_snap_id).unwrap_or(1);
        let out = free_name(
            &dir,
            &p.streams.name(&stem(p), id, d.level, &stamp(now), false),
        );
        journal(&dir, &[&out.display().to_string()])?;
        let opts = crate::dump::DumpOptions {
            level: d.level,
            output: out.display().to_string(),
            volumes: Vec::new(),
            tape: tape_defaults(),
            catalog_root: root.clone(),
            compression: p.streams.compression,
            source: p.source.clone(),
            base: d.base,
            wait,
            resume: false,
            cross_mounts: false,
            rules: None,
            rules_changed: false,
            // The run's clock, given or read at its start: the snapshot
            // must not be stamped after the `now` the rest of the run
            // plans with (a dump that crossed a second would put the clock
            // "in doubt" and hold pruning). Stamping the time before the
            // scan is the safe side for change detection.
            snapshot_time: Some(now),
            tracker: crate::dump::tracked::TrackerMode::Auto,
        };
        let s = crate::dump::dump(&opts, report).with_context(|| {
            format!(
                "the level {} dump to {} failed (nothing of it was kept)",
                d.level,
                out.display()
            )
        })?;
        crate::failpoint::hit("policy-dumped");
        unjournal(&dir, &[&out.display().to_string()])?;
        summary.dumped = Some(Done {
            snapshot: s.snapshot.id,
            level: s.snapshot.level,
            stream: s.output.clone(),
            stream_bytes: s.stream_bytes,
            why: d.why,
        });
        summary.plan = plan_now(p, Some(now))?;
    }
    for dest in &p.replicate {
        let r = replicate(p, dest, now.sec, wait, report);
        summary.replicated.push(match r {
            Ok(r) => r,
            Err(e) => {
                report.warn(
                    dest.to.as_os_str().as_encoded_bytes(),
                    format!("replication failed: {e:#}"),
                );
                Replicated {
                    to: dest.to.display().to_string(),
                    received: Vec::new(),
                    deleted: Vec::new(),
                    error: Some(format!("{e:#}")),
                }
            }
        });
    }
    for dir in &p.mirror {
        let r = follow(p, dir, wait);
        summary.mirrored.push(match r {
            Ok(m) => m,
            Err(e) => {
                report.warn(
                    dir.as_os_str().as_encoded_bytes(),
                    format!("the mirror did not follow: {e:#}"),
                );
                Mirrored {
                    dir: dir.display().to_string(),
                    created: None,
                    added: Vec::new(),
                    error: Some(format!("{e:#}")),
                }
            }
        });
    }
    if !p.mirror.is_empty() || !p.replicate.is_empty() {
        // What they pin may have moved on (a mirror moved to a new chain).
        summary.plan = plan_now(p, Some(now))?;
    }
    let (_, cat) = snaps_of(p)?;
    let (_, hold) = pinned(p, cat.map(|c| c.state.source_uuid));
    if let Some(why) = &hold {
        report.warn(p.path.as_os_str().as_encoded_bytes(), why.clone());
    }
    let behind = hold.is_some()
        || summary.replicated.iter().any(|r| r.error.is_some())
        || summary.mirrored.iter().any(|m| m.error.is_some());
    if let (Some(c), true) = (&summary.plan.coalesce, behind) {
        report.warn(
            p.path.as_os_str().as_encoded_bytes(),
            format!(
                "not coalescing snapshot {} while a replication destination or a mirror is behind (its chain would be lost to it)",
                c.snapshot
            ),
        );
    }
    if let (Some(c), false) = (summary.plan.coalesce.clone(), behind) {
        match coalesce(p, &c, report, wait) {
            Ok(done) => summary.coalesced = Some(done),
            Err(e) => {
                // Not the end of the run: the dump made stays reported and
                // pruning goes on. A stream of the chain that is damaged
                // is found and recorded, so nothing is built on it again.
                report.warn(
                    p.path.as_os_str().as_encoded_bytes(),
                    format!("snapshot {} was not coalesced: {e:#}", c.snapshot),
                );
                find_damage(p, &c.chain, &dir, report)?;
            }
        }
        summary.plan = plan_now(p, Some(now))?;
    }
    if let Some(why) = super::retain::clock_doubt(&snaps_of(p)?.0, now.sec) {
        report.warn(p.path.as_os_str().as_encoded_bytes(), why);
    }
    if !summary.plan.prune().is_empty() {
        let (pruned, freed) = prune(p, now, wait)?;
        summary.pruned.extend(pruned);
        summary.tapes_freed.extend(freed);
        summary.plan = plan_now(p, Some(now))?;
    }
    if p.streams.tape.is_some() && !summary.tapes_freed.is_empty() {
        // A cartridge freed before this run's dump may have taken it (it
        // was loaded again): only those still free at the end are said.
        let index = super::tape::read(&streams_dir(p))?;
        let in_use: std::collections::HashSet<String> =
            index.entries.iter().flat_map(|e| e.cartridges()).collect();
        summary.tapes_freed.retain(|t| !in_use.contains(t));
        summary.tapes_freed.dedup();
    }
    for t in &summary.tapes_freed {
        crate::progress::note(&format!(
            "tape {t} holds no kept dump any more; it may be erased and used again"
        ));
    }
    summary.status = report.status_word();
    Ok(summary)
}

/// Why the source must not be dumped now: it is empty while the
/// catalog's newest snapshot of it held entries, which is what a file
/// system that did not mount looks like. A dump of it would be a snapshot
/// of nothing, and retention would soon prune the real ones for it.
fn empty_source(p: &Policy) -> Result<Option<String>> {
    // Read without touching the directory's atime, which the dump records.
    let names = crate::fsx::open_dir_path(&p.source)
        .and_then(|fd| crate::fsx::read_dir_names(std::os::fd::AsFd::as_fd(&fd)));
    match names {
        Ok(n) if n.is_empty() => {}
        _ => return Ok(None), // not empty, or the dump names what is wrong
    }
    let (snaps, cat) = snaps_of(p)?;
    let held = cat
        .and_then(|c| c.state.tree.map(|t| t.dirents.len().saturating_sub(1)))
        .unwrap_or(0);
    let Some(newest) = snaps.last().filter(|_| held > 0) else {
        return Ok(None);
    };
    Ok(Some(format!(
        "source {} is empty, but its newest snapshot held {held} entries: not dumped (is its file system mounted?); if it is meant to be empty, run with --allow-empty once (newest snapshot {})",
        p.source.display(),
        newest.id
    )))
}

/// Looks at the cartridge loaded in the policy's tape before a dump goes
/// onto it, when the tape index neither places a dump on it nor freed it.
/// Blank, it is a new cartridge. Holding a dump, it was begun by a dump
/// made outside the policy (`dump` without `--append` begins a tape at
/// its start, and has done so even when it then failed or was killed),
/// perhaps over one of the policy's cartridges, and which one nothing on
/// it says: every cartridge the index places a dump on is recorded as
/// lost, so nothing more is built on their dumps (a level 0 next), with a
/// warning saying how to undo it for the whole ones. One whose dump is of
/// another source or catalog is then refused: the policy would count that
/// source's dumps in with its own. Returns whether it recorded a loss
/// (the plan changes).
fn check_cartridge(
    p: &Policy,
    tape: &super::file::Tape,
    cat: &Catalog,
    report: &Report,
) -> Result<bool> {
    let loaded = super::tape::loaded(tape)?;
    let dir = streams_dir(p);
    let mut index = super::tape::read(&dir)?;
    let index_path = dir.join(super::tape::INDEX);
    let mut changed = false;
    // Dumps by hand to the drive (rows the index has not placed), each
    // looked for once on the cartridge loaded then: one not wholly on it
    // (not there, or begun or ended on another cartridge) may have begun
    // any of the policy's cartridges.
    let hand_rows: Vec<&crate::catalog::SnapshotInfo> = hand_dumps(tape, cat, &index);
    let unknown = |h: &crate::media::tape::volume::VolumeHeader| {
        let u = crate::ids::hex(&h.snapshot_uuid);
        !index.entries.iter().any(|e| e.uuid == u)
    };
    let files = match &loaded {
        super::tape::Loaded::Named { .. } => super::tape::scan(tape, unknown)?,
        super::tape::Loaded::Blank => Vec::new(),
    };
    let mut unplaced: Vec<u64> = Vec::new();
    let mut new_hand = Vec::new();
    for r in &hand_rows {
        let whole_here = files.iter().any(|f| {
            f.header
                .as_ref()
                .is_some_and(|h| h.snapshot_uuid == r.snap.uuid && h.volume == 1 && f.ends_stream)
        });
        let on = match &loaded {
            super::tape::Loaded::Named { name, .. } if whole_here => Some(name.clone()),
            _ => None,
        };
        if on.is_none() {
            unplaced.push(r.snap.id);
        }
        new_hand.push((crate::ids::hex(&r.snap.uuid), on));
    }
    changed |= !new_hand.is_empty();
    index.hand.extend(new_hand);
    let mut doubt_why: Option<String> = None;
    if !unplaced.is_empty() {
        doubt_why = Some(format!(
            "snapshot(s) {} were dumped by hand to {}, and not wholly onto the cartridge loaded now (a dump without --append begins a cartridge at its start, and one that fills a cartridge goes on to the next)",
            unplaced
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            tape.device
        ));
    }
    // A volume on it of a dump that neither the index nor the catalog has
    // (a dump by hand that was killed, or another catalog's), closed by a
    // filemark without its stream's end: the dump went on to another
    // cartridge, perhaps one of the policy's.
    let pending_ids: Vec<u64> = index.pending.iter().map(|q| q.id).collect();
    if let Some(f) = files.iter().find(|f| {
        f.closed
            && !f.ends_stream
            && f.header.as_ref().is_some_and(|h| {
                unknown(h)
                    && !pending_ids.contains(&h.snapshot_id)
                    && !cat
                        .state
                        .snapshots
                        .iter()
                        .any(|r| r.snap.uuid == h.snapshot_uuid)
            })
    }) {
        doubt_why = Some(format!(
            "tape file {} of the cartridge in {} is a volume of a dump that neither the tape index nor the catalog has (a dump by hand that failed or was killed, or another catalog's), and it goes on past this cartridge",
            f.file, tape.device
        ));
    }
    let mut refuse = None;
    if let super::tape::Loaded::Named {
        name,
        files,
        source,
        ..
    } = &loaded
    {
        if index.lost.contains(name)
            && super::tape::check_loaded(&index, &tape.device, name, *files).is_ok()
        {
            // Its first record and its tape files are as the policy wrote
            // them: it was not begun again.
            index.lost.retain(|l| l != name);
            changed = true;
            crate::progress::note(&format!(
                "tape {name} is loaded and holds what the tape index places on it: it is no longer taken as lost"
            ));
        } else if !index.knows(name) {
            let other = source != &cat.state.source_uuid;
            if other {
                refuse = Some(format!(
                    "the tape in {} (tape {name}) holds dumps of another source or catalog, not of {}: nothing was appended (load a blank cartridge or one of this policy's)",
                    tape.device,
                    p.source.display()
                ));
            }
            doubt_why = Some(format!(
                "the tape in {} (tape {name}) is not one the policy wrote, freed or found blank, and begins with a dump {}",
                tape.device,
                if other {
                    "of another source or catalog".to_string()
                } else {
                    format!("of {} that the policy did not make", p.source.display())
                }
            ));
        }
    }
    // Every cartridge the policy placed a dump on is in doubt, but the
    // loaded one when it holds what the index places on it: which one was
    // begun again nothing tells.
    let intact = match &loaded {
        super::tape::Loaded::Named { name, files, .. } => Some(name.clone()).filter(|n| {
            !index.lost.contains(n)
                && super::tape::check_loaded(&index, &tape.device, n, *files).is_ok()
        }),
        super::tape::Loaded::Blank => None,
    };
    let mut doubt: Vec<String> = Vec::new();
    if doubt_why.is_some() {
        for c in index.entries.iter().flat_map(|e| e.cartridges()) {
            if !doubt.contains(&c) && intact.as_ref() != Some(&c) {
                doubt.push(c);
            }
        }
    }
    let new: Vec<String> = doubt
        .iter()
        .filter(|c| !index.lost.contains(c))
        .cloned()
        .collect();
    changed |= !new.is_empty();
    index.lost.extend(new.iter().cloned());
    if changed {
        super::tape::write(&dir, &index)?;
    }
    let lost = match (&doubt_why, new.is_empty()) {
        (Some(why), false) => Some(format!(
            "{why}: it may have been written over one of the policy's cartridges ({}), and which one nothing tells, so nothing more is built on their dumps (a level 0 next); for each of them that is whole, load it (a run then sees it is whole) or delete its `lost` line from {}",
            new.join(", "),
            index_path.display()
        )),
        _ => None,
    };
    match (refuse, lost) {
        (Some(r), Some(l)) => bail!("{r}; and {l}"),
        (Some(r), None) => bail!("{r}"),
        (None, Some(l)) => {
            report.warn(tape.device.as_bytes(), l);
            Ok(true)
        }
        (None, None) => Ok(changed),
    }
}

/// The catalog's rows of dumps by hand to the policy's drive (by any
/// spelling of its path) that the tape index neither places nor has
/// looked for yet.
fn hand_dumps<'a>(
    tape: &super::file::Tape,
    cat: &'a Catalog,
    index: &super::tape::Index,
) -> Vec<&'a crate::catalog::SnapshotInfo> {
    let drive = Path::new(&tape.device);
    cat.state
        .snapshots
        .iter()
        .filter(|r| r.output == tape.device || same_place(Path::new(&r.output), drive))
        .filter(|r| {
            let uuid = crate::ids::hex(&r.snap.uuid);
            !index.entries.iter().any(|e| e.uuid == uuid)
                && !index.pending.iter().any(|q| q.id == r.snap.id)
                && !index.hand.iter().any(|(u, _)| *u == uuid)
        })
        .collect()
}

/// The due dump `d`, appended to the policy's tape as its next tape file;
/// then recorded in the tape index. The snapshot id it is to get is
/// recorded first, so that a run killed after the catalog's commit and
/// before the index's leaves what the next run's sweep needs to find it.
fn dump_to_tape(
    p: &Policy,
    tape: &super::file::Tape,
    d: &super::plan::DumpDue,
    now: Time,
    wait: crate::lock::Wait,
    report: &Report,
) -> Result<Done> {
    let dir = streams_dir(p);
    // Two policies of one source on one tape would each count the other's
    // dumps out of the cartridges they call free.
    claim_shared(p, "tape", Path::new(&tape.device))?;
    let (_, cat) = snaps_of(p)?;
    let id = cat.as_ref().map(|c| c.state.next_snap_id).unwrap_or(1);
    let first = super::tape::loaded(tape)?;
    let mut index = super::tape::read(&dir)?;
    if let super::tape::Loaded::Named { name, files, .. } = &first {
        super::tape::check_loaded(&index, &tape.device, name, *files)?;
    }
    if !index.pending.iter().any(|q| q.id == id) {
        let start = match &first {
            super::tape::Loaded::Named {
                name, next_file, ..
            } => (*next_file, Some(name.clone())),
            super::tape::Loaded::Blank => (1, None),
        };
        index.pending.push(super::tape::Pending {
            id,
            start: Some(start),
        });
        super::tape::write(&dir, &index)?;
    }
    let opts = crate::dump::DumpOptions {
        level: d.level,
        output: tape.device.clone(),
        volumes: Vec::new(),
        tape: crate::media::tape::writer::TapeOptions {
            block_size: tape.block_size,
            append: true,
            capacity: tape.capacity,
            new_volume: tape.new_volume.clone(),
        },
        catalog_root: catalog_root(p),
        compression: p.streams.compression,
        source: p.source.clone(),
        base: d.base,
        wait,
        resume: false,
        cross_mounts: false,
        rules: None,
        rules_changed: false,
        snapshot_time: Some(now),
        tracker: crate::dump::tracked::TrackerMode::Auto,
    };
    let s = crate::dump::dump(&opts, report).with_context(|| {
        format!(
            "the level {} dump to {} failed (the catalog did not take it; the next run appends after it)",
            d.level, tape.device
        )
    })?;
    crate::failpoint::hit("policy-dumped");
    let uuid = crate::ids::hex(&s.snapshot.uuid);
    let entry = super::tape::Entry {
        cartridge: match first {
            super::tape::Loaded::Named { name, .. } => name,
            super::tape::Loaded::Blank => super::tape::label(s.snapshot.id, 1, &uuid),
        },
        uuid,
        id: s.snapshot.id,
        file: s.tape_file.unwrap_or(1),
        volumes: s.volumes.unwrap_or(1),
    };
    let mut index = super::tape::read(&dir)?;
    index
        .pending
        .retain(|q| q.id != id && q.id != s.snapshot.id);
    let stream = entry.location(&tape.device);
    index.entries.push(entry);
    super::tape::write(&dir, &index)?;
    Ok(Done {
        snapshot: s.snapshot.id,
        level: s.snapshot.level,
        stream,
        stream_bytes: s.stream_bytes,
        why: d.why.clone(),
    })
}

/// Finishes what a run killed during a tape dump left in the tape index:
/// a pending dump the catalog took is found on the loaded cartridge and
/// recorded; one the catalog did not take is dropped (its cut-off tape
/// file is closed by the next append and never read). Runs under the
/// catalog's lock, so no dump is under way.
fn settle_tape(p: &Policy, tape: &super::file::Tape, cat: &Catalog) -> Result<()> {
    let dir = streams_dir(p);
    let mut index = super::tape::read(&dir)?;
    let unknown: Vec<String> = cat
        .state
        .snapshots
        .iter()
        .filter(|r| r.output == tape.device)
        .filter(|r| {
            let uuid = crate::ids::hex(&r.snap.uuid);
            !index.entries.iter().any(|e| e.uuid == uuid)
                && !index.pending.iter().any(|q| q.id == r.snap.id)
        })
        .map(|r| r.snap.id.to_string())
        .collect();
    if !unknown.is_empty() {
        crate::progress::note(&format!(
            "snapshot(s) {} of {} are in the catalog but not in the tape index {} (dumped by hand, or the index was lost): the policy neither builds on nor prunes them",
            unknown.join(", "),
            tape.device,
            dir.join(super::tape::INDEX).display()
        ));
    }
    if index.pending.is_empty() {
        return Ok(());
    }
    let mut keep = Vec::new();
    for q in std::mem::take(&mut index.pending) {
        let Some(row) = cat.state.snapshots.iter().find(|r| r.snap.id == q.id) else {
            continue;
        };
        let uuid = crate::ids::hex(&row.snap.uuid);
        if index.entries.iter().any(|e| e.uuid == uuid) {
            continue;
        }
        let found = match super::tape::find(tape, &uuid)? {
            Some((file, 1)) => {
                let cartridge = match super::tape::loaded(tape)? {
                    super::tape::Loaded::Named { name, .. } => name,
                    super::tape::Loaded::Blank => super::tape::label(row.snap.id, 1, &uuid),
                };
                Some((file, 1, cartridge))
            }
            // The dump filled its first cartridge and ended on this one,
            // its volume k: where it began is what the run wrote down.
            Some((_, k)) => q.start.clone().map(|(file, c)| {
                (
                    file,
                    k,
                    c.unwrap_or_else(|| super::tape::label(row.snap.id, 1, &uuid)),
                )
            }),
            None => None,
        };
        match found {
            Some((file, volumes, cartridge)) => {
                crate::progress::note(&format!(
                    "snapshot {}'s dump was not in the tape index (a run was killed); it begins at {} file {file} (tape {cartridge}), and the index now says so",
                    row.snap.id, tape.device
                ));
                index.entries.push(super::tape::Entry {
                    uuid,
                    id: row.snap.id,
                    file,
                    volumes,
                    cartridge,
                });
            }
            None => {
                crate::progress::note(&format!(
                    "snapshot {}'s dump is in the catalog but not on the tape in {} (a run was killed, and the cartridge changed since): it is recorded when the cartridge it is on is loaded again",
                    row.snap.id, tape.device
                ));
                keep.push(q);
            }
        }
    }
    index.pending = keep;
    super::tape::write(&dir, &index)
}

fn tape_defaults() -> crate::media::tape::writer::TapeOptions {
    crate::media::tape::writer::TapeOptions {
        block_size: crate::media::tape::DEFAULT_RECORD_KIB * 1024,
        append: false,
        capacity: 0,
        new_volume: None,
    }
}

/// The file in a streams directory naming the policy that uses it.
const OWNER: &str = ".snapdump-policy.owner";

/// Claims the streams directory `dir` for this policy, or refuses when
/// another policy file (one that still exists) uses it: two schedules and
/// two retentions over one set of streams would prune and sweep each
/// other's.
fn claim(p: &Policy, dir: &Path) -> Result<()> {
    let me = std::fs::canonicalize(&p.path).unwrap_or_else(|_| p.path.clone());
    let owner = dir.join(OWNER);
    match std::fs::read(&owner) {
        Ok(b) => {
            let other = PathBuf::from(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                    b.strip_suffix(b"\n").unwrap_or(&b),
                ),
            );
            if other == me {
                return Ok(());
            }
            if other.exists() {
                bail!(
                    "streams directory {} is used by policy {}; give each policy its own streams directory (or delete {} if that policy is retired)",
                    p.streams.dir.display(),
                    other.display(),
                    owner.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", owner.display())),
    }
    let mut b = me.as_os_str().as_encoded_bytes().to_vec();
    b.push(b'\n');
    crate::atomic::replace_file(&owner, &b)
        .with_context(|| format!("cannot write {}", owner.display()))
}

/// Claims the replica, mirror, tape or volume `path` (`what` names
/// which) for this policy among the policies of its source, in the
/// source's catalog directory (`policy-claims`, lines `WHAT PATH<TAB>POLICY`;
/// runs on one source take turns, so no two write it at once). Two
/// policies of one source on one of these would each prune or move the
/// other's snapshots there: refused while the other policy file exists
/// and still names it. A volume is one place whether a policy's streams
/// go into it or a policy replicates to it, so those two kinds meet.
fn claim_shared(p: &Policy, what: &str, path: &Path) -> Result<()> {
    let Ok(source) = std::fs::canonicalize(&p.source) else {
        return Ok(());
    };
    let dir = crate::catalog::source_dir(&catalog_root(p), source.as_os_str().as_encoded_bytes());
    let me = std::fs::canonicalize(&p.path).unwrap_or_else(|_| p.path.clone());
    let path = &canon(path);
    let meets = |kind: &str| {
        kind == what
            || ["replica", "volume"].contains(&kind) && ["replica", "volume"].contains(&what)
    };
    let names = |o: &Policy, kind: &str| -> bool {
        match kind {
            "replica" | "volume" => {
                o.replicate.iter().any(|r| same_place(&r.to, path))
                    || o.streams
                        .volume
                        .as_deref()
                        .is_some_and(|v| same_place(v, path))
            }
            "tape" => o
                .streams
                .tape
                .as_ref()
                .is_some_and(|t| same_place(Path::new(&t.device), path)),
            _ => o.mirror.iter().any(|m| same_place(m, path)),
        }
    };
    let mut lines: Vec<String> = Vec::new();
    for line in read_list(&dir, CLAIMS)? {
        let Some((k, other)) = line.split_once('\t') else {
            continue;
        };
        let theirs = k
            .split_once(' ')
            .filter(|(kind, at)| meets(kind) && same_place(Path::new(at), path));
        if let (Some((kind, _)), true) = (theirs, Path::new(other) != me) {
            if Policy::load(Path::new(other)).is_ok_and(|o| names(&o, kind)) {
                fn role(k: &str) -> &str {
                    if k == "volume" {
                        "streams volume"
                    } else {
                        k
                    }
                }
                bail!(
                    "{} is policy {other}'s {} and would be this policy's {}: two policies of one source on one {what} undo each other's work there; give each its own",
                    path.display(),
                    role(kind),
                    role(what)
                );
            }
            continue; // a stale claim: that policy is gone or moved on
        }
        lines.push(line);
    }
    let mine = format!("{what} {}\t{}", path.display(), me.display());
    if lines.contains(&mine) || mine.contains('\n') {
        return Ok(());
    }
    lines.push(mine);
    write_list(&dir, CLAIMS, &lines)
        .with_context(|| format!("cannot write {}", dir.join(CLAIMS).display()))
}

/// Whether `a` and `b` are one place: one path once resolved, or one
/// file (a hard link, a bind mount) while both are there.
fn same_place(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    canon(a) == canon(b)
        || matches!(
            (std::fs::metadata(a), std::fs::metadata(b)),
            (Ok(x), Ok(y)) if x.dev() == y.dev() && x.ino() == y.ino()
        )
}

/// `path` as the file system names it: its directory resolved (symlinks,
/// `.`, `..`), so that two spellings of one place are one claim; the
/// literal path while its directory is not there.
fn canon(path: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(path) {
        return c;
    }
    match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => std::fs::canonicalize(d)
            .map(|d| d.join(n))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// The claims file in the source's catalog directory.
const CLAIMS: &str = "policy-claims";

/// The lock every policy run on one source holds, in the source's catalog
/// directory.
fn source_lock(p: &Policy, wait: crate::lock::Wait) -> Result<Option<crate::lock::Lock>> {
    let Ok(source) = std::fs::canonicalize(&p.source) else {
        return Ok(None);
    };
    let dir = crate::catalog::source_dir(&catalog_root(p), source.as_os_str().as_encoded_bytes());
    crate::catalog::create_private_dir(&dir)?;
    crate::lock::acquire(
        &dir.join("policy-run.lock"),
        &format!("policy runs on {}", source.display()),
        wait,
    )
    .map(Some)
}

/// Opens the catalog under its lock, for a change.
fn locked_catalog(p: &Policy, wait: crate::lock::Wait) -> Result<(crate::lock::Lock, Catalog)> {
    let (_, lock, cat) = crate::dump::open_catalog_locked(&p.source, &catalog_root(p), wait)?;
    Ok((lock, cat))
}

/// Whether `path` (as a catalog row names it) is inside the streams
/// directory, where the policy may delete.
fn ours(p: &Policy, path: &str) -> bool {
    in_dir(&streams_dir(p), path)
}

/// The synthetic full of the newest snapshot's chain, put in the catalog
/// in place of its increment, which is then deleted.
fn coalesce(
    p: &Policy,
    due: &super::plan::CoalesceDue,
    report: &Report,
    wait: crate::lock::Wait,
) -> Result<Done> {
    let (snaps, _) = snaps_of(p)?;
    let newest = snaps.last().expect("a coalesce is due only with snapshots");
    let mut inputs = Vec::new();
    for id in &due.chain {
        let s = snaps
            .iter()
            .find(|s| s.id == *id)
            .expect("the chain is the table's");
        inputs.push(input_of(p, s).with_context(|| {
            format!(
                "snapshot {id}'s stream {} is needed to coalesce snapshot {}",
                s.output, newest.id
            )
        })?);
    }
    let dir = streams_dir(p);
    let out = free_name(
        &dir,
        &p.streams.name(
            &stem(p),
            newest.id,
            newest.level,
            &stamp(Time {
                sec: newest.time,
                nsec: 0,
            }),
            true,
        ),
    );
    journal(&dir, &[&out.display().to_string(), &newest.output])?;
    let s = crate::restore::coalesce::coalesce(&crate::restore::coalesce::CoalesceOptions {
        inputs,
        specs: vec![out.display().to_string()],
        tape: tape_defaults(),
        compression: p.streams.compression,
        digest: crate::stream::reader::Digest::Skip,
        waste: Some(crate::restore::coalesce::Waste::DEFAULT),
    })?;
    let _ = report;
    crate::failpoint::hit("policy-coalesced");
    let (_lock, mut cat) = locked_catalog(p, wait)?;
    let row = cat
        .state
        .snapshots
        .iter_mut()
        .find(|r| r.snap.id == newest.id)
        .filter(|r| r.output == newest.output)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "snapshot {} changed in the catalog while it was coalesced; run again",
                newest.id
            )
        })?;
    let old = std::mem::replace(&mut row.output, out.display().to_string());
    row.full = true;
    row.base = None;
    row.stream_bytes = s.stream_bytes;
    row.data_blocks = s.blocks_carried;
    cat.commit()?;
    crate::failpoint::hit("policy-coalesce-committed");
    if ours(p, &old) {
        remove(&old)?;
    }
    unjournal(&dir, &[&out.display().to_string(), &old])?;
    Ok(Done {
        snapshot: newest.id,
        level: newest.level,
        stream: out.display().to_string(),
        stream_bytes: s.stream_bytes,
        why: due.why.clone(),
    })
}

fn remove(path: &str) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot delete stream {path}")),
    }
}

/// Prunes what the plan (made again under the catalog's lock) prunes:
/// rows and planes leave the catalog in one commit, then the streams go.
///
/// With streams on tape nothing is deleted: the dumps leave the catalog
/// and the tape index, and the cartridges that no longer hold a kept dump
/// are returned by name.
fn prune(p: &Policy, now: Time, wait: crate::lock::Wait) -> Result<(Vec<Done>, Vec<String>)> {
    let (_lock, mut cat) = locked_catalog(p, wait)?;
    let snaps = table(&cat, p)?;
    let pl = plan_with_pins(p, &snaps, now.sec, Some(&cat));
    let doomed: std::collections::BTreeSet<u64> = pl.prune().into_iter().collect();
    let held = match &p.streams.volume {
        Some(v) => held_in_volume(v, &cat.state.source_uuid)?,
        None => Default::default(),
    };
    if doomed.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut done = Vec::new();
    let mut doomed_uuids = Vec::new();
    let st = &mut cat.state;
    let mut k = 0;
    while k < st.snapshots.len() {
        if doomed.contains(&st.snapshots[k].snap.id) {
            let r = st.snapshots.remove(k);
            doomed_uuids.push(r.snap.uuid);
            st.planes.remove(k);
            let why = pl
                .snapshots
                .iter()
                .find(|d| d.snapshot == r.snap.id)
                .map(|d| d.why.join("; "))
                .unwrap_or_default();
            let stream = snaps
                .iter()
                .find(|s| s.id == r.snap.id)
                .map(|s| s.output.clone())
                .unwrap_or(r.output);
            done.push(Done {
                snapshot: r.snap.id,
                level: r.snap.level,
                stream,
                stream_bytes: r.stream_bytes,
                why,
            });
        } else {
            k += 1;
        }
    }
    let doomed: Vec<&str> = done
        .iter()
        .map(|d| d.stream.as_str())
        .filter(|s| ours(p, s))
        .collect();
    journal(&streams_dir(p), &doomed)?;
    if let Some(v) = &p.streams.volume {
        // The volume first: a kill after it leaves catalog rows the volume
        // does not hold, which the next sweep takes out; the other order
        // would leave snapshots in the volume that no run ever deletes.
        let uuids: Vec<String> = doomed_uuids.iter().map(|u| crate::ids::hex(u)).collect();
        write_list(&streams_dir(p), VOLUME_PRUNE, &uuids)?;
        for d in &done {
            if let Some(vid) = d
                .stream
                .rsplit_once('@')
                .and_then(|(_, n)| n.parse::<u64>().ok())
            {
                if held.ids.values().any(|&h| h == vid) {
                    crate::volume::admin::delete_snapshot(v, &vid.to_string(), wait)
                        .with_context(|| {
                            format!(
                                "pruning snapshot {} could not delete it from the volume {} (the catalog still has it; the next run prunes it again)",
                                d.snapshot,
                                v.display()
                            )
                        })?;
                    crate::failpoint::hit("policy-volume-deleted");
                }
            }
        }
    }
    crate::failpoint::hit("policy-before-prune-commit");
    cat.commit()?;
    if p.streams.volume.is_some() {
        write_list(&streams_dir(p), VOLUME_PRUNE, &[])?;
    }
    for d in &done {
        crate::failpoint::hit("policy-prune");
        if ours(p, &d.stream) {
            remove(&d.stream)?;
        }
    }
    unjournal(&streams_dir(p), &doomed)?;
    let freed = match &p.streams.tape {
        Some(_) => forget_on_tape(p)?,
        None => Vec::new(),
    };
    Ok((done, freed))
}

/// Takes the dumps the catalog no longer holds out of the tape index (a
/// prune's, and those a killed prune left: [`table`] ignores lines no row
/// names); returns the cartridges they were on that hold no kept dump
/// now, and records them as freed.
fn forget_on_tape(p: &Policy) -> Result<Vec<String>> {
    let dir = streams_dir(p);
    let (_, cat) = snaps_of(p)?;
    let rows: std::collections::HashSet<String> = cat
        .as_ref()
        .map(|c| {
            c.state
                .snapshots
                .iter()
                .map(|r| crate::ids::hex(&r.snap.uuid))
                .collect()
        })
        .unwrap_or_default();
    let mut index = super::tape::read(&dir)?;
    let (kept, gone): (Vec<_>, Vec<_>) = index
        .entries
        .into_iter()
        .partition(|e| rows.contains(&e.uuid));
    index.entries = kept;
    let in_use: std::collections::HashSet<String> =
        index.entries.iter().flat_map(|e| e.cartridges()).collect();
    // A lost cartridge's name may now be on another physical cartridge
    // (the one that was begun again): never called free, and its line
    // goes with its last dump. A cartridge a dump by hand is on is not
    // free while the catalog holds that dump.
    let was_lost: std::collections::HashSet<String> = index.lost.iter().cloned().collect();
    index.lost.retain(|l| in_use.contains(l));
    index.freed.retain(|f| !in_use.contains(f));
    index.hand.retain(|(u, _)| rows.contains(u));
    let by_hand: std::collections::HashSet<String> =
        index.hand.iter().filter_map(|(_, c)| c.clone()).collect();
    // Every line that went, also those a killed prune left behind: the
    // cartridges that hold no kept dump now stay known (a `freed` line),
    // so that one loaded again is the policy's; those that may be erased
    // are reported.
    let mut empty: Vec<String> = Vec::new();
    for c in gone.iter().flat_map(|e| e.cartridges()) {
        if !in_use.contains(&c) && !empty.contains(&c) {
            empty.push(c);
        }
    }
    let mut freed: Vec<String> = empty
        .iter()
        .filter(|c| !was_lost.contains(*c) && !by_hand.contains(*c))
        .cloned()
        .collect();
    let unseen = match (&p.streams.tape, cat.as_ref()) {
        (Some(t), Some(c)) => !hand_dumps(t, c, &index).is_empty(),
        _ => false,
    };
    if !freed.is_empty() && (unseen || index.hand.iter().any(|(_, c)| c.is_none())) {
        crate::progress::note(&format!(
            "tape(s) {} hold no dump the policy keeps, but are not called free: a dump by hand to {} may be on one",
            freed.join(", "),
            p.streams.tape.as_ref().map(|t| t.device.as_str()).unwrap_or("the drive")
        ));
        freed.clear();
    }
    index.freed.extend(empty);
    super::tape::write(&dir, &index)?;
    Ok(freed)
}

/// `name` in `dir`, or, when a file of that name is there already (a
/// template without {time} and a catalog made anew restart the ids), the
/// first free `NAME-2.sdump`, `NAME-3.sdump`, ...: a run never writes over
/// a file it did not make.
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if std::fs::symlink_metadata(&first).is_err() {
        return first;
    }
    let (stem, ext) = match name.strip_suffix(".full.sdump") {
        Some(s) => (s, ".full.sdump"),
        None => (name.strip_suffix(".sdump").unwrap_or(name), ".sdump"),
    };
    (2u32..)
        .map(|k| dir.join(format!("{stem}-{k}{ext}")))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .expect("some name is free")
}

/// The list of stream file names a run is about to create or delete, in
/// the streams directory: written (durably) before each step, so that the
/// next run's sweep deletes only what a killed step left behind, never a
/// stream it did not make (a copy, a moved directory, an older chain).
const JOURNAL: &str = ".snapdump-policy.journal";

/// The snapshots (uuids, in hex) a prune is deleting from the policy's
/// volume, written before the first deletion and emptied once the catalog
/// has forgotten them: a snapshot the volume lacks that this names was
/// pruned by a killed run, any other was deleted by hand.
const VOLUME_PRUNE: &str = ".snapdump-policy.volume-prune";

/// The replicas and mirrors this policy has made ("replica PATH", "mirror
/// PATH"): one found missing later is not made again, since a disk that
/// did not mount looks just like that, and a fresh copy on the disk
/// below would split the copy in two without a word.
const MADE: &str = ".snapdump-policy.made";

/// Refuses to make `what` (a replica or a mirror at `path`) again once
/// the policy made it before.
fn may_make(streams: &Path, what: &str, path: &Path) -> Result<()> {
    let line = format!("{what} {}", path.display());
    if read_list(streams, MADE)?.contains(&line) {
        bail!(
            "the {what} {} this policy made is not there (is its disk mounted?); not made again. If it is gone for good, delete the line {line:?} from {}",
            path.display(),
            streams.join(MADE).display()
        );
    }
    Ok(())
}

/// Records that the policy made `what` at `path`.
fn note_made(streams: &Path, what: &str, path: &Path) -> Result<()> {
    let line = format!("{what} {}", path.display());
    let mut lines = read_list(streams, MADE)?;
    if !lines.contains(&line) && !line.contains('\n') {
        lines.push(line);
        write_list(streams, MADE, &lines)?;
    }
    Ok(())
}

/// Streams found damaged (a checksum that does not match) while a run read
/// them, with their length then and what was wrong: never built on again.
const DAMAGED: &str = ".snapdump-policy.damaged";

/// The lines of a small list file in the streams directory (none when it
/// is missing).
fn read_list(dir: &Path, name: &str) -> Result<Vec<String>> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(b) => Ok(String::from_utf8_lossy(&b)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_list(dir: &Path, name: &str, lines: &[String]) -> Result<()> {
    let mut b = lines.join("\n").into_bytes();
    if !b.is_empty() {
        b.push(b'\n');
    }
    crate::atomic::replace_file(&dir.join(name), &b)
}

/// Adds the file names of `paths` to the journal before a step makes or
/// deletes them.
/// Takes `paths` off the journal once their step has finished (committed
/// and its deletions done): a journal entry left behind would let a later
/// sweep delete a stream whose catalog row was lost (a catalog put back
/// from a copy) though no run was killed.
fn unjournal(dir: &Path, paths: &[&str]) -> Result<()> {
    let names: Vec<String> = paths
        .iter()
        .filter_map(|p| Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    let lines = read_list(dir, JOURNAL)?;
    let left: Vec<String> = lines
        .iter()
        .filter(|l| !names.contains(l))
        .cloned()
        .collect();
    if left.len() == lines.len() {
        return Ok(());
    }
    write_list(dir, JOURNAL, &left)
}

fn journal(dir: &Path, paths: &[&str]) -> Result<()> {
    let mut lines = read_list(dir, JOURNAL)?;
    for p in paths {
        if let Some(n) = Path::new(p).file_name() {
            let n = n.to_string_lossy().into_owned();
            if !n.contains('\n') && !lines.contains(&n) {
                lines.push(n);
            }
        }
    }
    write_list(dir, JOURNAL, &lines)
}

/// Verifies (every checksum) the streams of snapshots `ids` and records
/// each damaged one, with a warning.
fn find_damage(p: &Policy, ids: &[u64], dir: &Path, report: &Report) -> Result<()> {
    let (snaps, _) = snaps_of(p)?;
    for s in snaps.iter().filter(|s| ids.contains(&s.id)) {
        let Ok(input) = input_of(p, s) else {
            continue;
        };
        let quiet = Report::quiet();
        if let Err(e) = crate::restore::verify::verify(&input, &quiet) {
            let why = quiet
                .warnings()
                .first()
                .map(|w| w.message.clone())
                .unwrap_or_else(|| format!("{e:#}"));
            report.warn(
                s.output.as_bytes(),
                format!(
                    "snapshot {}'s stream is damaged ({why}); nothing more is built on it",
                    s.id
                ),
            );
            mark_damaged(dir, &s.output, &why)?;
        }
    }
    Ok(())
}

/// Records that the stream at `path` is damaged (`why`).
fn mark_damaged(dir: &Path, path: &str, why: &str) -> Result<()> {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut lines: Vec<String> = read_list(dir, DAMAGED)?
        .into_iter()
        .filter(|l| l.split('\t').next() != Some(name.as_str()))
        .collect();
    lines.push(format!("{name}\t{len}\t{}", why.replace(['\n', '\t'], " ")));
    write_list(dir, DAMAGED, &lines)
}

/// The damaged-stream records that still describe the file they name
/// (same name, same length): name -> what was wrong.
fn damaged(dir: &Path) -> std::collections::HashMap<String, String> {
    read_list(dir, DAMAGED)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            let (name, len, why) = (f.next()?, f.next()?.parse::<u64>().ok()?, f.next()?);
            let now = std::fs::metadata(dir.join(name)).ok()?.len();
            (now == len).then(|| (name.to_string(), why.to_string()))
        })
        .collect()
}

/// What the start of a run tidies in the streams directory. A catalog
/// row whose stream is missing is pointed at the file here that holds that
/// very stream (same snapshot, same kind, same length: the directory was
/// moved). A stream of this source that no row holds is deleted only when
/// the journal says a killed step of a run made it (or was deleting it);
/// any other is left alone, with a note. Partial outputs of dead runs are
/// deleted. Returns the files deleted.
fn sweep(p: &Policy, wait: crate::lock::Wait, report: &Report) -> Result<Vec<String>> {
    let (_, cat) = snaps_of(p)?;
    let Some(_) = cat else { return Ok(Vec::new()) };
    let (_lock, mut cat) = locked_catalog(p, wait)?;
    if let Some(tape) = &p.streams.tape {
        settle_tape(p, tape, &cat)?;
    }
    if let Some(vol) = &p.streams.volume {
        settle_volume(p, vol, &mut cat, report)?;
    }
    let dir = streams_dir(p);
    use std::os::unix::fs::MetadataExt;
    let named_files: std::collections::HashSet<(u64, u64)> = cat
        .state
        .snapshots
        .iter()
        .filter_map(|s| std::fs::metadata(&s.output).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    let pending = read_list(&dir, JOURNAL)?;
    let mut swept = Vec::new();
    let mut moved = false;
    let rd = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list streams directory {}", p.streams.dir.display()))?;
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = dir.join(&name);
        let shown = path.display().to_string();
        if let Some(pid) = name
            .strip_prefix('.')
            .and_then(|n| n.split(".snapdump-partial.").nth(1))
            .and_then(|pid| pid.parse::<u32>().ok())
        {
            if !crate::lock::process_alive(pid) {
                remove(&shown)?;
                swept.push(shown);
            }
            continue;
        }
        // A state file's temporary copy (`..snapdump-policy.journal.tmp.PID`)
        // of a run killed while it wrote it.
        if let Some(pid) = name
            .strip_prefix("..snapdump-policy.")
            .and_then(|n| n.rsplit_once(".tmp."))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        {
            if !crate::lock::process_alive(pid) {
                remove(&shown)?;
            }
            continue;
        }
        // With a volume, the directory's only streams are incoming ones,
        // which settle_volume took care of.
        if name.starts_with('.') || !name.ends_with(".sdump") || p.streams.volume.is_some() {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !m.is_file() || named_files.contains(&(m.dev(), m.ino())) {
            continue;
        }
        let Ok(f) = std::fs::File::open(&path) else {
            continue;
        };
        let Ok(st) = crate::stream::seek::SeekStream::open(Box::new(f), &shown) else {
            continue;
        };
        let h = crate::stream::reader::Records::header(&st);
        if h.source_uuid != cat.state.source_uuid {
            continue;
        }
        let row = cat.state.snapshots.iter_mut().find(|r| {
            r.snap.uuid == h.snapshot.uuid && r.full == h.full && r.stream_bytes == m.len()
        });
        match row {
            Some(r) if !Path::new(&r.output).exists() => {
                crate::progress::note(&format!(
                    "snapshot {}'s stream was not at {}; it is {shown}, and the catalog now says so",
                    r.snap.id, r.output
                ));
                r.output = shown;
                moved = true;
            }
            None if pending.contains(&name) => {
                remove(&shown)?;
                swept.push(shown);
            }
            _ => crate::progress::note(&format!(
                "{shown} is a stream of this source that the catalog does not name; left alone"
            )),
        }
    }
    if moved {
        cat.commit()?;
    }
    if !pending.is_empty() {
        write_list(&dir, JOURNAL, &[])?;
    }
    Ok(swept)
}

/// The snapshots of this source a volume holds: (volume id, snapshot id,
/// time).
fn volume_snapshots(
    to: &Path,
    source: &[u8; 16],
    wait: crate::lock::Wait,
) -> Result<Vec<(u64, u64, i64)>> {
    let vol = crate::volume::Volume::open(to, crate::volume::store::Access::Read, wait)?;
    Ok(vol
        .state
        .snapshots
        .iter()
        .filter(|s| &s.source == source)
        .map(|s| (s.id, s.snap.id, s.snap.time.sec))
        .collect())
}

/// Brings one destination volume to the catalog's newest snapshot: the
/// streams of the newest chain after the newest snapshot it holds (all of
/// the chain when it holds none of it), each received in one commit; then
/// its own retention deletes what its rules do not keep (a volume's
/// snapshots do not depend on each other; the newest always stays).
fn replicate(
    p: &Policy,
    dest: &super::file::Replica,
    now: i64,
    wait: crate::lock::Wait,
    report: &Report,
) -> Result<Replicated> {
    let mut out = Replicated {
        to: dest.to.display().to_string(),
        received: Vec::new(),
        deleted: Vec::new(),
        error: None,
    };
    let (snaps, cat) = snaps_of(p)?;
    let (Some(cat), Some(newest)) = (cat, snaps.last()) else {
        return Ok(out);
    };
    claim_shared(p, "replica", &dest.to)?;
    if let Some(parent) = dest.to.parent().filter(|d| !d.is_dir()) {
        bail!(
            "the directory {} of replica {} is not there (is its disk mounted?); make it, or change replicate.to",
            parent.display(),
            dest.to.display()
        );
    }
    let streams = streams_dir(p);
    if !dest.to.exists() {
        may_make(&streams, "replica", &dest.to)?;
        crate::volume::store::create(
            &dest.to,
            &crate::volume::store::CreateOptions {
                block_size: cat.state.block_size,
                compact: false,
                max_bytes: 0,
                uuid: None,
            },
        )?;
    }
    note_made(&streams, "replica", &dest.to)?;
    let source = cat.state.source_uuid;
    let held = volume_snapshots(&dest.to, &source, wait)?;
    let top = held.iter().map(|h| h.1).max();
    if top != Some(newest.id) {
        let chain = super::retain::chain(&snaps, newest.id);
        if chain.first().is_some_and(|s| s.base.is_some()) {
            bail!(
                "snapshot {}'s chain lacks its full image in the catalog",
                newest.id
            );
        }
        let from = top
            .and_then(|t| chain.iter().position(|s| s.id == t))
            .map(|k| k + 1)
            .unwrap_or(0);
        let inputs = chain[from..]
            .iter()
            .map(|s| input_of(p, s))
            .collect::<Result<Vec<_>>>()?;
        let r = crate::volume::receive::receive(
            &crate::volume::receive::ReceiveOptions {
                inputs,
                volume: dest.to.clone(),
                wait,
                digest: crate::stream::reader::Digest::Skip,
            },
            report,
        )?;
        out.received = r.received.iter().map(|x| x.snapshot.id).collect();
        crate::failpoint::hit("policy-replicated");
    }
    // A clock in doubt prunes nothing here either.
    let doubt = super::retain::clock_doubt(&snaps, now).is_some();
    if let (Some(keep), false) = (&dest.keep, doubt) {
        let held = volume_snapshots(&dest.to, &source, wait)?;
        let as_snaps: Vec<Snap> = {
            let mut v: Vec<Snap> = held
                .iter()
                .map(|&(_, id, time)| Snap {
                    id,
                    time,
                    level: 0,
                    base: None,
                    stream_bytes: 0,
                    output: String::new(),
                })
                .collect();
            v.sort_by_key(|s| s.id);
            v
        };
        let kept = super::retain::kept(
            &as_snaps,
            Some(keep),
            now,
            p.schedule.interval().as_secs() as i64,
        );
        for &(vid, id, _) in &held {
            if !kept.contains_key(&id) {
                crate::volume::admin::delete_snapshot(&dest.to, &vid.to_string(), wait)?;
                out.deleted.push(id);
            }
        }
    }
    Ok(out)
}

/// `dir` with `.WHAT` after its name, in the same parent (so a rename
/// between them is atomic).
fn beside(dir: &Path, what: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{what}"));
    dir.with_file_name(name)
}

/// Finishes a mirror's move to a new chain that a killed run left: the
/// new mirror (`next`, complete once it has its state) takes `dir`'s
/// place when `dir` was moved aside, and what is left over goes.
fn finish_rebase(dir: &Path, next: &Path, old: &Path) -> Result<()> {
    let remove = |p: &Path| -> Result<()> {
        if p.exists() {
            std::fs::remove_dir_all(p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
        Ok(())
    };
    if !dir.exists() && old.exists() {
        if next.join("state").exists() {
            std::fs::rename(next, dir)
                .with_context(|| format!("cannot move {} into place", next.display()))?;
        } else {
            // The new one was not finished: the old one comes back.
            std::fs::rename(old, dir)
                .with_context(|| format!("cannot move {} back", old.display()))?;
        }
    }
    if dir.join("state").exists() {
        remove(old)?;
        remove(next)?;
    }
    Ok(())
}

/// Brings one mirror to the catalog's newest snapshot: made on the full
/// image of the newest chain when its directory is missing or empty, then
/// given, in order, the increments of that chain after the snapshot it is
/// at. A mirror at a snapshot the newest chain does not pass through (a
/// new level 0 started a new chain) moves to that chain: a new mirror on
/// its full takes the old one's place.
fn follow(p: &Policy, dir: &Path, wait: crate::lock::Wait) -> Result<Mirrored> {
    let mut out = Mirrored {
        dir: dir.display().to_string(),
        created: None,
        added: Vec::new(),
        error: None,
    };
    let (snaps, _) = snaps_of(p)?;
    let Some(newest) = snaps.last() else {
        return Ok(out);
    };
    let chain = super::retain::chain(&snaps, newest.id);
    if chain.first().is_some_and(|s| s.base.is_some()) {
        bail!(
            "snapshot {}'s chain lacks its full image in the catalog",
            newest.id
        );
    }
    claim_shared(p, "mirror", dir)?;
    let next = beside(dir, "snapdump-next");
    let old = beside(dir, "snapdump-old");
    finish_rebase(dir, &next, &old)?;
    let made = dir.join("state").exists();
    let streams = streams_dir(p);
    if !made {
        may_make(&streams, "mirror", dir)?;
        let full = chain[0];
        crate::mirror::create(&crate::media::Input::plain(&full.output)?, dir)?;
        out.created = Some(full.id);
    }
    note_made(&streams, "mirror", dir)?;
    let at = crate::mirror::status(dir)?.newest.id;
    let k = match chain.iter().position(|s| s.id == at) {
        Some(k) => k,
        None => {
            // A new level 0 began the newest chain: the mirror moves to it.
            // The new one is made beside the old (a mirror is its base
            // stream's name and the changed blocks, so this is cheap),
            // then put in its place by two renames; a run killed on the
            // way is finished by the next one's `finish_rebase`.
            if next.exists() {
                std::fs::remove_dir_all(&next)
                    .with_context(|| format!("cannot remove {}", next.display()))?;
            }
            crate::mirror::create(&crate::media::Input::plain(&chain[0].output)?, &next)?;
            crate::failpoint::hit("policy-mirror-next");
            std::fs::rename(dir, &old)
                .with_context(|| format!("cannot move {} aside", dir.display()))?;
            crate::failpoint::hit("policy-mirror-aside");
            finish_rebase(dir, &next, &old)?;
            out.created = Some(chain[0].id);
            0
        }
    };
    let inputs = chain[k + 1..]
        .iter()
        .map(|s| crate::media::Input::plain(&s.output))
        .collect::<Result<Vec<_>>>()?;
    if !inputs.is_empty() {
        let added = crate::mirror::add(dir, &inputs, wait)?;
        out.added = chain[k + 1..k + 1 + added.len()]
            .iter()
            .map(|s| s.id)
            .collect();
        crate::failpoint::hit("policy-mirrored");
    }
    Ok(out)
}
