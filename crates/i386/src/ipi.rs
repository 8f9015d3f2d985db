//! [`ApicCrossCall`]: the [`CrossCall`] of an SMP i386 kernel — Linux's
//! `smp_call_function` on the local APIC (2.6's `call_data` and
//! `smp_call_function_interrupt`, `arch/i386/kernel/smp.c`).
//!
//! # The protocol
//!
//! One call is in flight at a time. A sender takes the call lock **with
//! interrupts enabled**, spinning with [`Cpu::cpu_relax`], so while it waits
//! it still answers the calls of the CPU that holds the lock (the deadlock
//! rule of [`CrossCall`]). Holding the lock it publishes the function and
//! two masks of the target CPUs (the online CPUs but itself): `pending`
//! (not started) and `unfinished` (not done), sends a fixed IPI of the
//! call vector to each target's APIC id, and spins until `unfinished` is
//! empty. A target's interrupt handler calls [`ApicCrossCall::handle_ipi`]:
//! it claims its bit of `pending` (so a late or duplicate IPI runs nothing),
//! runs the function, and clears its bit of `unfinished` with release
//! ordering, which publishes what the function wrote to the sender's acquire
//! load. The function slot is rewritten only by the next lock holder, after
//! `unfinished` was seen empty, so no handler can still read it.
//!
//! A CPU joins the calls with [`ApicCrossCall::cpu_online`] under the call
//! lock (Linux's `ipi_call_lock` around `cpu_set(cpu, cpu_online_map)`), so it
//! never sees half a call and no call waits for a CPU that was not asked.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering};

use kmm_hal::{Cpu, CrossCall};

use crate::apic::LocalApic;

/// The most CPUs an [`ApicCrossCall`] reaches (the width of its masks).
pub const MAX_CPUS: usize = 32;

/// The function of the call in flight, with its borrow's lifetime erased.
type CallFn = &'static (dyn Fn() + Sync);

/// What the calls did, for a kernel's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CrossCallStats {
    /// Calls that reached at least one other CPU.
    pub calls: usize,
    /// IPIs sent.
    pub ipis: usize,
    /// Runs of a call's function on a target CPU (the IPI handler's work).
    pub handled: usize,
    /// IPIs that found nothing to run (a duplicate or late interrupt).
    pub spurious: usize,
}

/// Linux's `smp_call_function` / `on_each_cpu` over the local APIC.
///
/// One call at a time: the sender takes a call lock with interrupts
/// enabled (so it keeps answering other senders' IPIs while it waits),
/// publishes the function and the masks of its targets (the online CPUs but
/// itself), sends each a fixed IPI and spins until all have run it. Each
/// target claims its bit before running, so a duplicate IPI runs nothing.
///
/// The kernel:
/// - gives one IDT vector (an interrupt gate) to the calls, whose handler
///   calls `I386SmpCpu::irq_enter`,
///   [`ApicCrossCall::handle_ipi`], `irq_exit`, then sends the EOI
///   ([`LocalApic::eoi`]);
/// - calls [`ApicCrossCall::cpu_online`] on each CPU once that CPU's APIC
///   is enabled and its IDT loaded, before it enables interrupts.
///
/// Until another CPU is online the calls send nothing, so the same value
/// serves a kernel on one CPU and the boot CPU before it starts the others.
///
/// ```
/// use core::ptr::NonNull;
/// use kmm_hal::{Cpu, CrossCall};
/// use kmm_i386::{ApicCrossCall, LocalApic};
/// use kmm_mock::MockCpu;
///
/// // A page of memory stands in for the APIC's registers on the host.
/// #[repr(C, align(4096))]
/// struct Regs([u32; 1024]);
/// let mut regs = Box::new(Regs([0; 1024]));
/// // SAFETY: the page outlives `apic`; no CPU reads these "registers".
/// let apic = unsafe { LocalApic::new(NonNull::new(regs.0.as_mut_ptr()).unwrap()) };
///
/// let cpu = MockCpu::new(1);
/// let _on_cpu0 = cpu.bind(0).unwrap();
/// // SAFETY: (a kernel: its IDT routes 0xFB to `handle_ipi` on every CPU)
/// // one CPU here, and nothing else sends the vector.
/// let calls = unsafe { ApicCrossCall::new(cpu.clone(), apic, 0xFB) };
/// // SAFETY: once, on this CPU, "APIC enabled and IDT loaded".
/// unsafe { calls.cpu_online() };
/// let ran = std::sync::atomic::AtomicUsize::new(0);
/// calls.on_each_cpu(&|| {
///     assert!(cpu.irqs_disabled());
///     ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
/// });
/// assert_eq!(ran.into_inner(), 1);
/// assert_eq!(calls.stats().ipis, 0, "no other CPU online: no IPI");
/// ```
pub struct ApicCrossCall<C> {
    cpu: C,
    apic: LocalApic,
    vector: u8,
    /// The call lock: held by the sender for a whole call.
    lock: AtomicBool,
    /// The call's function; written only by the lock holder while no target
    /// is pending or unfinished.
    func: UnsafeCell<Option<CallFn>>,
    /// Targets that have not claimed the current call.
    pending: AtomicU32,
    /// Targets that have not finished it.
    unfinished: AtomicU32,
    /// CPUs that answer calls.
    online: AtomicU32,
    /// APIC id of each online CPU, by CPU id.
    apic_ids: [AtomicU8; MAX_CPUS],
    calls: AtomicUsize,
    ipis: AtomicUsize,
    handled: AtomicUsize,
    spurious: AtomicUsize,
}

