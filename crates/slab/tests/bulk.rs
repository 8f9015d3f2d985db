//! `kmem_cache_alloc_bulk` and `kmem_cache_free_bulk`: all or nothing for an
//! allocation; a bulk free stops at its first bad element with that element's
//! index and the error `kmem_cache_free` gives it, every element before it
//! freed, it and the rest untouched, and the allocator intact.

mod common;

use core::ptr::NonNull;

use common::rig;
use kmm_buddy::Gfp;
use kmm_mock::MockCpu;
use kmm_slab::{BulkFreeError, Cache, SlabAllocator, SlabError, SlabFlags};
use kmm_testkit::TestMachine;

/// `n` objects of `cache`, by bulk allocation.
fn bulk<'a>(s: &SlabAllocator<'a, MockCpu>, cache: Cache<'a>, n: usize) -> Vec<NonNull<u8>> {
    let mut objs = vec![NonNull::dangling(); n];
    s.kmem_cache_alloc_bulk(cache, Gfp::KERNEL, &mut objs)
        .expect("bulk allocation");
    objs
}

fn active<'a>(s: &SlabAllocator<'a, MockCpu>, cache: Cache<'a>) -> usize {
    s.cache_stats(cache).unwrap().active_objs
}

#[test]
fn bulk_objects_are_distinct_live_objects_of_the_cache() {
    let r = rig(32, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let c = s
        .kmem_cache_create("bulk", 48, 16, SlabFlags::empty(), None)
        .unwrap();
    // Below the array's batch, across it, and beyond its limit (120).
    let sizes: &[usize] = if cfg!(miri) {
        &[0, 16, 121]
    } else {
        &[0, 1, 16, 61, 64, 121, 500]
    };
    for &n in sizes {
        let objs = bulk(s, c, n);
        let mut addrs: Vec<usize> = objs.iter().map(|p| p.as_ptr().addr()).collect();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), n, "{n} distinct objects");
        assert!(addrs.windows(2).all(|w| w[1] - w[0] >= 48), "no overlap");
        assert!(addrs.iter().all(|a| a % 16 == 0), "aligned");
        assert_eq!(active(s, c), n);
        for &p in &objs {
            // Live: a single free would accept each; the bulk free does.
            assert_eq!(s.ksize(p.as_ptr()), Ok(48));
        }
        s.kmem_cache_free_bulk(c, &objs).unwrap();
        assert_eq!(active(s, c), 0);
        assert!(s.validate_cache(c).is_ok());
    }
}

#[test]
fn bulk_and_single_calls_mix() {
    let r = rig(32, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let c = s
        .kmem_cache_create("mix", 100, 0, SlabFlags::empty(), None)
        .unwrap();
    let objs = bulk(s, c, 40);
    // Objects of a bulk allocation freed one by one, and the other way.
    for &p in &objs[..20] {
        s.kmem_cache_free(c, p).unwrap();
    }
    s.kmem_cache_free_bulk(c, &objs[20..]).unwrap();
    let singles: Vec<NonNull<u8>> = (0..30)
        .map(|_| s.kmem_cache_alloc(c, Gfp::KERNEL).unwrap())
        .collect();
    s.kmem_cache_free_bulk(c, &singles).unwrap();
    assert_eq!(active(s, c), 0);
    for &p in &singles {
        assert_eq!(s.kmem_cache_free(c, p), Err(SlabError::DoubleFree));
    }
}

#[test]
fn zeroed_bulk_objects() {
    let r = rig(32, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let c = s
        .kmem_cache_create("zero", 200, 0, SlabFlags::empty(), None)
        .unwrap();
    let objs = bulk(s, c, 30);
    for &p in &objs {
        // SAFETY: live 200-byte objects of ours.
        unsafe { p.as_ptr().write_bytes(0xAB, 200) };
    }
    s.kmem_cache_free_bulk(c, &objs).unwrap();
    let mut again = vec![NonNull::dangling(); 30];
    s.kmem_cache_alloc_bulk(c, Gfp::KERNEL | Gfp::ZERO, &mut again)
        .unwrap();
    for &p in &again {
        // SAFETY: as above.
        let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), 200) };
        assert!(bytes.iter().all(|&b| b == 0), "zeroed");
    }
    s.kmem_cache_free_bulk(c, &again).unwrap();
}

