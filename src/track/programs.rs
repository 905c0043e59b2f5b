//! The tracker's BPF programs: one per kernel point where file data
//! changes, each recording a page range of an inode in the active map.
//!
//! Where data changes, and who reports it:
//! - a page of the page cache goes from clean to dirty (`write(2)`,
//!   `mmap` stores, splice, io_uring): the tracepoint
//!   `writeback_dirty_folio`, with the folio's first page and its size;
//! - a direct write: the tracepoint `iomap_dio_complete` (its position
//!   past the bytes written, and their count);
//! - data changed without dirtying pages: the file systems' own
//!   tracepoints for fallocate modes (punch, zero, collapse, insert) and,
//!   on xfs, reflinks. Function entry points (fentry) would be generic, but
//!   this kernel refuses them; btrfs has no tracepoint for its reflinks, so
//!   on btrfs a file fanotify calls modified is compared whole.
//!
//! When a mark is made matters as much as where: a change in flight at a
//! swap must be marked in the epoch after it unless its bytes are in place
//! before the swap ends. Buffered writes are marked at `write_end` (their
//! bytes copied) and direct I/O at its completion. The fallocate points
//! above fire as the operation starts, and ext4 and xfs have no tracepoint
//! at their end; so their keys are flagged ([`CARRIED`]) and the swap that
//! freezes one marks its range again in the new epoch: an operation still
//! running when a swap ends, and still running when the dump reads its
//! range, is read again by the next dump. (One that outlasts two swaps and
//! the reading between them would still be missed.)
//!
//! Each program computes a key (file system, inode, first page, page
//! count), drops it unless the file system is the tracked one, and inserts
//! it in the map the control block names active. The swap protocol: a
//! program raises the in-flight count of the generation it read, reads the
//! generation again and inserts into that one's map, then lowers the count
//! it raised. User space switches the generation and waits until the old
//! one's count is zero: any program that raised it before the switch has
//! then finished, and any that raised it after the switch read the new
//! generation on its second look. So once the count is zero, nothing more
//! enters the old map.
//!
//! Precision on ext4. A dirty folio is marked whole, since a store through
//! a shared mapping may change any page of it; but in a large folio (up to
//! 2 MiB of a file read into the cache) that marks 512 times what a 4 KiB
//! write changed. So on ext4, whose write path has tracepoints with the
//! write's byte range, a folio dirtied by a buffered write is left to that
//! range alone, when all of this holds (else the whole folio is marked):
//! - the write's range was recorded (per CPU) by this same thread, for
//!   this inode, with its first byte inside the folio, and that record is
//!   used once;
//! - the range went into the map still active (no swap since: the
//!   generation counter recorded with it is the current one);
//! - the file has no writable shared mapping (`i_mmap_writable` is 0).
//!
//! Why nothing is missed: the folio was clean, so its other bytes are the
//! ones on disk, and every change to them was marked at its own point.
//! While it stays dirty, later changes to it raise no dirty event; each is
//! marked at its own point: another write (its range), fallocate modes
//! (their ranges), a truncation (`ext4_truncate_enter`: from the new size
//! to the end), and stores through a mapping created later: a page is
//! mapped only by a fault, and a fault on a file with a writable shared
//! mapping marks the largest folio's worth of pages around it
//! (`mm_filemap_fault`, `mm_filemap_map_pages`). A record left over from a
//! write whose folio was already dirty can only be used by a later dirty
//! event of the same thread on the same folio, which is one of those points
//! (each marks its own change).
//!
//! Why an ext4 swap writes back only mapped files. The one change marked
//! at no point of its own is a store through a page table entry already
//! writable. An entry becomes writable only through a fault of a file with
//! a writable shared mapping, and every such fault, and every dirty folio
//! of such a file, names the inode in a mapped key ([`MAPPED`]) of the
//! epoch, with the pages around it marked. The swap writes those files back
//! (which write-protects their entries), so an entry writable after a swap
//! was made writable, and its pages marked, in the epoch that swap began;
//! a store through it is inside a mark of that epoch. Mappings older than
//! the programs are covered by the daemon's first swap, a `syncfs`.

use super::bpf::{Alu, Asm, Cond, Reg::*, Size::*};
use super::btf::Btf;
use anyhow::Result;

