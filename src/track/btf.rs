//! Reading the kernel's own type information (`/sys/kernel/btf/vmlinux`).
//!
//! The tracker's BPF programs are generated here, not compiled: they read a
//! handful of kernel structure fields (a folio's index and order, an inode's
//! number and super block, a file's inode), and those fields move between
//! kernel builds. BTF names every structure member with its bit offset, so
//! the offsets are looked up at load time from the running kernel, the way
//! libbpf's CO-RE relocations do, without a compiler on the machine. Only
//! what the lookups need is decoded: type kinds, names, struct and union
//! members (through anonymous members), enum values, typedefs and functions.
//! The format is the kernel's `Documentation/bpf/btf.rst`.

use anyhow::{bail, Context, Result};

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// One decoded type: its kind, name, size-or-type word and members.
#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name: u32,
    /// `size` for sized kinds, the referenced type id for the others.
    size_type: u32,
    kind_flag: bool,
    /// Struct/union members: (name, type, bit offset); enum values: (name,
    /// 0, value).
    members: Vec<(u32, u32, u64)>,
}

/// The kernel's types, indexed by BTF id (id 0 is `void`).
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u16_at(b: &[u8], o: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(
        b.get(o..o + 2).context("BTF cut short")?.try_into()?,
    ))
}

fn u32_at(b: &[u8], o: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(
        b.get(o..o + 4).context("BTF cut short")?.try_into()?,
    ))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn kernel() -> Result<Btf> {
        let path = "/sys/kernel/btf/vmlinux";
        let bytes = std::fs::read(path).with_context(|| {
            format!("cannot read {path}: the change tracker needs a kernel built with BTF (CONFIG_DEBUG_INFO_BTF)")
        })?;
        Btf::parse(&bytes).with_context(|| format!("cannot decode {path}"))
    }

    /// Decodes a raw BTF blob (little-endian, as the kernel exports it).
    pub fn parse(b: &[u8]) -> Result<Btf> {
        if u16_at(b, 0)? != MAGIC {
            bail!("not little-endian BTF (bad magic)");
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let types_bytes = b
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .context("type section out of bounds")?;
        let strings = b
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .context("string section out of bounds")?
            .to_vec();
        let mut types = vec![Type {
            kind: 0,
            name: 0,
            size_type: 0,
            kind_flag: false,
            members: Vec::new(),
        }];
        let mut o = 0;
        while o < types_bytes.len() {
            let name = u32_at(types_bytes, o)?;
            let info = u32_at(types_bytes, o + 4)?;
            let size_type = u32_at(types_bytes, o + 8)?;
            o += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => o += 4,
                KIND_ARRAY => o += 12,
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let m_name = u32_at(types_bytes, o)?;
                        let m_type = u32_at(types_bytes, o + 4)?;
                        let m_off = u32_at(types_bytes, o + 8)?;
                        // With kind_flag the top 8 bits are a bitfield size.
                        let bits = if kind_flag { m_off & 0xff_ffff } else { m_off };
                        members.push((m_name, m_type, bits as u64));
                        o += 12;
                    }
                }
                KIND_ENUM => {
                    for _ in 0..vlen {
                        let v = u32_at(types_bytes, o + 4)? as i32;
                        members.push((u32_at(types_bytes, o)?, 0, v as i64 as u64));
                        o += 8;
                    }
                }
                KIND_ENUM64 => {
                    for _ in 0..vlen {
                        let lo = u32_at(types_bytes, o + 4)? as u64;
                        let hi = u32_at(types_bytes, o + 8)? as u64;
                        members.push((u32_at(types_bytes, o)?, 0, lo | hi << 32));
                        o += 12;
                    }
                }
                KIND_FUNC_PROTO => {
                    for _ in 0..vlen {
                        members.push((u32_at(types_bytes, o)?, u32_at(types_bytes, o + 4)?, 0));
                        o += 8;
                    }
                }
                KIND_DATASEC => o += 12 * vlen,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => {}
                k => bail!("unknown BTF kind {k} at type {}", types.len()),
            }
            types.push(Type {
                kind,
                name,
                size_type,
                kind_flag,
                members,
            });
        }
        Ok(Btf { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
    }

    /// The id of the type of `kind` named `name`.
    fn find(&self, kind: u32, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == kind && self.name(t.name) == name.as_bytes())
            .map(|i| i as u32)
    }

    /// The id of the kernel function `name` (an fentry attach point).
    pub fn func(&self, name: &str) -> Result<u32> {
        self.find(KIND_FUNC, name)
            .with_context(|| format!("the kernel has no traceable function {name}"))
    }

    /// The id of the typedef `btf_trace_NAME` that a BTF tracepoint
    /// program attaches to.
    pub fn tracepoint(&self, name: &str) -> Result<u32> {
        self.find(KIND_TYPEDEF, &format!("btf_trace_{name}"))
            .with_context(|| format!("the kernel has no tracepoint {name}"))
    }

    /// How many arguments tracepoint `name` passes to a program (its
    /// prototype less the leading context pointer).
    pub fn tracepoint_args(&self, name: &str) -> Result<usize> {
        let id = self.tracepoint(name)?;
        let ptr = self.resolve(id);
        let proto = &self.types[self.types[ptr as usize].size_type as usize];
        if proto.kind != KIND_FUNC_PROTO {
            bail!("tracepoint {name} has no prototype in BTF");
        }
        Ok(proto.members.len().saturating_sub(1))
    }

    /// The value of enumerator `value` of `enum NAME`.
    pub fn enum_value(&self, enum_name: &str, value: &str) -> Result<u64> {
        let id = self
            .find(KIND_ENUM, enum_name)
            .or_else(|| self.find(KIND_ENUM64, enum_name))
            .with_context(|| format!("the kernel has no enum {enum_name}"))?;
        let t = &self.types[id as usize];
        t.members
            .iter()
            .find(|m| self.name(m.0) == value.as_bytes())
            .map(|m| m.2)
            .with_context(|| format!("enum {enum_name} has no {value}"))
    }

    /// Skips typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            let t = &self.types[id as usize];
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_type
                }
                _ => break,
            }
        }
        id
    }

    /// Byte offset and size of member `field` of `struct NAME` (searched
    /// through anonymous struct and union members, as C names them).
    pub fn member(&self, struct_name: &str, field: &str) -> Result<(u32, u32)> {
        let id = self
            .find(KIND_STRUCT, struct_name)
            .with_context(|| format!("the kernel has no struct {struct_name}"))?;
        self.member_in(id, field)
            .with_context(|| format!("struct {struct_name} has no member {field}"))
    }

    fn member_in(&self, id: u32, field: &str) -> Option<(u32, u32)> {
        let t = &self.types[id as usize];
        for &(name, ty, bits) in &t.members {
            let resolved = self.resolve(ty);
            if self.name(name) == field.as_bytes() {
                if bits % 8 != 0 {
                    return None;
                }
                return Some(((bits / 8) as u32, self.size_of(resolved)?));
            }
            let rt = &self.types[resolved as usize];
            if name == 0 && matches!(rt.kind, KIND_STRUCT | KIND_UNION) {
                if let Some((o, s)) = self.member_in(resolved, field) {
                    return Some(((bits / 8) as u32 + o, s));
                }
            }
        }
        None
    }

    fn size_of(&self, id: u32) -> Option<u32> {
        let t = &self.types[self.resolve(id) as usize];
        match t.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Some(t.size_type)
            }
            KIND_PTR => Some(8),
            _ => None,
        }
    }

    /// Whether the kernel's type table was read with bitfield offsets
    /// (kept for diagnostics).
    pub fn has_bitfields(&self) -> bool {
        self.types.iter().any(|t| t.kind_flag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_offsets_resolve() {
        let Ok(btf) = Btf::kernel() else {
            return; // No BTF on this machine: the tracker refuses to start.
        };
        let (host, hs) = btf.member("address_space", "host").unwrap();
        assert_eq!(hs, 8);
        assert!(host < 4096);
        let (_, ino_size) = btf.member("inode", "i_ino").unwrap();
        assert_eq!(ino_size, 8);
        assert_eq!(btf.member("super_block", "s_dev").unwrap().1, 4);
        assert!(btf.member("folio", "index").is_ok());
        assert!(btf.tracepoint("writeback_dirty_folio").is_ok());
        assert!(btf.func("vfs_fallocate").is_ok());
        assert!(btf.enum_value("pageflags", "PG_head").is_ok());
    }
}
