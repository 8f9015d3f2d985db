//! The [`Cpu`] trait: which CPU is running, and the IRQ and preemption guards.

use core::marker::PhantomData;

use crate::lock_report::LockReport;

/// Saved interrupt state, returned by [`Cpu::irq_save`] and given back to
/// [`Cpu::irq_restore`]. Opaque to callers; an implementation stores what it
/// needs (say, `EFLAGS`) with [`IrqState::from_raw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqState(usize);

impl IrqState {
    /// Wraps an implementation's saved state.
    #[inline]
    pub const fn from_raw(raw: usize) -> IrqState {
        IrqState(raw)
    }

    /// The implementation's saved state.
    #[inline]
    pub const fn raw(self) -> usize {
        self.0
    }
}

/// The processors of the machine, as the allocators see them.
///
/// Per-CPU data is indexed by [`Cpu::id`], which is stable only while preemption
/// or interrupts are off: take a [`PreemptGuard`] or an [`IrqGuard`] first.
///
/// # Safety
///
/// The allocators' per-CPU data ([`CpuLocal`](crate::CpuLocal), the buddy
/// allocator's page lists, the slab's array caches) is touched without a lock
/// by the CPU that owns it, so memory safety rests on this contract. An
/// implementation must guarantee:
///
/// - **Unique ids.** [`Cpu::id`] returns a value that no other CPU running at
///   the same moment returns through the same value or its clones, and that is
///   `< count()`. (Two threads that both answer 0 would both own CPU 0's
///   lists.) Ids are per value: a value and its clones describe one machine's
///   CPUs, and kmm never mixes two values' ids on one piece of data.
/// - **Stable ids.** While the calling CPU has preemption disabled
///   ([`Cpu::preempt_disable`]) or interrupts disabled ([`Cpu::irq_save`]),
///   [`Cpu::id`] keeps returning the same value: the thread cannot migrate.
/// - **Real interrupt masking.** Between [`Cpu::irq_save`] and the matching
///   [`Cpu::irq_restore`] no interrupt handler runs on this CPU, and
///   [`Cpu::irqs_disabled`] returns `true`; [`Cpu::in_interrupt`] is `true`
///   exactly while an interrupt handler runs on this CPU.
/// - **A fixed count.** [`Cpu::count`] returns the same value for the life of
///   the object.
/// - **No re-entry with interrupts off.** [`Cpu::interrupt_point`],
///   [`Cpu::cpu_relax`] and [`Cpu::lockdep_report`] run no code that calls
///   into kmm while interrupts are disabled on the calling CPU.
///
/// `Sync` because one value (or its clones) is used by every CPU at once: the
/// allocators share it, and a cross-CPU call runs their code, with it, on the
/// other CPUs.
pub unsafe trait Cpu: Sync {
    /// The number of CPUs; ids are `0..count()`.
    fn count(&self) -> usize;

    /// The id of the CPU running the caller.
    fn id(&self) -> usize;

    /// Disables interrupts on this CPU and returns the previous state.
    fn irq_save(&self) -> IrqState;

    /// Restores the interrupt state saved by [`Cpu::irq_save`].
    ///
    /// # Safety
    /// `state` must come from the matching `irq_save` on this CPU, and saves and
    /// restores must nest.
    unsafe fn irq_restore(&self, state: IrqState);

    /// True if interrupts are disabled on this CPU.
    fn irqs_disabled(&self) -> bool;

    /// Increments this CPU's preemption count: the thread stays on this CPU.
    fn preempt_disable(&self);

    /// Decrements the preemption count.
    ///
    /// # Safety
    /// Must match an earlier [`Cpu::preempt_disable`] on this CPU.
    unsafe fn preempt_enable(&self);

    /// This CPU's preemption count: zero when the running thread may be preempted.
    fn preempt_count(&self) -> usize;

    /// True while an interrupt handler runs on this CPU (Linux's
    /// `in_interrupt()`). The lock checker uses it; the default says never,
    /// which is right for a kernel whose handlers never allocate.
    #[inline]
    fn in_interrupt(&self) -> bool {
        false
    }