/// Words of the shared control block.
pub mod ctl {
    /// The active generation (0 or 1, low bit of a counter user space
    /// increments).
    pub const GEN: usize = 0;
    /// Programs in flight per generation (words 1, 2).
    pub const INFLIGHT: usize = 1;
    /// Inserts refused per generation (map full): words 3, 4.
    pub const OVERFLOW: usize = 3;
    /// Keys inserted per generation: words 5, 6.
    pub const INSERTED: usize = 5;
    /// Size of the control block in bytes.
    pub const BYTES: u32 = 64;
}

/// A page count that means "to the end of the file, whatever its size".
pub const TO_END: u64 = 1 << 40;

/// Where a program attaches, and what it reads there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// `writeback_dirty_folio(folio, mapping)`: a folio became dirty.
    DirtyFolio,
    /// `iomap_dio_complete(iocb, error, ret)`: a direct write (or read)
    /// done. Marked at its completion, not its start: a direct write in
    /// flight at a swap holds no lock the swap waits for, so one marked
    /// when it began could land after the dump had read its range.
    DirectIo,
    /// A file system's tracepoint over (inode, offset, length):
    /// fallocate modes, punch, zero, collapse, insert, reflink.
    Range {
        /// Tracepoint name.
        name: &'static str,
        /// Argument holding the inode (`struct inode *`, or the file
        /// system's inode embedding one).
        inode_arg: u8,
        /// Offset argument (bytes).
        offset_arg: u8,
        /// Length argument (bytes); None: to the end of the file.
        len_arg: Option<u8>,
        /// Whether everything after the offset moves (collapse, insert).
        to_end: bool,
        /// Whether the inode argument is an `xfs_inode`.
        xfs: bool,
    },
    /// A buffered write's end, `(inode, pos, len, copied)`, its bytes
    /// already in the page cache: its range is marked, and recorded for the
    /// dirty folio that follows (ext4's `*_write_end`; see the module's
    /// "Precision on ext4"). Marked at the end, not the start: a write
    /// whose mark goes into the epoch a swap ends has then copied its bytes
    /// before the swap, so the dump after it reads them; one that has not
    /// copied them yet marks the next epoch.
    Write {
        /// Tracepoint name.
        name: &'static str,
    },
    /// A truncation, `(inode)` with the new size already set: everything
    /// from the page holding the new end on is marked.
    Cut {
        /// Tracepoint name.
        name: &'static str,
    },
    /// A page fault of a file, `(mapping, index[, last_index])`: when the
    /// file has a writable shared mapping, the largest folios around the
    /// pages are marked, since a store may follow without a dirty event.
    Fault {
        /// Tracepoint name.
        name: &'static str,
        /// Whether the tracepoint passes a last index (fault-around).
        last: bool,
    },
    /// A dirty folio or a page fault of a file with a writable shared
    /// mapping, `(mapping at argument mapping_arg, ...)`: the inode is
    /// named in a mapped key, so the swap writes its pages back and
    /// write-protects them (ext4, whose swap cleans only such files).
    Mapped {
        /// Tracepoint name.
        name: &'static str,
        /// Argument holding the `struct address_space *`.
        mapping_arg: u8,
    },
    /// A file system's tracepoint saying only that an inode changed
    /// (flags set with chattr raise no fanotify event): it is stat-ed
    /// again, no data is marked.
    Touch {
        /// Tracepoint name.
        name: &'static str,
        /// Whether the inode argument (the first) is an `xfs_inode`.
        xfs: bool,
    },
}

/// The first page of a touch key: no file has pages that far.
pub const TOUCHED: u64 = 1 << 62;

/// The first page of a mapped key (dev, ino, `MAPPED`, `MAPPED_PAGES`):
/// the inode had a writable shared mapping in the epoch, so the swap
/// writes it back (see "Why an ext4 swap writes back only mapped files").
/// Not a page range.
pub const MAPPED: u64 = 1 << 61;

/// A mapped key's page count: over 64, so the key keeps its own entry
/// instead of taking the 64-page bitmap form.
pub const MAPPED_PAGES: u64 = 1 << 63;

/// A flag in the page count of a range marked where an operation starts
/// (the fallocate points): the swap that freezes it marks it again in the
/// new epoch (see "When a mark is made").
pub const CARRIED: u64 = 1 << 62;

const fn range(name: &'static str, len: bool, to_end: bool, xfs: bool) -> Point {
    Point::Range {
        name,
        inode_arg: 0,
        offset_arg: 1,
        len_arg: if len { Some(2) } else { None },
        to_end,
        xfs,
    }
}

