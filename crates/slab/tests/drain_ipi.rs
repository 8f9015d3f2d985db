//! A waiting allocation that finds the page allocator dry empties every CPU's
//! array caches through a cross-CPU call (Linux's `drain_cpu_caches`), so the
//! slabs that only an idle CPU's array kept busy are given back and used.

mod common;

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::rig;
use kmm_buddy::Gfp;
use kmm_hal::Cpu;
use kmm_mock::watchdog;
use kmm_slab::SlabFlags;

#[test]
#[cfg_attr(miri, ignore = "exhausts 32 MiB: too slow under Miri")]
fn a_waiting_allocation_drains_an_idle_cpus_arrays() {
    watchdog("slab drain", Duration::from_secs(60), || {
        let r = rig(32, 2);
        let s = r.slab();
        let parked = AtomicBool::new(false);
        let done = AtomicBool::new(false);
        let cache = {
            let _c = r.bind(0);
            s.kmem_cache_create("idle", 1000, 0, SlabFlags::empty(), None)
                .unwrap()
        };
        let before = std::thread::scope(|sc| {
            sc.spawn(|| {
                let _c = r.bind(1);
                let objs: Vec<NonNull<u8>> = (0..16)
                    .map(|_| s.kmem_cache_alloc(cache, Gfp::KERNEL).unwrap())
                    .collect();
                for o in objs {
                    s.kmem_cache_free(cache, o).unwrap();
                }
                parked.store(true, Ordering::SeqCst);
                while !done.load(Ordering::SeqCst) {
                    s.buddy().cpu().interrupt_point();
                    std::hint::spin_loop();
                }
            });
            let _c = r.bind(0);
            while !parked.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
            let before = s.cache_stats(cache).unwrap();
            let mut live = Vec::new();
            while let Ok(p) = s.kmalloc(2048, Gfp::KERNEL | Gfp::NOWARN) {
                live.push(p);
            }
            for p in live {
                s.kfree(p.as_ptr()).unwrap();
            }
            done.store(true, Ordering::SeqCst);
            before
        });
        assert!(before.in_arrays > 0, "CPU 1's array kept nothing");
        assert!(before.num_slabs > 0);
        let after = s.cache_stats(cache).unwrap();
        assert_eq!(after.in_arrays, 0, "CPU 1's array was not drained");
        assert_eq!(
            after.num_slabs, 0,
            "the idle cache's slabs were not given back"
        );
    });
}
