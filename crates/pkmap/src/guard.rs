//! [`KmapLocalGuard`]: a local mapping undone when the guard is dropped.

use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::sync::atomic::Ordering;

use kmm_hal::{Cpu, FrameSource, PageTable, VirtAddr};

use crate::ctx::Ctx;
use crate::error::KunmapLocalError;
use crate::local::LocalStacks;

/// A `kmap_local_page` or `kmap_atomic` mapping that `kunmap_local` /
/// `kunmap_atomic` undoes on drop.
///
/// Guards dropped in reverse order of creation (what Rust does with locals)
/// unmap in stack order. The order is still checked at run time: a guard
/// dropped while a later mapping is still held cannot unmap (the mapping
/// stays, and the pkmap's `guard_errors` counter says so); use
/// [`KmapLocalGuard::unmap`] to see the error instead. Not `Send`: the
/// mapping belongs to this CPU.
#[must_use = "the page is unmapped as soon as the guard is dropped"]
pub struct KmapLocalGuard<'p, P: PageTable, F: FrameSource, T, C: Cpu> {
    stacks: &'p LocalStacks,
    cx: &'p Ctx<'p, P, F, T, C>,
    addr: VirtAddr,
    atomic: bool,
    _not_send: PhantomData<*const ()>,
}

impl<'p, P: PageTable, F: FrameSource, T, C: Cpu> KmapLocalGuard<'p, P, F, T, C> {
    pub(crate) fn new(
        stacks: &'p LocalStacks,
        cx: &'p Ctx<'p, P, F, T, C>,
        addr: VirtAddr,
        atomic: bool,
    ) -> Self {
        KmapLocalGuard {
            stacks,
            cx,
            addr,
            atomic,
            _not_send: PhantomData,
        }
    }

    /// The kernel address the page is mapped at.
    pub fn addr(&self) -> VirtAddr {
        self.addr
    }

    /// True for a `kmap_atomic` mapping.
    pub fn is_atomic(&self) -> bool {
        self.atomic
    }

    /// Unmaps now and says whether it could. On error the mapping stays (undo
    /// it later with `kunmap_local` / `kunmap_atomic` of [`Self::addr`]).
    pub fn unmap(self) -> Result<(), KunmapLocalError> {
        let this = ManuallyDrop::new(self);
        this.stacks.kunmap(this.cx, this.addr, this.atomic)
    }
}

impl<P: PageTable, F: FrameSource, T, C: Cpu> Drop for KmapLocalGuard<'_, P, F, T, C> {
    fn drop(&mut self) {
        if self.stacks.kunmap(self.cx, self.addr, self.atomic).is_err() {
            self.stacks.guard_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<P: PageTable, F: FrameSource, T, C: Cpu> core::fmt::Debug for KmapLocalGuard<'_, P, F, T, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KmapLocalGuard")
            .field("addr", &self.addr)
            .field("atomic", &self.atomic)
            .finish()
    }
}
