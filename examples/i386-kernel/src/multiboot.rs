//! The multiboot v1 information a loader hands to the kernel: flags, command
//! line and memory map, copied out so the loader's memory can be reused.

use core::fmt;

/// The value a multiboot loader leaves in EAX.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// Info flag: `mem_lower`/`mem_upper` are valid.
pub const INFO_MEMORY: u32 = 1 << 0;
/// Info flag: `cmdline` is valid.
pub const INFO_CMDLINE: u32 = 1 << 2;
/// Info flag: `mmap_length`/`mmap_addr` are valid.
pub const INFO_MEM_MAP: u32 = 1 << 6;
/// Memory-map type of usable RAM.
pub const MEMORY_AVAILABLE: u32 = 1;

/// Size of the fixed part of the multiboot information structure.
const INFO_SIZE: u64 = 88;
/// The most memory-map entries kept.
pub const MAX_REGIONS: usize = 32;
/// The longest command line kept, in bytes.
pub const MAX_CMDLINE: usize = 256;

/// One entry of the memory map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Region {
    /// Physical start address.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// Type: 1 usable, 2 reserved, 3 ACPI reclaimable, 4 ACPI NVS, 5 bad.
    pub kind: u32,
}

impl Region {
    /// The end address (exclusive), saturating at `u64::MAX`.
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.len)
    }

    /// True for usable RAM.
    pub const fn usable(&self) -> bool {
        self.kind == MEMORY_AVAILABLE
    }

    /// A name for the type.
    pub const fn kind_name(&self) -> &'static str {
        match self.kind {
            1 => "usable",
            2 => "reserved",
            3 => "ACPI reclaimable",
            4 => "ACPI NVS",
            5 => "bad",
            _ => "unknown",
        }
    }
}

/// The memory map, copied out of the loader's memory.
#[derive(Debug, Clone, Copy)]
pub struct MemoryMap {
    regions: [Region; MAX_REGIONS],
    len: usize,
    dropped: usize,
}

impl MemoryMap {
    const fn empty() -> MemoryMap {
        MemoryMap {
            regions: [Region {
                base: 0,
                len: 0,
                kind: 0,
            }; MAX_REGIONS],
            len: 0,
            dropped: 0,
        }
    }

    fn push(&mut self, r: Region) {
        if self.len < MAX_REGIONS {
            self.regions[self.len] = r;
            self.len += 1;
        } else {
            self.dropped += 1;
        }
    }

    /// The entries, in the loader's order.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    /// Entries that did not fit [`MAX_REGIONS`] and were dropped.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The end of the highest usable region.
    pub fn top_of_ram(&self) -> u64 {
        self.regions()
            .iter()
            .filter(|r| r.usable())
            .map(Region::end)
            .max()
            .unwrap_or(0)
    }

    /// The total size of the usable regions.
    pub fn usable_bytes(&self) -> u64 {
        self.regions()
            .iter()
            .filter(|r| r.usable())
            .map(|r| r.len)
            .sum()
    }
}

/// What the kernel keeps of the multiboot information.
pub struct BootInfo {
    /// The info flags.
    pub flags: u32,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// The memory map (from the map, or from `mem_upper` if there is none).
    pub memory_map: MemoryMap,
    /// True if the map came from the loader's memory map (flag bit 6).
    pub from_mmap: bool,
    /// The end of the highest byte of loader data (information structure,
    /// command line, memory map): frames must not be handed out below it.
    pub data_end: u64,
    /// The loader's data as physical ranges `[start, end)`: the information
    /// structure, the command line and the memory map (empty ranges for the
    /// parts the loader did not pass).
    pub loader_data: [(u64, u64); 3],
}

