//! [`MemoryManager::init`]: the whole stack brought up from one boot memory
//! map, in the order Linux 2.6's `start_kernel` uses on i386:
//!
//! | step | kmm | Linux 2.6 |
//! |---|---|---|
//! | 1 | [`Bootmem::new`] over the memory map, the kernel image and `reserved` ranges reserved | `setup_arch` → `setup_memory`: `init_bootmem`, `register_bootmem_low_pages`, `reserve_bootmem` |
//! | 2 | the kernel page tables: [`Platform::kernel_tables`] (or the caller's), page-table pages from bootmem, loaded | `paging_init` → `pagetable_init` (`kernel_physical_mapping_init`, the fixmap and pkmap page tables), `load_cr3` |
//! | 3 | the manager's own state from bootmem (it never moves) | `alloc_bootmem` |
//! | 4 | [`MemMap::new`]: `mem_map`, the nodes and the zone spans | `zone_sizes_init` → `free_area_init` |
//! | 5 | [`Buddy::new`]: zonelists, watermarks, every free bootmem page released to the buddy lists | `build_all_zonelists`, `mem_init` → `free_all_bootmem` |
//! | 6 | [`setup_per_cpu_areas`]: one unit per possible CPU | `setup_per_cpu_areas` |
//! | 7 | [`SlabAllocator::with_sizes`]: the cache of caches and the kmalloc caches of `BootParams::kmalloc_sizes` | `kmem_cache_init` |
//! | 8 | [`Vmalloc::new`] | `vmalloc_init` |
//! | 9 | [`Pkmap::new`]: the pkmap and `kmap_atomic` page tables | `permanent_kmaps_init` (in `paging_init`) |
//! | 10 | [`Percpu::new`]: `alloc_percpu`, further chunks in the vmalloc area | `percpu_init_late` |
//!
//! Two steps move from Linux's place, for a reason each. The per-CPU areas
//! (6) come from the buddy allocator right after it exists rather than
//! from bootmem before it: a unit is a whole number of pages either way, and
//! bootmem is handed to the buddy allocator whole. The pkmap page tables
//! (9) are built from the buddy allocator's low memory rather than from
//! bootmem, after the slab allocator: they are then ordinary page-table
//! pages of the kernel tables, given back like any other.
//!
//! [`Bootmem::new`]: kmm_page_frame::Bootmem::new
//! [`MemMap::new`]: kmm_page_frame::MemMap::new
//! [`Buddy::new`]: kmm_buddy::Buddy::new
//! [`setup_per_cpu_areas`]: kmm_percpu::setup_per_cpu_areas
//! [`SlabAllocator::with_sizes`]: kmm_slab::SlabAllocator::with_sizes
//! [`Vmalloc::new`]: kmm_vmalloc::Vmalloc::new
//! [`Pkmap::new`]: kmm_pkmap::Pkmap::new
//! [`Percpu::new`]: kmm_percpu::Percpu::new

use core::ops::Range;
use core::sync::atomic::AtomicU64;

use kmm_buddy::{Buddy, BuddyConfig};
use kmm_hal::{Cpu, KernelLayout, KernelTables, PhysAddr};
use kmm_page_frame::{Bootmem, MemMap, Region};
use kmm_percpu::{BuddyAreas, Percpu, VmallocBacking, setup_per_cpu_areas};
use kmm_pkmap::Pkmap;
use kmm_slab::{KmallocHeap, SlabAllocator};
use kmm_vmalloc::Vmalloc;

use crate::frames::PageTableFrames;
use crate::mem_init::MemSummary;
use crate::{BootParams, InitError, MemoryManager, Platform};

