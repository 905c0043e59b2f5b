//! The metadata of one snapshot of a source: inodes, directory entries and
//! each regular file's block pointers (runs of VBNs).
//!
//! The same model is carried in a stream's metadata section (so a stream can
//! be listed from its front) and in the catalog (so the next dump knows each
//! file's blocks and their checksums). Inode numbers are stream-local:
//! 1 is the root, and they are numbered in the order entries first appear in
//! a depth-first walk, which lets readers keep them in a plain vector.

use crate::wire::{Dec, Enc};
use anyhow::{bail, Context, Result};

/// Inode number of the source's root directory.
pub const ROOT_INO: u64 = 1;
/// Longest name accepted from a stream; Linux allows 255, this leaves room
/// for other systems while still bounding memory.
pub const MAX_NAME: usize = 1024;
/// Longest symlink target accepted from a stream (Linux PATH_MAX).
pub const MAX_TARGET: usize = 4096;
/// Limits on extended attributes accepted from a stream (Linux's own limits).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest xattr value accepted (Linux XATTR_SIZE_MAX).
pub const MAX_XATTR_VALUE: usize = 65536;

/// File types snapdump records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A directory.
    Dir = 1,
    /// A regular file.
    File = 2,
    /// A symbolic link (its target is kept, never followed).
    Symlink = 3,
    /// A named pipe.
    Fifo = 4,
    /// A Unix socket (recreated as an unbound socket node).
    Socket = 5,
    /// A character device.
    CharDev = 6,
    /// A block device.
    BlockDev = 7,
}

impl Kind {
    /// Decodes the on-disk kind byte.
    pub fn from_u8(v: u8) -> Result<Kind> {
        Ok(match v {
            1 => Kind::Dir,
            2 => Kind::File,
            3 => Kind::Symlink,
            4 => Kind::Fifo,
            5 => Kind::Socket,
            6 => Kind::CharDev,
            7 => Kind::BlockDev,
            _ => bail!("unknown file type {v}"),
        })
    }
    /// Short name used in listings and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::CharDev => "chardev",
            Kind::BlockDev => "blockdev",
        }
    }
    /// The S_IFMT bits of this kind.
    pub fn ifmt(self) -> u32 {
        match self {
            Kind::Dir => libc::S_IFDIR,
            Kind::File => libc::S_IFREG,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
            Kind::CharDev => libc::S_IFCHR,
            Kind::BlockDev => libc::S_IFBLK,
        }
    }
    /// The kind of an `st_mode`, if snapdump records it.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFREG => Kind::File,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => return None,
        })
    }
}

/// A timestamp to the nanosecond.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time {
    /// Seconds since the epoch.
    pub sec: i64,
    /// Nanoseconds, 0..1e9.
    pub nsec: u32,
}

impl Time {
    /// The current wall-clock time.
    pub fn now() -> Time {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        }
    }
    /// RFC 3339 in UTC, for listings and JSON.
    pub fn rfc3339(self) -> String {
        match self.system_time() {
            Some(t) => humantime::format_rfc3339_seconds(t).to_string(),
            None => self.raw(),
        }
    }
    /// RFC 3339 in UTC with nanoseconds, where a difference below a second
    /// matters (comparisons).
    pub fn rfc3339_nanos(self) -> String {
        match self.system_time() {
            Some(t) => humantime::format_rfc3339_nanos(t).to_string(),
            None => self.raw(),
        }
    }
    /// The time as a `SystemTime` when RFC 3339 can show it (years 1970
    /// to 9999); times outside, which hostile or odd inputs carry, are
    /// shown as raw seconds instead.
    fn system_time(self) -> Option<std::time::SystemTime> {
        const MAX_RFC3339: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
        if !(0..=MAX_RFC3339).contains(&self.sec) {
            return None;
        }
        Some(
            std::time::UNIX_EPOCH
                + std::time::Duration::new(self.sec as u64, self.nsec.min(999_999_999)),
        )
    }
    fn raw(self) -> String {
        format!("{}.{:09}", self.sec, self.nsec)
    }
    pub(crate) fn enc(self, e: &mut Enc) {
        e.i64(self.sec);
        e.u32(self.nsec);
    }
    pub(crate) fn dec(d: &mut Dec) -> Result<Time> {
        let sec = d.i64()?;
        let nsec = d.u32()?;
        if nsec >= 1_000_000_000 {
            bail!("timestamp nanoseconds {nsec} out of range");
        }
        Ok(Time { sec, nsec })
    }
}

