//! Mempools keep a reserve that is used only when the allocator fails.

mod common;

use common::rig;
use kmm_buddy::Gfp;
use kmm_slab::{Mempool, PoolSource, SlabError, SlabFlags};

#[test]
fn reserve_is_used_only_on_failure() {
    let r = rig(16, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let baseline = r.pages_out();
    let cache = s
        .kmem_cache_create("bio", 256, 0, SlabFlags::empty(), None)
        .unwrap();
    let pool = Mempool::create(s, 4, PoolSource::Cache(cache)).unwrap();
    assert_eq!(pool.reserved(), 4);
    // While memory lasts, elements come from the cache.
    let a = pool.alloc(Gfp::KERNEL).unwrap();
    assert_eq!(pool.reserved(), 4);
    // Exhaust the page allocator, then the pool dips into its reserve.
    let mut hog = Vec::new();
    while let Some(p) = r.buddy().alloc_pages(Gfp::KERNEL, 0) {
        hog.push(p);
    }
    let mut from_reserve = Vec::new();
    while let Ok(e) = pool.alloc(Gfp::ATOMIC) {
        from_reserve.push(e);
    }
    assert!(from_reserve.len() >= 4, "the reserve was handed out");
    assert_eq!(pool.reserved(), 0);
    assert_eq!(pool.alloc(Gfp::ATOMIC), Err(SlabError::OutOfMemory));
    // Freed elements refill the reserve first.
    let last = from_reserve.pop().unwrap();
    pool.free(last).unwrap();
    assert_eq!(pool.reserved(), 1);
    assert_eq!(
        pool.free(last),
        Err(SlabError::DoubleFree),
        "already in the reserve"
    );
    // The reserve is short: destroy refuses and hands the pool back.
    let pool = match pool.destroy() {
        Err((pool, SlabError::Busy)) => pool,
        other => panic!(
            "destroy with the reserve short: {:?}",
            other.err().map(|e| e.1)
        ),
    };
    for p in hog {
        r.buddy().free_pages_page(p, 0).unwrap();
    }
    for e in from_reserve {
        pool.free(e).unwrap();
    }
    pool.free(a).unwrap();
    assert_eq!(pool.reserved(), 4);
    pool.destroy().map_err(|e| e.1).unwrap();
    // SAFETY: nothing uses the cache.
    unsafe { s.kmem_cache_destroy(cache) }.unwrap();
    s.shrink_all();
    r.buddy().drain_local();
    assert_eq!(r.pages_out(), baseline);
}

#[test]
fn kmalloc_pools_check_their_elements() {
    let r = rig(16, 1);
    let _c = r.bind(0);
    let s = r.slab();
    assert_eq!(
        Mempool::create(s, 2, PoolSource::Kmalloc(0)).err(),
        Some(SlabError::BadSize)
    );
    let pool = Mempool::create(s, 2, PoolSource::Kmalloc(500)).unwrap();
    let small = s.kmalloc(16, Gfp::KERNEL).unwrap();
    assert_eq!(
        pool.free(small),
        Err(SlabError::WrongCache),
        "too small for this pool"
    );
    let mut x = 0u64;
    assert_eq!(
        pool.free(core::ptr::NonNull::from(&mut x).cast()),
        Err(SlabError::Foreign)
    );
    s.kfree(small.as_ptr()).unwrap();
    assert_eq!(pool.reserved(), 2);
    pool.destroy().map_err(|e| e.1).unwrap();
}

#[test]
fn a_double_free_into_a_full_reserve_is_refused() {
    let r = rig(16, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let cache = s
        .kmem_cache_create("elem", 64, 0, SlabFlags::empty(), None)
        .unwrap();
    let pool = Mempool::create(s, 2, PoolSource::Cache(cache)).unwrap();
    // Run the allocator dry so elements come from the reserve.
    let mut hog = Vec::new();
    while let Some(p) = r.buddy().alloc_pages(Gfp::KERNEL, 0) {
        hog.push(p);
    }
    let mut taken = Vec::new();
    while let Ok(e) = pool.alloc(Gfp::ATOMIC) {
        taken.push(e);
    }
    let r0 = taken.pop().unwrap();
    pool.free(r0).unwrap();
    let r1 = taken.pop().unwrap();
    pool.free(r1).unwrap();
    assert_eq!(pool.reserved(), 2, "the reserve is full again");
    assert_eq!(
        pool.free(r0),
        Err(SlabError::DoubleFree),
        "already in the full reserve"
    );
    assert_eq!(pool.reserved(), 2);
    for p in hog {
        r.buddy().free_pages_page(p, 0).unwrap();
    }
    for e in taken {
        pool.free(e).unwrap();
    }
    pool.destroy().map_err(|e| e.1).unwrap();
}
