//! The `debug` feature: red zones, poisoning, double-free reports, validation.
//! Each report names the cache, the object and the offence.
#![cfg(feature = "debug")]

mod common;

use common::rig;
use kmm_buddy::Gfp;
use kmm_slab::{Offence, SlabError, SlabFlags};

#[test]
fn overrun_is_caught_on_free() {
    let r = rig(16, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let c = s
        .kmem_cache_create("victim", 40, 0, SlabFlags::empty(), None)
        .unwrap();
    let o = s.kmem_cache_alloc(c, Gfp::KERNEL).unwrap();
    // SAFETY: deliberately one word past the 40-byte object: into the red zone.
    unsafe { o.as_ptr().add(40).cast::<u64>().write_unaligned(0) };
    assert_eq!(s.kmem_cache_free(c, o), Err(SlabError::Corrupted));
    let rep = s.last_report().unwrap();
    assert_eq!(
        (rep.cache, rep.object, rep.offence),
        ("victim", o.as_ptr() as usize, Offence::RedZone)
    );
    assert!(rep.to_string().contains("victim") && rep.to_string().contains("red zone"));
    assert!(s.validate_cache(c).is_err(), "validation finds it too");
}

#[test]
fn underrun_is_caught_on_free() {
    let r = rig(16, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let p = s.kmalloc(100, Gfp::KERNEL).unwrap();
    // SAFETY: deliberately the byte before the object: the front red zone.
    unsafe { p.as_ptr().sub(1).write(0xFF) };
    assert_eq!(s.kfree(p.as_ptr()), Err(SlabError::Corrupted));
    let rep = s.last_report().unwrap();
    assert_eq!((rep.cache, rep.offence), ("size-104", Offence::RedZone));
}

#[test]
fn write_after_free_is_caught_on_allocation() {
    let r = rig(16, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let c = s
        .kmem_cache_create("uaf", 64, 0, SlabFlags::empty(), None)
        .unwrap();
    let o = s.kmem_cache_alloc(c, Gfp::KERNEL).unwrap();
    s.kmem_cache_free(c, o).unwrap();
    // SAFETY: deliberately writing a freed object (its memory is still a slab's).
    unsafe { o.as_ptr().add(10).write(1) };
    let again = s.kmem_cache_alloc(c, Gfp::KERNEL).unwrap();
    assert_eq!(again, o, "LIFO: the same object comes back");
    let rep = s.last_report().unwrap();
    assert_eq!(
        (rep.cache, rep.object, rep.offence),
        ("uaf", o.as_ptr() as usize, Offence::UseAfterFree)
    );
}

#[test]
fn double_free_is_reported() {
    let r = rig(16, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let c = s
        .kmem_cache_create("twice", 32, 0, SlabFlags::empty(), None)
        .unwrap();
    let o = s.kmem_cache_alloc(c, Gfp::KERNEL).unwrap();
    s.kmem_cache_free(c, o).unwrap();
    assert_eq!(s.kmem_cache_free(c, o), Err(SlabError::DoubleFree));
    let rep = s.last_report().unwrap();
    assert_eq!(
        (rep.cache, rep.object, rep.offence),
        ("twice", o.as_ptr() as usize, Offence::DoubleFree)
    );
}

#[test]
fn healthy_caches_validate() {
    let r = rig(16, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let c = s
        .kmem_cache_create("fine", 24, 8, SlabFlags::HWCACHE_ALIGN, None)
        .unwrap();
    let objs: Vec<_> = (0..100)
        .map(|_| s.kmem_cache_alloc(c, Gfp::KERNEL).unwrap())
        .collect();
    for o in &objs[..50] {
        // SAFETY: writing inside each live 24-byte object.
        unsafe { core::ptr::write_bytes(o.as_ptr(), 0x11, 24) };
        s.kmem_cache_free(c, *o).unwrap();
    }
    let checked = s.validate_cache(c).unwrap();
    assert!(checked >= 100);
    for o in &objs[50..] {
        s.kmem_cache_free(c, *o).unwrap();
    }
    assert!(s.last_report().is_none());
}

#[test]
fn racing_double_frees_are_caught() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Barrier, Mutex};
    let r = rig(32, 2);
    let s = r.slab();
    let c = {
        let _c = r.bind(0);
        s.kmem_cache_create("race", 48, 0, SlabFlags::empty(), None)
            .unwrap()
    };
    let objs: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    let start = Barrier::new(2);
    let (ok, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    const N: usize = if cfg!(miri) { 20 } else { 3000 };
    r.on_each_cpu(|cpu| {
        if cpu == 0 {
            let mut v = objs.lock().unwrap();
            for _ in 0..N {
                v.push(s.kmem_cache_alloc(c, Gfp::KERNEL).unwrap().as_ptr() as usize);
            }
        }
        start.wait();
        let v = objs.lock().unwrap().clone();
        for p in v {
            match s.kmem_cache_free(c, core::ptr::NonNull::new(p as *mut u8).unwrap()) {
                Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                // The loser sees the object free, or (if the winner's flush
                // already gave the whole slab back) no slab at all.
                Err(SlabError::DoubleFree | SlabError::Foreign) => {
                    refused.fetch_add(1, Ordering::Relaxed)
                }
                Err(e) => panic!("unexpected {e:?}"),
            };
        }
    });
    assert_eq!(
        ok.load(Ordering::Relaxed),
        N,
        "each object freed exactly once"
    );
    assert_eq!(refused.load(Ordering::Relaxed), N);
    // Every object is free exactly once: allocating N again gives N distinct ones.
    let _c = r.bind(0);
    let mut again: Vec<usize> = (0..N)
        .map(|_| s.kmem_cache_alloc(c, Gfp::KERNEL).unwrap().as_ptr() as usize)
        .collect();
    again.sort_unstable();
    again.dedup();
    assert_eq!(again.len(), N, "an object was handed out twice");
}

/// `validate_cache` on one CPU while another allocates, resizes in place and
/// frees objects of the same caches (red-zoned and poisoned): the objects it
/// catches half handed out or half freed are in transit, not damaged, and
/// nothing is reported. Before the transit state, it reported a red zone
/// (an object marked allocated before its zones were) within a few thousand
/// validations.
#[test]
fn validation_races_with_allocation_without_false_reports() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let r = rig(32, 2);
    let s = r.slab();
    let c = {
        let _c = r.bind(0);
        s.kmem_cache_create("busy", 40, 0, SlabFlags::POISON, None)
            .unwrap()
    };
    let done = AtomicBool::new(false);
    const ROUNDS: usize = if cfg!(miri) { 20 } else { 20_000 };
    r.on_each_cpu(|cpu| {
        if cpu == 1 {
            let mut n = 0usize;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                let o = s.kmem_cache_alloc(c, Gfp::KERNEL).unwrap();
                // SAFETY: inside the live 40-byte object.
                unsafe { core::ptr::write_bytes(o.as_ptr(), 0x22, 40) };
                let p = s.kmalloc(1 + n % 60, Gfp::KERNEL).unwrap();
                // SAFETY: `p` is ours; shrinking stays in place.
                let p = unsafe { s.krealloc(p.as_ptr(), 1, Gfp::KERNEL) }.unwrap();
                s.kmem_cache_free(c, o).unwrap();
                s.kfree(p.as_ptr()).unwrap();
            }
        } else {
            // Stops CPU 1 however this side ends (a failed validation too).
            struct Stop<'d>(&'d AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = Stop(&done);
            let small = s.kmalloc_cache(32, false).expect("size-32");
            let general = s.kmalloc_cache(64, false).expect("size-64");
            for _ in 0..ROUNDS {
                for cache in [c, small, general] {
                    s.validate_cache(cache).unwrap();
                }
            }
        }
    });
    assert!(s.last_report().is_none(), "{:?}", s.last_report());
}

#[test]
fn bulk_paths_keep_the_debug_checks() {
    use core::ptr::NonNull;
    use kmm_slab::BulkFreeError;

    let r = rig(16, 1);
    let _c = r.bind(0);
    let s = r.slab();
    let c = s
        .kmem_cache_create("bulk-victim", 40, 0, SlabFlags::empty(), None)
        .unwrap();
    let mut objs = [NonNull::dangling(); 20];
    s.kmem_cache_alloc_bulk(c, Gfp::KERNEL, &mut objs).unwrap();
    assert!(
        s.validate_cache(c).is_ok(),
        "red zones active on every object"
    );
    // SAFETY: deliberately one word past the 40-byte object 7: its red zone.
    unsafe { objs[7].as_ptr().add(40).cast::<u64>().write_unaligned(0) };
    assert_eq!(
        s.kmem_cache_free_bulk(c, &objs),
        Err(BulkFreeError {
            index: 7,
            error: SlabError::Corrupted
        })
    );
    let rep = s.last_report().unwrap();
    assert_eq!(
        (rep.cache, rep.object, rep.offence),
        ("bulk-victim", objs[7].as_ptr() as usize, Offence::RedZone)
    );
    assert_eq!(
        s.cache_stats(c).unwrap().active_objs,
        13,
        "the seven before it freed"
    );
    // Written after free: caught when a bulk allocation hands it out again.
    // SAFETY: deliberately writing object 0, freed above (still a slab's).
    unsafe { objs[0].as_ptr().add(3).write(1) };
    let mut again = [NonNull::dangling(); 7];
    s.kmem_cache_alloc_bulk(c, Gfp::KERNEL, &mut again).unwrap();
    assert!(again.contains(&objs[0]), "the freed objects come back");
    let rep = s.last_report().unwrap();
    assert_eq!(
        (rep.object, rep.offence),
        (objs[0].as_ptr() as usize, Offence::UseAfterFree)
    );
}