/// Ownership, permissions and times of an inode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Permission bits including setuid, setgid and sticky (0o7777).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number of a device node.
    pub rdev: u64,
    /// Last access.
    pub atime: Time,
    /// Last modification.
    pub mtime: Time,
    /// Last status change (recorded for change detection; cannot be restored).
    pub ctime: Time,
}

/// A run of consecutive file blocks stored at consecutive VBNs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Index of the first block in the file (byte offset / block size).
    pub block: u64,
    /// VBN of the first block; VBN 0 is never allocated.
    pub vbn: u64,
    /// Number of blocks in the run (at least 1).
    pub count: u64,
}

/// Where a source inode lived on the source system; the catalog keeps it so
/// the next dump can tell unchanged files without reading them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceKey {
    /// st_dev of the source file.
    pub dev: u64,
    /// st_ino of the source file.
    pub ino: u64,
}

/// One inode of a snapshot.
#[derive(Clone, Debug)]
pub struct Inode {
    /// Stream-local inode number (1 = root).
    pub ino: u64,
    /// File type.
    pub kind: Kind,
    /// Ownership, permissions, times.
    pub attrs: Attrs,
    /// Size in bytes (regular files; symlinks: target length).
    pub size: u64,
    /// Symlink target, raw bytes.
    pub target: Vec<u8>,
    /// Extended attributes as (name, value), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Linux inode flags (`chattr`; [`crate::fileflags::RECORDED`] bits),
    /// of regular files and directories; 0 for other kinds.
    pub flags: u32,
    /// Project id (quota project) of a file or directory; 0 for none.
    pub projid: u32,
    /// Data runs of a regular file; blocks not covered are holes.
    pub extents: Vec<Extent>,
    /// Source identity (catalog only; zero in streams).
    pub src: SourceKey,
    /// XXH3-128 checksum of each block, in extent order (catalog only).
    pub sums: Sums,
}

/// A file's block checksums in a catalog's tree: in memory, or left in
/// the catalog's pack until a dump needs them. Why: checksums are most of
/// a catalog (16 bytes a block against some 80 an entry), and a dump needs
/// them only for the files that changed; left in the pack, loading and
/// committing a catalog costs its entries, not its blocks.
#[derive(Clone, Debug)]
pub enum Sums {
    /// In memory, one per data block in extent order.
    Here(Vec<[u8; 16]>),
    /// In a sums record of the catalog's pack (formats/catalog.md); boxed
    /// so that an inode, of which a tree holds millions, stays small.
    Packed(Box<PackedSums>),
}

impl Default for Sums {
    fn default() -> Sums {
        Sums::Here(Vec::new())
    }
}

