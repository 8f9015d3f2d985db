//! [`Vmalloc`]: the allocator value, its set-up, and the area life cycle
//! every entry point shares — find addresses, map, publish; unpublish,
//! unmap, park for the lazy purge.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use intrusive_collections::UnsafeRef;
use kmm_buddy::Buddy;
use kmm_hal::sync::IrqSpinLock;
use kmm_hal::{
    Cpu, FrameSource, KernelLayout, KernelTables, KernelTlb, PAGE_SIZE, PageFlags, PageTable,
    PhysAddr, TableReclaim, VirtAddr,
};
use kmm_page_frame::MemMap;
use kmm_slab::SlabAllocator;

use crate::VmallocError;
use crate::area::{AreaKind, VmArea};
use crate::free_area::{AllocError, FreeAreas, FreeNode, OwnedNode};
use crate::vmap_area::{Lookup, Space};
use crate::vmap_block::Blocks;

/// Linux's `lazy_max_pages`: 32 MiB of address space per `log2(cpus) + 1`
/// may wait for the purge (capped at an eighth of the range here, so a small
/// vmalloc range still purges before it runs dry).
fn lazy_max_pages(cpus: usize, range_pages: usize) -> usize {
    let log = usize::BITS - cpus.max(1).leading_zeros();
    ((32 << 20) / PAGE_SIZE * log as usize)
        .min(range_pages / 8)
        .max(1)
}

/// The vmalloc allocator: virtually contiguous kernel memory in
/// `[VMALLOC_START, VMALLOC_END)` of a [`KernelLayout`].
///
/// It borrows the SLAB allocator (descriptors and page arrays come from
/// `kmalloc`, pages from its buddy allocator), the kernel page tables
/// ([`KernelTables`]) and a [`KernelTlb`] for the flushes on every CPU.
///
/// # Locking
/// One [`IrqSpinLock`], Linux's `vmap_area_lock`, covers the address space;
/// the page tables have their own IRQ-safe lock. Neither is held across the
/// other or across a kernel-wide flush: an entry point takes the address
/// space lock to find or release a range, drops it, maps or unmaps under the
/// tables' lock, drops that, and flushes with no lock held (the
/// [`KernelTlb`] deadlock rule). Allocating, mapping and unmapping are for
/// process context ([`VmallocError::InInterrupt`] otherwise); `vfree` works
/// in interrupt context too: both locks are IRQ-safe and the page and slab
/// allocators may be called there, and only the purge — a kernel-wide flush
/// that waits for other CPUs — is left for the next process-context call
/// (Linux defers the whole `vfree` instead). Lock order where they nest
/// (freeing descriptors during a purge): address space, then the SLAB
/// allocator's.
pub struct Vmalloc<'a, P: PageTable, F: FrameSource, T: KernelTlb, C: Cpu> {
    pub(crate) slab: &'a SlabAllocator<'a, C>,
    pub(crate) tables: &'a KernelTables<P, F>,
    pub(crate) tlb: T,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) space: IrqSpinLock<Space>,
    pub(crate) blocks: Blocks,
    lazy_max: usize,
    pub(crate) stats: Stats,
}

/// Counters, read with [`Vmalloc::stats`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    purges: AtomicU64,
    flushes: AtomicU64,
    frees: AtomicU64,
    pub(crate) pages: AtomicUsize,
    pub(crate) blocks: AtomicU64,
}

/// What the allocator has done (Linux's `/proc/meminfo` `VmallocUsed` and
/// the purge counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmallocStats {
    /// Live areas.
    pub areas: usize,
    /// Pages mapped by live vmalloc areas (owned by the allocator).
    pub pages: usize,
    /// Pages of address space freed and waiting for the lazy purge.
    pub lazy_pages: usize,
    /// Purges run.
    pub purges: u64,
    /// Kernel-wide TLB flushes made (one per purge that had work).
    pub flushes: u64,
    /// Areas freed or unmapped.
    pub frees: u64,
    /// Per-CPU vmap blocks taken for `vm_map_ram` (each one trip to the
    /// address-space lock).
    pub blocks: u64,
}