/// The points of ext4: every way its file data changes without a page
/// becoming dirty, and what the precise marking of writes needs (see
/// "Precision on ext4").
pub const EXT4: [Point; 12] = [
    // Buffered writes, as ranges (a write into inline data dirties no
    // page), recorded for the dirty folio that follows.
    Point::Write {
        name: "ext4_da_write_end",
    },
    Point::Write {
        name: "ext4_write_end",
    },
    Point::Write {
        name: "ext4_journalled_write_end",
    },
    // What may change a folio a write left dirty without raising a dirty
    // event (see "Precision on ext4").
    Point::Cut {
        name: "ext4_truncate_enter",
    },
    Point::Fault {
        name: "mm_filemap_fault",
        last: false,
    },
    Point::Fault {
        name: "mm_filemap_map_pages",
        last: true,
    },
    // Every change of an inode's on-disk fields (flags, times...).
    Point::Touch {
        name: "ext4_mark_inode_dirty",
        xfs: false,
    },
    range("ext4_fallocate_enter", true, false, false),
    range("ext4_punch_hole", true, false, false),
    range("ext4_zero_range", true, false, false),
    range("ext4_collapse_range", true, true, false),
    range("ext4_insert_range", true, true, false),
];

/// The points of ext4 that name files whose pages a store may change
/// without a mark after the swap (a writable page table entry): the swap
/// writes exactly these back. Attached before every other program, so
/// that on a tracepoint both run at, the mapped key is in the epoch of the
/// pages marked or an earlier one: a swap between the two then writes the
/// file back after its marks, never marks it only in an epoch whose
/// write-back came before.
pub const EXT4_MAPPED: [Point; 3] = [
    Point::Mapped {
        name: "writeback_dirty_folio",
        mapping_arg: 1,
    },
    Point::Mapped {
        name: "mm_filemap_fault",
        mapping_arg: 0,
    },
    Point::Mapped {
        name: "mm_filemap_map_pages",
        mapping_arg: 0,
    },
];

/// The points of xfs, reflinks included (the destination of a remap).
pub const XFS: [Point; 7] = [
    // FS_IOC_SETFLAGS and FS_IOC_FSSETXATTR.
    Point::Touch {
        name: "xfs_ioctl_setattr",
        xfs: true,
    },
    range("xfs_alloc_file_space", true, false, true),
    range("xfs_free_file_space", true, false, true),
    range("xfs_zero_file_space", true, false, true),
    range("xfs_collapse_file_space", true, true, true),
    range("xfs_insert_file_space", true, true, true),
    Point::Range {
        name: "xfs_reflink_remap_range",
        inode_arg: 3,
        offset_arg: 4,
        len_arg: None,
        to_end: true,
        xfs: true,
    },
];

impl Point {
    /// The kernel name of the point.
    pub fn name(self) -> &'static str {
        match self {
            Point::DirtyFolio => "writeback_dirty_folio",
            Point::DirectIo => "iomap_dio_complete",
            Point::Range { name, .. }
            | Point::Touch { name, .. }
            | Point::Write { name }
            | Point::Cut { name }
            | Point::Fault { name, .. }
            | Point::Mapped { name, .. } => name,
        }
    }
}

/// Structure offsets the programs read, from the running kernel's BTF.
pub struct Offsets {
    folio_flags: i16,
    folio_index: i16,
    folio_flags1: i16,
    pg_head: i32,
    mapping_host: i16,
    mapping_mmap_writable: i16,
    inode_ino: i16,
    inode_size: i16,
    inode_sb: i16,
    sb_dev: i16,
    kiocb_filp: i16,
    kiocb_pos: i16,
    file_inode: i16,
    xfs_vnode: Option<i16>,
}

impl Offsets {
    /// Looks every offset up.
    pub fn of(btf: &Btf) -> Result<Offsets> {
        let o = |s: &str, f: &str| -> Result<i16> { Ok(btf.member(s, f)?.0 as i16) };
        Ok(Offsets {
            folio_flags: o("folio", "flags")?,
            folio_index: o("folio", "index")?,
            folio_flags1: o("folio", "_flags_1")?,
            pg_head: btf.enum_value("pageflags", "PG_head")? as i32,
            mapping_host: o("address_space", "host")?,
            mapping_mmap_writable: o("address_space", "i_mmap_writable")?,
            inode_ino: o("inode", "i_ino")?,
            inode_size: o("inode", "i_size")?,
            inode_sb: o("inode", "i_sb")?,
            sb_dev: o("super_block", "s_dev")?,
            kiocb_filp: o("kiocb", "ki_filp")?,
            kiocb_pos: o("kiocb", "ki_pos")?,
            file_inode: o("file", "f_inode")?,
            xfs_vnode: o("xfs_inode", "i_vnode").ok(),
        })
    }
}

