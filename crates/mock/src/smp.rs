//! Cross-CPU calls on the mock ([`kmm_hal::CrossCall`] for [`MockCpu`]):
//! Linux's `kernel/smp.c`, with a queue per simulated CPU standing in for the
//! IPI.
//!
//! - **Sending.** The sender checks the deadlock rule (it panics with
//!   interrupts disabled, with an interrupt guard alive — an `IrqSpinLock`
//!   may be held — or from an interrupt handler), queues the function for
//!   every target CPU and waits.
//! - **Where it runs.** A CPU that a thread is bound to runs its queue on
//!   that thread at its next point with interrupts enabled: an
//!   [`Cpu::interrupt_point`], an `IrqGuard` restoring "enabled" (builds
//!   with debug assertions only: in release builds, which the benchmarks
//!   use, the restore stays one store), or a spin for a plain lock
//!   ([`Cpu::cpu_relax`]). It runs as an interrupt handler: interrupts off,
//!   [`Cpu::in_interrupt`] true.
//! - **Unbound CPUs.** For a CPU no thread is bound to, the sender claims the
//!   CPU and runs its queue itself, acting as that CPU (its id, interrupts
//!   off, in interrupt context), so a call never waits for a thread that is
//!   not there.
//! - **Waiting.** The sender spins (yielding) until every target has run the
//!   function; meanwhile it takes its own CPU's pending calls and simulated
//!   interrupts, so two CPUs calling each other at once both finish.
//!
//! A thread bound to a CPU that never reaches such a point (blocked on a
//! host `Barrier` or channel, spinning in test code) makes a caller wait
//! forever, as a real CPU spinning with interrupts off would: test code that
//! spins while another CPU may cross-call calls `cpu.interrupt_point()`.

use std::sync::atomic::{AtomicUsize, Ordering};

use kmm_hal::{Cpu, CrossCall};

use crate::MockCpu;
use crate::call_queue::{Call, CallRef, IN_FLIGHT, run_queue};
use crate::cpu::{self, ACTING, FREE, Shared};

/// Runs the pending calls of every unbound CPU of `shared` but `me`, acting
/// as each one.
fn serve_unbound(shared: &Shared, me: Option<usize>) {
    for cpu in 0..shared.bound.len() {
        if Some(cpu) == me || shared.calls.queued[cpu].load(Ordering::Acquire) == 0 {
            continue;
        }
        if shared.bound[cpu]
            .compare_exchange(FREE, ACTING, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            cpu::as_cpu(shared, cpu, || run_queue(&shared.calls, cpu));
            shared.bound[cpu].store(FREE, Ordering::Release);
        }
    }
}

/// The sender's side of one call: waits for its targets, and on the way out
/// (also when unwinding) makes sure no target can still reach the call.
struct Wait<'a> {
    cpu: &'a MockCpu,
    call: &'a Call,
    me: Option<usize>,
}

