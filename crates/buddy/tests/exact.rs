//! Page-exact runs and `split_page`: exactly the frames a size needs are
//! taken, the rest of the block goes back at once, and every bad free of a
//! run is refused with its index, nothing freed.

mod common;

use common::{no_reserve, rig};
use kmm_buddy::{FreeError, Gfp, MAX_ORDER};
use kmm_hal::{PAGE_SIZE, Pfn};
use kmm_page_frame::{Page, PgFlags, ZoneType};

/// Free frames of every zone (lists and per-CPU lists) after a drain.
fn free_now(r: &kmm_testkit::TestMachine) -> usize {
    r.buddy().drain_local();
    r.buddy().free_pages_total()
}

fn frame(r: &kmm_testkit::TestMachine, pfn: usize) -> &Page {
    r.buddy().mem().pfn_to_page(Pfn::new(pfn)).unwrap()
}

#[test]
fn a_run_takes_exactly_its_frames() {
    let r = rig(32, 0, 1, false, no_reserve());
    let _cpu = r.bind(0);
    let b = r.buddy();
    let before = free_now(&r);
    for (size, frames) in [
        (1, 1),
        (PAGE_SIZE, 1),
        (PAGE_SIZE + 1, 2),
        (25 * PAGE_SIZE - 7, 25),
        (200_000, 49),
    ] {
        let head = b.alloc_pages_exact(Gfp::KERNEL, size).unwrap();
        assert_eq!(free_now(&r), before - frames, "{size} bytes");
        let pfn = b.mem().page_to_pfn(head).unwrap().as_usize();
        let align = frames.next_power_of_two();
        assert_eq!(pfn % align, 0, "aligned to the block it came from");
        for i in 0..frames {
            let f = frame(&r, pfn + i);
            assert_eq!(
                f.flags() & (PgFlags::HEAD | PgFlags::BUDDY | PgFlags::PCP),
                PgFlags::HEAD
            );
            assert_eq!(
                (f.private(), f.count()),
                (0, 1),
                "frame {i}: an order-0 frame"
            );
        }
        b.free_pages_exact(head, size).unwrap();
        assert_eq!(free_now(&r), before, "{size} bytes back");
    }
    // Frames of a run also go back one by one.
    let head = b.alloc_pages_exact(Gfp::KERNEL, 3 * PAGE_SIZE).unwrap();
    let pfn = b.mem().page_to_pfn(head).unwrap().as_usize();
    for i in (0..3).rev() {
        b.free_pages_page(frame(&r, pfn + i), 0).unwrap();
    }
    assert_eq!(free_now(&r), before);
    // Everything merges back: the largest blocks are whole again.
    assert!(b.zones().iter().any(|z| z.nr_free(MAX_ORDER - 1) > 0));
}

#[test]
fn runs_refuse_what_no_block_holds() {
    let r = rig(32, 0, 1, false, no_reserve());
    let _cpu = r.bind(0);
    let b = r.buddy();
    assert!(b.alloc_pages_exact(Gfp::KERNEL, 0).is_none());
    assert!(
        b.alloc_pages_exact(Gfp::KERNEL, (PAGE_SIZE << (MAX_ORDER - 1)) + 1)
            .is_none()
    );
    assert!(
        b.alloc_pages_exact(Gfp::KERNEL, PAGE_SIZE << (MAX_ORDER - 1))
            .is_some()
    );
}

