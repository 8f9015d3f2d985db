//! [`MemoryManager`]: every allocator of the family in one value, built by
//! [`MemoryManager::init`] (see [`crate::init`] for the order).

use core::sync::atomic::{AtomicU64, Ordering};

use kmm_buddy::Buddy;
use kmm_hal::KernelTables;
use kmm_percpu::{BuddyAreas, PerCpuAreas, Percpu, VmallocBacking};
use kmm_pkmap::Pkmap;
use kmm_slab::{KmallocHeap, SlabAllocator};
use kmm_vmalloc::Vmalloc;

use crate::Platform;
use crate::frames::PageTableFrames;
use crate::mem_init::MemSummary;

/// The kernel page tables, with page-table pages from the buddy allocator.
pub type Tables<'a, P> =
    KernelTables<<P as Platform>::PageTable, PageTableFrames<'a, <P as Platform>::Cpu>>;
/// The buddy allocator of a platform.
pub type PageAllocator<'a, P> = Buddy<'a, <P as Platform>::Cpu>;
/// The slab allocator of a platform.
pub type Slab<'a, P> = SlabAllocator<'a, <P as Platform>::Cpu>;
/// vmalloc over the kernel tables.
pub type VmallocOf<'a, P> = Vmalloc<
    'a,
    <P as Platform>::PageTable,
    PageTableFrames<'a, <P as Platform>::Cpu>,
    &'a <P as Platform>::Tlb,
    <P as Platform>::Cpu,
>;
/// pkmap over the kernel tables.
pub type PkmapOf<'a, P> = Pkmap<
    'a,
    <P as Platform>::PageTable,
    PageTableFrames<'a, <P as Platform>::Cpu>,
    <P as Platform>::Tlb,
    <P as Platform>::Cpu,
    <P as Platform>::Wait,
>;
/// The per-CPU areas (pages from the buddy allocator).
pub type AreasOf<'a, P> =
    PerCpuAreas<'a, <P as Platform>::Cpu, BuddyAreas<'a, <P as Platform>::Cpu>>;
/// The dynamic per-CPU allocator, further chunks in the vmalloc area.
pub type PercpuOf<'a, P> = Percpu<
    'a,
    <P as Platform>::Cpu,
    BuddyAreas<'a, <P as Platform>::Cpu>,
    VmallocBacking<
        'a,
        'a,
        <P as Platform>::PageTable,
        PageTableFrames<'a, <P as Platform>::Cpu>,
        &'a <P as Platform>::Tlb,
        <P as Platform>::Cpu,
    >,
>;

/// Every allocator of the family, built from one boot memory map by
/// [`MemoryManager::init`] and living in memory bootmem set aside for it, for
/// as long as the direct map (`'a`; `'static` in a kernel).
///
/// The Linux functions are methods with their names; each allocator is also
/// reachable whole ([`Self::buddy`], [`Self::slab`], [`Self::vmalloc_allocator`],
/// [`Self::pkmap`], [`Self::percpu`]) for everything else it offers.
pub struct MemoryManager<'a, P: Platform> {
    // Fields drop (in `teardown`) in reverse order of construction.
    pub(crate) platform: P,
    pub(crate) layout: P::Layout,
    pub(crate) tlb: P::Tlb,
    pub(crate) tables: Tables<'a, P>,
    pub(crate) buddy: PageAllocator<'a, P>,
    pub(crate) slab: Slab<'a, P>,
    pub(crate) heap: KmallocHeap<'a, 'a, P::Cpu>,
    pub(crate) vmalloc: VmallocOf<'a, P>,
    pub(crate) pkmap: PkmapOf<'a, P>,
    pub(crate) areas: AreasOf<'a, P>,
    pub(crate) percpu: PercpuOf<'a, P>,
    pub(crate) summary: MemSummary,
    pub(crate) online: AtomicU64,
}

