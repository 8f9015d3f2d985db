//! [`I386Tlb`]: kernel-wide TLB flushes ([`KernelTlb`]) of a uniprocessor i386
//! kernel — Linux's `flush_tlb_kernel_range` and `flush_tlb_all` before the
//! other CPUs are started.

#[cfg(target_arch = "x86")]
use kmm_hal::KernelTlb;
use kmm_hal::{PAGE_SIZE, VirtAddr};

/// Above this many pages a range flush empties the whole TLB instead of one
/// INVLPG per page (Linux's `tlb_single_page_flush_ceiling`, and
/// [`kmm_hal::Flush::flush`]'s limit).
pub const FULL_FLUSH_PAGES: usize = 32;

/// What a range flush does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86"), allow(dead_code))]
enum RangeFlush {
    /// Nothing: the range is empty.
    Nothing,
    /// INVLPG each of `pages` pages from `first`.
    Pages { first: usize, pages: usize },
    /// Empty the whole TLB, global entries included.
    All,
}

/// How to flush `[start, end)`, page granular (a partial page at either end is
/// included).
#[cfg_attr(not(target_arch = "x86"), allow(dead_code))]
fn plan(start: VirtAddr, end: VirtAddr) -> RangeFlush {
    let first = start.as_usize() & !(PAGE_SIZE - 1);
    let Some(end) = end.as_usize().checked_next_multiple_of(PAGE_SIZE) else {
        return RangeFlush::All; // reaches the top of the address space
    };
    if end <= first {
        return RangeFlush::Nothing;
    }
    let pages = (end - first) / PAGE_SIZE;
    if pages > FULL_FLUSH_PAGES {
        RangeFlush::All
    } else {
        RangeFlush::Pages { first, pages }
    }
}

/// The [`KernelTlb`] of an i386 kernel while one CPU runs: flushes are local
/// (INVLPG, or a CR4.PGE toggle that drops global entries too), which is
/// "every CPU" only as long as there is one.
///
/// Once other CPUs are started, a kernel-wide flush must also interrupt them
/// and wait until they have flushed (an IPI shootdown): an SMP kernel runs
/// the local flush on every CPU through a [`kmm_hal::CrossCall`]
/// (`on_each_cpu`), under the same deadlock rule: that is [`SmpTlb`]. This
/// type is sound only while one CPU runs, which is what [`I386Tlb::new`]'s
/// caller promises.
#[cfg(target_arch = "x86")]
#[derive(Debug)]
pub struct I386Tlb {
    _private: (),
}

#[cfg(target_arch = "x86")]
impl I386Tlb {
    /// The kernel-wide flush of a uniprocessor kernel.
    ///
    /// # Safety
    /// Only one CPU may run while this value is used — a uniprocessor kernel,
    /// or an SMP kernel before it starts the other CPUs: the flushes are local,
    /// so a second running CPU would keep its translations and [`KernelTlb`]'s
    /// contract would break (use [`SmpTlb`] then). The
    /// code must run in ring 0 with paging on (INVLPG, CR4 writes).
    pub const unsafe fn new() -> I386Tlb {
        I386Tlb { _private: () }
    }
}

// SAFETY: one CPU runs (`new`'s caller promised), so its TLB is every CPU's.
// A range of at most `FULL_FLUSH_PAGES` pages is flushed with one INVLPG per
// page — INVLPG drops the entry whether or not it is global, and one per 4 KiB
// step covers a large page too; a longer range, and `flush_tlb_all`, toggle
// CR4.PGE (or reload CR3 without PGE), which empties the whole TLB, global
// entries included. Both finish before the method returns.
#[cfg(target_arch = "x86")]
unsafe impl KernelTlb for I386Tlb {
    fn flush_tlb_kernel_range(&self, start: VirtAddr, end: VirtAddr) {
        local_flush(plan(start, end));
    }

    fn flush_tlb_all(&self) {
        local_flush(RangeFlush::All);
    }
}

/// The [`KernelTlb`] of an SMP i386 kernel: a real shootdown (Linux's
/// `flush_tlb_kernel_range` / `flush_tlb_all` on SMP, `do_flush_tlb_all`
/// through `on_each_cpu`). Every flush runs the local flush of
/// [`I386Tlb`] — INVLPG per page, or a full flush, global entries included,
/// above [`FULL_FLUSH_PAGES`] pages — on every running CPU through the
/// [`CrossCall`](kmm_hal::CrossCall) it is given (an
/// [`ApicCrossCall`](crate::ApicCrossCall) in a kernel), and returns when all
/// have flushed.
///
/// The flush is a cross-CPU call, so it keeps the deadlock rule: interrupts
/// enabled, no IRQ-safe lock held, not in an interrupt handler (kmm's
/// allocators keep it).
#[cfg(target_arch = "x86")]
#[derive(Debug)]
pub struct SmpTlb<X> {
    calls: X,
    range_flushes: core::sync::atomic::AtomicUsize,
    full_flushes: core::sync::atomic::AtomicUsize,
}

