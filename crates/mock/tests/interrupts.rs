//! Simulated interrupts and the lock checker: handlers run where the CPU has
//! interrupts enabled, never inside an IRQ guard; a lock taken both in an
//! interrupt handler and with interrupts enabled is reported with both places.

use std::cell::Cell;
use std::time::Duration;

use kmm_hal::Cpu;
use kmm_hal::sync::{IrqSpinLock, SpinLock};
use kmm_mock::{MockCpu, watchdog};

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "simulated interrupts and the lock checker need debug assertions"
)]
fn handlers_run_only_where_interrupts_are_enabled() {
    let cpu = MockCpu::new(2);
    let _b = cpu.bind(1).unwrap();
    let ran = Cell::new(0);
    let handler = || {
        assert!(cpu.in_interrupt());
        assert!(cpu.irqs_disabled());
        ran.set(ran.get() + 1);
    };
    cpu.with_irq_handler(&handler, || {
        {
            let _irq = cpu.irq_guard();
            cpu.raise_irq(1, 1);
            cpu.interrupt_point();
            {
                let _inner = cpu.irq_guard();
            }
            assert_eq!(ran.get(), 0, "interrupts are off: the handler waits");
        }
        assert_eq!(
            ran.get(),
            1,
            "delivered when the guard re-enabled interrupts"
        );
        cpu.raise_irq(1, 2);
        cpu.interrupt_point();
        assert_eq!(ran.get(), 3);
        cpu.raise_irq(0, 1);
        cpu.interrupt_point();
        assert_eq!(ran.get(), 3, "CPU 0's interrupt is not this thread's");
    });
    assert!(!cpu.in_interrupt());
    assert_eq!(cpu.delivered_irqs(1), 3);
    assert_eq!(cpu.pending_irqs(0), 1);
}

/// Linux's classic: a lock taken with interrupts enabled (as the slab's reap
/// and shrink took the list lock) and also from an interrupt handler (an atomic
/// allocation refilling from the same list). The checker reports it even
/// though the interrupt never landed while the lock was held.
#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "simulated interrupts and the lock checker need debug assertions"
)]
fn lockdep_reports_a_lock_taken_in_irq_and_with_irqs_on() {
    let cpu = MockCpu::new(1);
    cpu.set_lockdep_panics(false);
    let _b = cpu.bind(0).unwrap();
    let list = SpinLock::new("cache list", 0u32);
    let handler = || *list.lock(&cpu) += 1;
    cpu.with_irq_handler(&handler, || {
        *list.lock(&cpu) += 1; // "reap": interrupts on
        cpu.raise_irq(0, 1);
        cpu.interrupt_point(); // the handler takes it in interrupt context
    });
    let reports = cpu.lockdep_reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].lock, "cache list");
    assert_ne!(
        reports[0].irqs_enabled.line(),
        reports[0].in_interrupt.line()
    );
    let text = reports[0].to_string();
    assert!(text.contains("interrupts.rs"), "{text}");
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "simulated interrupts and the lock checker need debug assertions"
)]
fn irq_safe_locks_are_never_reported() {
    let cpu = MockCpu::new(1);
    let _b = cpu.bind(0).unwrap();
    let list = IrqSpinLock::new("irq-safe list", 0u32);
    let handler = || *list.lock_irqsave(&cpu) += 1;
    cpu.with_irq_handler(&handler, || {
        {
            let irq = cpu.irq_guard();
            *list.lock(&irq) += 1;
        }
        *list.lock_irqsave(&cpu) += 1;
        cpu.raise_irq(0, 3);
        cpu.interrupt_point();
    });
    assert!(cpu.lockdep_reports().is_empty());
    assert_eq!(*list.lock_irqsave(&cpu), 5);
}

#[test]
#[should_panic(expected = "inconsistent lock state")]
#[cfg_attr(
    not(debug_assertions),
    ignore = "simulated interrupts and the lock checker need debug assertions"
)]
fn lockdep_panics_by_default() {
    let cpu = MockCpu::new(1);
    let _b = cpu.bind(0).unwrap();
    let lock = SpinLock::new("plain", ());
    let handler = || drop(lock.lock(&cpu));
    cpu.with_irq_handler(&handler, || {
        cpu.raise_irq(0, 1);
        cpu.interrupt_point();
        drop(lock.lock(&cpu));
    });
}

/// An interrupt lands where an allocator's nested IRQ guard ends while an
/// outer plain lock is held with interrupts on: exactly where a handler that
/// takes the same lock would spin forever. IRQ-safe locks are already
/// released there. Run under the watchdog, as every test that could deadlock.
#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "simulated interrupts and the lock checker need debug assertions"
)]
fn an_interrupt_can_land_inside_a_plain_lock() {
    let cpu = MockCpu::new(1);
    cpu.set_lockdep_panics(false);
    let irq_safe = IrqSpinLock::new("probe", ());
    let plain = SpinLock::new("plain", ());
    let (plain_held, probe_held) =
        watchdog("interrupt inside a lock", Duration::from_secs(30), || {
            let _b = cpu.bind(0).unwrap();
            let seen = Cell::new((false, false));
            let handler = || seen.set((plain.is_locked(), irq_safe.is_locked()));
            cpu.with_irq_handler(&handler, || {
                let _held = plain.lock(&cpu);
                let g = cpu.irq_guard();
                let probe = irq_safe.lock(&g);
                cpu.raise_irq(0, 1);
                drop(probe);
                drop(g);
            });
            seen.get()
        });
    assert!(plain_held, "the interrupt landed inside the plain lock");
    assert!(
        !probe_held,
        "the IRQ-safe lock was released before interrupts came back"
    );
    assert_eq!(cpu.delivered_irqs(0), 1);
}

#[test]
fn watchdog_passes_results_and_panics_through() {
    assert_eq!(watchdog("quick", Duration::from_secs(5), || 7), 7);
    let r =
        std::panic::catch_unwind(|| watchdog("panics", Duration::from_secs(5), || panic!("boom")));
    assert!(r.is_err());
}
