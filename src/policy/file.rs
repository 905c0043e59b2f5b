//! The policy file (TOML, man/snapdump-policy.5): what to dump, when and
//! at which level, what to keep, when to coalesce, where to replicate.
//! Every mistake is refused with its line, before anything runs.

use anyhow::{bail, Result};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// dump(8)'s modified Tower of Hanoi sequence of levels.
pub const HANOI: [u8; 10] = [0, 3, 2, 5, 4, 7, 6, 9, 8, 9];

/// A parsed and checked policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// The file it was read from (for messages and installs).
    pub path: PathBuf,
    /// The directory tree to dump.
    pub source: PathBuf,
    /// The catalog root (None: dump's default).
    pub catalog: Option<PathBuf>,
    /// Where streams go.
    pub streams: Streams,
    /// When to dump, at which level.
    pub schedule: Schedule,
    /// What to keep (None: everything).
    pub keep: Option<Keep>,
    /// When to write a synthetic full of the newest snapshot.
    pub coalesce: Coalesce,
    /// Where to replicate, each with its own retention.
    pub replicate: Vec<Replica>,
    /// Incremental mirrors the runs keep in step (each a directory; its
    /// base is the full stream of the chain it follows).
    pub mirror: Vec<PathBuf>,
}

/// Where streams go: files in a directory the policy owns, or tape files
/// appended to a tape (the directory then holds only the policy's state
/// and its tape index).
#[derive(Clone, Debug, PartialEq)]
pub struct Streams {
    /// The directory (created when missing).
    pub dir: PathBuf,
    /// zstd level of the dumps.
    pub compression: i32,
    /// The streams' file name template (see [`Streams::name`]).
    pub name: String,
    /// The tape the dumps are appended to, instead of files in `dir`.
    pub tape: Option<Tape>,
    /// The volume each dump is received into, instead of files in `dir`
    /// (a `.vol` file; created when missing): the snapshots live there,
    /// each restorable on its own, and `dir` holds only the policy's state
    /// and, for the length of a run, the stream on its way in.
    pub volume: Option<PathBuf>,
}

/// A tape the policy appends its dumps to, one tape file each
/// (formats/tape.md). A tape is never rewritten by a run: pruning a
/// snapshot takes it out of the catalog, and a cartridge none of whose
/// dumps is kept any more is named as free to reuse.
#[derive(Clone, Debug, PartialEq)]
pub struct Tape {
    /// A non-rewinding tape drive (`/dev/nstN`) or a virtual tape (`*.tap`).
    pub device: String,
    /// The command that loads the next cartridge when one is full
    /// (`dump --new-volume`); None: a full cartridge fails the dump.
    pub new_volume: Option<String>,
    /// Bytes per tape record.
    pub block_size: u64,
    /// A virtual tape's capacity in bytes (0: unlimited).
    pub capacity: u64,
}

/// The default file name template.
pub const DEFAULT_NAME: &str = "{source}.{id}.L{level}.{time}.sdump";

impl Streams {
    /// The file name of snapshot `id`'s stream from the template:
    /// `{source}` the source's last component, `{id}` the snapshot id
    /// (six digits at least), `{level}`, `{time}` (the snapshot's UTC time,
    /// digits only); a synthetic full ends in `.full.sdump`.
    pub fn name(&self, source: &str, id: u64, level: u8, time: &str, full: bool) -> String {
        let n = self
            .name
            .replace("{source}", source)
            .replace("{id}", &format!("{id:06}"))
            .replace("{level}", &level.to_string())
            .replace("{time}", time);
        if full {
            format!("{}.full.sdump", n.strip_suffix(".sdump").unwrap_or(&n))
        } else {
            n
        }
    }
}

/// When a dump is due and at which level.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// One dump per `every`; the dump in the k-th period after the newest
    /// full image's takes `levels[k]`, and a level 0 once the list is used
    /// up (or when periods were missed across its end). Counting periods,
    /// not dumps, keeps the cycle right however many snapshots retention
    /// has pruned and however often `run` runs.
    Levels {
        /// Interval between dumps.
        every: Duration,
        /// The level cycle, starting with 0.
        levels: Vec<u8>,
    },
    /// A level 0 when the newest full is `full_every` old, else an
    /// increment on the newest snapshot every `increments_every`.
    Periodic {
        /// Age of the newest full at which a new level 0 is due.
        full_every: Duration,
        /// Interval between increments.
        increments_every: Duration,
    },
}

