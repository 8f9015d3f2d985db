//! [`Zone`]: one zone's free areas (the buddy lists), watermarks and counters.

use core::sync::atomic::{AtomicUsize, Ordering};

use core::ops::DerefMut;

use intrusive_collections::LinkedList;
use kmm_hal::sync::{IrqSaveGuard, IrqSpinLock, SpinGuard};
use kmm_hal::{Cpu, IrqGuard, Pfn};
use kmm_page_frame::{FreeListAdapter, MemMap, Page, PgFlags, ZoneSpan, ZoneType};

use crate::pcp::{PcpLists, PerCpuLists};
use crate::{MAX_ORDER, Watermark, WatermarkCheck};

/// The buddy lists of a zone (Linux's `free_area[MAX_ORDER]`), kept under the
/// zone lock: reached only through a [`LockedZone`].
pub(crate) struct FreeArea<'a> {
    lists: [LinkedList<FreeListAdapter<'a>>; MAX_ORDER],
}

impl<'a> FreeArea<'a> {
    fn new() -> Self {
        FreeArea {
            // SAFETY: the owner contract of `FreeListAdapter::new`: these lists
            // hold only pages this zone holds free, flagged BUDDY while linked
            // (`rmqueue` and `free_one`), touched only under the zone lock
            // (`FreeArea` is reached only through `LockedZone`).
            lists: core::array::from_fn(|_| LinkedList::new(unsafe { FreeListAdapter::new() })),
        }
    }
}

/// The counters the zone lock protects (written only through a
/// [`LockedZone`], read by anyone).
#[derive(Clone, Copy)]
enum Counter {
    /// `Zone::free`.
    Free,
    /// `Zone::nr_free[order]`.
    NrFree(usize),
}

/// A zone with its lock held (Linux's `spin_lock_irqsave(&zone->lock)`): the
/// only way to the free lists and to the writers of the counters the lock
/// protects (`free`, `nr_free`), so nothing can change them unlocked or with
/// another zone's lock. `G` is the lock's guard: a [`SpinGuard`] under the
/// caller's [`IrqGuard`] ([`Zone::lock`]), or an [`IrqSaveGuard`] that also
/// holds interrupts off ([`Zone::lock_irqsave`]).
pub(crate) struct LockedZone<'z, 'a, G = SpinGuard<'z, FreeArea<'a>>> {
    zone: &'z Zone<'a>,
    area: G,
}

/// One zone of one node.
pub struct Zone<'a> {
    kind: ZoneType,
    node: usize,
    span: ZoneSpan,
    /// Pages handed to the buddy allocator at boot (Linux's `managed_pages`).
    managed: AtomicUsize,
    /// Pages in the free lists (Linux's `NR_FREE_PAGES`; per-CPU pages are not
    /// counted).
    free: AtomicUsize,
    /// Free blocks per order (read without the lock by the watermark check).
    nr_free: [AtomicUsize; MAX_ORDER],
    /// min, low, high.
    wmark: [AtomicUsize; 3],
    /// Pages kept back from allocations whose highest zone is above this one
    /// (Linux's `lowmem_reserve`), indexed by that highest zone.
    lowmem_reserve: [AtomicUsize; ZoneType::COUNT],
    /// Times an allocation found the zone below its low watermark.
    low_events: AtomicUsize,
    /// The zone lock and the free lists it protects. IRQ-safe: atomic
    /// allocations take it from interrupt handlers.
    area: IrqSpinLock<FreeArea<'a>>,
    /// The per-CPU order-0 lists, one slot per CPU.
    pub(crate) pcp: PcpLists<'a>,
}

impl<'a> Zone<'a> {
    pub(crate) fn new(kind: ZoneType, node: usize, span: ZoneSpan, pcp: PcpLists<'a>) -> Self {
        Zone {
            kind,
            node,
            span,
            managed: AtomicUsize::new(0),
            free: AtomicUsize::new(0),
            nr_free: core::array::from_fn(|_| AtomicUsize::new(0)),
            wmark: core::array::from_fn(|_| AtomicUsize::new(0)),
            lowmem_reserve: core::array::from_fn(|_| AtomicUsize::new(0)),
            low_events: AtomicUsize::new(0),
            area: IrqSpinLock::new("zone lock", FreeArea::new()),
            pcp,
        }
    }

    /// The zone type.
    #[inline]
    pub fn kind(&self) -> ZoneType {
        self.kind
    }

    /// The node.
    #[inline]
    pub fn node(&self) -> usize {
        self.node
    }

    /// The frames the zone spans.
    #[inline]
    pub fn span(&self) -> ZoneSpan {
        self.span
    }

    /// Pages given to the allocator.
    #[inline]
    pub fn managed(&self) -> usize {
        self.managed.load(Ordering::Relaxed)
    }

    /// Pages in the free lists (not counting per-CPU lists).
    #[inline]
    pub fn free_pages(&self) -> usize {
        self.free.load(Ordering::Relaxed)
    }