impl Sums {
    /// How many checksums (data blocks) there are, loaded or not.
    pub fn len(&self) -> usize {
        match self {
            Sums::Here(v) => v.len(),
            Sums::Packed(p) => p.count as usize,
        }
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a file's checksums are in a catalog's pack: the record's offset,
/// and what it must hold (so a pack that lies is caught on reading).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedSums {
    /// Offset of the sums record in the pack file.
    pub offset: u64,
    /// Number of checksums in the record.
    pub count: u32,
    /// BLAKE3 of the checksums' bytes.
    pub hash: [u8; 32],
}

impl Inode {
    /// A new inode with no data, xattrs or target.
    pub fn new(ino: u64, kind: Kind, attrs: Attrs) -> Inode {
        Inode {
            ino,
            kind,
            attrs,
            size: 0,
            target: Vec::new(),
            xattrs: Vec::new(),
            flags: 0,
            projid: 0,
            extents: Vec::new(),
            src: SourceKey::default(),
            sums: Sums::default(),
        }
    }
    /// Number of data blocks (not holes) the file has.
    pub fn block_count(&self) -> u64 {
        self.extents.iter().map(|e| e.count).sum()
    }
}

/// A name in a directory.
#[derive(Clone, Debug)]
pub struct Dirent {
    /// Inode of the containing directory (0 for the root's own entry).
    pub parent: u64,
    /// The name, raw bytes (no '/', no NUL, not "." or "..").
    pub name: Vec<u8>,
    /// Inode the name refers to.
    pub ino: u64,
}

/// The metadata of one snapshot, in depth-first order.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    /// Inodes; `inodes[i].ino == i + 1`.
    pub inodes: Vec<Inode>,
    /// Directory entries; a directory's own entry precedes its children's.
    pub dirents: Vec<Dirent>,
    /// For each inode, the index of its first dirent (its primary path).
    first: Vec<usize>,
}

/// Where a catalog item's checksums are (catalog format 5 on): inline
/// after this byte, or in a sums record of the pack.
const SUMS_INLINE: u8 = 0;
const SUMS_PACKED: u8 = 1;

/// Entry tags of the metadata encoding.
const TAG_INODE: u8 = 1;
const TAG_LINK: u8 = 2;

impl Tree {
    /// An empty tree with room for `entries` names and inodes: a tree
    /// of a million entries grown by doubling copies and faults in
    /// hundreds of MiB on the way.
    pub fn with_capacity(entries: usize) -> Tree {
        Tree {
            inodes: Vec::with_capacity(entries),
            dirents: Vec::with_capacity(entries),
            first: Vec::with_capacity(entries),
        }
    }
    /// The inode with number `ino` (which must exist).
    pub fn inode(&self, ino: u64) -> &Inode {
        &self.inodes[(ino - 1) as usize]
    }
    /// Mutable access to inode `ino`.
    pub fn inode_mut(&mut self, ino: u64) -> &mut Inode {
        &mut self.inodes[(ino - 1) as usize]
    }
    /// Adds a new inode under `parent` with `name`; returns its number.
    pub fn push_inode(&mut self, parent: u64, name: Vec<u8>, mut inode: Inode) -> u64 {
        let ino = self.inodes.len() as u64 + 1;
        inode.ino = ino;
        self.first.push(self.dirents.len());
        self.dirents.push(Dirent { parent, name, ino });
        self.inodes.push(inode);
        ino
    }
    /// Adds another name (hard link) for an existing inode.
    pub fn push_link(&mut self, parent: u64, name: Vec<u8>, ino: u64) {
        self.dirents.push(Dirent { parent, name, ino });
    }
    /// The index in `dirents` of the primary entry of `ino`.
    pub fn primary_index(&self, ino: u64) -> usize {
        self.first[(ino - 1) as usize]
    }
    /// The primary directory entry of `ino`.
    pub fn primary(&self, ino: u64) -> &Dirent {
        &self.dirents[self.first[(ino - 1) as usize]]
    }
    /// Directory inodes from the root's child down to `dir` (root excluded),
    /// the chain a reader opens to reach `dir` without long paths.
    pub fn dir_chain(&self, dir: u64) -> Vec<u64> {
        let mut chain = Vec::new();
        let mut cur = dir;
        while cur != ROOT_INO && cur != 0 {
            chain.push(cur);
            cur = self.primary(cur).parent;
        }
        chain.reverse();
        chain
    }
    /// The path of a dirent relative to the root, as raw bytes.
    pub fn dirent_path(&self, d: &Dirent) -> Vec<u8> {
        let mut parts: Vec<&[u8]> = vec![&d.name];
        let mut cur = d.parent;
        while cur != ROOT_INO && cur != 0 {
            let p = self.primary(cur);
            parts.push(&p.name);
            cur = p.parent;
        }
        if d.parent == 0 {
            return b".".to_vec();
        }
        parts.reverse();
        parts.join(&b'/')
    }
    /// The primary path of `ino`.
    pub fn path(&self, ino: u64) -> Vec<u8> {
        self.dirent_path(self.primary(ino))
    }
    /// Total data blocks over all regular files.
    pub fn block_count(&self) -> u64 {
        self.inodes.iter().map(|i| i.block_count()).sum()
    }

