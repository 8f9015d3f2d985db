//! The bulk order-0 paths: many pages in one call through the per-CPU lists
//! (Linux's `alloc_pages_bulk` and `release_pages`), and the zone side of a
//! per-CPU refill (Linux's `rmqueue_bulk`).
//!
//! A bulk call takes the calling CPU's list once (one interrupt-off section,
//! one `CpuLocal` holding) for up to `WINDOW` (64) slots of the caller's array
//! and moves pages between the list and the array; the list is refilled from
//! the zone `batch` pages at a time, each refill under one zone-lock
//! acquisition, and spilled the same way. What a single call costs once per
//! page — the interrupt guard, the CPU id, the zonelist, the watermark, the
//! list's busy flag — a bulk call pays once per window.

use core::sync::atomic::Ordering;

use kmm_hal::{Cpu, IrqGuard, Pfn};
use kmm_page_frame::{Page, PgFlags, ZoneType};

use crate::buddy::{Buddy, Freed};
use crate::free::STATE;
use crate::pcp::{Pcp, PerCpuPages};
use crate::zone::Zone;
use crate::{BulkFreeError, FreeError, Gfp, Watermark};

/// Slots of the caller's array handled per holding of the per-CPU list: the
/// bits of the mask that remembers which slots the holding filled, and a
/// bound on the time spent with interrupts off.
pub(crate) const WINDOW: usize = 64;
const _: () = assert!(
    WINDOW <= u64::BITS as usize,
    "a window's slots fit its mask"
);

/// What one holding of the per-CPU list did to a window of the array.
struct Window {
    /// The first slot not looked at.
    next: usize,
    /// The slots filled with pages still to prepare (`Gfp::ZERO`), as bits
    /// from the window's first slot.
    filled: u64,
    /// Some slot was filled.
    any: bool,
    /// The zone ran out: no more pages for this call.
    exhausted: bool,
}

/// What one holding of the per-CPU list did to a run of [`Buddy::release_pages`].
struct Run {
    /// The first slot not looked at.
    next: usize,
    /// Pages whose last reference went.
    released: usize,
    /// The slot at `next` was refused.
    refused: Option<FreeError>,
}

/// The first empty slot at or after `from` (`pages.len()` if none).
#[inline]
fn first_empty(pages: &[Option<&Page>], from: usize) -> usize {
    pages[from..]
        .iter()
        .position(Option::is_none)
        .map_or(pages.len(), |i| from + i)
}

