//! Cross-CPU calls on the mock ([`CrossCall`] for [`MockCpu`]): where the
//! function runs (each target CPU's own thread, in interrupt context with
//! interrupts off; the sender for a CPU no thread is bound to), that the
//! sender waits for all of them, that CPUs calling each other at once finish,
//! and that the deadlock rule is enforced.
//!
//! Target threads wait for the test with [`Cpu::interrupt_point`] in their
//! spin loop — where a kernel's CPU spinning with interrupts enabled would
//! take the IPI. None of these tests needs simulated interrupts except the
//! one that calls from an interrupt handler: cross-CPU calls are taken in
//! every build.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, ThreadId};
use std::time::Duration;

use kmm_hal::sync::IrqSpinLock;
use kmm_hal::{Cpu, CrossCall, KernelTlb, VirtAddr};
use kmm_mock::{Machine, MockCpu, watchdog};

const LIMIT: Duration = Duration::from_secs(60);

/// What one run of a cross-call function saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    cpu: usize,
    thread: ThreadId,
    in_interrupt: bool,
    irqs_disabled: bool,
}

/// Records every run of the test's function.
#[derive(Default)]
struct Runs(Mutex<Vec<Run>>);

impl Runs {
    fn record(&self, cpu: &MockCpu) {
        self.0.lock().unwrap().push(Run {
            cpu: cpu.id(),
            thread: thread::current().id(),
            in_interrupt: cpu.in_interrupt(),
            irqs_disabled: cpu.irqs_disabled(),
        });
    }

    /// The runs so far, in CPU order.
    fn sorted(&self) -> Vec<Run> {
        let mut v = self.0.lock().unwrap().clone();
        v.sort_by_key(|r| r.cpu);
        v
    }
}

/// Binds a thread to each CPU in `cpus`; each records its thread id, then
/// spins at interrupt points until `stop`. Returns once all are bound.
fn idle_cpus<'s>(
    s: &'s thread::Scope<'s, '_>,
    cpu: &'s MockCpu,
    cpus: &'s [usize],
    threads: &'s Mutex<Vec<(usize, ThreadId)>>,
    stop: &'s AtomicBool,
) {
    for &id in cpus {
        s.spawn(move || {
            let _b = cpu.bind(id).unwrap();
            threads.lock().unwrap().push((id, thread::current().id()));
            while !stop.load(Ordering::Acquire) {
                cpu.interrupt_point();
                thread::yield_now();
            }
        });
    }
    while threads.lock().unwrap().len() < cpus.len() {
        thread::yield_now();
    }
}

#[test]
fn each_cpu_runs_the_function_once_in_interrupt_context_on_its_thread() {
    let cpu = MockCpu::new(4);
    let threads = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    watchdog("delivery on four CPUs", LIMIT, || {
        thread::scope(|s| {
            idle_cpus(s, &cpu, &[1, 2, 3], &threads, &stop);
            let _b = cpu.bind(0).unwrap();
            let me = thread::current().id();
            let owner = |id: usize| {
                threads
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|t| t.0 == id)
                    .map(|t| t.1)
            };

            let runs = Runs::default();
            cpu.smp_call_function(&|| runs.record(&cpu));
            // Returned only after all three ran it: nothing is left to count.
            let got = runs.sorted();
            assert_eq!(got.len(), 3, "{got:?}");
            for (run, id) in got.iter().zip(1..) {
                assert_eq!(run.cpu, id);
                assert_eq!(Some(run.thread), owner(id), "CPU {id} ran it on its thread");
                assert!(run.in_interrupt && run.irqs_disabled, "{run:?}");
            }

            let runs = Runs::default();
            cpu.on_each_cpu(&|| runs.record(&cpu));
            let got = runs.sorted();
            assert_eq!(got.iter().map(|r| r.cpu).collect::<Vec<_>>(), [0, 1, 2, 3]);
            // The calling CPU: interrupts off, in its own (process) context.
            assert_eq!(
                got[0],
                Run {
                    cpu: 0,
                    thread: me,
                    in_interrupt: false,
                    irqs_disabled: true
                }
            );
            assert!(got[1..].iter().all(|r| r.in_interrupt && r.irqs_disabled));
            assert!(!cpu.irqs_disabled() && !cpu.in_interrupt());
            stop.store(true, Ordering::Release);
        });
    });
    assert_eq!(
        (0..4).map(|c| cpu.cross_calls_run(c)).collect::<Vec<_>>(),
        [0, 2, 2, 2],
        "CPU 0's own run is not a queued call"
    );
}

