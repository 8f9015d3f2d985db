//! The bulk order-0 paths, `alloc_pages_bulk` and `release_pages`: slots
//! filled and emptied as documented, the GFP and watermark rules of
//! `alloc_pages`, the single-page fallback, and every bad element of a bulk
//! free refused with its index — the pages before it freed, it and the rest
//! untouched, the allocator intact.

mod common;

use common::{no_reserve, rig};
use kmm_buddy::{Buddy, BuddyConfig, BulkFreeError, FreeError, Freed, Gfp, MAX_ORDER, Watermark};
use kmm_hal::{PAGE_SIZE, Pfn};
use kmm_mock::MockCpu;
use kmm_page_frame::{Page, PgFlags, ZoneType};
use kmm_testkit::TestMachine;

/// Every zone's free pages (lists and per-CPU lists) and free lists.
fn snapshot(b: &Buddy<'_, MockCpu>) -> Vec<(usize, Vec<usize>)> {
    b.zones()
        .iter()
        .map(|z| {
            (
                z.free_pages() + z.pcp_pages(),
                (0..MAX_ORDER).map(|o| z.nr_free(o)).collect(),
            )
        })
        .collect()
}

/// Free pages on the free lists and the per-CPU lists, every zone.
fn free_total(b: &Buddy<'_, MockCpu>) -> usize {
    b.zones()
        .iter()
        .map(|z| z.free_pages() + z.pcp_pages())
        .sum()
}

fn pfn(b: &Buddy<'_, MockCpu>, p: &Page) -> usize {
    b.mem().page_to_pfn(p).unwrap().as_usize()
}

/// An allocated order-0 page as `alloc_pages` hands it out.
fn assert_allocated(p: &Page) {
    assert_eq!(
        p.flags() & !PgFlags::HIGHMEM,
        PgFlags::HEAD,
        "{:?}",
        p.flags()
    );
    assert_eq!(p.private(), 0);
    assert_eq!(p.count(), 1);
}

fn fills_and_empties(config: BuddyConfig<'static>) {
    let host = rig(40, 32, 1, false, config);
    let _cpu = host.bind(0);
    let b = host.buddy();
    let before = free_total(b);
    for n in [2, 16, 63, 64, 65, 200] {
        let mut pages = vec![None; n];
        assert_eq!(b.alloc_pages_bulk(Gfp::KERNEL, &mut pages), n);
        let mut pfns: Vec<usize> = pages.iter().map(|p| pfn(b, p.unwrap())).collect();
        for p in &pages {
            let p = p.unwrap();
            assert_allocated(p);
            assert!(p.zone_type() <= ZoneType::Normal, "KERNEL: no high memory");
        }
        pfns.sort_unstable();
        pfns.dedup();
        assert_eq!(pfns.len(), n, "every page handed out once");
        assert_eq!(free_total(b), before - n);
        assert_eq!(b.release_pages(&mut pages), Ok(n));
        assert!(pages.iter().all(Option::is_none), "every slot emptied");
        assert_eq!(free_total(b), before, "every page back");
    }
}

#[test]
fn bulk_fills_every_slot_and_release_empties_them() {
    fills_and_empties(no_reserve());
}

#[test]
fn bulk_fills_every_slot_without_pcp() {
    fills_and_empties(BuddyConfig {
        bypass_pcp: true,
        ..no_reserve()
    });
}

/// Filled slots are skipped and left alone; the count is of the filled
/// slots from the front.
#[test]
fn only_empty_slots_are_filled() {
    let host = rig(24, 16, 1, false, no_reserve());
    let _cpu = host.bind(0);
    let b = host.buddy();
    let mine = b.alloc_pages(Gfp::KERNEL, 0).unwrap();
    let mut pages = vec![None, Some(mine), None, None, Some(mine), None];
    assert_eq!(b.alloc_pages_bulk(Gfp::KERNEL, &mut pages), 6);
    assert!(core::ptr::eq(pages[1].unwrap(), mine));
    assert!(core::ptr::eq(pages[4].unwrap(), mine));
    assert_eq!(mine.count(), 1, "not taken again");
    // Already full: nothing to do.
    assert_eq!(b.alloc_pages_bulk(Gfp::KERNEL, &mut pages), 6);
    assert_eq!(b.alloc_pages_bulk(Gfp::KERNEL, &mut []), 0);
    // One slot: the single-page path.
    let mut one = [None];
    assert_eq!(b.alloc_pages_bulk(Gfp::KERNEL, &mut one), 1);
    pages[4] = None;
    assert_eq!(b.release_pages(&mut pages), Ok(5));
    assert_eq!(b.release_pages(&mut one), Ok(1));
}

