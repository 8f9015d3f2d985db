//! The free paths: every argument checked in O(1) before anything changes.

use core::sync::atomic::Ordering;

use kmm_hal::{Cpu, IrqGuard, PAGE_SIZE, VirtAddr};
use kmm_page_frame::{Page, PgFlags};

use crate::buddy::{Buddy, Freed};
use crate::pcp::{Pcp, PerCpuPages};
use crate::zone::Zone;
use crate::{FreeError, MAX_ORDER};

/// The flags that decide a free: an allocated head that is on no list has
/// HEAD alone. LINKED is set by `PageAdapter` lists, whose owner contract
/// keeps every other list's pages flagged BUDDY or PCP. (The bulk free tests
/// the same mask.)
pub(crate) const STATE: PgFlags = PgFlags::RESERVED
    .union(PgFlags::BUDDY)
    .union(PgFlags::PCP)
    .union(PgFlags::HEAD)
    .union(PgFlags::SLAB)
    .union(PgFlags::LINKED)
    .union(PgFlags::KMALLOC)
    .union(PgFlags::VMALLOC);

/// Which end of the per-CPU list a freed order-0 page goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ListEnd {
    /// The front: likely still in the CPU cache, handed out first.
    Hot,
    /// The back (Linux's `free_cold_page`).
    Cold,
}

/// A free that passed `check_free`: the block's head with the allocator's
/// lifetime, its frame and its zone.
pub(crate) struct Checked<'a> {
    pub(crate) zone: &'a Zone<'a>,
    pub(crate) page: &'a Page,
    pub(crate) pfn: usize,
}

impl<'a, C: Cpu> Buddy<'a, C> {
    /// Takes another reference to an allocated page (Linux's `get_page`);
    /// `false` if the page is free or reserved.
    pub fn get_page(&self, page: &Page) -> bool {
        !page.test(PgFlags::RESERVED) && page.get()
    }

    /// Drops a reference to the block of `2^order` frames headed by `page`, and
    /// frees it if that was the last (Linux's `__free_pages`).
    ///
    /// Refused with a [`FreeError`], changing nothing, if `page` is not a
    /// descriptor of this allocator, lies in no zone, is reserved, is misaligned
    /// for `order`, is already free, does not head an allocated block, heads
    /// one of another order, belongs to the SLAB allocator (a slab page, or a
    /// block `kmalloc` handed out: [`FreeError::Slab`], [`FreeError::Kmalloc`];
    /// a page of a live vmalloc area: [`FreeError::Vmalloc`]),
    /// or is still on a list of its owner's ([`FreeError::Linked`]).
    pub fn free_pages_page(&self, page: &Page, order: usize) -> Result<Freed, FreeError> {
        self.put_block(page, order, ListEnd::Hot)
    }

    /// Like [`Buddy::free_pages_page`] for one frame whose contents are no
    /// longer in the CPU cache: it goes to the cold end of the per-CPU list
    /// (Linux's `free_cold_page`).
    pub fn free_cold_page(&self, page: &Page) -> Result<Freed, FreeError> {
        self.put_block(page, 0, ListEnd::Cold)
    }

    #[inline]
    fn put_block(&self, page: &Page, order: usize, end: ListEnd) -> Result<Freed, FreeError> {
        let block = self.check_free(page, order)?;
        // SAFETY: the caller of a free gives up the reference it holds on an
        // allocated head (`check_free`); a count already at zero is refused.
        match unsafe { block.page.put_testzero() } {
            None => return Err(FreeError::DoubleFree),
            Some(false) => return Ok(Freed::StillReferenced),
            Some(true) => {}
        }
        self.free_block(block, order, end);
        Ok(Freed::Released)
    }

    /// Frees the block at direct-map address `addr` (Linux's `free_pages`).
    pub fn free_pages(&self, addr: VirtAddr, order: usize) -> Result<Freed, FreeError> {
        if !addr.is_aligned(PAGE_SIZE) {
            return Err(FreeError::Misaligned);
        }
        let page = self
            .mem
            .virt_to_page(addr)
            .map_err(|_| FreeError::Foreign)?;
        self.free_pages_page(page, order)
    }

