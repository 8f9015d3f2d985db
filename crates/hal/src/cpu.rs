//! The [`Cpu`] trait: which CPU is running, and the IRQ and preemption guards.

use core::marker::PhantomData;

/// Saved interrupt state, returned by [`Cpu::irq_save`] and given back to
/// [`Cpu::irq_restore`]. Opaque to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqState(pub usize);

/// The processors of the machine, as the allocators see them.
///
/// Per-CPU data is indexed by [`Cpu::id`], which is stable only while preemption
/// is off: take a [`PreemptGuard`] first.
pub trait Cpu {
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

impl<C: Cpu> Drop for IrqGuard<'_, C> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the state came from `irq_save` on this CPU when the guard was
        // made, and guards drop in reverse order of creation (they are not `Send`).
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

impl<C: Cpu> PreemptGuard<'_, C> {
    /// The id of the CPU the caller is pinned to.
    pub fn cpu_id(&self) -> usize {
        self.cpu.id()
    }
}

impl<C: Cpu> Drop for PreemptGuard<'_, C> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: matches the `preempt_disable` in `Cpu::preempt_guard`.
        unsafe { self.cpu.preempt_enable() }
    }
}
