//! The per-CPU segment: a GDT data-segment descriptor whose base is one
//! CPU's per-CPU area, loaded into `%fs` on that CPU (Linux's
//! `__KERNEL_PERCPU` segment on i386, whose base is the CPU's
//! `__per_cpu_offset`).
//!
//! The kernel owns its GDT: it gives every CPU one entry built with
//! [`data_segment`], loads the table on each CPU and then, on that CPU,
//! `load_fs` with the entry's [`selector`]. From then on an access through
//! `%fs:` reaches the running CPU's area in one instruction — what
//! `I386SmpCpu` reads its id and counts through.
//!
//! ```
//! use kmm_i386::percpu_segment::{data_segment, descriptor_base, selector};
//!
//! // GDT: null, kernel code, kernel data, then CPU n's %fs at entry 3 + n.
//! let areas = [0xC010_0000u32, 0xC010_0040, 0xC010_0080, 0xC010_00C0];
//! let mut gdt = [0u64; 3 + 4];
//! for (n, &area) in areas.iter().enumerate() {
//!     gdt[3 + n] = data_segment(area, 63);
//! }
//! assert_eq!(descriptor_base(gdt[5]), 0xC010_0080);
//! assert_eq!(selector(3 + 2, 0), 0x28); // what CPU 2 loads into %fs
//! ```

/// A GDT (or LDT) descriptor, as the CPU reads it: eight bytes, stored as one
/// little-endian `u64`.
pub type Descriptor = u64;

/// Access byte of a present ring-0 read/write data segment (P=1, DPL=0,
/// S=1, type 0b0010), with the accessed bit set so the CPU never writes the
/// table when the segment is loaded.
const DATA_RW_ACCESS: u64 = 0x93;
/// Access byte of a present ring-0 execute/read code segment (type 0b1010),
/// accessed.
const CODE_RX_ACCESS: u64 = 0x9B;
/// Flags nibble: D/B (32-bit segment).
const FLAG_DB: u64 = 0x4;
/// Flags nibble: G (the limit counts 4 KiB units).
const FLAG_G: u64 = 0x8;
/// The largest limit a byte-granular descriptor holds (20 bits).
const BYTE_LIMIT_MAX: u32 = 0xF_FFFF;

/// Encodes a descriptor of `base`, `limit` (the offset of the last byte, as
/// the CPU counts it) and access byte `access`. A limit above 1 MiB - 1 is
/// stored page granular (G=1), rounded up to the end of its 4 KiB page, as
/// the hardware can only express that.
const fn descriptor(base: u32, limit: u32, access: u64) -> Descriptor {
    let (limit, flags) = if limit > BYTE_LIMIT_MAX {
        (limit >> 12, FLAG_G | FLAG_DB)
    } else {
        (limit, FLAG_DB)
    };
    let base = base as u64;
    let limit = limit as u64;
    (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (access << 40)
        | (((limit >> 16) & 0xF) << 48)
        | (flags << 52)
        | (((base >> 24) & 0xFF) << 56)
}

/// A present, ring-0, 32-bit read/write data segment starting at linear
/// address `base` whose last valid offset is `limit` (`u32::MAX` for a
/// segment reaching the top of the address space; a limit of 1 MiB or more
/// is page granular and rounded up to a page end, as the CPU requires).
///
/// For a per-CPU segment, `base` is the CPU's per-CPU area (Linux's
/// `__per_cpu_offset[cpu]`, or the address of a small per-CPU struct).
/// Linux gives the segment a limit of 4 GiB - 1 and the area's address as
/// base; any limit that covers the words read through it works.
pub const fn data_segment(base: u32, limit: u32) -> Descriptor {
    descriptor(base, limit, DATA_RW_ACCESS)
}

/// A present, ring-0, 32-bit execute/read code segment at `base` with
/// `limit` (as [`data_segment`]); `code_segment(0, u32::MAX)` is the flat
/// kernel code segment.
pub const fn code_segment(base: u32, limit: u32) -> Descriptor {
    descriptor(base, limit, CODE_RX_ACCESS)
}

/// The base address a descriptor encodes.
pub const fn descriptor_base(d: Descriptor) -> u32 {
    (((d >> 16) & 0xFF_FFFF) | (((d >> 56) & 0xFF) << 24)) as u32
}

/// The limit a descriptor encodes, in bytes (the offset of the last valid
/// byte).
pub const fn descriptor_limit(d: Descriptor) -> u32 {
    let raw = ((d & 0xFFFF) | (((d >> 48) & 0xF) << 16)) as u32;
    if (d >> 52) & FLAG_G != 0 {
        (raw << 12) | 0xFFF
    } else {
        raw
    }
}

/// The selector of GDT entry `index` at privilege level `rpl` (0 for the
/// kernel): `index * 8 | rpl`, table indicator clear (GDT).
pub const fn selector(index: u16, rpl: u16) -> u16 {
    (index << 3) | (rpl & 3)
}

/// Loads `%fs` with `selector`: from now on `%fs:` accesses on this CPU go
/// through that descriptor's base (Linux's `loadsegment(fs, __KERNEL_PERCPU)`).
///
/// # Safety
///
/// Ring 0. `selector` must name a present data-segment descriptor of the
/// loaded GDT whose base and limit cover the per-CPU area of the **calling
/// CPU** only (one entry per CPU); the descriptor must stay unchanged and
/// the area valid for as long as code reads through `%fs` (in kmm:
/// [`crate::I386SmpCpu`]'s id and counts).
#[cfg(target_arch = "x86")]
pub unsafe fn load_fs(selector: u16) {
    // SAFETY: the caller guarantees the selector names a valid data
    // descriptor; loading a segment register touches no memory the compiler
    // knows about.
    unsafe {
        core::arch::asm!("mov fs, {0:x}", in(reg) selector, options(nostack, preserves_flags));
    }
}

/// The operand of LGDT/LIDT: the table's limit (its size in bytes minus 1)
/// and linear base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct TablePointer {
    /// Size of the table in bytes, minus one.
    pub limit: u16,
    /// Linear address of the table.
    pub base: u32,
}