/// Key layout on the program's stack: dev, ino, first page, pages.
const KEY: i16 = -32;
const VALUE: i16 = -40;
const CTL_KEY: i16 = -48;
/// A write's byte offset, kept while the key is built.
const WRITE_POS: i16 = -56;

/// `bpf_get_current_pid_tgid`: the thread that runs the program.
const GET_CURRENT_PID_TGID: i32 = 14;

/// Bytes of a per-CPU write record: thread (pid_tgid), dev, ino, pos,
/// and the generation counter when the write's range was marked.
pub const WRITE_RECORD: u32 = 40;

/// The descriptors and constants a program is built against.
pub struct Maps {
    /// The control block (array, one element).
    pub ctl: i32,
    /// The two page maps.
    pub pages: [i32; 2],
    /// The tracked file system, as the kernel numbers it (`s_dev`).
    pub dev: u32,
    /// log2 of the page size.
    pub page_shift: i32,
    /// The per-CPU record of the last buffered write ([`WRITE_RECORD`]
    /// bytes), on file systems whose writes are recorded (ext4): with it,
    /// a folio a write dirtied is left to the write's range.
    pub last_write: Option<i32>,
}

/// Stores dev and ino of the inode R2 points to (`base` bytes into it)
/// into the key.
fn key_inode(a: &mut Asm, o: &Offsets, base: i16) {
    a.ldx(Dw, R3, R2, base + o.inode_sb)
        .ldx(W, R3, R3, o.sb_dev)
        .stx(Dw, Fp, KEY, R3)
        .ldx(Dw, R3, R2, base + o.inode_ino)
        .stx(Dw, Fp, KEY + 8, R3);
}

/// Exits unless the `struct address_space *` at argument `arg` has a
/// writable shared mapping; else stores its inode's dev and ino into the
/// key (R7 = the mapping).
fn key_writable_mapping(a: &mut Asm, o: &Offsets, arg: u8) {
    a.ldx(Dw, R7, R1, arg as i16 * 8)
        .jmp_k(Cond::Eq, R7, 0, "out")
        .ldx(W, R3, R7, o.mapping_mmap_writable)
        .jmp_k(Cond::Eq, R3, 0, "out")
        .ldx(Dw, R2, R7, o.mapping_host)
        .jmp_k(Cond::Eq, R2, 0, "out");
    key_inode(a, o, 0);
}

/// Stores the pages of the byte range [R3, R3 + R4) into the key.
fn key_range(a: &mut Asm, shift: i32) {
    a.alu_x(Alu::Mov, R5, R3)
        .alu_x(Alu::Add, R5, R4)
        .alu_k(Alu::Add, R5, (1 << shift) - 1)
        .alu_k(Alu::Rsh, R5, shift)
        .alu_k(Alu::Rsh, R3, shift)
        .alu_x(Alu::Sub, R5, R3)
        .stx(Dw, Fp, KEY + 16, R3)
        .stx(Dw, Fp, KEY + 24, R5);
}

