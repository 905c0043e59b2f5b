//! The Linux inode flags a snapshot records (`chattr`, `lsattr`), with the
//! kernel's own bit values (formats/stream.md, "File flags"). Only
//! [`RECORDED`] bits are kept: the rest are the file system's bookkeeping
//! (extents, inline data, encryption, verity) that no tool sets. Reading
//! and setting them is `fsx::flags`'s job; this is what they mean.

/// `chattr s`: secure deletion.
pub const SECRM: u32 = 0x0000_0001;
/// `chattr u`: undeletable.
pub const UNRM: u32 = 0x0000_0002;
/// `chattr c`: compress (btrfs).
pub const COMPR: u32 = 0x0000_0004;
/// `chattr S`: synchronous updates.
pub const SYNC: u32 = 0x0000_0008;
/// `chattr i`: immutable.
pub const IMMUTABLE: u32 = 0x0000_0010;
/// `chattr a`: append only.
pub const APPEND: u32 = 0x0000_0020;
/// `chattr d`: no dump.
pub const NODUMP: u32 = 0x0000_0040;
/// `chattr A`: no atime updates.
pub const NOATIME: u32 = 0x0000_0080;
/// `chattr m`: do not compress (btrfs).
pub const NOCOMP: u32 = 0x0000_0400;
/// `chattr j`: data journalling (ext4).
pub const JOURNAL_DATA: u32 = 0x0000_4000;
/// `chattr t`: no tail merging.
pub const NOTAIL: u32 = 0x0000_8000;
/// `chattr D`: synchronous directory updates.
pub const DIRSYNC: u32 = 0x0001_0000;
/// `chattr T`: top of a directory hierarchy (allocator hint).
pub const TOPDIR: u32 = 0x0002_0000;
/// `chattr C`: no copy on write (btrfs; only takes on an empty file).
pub const NOCOW: u32 = 0x0080_0000;
/// `chattr x`: direct access (DAX).
pub const DAX: u32 = 0x0200_0000;
/// `chattr P`: new entries inherit the directory's project id.
pub const PROJINHERIT: u32 = 0x2000_0000;

/// The flags a stream records: those a user sets with `chattr`.
pub const RECORDED: u32 = SECRM
    | UNRM
    | COMPR
    | SYNC
    | IMMUTABLE
    | APPEND
    | NODUMP
    | NOATIME
    | NOCOMP
    | JOURNAL_DATA
    | NOTAIL
    | DIRSYNC
    | TOPDIR
    | NOCOW
    | DAX
    | PROJINHERIT;

/// Flags that forbid the writes and renames a restore makes: set last,
/// after data, attributes and times, and lifted while an increment is
/// applied.
pub const LATE: u32 = IMMUTABLE | APPEND;

/// Flags that act only on a file with no data yet (btrfs takes `C` only
/// while the file is empty; `c` and `m` decide how its data is written):
/// set as the file is created.
pub const EARLY: u32 = NOCOW | COMPR | NOCOMP;

/// `chattr`'s letters, in `lsattr`'s order, for messages and listings.
const LETTERS: [(u32, char); 16] = [
    (SECRM, 's'),
    (UNRM, 'u'),
    (SYNC, 'S'),
    (DIRSYNC, 'D'),
    (IMMUTABLE, 'i'),
    (APPEND, 'a'),
    (NODUMP, 'd'),
    (NOATIME, 'A'),
    (COMPR, 'c'),
    (NOCOW, 'C'),
    (DAX, 'x'),
    (JOURNAL_DATA, 'j'),
    (NOTAIL, 't'),
    (TOPDIR, 'T'),
    (PROJINHERIT, 'P'),
    (NOCOMP, 'm'),
];

/// The flags as `chattr` letters ("-" for none), e.g. `iad`.
pub fn letters(flags: u32) -> String {
    let s: String = LETTERS
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, c)| *c)
        .collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_follow_lsattr() {
        assert_eq!(letters(0), "-");
        assert_eq!(
            letters(IMMUTABLE | APPEND | NODUMP | NOATIME | NOCOW),
            "iadAC"
        );
    }
}
