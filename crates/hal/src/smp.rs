//! [`CrossCall`]: running a short function on the other CPUs and waiting for
//! it (Linux's `smp_call_function` and `on_each_cpu`, sent as IPIs), and
//! [`UpCrossCall`], the version of a kernel where one CPU runs (Linux's
//! `kernel/up.c`).

use crate::cpu::Cpu;

/// Runs a function on every other running CPU and waits until all have run
/// it: Linux's `smp_call_function(func, info, wait = 1)` and `on_each_cpu`.
///
/// What kmm uses it for: a TLB shootdown (each CPU flushes its own TLB), and
/// draining other CPUs' per-CPU page lists and array caches
/// (`drain_all_pages`). The function is short, allocation-free work on the
/// CPU it runs on; it is passed as `&(dyn Fn() + Sync)` so no call allocates.
///
/// # The deadlock rule
///
/// A cross-CPU call waits for the other CPUs, so it is made only **with
/// interrupts enabled, no [`IrqSpinLock`](crate::sync::IrqSpinLock) held, and
/// not from an interrupt handler**, as in Linux (`smp_call_function` warns on
/// `irqs_disabled()`): a target CPU spinning with interrupts off on a lock
/// the caller holds, or two CPUs each waiting with interrupts off for the
/// other to answer, would never finish. The same rule covers
/// [`KernelTlb`](crate::KernelTlb), which on SMP is a cross-CPU call. A CPU
/// that spins with interrupts *enabled* (for a plain
/// [`SpinLock`](crate::sync::SpinLock), or in its own cross-CPU call) keeps
/// answering: it takes the call as an interrupt.
///
/// # Safety
///
/// kmm reuses memory as soon as a call returns (a flushed address, a drained
/// page), so an implementation must guarantee, for a call made under the
/// deadlock rule:
///
/// - **Every other CPU, exactly once.** [`CrossCall::smp_call_function`]
///   runs `func` exactly once on every running CPU except the calling one;
///   [`CrossCall::on_each_cpu`] runs it exactly once on every running CPU,
///   the calling one included. "On a CPU" means with that CPU's
///   [`Cpu::id`] and its per-CPU data: the code in `func` is that CPU's.
/// - **Interrupts off.** On the other CPUs `func` runs as an interrupt
///   handler: interrupts disabled and [`Cpu::in_interrupt`] true, never
///   nested inside code that has that CPU's interrupts disabled. On the
///   calling CPU (`on_each_cpu`) it runs with interrupts disabled, in the
///   caller's context (Linux's `local_irq_save(); func(); local_irq_restore()`).
///   Several CPUs may run `func` at the same time (hence `Sync`).
/// - **Wait for all.** The call returns only after every run of `func` has
///   finished, and what they wrote is visible to the caller.
/// - **The calling CPU stays put** while the call runs, so "every other CPU"
///   is well defined (an implementation disables preemption itself).
pub unsafe trait CrossCall {
    /// Runs `func` on every other running CPU, as an interrupt handler, and
    /// returns once all have run it (Linux's `smp_call_function` with
    /// `wait`). With one CPU running it does nothing.
    ///
    /// Made with interrupts enabled, no `IrqSpinLock` held, outside interrupt
    /// handlers (the deadlock rule).
    fn smp_call_function(&self, func: &(dyn Fn() + Sync));

    /// Runs `func` on every running CPU — the others as an interrupt handler,
    /// the calling one with interrupts disabled — and returns once all have
    /// run it (Linux's `on_each_cpu` with `wait`).
    ///
    /// Made under the same rule as [`CrossCall::smp_call_function`].
    fn on_each_cpu(&self, func: &(dyn Fn() + Sync));
}

// SAFETY: forwards to `T`, which keeps the contract.
unsafe impl<T: CrossCall + ?Sized> CrossCall for &T {
    fn smp_call_function(&self, func: &(dyn Fn() + Sync)) {
        (**self).smp_call_function(func)
    }
    fn on_each_cpu(&self, func: &(dyn Fn() + Sync)) {
        (**self).on_each_cpu(func)
    }
}

