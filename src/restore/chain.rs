//! A set of streams given with several `-f`, and the chain among them that
//! leads to one snapshot.
//!
//! Selective restore, compare, listing and history work on "the version of
//! the tree at snapshot N": that is a full stream plus the increments that
//! lead from it to N, each the base of the next. The user names the files
//! (in any order, with unrelated streams mixed in); the chain is found by
//! following each increment's base to the stream that holds it, so a
//! skipped level or a foreign stream is named in a clear error instead of
//! producing a wrong tree.
//!
//! Regular files are read by offset (the front, the end record and the
//! relocation table, then only the data records needed); pipes, FIFOs and
//! devices are read sequentially.

pub use crate::at::At;
use crate::media::Input;
use crate::names::escape;
use crate::stream::front::{read_front, Front};
use crate::stream::header::{SnapshotRef, StreamHeader};
use crate::stream::reader::{Digest, StreamReader};
use crate::stream::seek::SeekStream;
use anyhow::{anyhow, bail, Result};

/// How a stream's data section is reached.
pub enum Access {
    /// A regular file: records are read by offset.
    Seek(Box<SeekStream>),
    /// Anything else: records are read in order, once.
    Pipe(Box<StreamReader>),
}

/// One opened stream whose front (metadata and image) has been read.
pub struct Link {
    /// Name of the input, for messages.
    pub name: String,
    /// The stream header.
    pub header: StreamHeader,
    /// Metadata and image.
    pub front: Front,
    /// Where the data section starts (the byte after the image record).
    pub data_start: u64,
    /// The reader, positioned at the data section.
    pub access: Access,
}

impl Link {
    /// Stream bytes read from this input so far.
    pub fn bytes_read(&self) -> u64 {
        match &self.access {
            Access::Seek(s) => s.bytes_read(),
            Access::Pipe(r) => r.offset(),
        }
    }

    /// Reads what random access needs before any data (the end record and
    /// the relocation table), so that a stream damaged there is refused
    /// before anything is created.
    pub fn prepare(&mut self) -> Result<()> {
        if let Access::Seek(s) = &mut self.access {
            s.index(self.data_start)?;
        }
        Ok(())
    }

    /// A one-line description: "snapshot 3 (level 1, 2026-11-22T05:00:00Z, s3.sdump)".
    pub fn describe(&self) -> String {
        describe(&self.header.snapshot, &self.name)
    }
}

/// "snapshot ID (level L, TIME, NAME)".
pub fn describe(s: &SnapshotRef, name: &str) -> String {
    format!(
        "snapshot {} (level {}, {}, {name})",
        s.id,
        s.level,
        s.time.rfc3339()
    )
}

/// Every stream given, with its front read.
pub struct StreamSet {
    /// The streams, in the order given.
    pub links: Vec<Link>,
}

impl StreamSet {
    /// Opens every input and reads its front. With `Digest::Check` every
    /// input is read sequentially so that its digest list can be checked.
    pub fn open(inputs: &[Input], digest: Digest) -> Result<StreamSet> {
        if inputs.iter().filter(|i| i.specs[0] == "-").count() > 1 {
            bail!("standard input (-f -) can be given only once");
        }
        let mut pipes: Vec<(&Input, (u64, u64))> = Vec::new();
        for i in inputs {
            if let Some(id) = i.identity() {
                if let Some((other, _)) = pipes.iter().find(|p| p.1 == id) {
                    bail!(
                        "{} and {} are one pipe (or device), which can be read only once: give it once",
                        other.name(),
                        i.name()
                    );
                }
                pipes.push((i, id));
            }
        }
        let mut links: Vec<Link> = Vec::with_capacity(inputs.len());
        for input in inputs {
            let link = open_link(input, digest)?;
            if let Some(first) = links.first() {
                if first.header.source_uuid != link.header.source_uuid {
                    bail!(
                        "{} and {} are dumps of different sources ({} and {}); give streams of one source",
                        first.name,
                        link.name,
                        escape(&first.header.source_path),
                        escape(&link.header.source_path)
                    );
                }
                if first.header.block_size != link.header.block_size {
                    bail!(
                        "{} and {} use different block sizes ({} and {})",
                        first.name,
                        link.name,
                        first.header.block_size,
                        link.header.block_size
                    );
                }
            }
            if let Some(dup) = links
                .iter()
                .find(|l| l.header.snapshot.uuid == link.header.snapshot.uuid)
            {
                bail!(
                    "{} and {} hold the same snapshot {}; give each stream once",
                    dup.name,
                    link.name,
                    link.header.snapshot.id
                );
            }
            links.push(link);
        }
        Ok(StreamSet { links })
    }

