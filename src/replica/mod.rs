//! Replication: `snapdump replicate SOURCE DEST` keeps a second copy in
//! step with a source (seeds 003 and 004).
//!
//! One step is a conversation (formats/replication.md): the destination
//! (`snapdump serve`, started locally or through `--rsh`) says which
//! snapshots it holds; the source decides — an increment from the
//! destination's newest master, a full copy, nothing, or a conflict — and
//! sends an ordinary image stream; the destination syncs it, the source
//! records the new snapshot, and only then does the destination apply it
//! and acknowledge. A cut transfer is resumed from the bytes the
//! destination holds: the stream is regenerated (dumps are deterministic)
//! and only what differs from the held chunks is sent again.

pub mod decide;
pub mod early;
pub mod protocol;
pub mod registry;
pub mod serve;

use crate::dump::sink::{dump_to_sink, Choice, SinkDump, SinkHooks};
use crate::dump::{Gate, GateAnswer};
use crate::report::Report;
use crate::stream::header::SnapshotRef;
use anyhow::{anyhow, bail, Context, Result};
use decide::{decide, Plan, SourceView};
use protocol::{Ack, Action, Channel, Decision, End, Hello, Incoming, Kind, Snap, CHUNK};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What `snapdump replicate` was asked to do.
pub struct ReplicateOptions {
    /// A source tree, or a volume `PATH.vol[@SNAPSHOT]`.
    pub source: String,
    /// `PATH.vol`, `DIR`, or `[USER@]HOST:PATH`.
    pub dest: String,
    /// Catalog root (tree sources).
    pub catalog_root: PathBuf,
    /// The remote shell (split on whitespace), for `HOST:PATH`.
    pub rsh: String,
    /// The snapdump binary on the remote host.
    pub remote_snapdump: String,
    /// Send a full copy whatever the destination holds.
    pub full: bool,
    /// A directory destination finishes increments in place.
    pub inplace: bool,
    /// A tree source's scan enters mount points below it.
    pub cross_mounts: bool,
    /// zstd level.
    pub compression: i32,
    /// Lock policy.
    pub wait: crate::lock::Wait,
    /// The snapshot of a volume source to send: a pointer name, or what
    /// `PATH@SNAPSHOT` takes (default: the newest).
    pub snapshot: Option<String>,
}

/// The `--json` summary.
#[derive(Serialize, Default)]
pub struct ReplicateSummary {
    /// Always "replicate".
    pub command: &'static str,
    /// "ok" or "warnings".
    pub status: &'static str,
    /// The source.
    pub source: String,
    /// The destination.
    pub destination: String,
    /// full, increment, resume, commit or current.
    pub decision: String,
    /// Why.
    pub reason: String,
    /// The base of the increment.
    pub base: Option<SnapshotRef>,
    /// The snapshot the destination now holds.
    pub top: Option<SnapshotRef>,
    /// Length of the image stream.
    pub stream_bytes: u64,
    /// Stream bytes sent in this run.
    pub bytes_sent: u64,
    /// Stream bytes the destination already held from a cut transfer.
    pub bytes_resumed: u64,
    /// Protocol bytes written to the destination.
    pub wire_bytes_sent: u64,
    /// Protocol bytes read from the destination.
    pub wire_bytes_received: u64,
    /// Wall-clock seconds.
    pub elapsed_seconds: f64,
}

/// A `--snapshot` of a volume source: a pointer name (its snapshot, by
/// uuid, as the volume numbers it), else the selector itself.
fn resolve_pointer(vol: &Path, catalog_root: &Path, name: &str) -> Result<String> {
    let reg = registry_of(&vol.display().to_string(), catalog_root)?.load()?;
    let v = crate::volume::Volume::open(
        vol,
        crate::volume::store::Access::Read,
        crate::lock::Wait::Yes,
    )?;
    let Some(snap) = reg.pointer(name) else {
        if let Err(e) = v.snapshot(Some(name)) {
            let names: Vec<&str> = reg.pointers.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "--snapshot {name}: no pointer of that name for {} in catalog {} (pointers there: {}), nor a snapshot ({e:#}); give --catalog where the pointer was set",
                vol.display(),
                catalog_root.display(),
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            );
        }
        return Ok(name.to_string());
    };
    v.state
        .snapshots
        .iter()
        .find(|s| crate::ids::hex(&s.snap.uuid) == snap.uuid)
        .map(|s| s.id.to_string())
        .ok_or_else(|| {
            anyhow!(
                "pointer {name} names snapshot {} ({}), which volume {} no longer holds",
                snap.id,
                snap.time,
                vol.display()
            )
        })
}