/// The GFP zone rules of `alloc_pages`: DMA from ZONE_DMA, HIGHUSER from high
/// memory first, ZERO zeroed, COLD from the cold end.
#[test]
fn gfp_rules_hold() {
    // NORMAL from 16 to 48 MiB: per-CPU lists with `high` 18, so freed
    // pages stay on them.
    let host = rig(64, 48, 1, false, no_reserve());
    let _cpu = host.bind(0);
    let b = host.buddy();
    let mut dma = vec![None; 40];
    assert_eq!(b.alloc_pages_bulk(Gfp::KERNEL | Gfp::DMA, &mut dma), 40);
    assert!(dma.iter().all(|p| p.unwrap().zone_type() == ZoneType::Dma));
    let mut high = vec![None; 40];
    assert_eq!(b.alloc_pages_bulk(Gfp::HIGHUSER, &mut high), 40);
    assert!(
        high.iter()
            .all(|p| p.unwrap().zone_type() == ZoneType::HighMem)
    );

    // Dirty some pages, free them to the list, and ask for them zeroed.
    let mut dirty = vec![None; 32];
    assert_eq!(b.alloc_pages_bulk(Gfp::KERNEL, &mut dirty), 32);
    for p in &dirty {
        let va = b.mem().page_address(p.unwrap()).unwrap();
        // SAFETY: the page is ours, in the direct map.
        unsafe { core::ptr::write_bytes(va.as_mut_ptr::<u8>(), 0xa5, PAGE_SIZE) };
    }
    assert_eq!(b.release_pages(&mut dirty), Ok(32));
    let mut zeroed = vec![None; 32];
    assert_eq!(b.alloc_pages_bulk(Gfp::KERNEL | Gfp::ZERO, &mut zeroed), 32);
    for p in &zeroed {
        let p = p.unwrap();
        assert_ne!(p.zone_type(), ZoneType::HighMem, "no zero_highmem hook");
        let va = b.mem().page_address(p).unwrap();
        // SAFETY: as above.
        let bytes = unsafe { std::slice::from_raw_parts(va.as_ptr::<u8>(), PAGE_SIZE) };
        assert!(bytes.iter().all(|&x| x == 0), "not zeroed");
    }

    // Hot pages come from the front of the list, cold from the back: free
    // two known pages hot, then take one cold and one hot.
    let first = b.alloc_pages(Gfp::KERNEL, 0).unwrap();
    let second = b.alloc_pages(Gfp::KERNEL, 0).unwrap();
    b.drain_local();
    let mut pair = [Some(first), Some(second)];
    assert_eq!(b.release_pages(&mut pair), Ok(2));
    assert_eq!(b.alloc_pages_bulk(Gfp::KERNEL, &mut pair), 2);
    assert!(
        core::ptr::eq(pair[0].unwrap(), second),
        "hot: last freed first"
    );
    assert!(core::ptr::eq(pair[1].unwrap(), first));
    assert_eq!(b.release_pages(&mut pair), Ok(2));
    assert_eq!(b.alloc_pages_bulk(Gfp::KERNEL | Gfp::COLD, &mut pair), 2);
    // The list is now [first, second]: hot would give `first` first.
    assert!(
        core::ptr::eq(pair[0].unwrap(), second),
        "cold: from the back"
    );
    assert!(core::ptr::eq(pair[1].unwrap(), first));

    for set in [&mut dma, &mut high, &mut zeroed, &mut pair[..].to_vec()] {
        let n = set.len();
        assert_eq!(b.release_pages(set), Ok(n));
    }
}

/// A bulk free of pages from several zones (DMA, NORMAL, HIGHMEM mixed):
/// each goes back to its own zone.
#[test]
fn release_mixes_zones() {
    let host = rig(40, 32, 1, false, no_reserve());
    let _cpu = host.bind(0);
    let b = host.buddy();
    let before = snapshot(b);
    let mut pages: Vec<Option<&Page>> = Vec::new();
    for i in 0..60 {
        let g = [Gfp::KERNEL | Gfp::DMA, Gfp::KERNEL, Gfp::HIGHUSER][i % 3];
        pages.push(b.alloc_pages(g, 0));
    }
    assert_eq!(b.release_pages(&mut pages), Ok(60));
    b.drain_local();
    assert_eq!(snapshot(b), before, "every page back in its zone");
}

