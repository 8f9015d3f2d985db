//! Interrupts that allocate, and code that re-enters the allocator on the
//! same CPU: the zone lock is IRQ-safe (the lock checker never reports it, no
//! interrupt spins on it), the per-CPU lists are never handed out twice, and
//! every page comes back.

mod common;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::{check, fill};
use kmm_buddy::{Buddy, Freed, Gfp};
use kmm_hal::sync::LockReport;
use kmm_hal::{Cpu, IrqState};
use kmm_mock::{MockCpu, watchdog};
use kmm_page_frame::{Page, ZoneType};
use kmm_testkit::{Backing, TestMachine, TestMachineBuilder};

const ROUNDS: usize = if cfg!(miri) { 20 } else { 1500 };

/// A machine of 64 MiB, software-backed, with `cpus` CPUs and high memory
/// from 48 MiB.
fn machine(cpus: usize) -> TestMachineBuilder {
    TestMachine::builder()
        .ram_mib(64)
        .cpus(cpus)
        .highmem_mib(48)
        .backing(Backing::Software)
}

/// Every page is back in the zones' free lists.
fn assert_all_back<C: Cpu>(b: &Buddy<'_, C>) {
    for (i, z) in b.zones().iter().enumerate() {
        assert_eq!(z.pcp_pages(), 0, "zone {i}: per-CPU lists not drained");
        assert_eq!(z.free_pages(), z.managed(), "zone {i}: pages missing");
    }
}

/// CPU 0 allocates and frees blocks of orders 0..=3, drains its lists and
/// every CPU's, while interrupts raised by both CPUs run a handler that
/// allocates an atomic page and frees it. Interrupts land where CPU 0
/// re-enables them (after every per-CPU operation) and on the slow paths'
/// interrupt points (`alloc_pages_node`, `drain_all_pages`); the handler
/// meets the zone locks and lists in every state an interrupt can see. The
/// lock checker would panic on a zone lock taken with interrupts enabled.
#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "simulated interrupts and the lock checker need debug assertions"
)]
fn allocating_interrupts_on_every_path() {
    let host = machine(2).build();
    let (cpu, b) = (host.cpu(), host.buddy());
    let managed = b.managed_total();
    let done = AtomicBool::new(false);
    let (handled, failed) = watchdog("buddy under interrupts", Duration::from_secs(120), || {
        std::thread::scope(|s| {
            // CPU 1: traffic of its own, drain requests for CPU 0, and
            // interrupts for CPU 0 raised from another thread.
            let other = s.spawn(|| {
                let _cpu1 = cpu.bind(1).unwrap();
                let mut live: Vec<(&Page, usize, u64)> = Vec::new();
                let mut i = 0u64;
                while !done.load(Ordering::Relaxed) {
                    cpu.raise_irq(0, 1);
                    let order = (i % 4) as usize;
                    if let Some(p) = b.alloc_pages(Gfp::KERNEL, order) {
                        let tag = 1 << 48 | i;
                        fill(b, p, order, tag);
                        live.push((p, order, tag));
                    }
                    if live.len() >= 16 {
                        for (p, order, tag) in live.drain(..) {
                            check(b, p, order, tag);
                            b.free_pages_page(p, order).unwrap();
                        }
                    }
                    if i.is_multiple_of(64) {
                        b.drain_all_pages();
                    }
                    i += 1;
                    std::thread::yield_now();
                }
                for (p, order, tag) in live {
                    check(b, p, order, tag);
                    b.free_pages_page(p, order).unwrap();
                }
                b.drain_local();
            });

            let _cpu0 = cpu.bind(0).unwrap();
            let handled = Cell::new(0usize);
            let failed = Cell::new(0usize);
            // Set while CPU 0 is inside a slow path; the handler counts the
            // interrupts that land there.
            let in_slow_path = Cell::new(false);
            let in_slow = Cell::new(0usize);
            let handler = || {
                assert!(cpu.in_interrupt() && cpu.irqs_disabled());
                if in_slow_path.get() {
                    in_slow.set(in_slow.get() + 1);
                }
                match b.alloc_pages(Gfp::ATOMIC, 0) {
                    Some(p) => {
                        let tag = 2 << 48 | handled.get() as u64;
                        fill(b, p, 0, tag);
                        check(b, p, 0, tag);
                        assert_eq!(b.free_pages_page(p, 0), Ok(Freed::Released));
                        handled.set(handled.get() + 1);
                    }
                    None => failed.set(failed.get() + 1),
                }
            };
            // Raises an interrupt, then runs `f` as a slow path: the
            // interrupt is delivered inside it (its interrupt point, or the
            // first place it re-enables interrupts).
            let slow = |f: &dyn Fn()| {
                cpu.raise_irq(0, 1);
                in_slow_path.set(true);
                f();
                in_slow_path.set(false);
            };
            cpu.with_irq_handler(&handler, || {
                for round in 0..ROUNDS {
                    cpu.raise_irq(0, 1);
                    let mut live = Vec::new();
                    for order in 0..4 {
                        for gfp in [Gfp::KERNEL, Gfp::HIGHUSER, Gfp::KERNEL | Gfp::DMA] {
                            let got = if order > 0 {
                                // Orders above 0 go straight to
                                // `alloc_pages_node`.
                                let cell = Cell::new(None);
                                slow(&|| cell.set(b.alloc_pages(gfp, order)));
                                cell.get()
                            } else {
                                b.alloc_pages(gfp, order)
                            };
                            let p = got.expect("memory to spare");
                            let tag = (round as u64) << 8 | order as u64;
                            fill(b, p, order, tag);
                            live.push((p, order, tag));
                        }
                    }
                    if round % 2 == 0 {
                        live.reverse();
                    }
                    for (p, order, tag) in live {
                        check(b, p, order, tag);
                        if order == 0 && round % 3 == 0 {
                            b.free_cold_page(p).unwrap();
                        } else {
                            b.free_pages_page(p, order).unwrap();
                        }
                    }
                    if round % 8 == 0 {
                        b.drain_local();
                    }
                    if round % 32 == 0 {
                        slow(&|| {
                            b.drain_all_pages();
                        });
                    }
                }
            });
            assert!(in_slow.get() > 0, "no interrupt landed in a slow path");
            done.store(true, Ordering::Relaxed);
            other.join().expect("CPU 1");
            // Interrupts raised after CPU 0 left its handler stay pending.
            b.drain_local();
            (handled.get(), failed.get())
        })
    });
    assert!(cpu.delivered_irqs(0) > 0, "no interrupt was delivered");
    assert_eq!(handled, cpu.delivered_irqs(0) - failed);
    assert_eq!(failed, 0, "atomic allocations failed with memory to spare");
    assert_eq!(cpu.lockdep_reports(), Vec::<LockReport>::new());
    assert_eq!(b.free_pages_total(), managed);
    assert_all_back(b);
}

