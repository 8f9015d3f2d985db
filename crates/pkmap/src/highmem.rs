//! [`Pkmap`]: the highmem mappings of one kernel (Linux's `mm/highmem.c`):
//! the persistent kmaps and the per-CPU local ones, over one `mem_map` and
//! the kernel page tables.

use core::sync::atomic::Ordering;

use kmm_hal::{
    Cpu, FrameSource, KernelLayout, KernelTables, KernelTlb, PAGE_SIZE, PageTable, VirtAddr,
    check_layout,
};
use kmm_page_frame::{MemMap, Page};

use crate::ctx::{Ctx, Memory};
use crate::error::{
    CheckError, InitError, KmapError, KmapLocalError, KunmapError, KunmapLocalError,
    NotProcessContext,
};
use crate::guard::KmapLocalGuard;
use crate::init::populate;
use crate::local::{KM_MAX, LocalStacks, MAX_CPUS};
use crate::pkmap::{MAX_PKMAP, PkmapTable, Waiting};
use crate::stats::PkmapStats;
use crate::wait::{KmapWait, SpinWait};

/// The highmem mappings of a kernel: `kmap`/`kunmap` (persistent kmaps at
/// `PKMAP_BASE`) and `kmap_local_page`/`kmap_atomic` (per-CPU fixmap
/// slots).
///
/// - `P`, `F`: the kernel page tables and their frame source, shared behind
///   [`KernelTables`]' IRQ-safe lock;
/// - `T`: the kernel-wide TLB flush ([`KernelTlb`]);
/// - `C`: the CPUs;
/// - `W`: how `kmap` waits for a free entry ([`KmapWait`]; [`SpinWait`] by
///   default).
///
/// The layout is read once, by [`Pkmap::new`] (its values never change, by
/// the `KernelLayout` contract), so it is not a parameter of the type.
pub struct Pkmap<'a, P, F, T, C, W = SpinWait>
where
    P: PageTable,
    F: FrameSource,
    T: KernelTlb,
    C: Cpu,
    W: KmapWait,
{
    table: PkmapTable,
    local: LocalStacks,
    cx: Ctx<'a, P, F, T, C>,
    wait: W,
}