#[test]
fn bad_frees_of_a_run_are_refused_with_the_index_and_free_nothing() {
    let r = rig(32, 0, 1, false, no_reserve());
    let _cpu = r.bind(0);
    let b = r.buddy();
    let head = b.alloc_pages_exact(Gfp::KERNEL, 5 * PAGE_SIZE).unwrap();
    let pfn = b.mem().page_to_pfn(head).unwrap().as_usize();
    // Frame 2 already freed: the run's free stops at it, nothing freed.
    b.free_pages_page(frame(&r, pfn + 2), 0).unwrap();
    let before = free_now(&r);
    assert_eq!(
        b.free_pages_exact(head, 5 * PAGE_SIZE),
        Err((2, FreeError::DoubleFree))
    );
    assert_eq!(free_now(&r), before, "nothing freed");
    // A run longer than the one allocated reaches a free frame.
    assert_eq!(
        b.free_pages_exact(frame(&r, pfn + 3), 3 * PAGE_SIZE)
            .map_err(|e| e.1),
        Err(FreeError::DoubleFree)
    );
    assert_eq!(free_now(&r), before, "nothing freed");
    // A size past every run (an overflowing frame count): refused at the
    // first frame that is not an allocated order-0 frame, nothing freed.
    assert_eq!(
        b.free_pages_exact(head, usize::MAX),
        Err((2, FreeError::DoubleFree))
    );
    assert_eq!(free_now(&r), before, "nothing freed");
    // The second frame of a live order-1 block is not an allocated frame.
    let pair = b.alloc_pages(Gfp::KERNEL, 1).unwrap();
    let ppfn = b.mem().page_to_pfn(pair).unwrap().as_usize();
    assert_eq!(
        b.free_pages_exact(frame(&r, ppfn + 1), PAGE_SIZE),
        Err((0, FreeError::NotAllocated))
    );
    assert_eq!(
        b.free_pages_exact(pair, 2 * PAGE_SIZE).map_err(|e| e.1),
        Err(FreeError::WrongOrder { allocated: 1 }),
        "a block of order 1 is not a run of frames"
    );
    b.free_pages_page(pair, 1).unwrap();
    let before = free_now(&r);
    // A descriptor of no allocator.
    let foreign = Page::new(ZoneType::Normal, 0);
    assert_eq!(
        b.free_pages_exact(&foreign, PAGE_SIZE),
        Err((0, FreeError::Foreign))
    );
    // What is left goes back.
    b.free_pages_exact(head, 2 * PAGE_SIZE).unwrap();
    b.free_pages_exact(frame(&r, pfn + 3), 2 * PAGE_SIZE)
        .unwrap();
    assert_eq!(free_now(&r), before + 4);
}

#[test]
fn split_page_makes_frames_and_refuses_what_a_free_would() {
    let r = rig(32, 0, 1, false, no_reserve());
    let _cpu = r.bind(0);
    let b = r.buddy();
    let before = free_now(&r);
    let block = b.alloc_pages(Gfp::KERNEL, 3).unwrap();
    assert_eq!(
        b.split_page(block, 2),
        Err(FreeError::WrongOrder { allocated: 3 })
    );
    b.split_page(block, 3).unwrap();
    assert_eq!(
        b.split_page(block, 3),
        Err(FreeError::WrongOrder { allocated: 0 })
    );
    let pfn = b.mem().page_to_pfn(block).unwrap().as_usize();
    assert_eq!(
        b.free_pages_page(block, 3),
        Err(FreeError::WrongOrder { allocated: 0 })
    );
    for i in 0..8 {
        b.free_pages_page(frame(&r, pfn + i), 0).unwrap();
    }
    assert_eq!(free_now(&r), before);
    // A free block cannot be split.
    assert_eq!(b.split_page(block, 0), Err(FreeError::DoubleFree));
    // Nor a frame that is not aligned to the order, nor a foreign page.
    let block = b.alloc_pages(Gfp::KERNEL, 2).unwrap();
    let pfn = b.mem().page_to_pfn(block).unwrap().as_usize();
    assert_eq!(
        b.split_page(frame(&r, pfn + 1), 2),
        Err(FreeError::Misaligned)
    );
    assert_eq!(
        b.split_page(&Page::new(ZoneType::Normal, 0), 0),
        Err(FreeError::Foreign)
    );
    assert_eq!(
        b.split_page(block, MAX_ORDER),
        Err(FreeError::OrderTooLarge)
    );
    b.free_pages_page(block, 2).unwrap();
    // Nor a block whose later frame its owner still marks.
    let block = b.alloc_pages(Gfp::KERNEL, 1).unwrap();
    let pfn = b.mem().page_to_pfn(block).unwrap().as_usize();
    // SAFETY: the block is ours; the mark is taken off again below.
    unsafe { frame(&r, pfn + 1).insert(PgFlags::SLAB) };
    assert_eq!(b.split_page(block, 1), Err(FreeError::Slab));
    // SAFETY: as above.
    unsafe { frame(&r, pfn + 1).remove(PgFlags::SLAB) };
    b.free_pages_page(block, 1).unwrap();
    assert_eq!(free_now(&r), before);
}