/// What the probe does when the allocator reaches an interrupt point.
struct Probe {
    /// Re-enter once, at the next interrupt point with interrupts on.
    armed: AtomicBool,
    /// What the probe saw at each interrupt point: (a list of this CPU
    /// busy, a zone lock held).
    seen: Mutex<Vec<(bool, bool)>>,
    /// Pages the probe got.
    got: AtomicUsize,
}

/// The one probe, for the one test that builds the [`PROBED`] machine.
static PROBE: Probe = Probe {
    armed: AtomicBool::new(false),
    seen: Mutex::new(Vec::new()),
    got: AtomicUsize::new(0),
};

/// The machine whose allocator runs on [`ProbeCpu`], where the probe finds
/// it (a `static`: the probe runs inside the allocator's own `Cpu`, which
/// cannot borrow the machine); unset while the allocator is being built.
static PROBED: OnceLock<TestMachine<ProbeCpu>> = OnceLock::new();

/// The mock's CPUs, with a probe that runs at the allocator's interrupt
/// points: it records what is held there and, once armed and with
/// interrupts on, re-enters the allocator as an interrupt handler would.
#[derive(Clone)]
struct ProbeCpu {
    inner: MockCpu,
}

// SAFETY: every method forwards to `MockCpu`, which keeps the contract; the
// probe is ordinary code run by the calling thread on its own CPU (no
// interrupt handler: interrupt state, ids and preemption are untouched).
unsafe impl Cpu for ProbeCpu {
    fn count(&self) -> usize {
        self.inner.count()
    }
    fn id(&self) -> usize {
        self.inner.id()
    }
    fn irq_save(&self) -> IrqState {
        self.inner.irq_save()
    }
    unsafe fn irq_restore(&self, state: IrqState) {
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.irq_restore(state) }
    }
    fn irqs_disabled(&self) -> bool {
        self.inner.irqs_disabled()
    }
    fn preempt_disable(&self) {
        self.inner.preempt_disable();
    }
    unsafe fn preempt_enable(&self) {
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.preempt_enable() }
    }
    fn preempt_count(&self) -> usize {
        self.inner.preempt_count()
    }
    fn in_interrupt(&self) -> bool {
        self.inner.in_interrupt()
    }
    fn lockdep_report(&self, report: &LockReport) {
        self.inner.lockdep_report(report);
    }
    fn cpu_relax(&self) {
        self.inner.cpu_relax();
    }
    fn interrupt_point(&self) {
        self.inner.interrupt_point();
        let Some(host) = PROBED.get() else {
            return;
        };
        let b = host.buddy();
        let id = self.id();
        // The allocator's promise at every interrupt point: nothing held.
        let busy = b.zones().iter().any(|z| z.pcp().is_busy(id));
        let locked = b.zones().iter().any(|z| z.is_locked());
        PROBE.seen.lock().unwrap().push((busy, locked));
        // The contract of `Cpu`: with interrupts off, no code that calls
        // into kmm runs here.
        if self.irqs_disabled() || !PROBE.armed.swap(false, Ordering::Relaxed) {
            return;
        }
        // Code an interrupt would run: re-enter the allocator.
        let p = b
            .alloc_pages(Gfp::ATOMIC | Gfp::DMA, 0)
            .expect("a DMA page");
        let q = b.alloc_pages(Gfp::KERNEL, 0).expect("a NORMAL page");
        b.drain_local();
        b.drain_all_pages();
        assert_eq!(b.free_pages_page(p, 0), Ok(Freed::Released));
        assert_eq!(b.free_pages_page(q, 0), Ok(Freed::Released));
        PROBE.got.fetch_add(2, Ordering::Relaxed);
    }
}

