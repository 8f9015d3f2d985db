//! [`MockLayout`]: Linux's i386 layout, shifted so the kernel window starts at a
//! host address.

use kmm_hal::{DirectMap, Fixmap, KernelLayout, PhysAddr, VirtAddr};
use kmm_i386::{I386Layout, PAGE_OFFSET};

/// Size of the kernel's part of a 32-bit address space (0xC0000000..=0xFFFFFFFF).
pub const KERNEL_WINDOW: usize = 1 << 30;

/// The i386 kernel layout moved to a host base: guest address `g` in
/// `PAGE_OFFSET..4 GiB` is host address `base + (g - PAGE_OFFSET)`. Same shape,
/// same sizes, same alignments (the base is 4 MiB aligned in the mmap backing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockLayout {
    i386: I386Layout,
    base: usize,
}

impl MockLayout {
    /// `i386` shifted so that `PAGE_OFFSET` lands at host address `base`.
    pub const fn new(i386: I386Layout, base: usize) -> MockLayout {
        MockLayout { i386, base }
    }

    /// The same layout with `ZONE_HIGHMEM` from physical `pa` (see
    /// [`I386Layout::with_highmem_start`]).
    pub const fn with_highmem_start(self, pa: usize) -> MockLayout {
        MockLayout {
            i386: self.i386.with_highmem_start(pa),
            base: self.base,
        }
    }

    /// The unshifted i386 layout.
    pub const fn i386(&self) -> I386Layout {
        self.i386
    }

    /// The host address of guest `PAGE_OFFSET`.
    pub const fn base(&self) -> usize {
        self.base
    }

    /// The host address of a guest (i386) kernel address, if `guest` is in the
    /// kernel window.
    pub const fn guest_to_host(&self, guest: usize) -> Option<VirtAddr> {
        if guest >= PAGE_OFFSET && guest - PAGE_OFFSET < KERNEL_WINDOW {
            Some(VirtAddr::new(self.base + (guest - PAGE_OFFSET)))
        } else {
            None
        }
    }

    /// The guest (i386) address of a host address, if it is in the kernel window.
    pub const fn host_to_guest(&self, host: VirtAddr) -> Option<usize> {
        match host.as_usize().checked_sub(self.base) {
            Some(off) if off < KERNEL_WINDOW => Some(PAGE_OFFSET + off),
            _ => None,
        }
    }

    fn shift(&self, guest: VirtAddr) -> VirtAddr {
        VirtAddr::new(guest.as_usize() - PAGE_OFFSET + self.base)
    }
}

// SAFETY: every value is the i386 layout's (which keeps the contract) shifted
// by one constant, `base`, inside the reserved host window, so regions stay
// aligned (the base is page-aligned), disjoint and non-wrapping; the physical
// limits are the i386 layout's, unshifted.
unsafe impl KernelLayout for MockLayout {
    fn direct_map(&self) -> DirectMap {
        let dm = self.i386.direct_map();
        DirectMap::new(self.shift(dm.base()), dm.size()).expect("host window fits")
    }

    fn vmalloc_start(&self) -> VirtAddr {
        self.shift(self.i386.vmalloc_start())
    }

    fn vmalloc_end(&self) -> VirtAddr {
        self.shift(self.i386.vmalloc_end())
    }

    fn pkmap_base(&self) -> VirtAddr {
        self.shift(self.i386.pkmap_base())
    }

    fn last_pkmap(&self) -> usize {
        self.i386.last_pkmap()
    }

    fn phys_limit(&self) -> u64 {
        self.i386.phys_limit()
    }

    fn dma_limit(&self) -> PhysAddr {
        self.i386.dma_limit()
    }

    fn highmem_start(&self) -> PhysAddr {
        self.i386.highmem_start()
    }

    fn fixmap(&self) -> Fixmap {
        let f = self.i386.fixmap();
        Fixmap {
            top: self.shift(f.top),
            ..f
        }
    }
}
