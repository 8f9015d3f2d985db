//! [`KernelTables`]: the kernel page tables shared by every CPU, behind one
//! IRQ-safe lock (Linux's `init_mm.page_table_lock`).

use crate::sync::{IrqSaveGuard, IrqSpinLock};
use crate::{Cpu, FrameSource, PageTable};

/// The kernel's page tables and the frame source their page-table pages come
/// from, shared by vmalloc, pkmap and the fixmap users.
///
/// Every CPU writes the same tables, and `kmap_local_page` and
/// `kmap_atomic` may write them from an interrupt handler, so writes are
/// serialised by one [`IrqSpinLock`]: whoever changes a mapping holds it with
/// interrupts off, so an interrupt on the same CPU never spins on it. The
/// lock covers the tables only; TLB flushes of other CPUs
/// ([`crate::KernelTlb`]) are made after it is dropped.
pub struct KernelTables<P, F> {
    inner: IrqSpinLock<Tables<P, F>>,
}

/// The locked contents of [`KernelTables`].
#[derive(Debug)]
pub struct Tables<P, F> {
    /// The page tables.
    pub pt: P,
    /// Where page-table pages come from and go back to.
    pub frames: F,
}

impl<P: PageTable, F: FrameSource> KernelTables<P, F> {
    /// Shares `pt`, whose page-table pages come from `frames`.
    pub const fn new(pt: P, frames: F) -> Self {
        KernelTables {
            inner: IrqSpinLock::new("kernel page tables", Tables { pt, frames }),
        }
    }

    /// Disables interrupts on this CPU and takes the lock.
    #[inline]
    #[track_caller]
    pub fn lock<'a, C: Cpu>(&'a self, cpu: &'a C) -> IrqSaveGuard<'a, Tables<P, F>, C> {
        self.inner.lock_irqsave(cpu)
    }

    /// The tables and frames, for a caller that owns them exclusively.
    pub fn get_mut(&mut self) -> &mut Tables<P, F> {
        self.inner.get_mut()
    }

    /// Gives the tables and the frame source back.
    pub fn into_inner(self) -> Tables<P, F> {
        self.inner.into_inner()
    }
}

impl<P, F> core::fmt::Debug for KernelTables<P, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KernelTables")
            .field("locked", &self.inner.is_locked())
            .finish_non_exhaustive()
    }
}