impl Schedule {
    /// The interval between dumps (`every`, or `increments_every`): the
    /// longest gap between two snapshots that `within` counts in full.
    pub fn interval(&self) -> Duration {
        match self {
            Schedule::Levels { every, .. } => *every,
            Schedule::Periodic {
                increments_every, ..
            } => *increments_every,
        }
    }
}

/// Retention: restic's rules, by snapshot time (UTC buckets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keep {
    /// The N newest snapshots.
    pub last: u32,
    /// The newest snapshot of each of the last N hours that have one.
    pub hourly: u32,
    /// ... days.
    pub daily: u32,
    /// ... ISO weeks (Monday to Sunday).
    pub weekly: u32,
    /// ... months.
    pub monthly: u32,
    /// ... years.
    pub yearly: u32,
    /// Every snapshot this close to the newest.
    pub within: Option<Duration>,
}

/// Triggers for a synthetic full of the newest snapshot (seed 002's
/// coalescing): any one that holds fires.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Coalesce {
    /// The newest snapshot's chain holds more than this many streams.
    pub chain: Option<u32>,
    /// Its increments together exceed this share of its full, in per cent.
    pub increments_percent: Option<u32>,
    /// Its full is at least this old.
    pub age: Option<Duration>,
    /// The streams directory's file system has less free space than
    /// this, in per cent.
    pub free_percent: Option<u32>,
}

/// A replication destination: a volume file.
#[derive(Clone, Debug, PartialEq)]
pub struct Replica {
    /// The volume (a `.vol` file; created when missing).
    pub to: PathBuf,
    /// What the volume keeps (None: everything).
    pub keep: Option<Keep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    source: toml::Spanned<PathBuf>,
    catalog: Option<toml::Spanned<PathBuf>>,
    streams: RawStreams,
    schedule: toml::Spanned<RawSchedule>,
    keep: Option<toml::Spanned<RawKeep>>,
    #[serde(default)]
    coalesce: RawCoalesce,
    #[serde(default)]
    replicate: Vec<RawReplica>,
    #[serde(default)]
    mirror: Vec<RawMirror>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStreams {
    dir: toml::Spanned<PathBuf>,
    compression: Option<Level>,
    name: Option<toml::Spanned<String>>,
    tape: Option<toml::Spanned<String>>,
    new_volume: Option<toml::Spanned<String>>,
    block_kib: Option<toml::Spanned<u64>>,
    tape_capacity: Option<toml::Spanned<String>>,
    volume: Option<toml::Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    every: Option<Dur>,
    levels: Option<Levels>,
    full_every: Option<Dur>,
    increments_every: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeep {
    #[serde(default)]
    last: u32,
    #[serde(default)]
    hourly: u32,
    #[serde(default)]
    daily: u32,
    #[serde(default)]
    weekly: u32,
    #[serde(default)]
    monthly: u32,
    #[serde(default)]
    yearly: u32,
    within: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCoalesce {
    chain: Option<toml::Spanned<u32>>,
    increments_percent: Option<Percent>,
    age: Option<Dur>,
    free_percent: Option<Percent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplica {
    to: toml::Spanned<PathBuf>,
    keep: Option<toml::Spanned<RawKeep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    dir: toml::Spanned<PathBuf>,
}

/// A duration as humantime writes it ("6h", "1d", "2weeks").
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = humantime::parse_duration(&s).map_err(|e| {
            D::Error::custom(format!(
                "{s:?} is not a duration ({e}); write e.g. \"6h\", \"1d\", \"2weeks\""
            ))
        })?;
        if v.is_zero() {
            return Err(D::Error::custom("a duration must be longer than zero"));
        }
        Ok(Dur(v))
    }
}

/// "hanoi", or a list of levels 0..9 starting with 0.
struct Levels(Vec<u8>);

impl<'de> Deserialize<'de> for Levels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Name(String),
            List(Vec<i64>),
        }
        let bad = || {
            D::Error::custom("levels is \"hanoi\" or a list of levels 0..9 that starts with 0, e.g. [0, 1, 1, 1, 1, 1, 1]")
        };
        match Either::deserialize(d).map_err(|_| bad())? {
            Either::Name(n) if n == "hanoi" => Ok(Levels(HANOI.to_vec())),
            Either::Name(_) => Err(bad()),
            Either::List(l) if l.first() == Some(&0) && l.iter().all(|v| (0..=9).contains(v)) => {
                if let Some(k) = l.iter().skip(1).position(|&v| v == 0) {
                    return Err(D::Error::custom(format!(
                        "levels has a second 0 (entry {}): each level 0 starts the cycle again, so the levels after it would never be used; end the list before it",
                        k + 2
                    )));
                }
                Ok(Levels(l.into_iter().map(|v| v as u8).collect()))
            }
            Either::List(_) => Err(bad()),
        }
    }
}