    /// Free blocks of `order` in the free lists.
    #[inline]
    pub fn nr_free(&self, order: usize) -> usize {
        self.nr_free
            .get(order)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// A watermark, in pages.
    #[inline]
    pub fn watermark(&self, w: Watermark) -> usize {
        self.wmark[w as usize].load(Ordering::Relaxed)
    }

    /// Pages kept back from allocations that may also use `classzone` (a higher
    /// zone).
    #[inline]
    pub fn lowmem_reserve(&self, classzone: ZoneType) -> usize {
        self.lowmem_reserve[classzone as usize].load(Ordering::Relaxed)
    }

    /// Times an allocation found the zone below its low watermark.
    pub fn low_events(&self) -> usize {
        self.low_events.load(Ordering::Relaxed)
    }

    /// True if some CPU holds the zone lock (a racy snapshot, for diagnostics
    /// and tests: a hook can check that it runs with the lock free).
    pub fn is_locked(&self) -> bool {
        self.area.is_locked()
    }

    /// Pages on per-CPU lists, all CPUs (racy snapshot unless the lists are
    /// quiet).
    pub fn pcp_pages(&self) -> usize {
        self.pcp().iter().map(|p| p.count()).sum()
    }

    /// The per-CPU lists (what anyone may read of them), indexed by CPU id.
    pub fn pcp(&self) -> PerCpuLists<'a> {
        PerCpuLists::new(self.pcp)
    }

    pub(crate) fn set_watermarks(&self, min: usize) {
        self.wmark[0].store(min, Ordering::Relaxed);
        self.wmark[1].store(min + min / 4, Ordering::Relaxed);
        self.wmark[2].store(min + min / 2, Ordering::Relaxed);
    }

    pub(crate) fn set_lowmem_reserve(&self, classzone: ZoneType, pages: usize) {
        self.lowmem_reserve[classzone as usize].store(pages, Ordering::Relaxed);
    }

    pub(crate) fn add_managed(&self, n: usize) {
        self.managed.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn note_low(&self) {
        self.low_events.fetch_add(1, Ordering::Relaxed);
    }

    /// Linux's `zone_watermark_ok`: would taking a block of `order` leave the
    /// zone above the watermark `check.mark` (halved for high-priority
    /// callers, `check.high`; cut by a quarter for atomic ones,
    /// `check.harder`) plus the lowmem reserve against `check.classzone`,
    /// counting at each order only the blocks big enough to matter?
    #[inline]
    pub fn watermark_ok(&self, order: usize, check: WatermarkCheck) -> bool {
        let mut min = self.watermark(check.mark) as isize;
        if check.high {
            min -= min / 2;
        }
        if check.harder {
            min -= min / 4;
        }
        let mut free = self.free_pages() as isize - (1isize << order) + 1;
        if free <= min + self.lowmem_reserve(check.classzone) as isize {
            return false;
        }
        for o in 0..order {
            free -= (self.nr_free(o) as isize) << o;
            min >>= 1;
            if free <= min {
                return false;
            }
        }
        true
    }

    /// Takes the zone lock; `irq` proves interrupts are off on this CPU and
    /// keeps them off while the lock is held.
    #[inline]
    #[track_caller]
    pub(crate) fn lock<'z, C: Cpu>(&'z self, irq: &'z IrqGuard<'_, C>) -> LockedZone<'z, 'a> {
        LockedZone {
            zone: self,
            area: self.area.lock(irq),
        }
    }

    /// Disables interrupts on this CPU and takes the zone lock; both are
    /// undone when the returned guard drops.
    #[inline]
    #[track_caller]
    pub(crate) fn lock_irqsave<'z, C: Cpu>(
        &'z self,
        cpu: &'z C,
    ) -> LockedZone<'z, 'a, IrqSaveGuard<'z, FreeArea<'a>, C>> {
        LockedZone {
            zone: self,
            area: self.area.lock_irqsave(cpu),
        }
    }
}

