//! Every bad argument to `FreeAreas` is refused with a typed error and
//! nothing changed; the four fit types of Linux's `adjust_va_to_fit_type` and
//! the three merges of `merge_or_add_vmap_area`, one by one.

// The expected free ranges are ranges, one or several.
#![allow(clippy::single_range_in_vec_init)]

mod common;

use std::ops::Range;

use common::NodePool;
use kmm_hal::PAGE_SIZE;
use kmm_vmalloc::free_area::{AllocError, CreateError, FreeAreas, FreeError};

const P: usize = PAGE_SIZE;
const BASE: usize = 0x4000_0000;
const END: usize = BASE + 64 * P;

fn ranges(areas: &FreeAreas) -> Vec<Range<usize>> {
    areas.iter().collect()
}

#[test]
fn a_bad_span_is_refused_and_the_node_comes_back() {
    let mut pool = NodePool::default();
    let (e, node) = FreeAreas::new(BASE, BASE, pool.take()).unwrap_err();
    assert_eq!(e, CreateError::Empty);
    pool.give(node);
    let (e, node) = FreeAreas::new(BASE + 1, END, pool.take()).unwrap_err();
    assert_eq!(e, CreateError::Unaligned);
    pool.give(node);
    assert_eq!(pool.outstanding, 0);
}

#[test]
fn bad_allocations_change_nothing() {
    let mut pool = NodePool::default();
    let mut areas = FreeAreas::new(BASE, END, pool.take()).unwrap();
    let a = areas.alloc(4 * P, P, BASE, END, &mut None).unwrap();
    assert!(a.released.is_empty());
    let before = ranges(&areas);
    let mut spare = None;
    let cases = [
        (0, P, BASE, END, AllocError::ZeroSize),
        (P + 1, P, BASE, END, AllocError::Unaligned),
        (P, 3 * P, BASE, END, AllocError::BadAlign),
        (P, 0, BASE, END, AllocError::BadAlign),
        (P, P, END, BASE, AllocError::BadWindow),
        (P, P, BASE, BASE, AllocError::BadWindow),
        (P, P, BASE + 1, END, AllocError::BadWindow),
        (P, P, BASE - P, END, AllocError::BadWindow),
        (P, P, BASE, END + P, AllocError::BadWindow),
        (61 * P, P, BASE, END, AllocError::NoSpace),
        (P, P, BASE, BASE + 4 * P, AllocError::NoSpace),
        (2 * P, 64 * P, BASE, END, AllocError::NoSpace),
        (usize::MAX & !(P - 1), P, BASE, END, AllocError::NoSpace),
        // A fit in the middle of a range with no spare node.
        (P, P, BASE + 8 * P, END, AllocError::NeedSpare),
    ];
    for (size, align, vstart, vend, want) in cases {
        let got = areas.alloc(size, align, vstart, vend, &mut spare);
        assert_eq!(
            got.unwrap_err(),
            want,
            "{size:#x} {align:#x} {vstart:#x}..{vend:#x}"
        );
        assert_eq!(ranges(&areas), before);
        areas.check().unwrap();
    }
    pool.give_all(areas.into_nodes());
    assert_eq!(pool.outstanding, 0);
}

#[test]
fn bad_frees_change_nothing_and_give_the_node_back() {
    let mut pool = NodePool::default();
    let mut areas = FreeAreas::new(BASE, END, pool.take()).unwrap();
    // Busy [BASE, BASE + 8P), free above.
    let a = areas.alloc(8 * P, P, BASE, END, &mut None).unwrap();
    assert!(a.released.is_empty());
    let before = ranges(&areas);
    let cases = [
        (BASE, 0, FreeError::ZeroSize),
        (BASE + 1, P, FreeError::Unaligned),
        (BASE, P + 1, FreeError::Unaligned),
        (BASE - P, P, FreeError::OutOfRange),
        (BASE, 65 * P, FreeError::OutOfRange),
        (usize::MAX & !(P - 1), 2 * P, FreeError::OutOfRange),
        // Double frees: inside the free range, straddling its start, whole.
        (BASE + 9 * P, P, FreeError::Overlap),
        (BASE + 7 * P, 2 * P, FreeError::Overlap),
        (BASE + 8 * P, 56 * P, FreeError::Overlap),
        (BASE, 64 * P, FreeError::Overlap),
    ];
    for (start, size, want) in cases {
        let (got, node) = areas.free(start, size, pool.take()).unwrap_err();
        assert_eq!(got, want, "{start:#x} + {size:#x}");
        pool.give(node);
        assert_eq!(ranges(&areas), before);
        areas.check().unwrap();
    }
    pool.give_all(areas.into_nodes());
    assert_eq!(pool.outstanding, 0);
}

#[test]
fn the_four_fit_types_and_the_three_merges() {
    let mut pool = NodePool::default();
    let mut areas = FreeAreas::new(BASE, END, pool.take()).unwrap();
    let mut spare = Some(pool.take());
    // Left edge.
    let a = areas.alloc(2 * P, P, BASE, END, &mut spare).unwrap();
    assert_eq!((a.addr, a.released.len()), (BASE, 0));
    assert_eq!(ranges(&areas), [BASE + 2 * P..END]);
    // Right edge: only the last four pages are in the window.
    let b = areas.alloc(4 * P, P, END - 4 * P, END, &mut spare).unwrap();
    assert_eq!((b.addr, b.released.len()), (END - 4 * P, 0));
    assert_eq!(ranges(&areas), [BASE + 2 * P..END - 4 * P]);
    // No edge: the spare holds the lower part.
    let c = areas.alloc(P, 16 * P, BASE, END, &mut spare).unwrap();
    assert_eq!((c.addr, c.released.len()), (BASE + 16 * P, 0));
    assert!(spare.is_none());
    assert_eq!(
        ranges(&areas),
        [BASE + 2 * P..BASE + 16 * P, BASE + 17 * P..END - 4 * P]
    );
    assert_eq!(areas.largest(), 43 * P);
    // Full fit: the range's node comes back.
    let d = areas.alloc(14 * P, P, BASE, END, &mut spare).unwrap();
    assert_eq!((d.addr, d.released.len()), (BASE + 2 * P, 1));
    pool.give_all(d.released);
    assert_eq!(ranges(&areas), [BASE + 17 * P..END - 4 * P]);
    areas.check().unwrap();
    // Merges: with the range above (node back), nothing (node kept), the
    // range below (node back), both (two nodes back).
    let r = areas.free(BASE + 16 * P, P, pool.take()).unwrap();
    assert_eq!(r.len(), 1);
    pool.give_all(r);
    let r = areas.free(BASE, P, pool.take()).unwrap();
    assert_eq!(r.len(), 0);
    let r = areas.free(END - 4 * P, 4 * P, pool.take()).unwrap();
    assert_eq!(r.len(), 1);
    pool.give_all(r);
    assert_eq!(ranges(&areas), [BASE..BASE + P, BASE + 16 * P..END]);
    let r = areas.free(BASE + P, 15 * P, pool.take()).unwrap();
    assert_eq!(r.len(), 2);
    pool.give_all(r);
    assert_eq!(ranges(&areas), [BASE..END]);
    assert_eq!(areas.free_bytes(), END - BASE);
    areas.check().unwrap();
    assert_eq!(pool.outstanding, 1);
    pool.give_all(areas.into_nodes());
    assert_eq!(pool.outstanding, 0);
}
