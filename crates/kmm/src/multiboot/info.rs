//! [`MultibootInfo`]: the reader over the loader's information structure.

use core::ops::Range;

use super::mmap::{BootMemoryMap, MemoryMapError, le_u32};
use super::module::{MODULE_ENTRY, Modules};
use super::reserved::{ReservedKind, ReservedRanges};
use super::window::{OutOfWindow, Window};
use super::{INFO_CMDLINE, INFO_FRAMEBUFFER, INFO_MEMORY, INFO_MMAP, INFO_MODS};

/// Field offsets in the information structure (multiboot 0.6.96, 3.3).
const FLAGS: usize = 0;
const MEM_LOWER: usize = 4;
const MEM_UPPER: usize = 8;
const CMDLINE: usize = 16;
const MODS_COUNT: usize = 20;
const MODS_ADDR: usize = 24;
const MMAP_LENGTH: usize = 44;
const MMAP_ADDR: usize = 48;
/// The structure up to `vbe_interface_len`: what every loader provides, and
/// what the reader reads.
const INFO_LEN: u64 = 88;
/// The structure with the framebuffer fields (flag bit 12): what is
/// reserved when that flag is set.
const INFO_LEN_FRAMEBUFFER: u64 = 116;

/// A multiboot (version 1) information structure, read through a window
/// onto physical memory.
///
/// The fixed fields are copied out when it is made; the command line, the
/// module list and the memory map are read from loader memory when asked
/// for, by the lengths the structure gives. What it returns ([`BootMemoryMap`],
/// [`ReservedRanges`]) is copied out; strings and module contents are
/// borrowed for `'a`.
#[derive(Debug, Clone, Copy)]
pub struct MultibootInfo<'a> {
    window: Window<'a>,
    phys: u32,
    flags: u32,
    mem_lower: u32,
    mem_upper: u32,
    cmdline: u32,
    mods_count: u32,
    mods_addr: u32,
    mmap_length: u32,
    mmap_addr: u32,
}

