//! [`Ctx`]: what the persistent and local kmaps borrow (mem_map, the kernel
//! page tables, the kernel TLB, the CPUs) and the layout values they use,
//! plus the one question both ask of a page: high or low memory?

use kmm_hal::{Fixmap, KernelTables, PAGE_SIZE, PageFlags, Pfn, PhysAddr, VirtAddr};
use kmm_page_frame::{MemMap, Page, PgFlags};

/// The attributes of every kmap (Linux's `kmap_prot`: `PAGE_KERNEL`, global
/// on a CPU with PGE). Global entries survive a CR3 reload, not an `INVLPG`
/// nor a kernel-wide flush, which are the only flushes kmaps rely on.
pub(crate) const KMAP_PROT: PageFlags = PageFlags::KERNEL_GLOBAL;

/// The borrowed machinery and the layout values, fixed at set-up.
pub(crate) struct Ctx<'a, P, F, T, C> {
    pub(crate) mem: &'a MemMap<'a>,
    pub(crate) tables: &'a KernelTables<P, F>,
    pub(crate) tlb: &'a T,
    pub(crate) cpu: &'a C,
    /// `PKMAP_BASE`.
    pub(crate) pkmap_base: VirtAddr,
    /// `LAST_PKMAP`.
    pub(crate) last_pkmap: usize,
    /// The fixmap and its `kmap_atomic` slots.
    pub(crate) fixmap: Fixmap,
}

/// Where a page's kernel address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Memory {
    /// Low memory: this direct-map address, never mapped by us.
    Low(VirtAddr),
    /// High memory: this frame, mapped on demand.
    High(PhysAddr),
}

/// A page of `mem_map`, classified.
pub(crate) struct Classified<'a> {
    pub(crate) pfn: Pfn,
    pub(crate) page: &'a Page,
    pub(crate) memory: Memory,
}

impl<'a, P, F, T, C> Ctx<'a, P, F, T, C> {
    /// `page`'s frame, its descriptor with `mem_map`'s lifetime, and whether
    /// it is high memory (Linux's `PageHighMem`: the descriptor's flag, which
    /// `MemMap::new` sets on every frame from the start of high memory).
    /// `None` if `page` is not a descriptor of this `mem_map`, or is a
    /// low-memory page outside the direct map (which `mem_map` never makes).
    pub(crate) fn classify(&self, page: &Page) -> Option<Classified<'a>> {
        let (pfn, page) = self.mem.own(page).ok()?;
        let memory = if page.test(PgFlags::HIGHMEM) {
            Memory::High(pfn.phys())
        } else {
            Memory::Low(self.mem.direct_map().phys_to_virt(pfn.phys())?)
        };
        Some(Classified { pfn, page, memory })
    }

    /// The address of pkmap entry `nr` (Linux's `PKMAP_ADDR`).
    #[inline]
    pub(crate) fn pkmap_addr(&self, nr: usize) -> VirtAddr {
        VirtAddr::new(self.pkmap_base.as_usize() + nr * PAGE_SIZE)
    }

    /// The pkmap entry of `va` (Linux's `PKMAP_NR`), if `va` is in the window.
    #[inline]
    pub(crate) fn pkmap_nr(&self, va: VirtAddr) -> Option<usize> {
        let off = va.as_usize().checked_sub(self.pkmap_base.as_usize())?;
        let nr = off / PAGE_SIZE;
        (nr < self.last_pkmap).then_some(nr)
    }

    /// The end of the pkmap window.
    pub(crate) fn pkmap_end(&self) -> VirtAddr {
        self.pkmap_addr(self.last_pkmap)
    }
}
