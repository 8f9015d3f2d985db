//! [`CpuLocal`]: one value per CPU, touched without a lock by the CPU that owns
//! it (Linux's `DEFINE_PER_CPU` data reached with `get_cpu_var`).
//!
//! The buddy allocator's per-CPU page lists and the slab's per-CPU array
//! caches are built on it; `kmm-percpu` places its slots in per-CPU areas.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::cpu::{Cpu, IrqGuard, PreemptGuard};

/// A proof that the caller is pinned to one CPU: an [`IrqGuard`] or a
/// [`PreemptGuard`]. Sealed: only those two are proofs.
pub trait Pinned: sealed::Sealed {
    /// The CPU the caller is pinned to.
    fn pinned_cpu(&self) -> usize;
    /// True if interrupts are off (debug checks).
    #[doc(hidden)]
    fn pinned_ok(&self) -> bool;
}

mod sealed {
    pub trait Sealed {}
    impl<C: crate::Cpu> Sealed for crate::IrqGuard<'_, C> {}
    impl<C: crate::Cpu> Sealed for crate::PreemptGuard<'_, C> {}
}

impl<C: Cpu> Pinned for IrqGuard<'_, C> {
    #[inline]
    fn pinned_cpu(&self) -> usize {
        self.cpu().id()
    }
    #[inline]
    fn pinned_ok(&self) -> bool {
        self.cpu().irqs_disabled()
    }
}

impl<C: Cpu> Pinned for PreemptGuard<'_, C> {
    #[inline]
    fn pinned_cpu(&self) -> usize {
        self.cpu_id()
    }
    #[inline]
    fn pinned_ok(&self) -> bool {
        self.cpu().preempt_count() > 0
    }
}

/// One CPU's slot: `local`, which only that CPU touches, and `shared`, which
/// anyone may read (counters and flags kept in atomics). On a cache line of its
/// own, so CPUs do not share lines on their fast paths.
#[repr(align(64))]
pub struct PerCpu<T, S = ()> {
    local: UnsafeCell<T>,
    busy: AtomicBool,
    shared: S,
}

// SAFETY: `local` is only reached through `CpuLocal::with` and
// `PerCpu::try_local` (by the owning CPU, pinned, and never twice at once:
// `busy`), `CpuLocal::with_unchecked` (whose caller guarantees no other use is
// live) or `CpuLocal::with_offline` (whose caller guarantees the owner is not
// running), or `PerCpu::get_mut` (an exclusive borrow), so sharing the slot between
// threads gives at most one of them access to `local` at a time, which needs
// `T: Send`; `shared` is shared as `&S`.
unsafe impl<T: Send, S: Sync> Sync for PerCpu<T, S> {}

impl<T, S> PerCpu<T, S> {
    /// A slot holding `local` and `shared`.
    pub const fn new(local: T, shared: S) -> Self {
        PerCpu {
            local: UnsafeCell::new(local),
            busy: AtomicBool::new(false),
            shared,
        }
    }

    /// The part anyone may read.
    #[inline]
    pub fn shared(&self) -> &S {
        &self.shared
    }

    /// The local part, through an exclusive borrow of the slot.
    #[inline]
    pub fn get_mut(&mut self) -> &mut T {
        self.local.get_mut()
    }

    /// True while the owning CPU is inside [`CpuLocal::with`] on this slot,
    /// or holds its local part through [`PerCpu::try_local`].
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// The local part, held by the owning CPU until the returned value is
    /// dropped: the guard form of [`CpuLocal::with`], for slots that are
    /// not in one array (`kmm-percpu`'s copies of a per-CPU variable, one in
    /// each CPU's area). `None` if the slot is already in use on this CPU
    /// (a re-entry), exactly as `with` refuses it; the two exclude each
    /// other.
    ///
    /// # Safety
    /// This slot must be the copy that belongs to the CPU `pin` is pinned
    /// to, every user of the slot must pin with guards of one [`Cpu`] value
    /// (as in [`CpuLocal::new`]), and the returned value must be dropped on
    /// this CPU while the caller is still pinned (before `pin`, or the guard
    /// it proves, is dropped).
    #[inline]
    pub unsafe fn try_local<P: Pinned>(&self, pin: &P) -> Option<LocalMut<'_, T>> {
        debug_assert!(
            pin.pinned_ok(),
            "PerCpu::try_local: the caller is not pinned"
        );
        if self.busy.load(Ordering::Relaxed) {
            return None;
        }
        self.busy.store(true, Ordering::Relaxed);
        Some(LocalMut {
            // SAFETY: as in `CpuLocal::with`: the slot is the pinned CPU's
            // own (the caller's contract), no other CPU reaches its local
            // part, and `busy` was clear, so no other borrow on this CPU is
            // live; it stays set until the `LocalMut` is dropped.
            local: unsafe { &mut *self.local.get() },
            busy: &self.busy,
            _not_send: core::marker::PhantomData,
        })
    }
}

