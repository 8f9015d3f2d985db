//! Several CPUs allocating from the same caches at once, objects freed on other
//! CPUs than the one that allocated them; every object carries a pattern that
//! must survive until it is freed. At the end every page is back.

mod common;

use std::ptr::NonNull;
use std::sync::Mutex;

use common::rig;
use kmm_buddy::Gfp;
use kmm_slab::SlabFlags;

const ROUNDS: usize = if cfg!(miri) { 30 } else { 5000 };

fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn cpus_share_caches() {
    let r = rig(64, 4);
    let s = r.slab();
    let baseline = r.pages_out();
    let cache = {
        let _c = r.bind(0);
        s.kmem_cache_create("shared", 72, 0, SlabFlags::HWCACHE_ALIGN, None)
            .unwrap()
    };
    let handoff: Mutex<Vec<(usize, usize, u8, bool)>> = Mutex::new(Vec::new());
    r.on_each_cpu(|cpu| {
        let mut seed = 0xDEAD_BEEF ^ (cpu as u64 + 7);
        let mut mine: Vec<(usize, usize, u8, bool)> = Vec::new();
        for round in 0..ROUNDS {
            let x = next(&mut seed);
            let tag = (round as u8) | 1;
            match x % 5 {
                0 | 1 => {
                    let (p, size, from_cache) = if x & 8 == 0 {
                        (s.kmem_cache_alloc(cache, Gfp::KERNEL).unwrap(), 72, true)
                    } else {
                        let size = 1 + (x >> 16) as usize % 3000;
                        (s.kmalloc(size, Gfp::KERNEL).unwrap(), size, false)
                    };
                    // SAFETY: a fresh block of `size` bytes.
                    unsafe { core::ptr::write_bytes(p.as_ptr(), tag, size) };
                    mine.push((p.as_ptr() as usize, size, tag, from_cache));
                }
                2 | 3 if !mine.is_empty() => {
                    let b = mine.swap_remove((x >> 8) as usize % mine.len());
                    if x & 1 == 0 {
                        free(&r, cache, b);
                    } else {
                        handoff.lock().unwrap().push(b);
                    }
                }
                _ => {
                    let b = handoff.lock().unwrap().pop();
                    if let Some(b) = b {
                        free(&r, cache, b);
                    }
                }
            }
        }
        for b in mine {
            free(&r, cache, b);
        }
    });
    {
        let _c = r.bind(0);
        for b in handoff.into_inner().unwrap() {
            free(&r, cache, b);
        }
    }
    r.shrink_everywhere();
    {
        let _c = r.bind(0);
        // SAFETY: the CPU threads are done.
        unsafe { s.kmem_cache_destroy(cache) }.unwrap();
    }
    r.shrink_everywhere();
    assert_eq!(r.pages_out(), baseline);
}

fn free(
    r: &kmm_testkit::TestMachine,
    cache: kmm_slab::Cache<'_>,
    (p, size, tag, from_cache): (usize, usize, u8, bool),
) {
    // SAFETY: a live block of `size` bytes.
    let bytes = unsafe { core::slice::from_raw_parts(p as *const u8, size) };
    assert!(
        bytes.iter().all(|&b| b == tag),
        "block overwritten: overlap"
    );
    let ptr = NonNull::new(p as *mut u8).unwrap();
    if from_cache {
        r.slab().kmem_cache_free(cache, ptr).unwrap();
    } else {
        r.slab().kfree(ptr.as_ptr()).unwrap();
    }
}
