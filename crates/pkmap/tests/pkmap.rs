//! Persistent and local kmaps on one CPU: bytes through every kind of
//! mapping, the wrap-around flush, a full table, and every bad input
//! refused with its typed error and the state left intact.

mod common;

use std::sync::atomic::Ordering;

use common::{
    MockPkmap, TestTlb, highmem_pages, lowmem_page, machine, phys, pkmap, verify, write_through,
};
use kmm_hal::{Cpu, KernelLayout, PAGE_SIZE, VirtAddr};
use kmm_page_frame::{Page, ZoneType};
use kmm_pkmap::{KmapError, KmapLocalError, KunmapError, KunmapLocalError, PkmapStats};
use kmm_testkit::TestMachine;

/// Everything a bad input must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    counts: Vec<u32>,
    depth: usize,
    preempt: usize,
    pagefault: usize,
    stats: PkmapStats,
}

fn snapshot(host: &TestMachine, p: &MockPkmap<'_>) -> Snapshot {
    Snapshot {
        counts: p.with_pkmap_count(|c| c.to_vec()),
        depth: p.local_depth(),
        preempt: host.cpu().preempt_count(),
        pagefault: p.pagefault_disabled(),
        stats: p.stats(),
    }
}

#[test]
fn bytes_through_kmap_kmap_local_and_kmap_atomic_are_the_frames() {
    let host = machine(24, 1);
    let _cpu0 = host.bind(0);
    let tlb = TestTlb::new(&host);
    let p = pkmap(&host, &tlb);
    let pages = highmem_pages(&host, 3);
    let low = lowmem_page(&host);

    let va = p.kmap(pages[0]).unwrap();
    assert_eq!(p.page_address(pages[0]), Some(va));
    assert_eq!(host.buddy().mem().page_address(pages[0]), Some(va));
    assert!(va.as_usize() >= p.pkmap_base().as_usize());
    verify(&host, pages[0], va);
    write_through(&host, pages[0], va, b"persistent");
    // A second kmap of the same page: same address, one more user.
    assert_eq!(p.kmap(pages[0]).unwrap(), va);
    assert_eq!(p.pkmap_users(1), Some(2));

    let l1 = p.kmap_local_page(pages[1]).unwrap();
    let l2 = p.kmap_atomic(pages[2]).unwrap();
    assert_eq!(p.local_depth(), 2);
    assert_eq!(p.pagefault_disabled(), 1);
    host.cpu().assert_preempt_disabled();
    verify(&host, pages[1], l1);
    verify(&host, pages[2], l2);
    write_through(&host, pages[1], l1, b"local");
    write_through(&host, pages[2], l2, b"atomic");
    // A local mapping does not give the page an address.
    assert_eq!(p.page_address(pages[1]), None);
    p.check().unwrap();
    p.kunmap_atomic(l2).unwrap();
    p.kunmap_local(VirtAddr::new(l1.as_usize() + 123)).unwrap();
    assert_eq!(host.cpu().preempt_count(), 0);
    assert_eq!(p.pagefault_disabled(), 0);

    // The other way round: bytes written to the frame show through the map.
    let pa = phys(&host, pages[0]);
    assert!(host.machine().write_phys(pa, b"from the frame"));
    let mut buf = [0u8; 14];
    host.kernel_tables()
        .lock(host.cpu())
        .pt
        .read(va, &mut buf)
        .unwrap();
    assert_eq!(&buf, b"from the frame");

    // Low memory: the direct map, no entry taken.
    let dm = host
        .buddy()
        .mem()
        .direct_map()
        .phys_to_virt(phys(&host, low));
    assert_eq!(p.kmap(low).ok(), dm);
    assert_eq!(p.kunmap(low), Ok(()));
    let lv = p.kmap_local_page(low).unwrap();
    assert_eq!(Some(lv), dm);
    assert_eq!(
        p.local_depth(),
        1,
        "a lowmem page still takes a stack entry"
    );
    p.kunmap_local(lv).unwrap();

    p.kunmap(pages[0]).unwrap();
    p.kunmap(pages[0]).unwrap();
    assert_eq!(p.pkmap_users(1), Some(0), "mapped, awaiting the next flush");
    assert_eq!(p.page_address(pages[0]), Some(va));
    p.check().unwrap();
    assert!(host.machine().tlb().violations().is_empty());
}