/// `snapdump pointer set`: names a snapshot of a tree source (its catalog
/// id) or of a volume (what `PATH@SNAPSHOT` takes).
pub fn set_pointer(source: &str, catalog_root: &Path, name: &str, sel: &str) -> Result<Snap> {
    if name.is_empty() || name.contains(['/', '@', ' ']) || name.parse::<u64>().is_ok() {
        bail!("pointer name '{name}': use letters, digits, '-' or '_', not a number");
    }
    let path = Path::new(source);
    let snap = if crate::volume::is_volume(path) {
        let v = crate::volume::Volume::open(
            path,
            crate::volume::store::Access::Read,
            crate::lock::Wait::Yes,
        )?;
        v.snapshot(Some(sel.strip_prefix('@').unwrap_or(sel)))?
            .snap
            .clone()
    } else {
        let canon = std::fs::canonicalize(path)
            .with_context(|| format!("cannot access source {source}"))?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(canon.as_os_str());
        let cat =
            crate::catalog::Catalog::open(catalog_root, bytes, crate::dump::DEFAULT_BLOCK_SIZE)?;
        let id: u64 = sel.parse().map_err(|_| {
            anyhow!("snapshot '{sel}': give a snapshot id (see snapdump snapshots)")
        })?;
        cat.state
            .snapshots
            .iter()
            .find(|s| s.snap.id == id)
            .map(|s| s.snap.clone())
            .ok_or_else(|| {
                anyhow!(
                    "the catalog of {source} holds no snapshot {id}; snapdump snapshots lists them"
                )
            })?
    };
    let s = Snap::of(&snap);
    registry_of(source, catalog_root)?.update(|r| r.set_pointer(name, s.clone()))?;
    Ok(s)
}

/// The record of replicas of a source (a tree under `catalog_root`, or a
/// volume file).
pub fn registry_of(source: &str, catalog_root: &Path) -> Result<registry::RegistryFile> {
    let path = Path::new(source);
    if crate::volume::is_volume(path) {
        let vol = crate::volume::Volume::open(
            path,
            crate::volume::store::Access::Read,
            crate::lock::Wait::Yes,
        )?;
        return Ok(registry::RegistryFile::for_volume(
            catalog_root,
            &vol.sb.uuid,
        ));
    }
    let canon =
        std::fs::canonicalize(path).with_context(|| format!("cannot access source {source}"))?;
    Ok(registry::RegistryFile::new(&crate::catalog::source_dir(
        catalog_root,
        std::os::unix::ffi::OsStrExt::as_bytes(canon.as_os_str()),
    )))
}

/// The replicas of volume `path` (as recorded under `catalog_root`) whose
/// newest master is the snapshot `sel` names: deleting that snapshot, or
/// making it a shadow, leaves them no base, so their next replicate is a
/// full copy (seed 004 keeps a master until every destination moved past
/// it). Returns the snapshot's description and those replicas.
pub fn replicas_needing(
    path: &Path,
    catalog_root: &Path,
    sel: &str,
) -> Result<(String, Vec<registry::Replica>)> {
    let vol = crate::volume::Volume::open(
        path,
        crate::volume::store::Access::Read,
        crate::lock::Wait::Yes,
    )?;
    let snap = vol.snapshot(Some(sel))?;
    let uuid = crate::ids::hex(&snap.snap.uuid);
    let what = format!("snapshot @{} of {}", snap.id, path.display());
    let reg = registry::RegistryFile::for_volume(catalog_root, &vol.sb.uuid).load()?;
    let needing = reg
        .replicas
        .into_iter()
        .filter(|r| r.newest.as_ref().is_some_and(|n| n.uuid == uuid))
        .collect();
    Ok((what, needing))
}

/// A local destination inside the source tree would be replicated into
/// itself, growing every run; a volume cannot be its own replica.
fn refuse_inside(source: &Path, is_vol: bool, dest: &Path) -> Result<()> {
    let Ok(src) = std::fs::canonicalize(source) else {
        return Ok(()); // the run reports a missing source itself
    };
    let abs = std::fs::canonicalize(dest).ok().or_else(|| {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Some(std::fs::canonicalize(parent).ok()?.join(dest.file_name()?))
    });
    let Some(abs) = abs else {
        return Ok(());
    };
    if is_vol && abs == src {
        bail!(
            "destination {} is the source volume itself; replicate into another volume or directory",
            dest.display()
        );
    }
    if !is_vol && abs.starts_with(&src) {
        bail!(
            "destination {} is inside the source {}: it would be replicated into itself; choose a destination outside it",
            dest.display(),
            source.display()
        );
    }
    Ok(())
}

/// A destination as named on the command line.
#[derive(Debug, PartialEq, Eq)]
pub struct DestSpec {
    /// `[USER@]HOST` for a remote destination.
    pub host: Option<String>,
    /// The path there.
    pub path: String,
    /// A volume (`.vol`, or an existing volume file) rather than a directory.
    pub volume: bool,
}

/// Parses `PATH.vol`, `DIR` or `[USER@]HOST:PATH` (a colon before any
/// slash makes it remote, as for rsync and scp).
pub fn parse_dest(s: &str) -> Result<DestSpec> {
    if s.is_empty() {
        bail!("empty destination; name a volume PATH.vol, a directory, or HOST:PATH");
    }
    let (host, path) = match s.split_once(':') {
        Some((h, p)) if !h.is_empty() && !h.contains('/') => (Some(h.to_string()), p.to_string()),
        _ => (None, s.to_string()),
    };
    if path.is_empty() {
        bail!("destination {s}: no path after the host; write HOST:PATH");
    }
    let volume =
        path.ends_with(".vol") || (host.is_none() && crate::volume::is_volume(Path::new(&path)));
    Ok(DestSpec { host, path, volume })
}