/// Builds the program for `point`, whose tracepoint passes `args`
/// arguments (a range tracepoint that passes only the inode marks the
/// whole file).
pub fn build(point: Point, args: usize, o: &Offsets, m: &Maps) -> Vec<u64> {
    let mut a = Asm::default();
    let shift = m.page_shift;
    match point {
        Point::DirtyFolio => {
            // (struct folio *folio, struct address_space *mapping)
            a.ldx(Dw, R6, R1, 0)
                .jmp_k(Cond::Eq, R6, 0, "out")
                .ldx(Dw, R7, R1, 8)
                .jmp_k(Cond::Eq, R7, 0, "out")
                .ldx(Dw, R2, R7, o.mapping_host);
            key_inode(&mut a, o, 0);
            a.ldx(Dw, R3, R6, o.folio_index)
                .stx(Dw, Fp, KEY + 16, R3)
                .alu_k(Alu::Mov, R4, 1)
                .ldx(Dw, R3, R6, o.folio_flags)
                .alu_k(Alu::Rsh, R3, o.pg_head)
                .alu_k(Alu::And, R3, 1)
                .jmp_k(Cond::Eq, R3, 0, "small")
                .ldx(Dw, R3, R6, o.folio_flags1)
                .alu_k(Alu::And, R3, 0x3f)
                .alu_x(Alu::Lsh, R4, R3)
                .label("small")
                .stx(Dw, Fp, KEY + 24, R4);
            if let Some(last) = m.last_write {
                written_folio(&mut a, o, m, last);
            }
        }
        Point::Write { .. } => {
            // (struct inode *inode, loff_t pos, unsigned int len)
            a.ldx(Dw, R2, R1, 0).jmp_k(Cond::Eq, R2, 0, "out");
            key_inode(&mut a, o, 0);
            if args < 3 {
                a.alu_k(Alu::Mov, R3, 0)
                    .stx(Dw, Fp, KEY + 16, R3)
                    .ld_imm64(R4, TO_END)
                    .stx(Dw, Fp, KEY + 24, R4);
            } else {
                a.ldx(Dw, R3, R1, 8)
                    .ldx(Dw, R4, R1, 16)
                    .stx(Dw, Fp, WRITE_POS, R3);
                key_range(&mut a, shift);
                if let Some(last) = m.last_write {
                    record_write(&mut a, m, last);
                }
            }
        }
        Point::Cut { .. } => {
            // (struct inode *inode), its size already the new one.
            a.ldx(Dw, R2, R1, 0).jmp_k(Cond::Eq, R2, 0, "out");
            key_inode(&mut a, o, 0);
            a.ldx(Dw, R3, R2, o.inode_size)
                .alu_k(Alu::Rsh, R3, shift)
                .stx(Dw, Fp, KEY + 16, R3)
                .ld_imm64(R4, TO_END)
                .stx(Dw, Fp, KEY + 24, R4);
        }
        Point::Fault { last, .. } => {
            // (struct address_space *mapping, pgoff_t index[, pgoff_t last])
            let big = largest_folio(shift);
            key_writable_mapping(&mut a, o, 0);
            a.ldx(Dw, R3, R1, 8)
                .alu_k(Alu::And, R3, -big)
                .stx(Dw, Fp, KEY + 16, R3);
            if last && args >= 3 {
                a.ldx(Dw, R4, R1, 16);
            } else {
                a.ldx(Dw, R4, R1, 8);
            }
            a.alu_k(Alu::Or, R4, big - 1)
                .alu_k(Alu::Add, R4, 1)
                .alu_x(Alu::Sub, R4, R3)
                .stx(Dw, Fp, KEY + 24, R4);
        }
        Point::Mapped { mapping_arg, .. } => {
            // The mapping's inode, when the file has a writable shared
            // mapping: (dev, ino, MAPPED, MAPPED_PAGES).
            key_writable_mapping(&mut a, o, mapping_arg);
            a.ld_imm64(R3, MAPPED)
                .stx(Dw, Fp, KEY + 16, R3)
                .ld_imm64(R4, MAPPED_PAGES)
                .stx(Dw, Fp, KEY + 24, R4);
        }
        Point::DirectIo => {
            // (struct kiocb *iocb, int error, ssize_t ret), the data moved
            // and the position already past it: [ki_pos - ret, ki_pos).
            // A failed one wrote an unknown part: from ki_pos to the end.
            a.ldx(Dw, R6, R1, 0)
                .jmp_k(Cond::Eq, R6, 0, "out")
                .ldx(Dw, R9, R1, 16)
                .ldx(Dw, R2, R6, o.kiocb_filp)
                .jmp_k(Cond::Eq, R2, 0, "out")
                .ldx(Dw, R2, R2, o.file_inode)
                .jmp_k(Cond::Eq, R2, 0, "out");
            key_inode(&mut a, o, 0);
            a.ldx(Dw, R3, R6, o.kiocb_pos)
                .jmp_k(Cond::Sle, R9, 0, "dio_failed")
                .alu_x(Alu::Sub, R3, R9)
                .alu_x(Alu::Mov, R4, R9);
            key_range(&mut a, shift);
            a.ja("dio_marked")
                .label("dio_failed")
                .alu_k(Alu::Rsh, R3, shift)
                .stx(Dw, Fp, KEY + 16, R3)
                .ld_imm64(R4, TO_END)
                .stx(Dw, Fp, KEY + 24, R4)
                .label("dio_marked");
        }
        Point::Touch { xfs, .. } => {
            let base = if xfs { o.xfs_vnode.unwrap_or(0) } else { 0 };
            a.ldx(Dw, R2, R1, 0).jmp_k(Cond::Eq, R2, 0, "out");
            key_inode(&mut a, o, base);
            a.ld_imm64(R3, TOUCHED)
                .stx(Dw, Fp, KEY + 16, R3)
                .st(Dw, Fp, KEY + 24, 1);
        }
        Point::Range {
            inode_arg,
            offset_arg,
            len_arg,
            to_end,
            xfs,
            ..
        } => {
            let base = if xfs { o.xfs_vnode.unwrap_or(0) } else { 0 };
            a.ldx(Dw, R2, R1, inode_arg as i16 * 8)
                .jmp_k(Cond::Eq, R2, 0, "out");
            key_inode(&mut a, o, base);
            if args <= offset_arg as usize || len_arg.is_some_and(|l| args <= l as usize) {
                // Only the inode: all of it.
                a.alu_k(Alu::Mov, R3, 0)
                    .stx(Dw, Fp, KEY + 16, R3)
                    .ld_imm64(R4, TO_END)
                    .stx(Dw, Fp, KEY + 24, R4);
                carried(&mut a);
                tail(&mut a, m);
                return a.finish();
            }
            a.ldx(Dw, R3, R1, offset_arg as i16 * 8);
            match len_arg {
                Some(l) => a.ldx(Dw, R4, R1, l as i16 * 8),
                None => a.alu_k(Alu::Mov, R4, 0),
            };
            key_range(&mut a, shift);
            if to_end || len_arg.is_none() {
                a.ld_imm64(R4, TO_END).stx(Dw, Fp, KEY + 24, R4);
            }
            carried(&mut a);
        }
    }
    tail(&mut a, m);
    a.finish()
}