#[test]
fn guards_unmap_in_stack_order_and_count_a_misordered_drop() {
    let host = machine(24, 1);
    let _cpu0 = host.bind(0);
    let tlb = TestTlb::new(&host);
    let p = pkmap(&host, &tlb);
    let pages = highmem_pages(&host, 2);
    {
        let a = p.kmap_local_guard(pages[0]).unwrap();
        let b = p.kmap_atomic_guard(pages[1]).unwrap();
        verify(&host, pages[0], a.addr());
        verify(&host, pages[1], b.addr());
        assert_eq!(p.local_depth(), 2);
    }
    assert_eq!(p.local_depth(), 0);
    assert_eq!(host.cpu().preempt_count(), 0);
    let a = p.kmap_local_guard(pages[0]).unwrap();
    let b = p.kmap_local_guard(pages[1]).unwrap();
    let top = b.addr();
    let a_addr = a.addr();
    assert_eq!(a.unmap(), Err(KunmapLocalError::OutOfOrder { top }));
    assert_eq!(p.local_depth(), 2, "the refused unmap changed nothing");
    drop(b);
    p.kunmap_local(a_addr).unwrap();
    let a = p.kmap_local_guard(pages[0]).unwrap();
    let b = p.kmap_local_guard(pages[1]).unwrap();
    drop(a); // out of order: stays mapped, counted
    assert_eq!(p.stats().guard_errors, 1);
    drop(b);
    p.kunmap_local(a_addr).unwrap();
    assert_eq!(p.local_depth(), 0);
    p.check().unwrap();
}

/// Maps every high-memory page of a machine with many times `LAST_PKMAP`
/// of them, one after the other: the search wraps around again and again,
/// and each wrap makes exactly one kernel-wide flush. No kmap needs a frame
/// for a page table (they were built at set-up).
#[test]
fn kmap_every_highmem_page_wraps_with_one_flush_per_wrap() {
    let (ram, rounds) = if cfg!(miri) { (20, 1) } else { (64, 2) };
    let host = machine(ram, 1);
    let _cpu0 = host.bind(0);
    let tlb = TestTlb::new(&host);
    let p = pkmap(&host, &tlb);
    let last = p.last_pkmap();
    let pages = highmem_pages(&host, usize::MAX);
    assert!(
        cfg!(miri) || pages.len() > 10 * last,
        "{} pages",
        pages.len()
    );
    let frames_before = host.kernel_tables().lock(host.cpu()).frames.allocations();
    let tlb_before = tlb.calls.load(Ordering::Relaxed);
    let mut maps = 0;
    for _ in 0..rounds {
        for &page in &pages {
            let va = p.kmap(page).unwrap();
            verify(&host, page, va);
            p.kunmap(page).unwrap();
            maps += 1;
        }
    }
    // Entries are taken from 1 on; the search wraps at every LAST_PKMAP-th
    // new mapping, and each wrap finds entries to free.
    let wraps = maps / last;
    let s = p.stats();
    assert_eq!(s.flush_all_zero_runs, wraps);
    assert_eq!(s.kernel_flushes, wraps);
    assert_eq!(tlb.calls.load(Ordering::Relaxed) - tlb_before, wraps);
    assert_eq!(s.waits, 0);
    assert_eq!(
        host.kernel_tables().lock(host.cpu()).frames.allocations(),
        frames_before,
        "no page-table page allocated by kmap"
    );
    p.check().unwrap();
    assert!(host.machine().tlb().violations().is_empty());
}