impl<'a> MultibootInfo<'a> {
    /// The structure at physical address `info_phys` (EBX at the kernel's
    /// entry), read at virtual address `window + physical`.
    ///
    /// `window` is 0 while paging is off (or memory is identity-mapped) and
    /// `PAGE_OFFSET` once the direct map is up. Fails, reading nothing, if
    /// the structure's virtual range wraps or starts at 0.
    ///
    /// # Safety
    /// `info_phys` is the address a multiboot (version 1) loader left in EBX
    /// with [`super::BOOTLOADER_MAGIC`] in EAX (see [`super::check_magic`]),
    /// and for all of `'a`:
    /// - the structure (88 bytes) and what its flags mark valid that the
    ///   reader follows — the command line up to its NUL (bit 2), the module
    ///   list, each module's contents and its string up to the NUL (bit 3),
    ///   the `mmap_length` bytes of the memory map (bit 6) — are readable at
    ///   `window + physical address`: with a window of `PAGE_OFFSET`, all of
    ///   it lies in the direct map;
    /// - none of it is written to or handed to an allocator: reserve
    ///   [`MultibootInfo::reserved`] before freeing RAM to one.
    ///
    /// The reader never reads more than the structure's lengths say (and no
    /// string past its NUL or [`super::MAX_STRING`] bytes), and refuses a
    /// range whose virtual address wraps or is 0 with [`OutOfWindow`]; a
    /// malformed memory map is an error, never a hang. In a host test,
    /// `window` is a buffer's exposed address
    /// (`buf.as_ptr().expose_provenance()`) and physical addresses are
    /// offsets into it.
    pub unsafe fn new(info_phys: u32, window: usize) -> Result<MultibootInfo<'a>, OutOfWindow> {
        let window = Window::new(window);
        // SAFETY: the caller vouches for the 88-byte structure at info_phys.
        let raw = unsafe { window.bytes(info_phys.into(), INFO_LEN) }?;
        // `raw` is INFO_LEN bytes long and every offset below is inside it.
        let field = |off| le_u32(raw, off).unwrap_or(0);
        Ok(MultibootInfo {
            window,
            phys: info_phys,
            flags: field(FLAGS),
            mem_lower: field(MEM_LOWER),
            mem_upper: field(MEM_UPPER),
            cmdline: field(CMDLINE),
            mods_count: field(MODS_COUNT),
            mods_addr: field(MODS_ADDR),
            mmap_length: field(MMAP_LENGTH),
            mmap_addr: field(MMAP_ADDR),
        })
    }

    /// The structure's physical address.
    pub fn phys(&self) -> u32 {
        self.phys
    }

    /// The `flags` word: which fields the loader filled in
    /// ([`super::INFO_MEMORY`], [`super::INFO_CMDLINE`], …).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// `mem_lower`: KiB of conventional memory from address 0, if flag bit 0
    /// is set.
    pub fn mem_lower_kib(&self) -> Option<u32> {
        self.has(INFO_MEMORY).then_some(self.mem_lower)
    }

    /// `mem_upper`: KiB of memory from 1 MiB up to the first hole, if flag
    /// bit 0 is set.
    pub fn mem_upper_kib(&self) -> Option<u32> {
        self.has(INFO_MEMORY).then_some(self.mem_upper)
    }

    /// The kernel's command line without its NUL, if flag bit 2 is set, the
    /// address is not 0 and inside the window, and the string ends within
    /// [`super::MAX_STRING`] bytes.
    pub fn cmdline_bytes(&self) -> Option<&'a [u8]> {
        if !self.has(INFO_CMDLINE) || self.cmdline == 0 {
            return None;
        }
        // SAFETY: flag bit 2: the command line is part of what `new`'s
        // caller vouched for.
        unsafe { self.window.c_string(self.cmdline.into()) }
            .ok()?
            .bytes
    }

    /// The command line as UTF-8 (`None` as for
    /// [`MultibootInfo::cmdline_bytes`], or if it is not UTF-8). Loaders
    /// usually put the kernel's file name first.
    pub fn cmdline(&self) -> Option<&'a str> {
        core::str::from_utf8(self.cmdline_bytes()?).ok()
    }

    /// The boot modules (none if flag bit 3 is clear); fails if the module
    /// list is outside the window.
    pub fn modules(&self) -> Result<Modules<'a>, OutOfWindow> {
        if !self.has(INFO_MODS) || self.mods_count == 0 {
            return Ok(Modules::new(&[], self.window));
        }
        let len = u64::from(self.mods_count) * MODULE_ENTRY;
        // SAFETY: flag bit 3: the module list of mods_count entries is part
        // of what `new`'s caller vouched for.
        let list = unsafe { self.window.bytes(self.mods_addr.into(), len) }?;
        Ok(Modules::new(list, self.window))
    }

    /// The boot memory map: the loader's memory map when flag bit 6 is set
    /// and `mmap_length` is not 0, otherwise [`Self::basic_memory_map`].
    ///
    /// Each memory-map entry becomes a [`kmm_page_frame::Region`] (type by
    /// [`kmm_page_frame::RegionKind::from_e820`]); entries past `N` are
    /// counted in [`BootMemoryMap::dropped`]. The walk follows each entry's
    /// `size` field and stops with [`MemoryMapError::EntryTooSmall`] at a
    /// size below 20 (0 included) and [`MemoryMapError::EntryPastEnd`] at an
    /// entry that runs past `mmap_length`: it never reads outside the buffer
    /// nor loops.
    pub fn memory_map<const N: usize>(&self) -> Result<BootMemoryMap<N>, MemoryMapError> {
        if self.has(INFO_MMAP) && self.mmap_length != 0 {
            // SAFETY: flag bit 6: mmap_length bytes at mmap_addr are part of
            // what `new`'s caller vouched for.
            let buf = unsafe {
                self.window
                    .bytes(self.mmap_addr.into(), self.mmap_length.into())
            }?;
            return BootMemoryMap::from_mmap(buf);
        }
        self.basic_memory_map().ok_or(MemoryMapError::NoMemoryInfo)
    }

    /// The memory map from `mem_lower`/`mem_upper` alone (flag bit 0):
    /// `0..mem_lower` KiB (at most 640 KiB) and `1 MiB..1 MiB + mem_upper`
    /// KiB, both usable, leaving out an empty one; `None` if flag bit 0 is
    /// clear. What a kernel can fall back to when the memory map is
    /// malformed; it misses any RAM above the first hole past 1 MiB.
    pub fn basic_memory_map<const N: usize>(&self) -> Option<BootMemoryMap<N>> {
        self.has(INFO_MEMORY)
            .then(|| BootMemoryMap::from_mem_fields(self.mem_lower, self.mem_upper))
    }

    /// The physical ranges the page allocator must not hand out: `kernel`
    /// (the kernel image's physical range, from its linker symbols), the
    /// information structure, the command line, the memory-map buffer, the
    /// module list and every module with its string. Empty ranges are left
    /// out; ranges past `N` are counted in [`ReservedRanges::dropped`].
    ///
    /// Other tables the loader may pass (drives, APM, VBE, the boot loader's
    /// name, ELF section headers) are not included: copy what you need out
    /// of them before the page allocator starts, or reserve them yourself.
    /// Fails if a string or the module list, whose extent the reader must
    /// read to know, is outside the window.
    pub fn reserved<const N: usize>(
        &self,
        kernel: Range<u64>,
    ) -> Result<ReservedRanges<N>, OutOfWindow> {
        let mut r = ReservedRanges::new();
        r.push(ReservedKind::Kernel, kernel);
        let info_len = if self.has(INFO_FRAMEBUFFER) {
            INFO_LEN_FRAMEBUFFER
        } else {
            INFO_LEN
        };
        let phys = u64::from(self.phys);
        r.push(ReservedKind::InfoStructure, phys..phys + info_len);
        if self.has(INFO_CMDLINE) && self.cmdline != 0 {
            let at = u64::from(self.cmdline);
            // SAFETY: as in `cmdline_bytes`.
            let s = unsafe { self.window.c_string(at) }?;
            r.push(ReservedKind::CommandLine, at..at + s.span);
        }
        if self.has(INFO_MMAP) {
            let at = u64::from(self.mmap_addr);
            r.push(
                ReservedKind::MemoryMap,
                at..at + u64::from(self.mmap_length),
            );
        }
        if self.has(INFO_MODS) {
            let at = u64::from(self.mods_addr);
            let len = u64::from(self.mods_count) * MODULE_ENTRY;
            r.push(ReservedKind::ModuleList, at..at + len);
            for (i, m) in (0..).zip(self.modules()?) {
                r.push(ReservedKind::Module(i), m.range());
                r.push(ReservedKind::ModuleString(i), m.string_range()?);
            }
        }
        Ok(r)
    }
}