/// A zstd level 0..19.
struct Level(i32);

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        if !(0..=19).contains(&v) {
            return Err(D::Error::custom(format!(
                "compression {v} is not a zstd level 0..19"
            )));
        }
        Ok(Level(v as i32))
    }
}

/// A percentage 1..100.
struct Percent(u32);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        if !(1..=100).contains(&v) {
            return Err(D::Error::custom(format!("{v} is not a percentage 1..100")));
        }
        Ok(Percent(v as u32))
    }
}

/// `p` with `.` and `..` resolved by its spelling alone (the file system
/// may not hold it yet), so that `/srv/../srv/data` is seen to be the
/// source `/srv/data` by the checks that keep directories apart.
fn lexical(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// `p` as the file system resolves it: `.` and `..` by spelling, then
/// symlinks in the longest part of it that exists (the rest may be made
/// later), so that a source reached through a symlink is still seen to
/// hold a streams directory spelled without it.
impl Policy {
    /// What of the policy's own `path` would be (the policy file, its
    /// catalog, streams directory, a replica or a mirror), as
    /// words for a message; None when it is none of them. A summary file
    /// written there would destroy what the policy keeps.
    pub fn owns(&self, path: &Path) -> Option<String> {
        let path = resolved(path);
        let catalog = self
            .catalog
            .clone()
            .unwrap_or_else(crate::catalog::default_root);
        let inside = [
            (&catalog, "inside the catalog"),
            (&self.streams.dir, "inside the streams directory"),
        ];
        for (dir, what) in inside {
            if path.starts_with(resolved(dir)) {
                return Some(format!("{what} {}", dir.display()));
            }
        }
        if path == resolved(&self.path) {
            return Some("the policy file".into());
        }
        if let Some(t) = &self.streams.tape {
            if path == resolved(Path::new(&t.device)) {
                return Some(format!("the tape {}", t.device));
            }
        }
        if let Some(v) = &self.streams.volume {
            if path.starts_with(resolved(v)) {
                return Some(format!("the volume {}", v.display()));
            }
        }
        for r in &self.replicate {
            if path.starts_with(resolved(&r.to)) {
                return Some(format!("the replica {}", r.to.display()));
            }
        }
        for m in &self.mirror {
            if path.starts_with(resolved(m)) {
                return Some(format!("inside the mirror {}", m.display()));
            }
        }
        None
    }
}

fn resolved(p: &Path) -> PathBuf {
    resolved_within(p, 0)
}

/// [`resolved`], `depth` symlinks deep: a symlink whose target is not
/// there (yet) still resolves to where its target would be, since that is
/// where a run would write.
fn resolved_within(p: &Path, depth: u32) -> PathBuf {
    let p = lexical(p);
    let mut head = p.as_path();
    let mut tail = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(head) {
            return tail.iter().rev().fold(c, |acc, t| acc.join(t));
        }
        if let (Ok(target), true) = (std::fs::read_link(head), depth < 40) {
            let target = match head.parent() {
                Some(d) if target.is_relative() => d.join(target),
                _ => target,
            };
            let r = resolved_within(&target, depth + 1);
            return tail.iter().rev().fold(r, |acc, t| acc.join(t));
        }
        match (head.parent(), head.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_os_string());
                head = parent;
            }
            _ => return p,
        }
    }
}