/// The local part of a [`PerCpu`] slot, held by its CPU
/// ([`PerCpu::try_local`]); the slot is released when this is dropped. Not
/// `Send`: it belongs to the CPU that took it.
pub struct LocalMut<'s, T> {
    local: &'s mut T,
    busy: &'s AtomicBool,
    _not_send: core::marker::PhantomData<*const ()>,
}

impl<T> core::ops::Deref for LocalMut<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        self.local
    }
}

impl<T> core::ops::DerefMut for LocalMut<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        self.local
    }
}

impl<T> Drop for LocalMut<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.busy.store(false, Ordering::Relaxed);
    }
}

/// One [`PerCpu`] slot for each CPU, indexed by [`Cpu::id`].
///
/// Access is by closure, on the calling CPU's slot, with the caller pinned
/// ([`Pinned`]: an [`IrqGuard`] if interrupt handlers also use the data, a
/// [`PreemptGuard`] otherwise). A slot that is already in use on this CPU — a
/// hook or interrupt handler re-entering the code that holds it — is not handed
/// out twice: [`CpuLocal::with`] returns `None` and the caller takes its slow
/// path. That check is what makes the exclusive borrow sound even if a caller
/// misuses its guards.
pub struct CpuLocal<'a, T, S = ()> {
    slots: &'a [PerCpu<T, S>],
}

impl<T, S> Clone for CpuLocal<'_, T, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, S> Copy for CpuLocal<'_, T, S> {}

impl<'a, T, S> CpuLocal<'a, T, S> {
    /// Per-CPU data in `slots`, slot `i` for CPU `i`.
    ///
    /// # Safety
    /// Every [`CpuLocal::with`] on these slots (through this value or a copy)
    /// must be given guards of one [`Cpu`] value or its clones: ids are only
    /// unique among the CPUs one value describes (two mock machines both have
    /// a CPU 0). The allocators build their `CpuLocal`s privately and pass
    /// only guards of the `Cpu` they were built with.
    pub const unsafe fn new(slots: &'a [PerCpu<T, S>]) -> Self {
        CpuLocal { slots }
    }

    /// Per-CPU data in `len` slots from `ptr`.
    ///
    /// # Safety
    /// `ptr` must point to `len` initialised slots that stay valid for `'a`,
    /// and the contract of [`CpuLocal::new`] holds.
    pub const unsafe fn from_raw_parts(ptr: *const PerCpu<T, S>, len: usize) -> Self {
        CpuLocal {
            // SAFETY: the caller guarantees `len` valid slots for `'a`.
            slots: unsafe { core::slice::from_raw_parts(ptr, len) },
        }
    }

    /// The number of slots.
    #[inline]
    pub const fn len(&self) -> usize {
        self.slots.len()
    }

