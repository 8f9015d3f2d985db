//! Every bad free is refused with a typed error, changing nothing.

mod common;

use common::{assert_fully_coalesced, no_reserve, rig};
use kmm_buddy::{FreeError, Freed, Gfp, MAX_ORDER};
use kmm_hal::{PAGE_SIZE, Pfn, VirtAddr};
use kmm_page_frame::{Page, ZoneType};

/// Free and managed counts of every zone, and every zone's free lists.
fn snapshot(r: &common::Rig) -> Vec<(usize, usize, Vec<usize>)> {
    r.buddy
        .zones()
        .iter()
        .map(|z| {
            (
                z.free_pages() + z.pcp_pages(),
                z.managed(),
                (0..MAX_ORDER).map(|o| z.nr_free(o)).collect(),
            )
        })
        .collect()
}

#[test]
fn bad_frees_change_nothing() {
    let r = rig(24, 16, 1, false, no_reserve());
    let _cpu = r.machine.cpu().bind(0).unwrap();
    let b = &r.buddy;
    let block = b.alloc_pages(Gfp::KERNEL, 3).unwrap();
    let single = b.alloc_pages(Gfp::KERNEL, 0).unwrap();
    let pfn = b.mem().page_to_pfn(block).unwrap().as_usize();
    let interior = b.mem().pfn_to_page(Pfn::new(pfn + 2)).unwrap();
    let reserved = b.mem().pfn_to_page(Pfn::new(0x100)).unwrap(); // kernel image
    let hole = b.mem().pfn_to_page(Pfn::new(0xa0)).unwrap(); // BIOS hole
    let foreign = Page::new(ZoneType::Normal, 0);
    let before = snapshot(&r);

    let cases: Vec<(&str, Result<Freed, FreeError>, FreeError)> = vec![
        (
            "wrong order (smaller)",
            b.free_pages_page(block, 2),
            FreeError::WrongOrder { allocated: 3 },
        ),
        (
            "wrong order (larger)",
            b.free_pages_page(block, 4),
            FreeError::Misaligned,
        ),
        (
            "order too large",
            b.free_pages_page(block, MAX_ORDER),
            FreeError::OrderTooLarge,
        ),
        (
            "interior page",
            b.free_pages_page(interior, 0),
            FreeError::NotAllocated,
        ),
        (
            "interior page, misaligned order",
            b.free_pages_page(interior, 3),
            FreeError::Misaligned,
        ),
        (
            "reserved page",
            b.free_pages_page(reserved, 0),
            FreeError::Reserved,
        ),
        ("hole", b.free_pages_page(hole, 0), FreeError::Reserved),
        (
            "foreign descriptor",
            b.free_pages_page(&foreign, 0),
            FreeError::Foreign,
        ),
        (
            "unaligned address",
            b.free_pages(
                VirtAddr::new(b.mem().page_address(single).unwrap().as_usize() + 8),
                0,
            ),
            FreeError::Misaligned,
        ),
        (
            "address outside the direct map",
            b.free_pages(VirtAddr::new(0x1000), 0),
            FreeError::Foreign,
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(got, Err(want), "{what}");
        assert_eq!(snapshot(&r), before, "{what} changed the allocator");
    }
    // Order too large on a valid block whose pfn happens to be aligned:
    let big_pfn_block = b.alloc_pages(Gfp::KERNEL, 10).unwrap();
    assert_eq!(
        b.free_pages_page(big_pfn_block, 11),
        Err(FreeError::OrderTooLarge)
    );
    assert_eq!(b.free_pages_page(big_pfn_block, 10), Ok(Freed::Released));

    // Double frees: of a block on a free list, of a page on a per-CPU list, and
    // of a block that merged away.
    assert_eq!(b.free_pages_page(block, 3), Ok(Freed::Released));
    assert_eq!(b.free_pages_page(single, 0), Ok(Freed::Released));
    let after = snapshot(&r);
    assert_eq!(
        b.free_pages_page(single, 0),
        Err(FreeError::DoubleFree),
        "page on a per-CPU list"
    );
    let second = b.free_pages_page(block, 3);
    assert!(
        matches!(
            second,
            Err(FreeError::DoubleFree) | Err(FreeError::NotAllocated)
        ),
        "{second:?}"
    );
    assert_eq!(snapshot(&r), after);
    b.drain_local();
    assert_eq!(
        b.free_pages_page(single, 0),
        Err(FreeError::DoubleFree),
        "merged into a free block"
    );
    assert_fully_coalesced(b);
}

#[test]
fn references_keep_a_block_alive() {
    let r = rig(24, 16, 1, false, no_reserve());
    let _cpu = r.machine.cpu().bind(0).unwrap();
    let b = &r.buddy;
    let p = b.alloc_pages(Gfp::KERNEL, 2).unwrap();
    assert!(b.get_page(p));
    assert_eq!(p.count(), 2);
    assert_eq!(b.free_pages_page(p, 2), Ok(Freed::StillReferenced));
    assert_eq!(b.free_pages_page(p, 2), Ok(Freed::Released));
    assert!(!b.get_page(p), "a free block cannot be referenced");
    assert_eq!(b.free_pages_page(p, 2), Err(FreeError::DoubleFree));
    b.drain_local();
    assert_fully_coalesced(b);
}

#[test]
fn exhaustion_returns_none_and_recovers() {
    // 16 MiB: a smaller mock layout is refused by `MemMap::new` (its DMA
    // limit lies above the start of high memory).
    let r = rig(16, 16, 1, false, no_reserve());
    let _cpu = r.machine.cpu().bind(0).unwrap();
    let b = &r.buddy;
    let mut live = Vec::new();
    while let Some(p) = b.alloc_pages(Gfp::KERNEL, 0) {
        live.push(p);
    }
    assert_eq!(live.len(), b.managed_total(), "every page handed out");
    assert!(b.alloc_pages(Gfp::ATOMIC, 0).is_none());
    assert!(b.alloc_pages(Gfp::KERNEL, 5).is_none());
    assert!(b.alloc_pages(Gfp::KERNEL | Gfp::NOWARN, 0).is_none());
    assert!(
        b.alloc_pages(Gfp::KERNEL, MAX_ORDER).is_none(),
        "order too large is None"
    );
    let failures = b.failures();
    assert!(failures >= 3);
    for p in live {
        b.free_pages_page(p, 0).unwrap();
    }
    b.drain_local();
    assert_fully_coalesced(b);
    assert_eq!(b.failures(), failures);
}

#[test]
fn get_free_pages_addresses() {
    let r = rig(24, 16, 1, false, no_reserve());
    let _cpu = r.machine.cpu().bind(0).unwrap();
    let b = &r.buddy;
    // Dirty a page, free it, then ask for zeroed pages until we get it back.
    let va = b.get_free_pages(Gfp::KERNEL, 0).unwrap();
    // SAFETY: va is a page we own, in the software machine's direct map.
    unsafe { core::ptr::write_bytes(va.as_mut_ptr::<u8>(), 0xAB, PAGE_SIZE) };
    b.free_pages(va, 0).unwrap();
    let z = b.get_zeroed_page(Gfp::KERNEL).unwrap();
    assert_eq!(z, va, "the hot page comes back first");
    // SAFETY: as above.
    let bytes = unsafe { core::slice::from_raw_parts(z.as_ptr::<u8>(), PAGE_SIZE) };
    assert!(bytes.iter().all(|&x| x == 0));
    let dma = b.get_dma_pages(Gfp::KERNEL, 2).unwrap();
    let dma_page = b.mem().virt_to_page(dma).unwrap();
    assert_eq!(dma_page.zone_type(), ZoneType::Dma);
    // HIGHMEM is ignored: the address is a lowmem one.
    let low = b.get_free_pages(Gfp::HIGHUSER, 0).unwrap();
    assert_ne!(
        b.mem().virt_to_page(low).unwrap().zone_type(),
        ZoneType::HighMem
    );
    for (a, o) in [(z, 0), (dma, 2), (low, 0)] {
        b.free_pages(a, o).unwrap();
    }
    b.drain_local();
    assert_fully_coalesced(b);
}
