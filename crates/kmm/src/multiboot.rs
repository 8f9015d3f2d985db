//! Multiboot (version 1): the loader's information structure as kmm's boot
//! memory map and reserved ranges.
//!
//! A multiboot loader (GRUB, QEMU's `-kernel`, …) starts the kernel with
//! [`BOOTLOADER_MAGIC`] in EAX and the physical address of its information
//! structure in EBX. [`MultibootInfo`] reads that structure, following the
//! multiboot specification 0.6.96:
//!
//! - [`MultibootInfo::memory_map`]: the BIOS e820 entries of the memory map
//!   (flag bit 6) as [`kmm_page_frame::Region`]s, or, without one, the
//!   usable ranges `mem_lower` and `mem_upper` give (flag bit 0);
//! - [`MultibootInfo::reserved`]: what must not reach the page allocator —
//!   the kernel image, the structure, the command line, the memory map, the
//!   module list, every module and its string;
//! - [`MultibootInfo::cmdline`] (flag bit 2) and [`MultibootInfo::modules`]
//!   (flag bit 3).
//!
//! Nothing here allocates: the map and the reserved ranges are fixed-capacity
//! values ([`BootMemoryMap`], [`ReservedRanges`], `N` entries, 32 by default)
//! that count what did not fit.
//!
//! # How a kernel uses it
//!
//! Read the structure early, while paging is still off, with a window of 0
//! (virtual address = physical address); once the direct map is up, a window
//! of `PAGE_OFFSET` works as long as everything the structure points to lies
//! in the direct map. With the umbrella, hand both to
//! [`MemoryManager::init`](crate::MemoryManager::init): `map.regions()` as
//! the regions and `reserved.ranges()` to
//! [`BootParams::reserved`](crate::BootParams::reserved) (the
//! `examples/minimal-kernel` does, in five lines). Crate by crate, build
//! bootmem from the map, reserve every range, then bring up the allocators:
//!
//! ```no_run
//! use kmm::hal::PhysAddr;
//! use kmm::multiboot::{BootMemoryMap, MultibootInfo, ReservedRanges, check_magic};
//! use kmm::page_frame::Bootmem;
//!
//! fn setup(eax: u32, ebx: u32, kernel: core::ops::Range<u64>, lowmem_end: PhysAddr) {
//!     check_magic(eax).expect("not started by a multiboot loader");
//!     // SAFETY: paging is off, so window 0 reads physical memory; EBX holds
//!     // the loader's structure (the magic matched) and nothing has been
//!     // allocated or written over yet.
//!     let info = unsafe { MultibootInfo::new(ebx, 0) }.expect("structure");
//!     let map: BootMemoryMap = info.memory_map().expect("memory map");
//!     let reserved: ReservedRanges = info.reserved(kernel).expect("reserved ranges");
//!     assert_eq!(reserved.dropped(), 0, "memory in use would be handed out");
//!     let mut boot = Bootmem::new(map.regions(), lowmem_end).expect("no RAM");
//!     for r in reserved.iter() {
//!         boot.reserve(PhysAddr::new(r.start), r.end - r.start).expect("reserve");
//!     }
//!     // ... MemMap::new(&mut boot, layout) and the allocators above it.
//! }
//! ```
//!
//! On the host, a test builds a structure in a buffer whose "physical"
//! addresses are offsets into it, and passes the buffer's address as the
//! window:
//!
//! ```
//! use kmm::multiboot::{BOOTLOADER_MAGIC, BootMemoryMap, INFO_MMAP, MultibootInfo, ReservedRanges};
//! use kmm::page_frame::{Region, RegionKind};
//!
//! let mut mem = vec![0u8; 0x300];
//! let mut put = |at: usize, b: &[u8]| mem[at..at + b.len()].copy_from_slice(b);
//! put(0x100, &INFO_MMAP.to_le_bytes()); // flags
//! put(0x100 + 44, &48u32.to_le_bytes()); // mmap_length: two entries
//! put(0x100 + 48, &0x200u32.to_le_bytes()); // mmap_addr
//! for (i, (base, len, ty)) in [(0u64, 0x9_fc00u64, 1u32), (0x10_0000, 0x3f0_0000, 1)].into_iter().enumerate() {
//!     let e = 0x200 + 24 * i;
//!     put(e, &20u32.to_le_bytes()); // size, not counting itself
//!     put(e + 4, &base.to_le_bytes());
//!     put(e + 12, &len.to_le_bytes());
//!     put(e + 20, &ty.to_le_bytes());
//! }
//! kmm::multiboot::check_magic(BOOTLOADER_MAGIC).unwrap();
//! // SAFETY: `mem` holds the structure and its memory map at offsets from
//! // its start, and outlives `info` unchanged.
//! let info = unsafe { MultibootInfo::new(0x100, mem.as_ptr().expose_provenance()) }.unwrap();
//!
//! let map: BootMemoryMap = info.memory_map().unwrap();
//! assert_eq!(map.regions()[1], Region::new(0x10_0000, 0x3f0_0000, RegionKind::Usable));
//! let reserved: ReservedRanges = info.reserved(0x10_0000..0x20_0000).unwrap();
//! assert!(reserved.contains(0x100) && reserved.contains(0x22f) && reserved.contains(0x1f_ffff));
//! ```
//!
//! # Safety
//!
//! [`MultibootInfo::new`] is `unsafe`: its caller vouches that what the
//! structure describes is readable through the window and left alone. The
//! loader's values are otherwise not trusted: the reader reads loader memory
//! only as byte slices whose lengths come from the structure (`mmap_length`,
//! `mods_count`, the structure's 88 bytes) or a string's NUL (at most
//! [`MAX_STRING`] bytes), decodes fields with `from_le_bytes` (no alignment
//! needed), and reports a malformed memory map as a [`MemoryMapError`]. All
//! of its `unsafe` code is in one small file, `multiboot/window.rs`.