    /// Checks a free in O(1): the zone and frame of a valid allocated head.
    /// The common case costs one range check for the descriptor, two for the
    /// zone, and one mask test of the flags with the order (a page on an
    /// owner's list is one more bit of the mask, [`PgFlags::LINKED`]); a
    /// refusal is classified out of line.
    #[inline]
    pub(crate) fn check_free(&self, page: &Page, order: usize) -> Result<Checked<'a>, FreeError> {
        if order >= MAX_ORDER {
            return Err(FreeError::OrderTooLarge);
        }
        // The descriptor in mem_map (the same object, with the allocator's
        // lifetime), or a refusal if `page` is not one of ours.
        let (pfn, page) = self.mem.own(page).map_err(|_| FreeError::Foreign)?;
        let pfn = pfn.as_usize();
        let zone = self
            .zones
            .get(page.zone_index())
            .ok_or(FreeError::NotInZone)?;
        // Inside the zone, end included: one subtraction and one compare (a
        // frame below the span wraps to a huge offset).
        let span = zone.span();
        if (pfn as u64).wrapping_sub(span.start_pfn) + (1 << order) > span.spanned {
            return Err(FreeError::NotInZone);
        }
        let aligned = pfn & ((1 << order) - 1) == 0;
        if !aligned || page.flags() & STATE != PgFlags::HEAD || page.private() != order {
            return Err(Self::refuse_free(page, aligned, order));
        }
        Ok(Checked { zone, page, pfn })
    }

    /// Why a free that failed the fast test in `check_free` is refused.
    #[cold]
    #[inline(never)]
    fn refuse_free(page: &Page, aligned: bool, order: usize) -> FreeError {
        let flags = page.flags();
        if !aligned {
            FreeError::Misaligned
        } else if flags.contains(PgFlags::RESERVED) {
            FreeError::Reserved
        } else if flags.intersects(PgFlags::BUDDY | PgFlags::PCP) {
            FreeError::DoubleFree
        } else if flags.contains(PgFlags::SLAB) {
            FreeError::Slab
        } else if flags.contains(PgFlags::KMALLOC) {
            // Any frame of a kmalloc run (only its head has HEAD).
            FreeError::Kmalloc
        } else if !flags.contains(PgFlags::HEAD) {
            FreeError::NotAllocated
        } else if flags.contains(PgFlags::LINKED) {
            FreeError::Linked
        } else if flags.contains(PgFlags::VMALLOC) {
            FreeError::Vmalloc
        } else {
            debug_assert_ne!(page.private(), order);
            FreeError::WrongOrder {
                allocated: page.private(),
            }
        }
    }

    /// Gives a block whose last reference went back: order 0 to this CPU's list
    /// (spilling a batch to the zone above `high`), larger orders — and order
    /// 0 when this CPU's list is busy (a re-entry) — to the zone.
    #[inline]
    fn free_block(&self, block: Checked<'a>, order: usize, end: ListEnd) {
        let Checked { zone, page, pfn } = block;
        let irq = self.cpu.irq_guard();
        let push = |p: &mut Pcp<'a>, s: &PerCpuPages| {
            // `private` is already 0: the order, checked.
            // SAFETY: the owner contract: the last reference went, so the
            // allocator owns the page; it goes on this CPU's list, flagged PCP
            // as `FreeListAdapter` asks.
            unsafe { page.replace_flags(PgFlags::HIGHMEM, PgFlags::PCP) };
            if end == ListEnd::Cold {
                p.list.push_back(page);
            } else {
                p.list.push_front(page);
            }
            s.add(p, 1);
            if s.drain.load(Ordering::Relaxed) || s.count() >= s.high {
                self.trim_pcp(zone, s, p, &irq);
            }
        };
        if order == 0
            && !self.bypass_pcp
            // SAFETY: (`with_unchecked`) every user of a zone's per-CPU lists
            // pins with an IRQ guard (see `alloc_fast`) and calls nothing with
            // the list held that could reach it again: `push` pushes and may
            // spill to the zone (`trim_pcp`: the zone lock, no hook, no
            // allocation, no interrupt point).
            && unsafe { zone.pcp.with_unchecked(&irq, push) }.is_some()
        {
            return;
        }
        // SAFETY: the owner contract: the last reference went, so the
        // allocator owns the block; `free_one` lists it under the lock.
        unsafe {
            page.set_private(0);
            page.replace_flags(PgFlags::HIGHMEM, PgFlags::empty());
        }
        zone.lock(&irq).free_one(&self.mem, pfn, order);
    }

    /// A free left this CPU's list above `high`, or another CPU asked for a
    /// drain: drain it, or spill a batch to the zone. Out of line, so the
    /// free fast path keeps its registers.
    #[cold]
    #[inline(never)]
    fn trim_pcp(
        &self,
        zone: &'a Zone<'a>,
        s: &PerCpuPages,
        p: &mut Pcp<'a>,
        irq: &IrqGuard<'_, C>,
    ) {
        if s.drain.load(Ordering::Relaxed) {
            self.drain_pcp(zone, s, p, irq);
        } else {
            let n = p.spill_count(s.high, s.batch);
            self.spill(zone, s, p, n, irq);
        }
    }
}