/// What an `SmpTlb` did, for a kernel's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShootdownStats {
    /// Range flushes (`flush_tlb_kernel_range`) that flushed page by page.
    pub range_flushes: usize,
    /// Whole-TLB flushes (`flush_tlb_all`, or a range too long to flush by
    /// page).
    pub full_flushes: usize,
}

#[cfg(target_arch = "x86")]
impl<X: kmm_hal::CrossCall> SmpTlb<X> {
    /// The shootdown over `calls`.
    ///
    /// # Safety
    /// Ring 0 with paging on, on every CPU `calls` reaches; `calls` reaches
    /// every CPU that may hold a translation of the kernel tables (by its
    /// contract, every running CPU: a CPU must be online in `calls` before
    /// it uses kernel mappings that kmm changes).
    pub const unsafe fn new(calls: X) -> SmpTlb<X> {
        SmpTlb {
            calls,
            range_flushes: core::sync::atomic::AtomicUsize::new(0),
            full_flushes: core::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The cross-CPU calls it flushes through.
    pub fn calls(&self) -> &X {
        &self.calls
    }

    /// The shootdowns so far.
    pub fn stats(&self) -> ShootdownStats {
        use core::sync::atomic::Ordering::Relaxed;
        ShootdownStats {
            range_flushes: self.range_flushes.load(Relaxed),
            full_flushes: self.full_flushes.load(Relaxed),
        }
    }

    fn shoot(&self, flush: RangeFlush) {
        use core::sync::atomic::Ordering::Relaxed;
        match flush {
            RangeFlush::Nothing => return,
            RangeFlush::Pages { .. } => self.range_flushes.fetch_add(1, Relaxed),
            RangeFlush::All => self.full_flushes.fetch_add(1, Relaxed),
        };
        let local = move || local_flush(flush);
        self.calls.on_each_cpu(&local);
    }
}

/// Carries out `flush` on the calling CPU.
#[cfg(target_arch = "x86")]
fn local_flush(flush: RangeFlush) {
    match flush {
        RangeFlush::Nothing => {}
        RangeFlush::Pages { first, pages } => {
            for i in 0..pages {
                // SAFETY: ring 0 (the callers' contracts); INVLPG only drops
                // a cached translation.
                unsafe { crate::arch::invlpg(VirtAddr::new(first + i * PAGE_SIZE)) };
            }
        }
        // SAFETY: ring 0 with paging on (the callers' contracts).
        RangeFlush::All => unsafe { crate::arch::flush_tlb_all() },
    }
}

// SAFETY: `on_each_cpu` runs the local flush on every running CPU (the
// `CrossCall` contract, and `new`'s caller promised that those are all the
// CPUs that may hold kernel translations) and returns after every run
// finished; the local flush is `I386Tlb`'s (INVLPG per page drops global and
// large-page entries too; a full flush toggles CR4.PGE or reloads CR3).
#[cfg(target_arch = "x86")]
unsafe impl<X: kmm_hal::CrossCall> KernelTlb for SmpTlb<X> {
    fn flush_tlb_kernel_range(&self, start: VirtAddr, end: VirtAddr) {
        self.shoot(plan(start, end));
    }

    fn flush_tlb_all(&self) {
        self.shoot(RangeFlush::All);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn va(v: usize) -> VirtAddr {
        VirtAddr::new(v)
    }

    #[test]
    fn partial_pages_at_either_end_are_flushed() {
        assert_eq!(
            plan(va(0xF880_0FFF), va(0xF880_1001)),
            RangeFlush::Pages {
                first: 0xF880_0000,
                pages: 2
            }
        );
        assert_eq!(
            plan(va(0xF880_0000), va(0xF880_1000)),
            RangeFlush::Pages {
                first: 0xF880_0000,
                pages: 1
            }
        );
    }

    #[test]
    fn an_empty_range_flushes_nothing() {
        assert_eq!(plan(va(0xF880_0000), va(0xF880_0000)), RangeFlush::Nothing);
        assert_eq!(plan(va(0xF880_2000), va(0xF880_1000)), RangeFlush::Nothing);
    }

    #[test]
    fn more_than_32_pages_flush_everything() {
        let base = 0xF880_0000;
        assert_eq!(
            plan(va(base), va(base + FULL_FLUSH_PAGES * PAGE_SIZE)),
            RangeFlush::Pages {
                first: base,
                pages: FULL_FLUSH_PAGES
            }
        );
        assert_eq!(
            plan(va(base), va(base + FULL_FLUSH_PAGES * PAGE_SIZE + 1)),
            RangeFlush::All
        );
        assert_eq!(plan(va(base), va(usize::MAX)), RangeFlush::All);
    }
}