/// The `[streams]` tape settings, checked; None without `tape` (the other
/// tape keys are then mistakes).
fn tape_of(raw: &RawStreams, at: &impl Fn(std::ops::Range<usize>, String)) -> Option<Tape> {
    let Some(device) = &raw.tape else {
        for (key, span) in [
            ("new_volume", raw.new_volume.as_ref().map(|v| v.span())),
            ("block_kib", raw.block_kib.as_ref().map(|v| v.span())),
            (
                "tape_capacity",
                raw.tape_capacity.as_ref().map(|v| v.span()),
            ),
        ] {
            if let Some(span) = span {
                at(
                    span,
                    format!("streams.{key} is a tape setting; it needs streams.tape"),
                );
            }
        }
        return None;
    };
    let span = device.span();
    let name = device.get_ref().clone();
    // Whether it is a drive, and a rewinding one: by the device, or by its
    // name while no drive is attached (a policy is checked anywhere).
    let st = crate::media::kind::st_device(&name)
        .map(|d| d.rewinds)
        .or_else(|| crate::media::tape::sim::st_name(&name));
    if st.is_none() && !crate::media::kind::is_virtual_tape(&name) {
        at(span.clone(), format!("streams.tape {name:?} is neither a tape drive (/dev/nstN) nor a virtual tape (a file ending in .tap)"));
    } else if st == Some(true) {
        at(span.clone(), format!("streams.tape {name:?} rewinds the tape when closed, so each dump would overwrite the one before; give the non-rewinding device (/dev/nstN)"));
    } else if st.is_none() && !Path::new(&name).is_absolute() {
        at(span.clone(), format!("streams.tape {name:?} is not an absolute path (a policy runs from cron and systemd, whose working directory is not yours)"));
    } else if st.is_none() && Path::new(&name).is_dir() {
        at(
            span.clone(),
            format!("streams.tape {name:?} is a directory; a virtual tape is a file"),
        );
    } else if st.is_none() && Path::new(&name).file_name().is_some_and(|n| n == ".tap") {
        at(span.clone(), format!("streams.tape {name:?} is a hidden file named only by its ending; give the virtual tape a name (drive.tap)"));
    }
    let block_kib = raw
        .block_kib
        .as_ref()
        .map(|b| *b.get_ref())
        .unwrap_or(crate::media::tape::DEFAULT_RECORD_KIB);
    if let Some(b) = raw
        .block_kib
        .as_ref()
        .filter(|b| *b.get_ref() == 0 || *b.get_ref() * 1024 > crate::media::tape::MAX_BLOCK_SIZE)
    {
        at(
            b.span(),
            format!(
                "streams.block_kib {} is not a tape record size of 1..{} KiB",
                b.get_ref(),
                crate::media::tape::MAX_BLOCK_SIZE / 1024
            ),
        );
    }
    let capacity = match &raw.tape_capacity {
        None => 0,
        Some(c) => match crate::media::tape::parse_size(c.get_ref()) {
            Ok(v) if st.is_none() => v,
            Ok(_) => {
                at(
                    c.span(),
                    "streams.tape_capacity is a virtual tape's size; a drive knows its own".into(),
                );
                0
            }
            Err(e) => {
                at(
                    c.span(),
                    format!("streams.tape_capacity {:?}: {e}", c.get_ref()),
                );
                0
            }
        },
    };
    // The early-warning point leaves two records' room, and each cartridge
    // begins with its volume header: less than this holds next to nothing.
    let least = 8 * block_kib * 1024;
    if let Some(c) = raw
        .tape_capacity
        .as_ref()
        .filter(|_| capacity != 0 && capacity < least)
    {
        at(
            c.span(),
            format!(
                "streams.tape_capacity {:?} is less than 8 tape records of {block_kib} KiB ({least} bytes), so a cartridge would hold next to nothing; give a larger size, or 0 for no limit",
                c.get_ref()
            ),
        );
    }
    Some(Tape {
        device: name,
        new_volume: raw.new_volume.as_ref().map(|v| v.get_ref().clone()),
        block_size: block_kib * 1024,
        capacity,
    })
}

/// The 1-based line of byte `at` of `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

fn keep_of(raw: RawKeep) -> Keep {
    Keep {
        last: raw.last,
        hourly: raw.hourly,
        daily: raw.daily,
        weekly: raw.weekly,
        monthly: raw.monthly,
        yearly: raw.yearly,
        within: raw.within.map(|d| d.0),
    }
}

impl Keep {
    /// Whether the rules keep nothing at all (refused: a policy that
    /// keeps nothing would prune every snapshot but the newest).
    fn is_empty(&self) -> bool {
        self.last + self.hourly + self.daily + self.weekly + self.monthly + self.yearly == 0
            && self.within.is_none()
    }
}