    /// Encodes dirent `idx` (and its inode when it is the primary entry) as
    /// one metadata item, with the fields `form` says its format has.
    pub fn encode_item(&self, idx: usize, e: &mut Enc, form: ItemForm) {
        let d = &self.dirents[idx];
        let primary = self.first[(d.ino - 1) as usize] == idx;
        e.u8(if primary { TAG_INODE } else { TAG_LINK });
        e.u64(d.parent);
        e.bytes(&d.name);
        if !primary {
            e.u64(d.ino);
            return;
        }
        let i = self.inode(d.ino);
        e.u64(i.ino);
        e.u8(i.kind as u8);
        e.u32(i.attrs.mode);
        e.u32(i.attrs.uid);
        e.u32(i.attrs.gid);
        e.u64(i.attrs.rdev);
        e.u64(i.size);
        i.attrs.atime.enc(e);
        i.attrs.mtime.enc(e);
        i.attrs.ctime.enc(e);
        e.bytes(&i.target);
        e.u32(i.xattrs.len() as u32);
        for (n, v) in &i.xattrs {
            e.bytes(n);
            e.bytes(v);
        }
        if form.flags {
            e.u32(i.flags);
            e.u32(i.projid);
        }
        e.u32(i.extents.len() as u32);
        for x in &i.extents {
            e.u64(x.block);
            e.u64(x.vbn);
            e.u64(x.count);
        }
        if form.catalog {
            e.u64(i.src.dev);
            e.u64(i.src.ino);
            // Writers write only the current catalog form: a place byte,
            // then the checksums or where they are.
            debug_assert!(form.sums_place, "older catalog forms are read only");
            e.u32(i.sums.len() as u32);
            match &i.sums {
                Sums::Here(v) => {
                    e.u8(SUMS_INLINE);
                    e.fixed(v.as_flattened());
                }
                Sums::Packed(p) => {
                    e.u8(SUMS_PACKED);
                    e.u64(p.offset);
                    e.fixed(&p.hash);
                }
            }
        }
    }
}

/// Which fields a metadata item carries in the format that holds it:
/// streams, volumes and restore states since the versions that added file
/// flags, and catalogs with their own fields too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemForm {
    /// `flags u32, projid u32` after the xattrs (tag-1 items).
    pub flags: bool,
    /// The catalog's source identity and block checksums at the end.
    pub catalog: bool,
    /// The checksums' place byte (catalog format 5 on): inline, or in
    /// the pack.
    pub sums_place: bool,
}

impl ItemForm {
    /// Items as the current formats write them (streams, volumes, states).
    pub const CURRENT: ItemForm = ItemForm {
        flags: true,
        catalog: false,
        sums_place: false,
    };
    /// Items of formats written before file flags were recorded.
    pub const NO_FLAGS: ItemForm = ItemForm {
        flags: false,
        catalog: false,
        sums_place: false,
    };
    /// Items of catalogs written before file flags were recorded (read
    /// only).
    pub const CATALOG_NO_FLAGS: ItemForm = ItemForm {
        flags: false,
        catalog: true,
        sums_place: false,
    };
    /// Items of catalog formats 3 and 4: checksums always inline (read
    /// only).
    pub const CATALOG_INLINE_SUMS: ItemForm = ItemForm {
        flags: true,
        catalog: true,
        sums_place: false,
    };
    /// Items as the current catalog writes them.
    pub const CATALOG: ItemForm = ItemForm {
        flags: true,
        catalog: true,
        sums_place: true,
    };
}

/// Rebuilds a [`Tree`] from metadata items, checking every rule a hostile
/// or damaged stream could break before anything is created on disk.
pub struct TreeBuilder {
    /// The tree built so far.
    pub tree: Tree,
    block_size: u64,
    /// (parent, name) pairs seen: a name may appear once per directory.
    names: std::collections::HashSet<(u64, Vec<u8>)>,
}

