//! [`KernelLayout`]: where the kernel's virtual regions lie, and [`DirectMap`].

use crate::{PAGE_SIZE, PhysAddr, VirtAddr};

/// The linear mapping of low physical memory: physical `pa` is seen at
/// `base + pa` for `pa < size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectMap {
    base: VirtAddr,
    size: usize,
}

impl DirectMap {
    /// A direct map of `size` bytes at `base`. Returns `None` if the window
    /// would wrap the address space.
    pub const fn new(base: VirtAddr, size: usize) -> Option<DirectMap> {
        match base.as_usize().checked_add(size) {
            Some(_) => Some(DirectMap { base, size }),
            None => None,
        }
    }

    /// The identity map of the first `size` bytes: what a kernel uses before it
    /// turns paging on.
    pub const fn identity(size: usize) -> DirectMap {
        DirectMap {
            base: VirtAddr::new(0),
            size,
        }
    }

    /// The virtual address of physical address 0.
    pub const fn base(&self) -> VirtAddr {
        self.base
    }

    /// How many bytes of physical memory are mapped.
    pub const fn size(&self) -> usize {
        self.size
    }

    /// The virtual address of `pa`, if `pa` is in the direct map.
    #[inline]
    pub const fn phys_to_virt(&self, pa: PhysAddr) -> Option<VirtAddr> {
        if pa.as_u64() < self.size as u64 {
            Some(VirtAddr::new(self.base.as_usize() + pa.as_u64() as usize))
        } else {
            None
        }
    }

    /// The physical address behind `va`, if `va` is in the direct map.
    #[inline]
    pub const fn virt_to_phys(&self, va: VirtAddr) -> Option<PhysAddr> {
        match va.as_usize().checked_sub(self.base.as_usize()) {
            Some(off) if off < self.size => Some(PhysAddr::new(off as u64)),
            _ => None,
        }
    }

    /// True if the whole page at `pa` is in the direct map.
    pub const fn contains_page(&self, pa: PhysAddr) -> bool {
        match pa.checked_add(PAGE_SIZE as u64) {
            Some(end) => end.as_u64() <= self.size as u64,
            None => false,
        }
    }
}

/// The fixed-address slots at the top of the kernel address space (Linux's
/// fixmap): slot `i` is the page at `top - i * PAGE_SIZE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixmap {
    /// Address of slot 0 (Linux's `FIXADDR_TOP`).
    pub top: VirtAddr,
    /// Number of slots.
    pub slots: usize,
    /// First slot reserved for `kmap_atomic` (Linux's `FIX_KMAP_BEGIN`).
    pub kmap_begin: usize,
    /// `kmap_atomic` slots per CPU (Linux's `KM_TYPE_NR`).
    pub kmap_per_cpu: usize,
    /// CPUs the `kmap_atomic` slots are laid out for.
    pub nr_cpus: usize,
}

impl Fixmap {
    /// The address of slot `idx`, or `None` past the last slot.
    pub const fn fix_to_virt(&self, idx: usize) -> Option<VirtAddr> {
        if idx < self.slots {
            Some(VirtAddr::new(self.top.as_usize() - idx * PAGE_SIZE))
        } else {
            None
        }
    }

    /// The slot number of `va`, or `None` if `va` is not a slot's address.
    pub const fn virt_to_fix(&self, va: VirtAddr) -> Option<usize> {
        match self.top.as_usize().checked_sub(va.as_usize()) {
            Some(d) if d % PAGE_SIZE == 0 && d / PAGE_SIZE < self.slots => Some(d / PAGE_SIZE),
            _ => None,
        }
    }

    /// The lowest address of the fixmap (Linux's `FIXADDR_START`).
    pub const fn start(&self) -> VirtAddr {
        VirtAddr::new(self.top.as_usize() - (self.slots - 1) * PAGE_SIZE)
    }

    /// The `kmap_atomic` slot `idx` of CPU `cpu`, or `None` if out of range.
    pub const fn kmap_slot(&self, cpu: usize, idx: usize) -> Option<usize> {
        if cpu < self.nr_cpus && idx < self.kmap_per_cpu {
            Some(self.kmap_begin + cpu * self.kmap_per_cpu + idx)
        } else {
            None
        }
    }
}

/// The kernel's virtual memory map: what the allocators must not hard-code.
///
/// The i386 layout gives Linux's values; the mock gives the same shape shifted to a
/// host address.
pub trait KernelLayout {
    /// The direct map of low memory (Linux's `PAGE_OFFSET` and lowmem size).
    fn direct_map(&self) -> DirectMap;