/// The [`CrossCall`] of a kernel where one CPU runs (Linux's `kernel/up.c`):
/// there is no other CPU, so [`CrossCall::smp_call_function`] runs nothing and
/// [`CrossCall::on_each_cpu`] runs the function here, with interrupts off.
///
/// Valid only while one CPU runs: [`UpCrossCall::new`] checks that the
/// [`Cpu`] has one CPU, and [`UpCrossCall::new_unchecked`] (an SMP kernel
/// before it starts its other CPUs) is `unsafe`. In builds with debug
/// assertions both methods check the deadlock rule (interrupts enabled, not in
/// an interrupt handler) so a broken call shows on one CPU before SMP hangs on
/// it.
///
/// ```
/// use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
/// use kmm_hal::{Cpu, CrossCall, IrqState, UpCrossCall};
///
/// /// A one-CPU machine's interrupt flag (a kernel's would be EFLAGS.IF).
/// struct OneCpu(AtomicBool);
///
/// // SAFETY: one CPU, id 0; `irq_save` really records "off" and nothing
/// // here runs interrupt handlers.
/// unsafe impl Cpu for OneCpu {
///     fn count(&self) -> usize { 1 }
///     fn id(&self) -> usize { 0 }
///     fn irq_save(&self) -> IrqState {
///         IrqState::from_raw(usize::from(self.0.swap(true, Ordering::Relaxed)))
///     }
///     unsafe fn irq_restore(&self, s: IrqState) { self.0.store(s.raw() != 0, Ordering::Relaxed) }
///     fn irqs_disabled(&self) -> bool { self.0.load(Ordering::Relaxed) }
///     fn preempt_disable(&self) {}
///     unsafe fn preempt_enable(&self) {}
///     fn preempt_count(&self) -> usize { 0 }
/// }
///
/// let calls = UpCrossCall::new(OneCpu(AtomicBool::new(false))).expect("one CPU");
/// let ran = AtomicUsize::new(0);
/// calls.smp_call_function(&|| { ran.fetch_add(1, Ordering::Relaxed); });
/// assert_eq!(ran.load(Ordering::Relaxed), 0, "no other CPU");
/// calls.on_each_cpu(&|| {
///     assert!(calls.cpu().irqs_disabled());
///     ran.fetch_add(1, Ordering::Relaxed);
/// });
/// assert_eq!(ran.load(Ordering::Relaxed), 1);
/// assert!(!calls.cpu().irqs_disabled());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct UpCrossCall<C> {
    cpu: C,
}

impl<C: Cpu> UpCrossCall<C> {
    /// The cross-CPU calls of `cpu`, or `None` unless it has exactly one CPU
    /// ([`Cpu::count`] is 1, so by `Cpu`'s contract no other CPU can run).
    pub fn new(cpu: C) -> Option<UpCrossCall<C>> {
        (cpu.count() == 1).then_some(UpCrossCall { cpu })
    }

    /// The cross-CPU calls of `cpu`, whatever its CPU count.
    ///
    /// # Safety
    /// Only one CPU may run while the value is used (say, an SMP kernel before
    /// it starts its other CPUs): the calls reach no other CPU, which keeps
    /// [`CrossCall`]'s contract only while there is none.
    pub const unsafe fn new_unchecked(cpu: C) -> UpCrossCall<C> {
        UpCrossCall { cpu }
    }

    /// The CPU.
    pub fn cpu(&self) -> &C {
        &self.cpu
    }

    /// In debug builds, panics if the caller breaks the deadlock rule.
    #[track_caller]
    fn check_rule(&self) {
        debug_assert!(
            !self.cpu.irqs_disabled() && !self.cpu.in_interrupt(),
            "kmm-hal: cross-CPU call with interrupts disabled or from an interrupt handler \
             (the deadlock rule of `CrossCall`)"
        );
    }
}

// SAFETY: one CPU runs (`new` saw a count of 1, or `new_unchecked`'s caller
// promised it), so "every other CPU" is none and `smp_call_function` has
// nothing to run; `on_each_cpu` runs `func` once, here, inside an IRQ guard
// (interrupts off, which also keeps this CPU from being preempted away), and
// returns after it.
unsafe impl<C: Cpu> CrossCall for UpCrossCall<C> {
    #[track_caller]
    fn smp_call_function(&self, func: &(dyn Fn() + Sync)) {
        self.check_rule();
        let _ = func;
    }

    #[track_caller]
    fn on_each_cpu(&self, func: &(dyn Fn() + Sync)) {
        self.check_rule();
        let _irq = self.cpu.irq_guard();
        func();
    }
}