/// Quotes a word for the remote shell.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The destination's `snapdump serve`, running.
struct Peer {
    child: std::process::Child,
}

impl Peer {
    fn start(opts: &ReplicateOptions, d: &DestSpec) -> Result<(Peer, Channel)> {
        let flag = if d.volume { "--volume" } else { "--target" };
        let mut cmd = match &d.host {
            None => {
                let exe = std::env::current_exe().context("cannot find the snapdump binary")?;
                let mut c = std::process::Command::new(exe);
                // `--volume=PATH`: a path starting with '-' stays a path.
                c.args(["serve", &format!("{flag}={}", d.path)]);
                if opts.wait == crate::lock::Wait::No {
                    c.arg("--no-wait");
                }
                if opts.inplace && !d.volume {
                    c.arg("--inplace");
                }
                c
            }
            Some(h) => {
                let mut words = opts.rsh.split_whitespace();
                let prog = words
                    .next()
                    .ok_or_else(|| anyhow!("--rsh is empty; name a remote shell such as ssh"))?;
                let mut c = std::process::Command::new(prog);
                c.args(words);
                c.arg(h);
                c.arg(format!(
                    "{} serve {}{}{}",
                    sh_quote(&opts.remote_snapdump),
                    sh_quote(&format!("{flag}={}", d.path)),
                    if opts.wait == crate::lock::Wait::No {
                        " --no-wait"
                    } else {
                        ""
                    },
                    if opts.inplace && !d.volume {
                        " --inplace"
                    } else {
                        ""
                    }
                ));
                c
            }
        };
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().with_context(|| match &d.host {
            Some(_) => format!("cannot run the remote shell '{}'", opts.rsh),
            None => "cannot start snapdump serve".to_string(),
        })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let ch = Channel::new(
            Box::new(std::io::BufReader::with_capacity(1 << 16, stdout)),
            Box::new(std::io::BufWriter::with_capacity(1 << 20, stdin)),
            &opts.dest,
        );
        Ok((Peer { child }, ch))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The channel (its stdin) is closed first by the caller; the
        // remote side then ends on its own.
        let _ = self.child.wait();
    }
}

/// Runs one replication step.
pub fn replicate(opts: &ReplicateOptions, report: &Report) -> Result<ReplicateSummary> {
    let started = std::time::Instant::now();
    let d = parse_dest(&opts.dest)?;
    let (vpath, vsel) = crate::volume::split_spec(&opts.source);
    let is_vol = crate::volume::is_volume(&vpath);
    let sel = match (&opts.snapshot, vsel) {
        _ if !is_vol && opts.snapshot.is_some() => bail!(
            "a tree source always sends a new snapshot; --snapshot picks one of a volume source"
        ),
        (Some(_), Some(_)) => bail!(
            "give the snapshot either as {}@SNAPSHOT or with --snapshot, not both",
            vpath.display()
        ),
        (Some(s), None) => Some(resolve_pointer(&vpath, &opts.catalog_root, s)?),
        (None, s) => s,
    };
    if d.host.is_none() {
        refuse_inside(&vpath, is_vol, Path::new(&d.path))?;
    }
    // The source's catalog lock comes first, the destination's receiver
    // lock second, in every run: two runs of one source into one
    // destination wait for each other here instead of deadlocking.
    let locked = if is_vol {
        None
    } else {
        Some(crate::dump::lock_catalog(
            Path::new(&opts.source),
            &opts.catalog_root,
            opts.wait,
        )?)
    };
    let (peer, ch) = Peer::start(opts, &d)?;
    let ch = Arc::new(Mutex::new(ch));
    let run = if is_vol {
        read_hello(&ch, &opts.dest)
            .and_then(|hello| from_volume(opts, &vpath, sel.as_deref(), &hello, &ch))
    } else {
        // The destination's hello is read while the source is scanned.
        let reader = {
            let ch = ch.clone();
            let opts_dest = opts.dest.clone();
            std::thread::spawn(move || read_hello(&ch, &opts_dest))
        };
        from_tree(opts, locked.expect("a tree source"), reader, &ch, report)
    };
    let mut summary = match run {
        Ok(s) => s,
        Err(e) => {
            // Tell the destination why (it keeps what arrived for a
            // resume); it may have gone already.
            if let Ok(mut c) = ch.try_lock() {
                let _ = c.send(
                    Kind::Failure,
                    &protocol::Failure {
                        message: format!("{e:#}"),
                    },
                );
            }
            return Err(e);
        }
    };
    let ch = Arc::try_unwrap(ch)
        .map_err(|_| anyhow!("internal: channel still shared"))?
        .into_inner()
        .map_err(|_| anyhow!("internal: channel poisoned"))?;
    summary.wire_bytes_sent = ch.bytes_out;
    summary.wire_bytes_received = ch.bytes_in;
    drop(ch);
    drop(peer);
    summary.command = "replicate";
    summary.status = report.status_word();
    summary.source = opts.source.clone();
    summary.destination = opts.dest.clone();
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Reads and checks the destination's hello.
fn read_hello(ch: &Arc<Mutex<Channel>>, dest: &str) -> Result<Hello> {
    let hello: Hello = lock(ch)?.expect(Kind::Hello).map_err(|e| {
        if format!("{e:#}").contains("closed the connection") {
            anyhow!("{e:#}; is snapdump installed there (--remote-snapdump) and the path writable?")
        } else {
            e
        }
    })?;
    if hello.protocol != protocol::PROTOCOL_VERSION {
        bail!(
            "{dest} speaks replication protocol {} (snapdump {}), this snapdump speaks {}; install the same version on both sides",
            hello.protocol,
            hello.tool_version,
            protocol::PROTOCOL_VERSION
        );
    }
    Ok(hello)
}

/// The destination's hello, read on a thread while the source is scanned.
type HelloReader = std::thread::JoinHandle<Result<Hello>>;

/// A cut transfer of a tree source, recorded in its catalog directory
/// before the first byte is sent, so the next run regenerates the same
/// stream.
#[derive(Serialize, Deserialize, Clone)]
struct Pending {
    replica_id: String,
    source_uuid: String,
    snapshot: Snap,
    base: Option<u64>,
    stream_id: String,
}

fn pending_path(catalog_dir: &Path, replica: &str) -> PathBuf {
    catalog_dir.join(format!("replicate-{replica}.json"))
}

/// The hooks of a tree source's sink dump.
struct TreeHooks<'a> {
    opts: &'a ReplicateOptions,
    /// Read by `choose` (from `reader`).
    hello_slot: Option<Hello>,
    reader: Option<HelloReader>,
    ch: Arc<Mutex<Channel>>,
    summary: ReplicateSummary,
    /// What was chosen: the action, and the decision's base.
    action: Option<Action>,
    base: Option<SnapshotRef>,
    top: Option<SnapshotRef>,
    catalog_dir: PathBuf,
    resume_chunks: Vec<String>,
    sink_state: Option<Arc<Mutex<SinkState>>>,
    reason: String,
    source_uuid: [u8; 16],
    /// The catalog's newest snapshot when the choice was made.
    newest: Option<SnapshotRef>,
}

