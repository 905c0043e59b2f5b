//! The few `bpf(2)` operations the tracker needs, and an assembler for its
//! programs.
//!
//! Why not libbpf-rs: it compiles programs written in C with clang at build
//! time, which would make clang and libbpf headers a requirement of every
//! build of snapdump, for programs of forty instructions. These programs are
//! generated instead (`programs.rs`), with structure offsets read from the
//! running kernel's BTF (`btf.rs`), and loaded with the raw system call. The
//! instruction encoding is the kernel's `Documentation/bpf/standardization/
//! instruction-set.rst`; the attribute layouts are `union bpf_attr` of
//! `include/uapi/linux/bpf.h`.

use anyhow::{bail, Result};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `bpf(2)` commands used.
const MAP_CREATE: i64 = 0;
const MAP_LOOKUP_ELEM: i64 = 1;
const MAP_UPDATE_ELEM: i64 = 2;
const PROG_LOAD: i64 = 5;
const RAW_TRACEPOINT_OPEN: i64 = 17;
const MAP_LOOKUP_AND_DELETE_BATCH: i64 = 25;

/// Map kinds and flags.
pub const MAP_HASH: u32 = 1;
/// An array map.
pub const MAP_ARRAY: u32 = 2;
/// Hash map entries allocated when inserted, not all at creation.
pub const F_NO_PREALLOC: u32 = 1;
/// An array with one element per CPU (a program sees its own CPU's).
pub const MAP_PERCPU_ARRAY: u32 = 6;
/// An array map that user space may `mmap`.
pub const F_MMAPABLE: u32 = 1 << 10;

/// `BPF_PROG_TYPE_TRACING`, with its attach types.
pub const PROG_TRACING: u32 = 26;
/// A BTF-typed tracepoint (`tp_btf/`).
pub const ATTACH_RAW_TP: u32 = 23;
/// Entry of a kernel function (`fentry/`).
pub const ATTACH_FENTRY: u32 = 24;

