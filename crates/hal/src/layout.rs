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

/// Why [`check_layout`] refused a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// A region's start or size is not page-aligned.
    Unaligned(&'static str),
    /// A region wraps around the end of the address space, or is empty when
    /// it must not be.
    Wraps(&'static str),
    /// Two regions overlap.
    Overlap(&'static str, &'static str),
    /// The physical limits disagree: `highmem_start <=` the direct map's size
    /// (everything below high memory is direct-mapped), `dma_limit > 0`, and
    /// `phys_limit <= PhysAddr::LIMIT`.
    PhysLimits,
    /// The fixmap's `kmap_atomic` slots do not fit in it.
    KmapSlots,
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::Unaligned(r) => write!(f, "layout: {r} is not page-aligned"),
            LayoutError::Wraps(r) => write!(f, "layout: {r} wraps the address space"),
            LayoutError::Overlap(a, b) => write!(f, "layout: {a} overlaps {b}"),
            LayoutError::PhysLimits => f.write_str("layout: inconsistent physical limits"),
            LayoutError::KmapSlots => f.write_str("layout: kmap_atomic slots past the fixmap"),
        }
    }
}

impl core::error::Error for LayoutError {}

/// Checks what the [`KernelLayout`] contract asks of `layout`'s values: every
/// region page-aligned and not wrapping, the regions disjoint, the physical
/// limits in order, the `kmap_atomic` slots inside the fixmap. The allocators
/// that place memory by the layout call it when they are built and refuse a
/// bad layout with this error.
pub fn check_layout<L: KernelLayout + ?Sized>(layout: &L) -> Result<(), LayoutError> {
    let dm = layout.direct_map();
    let fix = layout.fixmap();
    let pkmap_len = layout
        .last_pkmap()
        .checked_mul(PAGE_SIZE)
        .ok_or(LayoutError::Wraps("pkmap"))?;
    if fix.slots == 0 {
        return Err(LayoutError::Wraps("fixmap"));
    }
    let fix_start = fix
        .top
        .as_usize()
        .checked_sub((fix.slots - 1) * PAGE_SIZE)
        .ok_or(LayoutError::Wraps("fixmap"))?;
    let vs = layout.vmalloc_start().as_usize();
    let ve = layout.vmalloc_end().as_usize();
    let regions: [(&'static str, usize, Option<usize>); 4] = [
        ("direct map", dm.base().as_usize(), Some(dm.size())),
        ("vmalloc", vs, ve.checked_sub(vs)),
        ("pkmap", layout.pkmap_base().as_usize(), Some(pkmap_len)),
        ("fixmap", fix_start, Some(fix.slots * PAGE_SIZE)),
    ];
    let mut spans = [(0usize, 0usize); 4];
    for (i, &(name, start, len)) in regions.iter().enumerate() {
        let len = len.ok_or(LayoutError::Wraps(name))?;
        if start % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 {
            return Err(LayoutError::Unaligned(name));
        }
        // The end may be exactly the top of the address space (a fixmap slot
        // at the last page): `start + len - 1` must not wrap.
        let last = match len {
            0 => start,
            _ => start.checked_add(len - 1).ok_or(LayoutError::Wraps(name))?,
        };
        spans[i] = (start, last);
        for (j, (other, o_len)) in regions[..i].iter().map(|r| (r.0, r.2)).enumerate() {
            let (os, ol) = spans[j];
            let empty = len == 0 || o_len == Some(0);
            if !empty && start <= ol && os <= last {
                return Err(LayoutError::Overlap(other, name));
            }
        }
    }
    let dma = layout.dma_limit().as_u64();
    let high = layout.highmem_start().as_u64();
    if high > dm.size() as u64 || layout.phys_limit() > PhysAddr::LIMIT || dma == 0 {
        return Err(LayoutError::PhysLimits);
    }
    let kmap_end = fix
        .nr_cpus
        .checked_mul(fix.kmap_per_cpu)
        .and_then(|n| n.checked_add(fix.kmap_begin));
    if kmap_end.is_none_or(|end| fix.kmap_per_cpu > 0 && end > fix.slots) {
        return Err(LayoutError::KmapSlots);
    }
    Ok(())
}

/// The kernel's virtual memory map: what the allocators must not hard-code.
///
/// The i386 layout gives Linux's values; the mock gives the same shape shifted to a
/// host address.
///
/// # Safety
///
/// The allocators map, write and free memory by these addresses, so wrong
/// ones become memory corruption. An implementation must guarantee:
///
/// - every method returns the same value for the life of the object;
/// - the values pass [`check_layout`]: each region (direct map, vmalloc area,
///   pkmap window, fixmap) page-aligned, not wrapping, disjoint from the
///   others; `highmem_start <=` the direct map's size (a small machine's
///   `highmem_start` may lie below `dma_limit`: all its RAM is DMA);
///   `phys_limit <= PhysAddr::LIMIT`; the `kmap_atomic` slots inside the
///   fixmap;
/// - the regions other than the direct map are reserved for the allocators
///   that use them: nothing else maps or uses those virtual addresses.
///
/// The allocators also run [`check_layout`] when they are built, so a layout
/// with bad values is refused with a [`LayoutError`] even before it could do
/// harm.
pub unsafe trait KernelLayout {
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

// SAFETY: forwards every method to `L`, which keeps the contract.
unsafe impl<L: KernelLayout + ?Sized> KernelLayout for &L {
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
    fn pkmap_addr(&self, nr: usize) -> Option<VirtAddr> {
        (**self).pkmap_addr(nr)
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

    /// A layout with every value settable, to break one at a time.
    #[derive(Clone, Copy)]
    struct Raw {
        dm: DirectMap,
        vmalloc: (usize, usize),
        pkmap: (usize, usize),
        fix: Fixmap,
        high: u64,
    }

    // SAFETY: test-only; `check_layout` is what the tests exercise, and no
    // allocator is built on it.
    unsafe impl KernelLayout for Raw {
        fn direct_map(&self) -> DirectMap {
            self.dm
        }
        fn vmalloc_start(&self) -> VirtAddr {
            VirtAddr::new(self.vmalloc.0)
        }
        fn vmalloc_end(&self) -> VirtAddr {
            VirtAddr::new(self.vmalloc.1)
        }
        fn pkmap_base(&self) -> VirtAddr {
            VirtAddr::new(self.pkmap.0)
        }
        fn last_pkmap(&self) -> usize {
            self.pkmap.1
        }
        fn fixmap(&self) -> Fixmap {
            self.fix
        }
        fn highmem_start(&self) -> PhysAddr {
            PhysAddr::new(self.high)
        }
    }

    fn linux() -> Raw {
        Raw {
            dm: DirectMap::new(VirtAddr::new(0xC000_0000), 896 << 20).unwrap(),
            vmalloc: (0xF880_0000, 0xFF7F_E000),
            pkmap: (0xFF80_0000, 1024),
            fix: Fixmap {
                top: VirtAddr::new(0xFFFF_F000),
                slots: 64,
                kmap_begin: 8,
                kmap_per_cpu: 7,
                nr_cpus: 8,
            },
            high: 896 << 20,
        }
    }

    #[test]
    fn check_layout_accepts_linux_and_refuses_each_bad_value() {
        assert_eq!(check_layout(&linux()), Ok(()));
        assert_eq!(check_layout(&&linux()), Ok(()), "through a reference");
        let mut l = linux();
        l.vmalloc.0 = 0xF000_0000; // inside the direct map
        assert_eq!(
            check_layout(&l),
            Err(LayoutError::Overlap("direct map", "vmalloc"))
        );
        let mut l = linux();
        l.vmalloc = (0xF880_0000, 0xF800_0000); // ends before it starts
        assert_eq!(check_layout(&l), Err(LayoutError::Wraps("vmalloc")));
        let mut l = linux();
        l.pkmap.0 = 0xFF7F_D000; // runs into vmalloc
        assert_eq!(
            check_layout(&l),
            Err(LayoutError::Overlap("vmalloc", "pkmap"))
        );
        let mut l = linux();
        l.pkmap.0 = 0xFF80_0800;
        assert_eq!(check_layout(&l), Err(LayoutError::Unaligned("pkmap")));
        let mut l = linux();
        l.pkmap.1 = usize::MAX;
        assert_eq!(check_layout(&l), Err(LayoutError::Wraps("pkmap")));
        let mut l = linux();
        l.fix.slots = 2000; // down into pkmap
        assert_eq!(
            check_layout(&l),
            Err(LayoutError::Overlap("pkmap", "fixmap"))
        );
        let mut l = linux();
        l.fix.nr_cpus = 100;
        assert_eq!(check_layout(&l), Err(LayoutError::KmapSlots));
        let mut l = linux();
        l.high = 1 << 30; // past the direct map
        assert_eq!(check_layout(&l), Err(LayoutError::PhysLimits));
        let mut l = linux();
        l.high = 8 << 20; // a small machine: all its memory is DMA
        l.dm = DirectMap::new(VirtAddr::new(0xC000_0000), 8 << 20).unwrap();
        assert_eq!(check_layout(&l), Ok(()));
    }

    #[test]
    fn references_forward_every_method() {
        let mut l = linux();
        l.pkmap.1 = 4;
        let r = &l;
        assert_eq!(r.pkmap_addr(3), l.pkmap_addr(3));
        assert_eq!(r.pkmap_addr(4), None);
        assert_eq!(KernelLayout::highmem_start(&r), l.highmem_start());
        assert_eq!(KernelLayout::dma_limit(&r), l.dma_limit());
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