// SAFETY: every field but `func` is atomic or immutable (`cpu` and `apic`
// are shared by reference: `C: Sync`, and `LocalApic` is `Sync`); `func` is
// written only by the call-lock holder while no handler may read it, and read
// by handlers only between claiming a pending bit and clearing their
// unfinished bit (see the module docs), so its accesses never race.
unsafe impl<C: Sync> Sync for ApicCrossCall<C> {}

impl<C> core::fmt::Debug for ApicCrossCall<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ApicCrossCall")
            .field("vector", &self.vector)
            .field("online", &self.online.load(Ordering::Relaxed))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<C> ApicCrossCall<C> {
    /// The calls of the CPUs `cpu` describes, sent through `apic` with IDT
    /// vector `vector`. No CPU is online yet: the boot CPU calls
    /// [`ApicCrossCall::cpu_online`] too.
    ///
    /// # Safety
    ///
    /// Ring 0 on a machine with local APICs; `apic` maps the local APIC on
    /// every CPU that uses the value. On every CPU that goes online,
    /// `vector` is routed to an interrupt gate whose handler brackets
    /// [`ApicCrossCall::handle_ipi`] with `cpu`'s interrupt-nesting count
    /// (so [`Cpu::in_interrupt`] is true in it) and then sends the EOI, and
    /// nothing else sends `vector`. A CPU online never stops taking
    /// interrupts for good (it may disable them for bounded stretches) and
    /// never goes offline.
    pub const unsafe fn new(cpu: C, apic: LocalApic, vector: u8) -> ApicCrossCall<C> {
        ApicCrossCall {
            cpu,
            apic,
            vector,
            lock: AtomicBool::new(false),
            func: UnsafeCell::new(None),
            pending: AtomicU32::new(0),
            unfinished: AtomicU32::new(0),
            online: AtomicU32::new(0),
            apic_ids: [const { AtomicU8::new(0) }; MAX_CPUS],
            calls: AtomicUsize::new(0),
            ipis: AtomicUsize::new(0),
            handled: AtomicUsize::new(0),
            spurious: AtomicUsize::new(0),
        }
    }

    /// The CPUs.
    pub fn cpu(&self) -> &C {
        &self.cpu
    }

    /// The local APIC.
    pub fn apic(&self) -> &LocalApic {
        &self.apic
    }

    /// The IDT vector of the calls.
    pub fn vector(&self) -> u8 {
        self.vector
    }

    /// The online CPUs, as a mask of CPU ids.
    pub fn online_mask(&self) -> u32 {
        self.online.load(Ordering::Acquire)
    }

    /// How many CPUs are online.
    pub fn online_count(&self) -> usize {
        self.online_mask().count_ones() as usize
    }

    /// What the calls did so far.
    pub fn stats(&self) -> CrossCallStats {
        CrossCallStats {
            calls: self.calls.load(Ordering::Relaxed),
            ipis: self.ipis.load(Ordering::Relaxed),
            handled: self.handled.load(Ordering::Relaxed),
            spurious: self.spurious.load(Ordering::Relaxed),
        }
    }
}