fn sys_bpf(cmd: i64, attr: &mut [u8]) -> io::Result<i64> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` of the size passed;
    // the kernel reads and writes only within it and within the buffers
    // whose addresses the caller placed in it, which outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn put32(a: &mut [u8], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(a: &mut [u8], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn fd_of(r: i64) -> OwnedFd {
    // SAFETY: a successful bpf() call that creates an object returns a new
    // descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(r as RawFd) }
}

/// A BPF map.
pub struct Map {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
}

impl Map {
    /// Creates a map.
    pub fn create(
        kind: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        flags: u32,
        name: &str,
    ) -> io::Result<Map> {
        let mut a = [0u8; 128];
        put32(&mut a, 0, kind);
        put32(&mut a, 4, key_size);
        put32(&mut a, 8, value_size);
        put32(&mut a, 12, max_entries);
        put32(&mut a, 16, flags);
        let n = name.len().min(15);
        a[28..28 + n].copy_from_slice(&name.as_bytes()[..n]);
        let fd = fd_of(sys_bpf(MAP_CREATE, &mut a)?);
        Ok(Map {
            fd,
            key_size: key_size as usize,
            value_size: value_size as usize,
        })
    }

    /// The descriptor programs refer to.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Writes one element.
    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        assert!(key.len() == self.key_size && value.len() == self.value_size);
        let mut a = [0u8; 128];
        put32(&mut a, 0, self.fd.as_raw_fd() as u32);
        put64(&mut a, 8, key.as_ptr() as u64);
        put64(&mut a, 16, value.as_ptr() as u64);
        sys_bpf(MAP_UPDATE_ELEM, &mut a).map(|_| ())
    }

    /// Reads one element.
    pub fn lookup(&self, key: &[u8]) -> io::Result<Vec<u8>> {
        assert!(key.len() == self.key_size);
        let mut value = vec![0u8; self.value_size];
        let mut a = [0u8; 128];
        put32(&mut a, 0, self.fd.as_raw_fd() as u32);
        put64(&mut a, 8, key.as_ptr() as u64);
        put64(&mut a, 16, value.as_mut_ptr() as u64);
        sys_bpf(MAP_LOOKUP_ELEM, &mut a)?;
        Ok(value)
    }

    /// Takes every element out of a hash map, in batches, handing each
    /// (key, value) to `each`. Nothing may insert while it runs.
    pub fn drain(&self, mut each: impl FnMut(&[u8], &[u8])) -> io::Result<()> {
        const BATCH: usize = 4096;
        let mut keys = vec![0u8; self.key_size * BATCH];
        let mut values = vec![0u8; self.value_size * BATCH];
        let mut token = [0u8; 8];
        let mut first = true;
        loop {
            let mut a = [0u8; 128];
            let mut next = [0u8; 8];
            put64(&mut a, 0, if first { 0 } else { token.as_ptr() as u64 });
            put64(&mut a, 8, next.as_mut_ptr() as u64);
            put64(&mut a, 16, keys.as_mut_ptr() as u64);
            put64(&mut a, 24, values.as_mut_ptr() as u64);
            put32(&mut a, 32, BATCH as u32);
            put32(&mut a, 36, self.fd.as_raw_fd() as u32);
            let r = sys_bpf(MAP_LOOKUP_AND_DELETE_BATCH, &mut a);
            let count = u32::from_le_bytes(a[32..36].try_into().unwrap()) as usize;
            for (k, v) in keys
                .chunks(self.key_size)
                .zip(values.chunks(self.value_size))
                .take(count)
            {
                each(k, v);
            }
            match r {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Err(e) => return Err(e),
            }
            token = next;
            first = false;
        }
    }
}

/// A loaded program.
pub struct Program {
    fd: OwnedFd,
}

/// An attached program: dropping it detaches.
pub struct Link {
    _fd: OwnedFd,
}

impl Program {
    /// Loads a tracing program attached (when linked) at BTF id
    /// `attach_btf_id` of the kernel. On a verifier refusal the error
    /// carries the verifier's last lines.
    pub fn load(insns: &[u64], attach_type: u32, attach_btf_id: u32, name: &str) -> Result<Self> {
        let license = b"Dual MIT/GPL\0";
        let mut log = vec![0u8; 1 << 20];
        let attempt = |log_level: u32, log: &mut [u8]| {
            let mut a = [0u8; 160];
            put32(&mut a, 0, PROG_TRACING);
            put32(&mut a, 4, insns.len() as u32);
            put64(&mut a, 8, insns.as_ptr() as u64);
            put64(&mut a, 16, license.as_ptr() as u64);
            put32(&mut a, 24, log_level);
            put32(&mut a, 28, if log_level > 0 { log.len() as u32 } else { 0 });
            put64(
                &mut a,
                32,
                if log_level > 0 {
                    log.as_mut_ptr() as u64
                } else {
                    0
                },
            );
            let n = name.len().min(15);
            a[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
            put32(&mut a, 68, attach_type);
            put32(&mut a, 108, attach_btf_id);
            sys_bpf(PROG_LOAD, &mut a)
        };
        match attempt(0, &mut log) {
            Ok(fd) => Ok(Program { fd: fd_of(fd) }),
            Err(first) => {
                // Again with the verifier's log, to say why.
                let _ = attempt(1, &mut log);
                let text =
                    String::from_utf8_lossy(&log[..log.iter().position(|&c| c == 0).unwrap_or(0)])
                        .to_string();
                let tail: Vec<&str> = text.lines().rev().take(6).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "the kernel refused the change tracker's program {name}: {first}{}{}",
                    if tail.is_empty() { "" } else { "; verifier: " },
                    tail.join(" | ")
                )
            }
        }
    }

    /// Attaches the program at the point it was loaded for.
    pub fn attach(&self) -> io::Result<Link> {
        let mut a = [0u8; 128];
        put32(&mut a, 8, self.fd.as_raw_fd() as u32);
        Ok(Link {
            _fd: fd_of(sys_bpf(RAW_TRACEPOINT_OPEN, &mut a)?),
        })
    }
}

/// A shared page mapped from an `F_MMAPABLE` array map: the tracker's
/// control block, read and written by programs and user space alike.
pub struct Shared {
    ptr: *mut u64,
    len: usize,
}

// SAFETY: the mapping is plain memory shared with the kernel; every access
// goes through atomics.
unsafe impl Send for Shared {}
// SAFETY: as above: only atomic accesses.
unsafe impl Sync for Shared {}

impl Shared {
    /// Maps the first page of `map` (an mmapable array of one element).
    pub fn map(map: &Map) -> io::Result<Shared> {
        let len = 4096;
        // SAFETY: mapping a descriptor we own, shared, for reading and
        // writing; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Shared {
            ptr: p as *mut u64,
            len,
        })
    }

    /// The 64-bit word `i` of the control block, as an atomic.
    pub fn word(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(i * 8 < self.len);
        // SAFETY: in bounds (checked), 8-byte aligned (page-aligned base),
        // and shared memory is only ever accessed atomically.
        unsafe { &*(self.ptr.add(i) as *const std::sync::atomic::AtomicU64) }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

/// Registers of the BPF machine.
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    Fp,
}

/// Memory access widths.
#[derive(Clone, Copy)]
pub enum Size {
    /// 4 bytes.
    W = 0x00,
    /// 8 bytes.
    Dw = 0x18,
}

/// Conditional jumps (64-bit compare).
#[derive(Clone, Copy)]
pub enum Cond {
    /// Equal.
    Eq = 0x10,
    /// Not equal.
    Ne = 0x50,
    /// Greater than (unsigned).
    Gt = 0x20,
    /// Greater than or equal (unsigned).
    Ge = 0x30,
    /// Less than (unsigned).
    Lt = 0xa0,
    /// Less than or equal (signed).
    Sle = 0xd0,
}

/// Arithmetic operations (64-bit).
#[derive(Clone, Copy)]
pub enum Alu {
    /// dst += src
    Add = 0x00,
    /// dst -= src
    Sub = 0x10,
    /// dst |= src
    Or = 0x40,
    /// dst &= src
    And = 0x50,
    /// dst <<= src
    Lsh = 0x60,
    /// dst >>= src (logical)
    Rsh = 0x70,
    /// dst = src
    Mov = 0xb0,
}

/// An assembler with forward labels.
#[derive(Default)]
pub struct Asm {
    insns: Vec<u64>,
    labels: HashMap<&'static str, usize>,
    fixups: Vec<(usize, &'static str)>,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    code as u64
        | ((dst as u64) << 8)
        | ((src as u64) << 12)
        | ((off as u16 as u64) << 16)
        | ((imm as u32 as u64) << 32)
}

impl Asm {
    /// `dst = *(size *)(src + off)`
    pub fn ldx(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.insns
            .push(insn(0x01 | 0x60 | size as u8, dst as u8, src as u8, off, 0));
        self
    }
    /// `*(size *)(dst + off) = src`
    pub fn stx(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.insns
            .push(insn(0x03 | 0x60 | size as u8, dst as u8, src as u8, off, 0));
        self
    }
    /// `*(size *)(dst + off) = imm`
    pub fn st(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.insns
            .push(insn(0x02 | 0x60 | size as u8, dst as u8, 0, off, imm));
        self
    }
    /// `lock *(u64 *)(dst + off) += src`
    pub fn atomic_add(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.insns
            .push(insn(0x03 | 0xc0 | 0x18, dst as u8, src as u8, off, 0));
        self
    }
    /// `lock *(u64 *)(dst + off) |= src`
    pub fn atomic_or(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.insns
            .push(insn(0x03 | 0xc0 | 0x18, dst as u8, src as u8, off, 0x40));
        self
    }
    /// `dst op= imm`
    pub fn alu_k(&mut self, op: Alu, dst: Reg, imm: i32) -> &mut Self {
        self.insns.push(insn(0x07 | op as u8, dst as u8, 0, 0, imm));
        self
    }
    /// `dst op= src`
    pub fn alu_x(&mut self, op: Alu, dst: Reg, src: Reg) -> &mut Self {
        self.insns
            .push(insn(0x07 | 0x08 | op as u8, dst as u8, src as u8, 0, 0));
        self
    }
    /// `dst = imm64`
    pub fn ld_imm64(&mut self, dst: Reg, imm: u64) -> &mut Self {
        self.insns
            .push(insn(0x18, dst as u8, 0, 0, imm as u32 as i32));
        self.insns.push(insn(0, 0, 0, 0, (imm >> 32) as u32 as i32));
        self
    }
    /// `dst = &map` (the map's descriptor, resolved by the kernel).
    pub fn ld_map(&mut self, dst: Reg, fd: RawFd) -> &mut Self {
        self.insns.push(insn(0x18, dst as u8, 1, 0, fd));
        self.insns.push(0);
        self
    }
    /// `if dst cond imm goto label`
    pub fn jmp_k(&mut self, cond: Cond, dst: Reg, imm: i32, label: &'static str) -> &mut Self {
        self.fixups.push((self.insns.len(), label));
        self.insns
            .push(insn(0x05 | cond as u8, dst as u8, 0, 0, imm));
        self
    }
    /// `if dst cond src goto label`
    pub fn jmp_x(&mut self, cond: Cond, dst: Reg, src: Reg, label: &'static str) -> &mut Self {
        self.fixups.push((self.insns.len(), label));
        self.insns
            .push(insn(0x05 | 0x08 | cond as u8, dst as u8, src as u8, 0, 0));
        self
    }
    /// `goto label`
    pub fn ja(&mut self, label: &'static str) -> &mut Self {
        self.fixups.push((self.insns.len(), label));
        self.insns.push(insn(0x05, 0, 0, 0, 0));
        self
    }
    /// Calls helper `id`.
    pub fn call(&mut self, id: i32) -> &mut Self {
        self.insns.push(insn(0x85, 0, 0, 0, id));
        self
    }
    /// Returns r0.
    pub fn exit(&mut self) -> &mut Self {
        self.insns.push(insn(0x95, 0, 0, 0, 0));
        self
    }
    /// Places `name` at the next instruction.
    pub fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.insert(name, self.insns.len());
        self
    }
    /// The program, with jumps resolved.
    pub fn finish(mut self) -> Vec<u64> {
        for (at, name) in std::mem::take(&mut self.fixups) {
            let target = self.labels[name] as i64;
            let off = (target - at as i64 - 1) as i16;
            self.insns[at] = (self.insns[at] & !(0xffff << 16)) | ((off as u16 as u64) << 16);
        }
        self.insns
    }
}