impl Policy {
    /// Reads and checks the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read policy {}: {e}", path.display()))?;
        Policy::parse(&text, path)
    }

    /// Parses and checks policy `text` (read from `path`, for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Policy> {
        let name = path.display();
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| format!(" line {}", line_of(text, s.start)))
                .unwrap_or_default();
            anyhow::anyhow!("{name}:{line}: {}", e.message().trim_end())
        })?;
        // Every mistake is collected, with its line, and all are named at
        // once, earliest first: fixing a policy one error per run is slow.
        let mistakes = std::cell::RefCell::new(Vec::<(usize, String)>::new());
        let at = |span: std::ops::Range<usize>, what: String| {
            mistakes
                .borrow_mut()
                .push((line_of(text, span.start), what));
        };
        let tape = tape_of(&raw.streams, &at);
        let tape_span = raw.streams.tape.as_ref().map(|t| t.span());
        let volume_span = raw.streams.volume.as_ref().map(|v| v.span());
        let volume = raw.streams.volume.as_ref().map(|v| v.get_ref().clone());
        let name_span = raw.streams.name.as_ref().map(|n| n.span());
        let span = raw.schedule.span();
        let s = raw.schedule.into_inner();
        let minute = Duration::from_secs(60);
        if [&s.every, &s.full_every, &s.increments_every]
            .iter()
            .any(|d| d.as_ref().is_some_and(|d| d.0 < minute))
        {
            at(
                span.clone(),
                "a schedule's intervals are at least 1 minute (run is meant for cron and systemd timers; a dump per second is not a backup schedule)".into(),
            );
        }
        let schedule = match (s.every, s.levels, s.full_every, s.increments_every) {
            (Some(every), levels, None, None) => Schedule::Levels {
                every: every.0,
                levels: levels.map(|l| l.0).unwrap_or_else(|| vec![0]),
            },
            (None, None, Some(full), Some(inc)) => {
                if inc.0 > full.0 {
                    at(span, "increments_every is longer than full_every".into());
                }
                Schedule::Periodic {
                    full_every: full.0,
                    increments_every: inc.0,
                }
            }
            _ => {
                at(
                    span,
                    "[schedule] takes either `every` (with `levels`, default [0]) or both `full_every` and `increments_every`".into(),
                );
                Schedule::Levels {
                    every: Duration::from_secs(86_400),
                    levels: vec![0],
                }
            }
        };
        let keep = raw.keep.map(|k| {
            let span = k.span();
            let k = keep_of(k.into_inner());
            if k.is_empty() {
                at(span, "[keep] keeps nothing; give at least one rule, or leave [keep] out to keep everything".into());
            }
            k
        });
        let cron = "(a policy runs from cron and systemd, whose working directory is not yours)";
        let source_span = raw.source.span();
        let source = raw.source.into_inner();
        if !source.is_absolute() {
            at(
                source_span.clone(),
                format!("source {} is not an absolute path {cron}", source.display()),
            );
        }
        let source = resolved(&source);
        let dir_span = raw.streams.dir.span();
        let dir = raw.streams.dir.into_inner();
        if !dir.is_absolute() {
            at(
                dir_span.clone(),
                format!(
                    "streams.dir {} is not an absolute path {cron}",
                    dir.display()
                ),
            );
        }
        let dir = resolved(&dir);
        if dir.starts_with(&source) {
            at(
                dir_span.clone(),
                format!(
                    "streams.dir {} is inside the source {}; the dumps would dump each other",
                    dir.display(),
                    source.display()
                ),
            );
        } else if source.starts_with(&dir) {
            at(
                source_span,
                format!(
                    "the source {} is inside streams.dir {}; the streams would be dumped, and a sweep of the streams directory could touch the source",
                    source.display(),
                    dir.display()
                ),
            );
        }
        let name = match raw.streams.name {
            None => DEFAULT_NAME.to_string(),
            Some(n) => {
                let span = n.span();
                let n = n.into_inner();
                let rest = ["{source}", "{id}", "{level}", "{time}"]
                    .iter()
                    .fold(n.clone(), |t, v| t.replace(v, ""));
                if !n.contains("{id}")
                    || !n.ends_with(".sdump")
                    || n.starts_with('.')
                    || n.contains('/')
                    || rest.contains('{')
                    || rest.contains('}')
                    || n.chars().any(char::is_control)
                {
                    at(span.clone(), format!("streams.name {n:?} must hold {{id}}, end in .sdump, not start with a dot nor hold a slash or a control character, and use only {{source}}, {{id}}, {{level}}, {{time}}"));
                } else {
                    // The longest name it can make: a 20-digit id, a
                    // 16-character time, a synthetic full's `.full`.
                    let stem = source
                        .file_name()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "root".into());
                    let longest = Streams {
                        dir: PathBuf::new(),
                        compression: 0,
                        name: n.clone(),
                        tape: None,
                        volume: None,
                    }
                    .name(&stem, u64::MAX, 9, "20270101T000000Z", true);
                    if longest.len() > 255 {
                        at(span, format!("streams.name {n:?} makes file names up to {} bytes long; a file name holds at most 255", longest.len()));
                    }
                }
                n
            }
        };
        if let (Some(v), Some(span)) = (&volume, volume_span.clone()) {
            let on = resolved(v);
            if tape.is_some() {
                at(
                    span.clone(),
                    "streams.volume and streams.tape are two places for the same streams; give one"
                        .into(),
                );
            }
            if v.extension().is_none_or(|e| e != "vol") || !v.is_absolute() {
                at(
                    span.clone(),
                    format!(
                        "streams.volume {} must be an absolute path to a volume, ending in .vol",
                        v.display()
                    ),
                );
            } else if on.starts_with(&source) || on.starts_with(&dir) {
                at(span.clone(), format!("streams.volume {} is inside the source or streams.dir; a volume needs a place of its own", v.display()));
            } else if v.is_dir() {
                at(
                    span.clone(),
                    format!(
                        "streams.volume {} is a directory; a volume is a file",
                        v.display()
                    ),
                );
            }
            if name_span.is_some() {
                at(span.clone(), "streams.name names stream files, and with streams.volume there are none; leave it out".into());
            }
            let c = &raw.coalesce;
            if c.chain.is_some()
                || c.increments_percent.is_some()
                || c.age.is_some()
                || c.free_percent.is_some()
            {
                at(span.clone(), "[coalesce] makes synthetic fulls of streams, and with streams.volume there are none (a volume's snapshots each restore on their own); leave [coalesce] out".into());
            }
            if !raw.mirror.is_empty() || !raw.replicate.is_empty() {
                at(span, "[[replicate]] and [[mirror]] are fed from the policy's streams, and with streams.volume there are none; leave them out (streams.volume is itself the copy a replica would be)".into());
            }
        }
        if let (Some(_), Some(span)) = (&tape, name_span) {
            at(span, "streams.name names stream files, and with streams.tape there are none; leave it out".into());
        }
        if let (Some(t), Some(span)) = (&tape, tape_span.clone()) {
            let on = resolved(Path::new(&t.device));
            if on.starts_with(&source) || on.starts_with(&dir) {
                at(span, format!("streams.tape {} is inside the source or streams.dir; a virtual tape needs a place of its own", t.device));
            }
        }
        if let Some(span) = tape_span.clone().filter(|_| tape.is_some()) {
            let c = &raw.coalesce;
            if c.chain.is_some()
                || c.increments_percent.is_some()
                || c.age.is_some()
                || c.free_percent.is_some()
            {
                at(span.clone(), "[coalesce] needs the streams on disk (a synthetic full reads the chain while it writes, and one drive cannot do both); with streams.tape leave [coalesce] out, or dump to streams.dir".into());
            }
            if !raw.mirror.is_empty() {
                at(span, "[[mirror]] needs the streams on disk (a mirror names its base stream by file); with streams.tape leave [[mirror]] out".into());
            }
        }
        let catalog = raw.catalog.map(|c| {
            let span = c.span();
            let c = c.into_inner();
            if !c.is_absolute() {
                at(
                    span.clone(),
                    format!("catalog {} is not an absolute path {cron}", c.display()),
                );
            }
            let c = resolved(&c);
            if c.starts_with(&source) {
                at(span, format!("catalog {} is inside the source {}; every dump would carry the catalog's own changes", c.display(), source.display()));
            } else if c.starts_with(&dir) || dir.starts_with(&c) {
                at(span, format!("catalog {} and streams.dir {} overlap; give each a directory of its own", c.display(), dir.display()));
            }
            c
        });
        if let Some(n) = raw.coalesce.chain.as_ref().filter(|n| *n.get_ref() == 0) {
            at(
                n.span(),
                "coalesce.chain = 0: a chain always holds its full image; give 1 or more (1 coalesces every increment)".into(),
            );
        }
        // The catalog root as runs will use it (the default when not given).
        let cat_root = catalog
            .clone()
            .unwrap_or_else(|| resolved(&crate::catalog::default_root()));
        // A tape or volume in the catalog would be swept up with it (a
        // catalog put back from a copy would put back an old volume).
        if let (Some(v), Some(span)) = (&volume, volume_span.clone()) {
            if resolved(v).starts_with(&cat_root) {
                at(span, format!("streams.volume {} is inside the catalog {}; a volume needs a place of its own", v.display(), cat_root.display()));
            }
        }
        if let (Some(t), Some(span)) = (&tape, tape_span.clone()) {
            if resolved(Path::new(&t.device)).starts_with(&cat_root) {
                at(span, format!("streams.tape {} is inside the catalog {}; a virtual tape needs a place of its own", t.device, cat_root.display()));
            }
        }
        let mut replicate: Vec<Replica> = Vec::new();
        for r in raw.replicate {
            let keep = r.keep.map(|k| {
                let span = k.span();
                let k = keep_of(k.into_inner());
                if k.is_empty() {
                    at(span, "this replica's keep keeps nothing".into());
                }
                k
            });
            let span = r.to.span();
            let to = r.to.into_inner();
            if to.extension().is_none_or(|e| e != "vol") || !to.is_absolute() {
                at(
                    span.clone(),
                    format!(
                        "replicate.to {} must be an absolute path to a volume, ending in .vol",
                        to.display()
                    ),
                );
            }
            let to = resolved(&to);
            if to.starts_with(&source) {
                at(
                    span.clone(),
                    format!(
                        "replicate.to {} is inside the source {}",
                        to.display(),
                        source.display()
                    ),
                );
            }
            if to.starts_with(&dir) || to.starts_with(&cat_root) {
                at(
                    span.clone(),
                    format!(
                        "replicate.to {} is inside the streams directory or the catalog; a replica needs a place of its own (another disk, ideally)",
                        to.display()
                    ),
                );
            }
            if replicate.iter().any(|o| o.to == to) {
                at(
                    span,
                    format!("replicate.to {} is named twice", to.display()),
                );
            }
            replicate.push(Replica { to, keep });
        }
        let mut mirror: Vec<PathBuf> = Vec::new();
        for m in raw.mirror {
            let span = m.dir.span();
            let d = m.dir.into_inner();
            if !d.is_absolute() {
                at(
                    span.clone(),
                    format!("mirror.dir {} is not an absolute path", d.display()),
                );
            }
            let d = resolved(&d);
            if d.starts_with(&source)
                || source.starts_with(&d)
                || d.starts_with(&dir)
                || dir.starts_with(&d)
                || d.starts_with(&cat_root)
                || cat_root.starts_with(&d)
                || replicate.iter().any(|r| r.to.starts_with(&d))
            {
                at(span.clone(), format!("mirror.dir {} overlaps the source, the streams directory, the catalog or a replica; a mirror needs a directory of its own", d.display()));
            }
            if mirror.contains(&d) {
                at(span, format!("mirror.dir {} is named twice", d.display()));
            }
            mirror.push(d);
        }
        let mut mistakes = mistakes.into_inner();
        if !mistakes.is_empty() {
            mistakes.sort_by_key(|m| m.0);
            let all: Vec<String> = mistakes
                .iter()
                .map(|(line, what)| format!("{}: line {line}: {what}", path.display()))
                .collect();
            bail!("{}", all.join("\n"));
        }
        Ok(Policy {
            path: path.to_path_buf(),
            source,
            catalog,
            streams: Streams {
                dir,
                compression: raw
                    .streams
                    .compression
                    .map(|l| l.0)
                    .unwrap_or(crate::dump::DEFAULT_COMPRESSION),
                name,
                tape,
                volume: volume.map(|v| resolved(&v)),
            },
            schedule,
            keep,
            coalesce: Coalesce {
                chain: raw.coalesce.chain.map(|n| n.into_inner()),
                increments_percent: raw.coalesce.increments_percent.map(|p| p.0),
                age: raw.coalesce.age.map(|d| d.0),
                free_percent: raw.coalesce.free_percent.map(|p| p.0),
            },
            replicate,
            mirror,
        })
    }
}
