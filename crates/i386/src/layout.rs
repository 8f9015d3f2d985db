//! Linux's i386 kernel virtual memory layout (3 GiB / 1 GiB split).

use kmm_hal::{DirectMap, Fixmap, KernelLayout, PAGE_SIZE, PhysAddr, VirtAddr};

/// Start of the kernel's direct map (Linux's `PAGE_OFFSET`).
pub const PAGE_OFFSET: usize = 0xC000_0000;
/// The most low memory the direct map can hold (Linux's `MAXMEM` with the default
/// 128 MiB vmalloc reserve).
pub const MAX_LOWMEM: usize = 896 << 20;
/// The gap between the end of the direct map and the vmalloc area (Linux's
/// `VMALLOC_OFFSET`), which catches stray accesses past the direct map.
pub const VMALLOC_OFFSET: usize = 8 << 20;
/// Address of fixmap slot 0 (Linux's `FIXADDR_TOP`).
pub const FIXADDR_TOP: usize = 0xFFFF_F000;
/// Persistent-kmap entries with 2-level paging.
pub const LAST_PKMAP: usize = 1024;
/// Persistent-kmap entries under PAE (one page table of 512 entries).
pub const LAST_PKMAP_PAE: usize = 512;
/// `kmap_atomic` slots per CPU (Linux's `KM_TYPE_NR` with stack-ordered slots).
pub const KM_TYPE_NR: usize = 20;
/// Fixmap slots before the `kmap_atomic` ones: a hole, the vDSO, the local APIC
/// and the I/O APIC.
pub const FIX_KMAP_BEGIN: usize = 4;
/// CPUs the default layout reserves `kmap_atomic` slots for.
pub const DEFAULT_NR_CPUS: usize = 8;

/// Linux's i386 kernel layout:
///
/// ```text
/// 0xC0000000  PAGE_OFFSET: direct map of low memory (up to 896 MiB)
///             8 MiB gap
///             VMALLOC_START .. VMALLOC_END
///             2 pages gap
///             PKMAP_BASE: LAST_PKMAP persistent kmaps (aligned to a PMD)
///             fixmap, growing down from FIXADDR_TOP = 0xFFFFF000
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct I386Layout {
    lowmem: usize,
    highmem_start: usize,
    pae: bool,
    nr_cpus: usize,
}

impl I386Layout {
    /// The layout for a machine whose low memory ends at `lowmem` bytes (clamped
    /// to [`MAX_LOWMEM`] and rounded down to a page), with 2-level or PAE paging
    /// and `kmap_atomic` slots for `nr_cpus` CPUs (at least one).
    ///
    /// As in Linux, `VMALLOC_START` follows the end of low memory: a machine with
    /// 64 MiB of RAM has its vmalloc area right after 64 MiB + 8 MiB.
    pub const fn new(lowmem: usize, pae: bool, nr_cpus: usize) -> I386Layout {
        let lowmem = if lowmem > MAX_LOWMEM {
            MAX_LOWMEM
        } else {
            lowmem
        };
        let lowmem = lowmem & !(PAGE_SIZE - 1);
        I386Layout {
            lowmem,
            highmem_start: lowmem,
            pae,
            nr_cpus: if nr_cpus == 0 { 1 } else { nr_cpus },
        }
    }

    /// The same layout with `ZONE_HIGHMEM` starting at physical `pa` instead of
    /// at the end of the direct map (rounded down to a page, and clamped between
    /// the DMA limit and the end of low memory). Lets a small machine, or a
    /// test, have high memory: Linux's `highmem=` boot option.
    pub const fn with_highmem_start(self, pa: usize) -> I386Layout {
        let dma = 16 << 20;
        let pa = pa & !(PAGE_SIZE - 1);
        let pa = if pa > self.lowmem {
            self.lowmem
        } else if pa < dma && self.lowmem >= dma {
            dma
        } else {
            pa
        };
        I386Layout {
            highmem_start: pa,
            ..self
        }
    }

    /// The layout of a machine with at least 896 MiB of RAM and 8 CPUs.
    pub const fn full(pae: bool) -> I386Layout {
        I386Layout::new(MAX_LOWMEM, pae, DEFAULT_NR_CPUS)
    }

    /// True for the PAE layout.
    pub const fn pae(&self) -> bool {
        self.pae
    }

    /// The size of a page-middle-directory entry's span: the alignment of
    /// `PKMAP_BASE` (4 MiB, or 2 MiB under PAE).
    pub const fn pmd_size(&self) -> usize {
        if self.pae { 2 << 20 } else { 4 << 20 }
    }

    const fn fixmap_slots(&self) -> usize {
        FIX_KMAP_BEGIN + KM_TYPE_NR * self.nr_cpus
    }

    /// Linux's `FIXADDR_START`: one page below the lowest fixmap slot.
    pub const fn fixaddr_start(&self) -> usize {
        FIXADDR_TOP - self.fixmap_slots() * PAGE_SIZE
    }

    const fn last_pkmap_(&self) -> usize {
        if self.pae { LAST_PKMAP_PAE } else { LAST_PKMAP }
    }

