//! [`I386`]: the i386 platform — kmm-i386's 2-level or PAE tables, its CPUs
//! and TLB flushes — with the kernel page tables built and loaded by `init`.

use core::marker::PhantomData;

use kmm_hal::{DirectMap, KernelLayout, MapError, PageFlags, VirtAddr};
use kmm_i386::{Classic, I386Cpu, I386Layout, I386Tlb, Mode, Paging};
use kmm_page_frame::Bootmem;
use kmm_pkmap::SpinWait;

use crate::Platform;

/// The platform's type parameters, held by no value.
type Types<M, C, T> = fn() -> (M, C, T);

/// i386 with paging mode `M` ([`Classic`] 2-level or
/// [`PaeMode`](kmm_i386::PaeMode)), CPUs `C` and TLB shootdown `T`: by
/// default one CPU ([`I386Cpu`], [`I386Tlb`]); an SMP kernel names
/// [`I386SmpCpu`](kmm_i386::I386SmpCpu) and
/// [`SmpTlb`](kmm_i386::SmpTlb).
///
/// [`Platform::kernel_tables`] expects what a multiboot loader leaves:
/// protected mode, paging off, the kernel running at its physical address.
/// It maps low memory twice with global large pages — at `PAGE_OFFSET` (the
/// direct map) and at 0 (so the running code and its stack stay reachable
/// at the addresses they run at) — then loads CR3 and turns on paging
/// (with PSE, PGE, and PAE for PAE tables). A kernel whose paging is
/// already on passes its own tables in [`crate::BootParams::tables`].
pub struct I386<M: Mode = Classic, C = I386Cpu, T = I386Tlb> {
    _types: PhantomData<Types<M, C, T>>,
}

impl<M: Mode, C, T> core::fmt::Debug for I386<M, C, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(M::NAME)
    }
}

impl<M: Mode, C, T> I386<M, C, T> {
    /// The platform.
    ///
    /// # Safety
    ///
    /// The code runs in ring 0 on an i386-compatible CPU (with PAE for
    /// [`PaeMode`](kmm_i386::PaeMode)): `init` writes CR0, CR3 and CR4.
    pub const unsafe fn new() -> Self {
        I386 {
            _types: PhantomData,
        }
    }
}

// SAFETY: `kernel_tables` maps all of the layout's low memory read-write at
// its direct-map base (large pages, base pages for a tail), page-table pages
// from `frames`, and loads the tables before it returns, with paging on;
// the identity map of low memory keeps the running code reachable where it
// runs. `new`'s caller promised ring 0 on an i386.
unsafe impl<M, C, T> Platform for I386<M, C, T>
where
    M: Mode + Send + 'static,
    C: kmm_hal::Cpu + Send + Sync + 'static,
    T: kmm_hal::KernelTlb + Sync + 'static,
{
    type Cpu = C;
    type PageTable = Paging<M>;
    type Tlb = T;
    type Wait = SpinWait;
    type Layout = I386Layout;

    unsafe fn kernel_tables(
        &self,
        frames: &mut Bootmem<'_>,
        layout: &I386Layout,
    ) -> Result<Paging<M>, MapError> {
        let dm = layout.direct_map();
        let lowmem = dm.size();
        // SAFETY: paging is off (this type's contract), so the identity map
        // reaches every low-memory frame bootmem hands out, and they are
        // the tables' alone.
        let mut pt = unsafe { Paging::<M>::new(DirectMap::identity(lowmem), true, frames) }?;
        pt.kernel_physical_mapping_init(dm.base(), lowmem, PageFlags::KERNEL_GLOBAL, frames)?;
        pt.kernel_physical_mapping_init(VirtAddr::new(0), lowmem, PageFlags::KERNEL_RW, frames)?;
        // SAFETY: ring 0 with paging off (this type's contract); `pt` maps
        // low memory at the addresses the code runs at (the identity map),
        // which holds the kernel and its stack.
        unsafe { kmm_i386::arch::enable_paging(pt.root(), M::DIRS > 1, true, true) };
        // SAFETY: every table page came from bootmem, in low memory, which
        // the direct map now maps read-write.
        unsafe { pt.set_direct_map(dm) };
        Ok(pt)
    }
}

/// The default platform's heap can be a `static` (`#[global_allocator]`).
#[cfg(feature = "global-allocator")]
const _: fn() = || {
    fn is_sync<T: Sync>() {}
    is_sync::<crate::GlobalHeap<I386>>();
    is_sync::<crate::GlobalHeap<I386<kmm_i386::PaeMode>>>();
};

impl<'p, M: Mode + Send + 'static> crate::BootParams<'p, I386<M>> {
    /// The i386 defaults for a uniprocessor kernel: the layout from the
    /// memory map (low memory up to the top of usable RAM or 896 MiB,
    /// whichever is lower; `M`'s paging mode; one CPU), [`I386Cpu`],
    /// [`I386Tlb`], `kmap` waits that spin, tables built and loaded by
    /// `init`. `kernel` is the kernel image's physical range (from its
    /// linker script), reserved.
    ///
    /// # Safety
    ///
    /// One CPU runs while the manager is used ([`I386Cpu::new`] and
    /// [`I386Tlb::new`]), in ring 0 with paging off until `init` turns it on.
    pub unsafe fn i386(
        regions: &'p [kmm_page_frame::Region],
        kernel: core::ops::Range<u64>,
    ) -> Self {
        let top = regions
            .iter()
            .filter(|r| r.kind == kmm_page_frame::RegionKind::Usable)
            .map(|r| r.base + r.len)
            .max()
            .unwrap_or(0);
        let lowmem = top.min(kmm_i386::MAX_LOWMEM as u64) as usize & !(kmm_hal::PAGE_SIZE - 1);
        let layout = I386Layout::new(lowmem, M::DIRS > 1, 1);
        // SAFETY: one CPU runs, in ring 0 (this function's contract).
        let (cpu, tlb) = unsafe { (I386Cpu::new(), I386Tlb::new()) };
        crate::BootParams::new(regions, kernel, layout, cpu, tlb, SpinWait)
    }
}