impl TreeHooks<'_> {
    /// Waits for the destination's hello (once).
    fn await_hello(&mut self) -> Result<()> {
        if let Some(r) = self.reader.take() {
            let h = r
                .join()
                .map_err(|_| anyhow!("internal: the hello reader panicked"))??;
            self.hello_slot = Some(h);
        }
        Ok(())
    }

    /// The destination's hello (after `choose`).
    fn hello(&self) -> &Hello {
        self.hello_slot.as_ref().expect("hello read by choose")
    }

    fn send_decision(&self, action: Action, source_uuid: &[u8; 16]) -> Result<()> {
        self.send_decision_to(action, source_uuid, self.top.as_ref(), &self.reason)
    }

    /// The Decision, with the decision's base and the given top and reason.
    fn send_decision_to(
        &self,
        action: Action,
        source_uuid: &[u8; 16],
        top: Option<&SnapshotRef>,
        reason: &str,
    ) -> Result<()> {
        lock(&self.ch)?.send(
            Kind::Decision,
            &Decision {
                action,
                source_uuid: crate::ids::hex(source_uuid),
                base: self.base.as_ref().map(Snap::of),
                top: top.map(Snap::of),
                reason: reason.to_string(),
            },
        )
    }
}

fn lock(ch: &Arc<Mutex<Channel>>) -> Result<std::sync::MutexGuard<'_, Channel>> {
    ch.lock().map_err(|_| anyhow!("internal: channel poisoned"))
}