    const fn pkmap_base_(&self) -> usize {
        (self.fixaddr_start() - PAGE_SIZE * (self.last_pkmap_() + 1)) & !(self.pmd_size() - 1)
    }
}

// SAFETY: every value is computed from the fields, fixed at construction;
// Linux's regions are page-aligned and disjoint (the gaps above are kept), the
// physical limits are ordered by `new` and `with_highmem_start` (tests run
// `check_layout` over every mode and size), and the fixmap holds every CPU's
// `kmap_atomic` slots by construction.
unsafe impl KernelLayout for I386Layout {
    fn direct_map(&self) -> DirectMap {
        DirectMap::new(VirtAddr::new(PAGE_OFFSET), self.lowmem).expect("fits below 4 GiB")
    }

    fn vmalloc_start(&self) -> VirtAddr {
        let high_memory = PAGE_OFFSET + self.lowmem;
        VirtAddr::new((high_memory + 2 * VMALLOC_OFFSET - 1) & !(VMALLOC_OFFSET - 1))
    }

    fn vmalloc_end(&self) -> VirtAddr {
        VirtAddr::new(self.pkmap_base_() - 2 * PAGE_SIZE)
    }

    fn pkmap_base(&self) -> VirtAddr {
        VirtAddr::new(self.pkmap_base_())
    }

    fn last_pkmap(&self) -> usize {
        self.last_pkmap_()
    }

    fn phys_limit(&self) -> u64 {
        if self.pae { 1 << 36 } else { 1 << 32 }
    }

    fn highmem_start(&self) -> PhysAddr {
        PhysAddr::new(self.highmem_start as u64)
    }

    fn fixmap(&self) -> Fixmap {
        Fixmap {
            top: VirtAddr::new(FIXADDR_TOP),
            slots: self.fixmap_slots(),
            kmap_begin: FIX_KMAP_BEGIN,
            kmap_per_cpu: KM_TYPE_NR,
            nr_cpus: self.nr_cpus,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_passes_the_check() {
        for pae in [false, true] {
            for lowmem in [16 << 20, 64 << 20, 512 << 20, MAX_LOWMEM, usize::MAX] {
                for cpus in [1, 4, 8, 32] {
                    let l = I386Layout::new(lowmem, pae, cpus);
                    assert_eq!(kmm_hal::check_layout(&l), Ok(()), "{l:?}");
                    let h = l.with_highmem_start(32 << 20);
                    assert_eq!(kmm_hal::check_layout(&h), Ok(()), "{h:?}");
                    assert!(h.highmem_start().as_u64() <= h.direct_map().size() as u64);
                }
            }
        }
        let l = I386Layout::new(64 << 20, false, 1).with_highmem_start(40 << 20);
        assert_eq!(l.highmem_start(), PhysAddr::new(40 << 20));
        assert_eq!(
            l.direct_map().size(),
            64 << 20,
            "the direct map is unchanged"
        );
        let clamped = I386Layout::new(64 << 20, false, 1).with_highmem_start(1 << 30);
        assert_eq!(clamped.highmem_start(), PhysAddr::new(64 << 20));
    }

    #[test]
    fn linux_values_2level() {
        let l = I386Layout::full(false);
        assert_eq!(l.direct_map().base(), VirtAddr::new(0xC000_0000));
        assert_eq!(l.direct_map().size(), 896 << 20);
        assert_eq!(l.vmalloc_start(), VirtAddr::new(0xF880_0000));
        assert_eq!(l.pkmap_base(), VirtAddr::new(0xFF80_0000));
        assert_eq!(l.vmalloc_end(), VirtAddr::new(0xFF7F_E000));
        assert_eq!(l.last_pkmap(), 1024);
        assert_eq!(l.phys_limit(), 1 << 32);
        assert_eq!(I386Layout::full(true).phys_limit(), 1 << 36);
        let pk_end = l.pkmap_base().as_usize() + l.last_pkmap() * PAGE_SIZE;
        assert!(pk_end <= l.fixaddr_start());
        assert_eq!(l.fixmap().fix_to_virt(0), Some(VirtAddr::new(0xFFFF_F000)));
        assert!(l.fixmap().start().as_usize() > l.fixaddr_start());
    }

    #[test]
    fn linux_values_pae() {
        let l = I386Layout::full(true);
        assert_eq!(l.last_pkmap(), 512);
        assert!(l.pkmap_base().is_aligned(2 << 20));
        let pk_end = l.pkmap_base().as_usize() + l.last_pkmap() * PAGE_SIZE;
        assert!(pk_end <= l.fixaddr_start());
        assert!(l.vmalloc_end() > l.vmalloc_start());
    }

    #[test]
    fn small_machine_moves_vmalloc_down() {
        let l = I386Layout::new(64 << 20, false, 1);
        assert_eq!(l.direct_map().size(), 64 << 20);
        // high_memory = 0xC4000000; VMALLOC_START = that + 8 MiB.
        assert_eq!(l.vmalloc_start(), VirtAddr::new(0xC480_0000));
        let l = I386Layout::new(usize::MAX, false, 0);
        assert_eq!(l.direct_map().size(), MAX_LOWMEM);
        assert_eq!(l.fixmap().nr_cpus, 1);
    }
}