#[test]
fn the_sender_runs_the_function_for_a_cpu_no_thread_is_bound_to() {
    let cpu = MockCpu::new(3);
    let threads = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    watchdog("an unbound CPU", LIMIT, || {
        thread::scope(|s| {
            idle_cpus(s, &cpu, &[1], &threads, &stop);
            let _b = cpu.bind(0).unwrap();
            let me = thread::current().id();
            let runs = Runs::default();
            cpu.smp_call_function(&|| runs.record(&cpu));
            let got = runs.sorted();
            assert_eq!(got.len(), 2, "{got:?}");
            assert_eq!(got[0].cpu, 1);
            assert_ne!(got[0].thread, me, "CPU 1 has a thread of its own");
            // CPU 2 has no thread: the sender ran it, as CPU 2, in interrupt
            // context, and gave the CPU back.
            assert_eq!(
                got[1],
                Run {
                    cpu: 2,
                    thread: me,
                    in_interrupt: true,
                    irqs_disabled: true
                }
            );
            assert_eq!(cpu.id(), 0);
            assert!(!cpu.irqs_disabled() && !cpu.in_interrupt());
            stop.store(true, Ordering::Release);
        });
    });
    // A thread bound to no CPU calls as none of them: every CPU is "other".
    let runs = Runs::default();
    cpu.smp_call_function(&|| runs.record(&cpu));
    let got = runs.sorted();
    assert_eq!(got.iter().map(|r| r.cpu).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(got.iter().all(|r| r.thread == thread::current().id()));
    assert_eq!(cpu.bind(2).map(|b| b.id()), Ok(2), "CPU 2 is free again");
}

/// Every CPU sends calls while the others send theirs: each waits for the
/// others and takes their calls meanwhile, so all finish. (Were a waiting
/// sender deaf to calls, two CPUs calling each other would hang.)
#[test]
fn cpus_calling_each_other_at_once_all_finish() {
    const CPUS: usize = 4;
    const ROUNDS: usize = 50;
    let cpu = MockCpu::new(CPUS);
    let ran: Vec<AtomicUsize> = (0..CPUS).map(|_| AtomicUsize::new(0)).collect();
    watchdog("cross-calls between all CPUs", LIMIT, || {
        cpu.run_on_each(|id| {
            for round in 0..ROUNDS {
                let count = || {
                    ran[cpu.id()].fetch_add(1, Ordering::Relaxed);
                };
                if (id + round) % 2 == 0 {
                    cpu.smp_call_function(&count);
                } else {
                    cpu.on_each_cpu(&count);
                }
            }
        });
    });
    // Each CPU ran every other CPU's calls, and its own `on_each_cpu` ones.
    let own_local = |id: usize| (0..ROUNDS).filter(|r| (id + r) % 2 == 1).count();
    for (id, ran) in ran.iter().enumerate() {
        let want = (CPUS - 1) * ROUNDS + own_local(id);
        assert_eq!(ran.load(Ordering::Relaxed), want, "CPU {id}");
        assert_eq!(cpu.cross_calls_run(id), (CPUS - 1) * ROUNDS, "CPU {id}");
    }
}

#[test]
#[should_panic(expected = "interrupts disabled")]
fn a_call_with_interrupts_off_panics() {
    let cpu = MockCpu::new(2);
    let _b = cpu.bind(0).unwrap();
    let _irq = cpu.irq_guard();
    cpu.smp_call_function(&|| ());
}

#[test]
#[should_panic(expected = "interrupts disabled")]
fn a_call_with_an_irq_safe_lock_held_panics() {
    let cpu = MockCpu::new(2);
    let _b = cpu.bind(0).unwrap();
    let lock = IrqSpinLock::new("zone", ());
    let _held = lock.lock_irqsave(&cpu);
    cpu.on_each_cpu(&|| ());
}

/// An `IrqSpinLock` held after an outer guard was dropped before the inner
/// one: interrupts are on again, but the lock is still held. The mock counts
/// live interrupt guards and refuses the call (and a kernel-wide flush).
#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "the mock counts interrupt guards in builds with debug assertions"
)]
fn a_call_with_an_irq_safe_lock_held_and_interrupts_back_on_panics() {
    let m = Machine::builder().ram(4 << 20).cpus(2).build().unwrap();
    let cpu = m.cpu();
    let _b = cpu.bind(0).unwrap();
    let lock = IrqSpinLock::new("zone", ());
    let outer = cpu.irq_guard();
    let inner = cpu.irq_guard();
    let held = lock.lock(&inner);
    drop(outer); // out of order: interrupts are on, the lock still held
    assert!(!cpu.irqs_disabled());
    let call = catch_unwind(AssertUnwindSafe(|| cpu.smp_call_function(&|| ())));
    let flush = catch_unwind(AssertUnwindSafe(|| m.flush_tlb_all()));
    drop(held);
    // Put the guards back in order before they drop.
    let again = cpu.irq_guard();
    drop(inner);
    drop(again);
    for (what, r) in [("smp_call_function", call), ("flush_tlb_all", flush)] {
        let msg = r.expect_err(what).downcast::<String>().unwrap();
        assert!(
            msg.contains(what) && msg.contains("interrupt guard"),
            "{msg}"
        );
    }
    assert_eq!(m.tlb().kernel_flushes(), 0);
    assert_eq!(cpu.cross_calls_run(1), 0);
}