impl<C: Cpu> ApicCrossCall<C> {
    /// Takes the call lock, spinning with [`Cpu::cpu_relax`] (interrupts as
    /// the caller has them).
    fn lock(&self) {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.lock.load(Ordering::Relaxed) {
                self.cpu.cpu_relax();
            }
        }
    }

    fn unlock(&self) {
        self.lock.store(false, Ordering::Release);
    }

    /// Makes the calling CPU a target of every later call (Linux's
    /// `cpu_set(cpu, cpu_online_map)` under `ipi_call_lock`), recording its
    /// APIC id. Waits for a call in flight to finish first.
    ///
    /// # Safety
    ///
    /// Called once per CPU, on that CPU, after its local APIC is enabled
    /// and its IDT routes the call vector as [`ApicCrossCall::new`] says:
    /// from now on calls wait for this CPU to answer. Its [`Cpu::id`] must be
    /// below [`MAX_CPUS`].
    pub unsafe fn cpu_online(&self) {
        let id = self.cpu.id();
        assert!(id < MAX_CPUS, "kmm-i386: CPU id {id} past MAX_CPUS");
        let _irq = self.cpu.irq_guard();
        self.lock();
        self.apic_ids[id].store(self.apic.id(), Ordering::Relaxed);
        self.online.fetch_or(1 << id, Ordering::Release);
        self.unlock();
    }

    /// The call vector's handler body (Linux's
    /// `smp_call_function_interrupt`): runs the call in flight if this CPU
    /// is one of its targets that has not run it yet, then reports it done.
    /// The kernel calls it from the vector's interrupt gate, inside its
    /// `irq_enter`/`irq_exit`, and sends the EOI after it.
    ///
    /// Called anywhere else — interrupts enabled, or not inside an
    /// interrupt handler — it runs nothing and counts a spurious IPI: the
    /// call's function must run in an interrupt handler of the CPU whose
    /// bit it claims, and a caller that could migrate between reading its
    /// id and running the function would flush or drain the wrong CPU.
    pub fn handle_ipi(&self) {
        if !self.cpu.irqs_disabled() || !self.cpu.in_interrupt() {
            self.spurious.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(bit) = 1u32.checked_shl(self.cpu.id() as u32) else {
            self.spurious.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.pending.fetch_and(!bit, Ordering::Acquire) & bit == 0 {
            self.spurious.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // SAFETY: this CPU claimed its pending bit of the current call, so
        // the lock holder published `func` before it (the acquire above
        // pairs with its release store of `pending`) and will not rewrite it
        // until this CPU clears its unfinished bit below.
        let func = unsafe { *self.func.get() };
        if let Some(f) = func {
            f();
        }
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.unfinished.fetch_and(!bit, Ordering::Release);
    }

    /// Panics unless the caller keeps the deadlock rule: a kernel hangs
    /// otherwise, and a panic names the caller.
    #[track_caller]
    fn check_rule(&self) {
        assert!(
            !self.cpu.irqs_disabled() && !self.cpu.in_interrupt(),
            "kmm-i386: cross-CPU call with interrupts disabled or from an interrupt handler \
             (the deadlock rule of `CrossCall`)"
        );
    }
}

// SAFETY: (see the module docs) every online CPU but the caller is a target
// (the online mask is read under the call lock, which `cpu_online` also
// takes, so the set is exact); each target runs `func` at most once (it
// claims its `pending` bit atomically) and at least once (it got an IPI
// after `pending` was published, and the vector's handler calls
// `handle_ipi`, `new`'s contract), in its interrupt handler (interrupts off,
// `in_interrupt` true: `handle_ipi` runs nothing otherwise, so the id it
// claims for is the CPU that runs `func`). The sender returns after `unfinished` is empty
// (acquire; targets clear their bit with release after `func` returned), so
// every run has finished and its writes are visible. The caller is pinned
// by a preemption guard. `on_each_cpu` runs `func` once more on the caller
// with interrupts off. `func`'s lifetime is erased only for the duration of
// the call, which outlives every run.
unsafe impl<C: Cpu> CrossCall for ApicCrossCall<C> {
    #[track_caller]
    fn smp_call_function(&self, func: &(dyn Fn() + Sync)) {
        self.check_rule();
        let preempt = self.cpu.preempt_guard();
        let me = preempt.cpu_id();
        self.lock();
        let me_bit = 1u32.checked_shl(me as u32).unwrap_or(0);
        let targets = self.online.load(Ordering::Acquire) & !me_bit;
        if targets != 0 {
            // SAFETY: the call waits below until no handler can read the
            // slot any more, and clears it before unlocking, so the erased
            // borrow is never used after this function returns.
            let f: CallFn = unsafe { core::mem::transmute::<&(dyn Fn() + Sync), CallFn>(func) };
            // SAFETY: the call lock is held and the previous call finished
            // (`unfinished` was empty when it released the lock), so no
            // handler reads the slot.
            unsafe { *self.func.get() = Some(f) };
            self.unfinished.store(targets, Ordering::Relaxed);
            self.pending.store(targets, Ordering::Release);
            {
                // Interrupts off while writing the ICR pair, so no handler
                // on this CPU sends between the two halves.
                let _irq = self.cpu.irq_guard();
                let mut rest = targets;
                while rest != 0 {
                    let cpu = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    let apic_id = self.apic_ids[cpu].load(Ordering::Relaxed);
                    self.apic.send_fixed(apic_id, self.vector);
                    self.ipis.fetch_add(1, Ordering::Relaxed);
                }
            }
            while self.unfinished.load(Ordering::Acquire) != 0 {
                self.cpu.cpu_relax();
            }
            // SAFETY: every target has finished: no handler reads the slot.
            unsafe { *self.func.get() = None };
            self.calls.fetch_add(1, Ordering::Relaxed);
        }
        self.unlock();
        drop(preempt);
    }

    #[track_caller]
    fn on_each_cpu(&self, func: &(dyn Fn() + Sync)) {
        let _preempt = self.cpu.preempt_guard();
        self.smp_call_function(func);
        let _irq = self.cpu.irq_guard();
        func();
    }
}