    /// True if there are no slots.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The shared part of CPU `cpu`'s slot.
    #[inline]
    pub fn shared(&self, cpu: usize) -> Option<&'a S> {
        self.slots.get(cpu).map(PerCpu::shared)
    }

    /// Every slot, for reading the shared parts.
    #[inline]
    pub fn slots(&self) -> &'a [PerCpu<T, S>] {
        self.slots
    }

    /// Runs `f` on the calling CPU's slot. `None` if the CPU has no slot or its
    /// slot is already in use (a re-entry on this CPU).
    ///
    /// If `f` panics the slot stays marked in use: later calls get `None` and
    /// take their slow paths (no drop guard on the fast path; a kernel's
    /// panics do not unwind).
    #[inline(always)]
    pub fn with<P: Pinned, R>(&self, pin: &P, f: impl FnOnce(&mut T, &'a S) -> R) -> Option<R> {
        debug_assert!(pin.pinned_ok(), "CpuLocal::with: the caller is not pinned");
        let slot = self.slots.get(pin.pinned_cpu())?;
        if slot.busy.load(Ordering::Relaxed) {
            return None;
        }
        slot.busy.store(true, Ordering::Relaxed);
        // SAFETY: `Cpu` contract: while `pin` lives the calling thread stays on
        // this CPU and no other running CPU of the same `Cpu` value (`new`'s
        // contract: all guards come from one) has its id, so no other CPU is
        // in `with` on this slot; `busy` was clear, so no outer `with` on this CPU
        // holds it either (interrupt handlers and hooks that re-enter see it
        // set). `with_offline` is only used for CPUs that are not running.
        let local = unsafe { &mut *slot.local.get() };
        let r = f(local, &slot.shared);
        slot.busy.store(false, Ordering::Relaxed);
        Some(r)
    }

    /// [`CpuLocal::with`] without the re-entry check, for fast paths whose
    /// closure provably cannot re-enter: `None` only if the CPU has no slot.
    /// Debug builds still check (and panic on a re-entry).
    ///
    /// # Safety
    /// No other use of this CPU's slot may be live when this runs or start
    /// while `f` runs. That holds when every user of this `CpuLocal` (every
    /// `with`, `with_unchecked` and `with_offline` of its owner) pins with an
    /// [`IrqGuard`] and calls, with the slot held, nothing that could reach
    /// it again: no hook, no allocation, no [`Cpu::interrupt_point`]. A
    /// `CpuLocal` that some user holds with only a [`PreemptGuard`], or with
    /// interrupts re-enabled, must not use `with_unchecked` anywhere: an
    /// interrupt handler would find the slot in use.
    #[inline(always)]
    pub unsafe fn with_unchecked<P: Pinned, R>(
        &self,
        pin: &P,
        f: impl FnOnce(&mut T, &'a S) -> R,
    ) -> Option<R> {
        debug_assert!(
            pin.pinned_ok(),
            "CpuLocal::with_unchecked: the caller is not pinned"
        );
        let slot = self.slots.get(pin.pinned_cpu())?;
        #[cfg(debug_assertions)]
        {
            assert!(
                !slot.busy.swap(true, Ordering::Relaxed),
                "CpuLocal::with_unchecked re-entered"
            );
        }
        // SAFETY: as in `with`, with the caller's promise that nothing
        // re-enters while `f` runs standing in for the `busy` check.
        let local = unsafe { &mut *slot.local.get() };
        let r = f(local, &slot.shared);
        #[cfg(debug_assertions)]
        slot.busy.store(false, Ordering::Relaxed);
        Some(r)
    }

    /// Runs `f` on CPU `cpu`'s slot from another CPU (Linux's drain of a CPU
    /// that went offline). `None` if there is no such slot.
    ///
    /// # Safety
    /// CPU `cpu` must not be running code that reaches this data, and must not
    /// start to until this returns (it is offline or parked), and no other CPU
    /// may call `with_offline` for it at the same time.
    pub unsafe fn with_offline<R>(
        &self,
        cpu: usize,
        f: impl FnOnce(&mut T, &'a S) -> R,
    ) -> Option<R> {
        let slot = self.slots.get(cpu)?;
        // SAFETY: the caller guarantees nothing else touches the slot.
        let local = unsafe { &mut *slot.local.get() };
        Some(f(local, &slot.shared))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IrqState;
    use core::sync::atomic::AtomicUsize;

    /// One CPU, id 0: the interrupt flag and the preemption count.
    struct OneCpu(AtomicBool, AtomicUsize);

    // SAFETY: one CPU, always id 0; `irq_save` really records "off"; the
    // tests are single-threaded.
    unsafe impl Cpu for OneCpu {
        fn count(&self) -> usize {
            1
        }
        fn id(&self) -> usize {
            0
        }
        fn irq_save(&self) -> IrqState {
            IrqState::from_raw(usize::from(self.0.swap(true, Ordering::Relaxed)))
        }
        unsafe fn irq_restore(&self, state: IrqState) {
            self.0.store(state.raw() != 0, Ordering::Relaxed);
        }
        fn irqs_disabled(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
        fn preempt_disable(&self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
        unsafe fn preempt_enable(&self) {
            self.1.fetch_sub(1, Ordering::Relaxed);
        }
        fn preempt_count(&self) -> usize {
            self.1.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn with_gives_this_cpus_slot_once() {
        let cpu = OneCpu(AtomicBool::new(false), AtomicUsize::new(0));
        let slots = [PerCpu::new(0u32, 7u8)];
        // SAFETY: only `cpu`'s guards are used.
        let local = unsafe { CpuLocal::new(&slots) };
        let irq = cpu.irq_guard();
        let r = local.with(&irq, |v, s| {
            *v += 1;
            // A re-entry (a hook calling back in) does not get the slot again.
            assert!(local.with(&irq, |_, _| ()).is_none());
            *s
        });
        assert_eq!(r, Some(7));
        assert_eq!(local.with(&irq, |v, _| *v), Some(1), "released after use");
        drop(irq);
        let p = cpu.preempt_guard();
        assert_eq!(local.with(&p, |v, _| *v), Some(1));
    }

    #[test]
    fn try_local_and_with_exclude_each_other() {
        let cpu = OneCpu(AtomicBool::new(false), AtomicUsize::new(0));
        let slots = [PerCpu::new(0u32, ())];
        // SAFETY: only `cpu`'s guards are used.
        let local = unsafe { CpuLocal::new(&slots) };
        let p = cpu.preempt_guard();
        {
            // SAFETY: slot 0 is CPU 0's; dropped before `p`.
            let mut held = unsafe { slots[0].try_local(&p) }.unwrap();
            *held += 1;
            assert!(slots[0].is_busy());
            // SAFETY: as above.
            assert!(unsafe { slots[0].try_local(&p) }.is_none());
            assert!(local.with(&p, |_, _| ()).is_none());
        }
        assert!(!slots[0].is_busy());
        assert_eq!(local.with(&p, |v, _| *v), Some(1));
    }

    #[test]
    fn no_slot_for_an_unknown_cpu() {
        let cpu = OneCpu(AtomicBool::new(false), AtomicUsize::new(0));
        let slots: [PerCpu<u32>; 0] = [];
        let irq = cpu.irq_guard();
        // SAFETY: only `cpu`'s guards are used.
        let local = unsafe { CpuLocal::new(&slots) };
        assert!(local.with(&irq, |_, _| ()).is_none());
    }
}