/// Step 1 of [`MemoryManager::init`]: bootmem over `regions` (low memory
/// ends where `layout`'s direct map does) with every range of `reserved`
/// (physical addresses; empty ones skipped) reserved.
pub fn bootmem<'m, 'r, L: KernelLayout>(
    regions: &'m [Region],
    layout: &L,
    reserved: impl IntoIterator<Item = &'r Range<u64>>,
) -> Result<Bootmem<'m>, InitError> {
    let lowmem_end = PhysAddr::new(layout.direct_map().size() as u64);
    let mut bootmem = Bootmem::new(regions, lowmem_end).map_err(InitError::Bootmem)?;
    for r in reserved {
        if r.end > r.start {
            bootmem
                .reserve(PhysAddr::new(r.start), r.end - r.start)
                .map_err(InitError::Bootmem)?;
        }
    }
    Ok(bootmem)
}

/// Steps 4 and 5 of [`MemoryManager::init`]: `mem_map`, the nodes and
/// zones (Linux's `free_area_init`), then the buddy allocator, to which
/// every page bootmem did not hand out goes (`build_all_zonelists`,
/// `mem_init`). The kit's buddy-only test machines boot through it too.
///
/// # Safety
///
/// [`MemMap::new`]'s and [`Buddy::new`]'s: `layout`'s direct map maps all
/// of low memory read-write for `'a`, every range in use is reserved in
/// `bootmem`, and `cpu` keeps the `Cpu` contract.
pub unsafe fn page_allocator<'a, C: Cpu, L: KernelLayout>(
    mut bootmem: Bootmem<'_>,
    layout: &L,
    cpu: C,
    config: BuddyConfig<'a>,
) -> Result<Buddy<'a, C>, InitError> {
    // SAFETY: the caller's contract, forwarded.
    let mem = unsafe { MemMap::new(&mut bootmem, layout) }.map_err(InitError::MemMap)?;
    // SAFETY: as above; `bootmem` is the one `mem` was built with.
    unsafe { Buddy::new(mem, bootmem, cpu, config) }.map_err(InitError::Buddy)
}

/// Writes `value` into field `$f` of the manager at `$m` and returns a
/// reference to it for `'a`.
macro_rules! place {
    ($m:ident . $f:ident = $value:expr) => {{
        let field = &raw mut (*$m).$f;
        field.write($value);
        &*field
    }};
}