impl<P: Platform> core::fmt::Debug for MemoryManager<'_, P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemoryManager")
            .field("summary", &self.summary)
            .field("online", &self.online.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<'a, P: Platform> MemoryManager<'a, P> {
    /// The platform the manager runs on.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The kernel's virtual layout.
    pub fn layout(&self) -> &P::Layout {
        &self.layout
    }

    /// The CPUs.
    pub fn cpu(&self) -> &P::Cpu {
        self.buddy.cpu()
    }

    /// The kernel page tables, shared by vmalloc, pkmap and the fixmap users
    /// (Linux's `init_mm`).
    pub fn tables(&self) -> &Tables<'a, P> {
        &self.tables
    }

    /// The zoned buddy allocator (`mem_map`, the zones, `alloc_pages`).
    pub fn buddy(&self) -> &PageAllocator<'a, P> {
        &self.buddy
    }

    /// The slab allocator (`kmem_cache_*`, `kmalloc`, mempools).
    pub fn slab(&self) -> &Slab<'a, P> {
        &self.slab
    }

    /// `kmalloc` behind `GlobalAlloc` and allocator-api2's `Allocator`.
    pub fn kmalloc_heap(&self) -> &KmallocHeap<'a, 'a, P::Cpu> {
        &self.heap
    }

    /// vmalloc (`vmalloc`, `vmap`, `vm_map_ram`, `ioremap`, `get_vm_area`).
    pub fn vmalloc_allocator(&self) -> &VmallocOf<'a, P> {
        &self.vmalloc
    }

    /// The highmem mappings (`kmap`, `kmap_local_page`, `kmap_atomic`).
    pub fn pkmap(&self) -> &PkmapOf<'a, P> {
        &self.pkmap
    }

    /// The static per-CPU areas (`per_cpu`, `this_cpu_*`).
    pub fn per_cpu_areas(&self) -> &AreasOf<'a, P> {
        &self.areas
    }

    /// The dynamic per-CPU allocator (`alloc_percpu`, `free_percpu`).
    pub fn percpu(&self) -> &PercpuOf<'a, P> {
        &self.percpu
    }

    /// What `init` found and set aside (the "Memory:" line's numbers).
    pub fn summary(&self) -> &MemSummary {
        &self.summary
    }

    /// Brings CPU `cpu` into the memory manager (Linux's per-CPU part of
    /// `start_secondary`): gives the platform its per-CPU offset
    /// ([`Platform::cpu_up`]: a segment-based per-CPU platform loads the
    /// CPU's segment there) and marks it
    /// online. Call it on that CPU, once, before it allocates. The boot CPU
    /// is online from `init` on. Returns the CPU's per-CPU offset, or
    /// `None` if `cpu` is not a possible CPU or is online already.
    pub fn cpu_up(&self, cpu: usize) -> Option<usize> {
        let offset = *self.areas.offsets().get(cpu)?;
        let bit = 1u64.checked_shl(u32::try_from(cpu).ok()?)?;
        if self.online.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            return None;
        }
        self.platform.cpu_up(cpu, offset);
        Some(offset)
    }

    /// The CPUs brought up so far, as a mask (bit `n` for CPU `n`).
    pub fn online_mask(&self) -> u64 {
        self.online.load(Ordering::Acquire)
    }

    /// Takes the manager apart, last built first, for a host test that
    /// built it over RAM it is about to give back.
    ///
    /// # Safety
    ///
    /// `this` is the reference `init` returned, turned into a pointer
    /// without going through a shared reference; nothing uses the manager or
    /// anything it handed out afterwards, and it is called once.
    pub unsafe fn teardown(this: *mut Self) {
        let p = this;
        // SAFETY: the caller promises no further use; each field is dropped
        // once, in the reverse order of its construction, so no allocator
        // outlives one it borrows.
        unsafe {
            core::ptr::drop_in_place(&raw mut (*p).percpu);
            core::ptr::drop_in_place(&raw mut (*p).areas);
            core::ptr::drop_in_place(&raw mut (*p).pkmap);
            core::ptr::drop_in_place(&raw mut (*p).vmalloc);
            core::ptr::drop_in_place(&raw mut (*p).heap);
            core::ptr::drop_in_place(&raw mut (*p).slab);
            core::ptr::drop_in_place(&raw mut (*p).buddy);
            core::ptr::drop_in_place(&raw mut (*p).tables);
            core::ptr::drop_in_place(&raw mut (*p).tlb);
            core::ptr::drop_in_place(&raw mut (*p).layout);
            core::ptr::drop_in_place(&raw mut (*p).platform);
        }
    }
}
