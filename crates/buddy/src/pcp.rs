//! The per-CPU order-0 page lists (Linux's `per_cpu_pages`), on
//! [`kmm_hal::CpuLocal`]: one [`PerCpu`] slot per CPU and zone, hot pages at
//! the front of the list, cold at the back.
//!
//! A slot holds [`Pcp`] (the list, which only its CPU touches, through
//! `CpuLocal::with` under an [`IrqGuard`](kmm_hal::IrqGuard)) and
//! [`PerCpuPages`] (what anyone may read: the count mirror, the drain request,
//! the limits).

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use intrusive_collections::LinkedList;
use kmm_hal::{CpuLocal, PerCpu};
use kmm_page_frame::FreeListAdapter;

/// The local part of a slot: the list. Only the owning CPU touches it, with
/// interrupts off (`CpuLocal::with`), or another CPU for a CPU that is offline
/// (`CpuLocal::with_offline`). Its length is [`PerCpuPages::count`], which
/// only the list's holder writes.
pub(crate) struct Pcp<'a> {
    pub(crate) list: LinkedList<FreeListAdapter<'a>>,
    /// Refills since the last spill (Linux's `alloc_factor`, capped at
    /// [`BATCH_SCALE_MAX`]): each doubles the next refill.
    alloc_factor: u32,
    /// Spills since the last refill (Linux's `free_count`, counted in
    /// spills, capped at [`BATCH_SCALE_MAX`]): each doubles the next spill.
    free_factor: u32,
}

/// How many times a run of refills or spills may double the batch (Linux's
/// `CONFIG_PCP_BATCH_SCALE_MAX` default).
pub(crate) const BATCH_SCALE_MAX: u32 = 5;

impl<'a> Pcp<'a> {
    /// Pages the next refill moves from the zone (Linux 6.7's
    /// `nr_pcp_alloc`): `batch`, doubled for each refill since the last
    /// spill (a run of allocations that keeps emptying the list), but never
    /// past `high` less the pages already here less one batch (at least one
    /// batch); one page while the list is disabled (`high < batch`: a small
    /// zone's pages go straight back). Counts this refill.
    pub(crate) fn refill_count(&mut self, count: usize, high: usize, batch: usize) -> usize {
        if high < batch {
            return 1;
        }
        self.free_factor = 0;
        let scaled = batch << self.alloc_factor;
        let max = high.saturating_sub(count + batch).max(batch);
        if scaled <= max && self.alloc_factor < BATCH_SCALE_MAX {
            self.alloc_factor += 1;
        }
        scaled.min(max)
    }

    /// Pages the next spill moves to the zone (Linux 6.7's `nr_pcp_free`):
    /// `batch`, doubled for each spill since the last refill (a run of frees
    /// that keeps overflowing the list), at most `high - batch` so a batch
    /// stays for the next allocations; one page while the list is disabled.
    /// Counts this spill.
    pub(crate) fn spill_count(&mut self, high: usize, batch: usize) -> usize {
        if high < batch {
            return 1;
        }
        self.alloc_factor = 0;
        let scaled = batch << self.free_factor;
        if self.free_factor < BATCH_SCALE_MAX {
            self.free_factor += 1;
        }
        scaled.clamp(batch, (high - batch).max(batch))
    }

    pub(crate) fn new() -> Self {
        Pcp {
            alloc_factor: 0,
            free_factor: 0,
            // SAFETY: the owner contract of `FreeListAdapter::new`: the list
            // holds pages the allocator holds free, flagged PCP while linked
            // (`rmqueue`, `free_block`; cleared by `spill`), and it is reached
            // only through `CpuLocal::with` on the owning CPU with interrupts
            // off, or `with_offline` for a CPU that is not running.
            list: LinkedList::new(unsafe { FreeListAdapter::new() }),
        }
    }
}

/// The part of one CPU's order-0 page list for one zone that anyone may read:
/// its length, a drain request from another CPU, and its limits.
pub struct PerCpuPages {
    /// The list length: written only by the list's holder (a plain load and
    /// store, no locked instruction), read by anyone (statistics, drains).
    count: AtomicUsize,
    /// Set by another CPU's `drain_all_pages`: drain at the next entry.
    pub(crate) drain: AtomicBool,
    /// Above this many pages a free spills `batch` pages to the zone.
    pub(crate) high: usize,
    /// Pages moved between the list and the zone at a time.
    pub(crate) batch: usize,
}

impl PerCpuPages {
    pub(crate) const fn new(high: usize, batch: usize) -> Self {
        PerCpuPages {
            count: AtomicUsize::new(0),
            drain: AtomicBool::new(false),
            high,
            batch,
        }
    }

    /// Pages on the list.
    #[inline]
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Adds `n` to the length. Only the holder of the list calls it (the
    /// `&mut Pcp` it holds is the proof), so a load and a store suffice.
    #[inline]
    pub(crate) fn add(&self, _holder: &mut Pcp<'_>, n: usize) {
        self.count
            .store(self.count.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    /// Subtracts `n` from the length; as [`PerCpuPages::add`].
    #[inline]
    pub(crate) fn sub(&self, _holder: &mut Pcp<'_>, n: usize) {
        self.count
            .store(self.count.load(Ordering::Relaxed) - n, Ordering::Relaxed);
    }

    /// The list's high mark and batch size.
    pub fn limits(&self) -> (usize, usize) {
        (self.high, self.batch)
    }

    /// True if a drain was requested by another CPU and not yet done.
    pub fn drain_pending(&self) -> bool {
        self.drain.load(Ordering::Relaxed)
    }
}

impl core::fmt::Debug for PerCpuPages {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PerCpuPages")
            .field("count", &self.count())
            .field("high", &self.high)
            .field("batch", &self.batch)
            .field("drain_pending", &self.drain_pending())
            .finish()
    }
}

/// One zone's slots, one per CPU.
pub(crate) type PcpSlot<'a> = PerCpu<Pcp<'a>, PerCpuPages>;

/// One zone's per-CPU lists.
pub(crate) type PcpLists<'a> = CpuLocal<'a, Pcp<'a>, PerCpuPages>;

/// The readable parts of one zone's per-CPU lists, indexed by CPU id
/// ([`Zone::pcp`](crate::Zone::pcp)).
#[derive(Clone, Copy)]
pub struct PerCpuLists<'a> {
    slots: &'a [PcpSlot<'a>],
}

