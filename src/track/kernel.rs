//! The kernel half of the tracker: two page maps, the control block, and
//! the programs attached at every point where file data changes.
//!
//! The maps are the seeds' two block maps: writes mark the active one; a
//! swap makes the other active and hands the frozen one over (and empties
//! it for its next turn).

use super::bpf::{self, Link, Map, Program, Shared};
use super::btf::Btf;
use super::programs::{self, ctl, Maps, Offsets, Point};
use anyhow::{Context, Result};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

/// One marked range: a run of pages of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageRange {
    /// Inode number.
    pub ino: u64,
    /// First page.
    pub first: u64,
    /// Pages ([`programs::TO_END`]: to the end of the file).
    pub pages: u64,
}

/// What a swap hands over: the frozen map's ranges and whether any insert
/// into it was refused (the map was full: the ranges are incomplete).
pub struct Frozen {
    /// Marked ranges, in no particular order.
    pub ranges: Vec<PageRange>,
    /// Inodes that had a writable shared mapping in the epoch (each
    /// once), for the swap to write back.
    pub mapped: Vec<Mapped>,
    /// Ranges marked where an operation starts (also in `ranges`), for
    /// the swap to mark again in the new epoch ([`Kernel::carry`]).
    pub carried: Vec<PageRange>,
    /// Inserts refused for lack of room.
    pub overflowed: u64,
}

/// An inode a program saw with a writable shared mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mapped {
    /// Inode number.
    pub ino: u64,
}

/// The loaded, attached programs and their maps.
pub struct Kernel {
    shared: Shared,
    pages: [Map; 2],
    _ctl: Map,
    _last_write: Option<Map>,
    _links: Vec<Link>,
    capacity: u32,
    /// The tracked file system, as the programs' keys name it.
    dev: u32,
}

/// Reads an element of the programs' maps: a mapped key, a range key
/// (pages > 0), or a bitmap of the 64 pages from `first` (pages = 0,
/// value = bits).
fn decode(key: &[u8], value: &[u8], out: &mut Vec<PageRange>, frozen: &mut Frozen) {
    let w = |i: usize| u64::from_le_bytes(key[i * 8..i * 8 + 8].try_into().unwrap());
    let (ino, first, pages) = (w(1), w(2), w(3));
    if first == programs::MAPPED {
        frozen.mapped.push(Mapped { ino });
        return;
    }
    if pages & programs::CARRIED != 0 {
        let r = PageRange {
            ino,
            first,
            pages: pages & !programs::CARRIED,
        };
        out.push(r);
        frozen.carried.push(r);
        return;
    }
    if pages > 0 {
        out.push(PageRange { ino, first, pages });
        return;
    }
    let mut bits = u64::from_le_bytes(value[..8].try_into().unwrap());
    while bits != 0 {
        let start = bits.trailing_zeros() as u64;
        let run = (bits >> start).trailing_ones() as u64;
        out.push(PageRange {
            ino,
            first: first + start,
            pages: run,
        });
        bits &= !(((1u128 << (start + run)) - 1) as u64);
    }
}

impl Kernel {
    /// Loads and attaches every program for the file system the kernel
    /// numbers `dev` (of type `fstype`), with room for `capacity` ranges
    /// per map.
    pub fn start(dev: u32, fstype: &str, capacity: u32) -> Result<Kernel> {
        let btf = Btf::kernel()?;
        let offsets = Offsets::of(&btf).context(
            "this kernel's structures are not the ones the change tracker knows how to read",
        )?;
        let err = |what: &str| {
            format!("cannot create the change tracker's {what} map (the tracker needs root, and BPF enabled)")
        };
        let ctl_map = Map::create(bpf::MAP_ARRAY, 4, ctl::BYTES, 1, bpf::F_MMAPABLE, "sd_ctl")
            .with_context(|| err("control"))?;
        let mk = |name| {
            Map::create(bpf::MAP_HASH, 32, 8, capacity, bpf::F_NO_PREALLOC, name)
                .with_context(|| err("page"))
        };
        let pages = [mk("sd_pages0")?, mk("sd_pages1")?];
        let shared =
            Shared::map(&ctl_map).context("cannot map the change tracker's control block")?;
        // ext4's writes are recorded so that the folios they dirty are
        // left to their byte ranges (programs.rs, "Precision on ext4").
        let last_write = match fstype {
            "ext4" => Some(
                Map::create(
                    bpf::MAP_PERCPU_ARRAY,
                    4,
                    programs::WRITE_RECORD,
                    1,
                    0,
                    "sd_lastwrite",
                )
                .with_context(|| err("write record"))?,
            ),
            _ => None,
        };
        let maps = Maps {
            ctl: ctl_map.raw_fd(),
            pages: [pages[0].raw_fd(), pages[1].raw_fd()],
            dev,
            page_shift: page_size().trailing_zeros() as i32,
            last_write: last_write.as_ref().map(Map::raw_fd),
        };
        let mut links = Vec::new();
        // Programs on one tracepoint run in the order attached (see
        // `programs::EXT4_MAPPED` for why the mapped keys come first).
        let mut points = Vec::new();
        if fstype == "ext4" {
            points.extend(programs::EXT4_MAPPED);
        }
        points.extend([Point::DirtyFolio, Point::DirectIo]);
        match fstype {
            "ext4" => points.extend(programs::EXT4),
            "xfs" => points.extend(programs::XFS),
            _ => {}
        }
        for point in points {
            let id = btf.tracepoint(point.name())?;
            let args = btf.tracepoint_args(point.name())?;
            let insns = programs::build(point, args, &offsets, &maps);
            let name: String = point.name().chars().take(12).collect();
            let prog = Program::load(&insns, bpf::ATTACH_RAW_TP, id, &format!("sd_{name}"))?;
            links.push(prog.attach().with_context(|| {
                format!("cannot attach the change tracker at {}", point.name())
            })?);
        }
        Ok(Kernel {
            shared,
            pages,
            _ctl: ctl_map,
            _last_write: last_write,
            _links: links,
            capacity,
            dev,
        })
    }