    /// A point where the caller could be interrupted: the allocators call it on
    /// entry to their slow paths (reap, shrink, refill, mempool calls), with no
    /// lock held and no per-CPU data borrowed. A real CPU takes interrupts
    /// whenever they are enabled, so the default does nothing; the host mock
    /// delivers pending simulated interrupts here when interrupts are enabled,
    /// so tests can interrupt an allocator mid-call.
    ///
    /// Part of the trait's contract: with interrupts disabled on this CPU,
    /// `interrupt_point` runs no code that could call into kmm (no interrupt
    /// can be taken then, and kmm relies on it not re-entering).
    #[inline]
    fn interrupt_point(&self) {}

    /// Called by [`sync`](crate::sync)'s locks while they spin for a lock
    /// another CPU holds (Linux's `cpu_relax()` in a spin loop), with the
    /// caller's interrupts on or off, and possibly other locks held and
    /// per-CPU data borrowed. The default is the spin-loop hint (PAUSE).
    ///
    /// A real CPU spinning with interrupts enabled takes interrupts — IPIs
    /// included, which is what keeps a cross-CPU call ([`crate::CrossCall`])
    /// from waiting forever on a CPU spinning for a plain lock the caller
    /// holds. The host mock, whose CPUs are threads, takes pending cross-CPU
    /// calls here when interrupts are enabled. As with
    /// [`Cpu::interrupt_point`], with interrupts disabled it runs no code
    /// that could call into kmm.
    #[inline]
    fn cpu_relax(&self) {
        core::hint::spin_loop();
    }

    /// Called by [`sync`](crate::sync)'s lock checker when a lock was taken
    /// both from an interrupt handler and with interrupts enabled: the deadlock
    /// Linux's lockdep calls "inconsistent lock state". It runs with the
    /// offending lock held, so it must not take kmm locks or allocate. The
    /// default ignores the report; the mock records it (and by default panics).
    #[inline]
    fn lockdep_report(&self, report: &LockReport) {
        let _ = report;
    }

    /// Disables interrupts until the guard is dropped.
    #[inline]
    fn irq_guard(&self) -> IrqGuard<'_, Self>
    where
        Self: Sized,
    {
        IrqGuard {
            state: self.irq_save(),
            cpu: self,
            _not_send: PhantomData,
        }
    }

    /// Disables preemption until the guard is dropped.
    #[inline]
    fn preempt_guard(&self) -> PreemptGuard<'_, Self>
    where
        Self: Sized,
    {
        self.preempt_disable();
        PreemptGuard {
            cpu: self,
            _not_send: PhantomData,
        }
    }
}

/// Interrupts stay disabled while this lives. Not `Send`: it belongs to one CPU.
#[must_use = "interrupts are re-enabled as soon as the guard is dropped"]
pub struct IrqGuard<'a, C: Cpu> {
    state: IrqState,
    cpu: &'a C,
    _not_send: PhantomData<*const ()>,
}

impl<'a, C: Cpu> IrqGuard<'a, C> {
    /// The CPU whose interrupts the guard keeps off.
    #[inline]
    pub fn cpu(&self) -> &'a C {
        self.cpu
    }
}

impl<C: Cpu> Drop for IrqGuard<'_, C> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the state came from `irq_save` on this CPU when the guard was
        // made (the guard is not `Send`, so it is dropped on the same CPU).
        unsafe { self.cpu.irq_restore(self.state) }
    }
}

/// Preemption stays disabled while this lives, so [`PreemptGuard::cpu_id`] stays
/// right. Not `Send`: it belongs to one CPU.
#[must_use = "preemption is re-enabled as soon as the guard is dropped"]
pub struct PreemptGuard<'a, C: Cpu> {
    cpu: &'a C,
    _not_send: PhantomData<*const ()>,
}

impl<'a, C: Cpu> PreemptGuard<'a, C> {
    /// The id of the CPU the caller is pinned to.
    pub fn cpu_id(&self) -> usize {
        self.cpu.id()
    }

    /// The CPU the guard keeps preemption off on.
    #[inline]
    pub fn cpu(&self) -> &'a C {
        self.cpu
    }
}

impl<C: Cpu> Drop for PreemptGuard<'_, C> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: matches the `preempt_disable` in `Cpu::preempt_guard`.
        unsafe { self.cpu.preempt_enable() }
    }
}