use core::fmt;

mod info;
mod mmap;
mod module;
mod reserved;
mod window;

pub use info::MultibootInfo;
pub use mmap::{BootMemoryMap, MapSource, MemoryMapError};
pub use module::{Module, Modules};
pub use reserved::{ReservedKind, ReservedRange, ReservedRanges};
pub use window::{MAX_STRING, OutOfWindow};

/// The value a multiboot (version 1) loader leaves in EAX.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

/// Flag bit 0: `mem_lower` and `mem_upper` are valid.
pub const INFO_MEMORY: u32 = 1 << 0;
/// Flag bit 1: `boot_device` is valid.
pub const INFO_BOOT_DEVICE: u32 = 1 << 1;
/// Flag bit 2: `cmdline` is valid.
pub const INFO_CMDLINE: u32 = 1 << 2;
/// Flag bit 3: `mods_count` and `mods_addr` are valid.
pub const INFO_MODS: u32 = 1 << 3;
/// Flag bit 6: `mmap_length` and `mmap_addr` are valid.
pub const INFO_MMAP: u32 = 1 << 6;
/// Flag bit 12: the framebuffer fields are valid (the structure is 116
/// bytes long instead of 88).
pub const INFO_FRAMEBUFFER: u32 = 1 << 12;

/// EAX did not hold [`BOOTLOADER_MAGIC`]: the kernel was not started by a
/// multiboot (version 1) loader, and EBX means nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BadMagic {
    /// The value found in EAX.
    pub found: u32,
}

impl fmt::Display for BadMagic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "multiboot: bad magic {:#010x} (want {BOOTLOADER_MAGIC:#010x})",
            self.found
        )
    }
}

impl core::error::Error for BadMagic {}

/// Checks the value the loader left in EAX; only after it passes does EBX
/// hold the information structure's address.
pub const fn check_magic(eax: u32) -> Result<(), BadMagic> {
    if eax == BOOTLOADER_MAGIC {
        Ok(())
    } else {
        Err(BadMagic { found: eax })
    }
}