    /// Entries per map (a bitmap entry covers up to 64 pages).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The active generation's counts: (ranges inserted, inserts refused).
    pub fn active_counts(&self) -> (u64, u64) {
        let g = (self.shared.word(ctl::GEN).load(SeqCst) & 1) as usize;
        (
            self.shared.word(ctl::INSERTED + g).load(SeqCst),
            self.shared.word(ctl::OVERFLOW + g).load(SeqCst),
        )
    }

    /// Makes the other map active, waits until no program can still
    /// insert into the old one, and empties the old one into what it
    /// returns. The caller then writes back what a store could change
    /// without a mark (`Frozen::mapped`, or the whole file system), so a
    /// store after that faults and is marked in the new map.
    pub fn swap(&self) -> Result<Frozen> {
        let g = self.shared.word(ctl::GEN).fetch_add(1, SeqCst);
        let old = (g & 1) as usize;
        let started = Instant::now();
        while self.shared.word(ctl::INFLIGHT + old).load(SeqCst) != 0 {
            if started.elapsed() > Duration::from_secs(5) {
                anyhow::bail!("the change tracker's programs did not drain in 5 s");
            }
            std::thread::yield_now();
        }
        let mut ranges = Vec::new();
        let mut frozen = Frozen {
            ranges: Vec::new(),
            mapped: Vec::new(),
            carried: Vec::new(),
            overflowed: 0,
        };
        self.pages[old]
            .drain(|k, v| decode(k, v, &mut ranges, &mut frozen))
            .context("cannot read the change tracker's page map")?;
        frozen.overflowed = self.shared.word(ctl::OVERFLOW + old).swap(0, SeqCst);
        self.shared.word(ctl::INSERTED + old).store(0, SeqCst);
        frozen.mapped.sort();
        frozen.mapped.dedup();
        frozen.ranges = ranges;
        Ok(frozen)
    }

    /// Marks `ranges` in the active map, from user space: the swap's
    /// second mark of what operations still running may change (see
    /// programs.rs, "When a mark is made"). Unflagged, so each is carried
    /// once.
    pub fn carry(&self, ranges: &[PageRange]) -> Result<()> {
        let g = (self.shared.word(ctl::GEN).load(SeqCst) & 1) as usize;
        for r in ranges {
            let mut key = [0u8; 32];
            for (i, v) in [self.dev as u64, r.ino, r.first, r.pages]
                .iter()
                .enumerate()
            {
                key[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
            }
            self.pages[g]
                .update(&key, &[0u8; 8])
                .context("cannot carry a range into the change tracker's new map")?;
        }
        Ok(())
    }
}

/// The page size, which the kernel's page indexes count in.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// The kernel's number of the file system holding `path` (its `s_dev`,
/// which the programs see), from the mount table: `st_dev` is not it on
/// btrfs, where each subvolume has its own.
pub fn kernel_dev(path: &std::path::Path) -> Result<u32> {
    let mnt_id = super::mount_id(path)?;
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo")?;
    for line in table.lines() {
        let mut f = line.split(' ');
        if f.next().and_then(|v| v.parse::<u64>().ok()) != Some(mnt_id) {
            continue;
        }
        let dev = f.nth(1).context("short mountinfo line")?;
        let (maj, min) = dev.split_once(':').context("bad mountinfo device")?;
        let (maj, min): (u32, u32) = (maj.parse()?, min.parse()?);
        return Ok(maj << 20 | min);
    }
    anyhow::bail!("{} is on no mount in /proc/self/mountinfo", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    /// A buffered write, a truncate and a punched hole on the root file
    /// system show up in the frozen map after a swap (root only).
    #[test]
    fn writes_are_marked() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let dev = kernel_dev(dir.path()).unwrap();
        let k = match Kernel::start(dev, "ext4", 4096) {
            Ok(k) => k,
            Err(e) => panic!("{e:#}"),
        };
        let p = dir.path().join("f");
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(&vec![1u8; 3 * 4096]).unwrap();
        f.sync_all().unwrap();
        let _ = k.swap().unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"x", 4096 + 10).unwrap();
        let ino = std::fs::metadata(&p).unwrap().ino();
        let frozen = k.swap().unwrap();
        let mine: Vec<_> = frozen.ranges.iter().filter(|r| r.ino == ino).collect();
        assert!(
            mine.iter().any(|r| r.first <= 1 && r.first + r.pages > 1),
            "{mine:?}"
        );
        nix::fcntl::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            8192,
            4096,
        )
        .unwrap();
        let frozen = k.swap().unwrap();
        // Marked where the punch starts: carried into the next epoch too,
        // once.
        k.carry(&frozen.carried).unwrap();
        let again = k.swap().unwrap();
        k.carry(&again.carried).unwrap();
        let third = k.swap().unwrap();
        let punched = |f: &Frozen| {
            f.ranges
                .iter()
                .any(|r| r.ino == ino && r.first == 2 && r.pages == 1)
        };
        assert!(punched(&again), "not carried: {:?}", again.ranges);
        assert!(!punched(&third), "carried twice: {:?}", third.ranges);
        assert!(
            frozen
                .ranges
                .iter()
                .any(|r| r.ino == ino && r.first == 2 && r.pages == 1),
            "{:?}",
            frozen
                .ranges
                .iter()
                .filter(|r| r.ino == ino)
                .collect::<Vec<_>>()
        );
    }
}
