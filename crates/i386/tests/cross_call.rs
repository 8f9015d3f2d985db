//! `ApicCrossCall` on the host: the mock's CPUs are threads, and a page of
//! ordinary memory stands in for the local APIC (an ICR write reaches no
//! one, so the target threads poll their handler as if the IPI arrived).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kmm_hal::{Cpu, CrossCall};
use kmm_i386::{ApicCrossCall, LocalApic};
use kmm_mock::MockCpu;

#[repr(C, align(4096))]
struct FakeApic([u32; 1024]);

fn fake_apic(page: &mut FakeApic) -> LocalApic {
    // SAFETY: a page-aligned page of ordinary memory stands in for the
    // registers; every test keeps it alive while the APIC is used.
    unsafe { LocalApic::new(NonNull::new(page.0.as_mut_ptr()).unwrap()) }
}

#[test]
fn alone_the_calls_run_only_here() {
    let mut page = Box::new(FakeApic([0; 1024]));
    let cpu = MockCpu::new(1);
    let _b = cpu.bind(0).unwrap();
    // SAFETY: nothing sends the vector but these calls; one CPU.
    let calls = unsafe { ApicCrossCall::new(cpu.clone(), fake_apic(&mut page), 0xFB) };
    // SAFETY: called once on CPU 0.
    unsafe { calls.cpu_online() };
    let ran = AtomicUsize::new(0);
    calls.smp_call_function(&|| {
        ran.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(ran.load(Ordering::Relaxed), 0, "no other CPU online");
    calls.on_each_cpu(&|| {
        assert!(cpu.irqs_disabled());
        ran.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(ran.load(Ordering::Relaxed), 1);
    assert_eq!(calls.stats().ipis, 0, "no IPI sent");
}

#[test]
fn every_online_cpu_runs_each_call_once() {
    assert!(MockCpu::delivers_irqs(), "test builds deliver interrupts");
    const CPUS: usize = 4;
    // Miri runs the threads' spin loops very slowly: a few calls there.
    const CALLS: usize = if cfg!(miri) { 5 } else { 200 };
    let mut page = Box::new(FakeApic([0; 1024]));
    let cpu = MockCpu::new(CPUS);
    // SAFETY: nothing sends the vector but these calls; the target threads
    // stand in for the IPI by raising the mock's interrupt, whose handler
    // calls `handle_ipi`.
    let calls = unsafe { ApicCrossCall::new(cpu.clone(), fake_apic(&mut page), 0xFB) };
    let stop = AtomicBool::new(false);
    let online = AtomicUsize::new(0);
    let runs: Vec<AtomicUsize> = (0..CPUS).map(|_| AtomicUsize::new(0)).collect();
    cpu.run_on_each(|id| {
        // SAFETY: once per CPU, on that CPU.
        unsafe { calls.cpu_online() };
        online.fetch_add(1, Ordering::AcqRel);
        while online.load(Ordering::Acquire) < CPUS {
            std::hint::spin_loop();
        }
        if id == 0 {
            for _ in 0..CALLS {
                calls.on_each_cpu(&|| {
                    runs[cpu.id()].fetch_add(1, Ordering::Relaxed);
                });
            }
            stop.store(true, Ordering::Release);
        } else {
            // The fake APIC's IPI reaches no one: raise the mock's
            // interrupt until told to stop, its handler is the vector's.
            cpu.with_irq_handler(&|| calls.handle_ipi(), || {
                while !stop.load(Ordering::Acquire) {
                    cpu.raise_irq(id, 1);
                    cpu.interrupt_point();
                }
            });
        }
    });
    for (id, r) in runs.iter().enumerate() {
        assert_eq!(r.load(Ordering::Relaxed), CALLS, "CPU {id}");
    }
    let s = calls.stats();
    assert_eq!(s.calls, CALLS);
    assert_eq!(s.ipis, CALLS * (CPUS - 1));
    assert_eq!(s.handled, CALLS * (CPUS - 1));
}

#[test]
#[should_panic(expected = "deadlock rule")]
fn a_call_with_interrupts_off_is_refused() {
    let mut page = Box::new(FakeApic([0; 1024]));
    let cpu = MockCpu::new(2);
    let _b = cpu.bind(0).unwrap();
    // SAFETY: nothing sends the vector but these calls.
    let calls = unsafe { ApicCrossCall::new(cpu.clone(), fake_apic(&mut page), 0xFB) };
    // SAFETY: called once on CPU 0.
    unsafe { calls.cpu_online() };
    let _irq = cpu.irq_guard();
    calls.smp_call_function(&|| {});
}

#[test]
fn a_handler_called_outside_an_interrupt_runs_nothing() {
    assert!(MockCpu::delivers_irqs(), "test builds deliver interrupts");
    let mut page = Box::new(FakeApic([0; 1024]));
    let cpu = MockCpu::new(2);
    // SAFETY: nothing sends the vector but this call; CPU 1 stands in for
    // the IPI by raising the mock's interrupt, whose handler calls
    // `handle_ipi`.
    let calls = unsafe { ApicCrossCall::new(cpu.clone(), fake_apic(&mut page), 0xFB) };
    let online = AtomicUsize::new(0);
    let ran = AtomicUsize::new(0);
    cpu.run_on_each(|id| {
        // SAFETY: once per CPU, on that CPU.
        unsafe { calls.cpu_online() };
        online.fetch_add(1, Ordering::AcqRel);
        while online.load(Ordering::Acquire) < 2 {
            std::hint::spin_loop();
        }
        if id == 0 {
            calls.smp_call_function(&|| {
                assert_eq!(cpu.id(), 1);
                ran.fetch_add(1, Ordering::Relaxed);
            });
            return;
        }
        while calls.stats().ipis == 0 {
            std::hint::spin_loop();
        }
        // The call is in flight; process context, interrupts on or off,
        // is not its handler.
        calls.handle_ipi();
        {
            let _irq = cpu.irq_guard();
            calls.handle_ipi();
        }
        assert_eq!(ran.load(Ordering::Relaxed), 0, "ran outside a handler");
        assert_eq!(calls.stats().spurious, 2);
        // The interrupt handler runs it.
        cpu.with_irq_handler(&|| calls.handle_ipi(), || {
            cpu.raise_irq(1, 1);
            cpu.interrupt_point();
        });
    });
    assert_eq!(ran.load(Ordering::Relaxed), 1);
    assert_eq!(calls.stats().handled, 1);
}
