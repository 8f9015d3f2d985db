//! Every bad call is refused with a typed error, changing nothing.

mod common;

use common::rig;
use kmm_buddy::Gfp;
use kmm_slab::{SlabError, SlabFlags};

#[test]
fn bad_frees_are_refused() {
    let r = rig(32, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let a = s
        .kmem_cache_create("a", 40, 0, SlabFlags::empty(), None)
        .unwrap();
    let b = s
        .kmem_cache_create("b", 40, 0, SlabFlags::empty(), None)
        .unwrap();
    let x = s.kmem_cache_alloc(a, Gfp::KERNEL).unwrap();
    let k = s.kmalloc(200, Gfp::KERNEL).unwrap();
    let big = s.kmalloc(300_000, Gfp::KERNEL).unwrap();
    let before = (
        r.pages_out(),
        s.cache_stats(a).unwrap(),
        s.cache_stats(b).unwrap(),
    );
    let mut local = 0u64;
    let page = r.buddy().get_free_pages(Gfp::KERNEL, 0).unwrap();

    assert_eq!(s.kmem_cache_free(b, x), Err(SlabError::WrongCache));
    assert_eq!(
        s.kfree(x.as_ptr().wrapping_add(8)),
        Err(SlabError::Interior)
    );
    let inside = core::ptr::NonNull::new(x.as_ptr().wrapping_add(1)).unwrap();
    assert_eq!(s.kmem_cache_free(a, inside), Err(SlabError::Interior));
    assert_eq!(
        s.kfree((&raw mut local).cast()),
        Err(SlabError::Foreign),
        "stack pointer"
    );
    assert_eq!(
        s.kfree(page.as_mut_ptr()),
        Err(SlabError::Foreign),
        "a page from the buddy allocator"
    );
    assert_eq!(
        s.kfree(big.as_ptr().wrapping_add(4096)),
        Err(SlabError::Interior),
        "inside a large block"
    );
    assert_eq!(
        s.kfree(big.as_ptr().wrapping_add(8)),
        Err(SlabError::Interior)
    );
    assert_eq!(
        s.kfree(core::ptr::null_mut()),
        Ok(()),
        "kfree(NULL) is fine"
    );
    let after = (
        r.pages_out(),
        s.cache_stats(a).unwrap(),
        s.cache_stats(b).unwrap(),
    );
    assert_eq!(before.0, after.0 - 1, "only the test's own page");
    assert_eq!((before.1, before.2), (after.1, after.2));

    // Double frees.
    s.kmem_cache_free(a, x).unwrap();
    assert_eq!(s.kmem_cache_free(a, x), Err(SlabError::DoubleFree));
    assert_eq!(s.kfree(x.as_ptr()), Err(SlabError::DoubleFree));
    s.kfree(k.as_ptr()).unwrap();
    assert_eq!(s.kfree(k.as_ptr()), Err(SlabError::DoubleFree));
    assert_eq!(s.ksize(k.as_ptr()), Err(SlabError::DoubleFree));
    s.kfree(big.as_ptr()).unwrap();
    assert_eq!(s.kfree(big.as_ptr()), Err(SlabError::DoubleFree));
    r.buddy().free_pages(page, 0).unwrap();
    assert!(
        r.slab().last_report().is_some(),
        "double frees are reported"
    );
}

#[test]
fn bad_sizes_and_alignments() {
    let r = rig(32, 1);
    let _c = r.bind(0);
    let s = r.slab();
    assert_eq!(s.kmalloc(0, Gfp::KERNEL), Err(SlabError::BadSize));
    assert_eq!(s.kmalloc(usize::MAX, Gfp::KERNEL), Err(SlabError::BadSize));
    assert_eq!(
        s.kmalloc(usize::MAX - 4095, Gfp::KERNEL),
        Err(SlabError::BadSize)
    );
    assert_eq!(
        s.kcalloc(usize::MAX / 2, 3, Gfp::KERNEL),
        Err(SlabError::BadSize)
    );
    assert_eq!(
        s.kmalloc(64 << 20, Gfp::KERNEL),
        Err(SlabError::BadSize),
        "beyond MAX_ORDER"
    );
    assert_eq!(
        s.kmem_cache_create("z", 0, 0, SlabFlags::empty(), None),
        Err(SlabError::BadSize)
    );
    assert_eq!(
        s.kmem_cache_create("h", 1 << 20, 0, SlabFlags::empty(), None),
        Err(SlabError::BadSize)
    );
    assert_eq!(
        s.kmem_cache_create("a", 64, 24, SlabFlags::empty(), None),
        Err(SlabError::BadAlign)
    );
    assert_eq!(
        s.kmem_cache_create("a", 64, 8192, SlabFlags::empty(), None),
        Err(SlabError::BadAlign)
    );
    let p = s.kmalloc(10, Gfp::KERNEL).unwrap();
    // SAFETY: `p` is a live kmalloc block the test owns.
    let r0 = unsafe { s.krealloc(p.as_ptr(), 0, Gfp::KERNEL) };
    assert_eq!(r0, Err(SlabError::BadSize));
    let mut x = 0u64;
    // SAFETY: a foreign pointer: krealloc must refuse it before reading.
    let rf = unsafe { s.krealloc((&raw mut x).cast(), 100, Gfp::KERNEL) };
    assert_eq!(rf, Err(SlabError::Foreign));
    assert_eq!(
        s.ksize(p.as_ptr()),
        Ok(16),
        "krealloc(0) left the block alone"
    );
    s.kfree(p.as_ptr()).unwrap();
}

#[test]
fn destroy_refuses_a_busy_cache_and_stale_handles() {
    let r = rig(32, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let before = r.pages_out();
    let c = s
        .kmem_cache_create("busy", 100, 0, SlabFlags::empty(), None)
        .unwrap();
    let o = s.kmem_cache_alloc(c, Gfp::KERNEL).unwrap();
    // SAFETY: nothing else uses the cache.
    assert_eq!(unsafe { s.kmem_cache_destroy(c) }, Err(SlabError::Busy));
    s.kmem_cache_free(c, o).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { s.kmem_cache_destroy(c) }, Ok(()));
    assert_eq!(
        s.kmem_cache_alloc(c, Gfp::KERNEL),
        Err(SlabError::NoSuchCache)
    );
    assert_eq!(s.kmem_cache_free(c, o), Err(SlabError::NoSuchCache));
    // SAFETY: as above.
    let again = unsafe { s.kmem_cache_destroy(c) };
    assert_eq!(again, Err(SlabError::NoSuchCache));
    let general = s.kmalloc_cache(64, false).unwrap();
    // SAFETY: as above.
    let g = unsafe { s.kmem_cache_destroy(general) };
    assert_eq!(g, Err(SlabError::Busy), "general caches stay");
    s.shrink_all();
    r.buddy().drain_local();
    assert_eq!(r.pages_out(), before, "every page back");
}

#[test]
fn handles_belong_to_their_allocator() {
    let r1 = rig(16, 1);
    let r2 = rig(16, 1);
    let _c = r1.bind(0);
    let c1 = r1
        .slab()
        .kmem_cache_create("mine", 64, 0, SlabFlags::empty(), None)
        .unwrap();
    assert_eq!(r1.slab().cache_info(c1).map(|c| c.name()), Some("mine"));
    // The other allocator refuses the handle rather than using the cache.
    assert!(r2.slab().cache_info(c1).is_none());
    assert_eq!(
        r2.slab().kmem_cache_alloc(c1, Gfp::KERNEL),
        Err(SlabError::NoSuchCache)
    );
    // SAFETY: nothing uses the cache.
    let d = unsafe { r2.slab().kmem_cache_destroy(c1) };
    assert_eq!(d, Err(SlabError::NoSuchCache));
}

#[test]
fn zeroed_objects_and_exact_shrink_counts() {
    let r = rig(32, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let c = s
        .kmem_cache_create("z", 200, 0, SlabFlags::empty(), None)
        .unwrap();
    let o = s.kmem_cache_alloc(c, Gfp::KERNEL).unwrap();
    // SAFETY: a live 200-byte object.
    unsafe { core::ptr::write_bytes(o.as_ptr(), 0xAB, 200) };
    s.kmem_cache_free(c, o).unwrap();
    let z = s.kmem_cache_alloc(c, Gfp::KERNEL | Gfp::ZERO).unwrap();
    assert_eq!(z, o, "the hot object comes back");
    // SAFETY: a live 200-byte object.
    let bytes = unsafe { core::slice::from_raw_parts(z.as_ptr(), 200) };
    assert!(bytes.iter().all(|&b| b == 0));
    s.kmem_cache_free(c, z).unwrap();
    // Shrinking reports exactly the pages that went back.
    let objs: Vec<_> = (0..3000)
        .map(|_| s.kmem_cache_alloc(c, Gfp::KERNEL).unwrap())
        .collect();
    for o in objs {
        s.kmem_cache_free(c, o).unwrap();
    }
    let before = r.pages_out();
    let reported = s.kmem_cache_shrink(c).unwrap();
    assert!(reported > 0);
    assert_eq!(before - r.pages_out(), reported);
    let before = r.pages_out();
    let reported = s.shrink_all();
    assert_eq!(before - r.pages_out(), reported);
}

#[test]
#[cfg_attr(miri, ignore = "exhausts 16 MiB a page at a time: too slow for Miri")]
fn exhaustion_reclaims_idle_slabs_first() {
    let r = rig(16, 1);
    let _c = r.bind(0);
    let s = r.slab();
    // size-152: no cache keeps its slab descriptors there.
    let small = s.kmalloc_cache(150, false).unwrap();
    let objs: Vec<_> = (0..3000)
        .map(|_| s.kmalloc(150, Gfp::KERNEL).unwrap())
        .collect();
    for o in objs {
        s.kfree(o.as_ptr()).unwrap();
    }
    assert!(
        s.cache_stats(small).unwrap().num_slabs > 0,
        "idle slabs kept"
    );
    let mut big = Vec::new();
    while let Ok(p) = s.kmalloc(4096, Gfp::KERNEL) {
        big.push(p);
    }
    // Before giving up, the allocator gave the idle small slabs back.
    assert_eq!(s.cache_stats(small).unwrap().num_slabs, 0);
    for p in big {
        s.kfree(p.as_ptr()).unwrap();
    }
}