#[test]
fn a_full_table_fails_try_kmap_and_frees_after_kunmap() {
    let host = machine(if cfg!(miri) { 24 } else { 32 }, 1);
    let _cpu0 = host.bind(0);
    let tlb = TestTlb::new(&host);
    let p = pkmap(&host, &tlb);
    let last = p.last_pkmap();
    let pages = highmem_pages(&host, last + 1);
    assert_eq!(pages.len(), last + 1);
    let vas: Vec<_> = pages[..last]
        .iter()
        .map(|&pg| p.kmap(pg).unwrap())
        .collect();
    let mut sorted = vas.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), last, "every page its own address");
    let before = snapshot(&host, &p);
    assert_eq!(p.try_kmap(pages[last]), Err(KmapError::Full));
    assert_eq!(p.page_address(pages[last]), None);
    let after = snapshot(&host, &p);
    assert_eq!(before.counts, after.counts);
    // A mapped page still gets its address: no new entry needed.
    assert_eq!(p.try_kmap(pages[7]), Ok(vas[7]));
    p.kunmap(pages[7]).unwrap();
    p.check().unwrap();
    // Freeing one entry lets the next kmap in (after a wrap-around flush).
    p.kunmap(pages[3]).unwrap();
    let va = p.try_kmap(pages[last]).unwrap();
    assert_eq!(va, vas[3]);
    verify(&host, pages[last], va);
    assert_eq!(p.page_address(pages[3]), None);
    p.check().unwrap();
}