impl SinkHooks for TreeHooks<'_> {
    fn destination(&self) -> String {
        match &self.hello_slot {
            Some(h) => format!("{} ({})", self.opts.dest, h.replica_id),
            None => self.opts.dest.clone(),
        }
    }

    fn choose(
        &mut self,
        catalog: &crate::catalog::Catalog,
        scanned_at: crate::tree::Time,
    ) -> Result<Choice> {
        self.await_hello()?;
        let hello = self.hello_slot.clone().expect("just read");
        let hello = &hello;
        let st = &catalog.state;
        let snaps: Vec<SnapshotRef> = st.snapshots.iter().map(|s| s.snap.clone()).collect();
        let path = String::from_utf8_lossy(&st.source_path).into_owned();
        let pending: Option<Pending> = std::fs::read(pending_path(&catalog.dir, &hello.replica_id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let me = crate::ids::hex(&st.source_uuid);
        self.source_uuid = st.source_uuid;
        self.newest = snaps.last().cloned();
        // A transfer cut earlier: resume it, or apply it if it is whole
        // and the catalog already recorded it.
        if let Some(inc) = &hello.incoming {
            let known = snaps
                .last()
                .is_some_and(|s| crate::ids::hex(&s.uuid) == inc.snapshot.uuid);
            if inc.complete && known && inc.source_uuid == me && !self.opts.full {
                self.action = Some(Action::Commit);
                self.top = snaps.last().cloned();
                self.reason =
                    "the destination holds the whole last transfer; it applies it now".into();
                self.send_decision(Action::Commit, &st.source_uuid)?;
                return Ok(Choice::Stop);
            }
            if let Some(p) = pending.as_ref().filter(|p| {
                p.snapshot.uuid == inc.snapshot.uuid
                    && p.stream_id == inc.stream_id
                    && p.snapshot.id == st.next_snap_id
                    && (st.snapshots.is_empty() || p.source_uuid == me)
                    && !self.opts.full
            }) {
                let base_ok = match p.base {
                    None => true,
                    Some(b) => st.snapshots.iter().any(|s| s.snap.id == b),
                };
                if base_ok {
                    self.action = Some(Action::Resume);
                    self.base = p
                        .base
                        .and_then(|b| st.snapshots.iter().find(|s| s.snap.id == b))
                        .map(|s| s.snap.clone());
                    self.top = Some(p.snapshot.to_ref()?);
                    self.resume_chunks = inc.chunks.clone();
                    self.reason = format!("resuming the cut transfer of {} bytes", inc.bytes);
                    return Ok(Choice::Dump {
                        base: p.base,
                        snapshot: p.snapshot.to_ref()?,
                        stream_id: protocol::uuid16(&p.stream_id)?,
                        source_uuid: protocol::uuid16(&p.source_uuid)?,
                    });
                }
            }
        }
        let view = SourceView {
            uuid: st.source_uuid,
            path: &path,
            snapshots: &snaps,
        };
        let (action, base) = match decide(&view, hello, self.opts.full) {
            Plan::Conflict(m) => {
                self.reason = m.clone();
                self.send_decision(Action::Conflict, &st.source_uuid)?;
                bail!("{m}");
            }
            Plan::Full(why) => {
                self.reason = why;
                (Action::Full, None)
            }
            Plan::Increment(b) => {
                self.reason = format!("the destination's newest master is snapshot {}", b.id);
                (Action::Increment, Some(b))
            }
        };
        let snapshot = SnapshotRef {
            id: st.next_snap_id,
            uuid: crate::ids::random_id(),
            time: scanned_at,
            level: if base.is_some() { 1 } else { 0 },
        };
        let stream_id = crate::ids::random_id();
        self.action = Some(action);
        self.base = base.clone();
        self.top = Some(snapshot.clone());
        let p = Pending {
            replica_id: hello.replica_id.clone(),
            source_uuid: me,
            snapshot: Snap::of(&snapshot),
            base: base.as_ref().map(|b| b.id),
            stream_id: crate::ids::hex(&stream_id),
        };
        std::fs::create_dir_all(&catalog.dir)?;
        crate::atomic::replace_file(
            &pending_path(&catalog.dir, &hello.replica_id),
            &serde_json::to_vec_pretty(&p)?,
        )?;
        Ok(Choice::Dump {
            base: base.map(|b| b.id),
            snapshot,
            stream_id,
            source_uuid: st.source_uuid,
        })
    }

    fn gate(&self, g: &Gate) -> Result<GateAnswer> {
        let action = self.action.expect("chosen");
        let source_uuid = self.source_uuid;
        // Behind the newest snapshot, which the tree still is (another
        // destination was served since): this one gets that snapshot, not
        // a new copy of it, so destinations served in turn all reach
        // "current" instead of each run taking a snapshot for the other.
        if action == Action::Increment && !g.base_is_newest && g.unchanged_since_newest {
            if let Some(n) = &self.newest {
                let _ =
                    std::fs::remove_file(pending_path(&self.catalog_dir, &self.hello().replica_id));
                self.send_decision_to(
                    Action::Increment,
                    &source_uuid,
                    Some(n),
                    &format!(
                        "the tree is still snapshot {}, newer than the destination's master",
                        n.id
                    ),
                )?;
                return Ok(GateAnswer::Resend(n.clone()));
            }
        }
        if action == Action::Increment && g.base_is_newest && !g.changed {
            self.send_decision_to(
                Action::Current,
                &source_uuid,
                self.base.as_ref(),
                "nothing changed since the destination's newest master",
            )?;
            return Ok(GateAnswer::Stop);
        }
        self.send_decision(action, &source_uuid)?;
        Ok(GateAnswer::Dump)
    }

    fn sink(&mut self) -> Box<dyn Write + Send> {
        let held = self.hello().incoming.as_ref().map_or(0, |i| i.bytes);
        let chunks = std::mem::take(&mut self.resume_chunks);
        let held = if chunks.is_empty() { 0 } else { held };
        let state = Arc::new(Mutex::new(SinkState::new(chunks, held)));
        self.sink_state = Some(state.clone());
        Box::new(ChannelSink {
            ch: self.ch.clone(),
            state,
        })
    }

    fn before_commit(&mut self, _snap: &SnapshotRef) -> Result<()> {
        let s = self.sink_state.as_ref().expect("sink asked");
        let s = s.lock().map_err(|_| anyhow!("internal: sink poisoned"))?;
        self.summary.stream_bytes = s.pos;
        self.summary.bytes_sent = s.sent;
        self.summary.bytes_resumed = s.pos - s.sent;
        let mut ch = lock(&self.ch)?;
        ch.send(Kind::End, &End { bytes: s.pos })?;
        ch.expect::<protocol::Received>(Kind::Received)?;
        crate::failpoint::hit("replicate-before-commit");
        Ok(())
    }
}

/// Where the regenerated stream stands against the destination's chunks.
struct SinkState {
    /// Stream bytes produced so far.
    pos: u64,
    /// Stream bytes actually sent.
    sent: u64,
    /// Digests of the destination's held chunks (resume).
    chunks: Vec<String>,
    /// Bytes the destination holds.
    held: u64,
    /// Still matching held chunks: bytes of the current chunk wait here.
    matching: bool,
    pending: Vec<u8>,
}

impl SinkState {
    fn new(chunks: Vec<String>, held: u64) -> SinkState {
        SinkState {
            pos: 0,
            sent: 0,
            held,
            matching: !chunks.is_empty(),
            chunks,
            pending: Vec::new(),
        }
    }
}

/// The stream writer's output: frames on the channel, skipping the chunks
/// the destination already holds.
struct ChannelSink {
    ch: Arc<Mutex<Channel>>,
    state: Arc<Mutex<SinkState>>,
}

impl ChannelSink {
    fn push(&mut self, data: &[u8]) -> Result<()> {
        let mut s = self.state.lock().map_err(|_| anyhow!("sink poisoned"))?;
        let mut rest = data;
        while s.matching && !rest.is_empty() {
            let chunk_start = s.pos - s.pending.len() as u64;
            // The bytes the destination holds of this chunk (the last
            // held chunk may be short).
            let target = CHUNK.min(s.held.saturating_sub(chunk_start)) as usize;
            if target == 0 {
                s.matching = false;
                break;
            }
            let n = (target - s.pending.len()).min(rest.len());
            s.pending.extend_from_slice(&rest[..n]);
            s.pos += n as u64;
            rest = &rest[n..];
            if s.pending.len() < target {
                continue;
            }
            let i = (chunk_start / CHUNK) as usize;
            let same = s
                .chunks
                .get(i)
                .is_some_and(|d| *d == protocol::chunk_digest(&s.pending));
            let pending = std::mem::take(&mut s.pending);
            if same {
                continue;
            }
            // Differs from here: send from the start of this chunk on.
            s.matching = false;
            lock(&self.ch)?.send_data(chunk_start, &pending)?;
            s.sent += pending.len() as u64;
        }
        if !rest.is_empty() {
            let at = s.pos;
            lock(&self.ch)?.send_data(at, rest)?;
            s.pos += rest.len() as u64;
            s.sent += rest.len() as u64;
        }
        Ok(())
    }
}

impl Write for ChannelSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    /// The stream writer flushes at the end: a chunk that was still being
    /// compared when the stream ended is not what the destination holds
    /// (it holds more), so it is sent.
    fn flush(&mut self) -> std::io::Result<()> {
        let r = (|| -> Result<()> {
            let mut s = self.state.lock().map_err(|_| anyhow!("sink poisoned"))?;
            if s.matching && !s.pending.is_empty() {
                let start = s.pos - s.pending.len() as u64;
                let pending = std::mem::take(&mut s.pending);
                lock(&self.ch)?.send_data(start, &pending)?;
                s.sent += pending.len() as u64;
            }
            if s.sent == 0 && s.pos < s.held {
                // The stream is shorter than what is held, and all of it
                // matched: an empty frame at its end makes the
                // destination cut the rest.
                let at = s.pos;
                lock(&self.ch)?.send_data_frame(at, &[])?;
            }
            s.matching = false;
            lock(&self.ch)?.flush()
        })();
        r.map_err(std::io::Error::other)
    }
}

