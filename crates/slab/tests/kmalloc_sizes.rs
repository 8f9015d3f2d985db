//! The kmalloc size classes: the dense table and Linux 2.6's, runs of frames
//! above the largest class, `krealloc` shrinking and growing, and the fall-back to a
//! larger class when a class cannot grow.

mod common;

use common::rig;
use kmm_buddy::Gfp;
use kmm_hal::PAGE_SIZE;
use kmm_slab::{KmallocSizes, SlabAllocator, SlabError};
use kmm_testkit::TestMachine;

/// Fills the block with a byte pattern of its own.
fn fill(p: *mut u8, n: usize) {
    for i in 0..n {
        // SAFETY: the caller owns `n` bytes at `p`.
        unsafe { p.add(i).write(i as u8 ^ 0x5a) };
    }
}

/// True if the block still holds the pattern of `fill`.
fn kept(p: *mut u8, n: usize) -> bool {
    // SAFETY: the caller owns `n` bytes at `p`.
    (0..n).all(|i| unsafe { p.add(i).read() } == i as u8 ^ 0x5a)
}

#[test]
fn dense_classes_step_by_eight_bytes_and_runs_take_their_frames() {
    let r = rig(32, 1);
    let _c = r.bind(0);
    let s = r.slab();
    assert_eq!(s.kmalloc_sizes(), KmallocSizes::Dense);
    assert_eq!(s.kmalloc_max_cache_size(), 32 * 1024);
    for (size, ksize) in [(1, 8), (100, 104), (201, 208), (257, 288), (1000, 1024)] {
        let p = s.kmalloc(size, Gfp::KERNEL).unwrap();
        assert_eq!(s.ksize(p.as_ptr()), Ok(ksize), "{size}");
        assert_eq!(p.as_ptr().addr() % 8, 0);
        s.kfree(p.as_ptr()).unwrap();
    }
    let names: Vec<&str> = KmallocSizes::Dense
        .classes()
        .iter()
        .map(|c| c.name())
        .collect();
    assert_eq!(&names[..3], ["size-8", "size-16", "size-24"]);
    // Past the largest class: a run of exactly the frames needed.
    let p = s.kmalloc(40_000, Gfp::KERNEL).unwrap();
    assert_eq!(s.ksize(p.as_ptr()), Ok(10 * PAGE_SIZE));
    assert_eq!(s.large_pages(), 10);
    s.kfree(p.as_ptr()).unwrap();
    assert_eq!(s.large_pages(), 0);
}

#[test]
fn linux_2_6_table_is_kept_for_studying_linux() {
    let r = TestMachine::builder().ram_mib(32).no_reserve().build();
    let _c = r.bind(0);
    let s = SlabAllocator::with_sizes(r.buddy(), KmallocSizes::Linux26).unwrap();
    assert_eq!(s.kmalloc_sizes(), KmallocSizes::Linux26);
    assert_eq!(s.kmalloc_max_cache_size(), 128 * 1024);
    for (size, ksize) in [
        (1, 32),
        (100, 128),
        (150, 192),
        (257, 512),
        (40_000, 65_536),
    ] {
        let p = s.kmalloc(size, Gfp::KERNEL).unwrap();
        assert_eq!(s.ksize(p.as_ptr()), Ok(ksize), "{size}");
        s.kfree(p.as_ptr()).unwrap();
    }
    let mut info = String::new();
    s.slabinfo(&mut info).unwrap();
    assert!(info.lines().any(|l| l.starts_with("size-192 ")), "{info}");
    assert!(!info.lines().any(|l| l.starts_with("size-104 ")));
    let p = s.kmalloc(200_000, Gfp::KERNEL).unwrap();
    assert_eq!(s.ksize(p.as_ptr()), Ok(49 * PAGE_SIZE));
    s.kfree(p.as_ptr()).unwrap();
}