/// Loads the GDT register with `ptr` (LGDT). Segment registers keep their
/// cached descriptors until reloaded.
///
/// # Safety
///
/// Ring 0. The table at `ptr.base` must hold valid descriptors for every
/// selector the CPU will load (including the current `%cs`/`%ss` values on
/// their next reload, and on interrupt return), and stay at that linear
/// address for as long as it is loaded.
#[cfg(target_arch = "x86")]
pub unsafe fn load_gdt(ptr: &TablePointer) {
    // SAFETY: the caller guarantees the table; LGDT only reads the operand.
    unsafe {
        core::arch::asm!("lgdt [{}]", in(reg) ptr as *const TablePointer,
            options(readonly, nostack, preserves_flags));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_segments_match_the_classic_encodings() {
        // The flat ring-0 descriptors every i386 boot GDT holds (the
        // accessed bit set).
        assert_eq!(code_segment(0, u32::MAX), 0x00CF_9B00_0000_FFFF);
        assert_eq!(data_segment(0, u32::MAX), 0x00CF_9300_0000_FFFF);
    }

    #[test]
    fn base_is_split_over_three_fields() {
        let d = data_segment(0xC123_4560, 0xFFF);
        assert_eq!(descriptor_base(d), 0xC123_4560);
        assert_eq!(descriptor_limit(d), 0xFFF);
        assert_eq!(d & 0xFFFF, 0xFFF, "limit 15:0");
        assert_eq!((d >> 16) & 0xFF_FFFF, 0x23_4560, "base 23:0");
        assert_eq!(d >> 56, 0xC1, "base 31:24");
        assert_eq!((d >> 52) & 0xF, 0x4, "byte granular, 32-bit");
        assert_eq!((d >> 40) & 0xFF, 0x93, "present ring-0 data, RW");
    }

    #[test]
    fn large_limits_are_page_granular() {
        let d = data_segment(0x1000, 0x10_0000);
        assert_eq!((d >> 52) & 0xF, 0xC, "G and D/B");
        assert_eq!(descriptor_limit(d), 0x10_0FFF, "rounded up to a page end");
        assert_eq!(descriptor_limit(data_segment(0, u32::MAX)), u32::MAX);
        assert_eq!(descriptor_limit(data_segment(0, 0xF_FFFF)), 0xF_FFFF);
    }

    #[test]
    fn selectors() {
        assert_eq!(selector(1, 0), 0x08);
        assert_eq!(selector(2, 0), 0x10);
        assert_eq!(selector(5, 3), 0x2B);
    }
}