fn from_tree(
    opts: &ReplicateOptions,
    locked: (PathBuf, crate::lock::Lock),
    reader: HelloReader,
    ch: &Arc<Mutex<Channel>>,
    report: &Report,
) -> Result<ReplicateSummary> {
    let source = std::fs::canonicalize(&opts.source)
        .with_context(|| format!("cannot access source {}", opts.source))?;
    let catalog_dir = crate::catalog::source_dir(
        &opts.catalog_root,
        std::os::unix::ffi::OsStrExt::as_bytes(source.as_os_str()),
    );
    let mut hooks = TreeHooks {
        opts,
        hello_slot: None,
        reader: Some(reader),
        ch: ch.clone(),
        summary: ReplicateSummary::default(),
        action: None,
        base: None,
        top: None,
        catalog_dir: catalog_dir.clone(),
        resume_chunks: Vec::new(),
        sink_state: None,
        reason: String::new(),
        source_uuid: [0; 16],
        newest: None,
    };
    let sd = SinkDump {
        source,
        catalog_root: opts.catalog_root.clone(),
        compression: opts.compression,
        wait: opts.wait,
        cross_mounts: opts.cross_mounts,
    };
    let registry = registry::RegistryFile::new(&catalog_dir);
    let written = dump_to_sink(&sd, locked, &mut hooks, report);
    // Failed before the choice (say, the catalog was busy): the hello is
    // still read, so the destination is not left waiting for it.
    if let Err(e) = hooks.await_hello() {
        return Err(written.err().unwrap_or(e));
    }
    let Some(hello) = hooks.hello_slot.clone() else {
        // The hello itself failed (choose returned that error).
        return Err(written
            .err()
            .unwrap_or_else(|| anyhow!("internal: no hello from {}", opts.dest)));
    };
    let hello = &hello;
    // Whatever happened, what the destination said it holds is recorded
    // (a lost acknowledgement is caught up here).
    if hooks.action.is_some() {
        let held = newest_held(hello, &hooks.source_uuid);
        registry.saw(&hello.replica_id, &hello.kind, &opts.dest, held)?;
    }
    let written = written?;
    let action = hooks.action.expect("chosen");
    let mut summary = std::mem::take(&mut hooks.summary);
    summary.reason = hooks.reason.clone();
    summary.base = hooks.base.clone();
    match (action, written) {
        (Action::Commit, _) | (_, Some(_)) => {
            let mut c = lock(ch)?;
            c.send(Kind::Commit, &serde_json::json!({}))?;
            let ack: Ack = c.expect(Kind::Ack)?;
            let _ = std::fs::remove_file(pending_path(&hooks.catalog_dir, &hello.replica_id));
            registry.acked(
                &hello.replica_id,
                &hello.kind,
                &opts.dest,
                ack.snapshot.clone(),
            )?;
            summary.decision = format!("{action:?}").to_lowercase();
            summary.top = Some(ack.snapshot.to_ref()?);
        }
        (_, None) => {
            // Nothing was sent: no transfer to resume.
            let _ = std::fs::remove_file(pending_path(&hooks.catalog_dir, &hello.replica_id));
            summary.decision = "current".into();
            summary.top = hooks.base.clone();
            summary.reason = "nothing changed since the destination's newest master".into();
        }
    }
    Ok(summary)
}

