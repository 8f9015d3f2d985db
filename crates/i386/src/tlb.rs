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
/// (`on_each_cpu`), under the same deadlock rule. The local-APIC
/// implementation of `CrossCall` comes with SMP support. Until then this type is sound only before the other CPUs start,
/// which is what [`I386Tlb::new`]'s caller promises.
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
    /// contract would break (the IPI shootdown comes with SMP support). The
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
        match plan(start, end) {
            RangeFlush::Nothing => {}
            RangeFlush::Pages { first, pages } => {
                for i in 0..pages {
                    // SAFETY: ring 0 (`new`'s contract); INVLPG only drops a
                    // cached translation.
                    unsafe { crate::arch::invlpg(VirtAddr::new(first + i * PAGE_SIZE)) };
                }
            }
            RangeFlush::All => self.flush_tlb_all(),
        }
    }

    fn flush_tlb_all(&self) {
        // SAFETY: ring 0 with paging on (`new`'s contract).
        unsafe { crate::arch::flush_tlb_all() };
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