    /// The stream holding the snapshot `at` picks, or the newest one.
    pub fn select(&self, at: Option<At>) -> Result<usize> {
        let newest = |it: &mut dyn Iterator<Item = usize>| {
            it.max_by_key(|&i| {
                let s = &self.links[i].header.snapshot;
                (s.time, s.id)
            })
        };
        let idx = match at {
            None => newest(&mut (0..self.links.len())),
            Some(At::Id(id)) => {
                (0..self.links.len()).find(|&i| self.links[i].header.snapshot.id == id)
            }
            Some(At::Time(t)) => newest(
                &mut (0..self.links.len()).filter(|&i| self.links[i].header.snapshot.time <= t),
            ),
        };
        idx.ok_or_else(|| {
            let have: Vec<String> = self
                .links
                .iter()
                .map(|l| {
                    format!(
                        "{} at {}",
                        l.header.snapshot.id,
                        l.header.snapshot.time.rfc3339()
                    )
                })
                .collect();
            let want = match at {
                Some(At::Id(id)) => format!("snapshot {id}"),
                Some(At::Time(t)) => format!("a snapshot at or before {}", t.rfc3339()),
                None => "a snapshot".into(),
            };
            anyhow!(
                "none of the given streams holds {want}; they hold snapshots {}",
                have.join(", ")
            )
        })
    }

    /// The chain leading to the snapshot of `links[top]`: indexes, the full
    /// stream first. With `complete` false, a chain whose oldest stream is
    /// an increment with no base among the inputs is returned as it is
    /// (enough for listings); otherwise that is an error naming the
    /// missing snapshot.
    pub fn chain(&self, top: usize, complete: bool) -> Result<Vec<usize>> {
        let mut out = vec![top];
        let mut cur = top;
        while !self.links[cur].header.full {
            let base = self.links[cur]
                .header
                .base
                .as_ref()
                .expect("the header decoder refuses increments without a base");
            match self
                .links
                .iter()
                .position(|l| l.header.snapshot.uuid == base.uuid)
            {
                Some(i) if !out.contains(&i) => {
                    out.push(i);
                    cur = i;
                }
                Some(_) => bail!("the given streams' bases form a loop; they are damaged"),
                None if !complete => break,
                None => bail!(
                    "{} is an increment on snapshot {} (level {}, {}), which none of the given streams holds; add the stream of that snapshot with another -f",
                    self.links[cur].describe(),
                    base.id,
                    base.level,
                    base.time.rfc3339()
                ),
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Total stream bytes read from every input.
    pub fn bytes_read(&self) -> u64 {
        self.links.iter().map(|l| l.bytes_read()).sum()
    }
}

/// A snapshot chosen among the streams given, and the chain leading to it,
/// ready for random access.
pub struct Chosen {
    /// Every stream given.
    pub set: StreamSet,
    /// Index of the stream holding the chosen snapshot.
    pub top: usize,
    /// Indexes of its chain, the full stream first.
    pub chain: Vec<usize>,
}

impl Chosen {
    /// Opens `inputs`, chooses the snapshot `at` (default the newest),
    /// finds its complete chain, and reads the end record and relocation
    /// table of each seekable stream on it, so that damage there is found
    /// before anything is created.
    pub fn open(inputs: &[Input], digest: Digest, at: Option<At>) -> Result<Chosen> {
        let mut set = StreamSet::open(inputs, digest)?;
        let top = set.select(at)?;
        let chain = set.chain(top, true)?;
        for &i in &chain {
            set.links[i].prepare()?;
        }
        Ok(Chosen { set, top, chain })
    }

    /// The stream holding the chosen snapshot.
    pub fn top(&self) -> &Link {
        &self.set.links[self.top]
    }

    /// The names of the chain's streams, full stream first.
    pub fn names(&self) -> Vec<String> {
        self.chain
            .iter()
            .map(|&i| self.set.links[i].name.clone())
            .collect()
    }
}

fn open_link(input: &Input, digest: Digest) -> Result<Link> {
    let name = input.name().to_string();
    let file = if digest == Digest::Skip {
        input.seekable()?
    } else {
        None
    };
    match file {
        Some(f) => {
            let mut s = SeekStream::open(f, &name)?;
            s.check_single()?;
            let front = read_front(&mut s)?;
            Ok(Link {
                name,
                header: crate::stream::reader::Records::header(&s).clone(),
                front,
                data_start: s.position(),
                access: Access::Seek(Box::new(s)),
            })
        }
        None => {
            let mut r = StreamReader::open(input.open()?, &name, digest)?;
            let front = read_front(&mut r)?;
            Ok(Link {
                name,
                header: r.header.clone(),
                front,
                data_start: r.offset(),
                access: Access::Pipe(Box::new(r)),
            })
        }
    }
}