impl<'a, P, F, T, C, W> Pkmap<'a, P, F, T, C, W>
where
    P: PageTable,
    F: FrameSource,
    T: KernelTlb,
    C: Cpu,
    W: KmapWait,
{
    /// Sets up the highmem mappings (Linux's `permanent_kmaps_init`): checks
    /// the layout, builds the page-table pages of the pkmap window and of
    /// every CPU's `kmap_atomic` slots (so no kmap ever needs a frame) and
    /// flushes both ranges from every TLB. Call it with no lock held and,
    /// when `cpu` counts more than one CPU, with interrupts on.
    ///
    /// Fails if the layout is inconsistent or larger than this crate's
    /// limits ([`MAX_PKMAP`], [`MAX_CPUS`], [`KM_MAX`]), if a pkmap entry or
    /// slot is already mapped, or if the frame source has no frame for a
    /// page-table page (tables built before the failure stay, empty).
    ///
    /// # Safety
    ///
    /// This is the only `Pkmap` over `mem` and `tables` for as long as it
    /// lives (and any earlier one is gone): it alone writes the addresses of
    /// high-memory pages into their descriptors and the pkmap and
    /// `kmap_atomic` entries of `tables`. `layout` is the layout `mem` and
    /// `tables` were built with, and `cpu` the CPUs that use them.
    pub unsafe fn new<L: KernelLayout>(
        mem: &'a MemMap<'a>,
        tables: &'a KernelTables<P, F>,
        tlb: &'a T,
        cpu: &'a C,
        layout: &L,
        wait: W,
    ) -> Result<Self, InitError> {
        check_layout(layout).map_err(InitError::Layout)?;
        let last_pkmap = layout.last_pkmap();
        if last_pkmap == 0 || last_pkmap > MAX_PKMAP {
            return Err(InitError::PkmapEntries);
        }
        let fixmap = layout.fixmap();
        if fixmap.kmap_per_cpu == 0 || fixmap.kmap_per_cpu > KM_MAX {
            return Err(InitError::KmapSlots);
        }
        let cpus = cpu.count();
        if cpus > MAX_CPUS || cpus > fixmap.nr_cpus {
            return Err(InitError::TooManyCpus);
        }
        // The closing flush reaches the other CPUs through interrupts; a
        // machine with one CPU flushes its own TLB and needs none (Linux
        // runs `permanent_kmaps_init` with interrupts still off at boot).
        if cpus > 1 && cpu.irqs_disabled() {
            return Err(InitError::IrqsDisabled);
        }
        let cx = Ctx {
            mem,
            tables,
            tlb,
            cpu,
            pkmap_base: layout.pkmap_base(),
            last_pkmap,
            fixmap,
        };
        // The slots of CPUs 0..cpus are contiguous, the highest slot number
        // at the lowest address.
        let slots = cpus * fixmap.kmap_per_cpu;
        let lowest = fixmap
            .kmap_slot(cpus - 1, fixmap.kmap_per_cpu - 1)
            .and_then(|s| fixmap.fix_to_virt(s))
            .ok_or(InitError::TooManyCpus)?;
        {
            let mut t = tables.lock(cpu);
            populate(&mut t, cx.pkmap_base, last_pkmap)?;
            populate(&mut t, lowest, slots)?;
        }
        tlb.flush_tlb_kernel_range(cx.pkmap_base, cx.pkmap_end());
        tlb.flush_tlb_kernel_range(lowest, VirtAddr::new(lowest.as_usize() + slots * PAGE_SIZE));
        Ok(Pkmap {
            table: PkmapTable::new(),
            local: LocalStacks::new(),
            cx,
            wait,
        })
    }

    /// Process context with interrupts on, or the error to return.
    fn process_context(&self) -> Result<(), NotProcessContext> {
        if self.cx.cpu.in_interrupt() {
            Err(NotProcessContext::InInterrupt)
        } else if self.cx.cpu.irqs_disabled() {
            Err(NotProcessContext::IrqsDisabled)
        } else {
            Ok(())
        }
    }

    fn kmap_inner(&self, page: &Page, waiting: Waiting<'_, W>) -> Result<VirtAddr, KmapError> {
        self.process_context()?;
        let c = self.cx.classify(page).ok_or(KmapError::NotInMemMap)?;
        match c.memory {
            Memory::Low(va) => Ok(va),
            Memory::High(pa) => self.table.kmap_high(&self.cx, c.page, pa, waiting),
        }
    }

    /// Linux's `kmap`: the kernel address of `page`: its direct-map address
    /// for a low-memory page; for a high-memory page a persistent mapping
    /// (a new one, or another user of the existing one), recorded in the
    /// descriptor so that `page_address` returns it. Waits through the
    /// [`KmapWait`] hook while every entry is in use. Process context only,
    /// interrupts on; undo with [`Pkmap::kunmap`].
    pub fn kmap(&self, page: &Page) -> Result<VirtAddr, KmapError> {
        self.kmap_inner(page, Waiting::Wait(&self.wait))
    }

    /// [`Pkmap::kmap`], failing with [`KmapError::Full`] instead of waiting.
    pub fn try_kmap(&self, page: &Page) -> Result<VirtAddr, KmapError> {
        self.kmap_inner(page, Waiting::Fail)
    }

    /// Linux's `kmap_high`: [`Pkmap::kmap`] of a page that must be in high
    /// memory ([`KmapError::NotHighmem`] otherwise).
    pub fn kmap_high(&self, page: &Page) -> Result<VirtAddr, KmapError> {
        if self.is_lowmem(page) {
            return Err(KmapError::NotHighmem);
        }
        self.kmap(page)
    }

    /// Linux's `kunmap`: drops a user of `page`'s persistent mapping (the
    /// entry is reused after the next wrap-around). A low-memory page was
    /// never mapped: `Ok`, nothing done. Process context only, interrupts on.
    pub fn kunmap(&self, page: &Page) -> Result<(), KunmapError> {
        self.process_context()?;
        let c = self.cx.classify(page).ok_or(KunmapError::NotInMemMap)?;
        match c.memory {
            Memory::Low(_) => Ok(()),
            Memory::High(_) => self.table.kunmap_high(&self.cx, c.page, &self.wait),
        }
    }

    /// Linux's `kunmap_high`: [`Pkmap::kunmap`] of a page that must be in
    /// high memory ([`KunmapError::NotHighmem`] otherwise).
    pub fn kunmap_high(&self, page: &Page) -> Result<(), KunmapError> {
        if self.is_lowmem(page) {
            return Err(KunmapError::NotHighmem);
        }
        self.kunmap(page)
    }

    fn is_lowmem(&self, page: &Page) -> bool {
        matches!(
            self.cx.classify(page).map(|c| c.memory),
            Some(Memory::Low(_))
        )
    }

    /// Linux's `page_address`: the direct-map address of a low-memory page;
    /// the persistent kmap address of a high-memory page while it has one;
    /// `None` otherwise (and for a page not of this `mem_map`).
    pub fn page_address(&self, page: &Page) -> Option<VirtAddr> {
        self.cx.mem.page_address(page)
    }

    /// Linux's `kmap_local_page`: maps `page` at this CPU's next fixmap slot
    /// (a low-memory page: its direct-map address, still taking a stack
    /// entry) and disables preemption until [`Pkmap::kunmap_local`]. Any
    /// context, interrupt handlers included. Mappings nest up to
    /// `kmap_per_cpu` deep and are undone in reverse order.
    pub fn kmap_local_page(&self, page: &Page) -> Result<VirtAddr, KmapLocalError> {
        self.local_map(page, false)
    }

    /// Linux's `kunmap_local`: undoes this CPU's most recent
    /// [`Pkmap::kmap_local_page`]; `addr` may point anywhere in the page.
    pub fn kunmap_local(&self, addr: VirtAddr) -> Result<(), KunmapLocalError> {
        self.local.kunmap(&self.cx, addr, false)
    }

    /// Linux 2.6's `kmap_atomic`: [`Pkmap::kmap_local_page`] that also
    /// disables page faults ([`Pkmap::pagefault_disabled`] counts them).
    pub fn kmap_atomic(&self, page: &Page) -> Result<VirtAddr, KmapLocalError> {
        self.local_map(page, true)
    }

    /// Linux 2.6's `kunmap_atomic`: undoes this CPU's most recent
    /// [`Pkmap::kmap_atomic`].
    pub fn kunmap_atomic(&self, addr: VirtAddr) -> Result<(), KunmapLocalError> {
        self.local.kunmap(&self.cx, addr, true)
    }

    /// [`Pkmap::kmap_local_page`], undone when the guard drops.
    pub fn kmap_local_guard(
        &self,
        page: &Page,
    ) -> Result<KmapLocalGuard<'_, P, F, T, C>, KmapLocalError> {
        let va = self.local_map(page, false)?;
        Ok(KmapLocalGuard::new(&self.local, &self.cx, va, false))
    }

    /// [`Pkmap::kmap_atomic`], undone when the guard drops.
    pub fn kmap_atomic_guard(
        &self,
        page: &Page,
    ) -> Result<KmapLocalGuard<'_, P, F, T, C>, KmapLocalError> {
        let va = self.local_map(page, true)?;
        Ok(KmapLocalGuard::new(&self.local, &self.cx, va, true))
    }

    fn local_map(&self, page: &Page, atomic: bool) -> Result<VirtAddr, KmapLocalError> {
        let c = self.cx.classify(page).ok_or(KmapLocalError::NotInMemMap)?;
        self.local.kmap(&self.cx, c.pfn, c.memory, atomic)
    }

    /// Local mappings the calling CPU holds.
    pub fn local_depth(&self) -> usize {
        self.local.depth(&self.cx)
    }

    /// The calling CPU's page-fault-disable count: its `kmap_atomic`
    /// mappings held (Linux's `pagefault_disabled()`). A kernel's page fault
    /// handler refuses to sleep while it is non-zero.
    pub fn pagefault_disabled(&self) -> usize {
        self.local.pagefault_disabled(&self.cx)
    }

    /// The users of pkmap entry `nr` (`pkmap_count[nr] - 1`): `None` for a
    /// free entry, `Some(0)` for one mapped but awaiting the next flush.
    /// Process context.
    pub fn pkmap_users(&self, nr: usize) -> Option<u32> {
        self.table.users(&self.cx, nr)
    }

    /// Runs `f` on `pkmap_count[..LAST_PKMAP]`, under the pkmap lock.
    /// Process context.
    pub fn with_pkmap_count<R>(&self, f: impl FnOnce(&[u32]) -> R) -> R {
        self.table.with_counts(&self.cx, f)
    }

    /// `PKMAP_BASE`.
    pub fn pkmap_base(&self) -> VirtAddr {
        self.cx.pkmap_base
    }

    /// `LAST_PKMAP`.
    pub fn last_pkmap(&self) -> usize {
        self.cx.last_pkmap
    }

    /// The counters.
    pub fn stats(&self) -> PkmapStats {
        let c = &self.table.counters;
        PkmapStats {
            flush_all_zero_runs: c.flush_runs.load(Ordering::Relaxed),
            kernel_flushes: c.kernel_flushes.load(Ordering::Relaxed),
            waits: c.waits.load(Ordering::Relaxed),
            guard_errors: self.local.guard_errors.load(Ordering::Relaxed),
        }
    }

    /// The full consistency check, for tests: every pkmap entry's count
    /// agrees with the page tables and the page descriptors (a free entry is
    /// unmapped; a used one maps a high-memory page that records that
    /// address; every recorded address names a used entry mapping the
    /// page), and the calling CPU's slot stack agrees with its fixmap slots.
    /// Process context.
    pub fn check(&self) -> Result<(), CheckError> {
        self.table.check(&self.cx)?;
        self.local.check(&self.cx)
    }
}

impl<P, F, T, C, W> core::fmt::Debug for Pkmap<'_, P, F, T, C, W>
where
    P: PageTable,
    F: FrameSource,
    T: KernelTlb,
    C: Cpu,
    W: KmapWait,
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pkmap")
            .field("pkmap_base", &self.cx.pkmap_base)
            .field("last_pkmap", &self.cx.last_pkmap)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