impl<'a, C: Cpu> Buddy<'a, C> {
    /// Fills the empty slots of `pages` with order-0 pages (Linux's
    /// `alloc_pages_bulk`, formerly `alloc_pages_bulk_array`) and returns how
    /// many slots from the front hold a page: `pages[..n]` are all `Some`,
    /// and `pages[n]` is `None` unless `n == pages.len()`. Slots that already
    /// hold a page are skipped and left alone. Each page comes as from
    /// [`Buddy::alloc_pages`]`(gfp, 0)`: reference count 1, zeroed for
    /// [`Gfp::ZERO`], from the cold end of the list for [`Gfp::COLD`].
    ///
    /// As in Linux, the pages come from one zone: the first of the CPU's
    /// zonelist for `gfp` that stays above its low watermark (plus its lowmem
    /// reserve) after giving every slot a page. The calling CPU's list for
    /// that zone is taken once per 64 slots, popped, and refilled
    /// from the zone `batch` pages at a time under one zone-lock acquisition
    /// each (Linux's `rmqueue_bulk`). When no zone passes that check, the
    /// list is busy (a re-entry from a hook on this CPU), or the zone gives
    /// no page at all, one page is taken through the single-page path
    /// instead — watermarks down to `min`, zonelist fallback, the `on_low`
    /// hook, drains — and the call returns (Linux's `failed:` label). So the
    /// call may fill fewer slots than are empty, but fills at least one when
    /// `alloc_pages(gfp, 0)` would have succeeded; a caller that needs them
    /// all calls again (the slots it has stay filled) and stops when `n` no
    /// longer grows.
    ///
    /// Hooks ([`BuddyConfig::zero_highmem`](crate::BuddyConfig::zero_highmem)
    /// for a zeroed high-memory page, `on_low` on the single-page path) run
    /// with no per-CPU list held and no zone lock, as for `alloc_pages`.
    pub fn alloc_pages_bulk(&self, gfp: Gfp, pages: &mut [Option<&'a Page>]) -> usize {
        let mut start = first_empty(pages, 0);
        if start == pages.len() {
            return start;
        }
        // One page: no reason to batch (Linux's `goto failed`).
        if pages.len() - start == 1 {
            return self.bulk_failed(gfp, pages, start);
        }
        let Some(zone) = self.bulk_zone(gfp, pages.len() - start) else {
            return self.bulk_failed(gfp, pages, start);
        };
        let mut any = false;
        loop {
            let Some(w) = self.bulk_window(zone, gfp, pages, start) else {
                // This CPU's list is busy: a hook re-entered the allocator.
                return if any {
                    start
                } else {
                    self.bulk_failed(gfp, pages, start)
                };
            };
            // Zeroed pages are prepared now, with the list given back: a
            // high-memory page calls a hook.
            let mut bits = w.filled;
            while bits != 0 {
                let i = start + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(page) = pages[i] {
                    self.prep_new_page(page, 0, gfp, false);
                }
            }
            any |= w.any;
            start = first_empty(pages, w.next);
            if start == pages.len() {
                return start;
            }
            if w.exhausted {
                return if any {
                    start
                } else {
                    self.bulk_failed(gfp, pages, start)
                };
            }
        }
    }

    /// The single-page path for slot `i` (empty), then the count of filled
    /// slots from the front.
    #[cold]
    #[inline(never)]
    fn bulk_failed(&self, gfp: Gfp, pages: &mut [Option<&'a Page>], i: usize) -> usize {
        match self.alloc_pages(gfp, 0) {
            Some(page) => {
                pages[i] = Some(page);
                first_empty(pages, i + 1)
            }
            None => i,
        }
    }

    /// The zone a bulk allocation of `n` pages takes them from: the first of
    /// the calling CPU's zonelist for `gfp` above its low watermark, its
    /// lowmem reserve and `n` (Linux's check in `__alloc_pages_bulk`), skipping
    /// high memory for a zeroed request when no hook can zero it.
    fn bulk_zone(&self, gfp: Gfp, n: usize) -> Option<&'a Zone<'a>> {
        let class = gfp.zone();
        let skip_high = gfp.contains(Gfp::ZERO) && self.zero_highmem.is_none();
        self.zonelist(self.cpu_node(), class).find(|z| {
            !(skip_high && z.kind() == ZoneType::HighMem)
                && z.free_pages()
                    > z.watermark(Watermark::Low)
                        .saturating_add(z.lowmem_reserve(class))
                        .saturating_add(n)
        })
    }

    /// One holding of this CPU's list of `zone` (or, bypassing the lists, one
    /// zone-lock acquisition): pages into the empty slots of
    /// `pages[start..start + WINDOW]`. `None` if the list is busy.
    #[inline]
    fn bulk_window(
        &self,
        zone: &'a Zone<'a>,
        gfp: Gfp,
        pages: &mut [Option<&'a Page>],
        start: usize,
    ) -> Option<Window> {
        let end = pages.len().min(start + WINDOW);
        // Without `Gfp::ZERO`, preparing a page calls no hook: do it here,
        // with the page at hand (as Linux does under the per-CPU lock); the
        // caller prepares zeroed pages once the list is given back.
        let prep_now = !gfp.contains(Gfp::ZERO);
        let irq = self.cpu.irq_guard();
        if self.bypass_pcp {
            let mut locked = zone.lock(&irq);
            let mut w = Window {
                next: start,
                filled: 0,
                any: false,
                exhausted: false,
            };
            while w.next < end {
                if pages[w.next].is_none() {
                    let Some(page) = locked.rmqueue(&self.mem, 0) else {
                        w.exhausted = true;
                        break;
                    };
                    if prep_now {
                        self.prep_new_page(page, 0, gfp, false);
                    } else {
                        w.filled |= 1 << (w.next - start);
                    }
                    pages[w.next] = Some(page);
                    w.any = true;
                }
                w.next += 1;
            }
            return Some(w);
        }
        let cold = gfp.contains(Gfp::COLD);
        zone.pcp.with(&irq, |p, s| {
            if s.drain.load(Ordering::Relaxed) {
                self.drain_pcp(zone, s, p, &irq);
            }
            let window = &mut pages[start..end];
            // One loop per case, so the page loop tests neither.
            let mut w = match (prep_now, cold) {
                (true, false) => self.take::<true, false>(zone, s, p, &irq, gfp, window),
                (true, true) => self.take::<true, true>(zone, s, p, &irq, gfp, window),
                (false, false) => self.take::<false, false>(zone, s, p, &irq, gfp, window),
                (false, true) => self.take::<false, true>(zone, s, p, &irq, gfp, window),
            };
            w.next += start;
            w
        })
    }

    /// Pops pages from this CPU's list `p` (held, interrupts off) into the
    /// empty slots of `window`, refilling the list from `zone` when it runs
    /// dry; `PREP`: prepare each page now (no `Gfp::ZERO`), else mark its
    /// slot in `filled`; `COLD`: from the back of the list. The window's
    /// `next` is relative to its first slot.
    #[inline(always)]
    fn take<const PREP: bool, const COLD: bool>(
        &self,
        zone: &'a Zone<'a>,
        s: &PerCpuPages,
        p: &mut Pcp<'a>,
        irq: &IrqGuard<'_, C>,
        gfp: Gfp,
        window: &mut [Option<&'a Page>],
    ) -> Window {
        let pop = |p: &mut Pcp<'a>| {
            if COLD {
                p.list.pop_back()
            } else {
                p.list.pop_front()
            }
        };
        let mut w = Window {
            next: 0,
            filled: 0,
            any: false,
            exhausted: false,
        };
        let mut taken = 0;
        for (bit, slot) in window.iter_mut().enumerate() {
            if slot.is_none() {
                let page = match pop(p) {
                    Some(page) => page,
                    None => {
                        // (The count lags by `taken` until the end: it only
                        // grows here.)
                        if self.rmqueue_bulk(zone, s, p, s.batch, irq) == 0 {
                            w.exhausted = true;
                            break;
                        }
                        pop(p).expect("a refilled list has a page")
                    }
                };
                // The page keeps PCP (so a free of it is refused) until
                // `prep_new_page`.
                if PREP {
                    self.prep_new_page(page, 0, gfp, false);
                } else {
                    w.filled |= 1 << bit;
                }
                *slot = Some(page);
                taken += 1;
            }
            w.next += 1;
        }
        s.sub(p, taken);
        w.any = taken > 0;
        w
    }

    /// Moves up to `n` order-0 pages from `zone`'s free lists to the back of
    /// this CPU's list `p` under one zone-lock acquisition (Linux's
    /// `rmqueue_bulk`); the pages moved. The pages and their order are
    /// Linux's (one `__rmqueue` per page), but a free block that fits in
    /// what is left of `n` moves whole
    /// ([`LockedZone::rmqueue_run`](crate::zone::LockedZone::rmqueue_run)).
    /// The caller holds the list with interrupts off (`irq`).
    pub(crate) fn rmqueue_bulk(
        &self,
        zone: &'a Zone<'a>,
        s: &PerCpuPages,
        p: &mut Pcp<'a>,
        n: usize,
        irq: &IrqGuard<'_, C>,
    ) -> usize {
        let mut locked = zone.lock(irq);
        let mut moved = 0;
        while moved < n {
            // The largest order whose block still fits in what is left.
            let fits = (usize::BITS - 1 - (n - moved).leading_zeros()) as usize;
            let Some((pfn, order)) = locked.rmqueue_run(&self.mem, fits) else {
                break;
            };
            for f in pfn..pfn + (1 << order) {
                let page = self
                    .mem
                    .pfn_to_page(Pfn::new(f))
                    .expect("a free block lies in mem_map");
                // SAFETY: the owner contract: the page left the zone's free
                // lists under its lock and goes to this CPU's list (which
                // `FreeListAdapter` asks to flag PCP).
                unsafe { page.insert(PgFlags::PCP) };
                p.list.push_back(page);
            }
            moved += 1 << order;
        }
        s.add(p, moved);
        moved
    }

    /// Drops the caller's reference on every page in `pages` and frees those
    /// whose last reference went, emptying each slot (Linux's
    /// `release_pages`; the pages it frees go to the per-CPU lists in runs, as
    /// Linux's `free_unref_page_list` does). Empty slots are skipped. Returns
    /// how many pages went back to the allocator (a page with other
    /// references left only loses the caller's, as with
    /// [`Freed::StillReferenced`]).
    ///
    /// Every page must be an order-0 block this allocator handed out (from
    /// [`Buddy::alloc_pages_bulk`] or `alloc_pages(gfp, 0)`). Each is checked
    /// in O(1) as [`Buddy::free_pages_page`]`(page, 0)` checks it; a page it
    /// would refuse — foreign, reserved, already free (also a page that
    /// appears twice in `pages`), not the head of an allocated block, a block
    /// of another order ([`FreeError::WrongOrder`]), a slab, `kmalloc` or
    /// vmalloc page, a page still on its owner's list — stops the call with a
    /// [`BulkFreeError`] that names its index. **The pages before it are
    /// freed** (their slots are empty), the refused page and every slot after
    /// it are untouched, and the allocator is intact: fix or drop the bad
    /// slot and call again to free the rest.
    ///
    /// Why this name: `release_pages(pages, nr)` is Linux's public free of an
    /// array of pages, dropping a reference on each, as this does. Linux
    /// 2.6's `free_pages_bulk` is something else — the per-CPU list's spill
    /// to the zone, later `free_pcppages_bulk`, here the allocator's internal
    /// `spill` — so that name would mislead.
    pub fn release_pages(&self, pages: &mut [Option<&Page>]) -> Result<usize, BulkFreeError> {
        let mut i = 0;
        let mut released = 0;
        while i < pages.len() {
            let Some(page) = pages[i] else {
                i += 1;
                continue;
            };
            // The zone the descriptor names: the run checks the rest.
            let zone = self.mem.own(page).ok().and_then(|(_, page)| {
                let index = page.zone_index();
                self.zones.get(index).map(|z| (z, index))
            });
            if let Some((zone, zone_index)) = zone
                && !self.bypass_pcp
            {
                let irq = self.cpu.irq_guard();
                if let Some(run) = zone.pcp.with(&irq, |p, s| {
                    self.release_run(zone, zone_index, s, p, pages, i, &irq)
                }) {
                    released += run.released;
                    if let Some(error) = run.refused {
                        return Err(BulkFreeError {
                            index: run.next,
                            error,
                        });
                    }
                    if run.next > i {
                        i = run.next;
                        continue;
                    }
                }
            }
            // The page at `i` failed the run's check (the single free says
            // why), or the lists are bypassed, or this CPU's list is busy (a
            // hook re-entered the allocator): the single-page path.
            released += self.release_one(pages, i)?;
            i += 1;
        }
        Ok(released)
    }

    /// [`Buddy::release_pages`] of the page in slot `i` alone, through
    /// `free_pages_page`: 1 if it went back, 0 if references remain. Out of
    /// line: the bulk loop keeps its registers.
    #[cold]
    #[inline(never)]
    fn release_one(&self, pages: &mut [Option<&Page>], i: usize) -> Result<usize, BulkFreeError> {
        let Some(page) = pages[i] else {
            return Ok(0);
        };
        let released = match self.free_pages_page(page, 0) {
            Ok(Freed::Released) => 1,
            Ok(Freed::StillReferenced) => 0,
            Err(error) => return Err(BulkFreeError { index: i, error }),
        };
        pages[i] = None;
        Ok(released)
    }

    /// Frees the pages of `zone` from `pages[i..]` onto this CPU's list `p`
    /// (held, with interrupts off) until a page of another zone or one that
    /// fails the check, spilling a batch to the zone whenever the list
    /// reaches `high`. `zone_index` is `zone`'s.
    ///
    /// Each page passes the test of `check_free` (a descriptor of
    /// `mem_map`, in the zone's span, the same flag mask [`STATE`], order
    /// 0), with the zone's span kept at hand for the run; a page that fails
    /// it ends the run, and the caller starts a run in its zone or, if it
    /// fails there too, has the single free (`release_one`) say why.
    #[allow(clippy::too_many_arguments)]
    fn release_run(
        &self,
        zone: &'a Zone<'a>,
        zone_index: usize,
        s: &PerCpuPages,
        p: &mut Pcp<'a>,
        pages: &mut [Option<&Page>],
        i: usize,
        irq: &IrqGuard<'_, C>,
    ) -> Run {
        if s.drain.load(Ordering::Relaxed) {
            self.drain_pcp(zone, s, p, irq);
        }
        let span = zone.span();
        let (first, spanned) = (span.start_pfn, span.spanned);
        let mut run = Run {
            next: i,
            released: 0,
            refused: None,
        };
        // Pages the list takes before it reaches `high`.
        let mut room = s.high.saturating_sub(s.count());
        let mut added = 0;
        for slot in &mut pages[i..] {
            if let Some(page) = *slot {
                let Ok((pfn, page)) = self.mem.own(page) else {
                    break;
                };
                // In the span is in the zone: `MemMap::new` refuses
                // overlapping nodes and a node's zones split its range by
                // address, so zone spans are disjoint and every descriptor in
                // one carries its zone (`check_free` looks the zone up from
                // the descriptor instead, as it has none at hand).
                if (pfn.as_usize() as u64).wrapping_sub(first) >= spanned
                    || page.flags() & STATE != PgFlags::HEAD
                    || page.private() != 0
                {
                    break;
                }
                debug_assert_eq!(page.zone_index(), zone_index);
                // SAFETY: the caller of a free gives up the reference it
                // holds on an allocated head (checked above); a count already
                // at zero is refused.
                match unsafe { page.put_testzero() } {
                    None => {
                        run.refused = Some(FreeError::DoubleFree);
                        break;
                    }
                    Some(false) => {}
                    Some(true) => {
                        // `private` is already 0: the order, checked.
                        // SAFETY: the owner contract: the last reference went,
                        // so the allocator owns the page; it goes on this
                        // CPU's list, flagged PCP as `FreeListAdapter` asks.
                        unsafe { page.replace_flags(PgFlags::HIGHMEM, PgFlags::PCP) };
                        p.list.push_front(page);
                        added += 1;
                        if added >= room {
                            s.add(p, added);
                            run.released += added;
                            added = 0;
                            self.spill(zone, s, p, s.batch, irq);
                            room = s.high.saturating_sub(s.count());
                        }
                    }
                }
                *slot = None;
            }
            run.next += 1;
        }
        s.add(p, added);
        run.released += added;
        run
    }
}

#[cfg(test)]
mod tests {
    use kmm_page_frame::{Page, ZoneType};

    use super::first_empty;

    #[test]
    fn first_empty_finds_the_first_hole_from_a_slot() {
        let p = Page::new(ZoneType::Normal, 0);
        let slots = [Some(&p), None, Some(&p), None];
        assert_eq!(first_empty(&slots, 0), 1);
        assert_eq!(first_empty(&slots, 1), 1);
        assert_eq!(first_empty(&slots, 2), 3);
        assert_eq!(first_empty(&slots[..3], 2), 3, "none: the length");
        assert_eq!(first_empty(&slots, 4), 4);
        assert_eq!(first_empty(&[], 0), 0);
    }
}