impl<'a, P: PageTable, F: FrameSource, T: KernelTlb, C: Cpu> Vmalloc<'a, P, F, T, C> {
    /// The allocator over the vmalloc range of `layout`, with nothing
    /// mapped. Fails with [`VmallocError::OutOfMemory`] if `kmalloc` cannot
    /// give the first free-tree node, [`VmallocError::BadSize`] if the range
    /// is empty.
    ///
    /// The range must be left to this allocator: nothing else maps pages in
    /// it (the page tables refuse to map over a mapping, so a stray mapping
    /// makes calls fail, never corrupts).
    pub fn new<L: KernelLayout + ?Sized>(
        slab: &'a SlabAllocator<'a, C>,
        tables: &'a KernelTables<P, F>,
        tlb: T,
        layout: &L,
    ) -> Result<Self, VmallocError> {
        let (start, end) = (
            layout.vmalloc_start().as_usize(),
            layout.vmalloc_end().as_usize(),
        );
        if end <= start + PAGE_SIZE
            || !start.is_multiple_of(PAGE_SIZE)
            || !end.is_multiple_of(PAGE_SIZE)
        {
            return Err(VmallocError::BadSize);
        }
        let node = alloc_node(slab)?;
        let free = FreeAreas::new(start, end, node).map_err(|(_, node)| {
            free_node(slab, node);
            VmallocError::BadSize
        })?;
        let cpus = slab.buddy().cpu().count();
        let blocks = match Blocks::new(slab, start, end, cpus) {
            Ok(b) => b,
            Err(e) => {
                for n in free.into_nodes() {
                    free_node(slab, n);
                }
                return Err(e);
            }
        };
        Ok(Vmalloc {
            blocks,
            slab,
            tables,
            tlb,
            start,
            end,
            space: IrqSpinLock::new("vmap_area_lock", Space::new(free)),
            lazy_max: lazy_max_pages(cpus, (end - start) / PAGE_SIZE),
            stats: Stats::default(),
        })
    }

    /// The buddy allocator pages come from.
    pub(crate) fn buddy(&self) -> &'a Buddy<'a, C> {
        self.slab.buddy()
    }