/// Flags the key built as one the swap carries into the next epoch
/// ([`CARRIED`]); which also keeps it out of the bitmap form.
fn carried(a: &mut Asm) {
    a.ldx(Dw, R4, Fp, KEY + 24)
        .ld_imm64(R5, CARRIED)
        .alu_x(Alu::Or, R4, R5)
        .stx(Dw, Fp, KEY + 24, R4);
}

/// Pages of the largest folio: one page table's worth (a PMD), which is
/// `page size / 8` pages (512 of 4 KiB).
fn largest_folio(shift: i32) -> i32 {
    1 << (shift - 3)
}

/// Records the write whose key was just built (its byte offset at
/// `WRITE_POS`) in this CPU's record: thread, dev, ino, pos and the
/// generation counter, for the dirty folio that follows.
fn record_write(a: &mut Asm, m: &Maps, last: i32) {
    a.ldx(Dw, R1, Fp, KEY)
        .ld_imm64(R2, m.dev as u64)
        .jmp_x(Cond::Ne, R1, R2, "out")
        .st(W, Fp, CTL_KEY, 0)
        .ld_map(R1, m.ctl)
        .alu_x(Alu::Mov, R2, Fp)
        .alu_k(Alu::Add, R2, CTL_KEY as i32)
        .call(1) // map_lookup_elem
        .jmp_k(Cond::Eq, R0, 0, "out")
        .ldx(Dw, R9, R0, 0)
        .call(GET_CURRENT_PID_TGID)
        .alu_x(Alu::Mov, R8, R0)
        .ld_map(R1, last)
        .alu_x(Alu::Mov, R2, Fp)
        .alu_k(Alu::Add, R2, CTL_KEY as i32)
        .call(1)
        .jmp_k(Cond::Eq, R0, 0, "recorded")
        .stx(Dw, R0, 0, R8)
        .ldx(Dw, R1, Fp, KEY)
        .stx(Dw, R0, 8, R1)
        .ldx(Dw, R1, Fp, KEY + 8)
        .stx(Dw, R0, 16, R1)
        .ldx(Dw, R1, Fp, WRITE_POS)
        .stx(Dw, R0, 24, R1)
        .stx(Dw, R0, 32, R9)
        .label("recorded");
}