#[test]
fn constructed_bulk_objects() {
    fn ctor(p: *mut u8) {
        // SAFETY: a whole object of at least 8 bytes.
        unsafe { p.cast::<u64>().write_unaligned(0x5EED) }
    }
    let r = rig(32, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let c = s
        .kmem_cache_create("ctor", 24, 0, SlabFlags::empty(), Some(ctor))
        .unwrap();
    let objs = bulk(s, c, 200);
    for &p in &objs {
        // SAFETY: a live object of ours, constructed.
        assert_eq!(unsafe { p.as_ptr().cast::<u64>().read_unaligned() }, 0x5EED);
    }
    s.kmem_cache_free_bulk(c, &objs).unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "exhausts 8 MiB: too slow for Miri")]
fn a_failed_bulk_allocation_takes_nothing() {
    let r = rig(8, 1);
    let s = r.slab();
    let cpu0 = r.bind(0);
    let c = s
        .kmem_cache_create("greedy", 1024, 0, SlabFlags::empty(), None)
        .unwrap();
    drop(cpu0);
    r.shrink_everywhere();
    let before = r.pages_out();
    let cpu0 = r.bind(0);
    // More 1 KiB objects than the machine's 8 MiB hold.
    let mut objs = vec![NonNull::dangling(); 10_000];
    assert_eq!(
        s.kmem_cache_alloc_bulk(c, Gfp::KERNEL, &mut objs),
        Err(SlabError::OutOfMemory)
    );
    assert_eq!(active(s, c), 0, "every object taken went back");
    drop(cpu0);
    r.shrink_everywhere();
    assert_eq!(r.pages_out(), before, "and every page");
    let _c = r.bind(0);
    // The cache still works, for a bulk allocation that fits.
    let objs = bulk(s, c, 100);
    s.kmem_cache_free_bulk(c, &objs).unwrap();
    assert!(s.validate_cache(c).is_ok());
}

