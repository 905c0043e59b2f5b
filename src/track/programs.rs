//! The tracker's BPF programs: one per kernel point where file data
//! changes, each recording a page range of an inode in the active map.
//!
//! Where data changes, and who reports it:
//! - a page of the page cache goes from clean to dirty (`write(2)`,
//!   `mmap` stores, splice, io_uring): the tracepoint
//!   `writeback_dirty_folio`, with the folio's first page and its size;
//! - a direct write: the tracepoint `iomap_dio_rw_begin` (position and
//!   length);
//! - data changed without dirtying pages: the file systems' own
//!   tracepoints for fallocate modes (punch, zero, collapse, insert) and,
//!   on xfs, reflinks. Function entry points (fentry) would be generic, but
//!   this kernel refuses them; btrfs has no tracepoint for its reflinks, so
//!   on btrfs a file fanotify calls modified is compared whole.
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
    /// `iomap_dio_rw_begin(iocb, iter, ...)`: a direct write (or read).
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
/// becoming dirty (truncation is seen from the size and the data regions;
/// the cut page is dirtied).
pub const EXT4: [Point; 8] = [
    // Buffered writes, as ranges: a write into inline data dirties no page.
    range("ext4_da_write_begin", true, false, false),
    range("ext4_write_begin", true, false, false),
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
            Point::DirectIo => "iomap_dio_rw_begin",
            Point::Range { name, .. } | Point::Touch { name, .. } => name,
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
    inode_ino: i16,
    inode_sb: i16,
    sb_dev: i16,
    kiocb_filp: i16,
    kiocb_pos: i16,
    iter_count: i16,
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
            inode_ino: o("inode", "i_ino")?,
            inode_sb: o("inode", "i_sb")?,
            sb_dev: o("super_block", "s_dev")?,
            kiocb_filp: o("kiocb", "ki_filp")?,
            kiocb_pos: o("kiocb", "ki_pos")?,
            iter_count: o("iov_iter", "count")?,
            file_inode: o("file", "f_inode")?,
            xfs_vnode: o("xfs_inode", "i_vnode").ok(),
        })
    }
}

/// Key layout on the program's stack: dev, ino, first page, pages.
const KEY: i16 = -32;
const VALUE: i16 = -40;
const CTL_KEY: i16 = -48;

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
        }
        Point::DirectIo => {
            // (struct kiocb *iocb, struct iov_iter *iter, ...)
            a.ldx(Dw, R6, R1, 0)
                .jmp_k(Cond::Eq, R6, 0, "out")
                .ldx(Dw, R7, R1, 8)
                .jmp_k(Cond::Eq, R7, 0, "out")
                .ldx(Dw, R2, R6, o.kiocb_filp)
                .ldx(Dw, R2, R2, o.file_inode);
            key_inode(&mut a, o, 0);
            a.ldx(Dw, R3, R6, o.kiocb_pos).ldx(Dw, R4, R7, o.iter_count);
            key_range(&mut a, shift);
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
        }
    }
    tail(&mut a, m);
    a.finish()
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