    /// `mem_map`.
    pub(crate) fn mem(&self) -> &MemMap<'a> {
        self.buddy().mem()
    }

    pub(crate) fn cpu(&self) -> &C {
        self.buddy().cpu()
    }

    /// True if `addr` lies in the vmalloc range (Linux's `is_vmalloc_addr`).
    pub fn is_vmalloc_addr(&self, addr: VirtAddr) -> bool {
        (self.start..self.end).contains(&addr.as_usize())
    }

    /// The counters.
    pub fn stats(&self) -> VmallocStats {
        let s = self.space.lock_irqsave(self.cpu());
        VmallocStats {
            areas: s.nr_busy,
            pages: self.stats.pages.load(Ordering::Relaxed),
            lazy_pages: s.lazy_pages,
            purges: self.stats.purges.load(Ordering::Relaxed),
            flushes: self.stats.flushes.load(Ordering::Relaxed),
            frees: self.stats.frees.load(Ordering::Relaxed),
            blocks: self.stats.blocks.load(Ordering::Relaxed),
        }
    }

    /// How many pages of freed address space may wait before a purge.
    pub fn lazy_max_pages(&self) -> usize {
        self.lazy_max
    }

    // --- the area life cycle ----------------------------------------------

    /// A descriptor with `span` bytes (guard page included) of addresses,
    /// aligned to `align`, not yet published (Linux's `__get_vm_area_node`).
    /// When no hole fits, the lazily freed addresses are purged and the
    /// search made again.
    pub(crate) fn new_area(
        &self,
        span: usize,
        align: usize,
        kind: AreaKind,
        caller: &'static str,
    ) -> Result<NonNull<VmArea>, VmallocError> {
        self.process_context()?;
        if span > self.end - self.start {
            return Err(VmallocError::BadSize);
        }
        let desc = self
            .slab
            .kmalloc(size_of::<VmArea>(), kmm_buddy::Gfp::KERNEL)
            .map_err(|_| VmallocError::OutOfMemory)?
            .cast::<VmArea>();
        let guard = Unwind::new(self, desc.cast());
        let spare_for_area = alloc_node(self.slab)?;
        let guard = guard.also(spare_for_area);
        let mut split: Option<OwnedNode> = Some(alloc_node(self.slab)?);
        let mut purged = false;
        let addr = loop {
            let got = {
                let mut s = self.space.lock_irqsave(self.cpu());
                s.free.alloc(span, align, self.start, self.end, &mut split)
            };
            match got {
                Ok(a) => {
                    for n in a.released {
                        free_node(self.slab, n);
                    }
                    break a.addr;
                }
                Err(AllocError::NoSpace) if !purged => {
                    purged = true;
                    self.purge();
                }
                Err(e) => {
                    if let Some(n) = split {
                        free_node(self.slab, n);
                    }
                    return Err(match e {
                        AllocError::NoSpace => VmallocError::OutOfAddresses,
                        _ => VmallocError::BadSize,
                    });
                }
            }
        };
        if let Some(n) = split {
            free_node(self.slab, n);
        }
        let spare_for_area = guard.forget();
        // SAFETY: `desc` is a fresh `kmalloc` block of a `VmArea`'s size and
        // alignment (kmalloc aligns to the size class, at least a word).
        unsafe {
            desc.as_ptr().write(VmArea {
                link: Default::default(),
                addr,
                span,
                kind,
                pfns: None,
                nr_pages: 0,
                phys: None,
                caller,
                spare: Some(spare_for_area),
            })
        };
        Ok(desc)
    }

    /// Publishes an area: from now on lookups and frees find it.
    pub(crate) fn publish(&self, area: NonNull<VmArea>) -> VirtAddr {
        // SAFETY: `area` is a descriptor `new_area` initialised and nobody
        // else references; the tree holds it until `unpublish`.
        let r = unsafe { UnsafeRef::from_raw(area.as_ptr()) };
        let addr = r.addr;
        self.space.lock_irqsave(self.cpu()).insert_busy(r);
        VirtAddr::new(addr)
    }

    /// Checks `addr` for a free or unmap call and takes its live area out of
    /// the busy tree if its kind is one of `kinds` (and, with `pages`, if it
    /// maps that many pages: `BadSize` otherwise). Refused in interrupt
    /// context unless the kinds are `vfree`'s.
    pub(crate) fn unpublish(
        &self,
        addr: VirtAddr,
        kinds: &[AreaKind],
        pages: Option<usize>,
    ) -> Result<NonNull<VmArea>, VmallocError> {
        let vfree = kinds
            .iter()
            .all(|k| matches!(k, AreaKind::Vmalloc | AreaKind::User));
        if !vfree {
            self.process_context()?;
        }
        let a = addr.as_usize();
        if !(self.start..self.end).contains(&a) {
            return Err(VmallocError::Foreign);
        }
        if !a.is_multiple_of(PAGE_SIZE) {
            return Err(VmallocError::Misaligned);
        }
        let mut s = self.space.lock_irqsave(self.cpu());
        match s.lookup(a) {
            Lookup::Start(area) if !kinds.contains(&area.kind) => {
                return Err(VmallocError::WrongKind { is: area.kind });
            }
            Lookup::Start(area) if pages.is_some_and(|n| area.size() / PAGE_SIZE != n) => {
                return Err(VmallocError::BadSize);
            }
            Lookup::Start(_) => {}
            Lookup::Interior => return Err(VmallocError::Interior),
            Lookup::None => return Err(VmallocError::NotLive),
        }
        let r = s.remove_busy(a).expect("looked up under the same lock");
        Ok(NonNull::new(UnsafeRef::into_raw(r)).expect("a descriptor is not null"))
    }

    /// Maps `frames` from `addr` on, page by page, under the
    /// tables' lock. On failure everything this call mapped is unmapped
    /// again and the error returned.
    pub(crate) fn map_frames(
        &self,
        addr: usize,
        frames: impl Iterator<Item = PhysAddr>,
        flags: PageFlags,
    ) -> Result<(), VmallocError> {
        let mut t = self.tables.lock(self.cpu());
        let t = &mut *t;
        for (i, pa) in frames.enumerate() {
            let va = VirtAddr::new(addr + i * PAGE_SIZE);
            match t.pt.map(va, pa, flags, &mut t.frames) {
                // Nothing was mapped there: no TLB holds it (x86 caches
                // present translations only).
                Ok(flush) => flush.ignore(),
                Err(e) => {
                    // Pages 0..i were mapped by this call.
                    unmap_pages(&mut t.pt, &mut t.frames, addr, i);
                    return Err(match e {
                        kmm_hal::MapError::OutOfFrames => VmallocError::OutOfMemory,
                        e => VmallocError::Map(e),
                    });
                }
            }
        }
        Ok(())
    }

    /// Unmaps `pages` pages from `addr` (no flush: the addresses go to the
    /// lazy purge).
    pub(crate) fn unmap_range(&self, addr: usize, pages: usize) {
        let mut t = self.tables.lock(self.cpu());
        let t = &mut *t;
        unmap_pages(&mut t.pt, &mut t.frames, addr, pages);
    }

    /// Parks an unpublished, unmapped area for the lazy purge (its page
    /// array already given back), and purges if too much waits.
    pub(crate) fn retire(&self, area: NonNull<VmArea>) {
        self.stats.frees.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as in `publish`: the descriptor is ours, unlinked.
        let r = unsafe { UnsafeRef::from_raw(area.as_ptr()) };
        let waiting = self.space.lock_irqsave(self.cpu()).park(r);
        if waiting > self.lazy_max {
            self.purge();
        }
    }

    /// `Err(InInterrupt)` in interrupt context or with interrupts disabled,
    /// where the calls that may wait (for pages, or for a kernel-wide flush)
    /// must not be made.
    pub(crate) fn process_context(&self) -> Result<(), VmallocError> {
        let cpu = self.cpu();
        if cpu.in_interrupt() || cpu.irqs_disabled() {
            return Err(VmallocError::InInterrupt);
        }
        Ok(())
    }

    /// Gives an area that was never published back at once: its addresses
    /// were never used, but they may have been mapped and unmapped, so they
    /// go through the purge like any other.
    pub(crate) fn discard(&self, area: NonNull<VmArea>) {
        self.retire(area);
    }

    /// Flushes every lazily freed address on every CPU with one kernel-wide
    /// flush, then gives the addresses back to the free tree (Linux's
    /// `__purge_vmap_area_lazy`; `vm_unmap_aliases` calls it too). The
    /// flush is made with no lock held.
    ///
    /// In interrupt context or with interrupts disabled it does nothing (the
    /// flush would wait for other CPUs): the parked addresses wait for the
    /// next call from process context.
    pub fn purge(&self) {
        if self.process_context().is_err() {
            return;
        }
        let taken = self.space.lock_irqsave(self.cpu()).take_parked();
        let Some((mut parked, first, last)) = taken else {
            return;
        };
        self.tlb
            .flush_tlb_kernel_range(VirtAddr::new(first), VirtAddr::new(last));
        self.stats.purges.fetch_add(1, Ordering::Relaxed);
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        let mut s = self.space.lock_irqsave(self.cpu());
        let mut c = parked.front_mut();
        while let Some(r) = c.remove() {
            let p = UnsafeRef::into_raw(r);
            // SAFETY: the area was parked (unpublished, unmapped), every CPU
            // flushed its addresses just above, and its spare node is its own.
            let unused = unsafe { s.release(&mut *p) };
            for n in unused {
                free_node(self.slab, n);
            }
            // The descriptor's page array went back when it was unmapped.
            let _ = self.slab.kfree(p.cast());
        }
    }

    /// Retires the `vm_map_ram` blocks with no live mapping, purges, and
    /// flushes every CPU's TLB (Linux's `vm_unmap_aliases`): afterwards no
    /// CPU holds a translation of an address this allocator unmapped.
    pub fn vm_unmap_aliases(&self) {
        self.retire_idle_blocks();
        self.purge();
        // Pages `vm_unmap_ram` unmapped inside blocks still in use wait for
        // their block's purge: flush them too.
        self.tlb.flush_tlb_all();
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
    }
}