/// Checks a block size read from a stream, catalog or restore state: a
/// power of two from 512 bytes to 1 MiB.
pub fn check_block_size(bs: u32) -> Result<()> {
    if !(512..=1 << 20).contains(&bs) || !bs.is_power_of_two() {
        bail!("unsupported block size {bs}");
    }
    Ok(())
}

/// Checks that a name from a stream is one plain path component.
pub fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        bail!("empty file name");
    }
    if name == b"." || name == b".." {
        bail!(
            "file name {:?} is not allowed",
            String::from_utf8_lossy(name)
        );
    }
    if name.contains(&b'/') || name.contains(&0) {
        bail!(
            "file name {:?} contains '/' or NUL",
            String::from_utf8_lossy(name)
        );
    }
    if name.len() > MAX_NAME {
        bail!("file name of {} bytes is too long", name.len());
    }
    Ok(())
}

impl TreeBuilder {
    /// An empty builder for a stream of the given block size.
    pub fn new(block_size: u64) -> Self {
        Self::with_capacity(block_size, 0)
    }

    /// A builder with room for `items` items (at most a million ahead of
    /// time: a count read from a stream is a claim until the items come).
    pub fn with_capacity(block_size: u64, items: u64) -> Self {
        let n = items.min(1 << 20) as usize;
        TreeBuilder {
            tree: Tree::with_capacity(n),
            block_size,
            names: std::collections::HashSet::with_capacity(n),
        }
    }