/// Extra references: the slot is emptied, the page stays allocated.
#[test]
fn release_drops_one_reference() {
    let host = rig(24, 16, 1, false, no_reserve());
    let _cpu = host.bind(0);
    let b = host.buddy();
    let mut pages = vec![None; 8];
    assert_eq!(b.alloc_pages_bulk(Gfp::KERNEL, &mut pages), 8);
    let shared = pages[3].unwrap();
    assert!(b.get_page(shared));
    assert_eq!(b.release_pages(&mut pages), Ok(7));
    assert!(pages.iter().all(Option::is_none));
    assert_allocated(shared);
    assert_eq!(b.free_pages_page(shared, 0), Ok(Freed::Released));
}

/// Out of memory: the slots filled so far stay filled, the count says how
/// many, and a call that can fill none fails as `alloc_pages` would.
#[test]
fn exhaustion_fills_what_there_is() {
    let host = rig(24, 16, 1, false, no_reserve());
    let _cpu = host.bind(0);
    let b = host.buddy();
    let total = free_total(b);
    let mut pages = vec![None; total + 10];
    let mut n = 0;
    loop {
        let m = b.alloc_pages_bulk(Gfp::KERNEL | Gfp::HIGHMEM, &mut pages);
        assert!(m >= n, "filled slots stay filled");
        assert!(pages[..m].iter().all(Option::is_some));
        if m < pages.len() {
            assert!(pages[m].is_none());
        }
        if m == n {
            break;
        }
        n = m;
    }
    assert_eq!(
        n, total,
        "every free page, through the single-page fallback"
    );
    assert!(b.alloc_pages(Gfp::KERNEL | Gfp::HIGHMEM, 0).is_none());
    assert_eq!(b.release_pages(&mut pages), Ok(total));
    assert_eq!(free_total(b), total);
}

/// Allocates from `kind` (with `gfp`) until the zone has at most `target`
/// free pages (its per-CPU list drained, so every page is counted); the
/// blocks taken, with their orders.
fn bring_down<'b>(
    b: &'b Buddy<'b, MockCpu>,
    kind: ZoneType,
    gfp: Gfp,
    target: usize,
) -> Vec<(&'b Page, usize)> {
    let zone = b
        .zones()
        .iter()
        .find(|z| z.kind() == kind && z.managed() > 0)
        .unwrap();
    let mut held = Vec::new();
    loop {
        b.drain_local();
        let free = zone.free_pages();
        if free <= target {
            return held;
        }
        let order = ((usize::BITS - 1 - (free - target).leading_zeros()) as usize).min(4);
        let p = b.alloc_pages(gfp, order).unwrap();
        assert_eq!(p.zone_type(), kind);
        held.push((p, order));
    }
}

