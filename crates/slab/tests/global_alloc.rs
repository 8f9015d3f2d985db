//! The GlobalAlloc / Allocator adapter honours every layout.

mod common;

use core::alloc::{GlobalAlloc, Layout};

use common::rig;
use kmm_slab::KmallocHeap;

#[test]
fn layouts_are_honoured() {
    let r = rig(64, 1);
    let _c = r.bind(0);
    let heap = KmallocHeap::new(r.slab());
    let baseline = r.pages_out();
    let mut blocks = Vec::new();
    for size in [
        1usize, 7, 24, 33, 96, 100, 192, 250, 1000, 4096, 5000, 131_072, 200_000,
    ] {
        for align in [1usize, 8, 16, 32, 64, 128, 256, 1024, 4096, 8192, 65536] {
            let l = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { heap.alloc(l) };
            assert!(!p.is_null(), "{l:?}");
            assert_eq!(p as usize % align, 0, "{l:?} misaligned");
            // SAFETY: the block has at least `size` bytes.
            unsafe { core::ptr::write_bytes(p, 0x5A, size) };
            blocks.push((p, l));
        }
    }
    // No two blocks overlap.
    let mut sorted: Vec<_> = blocks
        .iter()
        .map(|&(p, l)| (p as usize, l.size()))
        .collect();
    sorted.sort();
    for w in sorted.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "overlap");
    }
    for (p, l) in blocks {
        // SAFETY: allocated above with this layout.
        unsafe { heap.dealloc(p, l) };
    }
    // Zeroed and realloc.
    let l = Layout::from_size_align(300, 16).unwrap();
    // SAFETY: non-zero size.
    let z = unsafe { heap.alloc_zeroed(l) };
    // SAFETY: 300 bytes.
    let zeroed = unsafe { core::slice::from_raw_parts(z, 300) };
    assert!(zeroed.iter().all(|&b| b == 0));
    // SAFETY: z has 300 bytes; grow it.
    unsafe { z.write(9) };
    // SAFETY: as above.
    let g = unsafe { heap.realloc(z, l, 5000) };
    assert_eq!(g as usize % 16, 0);
    // SAFETY: realloc kept the first byte.
    assert_eq!(unsafe { g.read() }, 9);
    // SAFETY: allocated with this size and alignment.
    unsafe { heap.dealloc(g, Layout::from_size_align(5000, 16).unwrap()) };
    // A bad dealloc is refused and counted, nothing corrupted.
    let mut x = 0u64;
    // SAFETY: deliberately bad; the adapter must refuse it.
    unsafe { heap.dealloc((&raw mut x).cast(), Layout::new::<u64>()) };
    assert_eq!(heap.refused(), 1);
    r.slab().shrink_all();
    r.buddy().drain_local();
    assert_eq!(r.pages_out(), baseline);
}

#[test]
fn collections_through_the_allocator_api() {
    let r = rig(32, 1);
    let _c = r.bind(0);
    let heap = KmallocHeap::new(r.slab());
    let mut v = allocator_api2::vec::Vec::new_in(&heap);
    for i in 0..10_000u32 {
        v.push(i);
    }
    assert_eq!(v.iter().map(|&x| u64::from(x)).sum::<u64>(), 49_995_000);
    let b = allocator_api2::boxed::Box::new_in([7u8; 3000], &heap);
    assert_eq!(b[2999], 7);
    drop(b);
    drop(v);
    assert_eq!(heap.refused(), 0);
}

#[test]
fn strong_alignment_costs_only_what_it_needs() {
    let r = rig(32, 1);
    let _c = r.bind(0);
    let heap = KmallocHeap::new(r.slab());
    let l = Layout::from_size_align(64, 8192).unwrap();
    // SAFETY: non-zero size.
    let p = unsafe { heap.alloc(l) };
    assert_eq!(p as usize % 8192, 0);
    assert_eq!(r.slab().ksize(p), Ok(8192), "two pages, not 64");
    // SAFETY: allocated above with this layout.
    unsafe { heap.dealloc(p, l) };
}
