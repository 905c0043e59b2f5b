//! `snapdump dump`: a tree or a volume to a stream.

use super::args::{CatalogArg, JsonArgs, NewVolumeArg, WaitArg};
use super::print;
use crate::report::Report;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `snapdump dump`.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("lvl").multiple(false))]
pub struct DumpArgs {
    /// The dump level, -0 .. -9: 0 (the default) is a full image; N carries
    /// what changed since the newest snapshot of a lower level.
    #[arg(short = '0', group = "lvl")]
    l0: bool,
    #[arg(short = '1', group = "lvl", hide = true)]
    l1: bool,
    #[arg(short = '2', group = "lvl", hide = true)]
    l2: bool,
    #[arg(short = '3', group = "lvl", hide = true)]
    l3: bool,
    #[arg(short = '4', group = "lvl", hide = true)]
    l4: bool,
    #[arg(short = '5', group = "lvl", hide = true)]
    l5: bool,
    #[arg(short = '6', group = "lvl", hide = true)]
    l6: bool,
    #[arg(short = '7', group = "lvl", hide = true)]
    l7: bool,
    #[arg(short = '8', group = "lvl", hide = true)]
    l8: bool,
    #[arg(short = '9', group = "lvl", hide = true)]
    l9: bool,
    /// Base snapshot id (default: the newest snapshot of a lower level).
    ///
    /// The ids are those snapdump snapshots lists.
    #[arg(long, value_name = "ID")]
    base: Option<u64>,
    /// From a volume: the plane expression to dump, e.g. 'S5+S4-S3'.
    ///
    /// Instead of a level: the snapshots summed, in order, over the base
    /// after '-' (see snapdump-volume(1), DUMPING A VOLUME).
    #[arg(long, value_name = "EXPR")]
    image: Option<String>,
    /// Output: a file, a device, or - for stdout (default: $TAPE).
    ///
    /// A block device, FIFO or character device is written like a file. A
    /// tape drive
    /// (/dev/nstN, the non-rewinding device of the Linux st driver, or
    /// /dev/stN, which rewinds when closed and so cannot --append) or a
    /// virtual tape (a file whose name ends in .tap, see TAPES AND VOLUMES)
    /// gets the tape layout: a volume header, records of -b KiB, a filemark,
    /// volume changes at the end of the medium. A name under /dev that does
    /// not exist is refused, never created as a file, and so is a closed
    /// standard output (the stream would go nowhere). Repeat -f to name the
    /// volumes to use in turn when one fills up.
    #[arg(short = 'f', value_name = "OUT", action = clap::ArgAction::Append)]
    file: Vec<String>,
    /// On tape: KiB per data record (one record per write).
    ///
    /// 1 to 16384, on tapes and volume files. Each record is one write to
    /// the drive, so a drive in variable-block mode keeps streaming; restore
    /// reads the size from the volume header.
    #[arg(short = 'b', value_name = "KIB", default_value_t = crate::media::tape::DEFAULT_RECORD_KIB, value_parser = clap::value_parser!(u64).range(1..=16384))]
    block_kib: u64,
    /// On tape: add the dump after the dumps already on it.
    ///
    /// The tape is spaced to the end of its data; without --append a dump
    /// starts at the beginning, overwriting what the tape held. Read the
    /// dumps back with restore --file-number.
    #[arg(long)]
    append: bool,
    /// Continue this source's interrupted dump (same level, -f and -z).
    ///
    /// For a dump that was killed, crashed or lost power: the stream is
    /// produced again with the interrupted dump's snapshot; what the file or tapes already
    /// hold is compared with it and kept, and writing starts at the first
    /// difference. The finished stream is byte for byte the one a single run
    /// would have written. A dump that failed cleanly removed its partial
    /// output and cannot be resumed; a new dump without --resume discards an
    /// interrupted one.
    #[arg(long)]
    resume: bool,
    /// Enter file systems mounted below the source.
    ///
    /// By default a dump stays on the source's file system, as dump(8) and
    /// tar --one-file-system do: a directory where another file system is
    /// mounted (a tmpfs, /proc, another disk) is recorded empty, with a
    /// note naming it.
    #[arg(long)]
    cross_mounts: bool,
    /// Leave out entries matching PATTERN (gitignore syntax; repeatable).
    ///
    /// Matched against the path relative to SOURCE: `*.o` anywhere,
    /// `/build` only at the top, `logs/` directories only, `!keep.o` brings
    /// one back. An excluded directory is not read. The rules are recorded
    /// with the catalog: later dumps that give none follow them, and ones
    /// that give others are refused unless --rules-changed.
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Read exclude patterns from FILE, one per line (# comments).
    #[arg(long, value_name = "FILE")]
    exclude_from: Vec<std::path::PathBuf>,
    /// Keep only CACHEDIR.TAG of a directory holding a valid one.
    #[arg(long)]
    exclude_caches: bool,
    /// Keep only NAME of a directory holding a file NAME (repeatable).
    #[arg(long, value_name = "NAME")]
    exclude_if_present: Vec<String>,
    /// Leave out entries flagged nodump (chattr +d) at this level and
    /// above (default 1, as dump -h; 10: never).
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(u8).range(0..=10))]
    honor_nodump: Option<u8>,
    /// Replace the exclusion rules recorded for this source with the ones
    /// given (the increment carries what comes in or goes out).
    #[arg(long)]
    rules_changed: bool,
    /// Capacity of a virtual tape (e.g. 400M, 12T).
    ///
    /// Binary units. The dump ends the volume at its early-warning point (2%
    /// or two records before the end) and continues on the next volume.
    #[arg(long, value_name = "SIZE", value_parser = crate::media::tape::parse_size)]
    tape_capacity: Option<u64>,
    /// Cut a dump to files into volumes of at most SIZE (e.g. 4G).
    ///
    /// The volume files are the -f files in turn, or what --new-volume
    /// provides.
    #[arg(long, value_name = "SIZE", value_parser = crate::media::tape::parse_size, conflicts_with = "tape_capacity")]
    volume_size: Option<u64>,
    #[command(flatten)]
    new_volume: NewVolumeArg,
    #[command(flatten)]
    catalog: CatalogArg,
    /// zstd level for the stream's records; 0 turns compression off.
    ///
    /// 0 to 19. The default, 3, costs little more than levels 1 and 2 on snapdump's
    /// 256 KiB records and compresses like zstd -3. Records that do not
    /// shrink are stored as they are.
    #[arg(short = 'z', long = "compress", value_name = "LEVEL", default_value_t = crate::dump::DEFAULT_COMPRESSION,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    compress: i32,
    #[command(flatten)]
    wait: WaitArg,
    /// Walk the tree even when a change tracker runs (snapdump track).
    #[arg(long, conflicts_with = "verify_tracker")]
    no_tracker: bool,
    /// Build the increment both from the change tracker and by walking
    /// the tree, and fail (writing nothing) unless they agree.
    ///
    /// The check of a tracker's trust: every entry, block pointer and
    /// checksum of the two must be equal (access times aside). Run it on a
    /// quiet tree: the walk comes after the tracker's swap, so it also
    /// sees writes made since, and a tree still being written fails it.
    #[arg(long)]
    verify_tracker: bool,
    #[command(flatten)]
    json: JsonArgs,
    /// The directory tree to dump, or a volume file (PATH.vol[@SNAPSHOT]).
    source: PathBuf,
}