/// Linux's watermark rule: the bulk path takes the first zone of the
/// zonelist that stays above its low watermark (and lowmem reserve) after
/// giving every slot a page; with none, one page comes through the
/// single-page path (which may go down to `min`).
#[test]
fn the_low_watermark_plus_the_request_decides() {
    let host = rig(24, 24, 1, false, BuddyConfig::default());
    let _cpu = host.bind(0);
    let b = host.buddy();
    let zone = |kind| {
        b.zones()
            .iter()
            .find(|z| z.kind() == kind && z.managed() > 0)
            .unwrap()
    };
    let low = zone(ZoneType::Normal).watermark(Watermark::Low);
    assert!(low > 0);
    let mut held = bring_down(b, ZoneType::Normal, Gfp::KERNEL, low + 40);
    let free = zone(ZoneType::Normal).free_pages();
    assert!(free > low + 24 && free <= low + 40, "{free} vs low {low}");
    // 8 pages leave NORMAL above low: all 8 come from it.
    let mut small = vec![None; 8];
    assert_eq!(b.alloc_pages_bulk(Gfp::KERNEL, &mut small), 8);
    assert!(
        small
            .iter()
            .all(|p| p.unwrap().zone_type() == ZoneType::Normal)
    );
    // 64 would not: NORMAL is skipped and all 64 come from DMA.
    let mut big = vec![None; 64];
    assert_eq!(b.alloc_pages_bulk(Gfp::KERNEL, &mut big), 64);
    assert!(big.iter().all(|p| p.unwrap().zone_type() == ZoneType::Dma));
    assert_eq!(b.release_pages(&mut big), Ok(64));
    // DMA down to its low mark + 40 as well (for KERNEL, its lowmem reserve
    // against NORMAL counts too): no zone passes, one page comes by the
    // single-page path, and the call returns.
    let dma = zone(ZoneType::Dma);
    let dma_low = dma.watermark(Watermark::Low) + dma.lowmem_reserve(ZoneType::Normal);
    held.extend(bring_down(
        b,
        ZoneType::Dma,
        Gfp::KERNEL | Gfp::DMA,
        dma_low + 40,
    ));
    assert_eq!(b.alloc_pages_bulk(Gfp::KERNEL, &mut big), 1);
    assert!(big[1..].iter().all(Option::is_none));
    // The next call fills one more the same way.
    assert_eq!(b.alloc_pages_bulk(Gfp::KERNEL, &mut big), 2);
    assert_eq!(b.release_pages(&mut small), Ok(8));
    assert_eq!(b.release_pages(&mut big), Ok(2));
    for (p, order) in held {
        assert_eq!(b.free_pages_page(p, order), Ok(Freed::Released));
    }
}

/// The bad elements a bulk free can meet, each placed at index 2 of
/// `[good, good, bad, good]`: refused with index 2 and the single free's
/// error; the two pages before it freed, it and the page after untouched,
/// every count as it should be; then, with the bad slot emptied, the rest
/// frees.
fn bad_element_is_refused_with_its_index(bypass_pcp: bool) {
    let host = TestMachine::builder()
        .ram_mib(24)
        .highmem_mib(16)
        .bios_holes()
        .backing(kmm_testkit::Backing::Software)
        .buddy_config(BuddyConfig {
            bypass_pcp,
            ..no_reserve()
        })
        .build();
    let _cpu = host.bind(0);
    let b = host.buddy();
    let mem = b.mem();
    let foreign = Page::new(ZoneType::Normal, 0);
    type Case<'b> = (
        &'static str,
        Box<dyn Fn() -> (&'b Page, FreeError) + 'b>,
        Box<dyn Fn(&Page) + 'b>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "freed before",
            Box::new(|| {
                let p = b.alloc_pages(Gfp::KERNEL, 0).unwrap();
                assert_eq!(b.free_pages_page(p, 0), Ok(Freed::Released));
                (p, FreeError::DoubleFree)
            }),
            Box::new(|_| {}),
        ),
        (
            "a block of order 1",
            Box::new(|| {
                let p = b.alloc_pages(Gfp::KERNEL, 1).unwrap();
                (p, FreeError::WrongOrder { allocated: 1 })
            }),
            Box::new(|p| assert_eq!(b.free_pages_page(p, 1), Ok(Freed::Released))),
        ),
        (
            "the second page of a block",
            Box::new(|| {
                let p = b.alloc_pages(Gfp::KERNEL, 2).unwrap();
                let second = mem.pfn_to_page(Pfn::new(pfn(b, p) + 1)).unwrap();
                (second, FreeError::NotAllocated)
            }),
            Box::new(|second| {
                let head = mem.pfn_to_page(Pfn::new(pfn(b, second) - 1)).unwrap();
                assert_eq!(b.free_pages_page(head, 2), Ok(Freed::Released));
            }),
        ),
        (
            "a reserved page (the kernel image)",
            Box::new(|| {
                (
                    mem.pfn_to_page(Pfn::new(0x100)).unwrap(),
                    FreeError::Reserved,
                )
            }),
            Box::new(|_| {}),
        ),
        (
            "a hole",
            Box::new(|| {
                (
                    mem.pfn_to_page(Pfn::new(0xa0)).unwrap(),
                    FreeError::Reserved,
                )
            }),
            Box::new(|_| {}),
        ),
        (
            "a foreign descriptor",
            Box::new(|| (&foreign, FreeError::Foreign)),
            Box::new(|_| {}),
        ),
        (
            "a slab page",
            Box::new(|| flagged(b, PgFlags::SLAB, FreeError::Slab)),
            Box::new(|p| unmark(b, p, PgFlags::SLAB)),
        ),
        (
            "a kmalloc block",
            Box::new(|| flagged(b, PgFlags::KMALLOC, FreeError::Kmalloc)),
            Box::new(|p| unmark(b, p, PgFlags::KMALLOC)),
        ),
        (
            "a vmalloc page",
            Box::new(|| flagged(b, PgFlags::VMALLOC, FreeError::Vmalloc)),
            Box::new(|p| unmark(b, p, PgFlags::VMALLOC)),
        ),
    ];
    for (what, make, undo) in &cases {
        let good: Vec<&Page> = (0..3)
            .map(|_| b.alloc_pages(Gfp::KERNEL, 0).unwrap())
            .collect();
        let (bad, error) = make();
        let before = free_total(b);
        let bad_state = (bad.flags(), bad.count(), bad.private());
        let mut pages = [Some(good[0]), Some(good[1]), Some(bad), Some(good[2])];
        assert_eq!(
            b.release_pages(&mut pages),
            Err(BulkFreeError { index: 2, error }),
            "{what}"
        );
        assert!(pages[0].is_none() && pages[1].is_none(), "{what}: freed");
        assert!(
            pages[2].is_some() && pages[3].is_some(),
            "{what}: untouched"
        );
        assert_eq!(free_total(b), before + 2, "{what}: exactly two freed");
        assert_eq!(
            (bad.flags(), bad.count(), bad.private()),
            bad_state,
            "{what}"
        );
        assert_allocated(good[2]);
        pages[2] = None;
        assert_eq!(b.release_pages(&mut pages), Ok(1), "{what}: the rest");
        assert_eq!(free_total(b), before + 3, "{what}");
        undo(bad);
    }
}