impl<'a, P: Platform> MemoryManager<'a, P> {
    /// Brings the whole memory manager up from the boot memory map (see the
    /// [module docs](crate::init) for the order and how it follows Linux),
    /// and returns it, placed in low memory bootmem set aside for it for
    /// good.
    ///
    /// Call it once, on the boot CPU, with interrupts on (the pkmap set-up
    /// flushes every CPU's TLB) and the other CPUs not started; each of them
    /// then calls [`MemoryManager::cpu_up`].
    ///
    /// It needs a deep stack: about 90 KiB in a release build and 400 KiB
    /// in a debug one (the allocators are built by value and moved into
    /// place; `MemoryManager` itself is about 28 KiB on i386), so a kernel
    /// calls it on a boot stack of 512 KiB, as `examples/minimal-kernel`
    /// does, or builds it in release.
    ///
    /// A failure leaves nothing usable (and what was built before it is
    /// never dropped), but corrupts nothing: a kernel reports it and stops.
    ///
    /// # Safety
    ///
    /// - `params.regions` describes the machine's RAM; every range in use
    ///   (the kernel image, the loader's data, anything the firmware or the
    ///   kernel keeps) is inside `params.kernel` or `params.reserved`, or is
    ///   not usable RAM in the map.
    /// - Once the kernel tables are loaded, the layout's direct map maps all
    ///   of low memory read-write for `'a` (a kernel: forever), and nothing
    ///   but this manager uses the RAM it hands out or the layout's vmalloc,
    ///   pkmap and fixmap ranges.
    /// - `params.tables`, if given, are the running CPU's loaded tables and
    ///   map that direct map; `params.cpu`, `params.tlb` and the buddy
    ///   configuration's cross-CPU call describe the machine's CPUs.
    /// - It is called once for these regions (a second manager over the same
    ///   RAM would hand out the same pages).
    pub unsafe fn init(platform: P, params: BootParams<'_, P>) -> Result<&'a mut Self, InitError> {
        let BootParams {
            regions,
            kernel,
            kernel_code,
            reserved,
            layout,
            cpu,
            tlb,
            wait,
            tables,
            buddy: config,
            percpu,
            kmalloc_sizes,
        } = params;
        let dm = layout.direct_map();
        // 1. bootmem, with everything in use reserved.
        let mut bootmem = bootmem(regions, &layout, core::iter::once(&kernel).chain(reserved))?;
        // 2. the kernel page tables.
        let pt = match tables {
            Some(pt) => pt,
            // SAFETY: called once, here, before anything uses the direct map.
            None => unsafe { platform.kernel_tables(&mut bootmem, &layout) }
                .map_err(InitError::PageTables)?,
        };
        // 3. the manager's own state, in low memory for good.
        let pa = bootmem
            .alloc(size_of::<Self>(), align_of::<Self>())
            .map_err(|_| InitError::NoMemory)?;
        let m: *mut Self = dm
            .phys_to_virt(pa)
            .ok_or(InitError::NoMemory)?
            .as_mut_ptr::<Self>();
        // SAFETY: `m` is `size_of::<Self>()` bytes of low memory bootmem just
        // reserved for good (it stays reserved in `mem_map`, so no allocator
        // hands it out), aligned for `Self`, reached through the direct map
        // the loaded tables map read-write for `'a` (the caller's contract).
        // Each field is written once, before any reference to it is made,
        // and the memory never moves, so the references the allocators keep
        // to the fields built before them stay valid for `'a`.
        unsafe {
            (&raw mut (*m).online).write(AtomicU64::new(1));
            let _ = place!(m.platform = platform);
            let layout: &'a P::Layout = place!(m.layout = layout);
            let tlb: &'a P::Tlb = place!(m.tlb = tlb);
            // 4 and 5. mem_map, nodes and zones, and the buddy allocator;
            // bootmem's free pages go to it (the caller's contract: the
            // direct map covers what bootmem hands out).
            let nodes = config.cpu_nodes;
            let buddy: &'a Buddy<'a, P::Cpu> =
                place!(m.buddy = page_allocator(bootmem, layout, cpu, config)?);
            // Page-table pages come from the buddy allocator from now on.
            let mut frames = PageTableFrames::new();
            frames.attach(buddy);
            let tables = place!(m.tables = KernelTables::new(pt, frames));
            let summary = MemSummary::new(buddy, &kernel, &kernel_code);
            let _ = place!(m.summary = summary);
            // 6. the per-CPU areas.
            let areas = place!(
                m.areas = setup_per_cpu_areas(buddy.cpu(), &percpu, BuddyAreas::new(buddy, nodes))
                    .map_err(InitError::Percpu)?
            );
            // 7. the slab allocator and kmalloc.
            let slab = place!(
                m.slab =
                    SlabAllocator::with_sizes(buddy, kmalloc_sizes).map_err(InitError::Slab)?
            );
            let _ = place!(m.heap = KmallocHeap::new(slab));
            // 8. vmalloc.
            let vm = place!(
                m.vmalloc = Vmalloc::new(slab, tables, tlb, layout).map_err(InitError::Vmalloc)?
            );
            // 9. pkmap: the only one over this mem_map and these tables.
            let _ = place!(
                m.pkmap = Pkmap::new(buddy.mem(), tables, tlb, buddy.cpu(), layout, wait)
                    .map_err(InitError::Pkmap)?
            );
            // 10. the dynamic per-CPU allocator: `vm` maps its areas in the
            // kernel tables `tables`.
            let backing = VmallocBacking::new(vm, tables, buddy, nodes);
            let _ = place!(m.percpu = Percpu::new(areas, backing).map_err(InitError::Percpu)?);
            Ok(&mut *m)
        }
    }
}