impl DumpArgs {
    fn level(&self) -> u8 {
        let levels = [
            self.l0, self.l1, self.l2, self.l3, self.l4, self.l5, self.l6, self.l7, self.l8,
            self.l9,
        ];
        levels.iter().position(|&b| b).unwrap_or(0) as u8
    }
}

/// Runs `snapdump dump`: a volume source goes to the volume dump, a tree to
/// the tree dump.
pub fn run(a: DumpArgs, report: &Report) -> Result<i32> {
    let level = a.level();
    let output = crate::media::stream_spec(a.file.first().map(|s| s.as_str()))?;
    let tape = crate::media::tape::writer::TapeOptions {
        block_size: a.block_kib * 1024,
        append: a.append,
        capacity: a.tape_capacity.or(a.volume_size).unwrap_or(0),
        new_volume: a.new_volume.new_volume.clone(),
    };
    let mut specs = vec![output.clone()];
    specs.extend(a.file.iter().skip(1).cloned());
    let (vpath, vsel) = crate::volume::split_spec(&a.source.to_string_lossy());
    if crate::volume::is_volume(&vpath) {
        if a.base.is_some() || a.resume {
            bail!("--base and --resume are for tree sources; from a volume, name the planes with --image");
        }
        let opts = crate::volume::image::VolumeDumpOptions {
            volume: vpath,
            at: vsel,
            level,
            image: a.image,
            specs,
            tape,
            compression: a.compress,
        };
        let s = crate::volume::image::dump_volume(&opts, report)?;
        print::json(&a.json, output == "-", &s)?;
        return Ok(report.exit_status());
    }
    if a.image.is_some() {
        bail!(
            "--image selects planes of a volume, and {} is not a volume",
            a.source.display()
        );
    }
    let given = !a.exclude.is_empty()
        || !a.exclude_from.is_empty()
        || a.exclude_caches
        || !a.exclude_if_present.is_empty()
        || a.honor_nodump.is_some();
    if a.rules_changed && !given {
        bail!("--rules-changed needs the new rules (--exclude, --exclude-from, --exclude-caches, --exclude-if-present, --honor-nodump)");
    }
    let rules = if given {
        let mut patterns = a.exclude.clone();
        for f in &a.exclude_from {
            patterns.extend(crate::rules::Rules::patterns_from(f)?);
        }
        let r = crate::rules::Rules {
            patterns,
            exclude_caches: a.exclude_caches,
            if_present: a.exclude_if_present.clone(),
            nodump_level: a.honor_nodump.unwrap_or(crate::rules::DEFAULT_NODUMP_LEVEL),
        };
        // A bad pattern is refused before anything is read.
        r.matcher(0)?;
        Some(r)
    } else {
        None
    };
    let opts = crate::dump::DumpOptions {
        level,
        output: output.clone(),
        volumes: specs[1..].to_vec(),
        tape,
        catalog_root: a.catalog.root(),
        compression: a.compress,
        source: a.source,
        base: a.base,
        wait: a.wait.policy(),
        resume: a.resume,
        cross_mounts: a.cross_mounts,
        rules,
        rules_changed: a.rules_changed,
        snapshot_time: None,
        tracker: if a.no_tracker {
            crate::dump::tracked::TrackerMode::Off
        } else if a.verify_tracker {
            crate::dump::tracked::TrackerMode::Verify
        } else {
            crate::dump::tracked::TrackerMode::Auto
        },
    };
    let s = crate::dump::dump(&opts, report)?;
    print::json(&a.json, output == "-", &s)?;
    Ok(report.exit_status())
}