#[test]
fn bad_handles_are_refused_before_any_element() {
    let r = rig(32, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let c = s
        .kmem_cache_create("gone", 32, 0, SlabFlags::empty(), None)
        .unwrap();
    let keep = s
        .kmem_cache_create("keep", 32, 0, SlabFlags::empty(), None)
        .unwrap();
    let objs = bulk(s, keep, 4);
    // SAFETY: no CPU uses the cache.
    unsafe { s.kmem_cache_destroy(c) }.unwrap();
    let mut out = [NonNull::dangling(); 4];
    assert_eq!(
        s.kmem_cache_alloc_bulk(c, Gfp::KERNEL, &mut out),
        Err(SlabError::NoSuchCache)
    );
    assert_eq!(
        s.kmem_cache_alloc_bulk(s.cache_of_caches(), Gfp::KERNEL, &mut out),
        Err(SlabError::Internal)
    );
    let refused = |error| Err(BulkFreeError { index: 0, error });
    assert_eq!(
        s.kmem_cache_free_bulk(c, &objs),
        refused(SlabError::NoSuchCache)
    );
    assert_eq!(
        s.kmem_cache_free_bulk(s.cache_of_caches(), &objs),
        refused(SlabError::Internal)
    );
    assert_eq!(active(s, keep), 4, "nothing freed");
    s.kmem_cache_free_bulk(keep, &objs).unwrap();
}

/// A bad element at `at` of a bulk free of `n` good objects: refused with
/// `at` and `error`; the good objects before it are freed, the rest stay
/// live (a single free of each then succeeds), and the cache's error count
/// goes up by one where the single free counts one (`count`).
fn refused_at(
    r: &TestMachine,
    make_bad: impl for<'a> FnOnce(&SlabAllocator<'a, MockCpu>, Cache<'a>, &[NonNull<u8>]) -> NonNull<u8>,
    at: usize,
    error: SlabError,
    count: bool,
) {
    let s = r.slab();
    let cpu0 = r.bind(0);
    let c = s
        .kmem_cache_create("victim", 64, 0, SlabFlags::empty(), None)
        .unwrap();
    let n = 150; // more than the per-CPU array holds
    let good = bulk(s, c, n);
    let bad = make_bad(s, c, &good);
    let mut objs = good.clone();
    objs.insert(at, bad);
    let errors = s.cache_info(c).unwrap().errors();
    assert_eq!(
        s.kmem_cache_free_bulk(c, &objs),
        Err(BulkFreeError { index: at, error }),
        "{error:?} at {at}"
    );
    assert_eq!(active(s, c), n - at, "the {at} before it freed");
    assert_eq!(
        s.cache_info(c).unwrap().errors(),
        errors + usize::from(count),
        "counted as the single free counts it"
    );
    for &p in &good[..at] {
        assert_eq!(s.kmem_cache_free(c, p), Err(SlabError::DoubleFree));
    }
    // The rest untouched: freed now, in one more bulk call.
    s.kmem_cache_free_bulk(c, &good[at..]).unwrap();
    assert_eq!(active(s, c), 0);
    assert!(s.validate_cache(c).is_ok());
    // SAFETY: no CPU uses the cache any more.
    unsafe { s.kmem_cache_destroy(c) }.unwrap();
    drop(cpu0);
    r.shrink_everywhere();
}

#[test]
fn every_bad_element_is_refused_with_its_index() {
    let r = rig(32, 1);
    let cpu0 = r.bind(0);
    let s = r.slab();
    let other = s
        .kmem_cache_create("other", 64, 0, SlabFlags::empty(), None)
        .unwrap();
    let foreign_obj = s.kmem_cache_alloc(other, Gfp::KERNEL).unwrap();
    let small = s.kmalloc(64, Gfp::KERNEL).unwrap();
    let large = s.kmalloc(300_000, Gfp::KERNEL).unwrap();
    let page = r.buddy().get_free_pages(Gfp::KERNEL, 0).unwrap();
    let mut local = 0u64;
    let stack = NonNull::from(&mut local).cast::<u8>();
    let descriptor = NonNull::from(s.cache_info(other).unwrap()).cast::<u8>();
    drop(cpu0);
    r.shrink_everywhere();
    let before = r.pages_out();
    // In the array's part, at its end, past it (the slabs' part), last.
    let positions: &[usize] = if cfg!(miri) {
        &[0, 130]
    } else {
        &[0, 1, 59, 60, 120, 149, 150]
    };
    for &at in positions {
        refused_at(&r, |_, _, _| stack, at, SlabError::Foreign, false);
        refused_at(
            &r,
            |_, _, _| NonNull::new(page.as_mut_ptr()).unwrap(),
            at,
            SlabError::Foreign,
            false,
        );
        refused_at(&r, |_, _, _| large, at, SlabError::Foreign, false);
        refused_at(
            &r,
            |_, _, _| NonNull::new(large.as_ptr().wrapping_add(8)).unwrap(),
            at,
            SlabError::Foreign,
            false,
        );
        refused_at(&r, |_, _, _| descriptor, at, SlabError::Internal, false);
        refused_at(&r, |_, _, _| foreign_obj, at, SlabError::WrongCache, true);
        refused_at(&r, |_, _, _| small, at, SlabError::WrongCache, true);
        refused_at(
            &r,
            |_, _, good| NonNull::new(good[0].as_ptr().wrapping_add(8)).unwrap(),
            at,
            SlabError::Interior,
            false,
        );
        // An object freed before the call, and one repeated in the slice.
        refused_at(
            &r,
            |s, c, _| {
                let o = s.kmem_cache_alloc(c, Gfp::KERNEL).unwrap();
                s.kmem_cache_free(c, o).unwrap();
                o
            },
            at,
            SlabError::DoubleFree,
            true,
        );
        if at > 0 {
            refused_at(
                &r,
                |_, _, good| good[at / 2],
                at,
                SlabError::DoubleFree,
                true,
            );
        }
    }
    // The other allocators' blocks and the other cache are as they were.
    assert_eq!(r.pages_out(), before);
    let _c = r.bind(0);
    s.kmem_cache_free(other, foreign_obj).unwrap();
    s.kfree(small.as_ptr()).unwrap();
    s.kfree(large.as_ptr()).unwrap();
    r.buddy().free_pages(page, 0).unwrap();
}

#[test]
fn bulk_frees_on_another_cpu_and_across_the_shared_array() {
    let r = rig(32, 2);
    let s = r.slab();
    let c = {
        let _c = r.bind(0);
        s.kmem_cache_create("cross", 64, 0, SlabFlags::empty(), None)
            .unwrap()
    };
    let objs = {
        let _c = r.bind(0);
        bulk(s, c, 400)
    };
    {
        let _c = r.bind(1);
        s.kmem_cache_free_bulk(c, &objs).unwrap();
        // Taken back on CPU 1: from its array, the shared array and the
        // slabs.
        let again = bulk(s, c, 400);
        s.kmem_cache_free_bulk(c, &again).unwrap();
    }
    assert_eq!(active(s, c), 0);
    assert!(s.validate_cache(c).is_ok());
}