/// A live order-0 page marked as its owner marks it.
fn flagged<'b>(b: &'b Buddy<'b, MockCpu>, f: PgFlags, e: FreeError) -> (&'b Page, FreeError) {
    let p = b.alloc_pages(Gfp::KERNEL, 0).unwrap();
    // SAFETY: the owner contract: this test owns the page.
    unsafe { p.insert(f) };
    (p, e)
}

fn unmark(b: &Buddy<'_, MockCpu>, p: &Page, f: PgFlags) {
    // SAFETY: as in `flagged`.
    unsafe { p.remove(f) };
    assert_eq!(b.free_pages_page(p, 0), Ok(Freed::Released));
}

#[test]
fn bad_elements_are_refused_with_their_index() {
    bad_element_is_refused_with_its_index(false);
}

#[test]
fn bad_elements_are_refused_with_their_index_without_pcp() {
    bad_element_is_refused_with_its_index(true);
}

/// The same page twice in one array: the first frees it, the second is a
/// double free at its own index; and a page still on its owner's list.
#[test]
fn duplicates_and_linked_pages_are_refused() {
    let host = rig(24, 16, 1, false, no_reserve());
    let _cpu = host.bind(0);
    let b = host.buddy();
    let p = b.alloc_pages(Gfp::KERNEL, 0).unwrap();
    let q = b.alloc_pages(Gfp::KERNEL, 0).unwrap();
    let before = free_total(b);
    let mut pages = [Some(p), None, Some(p), Some(q)];
    assert_eq!(
        b.release_pages(&mut pages),
        Err(BulkFreeError {
            index: 2,
            error: FreeError::DoubleFree
        })
    );
    assert_eq!(free_total(b), before + 1);
    assert_allocated(q);
    pages[2] = None;
    assert_eq!(b.release_pages(&mut pages), Ok(1));

    let r = b.alloc_pages(Gfp::KERNEL, 0).unwrap();
    // SAFETY: the owner contract of `PageAdapter::new`: this thread holds r.
    let mut list =
        intrusive_collections::LinkedList::new(unsafe { kmm_page_frame::PageAdapter::new() });
    list.push_back(r);
    let mut pages = [Some(r)];
    assert_eq!(
        b.release_pages(&mut pages),
        Err(BulkFreeError {
            index: 0,
            error: FreeError::Linked
        })
    );
    assert!(r.is_linked());
    list.clear();
    assert_eq!(b.release_pages(&mut pages), Ok(1));
}
