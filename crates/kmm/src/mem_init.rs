//! [`MemSummary`]: the boot lines Linux prints about memory —
//! `setup_memory`'s "…MB HIGHMEM available." and "…MB LOWMEM available.",
//! `free_area_init_nodes`' zone PFN ranges, and `mem_init`'s
//! "Memory: …k/…k available (…k kernel code, …k reserved, …k data, …k
//! init, …k highmem)".

use core::fmt::{self, Write};
use core::ops::Range;

use kmm_buddy::Buddy;
use kmm_hal::{Cpu, PAGE_SIZE};
use kmm_page_frame::ZoneType;

/// What `init` found, in pages unless said, for the boot lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemSummary {
    /// Usable RAM frames (Linux's `num_physpages`).
    pub physpages: u64,
    /// Frames free in the buddy allocator right after `init`'s step 5
    /// (`nr_free_pages()` in `mem_init`).
    pub free: u64,
    /// Usable frames reserved at boot (the kernel, `mem_map`, the manager's
    /// state, reservations): Linux's `reservedpages`.
    pub reserved: u64,
    /// Bytes of kernel code.
    pub code_bytes: u64,
    /// Bytes of the kernel image past its code.
    pub data_bytes: u64,
    /// The end of low memory, in frames (`max_low_pfn`): where the NORMAL
    /// zone (or DMA) ends.
    pub max_low_pfn: u64,
    /// Usable high-memory frames.
    pub highmem: u64,
    /// Each zone's frame range over all nodes, `[start, end)`; empty zones
    /// are `0..0`.
    pub zones: [Range<u64>; ZoneType::COUNT],
}

impl MemSummary {
    /// The numbers of a freshly built allocator.
    pub(crate) fn new<C: Cpu>(
        buddy: &Buddy<'_, C>,
        kernel: &Range<u64>,
        code: &Range<u64>,
    ) -> Self {
        let mem = buddy.mem();
        let s = mem.stats();
        let mut zones = [0..0, 0..0, 0..0];
        let mut highmem = 0;
        for node in mem.nodes() {
            for t in ZoneType::ALL {
                let span = node.zone(t);
                if span.spanned == 0 {
                    continue;
                }
                let z = &mut zones[t as usize];
                if Range::is_empty(z) {
                    *z = span.start_pfn..span.end_pfn();
                } else {
                    z.start = z.start.min(span.start_pfn);
                    z.end = z.end.max(span.end_pfn());
                }
                if t == ZoneType::HighMem {
                    highmem += span.present;
                }
            }
        }
        let image = kernel.end.saturating_sub(kernel.start);
        let code_bytes = if code.is_empty() {
            image
        } else {
            code.end - code.start
        };
        MemSummary {
            physpages: s.present,
            free: buddy.free_pages_total() as u64,
            reserved: s.reserved_ram,
            code_bytes,
            data_bytes: image.saturating_sub(code_bytes),
            max_low_pfn: zones[ZoneType::Dma as usize]
                .end
                .max(zones[ZoneType::Normal as usize].end),
            highmem,
            zones,
        }
    }

    /// Writes the boot lines, as Linux 2.6 prints them on i386.
    pub fn write_to(&self, w: &mut dyn Write) -> fmt::Result {
        let mb = |pages: u64| (pages * PAGE_SIZE as u64) >> 20;
        let kb = |pages: u64| (pages * PAGE_SIZE as u64) >> 10;
        writeln!(w, "{}MB HIGHMEM available.", mb(self.highmem))?;
        writeln!(w, "{}MB LOWMEM available.", mb(self.max_low_pfn))?;
        writeln!(w, "Zone PFN ranges:")?;
        for t in ZoneType::ALL {
            let z = &self.zones[t as usize];
            writeln!(w, "  {:<8} {:#010x} -> {:#010x}", t.name(), z.start, z.end)?;
        }
        writeln!(
            w,
            "Memory: {}k/{}k available ({}k kernel code, {}k reserved, {}k data, 0k init, {}k highmem)",
            kb(self.free),
            kb(self.physpages),
            self.code_bytes >> 10,
            kb(self.reserved),
            self.data_bytes >> 10,
            kb(self.highmem)
        )
    }
}

impl fmt::Display for MemSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}
