//! Bad input to the slab allocator, each call refused with its error and
//! nothing changed: interior pointers, double frees, the wrong cache, pointers
//! kmalloc never handed out, bad cache and kmalloc sizes.

use core::cell::Cell;
use core::ptr::NonNull;

use kmm_buddy::Gfp;
use kmm_hal::PAGE_SIZE;
use kmm_slab::{Cache, KMALLOC_MAX_CACHE_SIZE, SlabError, SlabFlags};

use crate::heap::KernelSlab;

/// Feeds bad input to `slab`, using objects of `task` and `small` (two
/// caches); returns how many calls were refused.
pub fn run(slab: &KernelSlab, task: Cache<'static>, small: Cache<'static>) -> usize {
    let refused = Cell::new(0);
    let expect = |r: Result<(), SlabError>, want: SlabError, what: &str| {
        assert_eq!(r, Err(want), "{what}");
        refused.set(refused.get() + 1);
    };
    let t = slab.kmem_cache_alloc(task, Gfp::KERNEL).expect("a task");
    let inner = t.as_ptr().wrapping_add(8);
    let inner = NonNull::new(inner).expect("not null");
    expect(
        slab.kmem_cache_free(task, inner),
        SlabError::Interior,
        "interior task",
    );
    slab.kmem_cache_free(task, t).expect("freeing a task");
    expect(
        slab.kmem_cache_free(task, t),
        SlabError::DoubleFree,
        "task twice",
    );
    let s = slab
        .kmem_cache_alloc(small, Gfp::KERNEL)
        .expect("a small object");
    expect(
        slab.kmem_cache_free(task, s),
        SlabError::WrongCache,
        "wrong cache",
    );
    slab.kmem_cache_free(small, s)
        .expect("freeing a small object");
    let p = slab.kmalloc(100, Gfp::KERNEL).expect("kmalloc(100)");
    assert_eq!(
        slab.ksize(p.as_ptr()),
        Ok(104),
        "the dense class of 100 bytes"
    );
    expect(
        slab.kfree(p.as_ptr().wrapping_add(8)),
        SlabError::Interior,
        "kfree interior",
    );
    slab.kfree(p.as_ptr()).expect("kfree");
    expect(slab.kfree(p.as_ptr()), SlabError::DoubleFree, "kfree twice");
    let big = slab.kmalloc(200_000, Gfp::KERNEL).expect("kmalloc(200000)");
    assert_eq!(
        slab.ksize(big.as_ptr()),
        Ok(49 * 4096),
        "a run of 49 frames"
    );
    expect(
        slab.kfree(big.as_ptr().wrapping_add(8)),
        SlabError::Interior,
        "large interior",
    );
    // A pointer into a later page of a large block: kmm-slab says Foreign (the
    // page heads no block); Interior would do as well.
    let tail = slab.kfree(big.as_ptr().wrapping_add(PAGE_SIZE));
    assert!(
        matches!(tail, Err(SlabError::Foreign | SlabError::Interior)),
        "kfree of a large block's second page: {tail:?}"
    );
    refused.set(refused.get() + 1);
    slab.kfree(big.as_ptr()).expect("kfree large");
    expect(
        slab.kfree(big.as_ptr()),
        SlabError::DoubleFree,
        "large twice",
    );
    let mut local = 0u64;
    let stack = (&raw mut local).cast::<u8>();
    expect(slab.kfree(stack), SlabError::Foreign, "kfree of the stack");
    assert_eq!(
        slab.kfree(core::ptr::null_mut()),
        Ok(()),
        "kfree(NULL) is fine"
    );
    let create = |size, align| {
        slab.kmem_cache_create("bad", size, align, SlabFlags::empty(), None)
            .map(|_| ())
    };
    expect(create(64, 3), SlabError::BadAlign, "alignment 3");
    expect(create(0, 0), SlabError::BadSize, "size 0");
    expect(
        create(KMALLOC_MAX_CACHE_SIZE + 1, 0),
        SlabError::BadSize,
        "size 128 KiB + 1",
    );
    let k = |n| slab.kmalloc(n, Gfp::KERNEL).map(|_| ());
    expect(k(0), SlabError::BadSize, "kmalloc(0)");
    expect(k(64 << 20), SlabError::BadSize, "kmalloc(64 MiB)");
    // The refused frees changed nothing: two objects are two objects.
    let a = slab.kmem_cache_alloc(task, Gfp::KERNEL).expect("a task");
    let b = slab.kmem_cache_alloc(task, Gfp::KERNEL).expect("a task");
    assert_ne!(a, b, "a double free handed one object out twice");
    slab.kmem_cache_free(task, a).expect("free");
    slab.kmem_cache_free(task, b).expect("free");
    refused.get()
}