impl<P: PageTable, F: FrameSource, T: KernelTlb, C: Cpu> Drop for Vmalloc<'_, P, F, T, C> {
    /// Purges, then gives the vmap-block tables and the free tree's nodes
    /// back to `kmalloc`. Live areas stay as they are: their pages, page
    /// tables and descriptors are leaked, never freed under a user (a
    /// kernel never drops its vmalloc; tests do, after freeing everything).
    fn drop(&mut self) {
        self.retire_idle_blocks();
        self.purge();
        self.blocks.release_tables(self.slab);
        let space = self.space.get_mut();
        // SAFETY: `free` is taken once, here, and `space` is not used again.
        let free = unsafe { core::mem::ManuallyDrop::take(&mut space.free) };
        for n in free.into_nodes() {
            free_node(self.slab, n);
        }
    }
}

/// Unmaps `pages` pages from `addr`, giving emptied page-table pages back.
fn unmap_pages<P: PageTable, F: FrameSource>(
    pt: &mut P,
    frames: &mut F,
    addr: usize,
    pages: usize,
) {
    for i in 0..pages {
        let va = VirtAddr::new(addr + i * PAGE_SIZE);
        match pt.unmap(va, TableReclaim::Free, frames) {
            // The addresses are parked until one kernel-wide flush.
            Ok((_, flush)) => flush.ignore(),
            Err(e) => debug_assert!(false, "vmalloc: unmap of a page it mapped: {e}"),
        }
    }
}