/// The destination's newest master of `source`, as its hello said.
fn newest_held(hello: &Hello, source: &[u8; 16]) -> Option<Snap> {
    let me = crate::ids::hex(source);
    hello
        .follows
        .iter()
        .find(|f| f.source_uuid == me)
        .and_then(|f| f.snapshots.last().cloned())
}

fn from_volume(
    opts: &ReplicateOptions,
    path: &Path,
    sel: Option<&str>,
    hello: &Hello,
    ch: &Arc<Mutex<Channel>>,
) -> Result<ReplicateSummary> {
    use crate::volume::store::{Access, Volume};
    let vol = Volume::open(path, Access::Read, opts.wait)?;
    let top = vol.snapshot(sel)?;
    if top.shadow {
        bail!(
            "snapshot @{} of {} is a shadow (its blocks may be reused); replicate a kept snapshot",
            top.id,
            path.display()
        );
    }
    // In the original source's VBN space where the volume recorded it, so
    // the destination follows the original source (a cascade survives the
    // loss of this volume); else in this volume's own space.
    let space = crate::volume::image::replica_space(&vol, top);
    let src_uuid = crate::volume::image::stream_source_id(&vol, top, space);
    let entry = vol
        .state
        .sources
        .iter()
        .find(|e| e.uuid == top.source)
        .ok_or_else(|| anyhow!("snapshot @{}: its source is not recorded", top.id))?;
    let src_path = String::from_utf8_lossy(&entry.path).into_owned();
    let kept: Vec<&crate::volume::format::VolSnapshot> = vol
        .state
        .snapshots
        .iter()
        .filter(|s| s.source == top.source && s.id <= top.id)
        .collect();
    let snaps: Vec<SnapshotRef> = kept.iter().map(|s| s.snap.clone()).collect();
    let view = SourceView {
        uuid: src_uuid,
        path: &src_path,
        snapshots: &snaps,
    };
    let send = |c: &mut Channel, action: Action, base: Option<&SnapshotRef>, reason: &str| {
        c.send(
            Kind::Decision,
            &Decision {
                action,
                source_uuid: crate::ids::hex(&src_uuid),
                base: base.map(Snap::of),
                top: Some(Snap::of(&top.snap)),
                reason: reason.to_string(),
            },
        )
    };
    let registry = registry::RegistryFile::for_volume(&opts.catalog_root, &vol.sb.uuid);
    registry.saw(
        &hello.replica_id,
        &hello.kind,
        &opts.dest,
        newest_held(hello, &src_uuid),
    )?;
    let saw = |ack: &Ack| {
        registry.acked(
            &hello.replica_id,
            &hello.kind,
            &opts.dest,
            ack.snapshot.clone(),
        )
    };
    let mut summary = ReplicateSummary::default();
    let mut c = lock(ch)?;
    let inc: Option<&Incoming> = hello.incoming.as_ref();
    let top_hex = crate::ids::hex(&top.snap.uuid);
    if let Some(i) = inc.filter(|i| i.complete && i.snapshot.uuid == top_hex && !opts.full) {
        let _ = i;
        summary.reason = "the destination holds the whole last transfer; it applies it now".into();
        send(&mut c, Action::Commit, None, &summary.reason)?;
        c.send(Kind::Commit, &serde_json::json!({}))?;
        let ack: Ack = c.expect(Kind::Ack)?;
        saw(&ack)?;
        summary.decision = "commit".into();
        summary.top = Some(ack.snapshot.to_ref()?);
        return Ok(summary);
    }
    // Asked for a snapshot older than one the destination already holds
    // (`--snapshot`, `PATH@ID`): sending it would go backwards.
    if !opts.full {
        if let Some(newer) = newest_held(hello, &src_uuid).and_then(|h| {
            vol.state.snapshots.iter().find(|s| {
                s.source == top.source && s.id > top.id && crate::ids::hex(&s.snap.uuid) == h.uuid
            })
        }) {
            let m = format!(
                "{} {} already holds snapshot {} (@{} here), newer than snapshot {} (@{}) asked for; replicate a newer snapshot, or --full to go back to this one",
                hello.kind, hello.path, newer.snap.id, newer.id, top.snap.id, top.id
            );
            send(&mut c, Action::Conflict, None, &m)?;
            bail!("{m}");
        }
    }
    let (mut action, base) = match decide(&view, hello, opts.full) {
        Plan::Conflict(m) => {
            send(&mut c, Action::Conflict, None, &m)?;
            bail!("{m}");
        }
        Plan::Full(why) => {
            summary.reason = why;
            (Action::Full, None)
        }
        Plan::Increment(b) => {
            summary.reason = format!("the destination's newest master is snapshot {}", b.id);
            (Action::Increment, Some(b))
        }
    };
    summary.base = base.clone();
    if base.as_ref().is_some_and(|b| b.uuid == top.snap.uuid) {
        send(
            &mut c,
            Action::Current,
            base.as_ref(),
            "the destination holds this snapshot",
        )?;
        summary.decision = "current".into();
        summary.top = base;
        summary.reason = "the destination holds this snapshot".into();
        return Ok(summary);
    }
    let base_vs = base
        .as_ref()
        .and_then(|b| kept.iter().find(|s| s.snap.uuid == b.uuid).copied());
    // The same (top, base) as a cut transfer: the same stream id makes the
    // regenerated stream byte for byte the one the destination holds part of.
    let base_hex = base.as_ref().map(|b| crate::ids::hex(&b.uuid));
    let resumed = inc.filter(|i| {
        i.snapshot.uuid == top_hex
            && i.source_uuid == crate::ids::hex(&src_uuid)
            && i.base.as_ref().map(|b| b.uuid.clone()) == base_hex
    });
    let stream_id = match resumed {
        Some(i) => {
            action = Action::Resume;
            summary.reason = format!("resuming the cut transfer of {} bytes", i.bytes);
            protocol::uuid16(&i.stream_id)?
        }
        None => crate::ids::random_id(),
    };
    send(&mut c, action, base.as_ref(), &summary.reason)?;
    drop(c);
    let state = Arc::new(Mutex::new(SinkState::new(
        resumed.map(|i| i.chunks.clone()).unwrap_or_default(),
        resumed.map_or(0, |i| i.bytes),
    )));
    let sink = ChannelSink {
        ch: ch.clone(),
        state: state.clone(),
    };
    crate::volume::image::write_replica_stream(
        &vol,
        top,
        base_vs,
        Box::new(sink),
        opts.compression,
        stream_id,
        space,
    )?;
    let s = state.lock().map_err(|_| anyhow!("sink poisoned"))?;
    summary.stream_bytes = s.pos;
    summary.bytes_sent = s.sent;
    summary.bytes_resumed = s.pos - s.sent;
    let mut c = lock(ch)?;
    c.send(Kind::End, &End { bytes: s.pos })?;
    c.expect::<protocol::Received>(Kind::Received)?;
    c.send(Kind::Commit, &serde_json::json!({}))?;
    let ack: Ack = c.expect(Kind::Ack)?;
    saw(&ack)?;
    summary.decision = format!("{action:?}").to_lowercase();
    summary.top = Some(ack.snapshot.to_ref()?);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let d = parse_dest("backup@host:/srv/r.vol").unwrap();
        assert_eq!(d.host.as_deref(), Some("backup@host"));
        assert!(d.volume);
        let d = parse_dest("/srv/a:b/dir").unwrap();
        assert_eq!(d.host, None);
        assert!(!d.volume);
        assert!(parse_dest("host:").is_err());
        assert_eq!(sh_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(sh_quote("/srv/x.vol"), "/srv/x.vol");
    }
}