/// In the dirty-folio program (R7 = the mapping, the folio's key built):
/// leaves the folio to the write that dirtied it, exiting without a mark,
/// when this CPU's write record is this thread's, for this inode, with its
/// first byte in this folio and its range marked in the generation still
/// active, and the file has no writable shared mapping (see "Precision on
/// ext4"). The record is used once. Otherwise falls through to the mark.
fn written_folio(a: &mut Asm, o: &Offsets, m: &Maps, last: i32) {
    let shift = m.page_shift;
    a.ldx(Dw, R1, Fp, KEY)
        .ld_imm64(R2, m.dev as u64)
        .jmp_x(Cond::Ne, R1, R2, "out")
        .call(GET_CURRENT_PID_TGID)
        .alu_x(Alu::Mov, R8, R0)
        .st(W, Fp, CTL_KEY, 0)
        .ld_map(R1, last)
        .alu_x(Alu::Mov, R2, Fp)
        .alu_k(Alu::Add, R2, CTL_KEY as i32)
        .call(1) // map_lookup_elem
        .jmp_k(Cond::Eq, R0, 0, "whole")
        .ldx(Dw, R1, R0, 0)
        .jmp_x(Cond::Ne, R1, R8, "whole")
        .st(Dw, R0, 0, 0)
        .alu_x(Alu::Mov, R9, R0)
        .ldx(Dw, R1, R9, 8)
        .ldx(Dw, R2, Fp, KEY)
        .jmp_x(Cond::Ne, R1, R2, "whole")
        .ldx(Dw, R1, R9, 16)
        .ldx(Dw, R2, Fp, KEY + 8)
        .jmp_x(Cond::Ne, R1, R2, "whole")
        // The write's first byte in [folio start, folio end).
        .ldx(Dw, R1, R9, 24)
        .ldx(Dw, R2, Fp, KEY + 16)
        .alu_k(Alu::Lsh, R2, shift)
        .jmp_x(Cond::Lt, R1, R2, "whole")
        .ldx(Dw, R3, Fp, KEY + 24)
        .alu_k(Alu::Lsh, R3, shift)
        .alu_x(Alu::Add, R3, R2)
        .jmp_x(Cond::Ge, R1, R3, "whole")
        .ldx(W, R1, R7, o.mapping_mmap_writable)
        .jmp_k(Cond::Ne, R1, 0, "whole")
        .ld_map(R1, m.ctl)
        .alu_x(Alu::Mov, R2, Fp)
        .alu_k(Alu::Add, R2, CTL_KEY as i32)
        .call(1)
        .jmp_k(Cond::Eq, R0, 0, "whole")
        .ldx(Dw, R1, R0, 0)
        .ldx(Dw, R2, R9, 32)
        .jmp_x(Cond::Eq, R1, R2, "out")
        .label("whole");
}