/// A simulated interrupt handler that makes a cross-CPU call, and a
/// cross-call function that makes one (it runs in interrupt context too):
/// both are refused.
#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "simulated interrupts need debug assertions"
)]
fn a_call_from_an_interrupt_handler_panics() {
    let m = Machine::builder().ram(4 << 20).cpus(2).build().unwrap();
    let cpu = m.cpu();
    let _b = cpu.bind(0).unwrap();
    let seen = Mutex::new(Vec::new());
    let handler = || {
        for r in [
            catch_unwind(AssertUnwindSafe(|| cpu.smp_call_function(&|| ()))),
            catch_unwind(AssertUnwindSafe(|| {
                m.flush_tlb_kernel_range(VirtAddr::new(0), VirtAddr::new(4096))
            })),
        ] {
            seen.lock()
                .unwrap()
                .push(*r.unwrap_err().downcast::<String>().unwrap());
        }
    };
    cpu.with_irq_handler(&handler, || {
        cpu.raise_irq(0, 1);
        cpu.interrupt_point();
    });
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter().all(|m| m.contains("from an interrupt handler")),
        "{seen:?}"
    );
    assert_eq!(m.tlb().kernel_flushes(), 0);

    // CPU 1 has no thread: CPU 0 runs the function as CPU 1, in interrupt
    // context, where the nested call panics; the sender reports it.
    let outer = catch_unwind(AssertUnwindSafe(|| {
        cpu.smp_call_function(&|| cpu.smp_call_function(&|| ()))
    }));
    let msg = outer.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("panicked on CPU 1"), "{msg}");
    assert!(!cpu.in_interrupt() && !cpu.irqs_disabled());
}

/// The shootdown is the machine's `KernelTlb`: with CPU 1 busy at interrupt
/// points, CPU 0's flush runs CPU 1's part on CPU 1's thread; with no thread
/// on CPU 1, on CPU 0's thread as CPU 1. Either way it is counted once.
#[test]
fn the_kernel_flush_runs_on_every_cpu() {
    let m = Machine::builder().ram(4 << 20).cpus(3).build().unwrap();
    let cpu = m.cpu();
    let threads = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    watchdog("shootdown", LIMIT, || {
        thread::scope(|s| {
            idle_cpus(s, cpu, &[1], &threads, &stop);
            let _b = cpu.bind(0).unwrap();
            m.flush_tlb_kernel_range(VirtAddr::new(0), VirtAddr::new(4096));
            m.flush_tlb_all();
            stop.store(true, Ordering::Release);
        });
    });
    assert_eq!(m.tlb().kernel_flush_counts(), (1, 1));
    assert_eq!(m.tlb().flush_counts(), (0, 0), "no local flush counted");
    // CPU 1 by its thread, CPU 2 by the sender; CPU 0 in the call itself.
    assert_eq!(
        (0..3).map(|c| cpu.cross_calls_run(c)).collect::<Vec<_>>(),
        [0, 2, 2]
    );
}