    /// Decodes and validates one item of the given form (as
    /// [`Tree::encode_item`] wrote it).
    pub fn decode_item(&mut self, d: &mut Dec, form: ItemForm) -> Result<()> {
        let tag = d.u8()?;
        let parent = d.u64()?;
        let name = d.bytes(MAX_NAME)?.to_vec();
        let n = self.tree.inodes.len() as u64;
        let entry = n + 1;
        if self.tree.dirents.is_empty() {
            if tag != TAG_INODE || parent != 0 || !name.is_empty() {
                bail!("metadata does not start with the root directory");
            }
        } else {
            check_name(&name)
                .with_context(|| format!("metadata entry {}", self.tree.dirents.len()))?;
            if parent == 0 || parent > n || self.tree.inode(parent).kind != Kind::Dir {
                bail!(
                    "metadata entry {}: parent inode {parent} is not a known directory",
                    self.tree.dirents.len()
                );
            }
            if !self.names.insert((parent, name.clone())) {
                bail!(
                    "metadata entry {}: the name {:?} appears twice in one directory",
                    self.tree.dirents.len(),
                    String::from_utf8_lossy(&name)
                );
            }
        }
        match tag {
            TAG_LINK => {
                let ino = d.u64()?;
                if ino == 0 || ino > n || self.tree.inode(ino).kind == Kind::Dir {
                    bail!(
                        "metadata entry {}: hard link to invalid inode {ino}",
                        self.tree.dirents.len()
                    );
                }
                self.tree.push_link(parent, name, ino);
            }
            TAG_INODE => {
                let ino = d.u64()?;
                if ino != entry {
                    bail!(
                        "metadata entry {}: inode {ino} out of order (expected {entry})",
                        self.tree.dirents.len()
                    );
                }
                let kind = Kind::from_u8(d.u8()?)?;
                if self.tree.dirents.is_empty() && kind != Kind::Dir {
                    bail!("the root entry is not a directory");
                }
                let mode = d.u32()?;
                if mode & !0o7777 != 0 {
                    bail!("inode {ino}: invalid permission bits {mode:o}");
                }
                let attrs = Attrs {
                    mode,
                    uid: d.u32()?,
                    gid: d.u32()?,
                    rdev: d.u64()?,
                    atime: Time::default(),
                    mtime: Time::default(),
                    ctime: Time::default(),
                };
                let mut inode = Inode::new(ino, kind, attrs);
                inode.size = d.u64()?;
                inode.attrs.atime = Time::dec(d)?;
                inode.attrs.mtime = Time::dec(d)?;
                inode.attrs.ctime = Time::dec(d)?;
                inode.target = d.bytes(MAX_TARGET)?.to_vec();
                if kind == Kind::Symlink && (inode.target.is_empty() || inode.target.contains(&0)) {
                    bail!("inode {ino}: invalid symlink target");
                }
                let nx = d.count(8)?;
                for _ in 0..nx {
                    let xn = d.bytes(MAX_XATTR_NAME)?.to_vec();
                    let xv = d.bytes(MAX_XATTR_VALUE)?.to_vec();
                    if xn.is_empty() || xn.contains(&0) {
                        bail!("inode {ino}: invalid xattr name");
                    }
                    if inode.xattrs.last().is_some_and(|(p, _)| p[..] >= xn[..]) {
                        bail!("inode {ino}: xattr names repeated or out of order");
                    }
                    inode.xattrs.push((xn, xv));
                }
                if form.flags {
                    inode.flags = d.u32()?;
                    inode.projid = d.u32()?;
                    if inode.flags & !crate::fileflags::RECORDED != 0 {
                        bail!(
                            "inode {ino}: unknown file flags {:#x}",
                            inode.flags & !crate::fileflags::RECORDED
                        );
                    }
                    if !matches!(kind, Kind::File | Kind::Dir) && (inode.flags | inode.projid) != 0
                    {
                        bail!("inode {ino}: file flags on a {}", kind.name());
                    }
                }
                let ne = d.count(24)?;
                let mut next_block = 0u64;
                let max_blocks = inode.size.div_ceil(self.block_size);
                for _ in 0..ne {
                    let x = Extent {
                        block: d.u64()?,
                        vbn: d.u64()?,
                        count: d.u64()?,
                    };
                    let end = x.block.checked_add(x.count);
                    if kind != Kind::File
                        || x.count == 0
                        || x.vbn == 0
                        || x.vbn.checked_add(x.count).is_none()
                        || x.block < next_block
                        || end.is_none_or(|e| e > max_blocks)
                    {
                        bail!("inode {ino}: invalid extent {x:?} (size {})", inode.size);
                    }
                    next_block = x.block + x.count;
                    inode.extents.push(x);
                }
                if form.catalog {
                    inode.src.dev = d.u64()?;
                    inode.src.ino = d.u64()?;
                    let packed = if form.sums_place {
                        let count = d.u32()?;
                        match d.u8()? {
                            SUMS_INLINE => Err(count as usize),
                            SUMS_PACKED if count > 0 => Ok(Box::new(PackedSums {
                                count,
                                offset: d.u64()?,
                                hash: d.fixed(32)?.try_into().unwrap(),
                            })),
                            p => bail!(
                                "inode {ino}: invalid checksum place {p} for {count} checksums"
                            ),
                        }
                    } else {
                        Err(d.count(16)?)
                    };
                    inode.sums = match packed {
                        Ok(p) => Sums::Packed(p),
                        Err(ns) => {
                            // In one piece: a catalog holds a checksum per block.
                            let raw = d.fixed(16 * ns)?;
                            Sums::Here(
                                raw.chunks_exact(16)
                                    .map(|c| <[u8; 16]>::try_from(c).unwrap())
                                    .collect(),
                            )
                        }
                    };
                }
                self.tree.push_inode(parent, name, inode);
            }
            _ => bail!(
                "metadata entry {}: unknown tag {tag}",
                self.tree.dirents.len()
            ),
        }
        Ok(())
    }

