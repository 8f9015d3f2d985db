//! `drain_all_pages` through cross-CPU calls: a waiting allocation that finds
//! memory short takes the pages sitting on other CPUs' per-CPU lists before
//! it gives up, even when those CPUs never enter the allocator again; an
//! atomic one only asks them to drain. And a multi-CPU allocator without a
//! cross-CPU call is refused.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kmm_buddy::{Buddy, BuddyConfig, BuddyError, DrainAll, Gfp};
use kmm_hal::Cpu;
use kmm_mock::{Machine, watchdog};
use kmm_page_frame::{Bootmem, MemMap, Page, Region, RegionKind};
use kmm_testkit::TestMachine;

const LIMIT: Duration = Duration::from_secs(60);

/// A machine of 64 MiB and two CPUs, in ZONE_DMA and NORMAL, zero
/// watermarks (an allocation fails exactly when no block is left).
fn machine() -> TestMachine {
    common::rig(64, 64, 2, false, common::no_reserve())
}

/// Pages on CPU `cpu`'s per-CPU lists, every zone.
fn on_lists(m: &TestMachine, cpu: usize) -> usize {
    m.buddy()
        .zones()
        .iter()
        .map(|z| z.pcp().iter().nth(cpu).map_or(0, |p| p.count()))
        .sum()
}

/// CPU 1 fills its per-CPU lists and then idles with interrupts on, never
/// calling the allocator, until CPU 0 has run `exhaust`; returns what CPU 1
/// had on its lists before and after.
fn with_idle_cpu1(m: &TestMachine, exhaust: impl FnOnce() -> usize) -> (usize, usize, usize) {
    let parked = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let before = AtomicUsize::new(0);
    let got = std::thread::scope(|s| {
        s.spawn(|| {
            let _cpu = m.bind(1);
            let b = m.buddy();
            let pages: Vec<&Page> = (0..64)
                .map(|_| b.alloc_pages(Gfp::KERNEL, 0).expect("a page"))
                .collect();
            for p in pages {
                b.free_pages_page(p, 0).expect("free");
            }
            before.store(on_lists(m, 1), Ordering::SeqCst);
            parked.store(true, Ordering::SeqCst);
            // Idle, answering cross-CPU calls as a real CPU answers IPIs.
            while !done.load(Ordering::SeqCst) {
                b.cpu().interrupt_point();
                std::hint::spin_loop();
            }
        });
        let _cpu = m.bind(0);
        while !parked.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
        let got = exhaust();
        done.store(true, Ordering::SeqCst);
        got
    });
    (before.load(Ordering::SeqCst), on_lists(m, 1), got)
}

/// Allocates order-0 pages with `gfp` until the allocator fails; frees them
/// and returns how many there were.
fn exhaust(b: &Buddy<'_, kmm_mock::MockCpu>, gfp: Gfp) -> usize {
    let mut live = Vec::new();
    while let Some(p) = b.alloc_pages(gfp | Gfp::NOWARN, 0) {
        live.push(p);
    }
    let n = live.len();
    for p in live {
        b.free_pages_page(p, 0).expect("free");
    }
    n
}

#[test]
#[cfg_attr(miri, ignore = "exhausts 64 MiB page by page: too slow under Miri")]
fn a_waiting_allocation_takes_the_pages_of_an_idle_cpu() {
    watchdog("waiting drain", LIMIT, || {
        let m = machine();
        let b = m.buddy();
        let total = b.free_pages_total();
        let (before, after, got) = with_idle_cpu1(&m, || exhaust(b, Gfp::KERNEL));
        assert!(before > 0, "CPU 1 kept no pages on its lists");
        assert_eq!(after, 0, "CPU 1's lists were not drained");
        assert_eq!(got, total, "the waiting allocation left pages behind");
        assert!(b.ipi_drains() > 0);
        m.drain_every_cpu();
        m.assert_fully_coalesced();
    });
}

#[test]
#[cfg_attr(miri, ignore = "exhausts 64 MiB page by page: too slow under Miri")]
fn an_atomic_allocation_only_asks_other_cpus_to_drain() {
    watchdog("atomic drain", LIMIT, || {
        let m = machine();
        let b = m.buddy();
        let total = b.free_pages_total();
        let (before, after, got) = with_idle_cpu1(&m, || exhaust(b, Gfp::ATOMIC));
        assert!(before > 0);
        assert_eq!(after, before, "an atomic allocation sent a cross-CPU call");
        assert_eq!(got, total - before);
        assert_eq!(b.ipi_drains(), 0);
        m.drain_every_cpu();
        m.assert_fully_coalesced();
    });
}

#[test]
fn drain_all_pages_says_how_far_it_got() {
    watchdog("drain_all_pages", LIMIT, || {
        let m = machine();
        let b = m.buddy();
        let _cpu = m.bind(0);
        assert_eq!(b.drain_all_pages(), DrainAll::Done);
        // With interrupts off the deadlock rule forbids the call: the other
        // CPUs are only asked.
        let irq = b.cpu().irq_guard();
        assert_eq!(b.drain_all_pages(), DrainAll::Requested);
        drop(irq);
        assert_eq!(b.ipi_drains(), 1);
    });
}

#[test]
fn more_than_one_cpu_needs_a_cross_cpu_call() {
    let machine = Machine::builder()
        .ram(16 << 20)
        .cpus(2)
        .build()
        .expect("machine");
    let map = [Region::new(0, 16 << 20, RegionKind::Usable)];
    let mut boot = Bootmem::new(&map, machine.lowmem_end()).expect("bootmem");
    // SAFETY: the machine's RAM is mapped and unused; the result is dropped
    // before the machine.
    let mem = unsafe { MemMap::new(&mut boot, machine.layout()) }.expect("mem_map");
    // SAFETY: as above; `boot` is the bootmem `mem` was built with.
    let r = unsafe { Buddy::new(mem, boot, machine.cpu().clone(), BuddyConfig::default()) };
    assert_eq!(r.err(), Some(BuddyError::NoCrossCall));
}