/// Every interrupt point the allocator reaches has no per-CPU list of this
/// CPU borrowed and no zone lock held, so code run there (an interrupt
/// handler, or a `Cpu`'s tracing) may re-enter the allocator: it gets its
/// pages, nothing panics, and every page comes back.
#[test]
fn interrupt_points_hold_nothing_and_may_reenter() {
    let host = PROBED.get_or_init(|| machine(1).build_with_cpu(|inner| ProbeCpu { inner }));
    let b = host.buddy();
    let _cpu0 = host.bind(0);
    let managed = b.managed_total();
    let mut live = Vec::new();
    for round in 0..8 {
        PROBE.armed.store(true, Ordering::Relaxed);
        // Orders above 0 take the slow path, which has an interrupt point.
        live.push((
            b.alloc_pages(Gfp::KERNEL | Gfp::DMA, 1 + round % 3)
                .unwrap(),
            1 + round % 3,
        ));
        live.push((b.alloc_pages(Gfp::KERNEL, 0).unwrap(), 0));
        b.drain_all_pages();
    }
    for (p, order) in live {
        assert_eq!(b.free_pages_page(p, order), Ok(Freed::Released));
    }
    let seen = PROBE.seen.lock().unwrap().clone();
    assert!(seen.len() >= 16, "interrupt points reached: {}", seen.len());
    for (busy, locked) in seen {
        assert!(!busy, "an interrupt point with this CPU's list held");
        assert!(!locked, "an interrupt point with a zone lock held");
    }
    assert_eq!(PROBE.got.load(Ordering::Relaxed), 16, "every re-entry ran");
    b.drain_local();
    assert_eq!(b.free_pages_total(), managed);
    assert_all_back(b);
}

/// A CPU that went away leaves pages on its lists; another CPU drains them
/// (`with_offline`). Called for the calling CPU itself it is `drain_local`.
#[test]
fn drain_offline_cpu_returns_a_parked_cpus_pages() {
    let host = machine(2).build();
    let (cpu, b) = (host.cpu(), host.buddy());
    let managed = b.managed_total();
    let normal = &b.zones()[ZoneType::Normal as usize];
    std::thread::scope(|s| {
        s.spawn(|| {
            let _cpu1 = cpu.bind(1).unwrap();
            let pages: Vec<_> = (0..8)
                .map(|_| b.alloc_pages(Gfp::KERNEL, 0).unwrap())
                .collect();
            for p in pages {
                b.free_pages_page(p, 0).unwrap();
            }
        })
        .join()
        .unwrap();
    });
    assert!(normal.pcp()[1].count() > 0, "CPU 1 left pages on its list");
    let _cpu0 = cpu.bind(0).unwrap();
    let p = b.alloc_pages(Gfp::KERNEL, 0).unwrap();
    b.free_pages_page(p, 0).unwrap();
    assert!(normal.pcp()[0].count() > 0);
    // SAFETY: CPU 1's thread has finished: it is not in the allocator and
    // will not enter it; no one else drains it.
    unsafe { b.drain_offline_cpu(1) };
    assert_eq!(normal.pcp()[1].count(), 0);
    // SAFETY: CPU 0 is the calling CPU: drained as by `drain_local`.
    unsafe { b.drain_offline_cpu(0) };
    assert_eq!(b.free_pages_total(), managed);
    assert_all_back(b);
}