    /// The finished tree; fails if no root was seen, or if two inodes
    /// claim one VBN (each block belongs to one file: a reader that let two
    /// files share one would hand one file's data to the other).
    pub fn finish(self) -> Result<Tree> {
        if self.tree.inodes.is_empty() {
            bail!("metadata has no root directory");
        }
        let mut runs: Vec<(u64, u64, u64)> = self
            .tree
            .inodes
            .iter()
            .flat_map(|i| i.extents.iter().map(move |x| (x.vbn, x.count, i.ino)))
            .collect();
        runs.sort_unstable();
        for w in runs.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a.0 + a.1 > b.0 {
                let t = &self.tree;
                bail!(
                    "metadata: {} and {} both claim VBN {} (crafted or damaged metadata)",
                    crate::names::escape(&t.path(a.2)),
                    crate::names::escape(&t.path(b.2)),
                    b.0
                );
            }
        }
        Ok(self.tree)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_beyond_rfc3339_are_shown_raw_not_panicking() {
        for sec in [i64::MAX, 253_402_300_800, -1, i64::MIN] {
            let t = Time { sec, nsec: 5 };
            assert_eq!(t.rfc3339(), format!("{sec}.000000005"));
            assert_eq!(t.rfc3339_nanos(), format!("{sec}.000000005"));
        }
        let t = Time {
            sec: 253_402_300_799,
            nsec: 0,
        };
        assert_eq!(t.rfc3339(), "9999-12-31T23:59:59Z");
    }

    use super::*;

    fn sample() -> Tree {
        let mut t = Tree::default();
        let root = t.push_inode(0, vec![], Inode::new(0, Kind::Dir, Attrs::default()));
        let d = t.push_inode(
            root,
            b"d".to_vec(),
            Inode::new(0, Kind::Dir, Attrs::default()),
        );
        let mut f = Inode::new(0, Kind::File, Attrs::default());
        f.size = 10000;
        f.extents.push(Extent {
            block: 0,
            vbn: 1,
            count: 1,
        });
        f.extents.push(Extent {
            block: 2,
            vbn: 2,
            count: 1,
        });
        let f = t.push_inode(d, b"f".to_vec(), f);
        t.push_link(root, b"hard".to_vec(), f);
        t
    }

    #[test]
    fn encode_decode_round_trip() {
        let t = sample();
        let mut e = Enc::new();
        for i in 0..t.dirents.len() {
            t.encode_item(i, &mut e, ItemForm::CATALOG);
        }
        let mut b = TreeBuilder::new(4096);
        let mut d = Dec::new(&e.buf, "meta");
        while !d.is_empty() {
            b.decode_item(&mut d, ItemForm::CATALOG).unwrap();
        }
        let t2 = b.finish().unwrap();
        assert_eq!(t2.inodes.len(), 3);
        assert_eq!(t2.dirents.len(), 4);
        assert_eq!(t2.path(3), b"d/f");
        assert_eq!(t2.inode(3).extents, t.inode(3).extents);
        assert_eq!(t2.dir_chain(2), vec![2]);
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [&b".."[..], b".", b"a/b", b"", b"a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(b"ok\nname").is_ok());
    }
}

/// What a listing shows of one entry, shared by `restore -t` and
/// `volume ls`.
#[derive(serde::Serialize)]
pub struct EntryInfo {
    /// Path relative to the dump's root, escaped.
    pub path: String,
    /// File type.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits, octal.
    pub mode: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: String,
    /// Symlink target, escaped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl EntryInfo {
    /// The entry `d` of `tree`.
    pub fn of(tree: &Tree, d: &Dirent) -> EntryInfo {
        Self::at(tree, d, &tree.dirent_path(d))
    }

    /// The entry `d` of `tree`, whose path the caller knows.
    pub fn at(tree: &Tree, d: &Dirent, path: &[u8]) -> EntryInfo {
        let i = tree.inode(d.ino);
        EntryInfo {
            path: crate::names::escape(path),
            kind: i.kind.name(),
            size: i.size,
            mode: format!("{:04o}", i.attrs.mode),
            uid: i.attrs.uid,
            gid: i.attrs.gid,
            mtime: i.attrs.mtime.rfc3339(),
            target: (i.kind == Kind::Symlink).then(|| crate::names::escape(&i.target)),
        }
    }
}

/// Serialises a time as RFC 3339.
pub fn ser_time<S: serde::Serializer>(v: &Time, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.rfc3339())
}