impl<'a> PerCpuLists<'a> {
    pub(crate) fn new(lists: PcpLists<'a>) -> Self {
        PerCpuLists {
            slots: lists.slots(),
        }
    }

    /// CPU `cpu`'s list, if the allocator keeps one for it.
    #[inline]
    pub fn get(&self, cpu: usize) -> Option<&'a PerCpuPages> {
        self.slots.get(cpu).map(PerCpu::shared)
    }

    /// True while CPU `cpu`'s list is held by code running on that CPU (a
    /// racy snapshot, for diagnostics and tests: a hook that sees its own
    /// CPU's list busy runs inside the allocator's per-CPU path).
    pub fn is_busy(&self, cpu: usize) -> bool {
        self.slots.get(cpu).is_some_and(PerCpu::is_busy)
    }

    /// The number of CPUs.
    #[inline]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True if there are no CPUs.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every CPU's list, in CPU order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a PerCpuPages> + 'a {
        self.slots.iter().map(PerCpu::shared)
    }
}

impl<'a> core::ops::Index<usize> for PerCpuLists<'a> {
    type Output = PerCpuPages;

    /// CPU `cpu`'s list; panics if there is none (see [`PerCpuLists::get`]).
    fn index(&self, cpu: usize) -> &PerCpuPages {
        self.slots[cpu].shared()
    }
}

impl core::fmt::Debug for PerCpuLists<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Linux's `zone_batchsize` and `setup_pageset`: the batch is about a quarter of
/// a thousandth of the zone, at most 512 KiB worth, rounded down to `2^n - 1` (to
/// avoid cache-colouring artifacts); the high mark is six batches. A small zone
/// (like a 16 MiB DMA zone) gets high 0 and batch 1: its pages go straight back.
pub(crate) fn batch_for(managed: usize) -> (usize, usize) {
    let mut batch = (managed / 1024).min((512 * 1024) / kmm_hal::PAGE_SIZE) / 4;
    if batch < 1 {
        batch = 1;
    }
    let x = batch + batch / 2;
    let fls = usize::BITS - x.leading_zeros();
    let b = (1usize << (fls - 1)) - 1;
    (6 * b, b.max(1))
}

#[cfg(test)]
mod tests {
    use super::{BATCH_SCALE_MAX, Pcp, batch_for};

    #[test]
    fn refills_double_over_a_run_up_to_high() {
        let mut p = Pcp::new();
        // An 880 MiB zone: high 186, batch 31.
        let run: [usize; 5] = core::array::from_fn(|_| p.refill_count(0, 186, 31));
        assert_eq!(run, [31, 62, 124, 155, 155], "capped at high - batch");
        assert_eq!(
            p.refill_count(100, 186, 31),
            55,
            "pages already listed count"
        );
        assert_eq!(p.refill_count(180, 186, 31), 31, "never below one batch");
        // A spill ends the run: the next refill is one batch again.
        assert_eq!(p.spill_count(186, 31), 31);
        assert_eq!(p.refill_count(0, 186, 31), 31);
    }

    #[test]
    fn spills_double_over_a_run_up_to_high_less_a_batch() {
        let mut p = Pcp::new();
        let run: [usize; 4] = core::array::from_fn(|_| p.spill_count(186, 31));
        assert_eq!(run, [31, 62, 124, 155]);
        for _ in 0..10 {
            assert!(p.spill_count(186, 31) <= 155);
        }
        assert_eq!(p.free_factor, BATCH_SCALE_MAX, "the factor is capped");
        // A refill ends the run.
        p.refill_count(0, 186, 31);
        assert_eq!(p.spill_count(186, 31), 31);
    }

    #[test]
    fn a_disabled_list_moves_one_page() {
        // A 16 MiB DMA zone: high 0, batch 1 (Linux's "PCP disabled").
        let mut p = Pcp::new();
        for _ in 0..8 {
            assert_eq!(p.refill_count(0, 0, 1), 1);
            assert_eq!(p.spill_count(0, 1), 1);
        }
        // A tiny zone's list: high 6, batch 1.
        let run: [usize; 5] = core::array::from_fn(|_| p.refill_count(0, 6, 1));
        assert_eq!(run, [1, 2, 4, 5, 5]);
    }

    #[test]
    fn linux_batch_sizes() {
        // A 16 MiB DMA zone: 4096 pages -> 1; an 880 MiB zone -> 31.
        assert_eq!(batch_for(4096), (0, 1));
        assert_eq!(batch_for(225_280), (186, 31));
        assert_eq!(batch_for(0), (0, 1));
        assert_eq!(batch_for(1 << 30), (6 * 31, 31), "capped at 512 KiB");
    }
}