    /// Start of the vmalloc area (Linux's `VMALLOC_START`).
    fn vmalloc_start(&self) -> VirtAddr;

    /// End (exclusive) of the vmalloc area (Linux's `VMALLOC_END`).
    fn vmalloc_end(&self) -> VirtAddr;

    /// Start of the persistent-kmap window (Linux's `PKMAP_BASE`).
    fn pkmap_base(&self) -> VirtAddr;

    /// Number of persistent-kmap entries (Linux's `LAST_PKMAP`).
    fn last_pkmap(&self) -> usize;

    /// The fixmap slots.
    fn fixmap(&self) -> Fixmap;

    /// Physical addresses below this are in `ZONE_DMA` (16 MiB on a PC).
    fn dma_limit(&self) -> PhysAddr {
        PhysAddr::new(16 << 20)
    }

    /// Physical addresses from here on are high memory (not direct-mapped).
    fn highmem_start(&self) -> PhysAddr {
        PhysAddr::new(self.direct_map().size() as u64)
    }

    /// One past the highest physical address the kernel's page tables can map
    /// (4 GiB for 2-level i386 paging, 64 GiB for PAE). RAM above it is ignored,
    /// as Linux ignores RAM above `MAX_NONPAE_PFN` without PAE.
    fn phys_limit(&self) -> u64 {
        PhysAddr::LIMIT
    }

    /// The virtual address of persistent-kmap entry `nr`.
    fn pkmap_addr(&self, nr: usize) -> Option<VirtAddr> {
        if nr < self.last_pkmap() {
            self.pkmap_base().checked_add(nr * PAGE_SIZE)
        } else {
            None
        }
    }
}

impl<L: KernelLayout + ?Sized> KernelLayout for &L {
    fn direct_map(&self) -> DirectMap {
        (**self).direct_map()
    }
    fn vmalloc_start(&self) -> VirtAddr {
        (**self).vmalloc_start()
    }
    fn vmalloc_end(&self) -> VirtAddr {
        (**self).vmalloc_end()
    }
    fn pkmap_base(&self) -> VirtAddr {
        (**self).pkmap_base()
    }
    fn last_pkmap(&self) -> usize {
        (**self).last_pkmap()
    }
    fn fixmap(&self) -> Fixmap {
        (**self).fixmap()
    }
    fn dma_limit(&self) -> PhysAddr {
        (**self).dma_limit()
    }
    fn highmem_start(&self) -> PhysAddr {
        (**self).highmem_start()
    }
    fn phys_limit(&self) -> u64 {
        (**self).phys_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_map_round_trip() {
        let dm = DirectMap::new(VirtAddr::new(0xC000_0000), 896 << 20).unwrap();
        let va = dm.phys_to_virt(PhysAddr::new(0x1000)).unwrap();
        assert_eq!(va, VirtAddr::new(0xC000_1000));
        assert_eq!(dm.virt_to_phys(va), Some(PhysAddr::new(0x1000)));
        assert_eq!(dm.phys_to_virt(PhysAddr::new(896 << 20)), None);
        assert_eq!(dm.virt_to_phys(VirtAddr::new(0x1000)), None);
        assert!(dm.contains_page(PhysAddr::new((896 << 20) - 4096)));
        assert!(!dm.contains_page(PhysAddr::new((896 << 20) - 4095)));
        assert!(DirectMap::new(VirtAddr::new(usize::MAX), 2).is_none());
    }

    #[test]
    fn fixmap_slots() {
        let f = Fixmap {
            top: VirtAddr::new(0xFFFF_F000),
            slots: 10,
            kmap_begin: 2,
            kmap_per_cpu: 4,
            nr_cpus: 2,
        };
        assert_eq!(f.fix_to_virt(0), Some(VirtAddr::new(0xFFFF_F000)));
        assert_eq!(f.fix_to_virt(9), Some(VirtAddr::new(0xFFFF_6000)));
        assert_eq!(f.fix_to_virt(10), None);
        assert_eq!(f.virt_to_fix(VirtAddr::new(0xFFFF_6000)), Some(9));
        assert_eq!(f.virt_to_fix(VirtAddr::new(0xFFFF_6001)), None);
        assert_eq!(f.start(), VirtAddr::new(0xFFFF_6000));
        assert_eq!(f.kmap_slot(1, 3), Some(9));
        assert_eq!(f.kmap_slot(2, 0), None);
    }
}