/// The shared part: filter by file system, then the insert under the swap
/// protocol.
///
/// A range of at most 64 pages inside one aligned run of 64 (every folio
/// of order 6 or less: folios are aligned to their size) is recorded as a
/// bit in a per-run bitmap, key (dev, ino, run start, 0): after a run's
/// first write the others are a lookup and an atomic OR, with no
/// allocation, and a map entry covers up to 64 pages. Any other range is
/// its own key (dev, ino, first, pages), value unused.
fn tail(a: &mut Asm, m: &Maps) {
    a.ldx(Dw, R1, Fp, KEY)
        .ld_imm64(R2, m.dev as u64)
        .jmp_x(Cond::Ne, R1, R2, "out")
        .st(Dw, Fp, VALUE, 0)
        .st(W, Fp, CTL_KEY, 0)
        // Bitmap form? R4 = first, R5 = pages, R3 = first % 64.
        .ldx(Dw, R4, Fp, KEY + 16)
        .ldx(Dw, R5, Fp, KEY + 24)
        .jmp_k(Cond::Eq, R5, 0, "ranged")
        .jmp_k(Cond::Gt, R5, 64, "ranged")
        .alu_x(Alu::Mov, R3, R4)
        .alu_k(Alu::And, R3, 63)
        .alu_x(Alu::Mov, R2, R3)
        .alu_x(Alu::Add, R2, R5)
        .jmp_k(Cond::Gt, R2, 64, "ranged")
        // mask = (2^pages - 1) << (first % 64); 64 pages: all ones.
        .alu_k(Alu::Mov, R1, -1)
        .jmp_k(Cond::Eq, R5, 64, "full")
        .alu_k(Alu::Mov, R1, 1)
        .alu_x(Alu::Lsh, R1, R5)
        .alu_k(Alu::Sub, R1, 1)
        .label("full")
        .alu_x(Alu::Lsh, R1, R3)
        .stx(Dw, Fp, VALUE, R1)
        .alu_x(Alu::Sub, R4, R3)
        .stx(Dw, Fp, KEY + 16, R4)
        .st(Dw, Fp, KEY + 24, 0)
        .label("ranged")
        .ld_map(R1, m.ctl)
        .alu_x(Alu::Mov, R2, Fp)
        .alu_k(Alu::Add, R2, CTL_KEY as i32)
        .call(1) // map_lookup_elem
        .jmp_k(Cond::Eq, R0, 0, "out")
        .alu_x(Alu::Mov, R7, R0)
        // R9 = &ctl[gen]: its word INFLIGHT counts this program.
        .ldx(Dw, R8, R7, 0)
        .alu_k(Alu::And, R8, 1)
        .alu_k(Alu::Lsh, R8, 3)
        .alu_x(Alu::Mov, R9, R7)
        .alu_x(Alu::Add, R9, R8)
        .alu_k(Alu::Mov, R1, 1)
        .atomic_add(R9, (ctl::INFLIGHT * 8) as i16, R1)
        // The generation again: the map this insert goes to; R6 = its
        // counters.
        .ldx(Dw, R8, R7, 0)
        .alu_k(Alu::And, R8, 1)
        .alu_x(Alu::Mov, R6, R8)
        .alu_k(Alu::Lsh, R6, 3)
        .alu_x(Alu::Add, R6, R7)
        .jmp_k(Cond::Ne, R8, 0, "second");
    insert(a, m.pages[0], ["b0", "p0", "race0"]);
    a.label("second");
    insert(a, m.pages[1], ["b1", "p1", "race1"]);
    a.label("inserted")
        .alu_k(Alu::Mov, R1, 1)
        .atomic_add(R6, (ctl::INSERTED * 8) as i16, R1)
        .ja("done")
        .label("overflow")
        .alu_k(Alu::Mov, R1, 1)
        .atomic_add(R6, (ctl::OVERFLOW * 8) as i16, R1)
        .label("done")
        .alu_k(Alu::Mov, R1, -1)
        .atomic_add(R9, (ctl::INFLIGHT * 8) as i16, R1)
        .label("out")
        .alu_k(Alu::Mov, R0, 0)
        .exit();
}

/// Records the key into page map `map`: a bitmap key is OR-ed into an
/// existing entry (or inserted); a range key is inserted unless present.
/// Ends at "inserted", "overflow" or "done".
fn insert(a: &mut Asm, map: i32, l: [&'static str; 3]) {
    let [bitmap_absent, plain, race] = l;
    a.ldx(Dw, R1, Fp, KEY + 24)
        .jmp_k(Cond::Ne, R1, 0, plain)
        .ld_map(R1, map)
        .alu_x(Alu::Mov, R2, Fp)
        .alu_k(Alu::Add, R2, KEY as i32)
        .call(1) // map_lookup_elem
        .jmp_k(Cond::Eq, R0, 0, bitmap_absent)
        .ldx(Dw, R1, Fp, VALUE)
        .atomic_or(R0, 0, R1)
        .ja("done")
        .label(bitmap_absent)
        .label(plain)
        .ld_map(R1, map)
        .alu_x(Alu::Mov, R2, Fp)
        .alu_k(Alu::Add, R2, KEY as i32)
        .alu_x(Alu::Mov, R3, Fp)
        .alu_k(Alu::Add, R3, VALUE as i32)
        .alu_k(Alu::Mov, R4, 1) // BPF_NOEXIST
        .call(2) // map_update_elem
        .jmp_k(Cond::Eq, R0, 0, "inserted")
        .jmp_k(Cond::Ne, R0, -libc::EEXIST, "overflow")
        // Present: a range key is no news; a bitmap key was inserted by
        // another CPU since the lookup: OR into it.
        .ldx(Dw, R1, Fp, KEY + 24)
        .jmp_k(Cond::Ne, R1, 0, "done")
        .ld_map(R1, map)
        .alu_x(Alu::Mov, R2, Fp)
        .alu_k(Alu::Add, R2, KEY as i32)
        .call(1)
        .jmp_k(Cond::Eq, R0, 0, "overflow")
        .ldx(Dw, R1, Fp, VALUE)
        .atomic_or(R0, 0, R1)
        .ja("done")
        .label(race);
}