impl<'a, G: DerefMut<Target = FreeArea<'a>>> LockedZone<'_, 'a, G> {
    /// Adds to a counter that only the zone-lock holder writes: a plain load
    /// and store, no locked instruction (readers without the lock see either
    /// value). `&mut self` is the proof that the lock is held.
    #[inline]
    fn add(&mut self, c: Counter, n: usize) {
        let c = self.counter(c);
        c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    /// Subtracts from a counter that only the zone-lock holder writes.
    #[inline]
    fn sub(&mut self, c: Counter, n: usize) {
        let c = self.counter(c);
        c.store(c.load(Ordering::Relaxed) - n, Ordering::Relaxed);
    }

    #[inline]
    fn counter(&self, c: Counter) -> &AtomicUsize {
        match c {
            Counter::Free => &self.zone.free,
            Counter::NrFree(order) => &self.zone.nr_free[order],
        }
    }

    /// Puts a free block of `order` headed by `page` on its list.
    #[inline]
    fn push(&mut self, page: &'a Page, order: usize) {
        // SAFETY: the owner contract: this zone holds the block free (its
        // caller took it off every list) and the zone lock is held; the flag
        // and the order make the free path refuse it while it is linked.
        unsafe {
            page.set_private(order);
            page.insert(PgFlags::BUDDY);
        }
        self.area.lists[order].push_front(page);
        self.add(Counter::NrFree(order), 1);
    }

    /// Takes a block of `order` from the free lists, splitting a larger one if
    /// needed (Linux's `__rmqueue` and `expand`).
    pub(crate) fn rmqueue(&mut self, mem: &MemMap<'a>, order: usize) -> Option<&'a Page> {
        for current in order..MAX_ORDER {
            let Some(page) = self.area.lists[current].pop_front() else {
                continue;
            };
            self.sub(Counter::NrFree(current), 1);
            // SAFETY: the owner contract: the page just left this zone's free
            // list under the zone lock; the caller hands it out or relists it.
            unsafe { page.remove(PgFlags::BUDDY) };
            let pfn = mem
                .page_to_pfn(page)
                .expect("free-list page is in mem_map")
                .as_usize();
            // Split: hand the upper halves back, largest first.
            let mut size = 1usize << current;
            let mut o = current;
            while o > order {
                o -= 1;
                size >>= 1;
                let half = mem
                    .pfn_to_page(Pfn::new(pfn + size))
                    .expect("a free block lies in mem_map");
                self.push(half, o);
            }
            self.sub(Counter::Free, 1 << order);
            return Some(page);
        }
        None
    }

    /// Takes order-0 pages for a per-CPU refill that still needs up to
    /// `2^max_order` of them: the block at the smallest non-empty order,
    /// whole if it is no larger than that (its frame and order), else split
    /// down to one page as [`LockedZone::rmqueue`] does (order 0). Either
    /// way the zone ends as `2^order` calls of `rmqueue(mem, 0)` would leave
    /// it, and the pages `pfn..pfn + 2^order` are the ones those calls
    /// would return, in that order: each call takes the smallest block,
    /// hands out its first page and lists the upper halves, which the next
    /// calls take first, from the smallest up. Taking the block whole saves
    /// those pushes and pops. The pages are on no list; the head's `BUDDY`
    /// flag and order are cleared (the other pages of a free block carry
    /// neither).
    pub(crate) fn rmqueue_run(
        &mut self,
        mem: &MemMap<'a>,
        max_order: usize,
    ) -> Option<(usize, usize)> {
        let current = (0..MAX_ORDER).find(|&o| !self.area.lists[o].is_empty())?;
        if current > max_order {
            let page = self.rmqueue(mem, 0)?;
            let pfn = mem.page_to_pfn(page).expect("free-list page is in mem_map");
            return Some((pfn.as_usize(), 0));
        }
        let page = self.area.lists[current]
            .pop_front()
            .expect("the list was not empty");
        self.sub(Counter::NrFree(current), 1);
        // SAFETY: the owner contract: the block just left this zone's free
        // list under the zone lock; the caller hands its pages out.
        unsafe {
            page.remove(PgFlags::BUDDY);
            page.set_private(0);
        }
        self.sub(Counter::Free, 1 << current);
        let pfn = mem
            .page_to_pfn(page)
            .expect("free-list page is in mem_map")
            .as_usize();
        Some((pfn, current))
    }

    /// Returns a block of `order` at `pfn` to the free lists, merging it with its
    /// buddy at `pfn ^ (1 << order)` for as long as that buddy is free, of the
    /// same order and in this zone (Linux's `__free_one_page`). The block's
    /// pages must not be on any list.
    pub(crate) fn free_one(&mut self, mem: &MemMap<'a>, pfn: usize, order: usize) {
        let mut pfn = pfn;
        let mut order = order;
        self.add(Counter::Free, 1 << order);
        while order < MAX_ORDER - 1 {
            let buddy_pfn = pfn ^ (1 << order);
            if !self.zone.span.contains(buddy_pfn as u64) {
                break;
            }
            let Ok(buddy) = mem.pfn_to_page(Pfn::new(buddy_pfn)) else {
                break;
            };
            if !buddy.test(PgFlags::BUDDY) || buddy.private() != order {
                break;
            }
            // SAFETY: a page flagged BUDDY in this zone is linked on this zone's
            // free list of its order (`push` is the only place that sets the
            // flag), whose lock `self` holds.
            let mut cursor = unsafe { self.area.lists[order].cursor_mut_from_ptr(buddy) };
            cursor.remove();
            self.sub(Counter::NrFree(order), 1);
            // SAFETY: the owner contract: the buddy just left this zone's free
            // list under the zone lock and is merged into the block.
            unsafe {
                buddy.remove(PgFlags::BUDDY);
                buddy.set_private(0);
            }
            pfn &= buddy_pfn;
            order += 1;
        }
        let head = mem
            .pfn_to_page(Pfn::new(pfn))
            .expect("block lies in mem_map");
        self.push(head, order);
    }
}

impl core::fmt::Debug for Zone<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Zone")
            .field("node", &self.node)
            .field("kind", &self.kind)
            .field("span", &self.span)
            .field("managed", &self.managed())
            .field("free", &self.free_pages())
            .finish()
    }
}
