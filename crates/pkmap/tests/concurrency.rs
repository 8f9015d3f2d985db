//! Several CPUs at once, and interrupts.
//!
//! - Stress: two CPUs hold every pkmap entry between them while two others
//!   kmap and kunmap one page at a time (pages they share), so those wait;
//!   every waiter is woken and served, every address shows its page's
//!   stamp (a page has one address, an address one page), and nothing
//!   deadlocks (the watchdog fails the run if it does).
//! - Interrupts: a handler maps and unmaps its own local slot on top of the
//!   slots the interrupted code holds, which stay intact; `kmap` from the
//!   handler is refused. The lock checker (which panics on a report) has
//!   nothing to say.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{TestTlb, highmem_pages, machine, pkmap, verify, write_through};
use kmm_hal::Cpu;
use kmm_mock::{MockCpu, watchdog};
use kmm_pkmap::KmapError;

const LIMIT: Duration = Duration::from_secs(if cfg!(miri) { 3600 } else { 120 });

#[test]
fn holders_fill_the_table_and_every_waiter_is_served() {
    watchdog("pkmap stress", LIMIT, || {
        let rounds = if cfg!(miri) { 1 } else { 4 };
        let host = machine(if cfg!(miri) { 24 } else { 32 }, 4);
        let tlb = TestTlb::new(&host);
        let p = pkmap(&host, &tlb);
        let last = p.last_pkmap();
        let (pages, shared) = {
            let _cpu0 = host.bind(0);
            let pages = highmem_pages(&host, last + 32);
            assert_eq!(pages.len(), last + 32);
            let shared = pages[last..].to_vec();
            (pages, shared)
        };
        let holders_done = AtomicUsize::new(0);
        let served = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        host.on_each_cpu(|cpu| {
            if cpu < 2 {
                // Holders: half the table each.
                let mine = &pages[cpu * last / 2..(cpu + 1) * last / 2];
                for _ in 0..rounds {
                    let waits = p.stats().waits;
                    let vas: Vec<_> = mine.iter().map(|&pg| p.kmap(pg).unwrap()).collect();
                    for (&pg, &va) in mine.iter().zip(&vas) {
                        verify(&host, pg, va);
                    }
                    // Keep every entry in use until someone had to wait.
                    let t = Instant::now();
                    while p.stats().waits == waits && t.elapsed() < Duration::from_secs(2) {
                        std::hint::spin_loop();
                    }
                    for &pg in mine {
                        p.kunmap(pg).unwrap();
                    }
                }
                if holders_done.fetch_add(1, Ordering::AcqRel) == 1 {
                    stop.store(true, Ordering::Release);
                }
            } else {
                // Waiters: one page at a time, from a pool both use.
                let mut i = cpu;
                while !stop.load(Ordering::Acquire) {
                    let pg = shared[i % shared.len()];
                    let va = p.kmap(pg).unwrap();
                    verify(&host, pg, va);
                    p.kunmap(pg).unwrap();
                    served.fetch_add(1, Ordering::Relaxed);
                    i += 7;
                }
            }
        });
        let _cpu0 = host.bind(0);
        let s = p.stats();
        assert!(s.waits > 0, "nobody waited: {s:?}");
        assert!(served.load(Ordering::Relaxed) > 0);
        assert!(s.kernel_flushes > 0);
        p.check().unwrap();
        p.with_pkmap_count(|c| assert!(c.iter().all(|&n| n <= 1), "users left"));
        assert!(host.machine().tlb().violations().is_empty());
    });
}

#[test]
fn an_interrupt_maps_its_own_slot_on_top_of_the_interrupted_ones() {
    if !MockCpu::delivers_irqs() {
        return;
    }
    watchdog("pkmap interrupts", LIMIT, || {
        let host = machine(24, 2);
        let tlb = TestTlb::new(&host);
        let p = pkmap(&host, &tlb);
        let _cpu0 = host.bind(0);
        let pages = highmem_pages(&host, 4);
        let cpu = host.cpu();
        let delivered = AtomicUsize::new(0);
        let handler = || {
            assert!(cpu.in_interrupt());
            delivered.fetch_add(1, Ordering::Relaxed);
            // The interrupted code holds 0, 1 or 2 slots (the interrupt may
            // land inside a kmap_local); the handler's go on top.
            let depth = p.local_depth();
            assert!(depth <= 2);
            let va = p.kmap_local_page(pages[2]).unwrap();
            verify(&host, pages[2], va);
            write_through(&host, pages[2], va, b"irq");
            let a = p.kmap_atomic_guard(pages[3]).unwrap();
            verify(&host, pages[3], a.addr());
            assert_eq!(a.unmap(), Ok(()));
            p.kunmap_local(va).unwrap();
            assert_eq!(p.kmap(pages[3]), Err(KmapError::InInterrupt));
            assert_eq!(p.local_depth(), depth);
        };
        let rounds = if cfg!(miri) { 3 } else { 50 };
        cpu.with_irq_handler(&handler, || {
            for _ in 0..rounds {
                let a = p.kmap_local_page(pages[0]).unwrap();
                let b = p.kmap_atomic(pages[1]).unwrap();
                cpu.raise_irq(0, 1);
                cpu.interrupt_point();
                verify(&host, pages[0], a);
                verify(&host, pages[1], b);
                p.check().unwrap();
                p.kunmap_atomic(b).unwrap();
                p.kunmap_local(a).unwrap();
                // And interrupts landing inside kmap_local's own guards.
                cpu.raise_irq(0, 1);
                let a = p.kmap_local_page(pages[0]).unwrap();
                let b = p.kmap_local_page(pages[1]).unwrap();
                cpu.interrupt_point();
                p.kunmap_local(b).unwrap();
                p.kunmap_local(a).unwrap();
            }
        });
        assert_eq!(delivered.load(Ordering::Relaxed), 2 * rounds);
        assert_eq!(p.local_depth(), 0);
        assert_eq!(cpu.preempt_count(), 0);
        assert!(cpu.lockdep_reports().is_empty());
        p.check().unwrap();
        assert!(host.machine().tlb().violations().is_empty());
    });
}