/// A `kmalloc`ed free-tree node.
pub(crate) fn alloc_node<C: Cpu>(slab: &SlabAllocator<'_, C>) -> Result<OwnedNode, VmallocError> {
    let p = slab
        .kmalloc(size_of::<FreeNode>(), kmm_buddy::Gfp::KERNEL)
        .map_err(|_| VmallocError::OutOfMemory)?
        .cast::<FreeNode>();
    // SAFETY: a fresh `kmalloc` block of a node's size, aligned to its size
    // class (at least a word, a node's alignment); initialised here, and
    // reached by nothing else until `free_node` gives it back.
    unsafe {
        p.as_ptr().write(FreeNode::new());
        Ok(OwnedNode::from_raw(p))
    }
}

/// Gives a free-tree node back to `kmalloc`.
pub(crate) fn free_node<C: Cpu>(slab: &SlabAllocator<'_, C>, n: OwnedNode) {
    let r = slab.kfree(n.into_raw().as_ptr().cast());
    debug_assert!(r.is_ok(), "vmalloc: a node it allocated: {r:?}");
}

/// Gives back what `new_area` took if it fails midway: the descriptor and
/// the area's own free-tree node.
struct Unwind<'v, 'a, P: PageTable, F: FrameSource, T: KernelTlb, C: Cpu> {
    v: &'v Vmalloc<'a, P, F, T, C>,
    desc: Option<NonNull<u8>>,
    node: Option<OwnedNode>,
}

impl<'v, 'a, P: PageTable, F: FrameSource, T: KernelTlb, C: Cpu> Unwind<'v, 'a, P, F, T, C> {
    fn new(v: &'v Vmalloc<'a, P, F, T, C>, desc: NonNull<u8>) -> Self {
        Unwind {
            v,
            desc: Some(desc),
            node: None,
        }
    }
    fn also(mut self, node: OwnedNode) -> Self {
        self.node = Some(node);
        self
    }
    /// Success: keeps the descriptor, hands the node over.
    fn forget(mut self) -> OwnedNode {
        self.desc = None;
        self.node.take().expect("set by `also`")
    }
}

impl<P: PageTable, F: FrameSource, T: KernelTlb, C: Cpu> Drop for Unwind<'_, '_, P, F, T, C> {
    fn drop(&mut self) {
        if let Some(d) = self.desc {
            let _ = self.v.slab.kfree(d.as_ptr());
        }
        if let Some(n) = self.node.take() {
            free_node(self.v.slab, n);
        }
    }
}
