//! [`Platform`]: what a port gives the memory manager — the types of its
//! CPUs, page tables, TLB shootdown, kmap wait and layout, and how it builds
//! and loads the kernel page tables at boot (Linux's `arch/` side of
//! `paging_init`).

use kmm_hal::{Cpu, KernelLayout, KernelTlb, MapError, PageTable};
use kmm_page_frame::Bootmem;
use kmm_pkmap::KmapWait;

/// The architecture side of the memory manager.
///
/// kmm ships two: `I386` (real i386 paging, 2-level or PAE; built for x86
/// targets only) and, in `kmm-testkit`, the host mock's. A port to another CPU implements
/// [`kmm_hal`]'s traits for its types and names them here.
///
/// # Safety
///
/// [`MemoryManager::init`](crate::MemoryManager::init) relies on
/// [`Platform::kernel_tables`]: the tables it returns map the layout's
/// direct map (all of `lowmem_end` bytes, read-write, at the direct map's
/// base) on every CPU from the moment it returns, and the page-table pages
/// it used came from `frames` (so bootmem keeps them reserved). The other
/// requirements are those of the associated types' own `unsafe` traits.
pub unsafe trait Platform {
    /// The CPUs (ids, interrupt and preemption state).
    type Cpu: Cpu + Send + Sync + 'static;
    /// The kernel page tables.
    type PageTable: PageTable + Send + 'static;
    /// Kernel-wide TLB flushes on every CPU.
    type Tlb: KernelTlb + Sync + 'static;
    /// How `kmap` waits for a free entry.
    type Wait: KmapWait + Sync + 'static;
    /// The kernel's virtual layout.
    type Layout: KernelLayout + Copy + Send + Sync + 'static;

    /// Builds the kernel page tables while only bootmem exists (Linux's
    /// `pagetable_init` and `kernel_physical_mapping_init`): the direct map
    /// of `layout`, with large pages where the CPU has them, page-table pages
    /// from `frames`; and makes them the running CPU's (loads CR3 and turns
    /// paging on, on i386). Called once by `init`, unless the caller passed
    /// tables of its own.
    ///
    /// # Safety
    ///
    /// Called once, by `init`, on the boot CPU, before anything else uses
    /// the direct map of `layout`.
    unsafe fn kernel_tables(
        &self,
        frames: &mut Bootmem<'_>,
        layout: &Self::Layout,
    ) -> Result<Self::PageTable, MapError>;

    /// Called by [`MemoryManager::cpu_up`](crate::MemoryManager::cpu_up) on
    /// the CPU that comes up, with its per-CPU offset (Linux's
    /// `__per_cpu_offset[cpu]`): a platform whose CPUs reach their per-CPU
    /// data through a segment (an SMP i386 kernel's `%fs`) loads it here.
    /// The default, which `I386` keeps (its default CPU is
    /// uniprocessor), does nothing.
    fn cpu_up(&self, cpu: usize, per_cpu_offset: usize) {
        let _ = (cpu, per_cpu_offset);
    }
}