impl Wait<'_> {
    /// Until every target ran the function: takes this CPU's own calls and
    /// interrupts, runs unbound CPUs' calls, yields.
    fn wait(&self) {
        while self.call.remaining.load(Ordering::Acquire) != 0 {
            if self.me.is_some() {
                self.cpu.irqs_on_slow();
            }
            serve_unbound(&self.cpu.shared, self.me);
            std::thread::yield_now();
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        // Only after an unwind can targets be left: take the call off the
        // queues it still waits on, then let the runs under way finish
        // (they need nothing from this CPU).
        if self.call.remaining.load(Ordering::Acquire) != 0 {
            let withdrawn = self
                .cpu
                .shared
                .calls
                .withdraw(CallRef(std::ptr::from_ref(self.call)));
            self.call.remaining.fetch_sub(withdrawn, Ordering::AcqRel);
            while self.call.remaining.load(Ordering::Acquire) != 0 {
                std::thread::yield_now();
            }
        }
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

impl MockCpu {
    /// Functions of cross-CPU calls run as CPU `cpu` so far (by its thread,
    /// or by a sender while no thread was bound to it); the calling CPU's own
    /// run in [`CrossCall::on_each_cpu`] is not counted.
    pub fn cross_calls_run(&self, cpu: usize) -> usize {
        self.shared
            .calls
            .run
            .get(cpu)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Panics if the calling thread breaks the deadlock rule of
    /// [`CrossCall`] and [`kmm_hal::KernelTlb`]: interrupts disabled, an
    /// interrupt guard alive (counted in builds with debug assertions; an
    /// `IrqSpinLock` may be held even after a guard dropped out of order
    /// re-enabled interrupts), or inside an interrupt handler. `what` names
    /// the operation in the message.
    #[track_caller]
    pub fn assert_may_wait(&self, what: &str) {
        cpu::assert_may_wait(what);
    }

    /// Both [`CrossCall`] methods: `func` on every CPU but the caller's, and
    /// on the caller's too (interrupts off) if `local`.
    #[track_caller]
    fn cross_call(&self, what: &str, func: &(dyn Fn() + Sync), local: bool) {
        cpu::assert_may_wait(what);
        let me = cpu::this_cpu_of(&self.shared);
        let _pinned = self.preempt_guard();
        let targets = self.count() - usize::from(me.is_some());
        // SAFETY: only the lifetime is erased; `Wait` keeps this frame (and
        // so the borrow of `func`) alive until no target can reach the call
        // any more, on return and on unwinding alike.
        let erased: *const (dyn Fn() + Sync + 'static) = unsafe {
            std::mem::transmute::<*const (dyn Fn() + Sync + '_), *const (dyn Fn() + Sync)>(func)
        };
        let call = Call {
            func: erased,
            remaining: AtomicUsize::new(targets),
            panicked: AtomicUsize::new(0),
        };
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        let wait = Wait {
            cpu: self,
            call: &call,
            me,
        };
        for cpu in (0..self.count()).filter(|&c| Some(c) != me) {
            self.shared.calls.push(cpu, CallRef(&raw const call));
        }
        if local && me.is_some() {
            let _irq = self.irq_guard();
            func();
        }
        wait.wait();
        drop(wait);
        if let Some(cpu) = call.panicked.load(Ordering::Relaxed).checked_sub(1) {
            panic!("kmm-mock: the function of a cross-CPU call ({what}) panicked on CPU {cpu}");
        }
    }
}

// SAFETY: `cross_call` queues the function once for every CPU but the
// caller's (all of them for a thread bound to none of this machine's CPUs),
// and each queue entry is taken once, under its queue's lock, by the thread
// bound to that CPU or by a sender that claimed the unbound CPU ([`ACTING`]:
// no thread can bind it meanwhile, so ids stay unique) and switched to its
// id. Either way it runs with that CPU's id, interrupts off and
// `in_interrupt` true, and only where that CPU had interrupts enabled and no
// handler running. `on_each_cpu` also runs it on the calling CPU inside an IRQ
// guard. The sender is pinned by a preemption guard and returns only when
// every target has decremented `remaining` (acquire/release: their writes are
// visible); on unwinding, `Wait` withdraws the entries not yet taken and
// waits for the runs under way.
unsafe impl CrossCall for MockCpu {
    /// Queues `func` for every other CPU and waits until all have run it.
    ///
    /// # Panics
    /// If the deadlock rule is broken ([`MockCpu::assert_may_wait`]), or if
    /// `func` panicked on another CPU.
    #[track_caller]
    fn smp_call_function(&self, func: &(dyn Fn() + Sync)) {
        self.cross_call("smp_call_function", func, false);
    }

    /// As [`MockCpu::smp_call_function`](CrossCall::smp_call_function), and
    /// runs `func` on the calling CPU with interrupts off.
    ///
    /// # Panics
    /// As `smp_call_function`.
    #[track_caller]
    fn on_each_cpu(&self, func: &(dyn Fn() + Sync)) {
        self.cross_call("on_each_cpu", func, true);
    }
}
