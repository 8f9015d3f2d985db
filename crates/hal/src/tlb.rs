//! [`KernelTlb`]: TLB maintenance for kernel mappings on every CPU (Linux's
//! `flush_tlb_kernel_range` and `flush_tlb_all`).

use crate::VirtAddr;

/// Invalidates kernel translations on every CPU: the only cross-CPU flush
/// path of the HAL ([`crate::PageTable::flush`] and
/// [`crate::PageTable::flush_all`] are local to the calling CPU).
///
/// vmalloc's lazy purge and pkmap's `flush_all_zero_pkmaps` call it after
/// removing mappings, and then hand the addresses out again: a CPU that still
/// held an old translation would read or write the previous owner's page.
///
/// # The deadlock rule
///
/// Once several CPUs run, a flush waits for the others (an IPI shootdown on
/// i386). It is only called with interrupts enabled and no
/// [`crate::sync::IrqSpinLock`] held, as in Linux: a CPU spinning with
/// interrupts off on a lock the sender holds could never answer. It is the
/// rule of [`crate::CrossCall`], which an SMP kernel builds its shootdown on
/// (each CPU flushes its own TLB in the called function). kmm's allocators
/// keep the rule: they drop their IRQ-safe locks before they flush, and
/// never flush from an interrupt handler.
///
/// # Safety
///
/// The allocators reuse an address as soon as a flush of it returns. An
/// implementation must guarantee that when
/// [`KernelTlb::flush_tlb_kernel_range`] returns, no CPU can use a
/// translation of an address in `[start, end)` that was removed or changed
/// before the call, and that when [`KernelTlb::flush_tlb_all`] returns, the
/// same holds for every address.
pub unsafe trait KernelTlb {
    /// Invalidates every CPU's translations of `[start, end)` (page
    /// granular: a partial page at either end is included).
    fn flush_tlb_kernel_range(&self, start: VirtAddr, end: VirtAddr);

    /// Invalidates every CPU's whole TLB, global entries included.
    fn flush_tlb_all(&self);
}

// SAFETY: forwards to `T`, which keeps the contract.
unsafe impl<T: KernelTlb + ?Sized> KernelTlb for &T {
    fn flush_tlb_kernel_range(&self, start: VirtAddr, end: VirtAddr) {
        (**self).flush_tlb_kernel_range(start, end)
    }
    fn flush_tlb_all(&self) {
        (**self).flush_tlb_all()
    }
}
