//! The allocation paths: zonelists, watermarks, the per-CPU fast path.

use core::sync::atomic::Ordering;

use kmm_hal::{Cpu, IrqGuard, PAGE_SIZE, VirtAddr};
use kmm_page_frame::{Page, PgFlags, ZoneType};

use crate::buddy::Buddy;
use crate::pcp::{Pcp, PerCpuPages};
use crate::zone::Zone;
use crate::{Gfp, MAX_ORDER, Watermark, WatermarkCheck};

impl<'a, C: Cpu> Buddy<'a, C> {
    /// Allocates `2^order` contiguous frames (Linux's `alloc_pages`), from the
    /// zones `gfp` allows, the calling CPU's node first. Returns the head page
    /// with reference count 1, or `None` (never panics) when no allowed zone can
    /// give a block without going below its watermark.
    #[inline]
    pub fn alloc_pages(&self, gfp: Gfp, order: usize) -> Option<&'a Page> {
        if order == 0
            && !self.bypass_pcp
            && let Some(p) = self.alloc_fast(gfp)
        {
            return Some(p);
        }
        let node = self.cpu_node();
        self.alloc_pages_node(node, gfp, order)
    }

    /// The order-0 fast path: the first zone of the CPU's zonelist, above its
    /// low watermark, through this CPU's list. `None` sends the caller down the
    /// full path (which also handles every failure, and a list that is busy:
    /// a re-entry on this CPU).
    #[inline]
    fn alloc_fast(&self, gfp: Gfp) -> Option<&'a Page> {
        if gfp.contains(Gfp::ZERO) {
            return None;
        }
        let class = gfp.zone();
        let page = {
            let irq = self.cpu.irq_guard();
            let node = if self.numa {
                usize::from(*self.cpu_nodes.get(self.cpu.id())?)
            } else {
                0
            };
            let zl = self.zonelists[node][class as usize].as_slice();
            let z = &self.zones[usize::from(*zl.first()?)];
            // SAFETY: (`with_unchecked`) every user of a zone's per-CPU lists
            // pins with an IRQ guard (this path, `free_block`, `drain_local`;
            // `drain_offline_cpu` only for a CPU that is not running) and
            // calls nothing with the list held that could reach it again (no
            // hook, no allocation, no interrupt point: this closure reads the
            // watermarks and pops, and `refill_fast` takes the zone lock and
            // moves pages from the zone, as the free path's spill does).
            unsafe {
                z.pcp.with_unchecked(&irq, |p, s| {
                    if s.drain.load(Ordering::Relaxed) {
                        return None;
                    }
                    // An empty list is refilled out of line. Pages on the list
                    // are already out of the zone's free count; the watermark
                    // check only matters when the zone is low — leave that case
                    // to the full path.
                    if p.list.is_empty() {
                        return self.refill_fast(z, s, p, gfp, &irq, &zl[1..]);
                    }
                    if !z.watermark_ok(0, WatermarkCheck::new(Watermark::Low, class)) {
                        return self.alloc_next_zones(gfp, &irq, &zl[1..]);
                    }
                    let page = if gfp.contains(Gfp::COLD) {
                        p.list.pop_back()
                    } else {
                        p.list.pop_front()
                    };
                    s.sub(p, 1);
                    page
                })
            }??
        };
        self.prep_new_page(page, 0, gfp, false);
        Some(page)
    }

    /// The fast path found this CPU's list of the zonelist's first zone `z`
    /// empty: refill it from the zone and take a page, as the full path's
    /// first pass would (the low watermark, then `rmqueue`), without its
    /// set-up; if `z` is below its low watermark or empty, go on down the
    /// zonelist (`rest`, [`Buddy::alloc_next_zones`]). `None` sends the
    /// caller down the full path. Out of line, so the fast path keeps its
    /// registers.
    #[cold]
    #[inline(never)]
    fn refill_fast(
        &self,
        z: &'a Zone<'a>,
        s: &PerCpuPages,
        p: &mut Pcp<'a>,
        gfp: Gfp,
        irq: &IrqGuard<'_, C>,
        rest: &[u8],
    ) -> Option<&'a Page> {
        if z.watermark_ok(0, WatermarkCheck::new(Watermark::Low, gfp.zone())) {
            self.refill_pcp(z, s, p, irq);
            if let Some(page) = Self::pop_pcp(s, p, gfp) {
                return Some(page);
            }
        }
        self.alloc_next_zones(gfp, irq, rest)
    }

    /// The rest of the fast path's pass over the zonelist, after its first
    /// zone was below its low watermark or empty: each zone of `rest` above
    /// its low watermark gives a page through this CPU's list, refilled if
    /// empty, as in the full path's first pass (Linux 2.6's first
    /// `get_page_from_freelist`). `None` sends the caller down the full path
    /// (every zone low or empty, or a drain requested on one of them). The
    /// caller may hold the first zone's list: these are other zones' lists.
    #[cold]
    #[inline(never)]
    fn alloc_next_zones(&self, gfp: Gfp, irq: &IrqGuard<'_, C>, rest: &[u8]) -> Option<&'a Page> {
        let low = WatermarkCheck::new(Watermark::Low, gfp.zone());
        for &i in rest {
            let z = &self.zones[usize::from(i)];
            // SAFETY: (`with_unchecked`) as in `alloc_fast`: this is another
            // zone's list (the caller holds the first zone's), and the
            // closure reads the watermarks, refills and pops.
            let got = unsafe {
                z.pcp.with_unchecked(irq, |p, s| {
                    if s.drain.load(Ordering::Relaxed) {
                        return Err(());
                    }
                    if !z.watermark_ok(0, low) {
                        return Ok(None);
                    }
                    if p.list.is_empty() {
                        self.refill_pcp(z, s, p, irq);
                    }
                    Ok(Self::pop_pcp(s, p, gfp))
                })
            };
            match got {
                Some(Ok(Some(page))) => return Some(page),
                Some(Ok(None)) => {}
                _ => return None,
            }
        }
        None
    }

    /// Refills this CPU's list from zone `z` (Linux's `rmqueue_bulk` from
    /// `buffered_rmqueue`): [`Buddy::rmqueue_bulk`] of a batch that grows
    /// over a run of refills ([`Pcp::refill_count`]). The caller holds the
    /// list (`p`, with its shared part `s`) with interrupts off (`irq`).
    fn refill_pcp(&self, z: &'a Zone<'a>, s: &PerCpuPages, p: &mut Pcp<'a>, irq: &IrqGuard<'_, C>) {
        let n = p.refill_count(s.count(), s.high, s.batch);
        self.rmqueue_bulk(z, s, p, n, irq);
    }

    /// Takes a page from this CPU's list: the hot end, or the cold end for
    /// `Gfp::COLD`.
    #[inline]
    fn pop_pcp(s: &PerCpuPages, p: &mut Pcp<'a>, gfp: Gfp) -> Option<&'a Page> {
        let page = if gfp.contains(Gfp::COLD) {
            p.list.pop_back()
        } else {
            p.list.pop_front()
        }?;
        s.sub(p, 1);
        Some(page)
    }

    /// [`Buddy::alloc_pages`] with the zonelist of `node` (its zones first, then
    /// the other nodes in turn).
    ///
    /// The slow path: it may call the `on_low` hook and drain the per-CPU
    /// lists, with no lock held and no per-CPU list borrowed.
    pub fn alloc_pages_node(&self, node: usize, gfp: Gfp, order: usize) -> Option<&'a Page> {
        self.cpu.interrupt_point();
        if order >= MAX_ORDER {
            return None;
        }
        let node = if node < self.mem.nr_node_ids() {
            node
        } else {
            0
        };
        let class = gfp.zone();
        // Pass 1: stay above the low watermark.
        let low = WatermarkCheck::new(Watermark::Low, class);
        if let Some(p) = self.get_page_from_freelist(node, gfp, order, low) {
            return Some(p);
        }
        // Below low: wake reclaim, then dip to min (further for atomic and
        // high-priority callers, as Linux's ALLOC_HARDER and ALLOC_HIGH). The
        // hook runs with no zone lock held and no per-CPU list borrowed.
        for z in self.zonelist(node, class) {
            z.note_low();
            if let Some(hook) = self.on_low {
                hook(z);
            }
        }
        let min = WatermarkCheck {
            mark: Watermark::Min,
            high: gfp.contains(Gfp::HIGH),
            harder: !gfp.contains(Gfp::WAIT),
            classzone: class,
        };
        if let Some(p) = self.get_page_from_freelist(node, gfp, order, min) {
            return Some(p);
        }
        // Pages may sit on per-CPU lists: drain them and try once more. Only
        // an allocation that may wait sends a cross-CPU call (and only where
        // the deadlock rule allows one); an atomic one asks the other CPUs
        // to drain at their next allocator call.
        if gfp.contains(Gfp::WAIT) {
            self.drain_all_pages();
        } else {
            self.request_drains();
        }
        if let Some(p) = self.get_page_from_freelist(node, gfp, order, min) {
            return Some(p);
        }
        if !gfp.contains(Gfp::NOWARN) {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        None
    }

    /// The address of `2^order` fresh low-memory frames (Linux's
    /// `__get_free_pages`); `Gfp::HIGHMEM` is ignored, since high memory has no
    /// permanent address.
    pub fn get_free_pages(&self, gfp: Gfp, order: usize) -> Option<VirtAddr> {
        let page = self.alloc_pages(gfp.difference(Gfp::HIGHMEM), order)?;
        self.mem.page_address(page)
    }

    /// The address of one zeroed low-memory frame (Linux's `get_zeroed_page`).
    pub fn get_zeroed_page(&self, gfp: Gfp) -> Option<VirtAddr> {
        self.get_free_pages(gfp | Gfp::ZERO, 0)
    }

    /// The address of `2^order` frames from ZONE_DMA (Linux's
    /// `__get_dma_pages`).
    pub fn get_dma_pages(&self, gfp: Gfp, order: usize) -> Option<VirtAddr> {
        self.get_free_pages(gfp | Gfp::DMA, order)
    }

    /// The node of the calling CPU.
    pub(crate) fn cpu_node(&self) -> usize {
        if !self.numa {
            return 0;
        }
        let _g = self.cpu.preempt_guard();
        let id = self.cpu.id();
        usize::from(self.cpu_nodes.get(id).copied().unwrap_or(0))
    }

    /// The zones to try for an allocation whose highest zone is `class`, from
    /// `node` (Linux's zonelist): that node's zones from `class` down to DMA,
    /// then each other node's, skipping empty zones.
    pub fn zonelist(
        &self,
        node: usize,
        class: ZoneType,
    ) -> impl Iterator<Item = &'a Zone<'a>> + '_ {
        let zones = self.zones;
        let zl = self
            .zonelists
            .get(node)
            .map_or(&[][..], |l| l[class as usize].as_slice());
        zl.iter().map(move |&z| &zones[usize::from(z)])
    }

    /// The first zone of `node`'s zonelist for `check.classzone` that passes
    /// `check` and has a block of `order` (Linux's `get_page_from_freelist`).
    fn get_page_from_freelist(
        &self,
        node: usize,
        gfp: Gfp,
        order: usize,
        check: WatermarkCheck,
    ) -> Option<&'a Page> {
        for z in self.zonelist(node, check.classzone) {
            if gfp.contains(Gfp::ZERO)
                && z.kind() == ZoneType::HighMem
                && self.zero_highmem.is_none()
            {
                continue;
            }
            if !z.watermark_ok(order, check) {
                continue;
            }
            if let Some(p) = self.rmqueue(z, order, gfp) {
                self.prep_new_page(p, order, gfp, check.mark == Watermark::Min);
                return Some(p);
            }
        }
        None
    }

    /// Takes a block from zone `z`: order 0 through this CPU's list, larger
    /// orders (and order 0 when this CPU's list is busy: a re-entry) from the
    /// free lists (Linux's `buffered_rmqueue`).
    #[inline]
    fn rmqueue(&self, z: &'a Zone<'a>, order: usize, gfp: Gfp) -> Option<&'a Page> {
        let irq = self.cpu.irq_guard();
        if order == 0
            && !self.bypass_pcp
            && let Some(page) = z.pcp.with(&irq, |p, s| {
                if s.drain.load(Ordering::Relaxed) {
                    self.drain_pcp(z, s, p, &irq);
                }
                if p.list.is_empty() {
                    self.refill_pcp(z, s, p, &irq);
                }
                Self::pop_pcp(s, p, gfp)
            })
        {
            return page;
        }
        z.lock(&irq).rmqueue(&self.mem, order)
    }

    /// Makes a block ready for its user: head flag and order, count 1, zeroed
    /// if asked.
    #[inline]
    pub(crate) fn prep_new_page(&self, page: &'a Page, order: usize, gfp: Gfp, reserve: bool) {
        let f = if reserve {
            PgFlags::HEAD | PgFlags::RESERVE
        } else {
            PgFlags::HEAD
        };
        // SAFETY: the owner contract: the block just left the allocator's lists
        // and is not yet handed out; these are the words of an allocated head.
        unsafe {
            page.replace_flags(PgFlags::HIGHMEM, f);
            page.set_private(order);
            page.set_count(1);
        }
        if gfp.contains(Gfp::ZERO) {
            self.zero_block(page, order);
        }
    }

    fn zero_block(&self, page: &'a Page, order: usize) {
        let pfn = self
            .mem
            .page_to_pfn(page)
            .expect("allocated page is in mem_map");
        for i in 0..1usize << order {
            let f = kmm_hal::Pfn::new(pfn.as_usize() + i);
            match self.mem.direct_map().phys_to_virt(f.phys()) {
                // SAFETY: the frame was just allocated to the caller, so nobody
                // else uses these bytes, and `Buddy::new`'s contract (from
                // `MemMap::new`'s) makes the direct map map RAM writable.
                Some(va) => unsafe { core::ptr::write_bytes(va.as_mut_ptr::<u8>(), 0, PAGE_SIZE) },
                None => {
                    if let Some(z) = self.zero_highmem {
                        z(f);
                    }
                }
            }
        }
    }
}