#[test]
fn krealloc_shrinks_runs_in_place_and_grows_objects_with_room() {
    let r = rig(32, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let b = s.buddy();
    // A run gives its tail frames back without moving.
    let p = s.kmalloc(200_000, Gfp::KERNEL).unwrap();
    fill(p.as_ptr(), 200_000);
    b.drain_local();
    let free = b.free_pages_total();
    // SAFETY: `p` is a live block the test owns.
    let q = unsafe { s.krealloc(p.as_ptr(), 50_000, Gfp::KERNEL) }.unwrap();
    assert_eq!(q, p, "in place");
    assert_eq!(s.ksize(q.as_ptr()), Ok(13 * PAGE_SIZE));
    assert_eq!(s.large_pages(), 13);
    b.drain_local();
    assert_eq!(b.free_pages_total(), free + 36, "49 - 13 frames back");
    assert!(kept(q.as_ptr(), 50_000));
    // Into a class once the size fits one.
    // SAFETY: as above.
    let q = unsafe { s.krealloc(q.as_ptr(), 1000, Gfp::KERNEL) }.unwrap();
    assert_eq!(s.ksize(q.as_ptr()), Ok(1024));
    assert_eq!(s.large_pages(), 0);
    assert!(kept(q.as_ptr(), 1000));
    // A slab object keeps its block when it shrinks, as in Linux.
    // SAFETY: as above.
    let q2 = unsafe { s.krealloc(q.as_ptr(), 100, Gfp::KERNEL) }.unwrap();
    assert_eq!(q2, q, "kept");
    assert_eq!(s.ksize(q2.as_ptr()), Ok(1024));
    // Growing out of its class, it moves to the Linux 2.6 class of the new
    // size (room to grow again in place): 1500 bytes go to size-2048.
    // SAFETY: as above.
    let q3 = unsafe { s.krealloc(q2.as_ptr(), 1500, Gfp::KERNEL) }.unwrap();
    assert_eq!(s.ksize(q3.as_ptr()), Ok(2048));
    assert!(kept(q3.as_ptr(), 100));
    assert_eq!(
        s.kfree(q.as_ptr()),
        Err(SlabError::DoubleFree),
        "the old block went"
    );
    // A first allocation takes the dense class.
    let d = s.kmalloc(1500, Gfp::KERNEL).unwrap();
    assert_eq!(s.ksize(d.as_ptr()), Ok(1536));
    s.kfree(d.as_ptr()).unwrap();
    // Growing within the run is in place.
    let p = s.kmalloc(40_000, Gfp::KERNEL).unwrap();
    // SAFETY: as above.
    let p2 = unsafe { s.krealloc(p.as_ptr(), 40_960, Gfp::KERNEL) }.unwrap();
    assert_eq!(p2, p);
    s.kfree(p2.as_ptr()).unwrap();
    s.kfree(q3.as_ptr()).unwrap();
}

#[test]
#[cfg_attr(
    miri,
    ignore = "exhausts the machine a page at a time: too slow for Miri"
)]
fn a_class_that_cannot_grow_takes_a_larger_classes_free_object() {
    let r = rig(16, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let b = s.buddy();
    // size-200 keeps a slab with free objects (one stays allocated).
    let keep = s.kmalloc(200, Gfp::KERNEL).unwrap();
    let spare = s.kmalloc(200, Gfp::KERNEL).unwrap();
    s.kfree(spare.as_ptr()).unwrap();
    // The page allocator runs dry.
    let mut pages = Vec::new();
    while let Some(p) = b.alloc_pages(Gfp::KERNEL, 0) {
        pages.push(p);
    }
    // size-104 has never been used: no slab, none can be grown.
    let p = s.kmalloc(100, Gfp::KERNEL).unwrap();
    let k = s.ksize(p.as_ptr()).unwrap();
    assert!(k > 104 && k <= 200, "a larger class's object: {k}");
    fill(p.as_ptr(), 100);
    s.kfree(p.as_ptr()).unwrap();
    // Beyond twice the size, nothing is taken.
    assert_eq!(s.kmalloc(24, Gfp::ATOMIC), Err(SlabError::OutOfMemory));
    for p in pages {
        b.free_pages_page(p, 0).unwrap();
    }
    s.kfree(keep.as_ptr()).unwrap();
}
