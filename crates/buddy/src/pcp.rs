//! [`PerCpuPages`]: a CPU's cache of order-0 pages for one zone (Linux's
//! `per_cpu_pages`), hot pages at the front, cold at the back.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use intrusive_collections::LinkedList;
use kmm_page_frame::FreeListAdapter;

/// The list and its limits. Only the owning CPU touches it, with interrupts
/// off (or anyone, for a CPU that is offline).
pub(crate) struct Pcp<'a> {
    pub(crate) list: LinkedList<FreeListAdapter<'a>>,
    pub(crate) count: usize,
    pub(crate) high: usize,
    pub(crate) batch: usize,
}

/// One CPU's order-0 page cache for one zone, on cache lines of its own (the
/// owning CPU writes it on every allocation and free).
#[repr(align(64))]
pub struct PerCpuPages<'a> {
    pub(crate) inner: UnsafeCell<Pcp<'a>>,
    /// Mirror of the list length, readable by anyone (statistics, tests).
    count: AtomicUsize,
    /// Set by another CPU's `drain_all_pages`: drain at the next entry.
    pub(crate) drain: AtomicBool,
}

// SAFETY: `inner` is only accessed by the owning CPU with interrupts disabled
// (the allocator takes `Cpu::irq_guard` and indexes by `Cpu::id`; the `Cpu`
// contract: `id()` is unique among running CPUs, below `count()`, stable while
// interrupts are off, and `irq_guard` really disables them), or through
// `Buddy::drain_offline_cpu`, whose caller guarantees the CPU is not running;
// everything else is atomic.
unsafe impl Sync for PerCpuPages<'_> {}
// SAFETY: as above.
unsafe impl Send for PerCpuPages<'_> {}

impl<'a> PerCpuPages<'a> {
    pub(crate) fn new(high: usize, batch: usize) -> Self {
        PerCpuPages {
            inner: UnsafeCell::new(Pcp {
                // SAFETY: the owner contract of `FreeListAdapter::new`: the
                // list holds pages the allocator holds free, flagged PCP while
                // linked, touched only by the owning CPU with interrupts off
                // (see the `Sync` impl above).
                list: LinkedList::new(unsafe { FreeListAdapter::new() }),
                count: 0,
                high,
                batch,
            }),
            count: AtomicUsize::new(0),
            drain: AtomicBool::new(false),
        }
    }

    /// Pages on the list.
    #[inline]
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn set_count(&self, n: usize) {
        self.count.store(n, Ordering::Relaxed);
    }

    /// The list's high mark and batch size.
    pub fn limits(&self) -> (usize, usize) {
        // SAFETY: `high` and `batch` are written only at construction.
        let p = unsafe { &*self.inner.get() };
        (p.high, p.batch)
    }

    /// True if a drain was requested by another CPU and not yet done.
    pub fn drain_pending(&self) -> bool {
        self.drain.load(Ordering::Relaxed)
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
    use super::batch_for;

    #[test]
    fn linux_batch_sizes() {
        // A 16 MiB DMA zone: 4096 pages -> 1; an 880 MiB zone -> 31.
        assert_eq!(batch_for(4096), (0, 1));
        assert_eq!(batch_for(225_280), (186, 31));
        assert_eq!(batch_for(0), (0, 1));
        assert_eq!(batch_for(1 << 30), (6 * 31, 31), "capped at 512 KiB");
    }
}