impl BootInfo {
    /// The command line (the loader may put the kernel's file name first).
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// Reads the multiboot information at physical address `info`.
    ///
    /// # Safety
    /// Paging must be off (or identity mapped), and `info` must be the address a
    /// multiboot loader passed in EBX together with [`BOOTLOADER_MAGIC`].
    pub unsafe fn read(info: usize) -> BootInfo {
        let base: *const u8 = core::ptr::with_exposed_provenance(info);
        // SAFETY: the loader guarantees an information structure of INFO_SIZE
        // bytes at `info`; fields are read unaligned as the structure is packed.
        let field = |off: usize| unsafe { base.add(off).cast::<u32>().read_unaligned() };
        let flags = field(0);
        let mut bi = BootInfo {
            flags,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            memory_map: MemoryMap::empty(),
            from_mmap: false,
            data_end: info as u64 + INFO_SIZE,
            loader_data: [(info as u64, info as u64 + INFO_SIZE), (0, 0), (0, 0)],
        };
        if flags & INFO_CMDLINE != 0 {
            let p: *const u8 = core::ptr::with_exposed_provenance(field(16) as usize);
            let mut n = 0;
            // SAFETY: the loader guarantees a NUL-terminated string at `p`; at most
            // MAX_CMDLINE bytes are read before the terminator.
            while n < MAX_CMDLINE && unsafe { p.add(n).read() } != 0 {
                // SAFETY: as above, byte n precedes the terminator.
                bi.cmdline[n] = unsafe { p.add(n).read() };
                n += 1;
            }
            bi.cmdline_len = n;
            bi.loader_data[1] = (p.addr() as u64, p.addr() as u64 + n as u64 + 1);
            bi.data_end = bi.data_end.max(p.addr() as u64 + n as u64 + 1);
        }
        if flags & INFO_MEM_MAP != 0 {
            let (len, addr) = (field(44) as usize, field(48) as usize);
            let mut off = 0;
            while off + 24 <= len {
                let e: *const u8 = core::ptr::with_exposed_provenance(addr + off);
                // SAFETY: the loader guarantees `len` bytes of entries at `addr`:
                // each is `size: u32` followed by `size` bytes (base u64, length
                // u64, type u32), unaligned.
                let (size, r) = unsafe {
                    (
                        e.cast::<u32>().read_unaligned() as usize,
                        Region {
                            base: e.add(4).cast::<u64>().read_unaligned(),
                            len: e.add(12).cast::<u64>().read_unaligned(),
                            kind: e.add(20).cast::<u32>().read_unaligned(),
                        },
                    )
                };
                bi.memory_map.push(r);
                off += size + 4;
            }
            bi.from_mmap = true;
            bi.loader_data[2] = (addr as u64, (addr + len) as u64);
            bi.data_end = bi.data_end.max((addr + len) as u64);
        } else if flags & INFO_MEMORY != 0 {
            // No map: mem_upper is the KiB of RAM from 1 MiB on.
            bi.memory_map.push(Region {
                base: 1 << 20,
                len: u64::from(field(8)) << 10,
                kind: MEMORY_AVAILABLE,
            });
        }
        bi
    }
}

/// The paging mode asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingMode {
    /// Classic 2-level paging (`paging=2level`, the default).
    TwoLevel,
    /// PAE paging (`paging=pae`).
    Pae,
}

impl fmt::Display for PagingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PagingMode::TwoLevel => "2level",
            PagingMode::Pae => "pae",
        })
    }
}

/// The options the kernel understands on its command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `paging=2level` or `paging=pae`.
    pub paging: PagingMode,
    /// `test=panic`: panic on purpose to test the panic path.
    pub test_panic: bool,
    /// `smp_work=N`: rounds of work per CPU in the SMP phase.
    pub smp_work: Option<usize>,
}

impl Options {
    /// Parses `cmdline`; words without `=` (such as the kernel's file name) and
    /// unknown keys are ignored. An unknown value for a known key panics.
    pub fn parse(cmdline: &str) -> Options {
        let mut o = Options {
            paging: PagingMode::TwoLevel,
            test_panic: false,
            smp_work: None,
        };
        for word in cmdline.split_ascii_whitespace() {
            match word.split_once('=') {
                Some(("paging", "2level")) => o.paging = PagingMode::TwoLevel,
                Some(("paging", "pae")) => o.paging = PagingMode::Pae,
                Some(("paging", v)) => panic!("unknown paging mode {v:?} (want 2level or pae)"),
                Some(("test", "panic")) => o.test_panic = true,
                Some(("test", v)) => panic!("unknown test {v:?} (want panic)"),
                Some(("smp_work", v)) => match v.parse() {
                    Ok(n) => o.smp_work = Some(n),
                    Err(_) => panic!("smp_work={v:?}: want a number of rounds"),
                },
                _ => {}
            }
        }
        o
    }
}