/// Runs a call that must fail with `want`, and checks that it changed
/// nothing.
fn refused<R: std::fmt::Debug, E: std::fmt::Debug + PartialEq>(
    host: &TestMachine,
    p: &MockPkmap<'_>,
    name: &str,
    f: &dyn Fn() -> Result<R, E>,
    want: E,
) {
    let before = snapshot(host, p);
    match f() {
        Err(e) => assert_eq!(e, want, "{name}"),
        Ok(r) => panic!("{name}: accepted ({r:?})"),
    }
    assert_eq!(snapshot(host, p), before, "{name} changed the state");
    p.check().unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn bad_inputs_return_their_errors_and_change_nothing() {
    let host = machine(24, 1);
    let _cpu0 = host.bind(0);
    let tlb = TestTlb::new(&host);
    let p = pkmap(&host, &tlb);
    let pages = highmem_pages(&host, 4);
    let low = lowmem_page(&host);
    let forged = Page::new(ZoneType::HighMem, 0);

    // Some state to keep intact: a persistent kmap with a user, one idle,
    // two local mappings.
    let va0 = p.kmap(pages[0]).unwrap();
    p.kmap(pages[1]).unwrap();
    p.kunmap(pages[1]).unwrap();
    let l2 = p.kmap_local_page(pages[2]).unwrap();
    let l3 = p.kmap_local_page(pages[3]).unwrap();

    let dm_low = host
        .buddy()
        .mem()
        .direct_map()
        .phys_to_virt(phys(&host, low))
        .unwrap();
    let r = |name, f: &dyn Fn() -> Result<(), KunmapError>, want| refused(&host, &p, name, f, want);
    r(
        "kunmap of a page never mapped",
        &|| p.kunmap(pages[2]),
        KunmapError::NotMapped,
    );
    r(
        "double kunmap",
        &|| p.kunmap(pages[1]),
        KunmapError::Unbalanced,
    );
    r(
        "kunmap_high of lowmem",
        &|| p.kunmap_high(low),
        KunmapError::NotHighmem,
    );
    r(
        "kunmap not in mem_map",
        &|| p.kunmap(&forged),
        KunmapError::NotInMemMap,
    );
    r(
        "kunmap, interrupts off",
        &|| {
            let _irq = host.cpu().irq_guard();
            p.kunmap(pages[0])
        },
        KunmapError::IrqsDisabled,
    );
    let r =
        |name, f: &dyn Fn() -> Result<VirtAddr, KmapError>, want| refused(&host, &p, name, f, want);
    r(
        "kmap_high of lowmem",
        &|| p.kmap_high(low),
        KmapError::NotHighmem,
    );
    r(
        "kmap not in mem_map",
        &|| p.kmap(&forged),
        KmapError::NotInMemMap,
    );
    r(
        "kmap, interrupts off",
        &|| {
            let _irq = host.cpu().irq_guard();
            p.kmap(pages[2])
        },
        KmapError::IrqsDisabled,
    );
    let r = |name, f: &dyn Fn() -> Result<VirtAddr, KmapLocalError>, want| {
        refused(&host, &p, name, f, want)
    };
    r(
        "kmap_local not in mem_map",
        &|| p.kmap_local_page(&forged),
        KmapLocalError::NotInMemMap,
    );
    let r = |name, f: &dyn Fn() -> Result<(), KunmapLocalError>, want| {
        refused(&host, &p, name, f, want)
    };
    r(
        "kunmap_local out of order",
        &|| p.kunmap_local(l2),
        KunmapLocalError::OutOfOrder { top: l3 },
    );
    r(
        "kunmap_local of a pkmap address",
        &|| p.kunmap_local(va0),
        KunmapLocalError::NotMapped,
    );
    r(
        "kunmap_atomic of a local mapping",
        &|| p.kunmap_atomic(l3),
        KunmapLocalError::WrongKind,
    );
    r(
        "kunmap_local of a lowmem address never mapped",
        &|| p.kunmap_local(dm_low),
        KunmapLocalError::NotMapped,
    );
    assert_eq!(p.page_address(pages[2]), None);

    // Nesting past the slots, then unwinding: nothing left behind.
    p.kunmap_local(l3).unwrap();
    p.kunmap_local(l2).unwrap();
    let per_cpu = host.machine().layout().fixmap().kmap_per_cpu;
    let mut held = Vec::new();
    for i in 0..per_cpu {
        held.push(p.kmap_local_page(pages[i % 4]).unwrap());
    }
    let before = snapshot(&host, &p);
    assert_eq!(p.kmap_local_page(pages[0]), Err(KmapLocalError::TooDeep));
    assert_eq!(p.kmap_atomic(low), Err(KmapLocalError::TooDeep));
    assert_eq!(snapshot(&host, &p), before);
    p.check().unwrap();
    for va in held.into_iter().rev() {
        p.kunmap_local(va).unwrap();
    }
    let before = snapshot(&host, &p);
    assert_eq!(p.kunmap_local(l2), Err(KunmapLocalError::NothingMapped));
    assert_eq!(snapshot(&host, &p), before);
    assert_eq!(host.cpu().preempt_count(), 0);
    p.check().unwrap();
    // Slot addresses are page-granular: PAGE_SIZE apart.
    let a = p.kmap_local_page(pages[0]).unwrap();
    let b = p.kmap_local_page(pages[1]).unwrap();
    assert_eq!(a.as_usize() - b.as_usize(), PAGE_SIZE);
    p.kunmap_local(b).unwrap();
    p.kunmap_local(a).unwrap();
    assert!(host.machine().tlb().violations().is_empty());
}

/// A one-CPU machine's flush: its own TLB, legal with interrupts off.
struct UpTlb(TestMachine);

// SAFETY: the machine has one CPU, and `flush_all` clears its whole TLB in
// the checker before returning.
unsafe impl kmm_hal::KernelTlb for UpTlb {
    fn flush_tlb_kernel_range(&self, _start: VirtAddr, _end: VirtAddr) {
        self.0.machine().tlb().flush_all();
    }
    fn flush_tlb_all(&self) {
        self.0.machine().tlb().flush_all();
    }
}

#[test]
fn set_up_with_interrupts_off_only_on_one_cpu() {
    for (cpus, ok) in [(1, true), (2, false)] {
        let host = common::machine(32, cpus);
        let _cpu = host.bind(0);
        let tlb = UpTlb(host.clone());
        let _irq = host.cpu().irq_guard();
        // SAFETY: the only pkmap over this machine's mem_map and tables.
        let r = unsafe {
            kmm_pkmap::Pkmap::new(
                host.buddy().mem(),
                host.kernel_tables(),
                &tlb,
                host.cpu(),
                host.machine().layout(),
                kmm_pkmap::SpinWait,
            )
        };
        match r {
            Ok(_) => assert!(ok, "{cpus} CPUs: set up with interrupts off"),
            Err(e) => assert_eq!(
                (ok, e),
                (false, kmm_pkmap::InitError::IrqsDisabled),
                "{cpus} CPUs"
            ),
        }
    }
}
