//! Interrupts that allocate (issue 8, section 2): on a 2-CPU mock, an
//! interrupt handler that allocates with `Gfp::ATOMIC` from kmalloc, from a
//! cache (one object at a time and in bulk) and from a mempool is raised
//! again and again on CPU 0 while CPU 0 reaps, shrinks, refills, grows,
//! flushes, allocates and frees in bulk, uses the mempool and reads the
//! statistics. Every slab lock an interrupt can reach is IRQ-safe, so the
//! handler never spins on a lock the code it interrupted holds, and the lock
//! checker (which panics on a report) has nothing to say. Each test runs under
//! the watchdog: a deadlock fails it instead of hanging the run.
//!
//! On the code before the IRQ-safe locks, `interrupts_land_in_every_slab_path`
//! deadlocked: the shared array's lock was held with interrupts enabled while
//! `kmem_cache_shrink` and `reap` gave slabs back to the page allocator, whose
//! IRQ guard let the interrupt in, and the handler's refill spun on that lock.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kmm_buddy::Gfp;
use kmm_hal::Cpu;
use kmm_mock::{MockCpu, watchdog};
use kmm_slab::{Cache, Mempool, PoolSource, SlabAllocator, SlabFlags};
use kmm_testkit::TestMachine;

const LIMIT: Duration = Duration::from_secs(if cfg!(miri) { 3600 } else { 180 });
/// Rounds of the interrupted work, and its sizes (Miri is orders of
/// magnitude slower: fewer, but still more objects than an array holds).
const ROUNDS: usize = if cfg!(miri) { 2 } else { 100 };
const OBJS: usize = if cfg!(miri) { 200 } else { 1500 };
const KMALLOCS: usize = if cfg!(miri) { 150 } else { 500 };
const POOL_OPS: usize = if cfg!(miri) { 20 } else { 64 };

fn machine() -> TestMachine {
    let mib = if cfg!(miri) { 16 } else { 64 };
    TestMachine::builder().ram_mib(mib).cpus(2).build()
}

/// Runs `f` on CPU 0 with an interrupt pending (besides the ones CPU 1
/// keeps raising, which land wherever they find CPU 0: the host may
/// deschedule CPU 1 for a while); the interrupts delivered while `f` ran are
/// added to `count`.
fn landed<R>(cpu: &MockCpu, count: &Cell<usize>, f: impl FnOnce() -> R) -> R {
    cpu.raise_irq(0, 1);
    let before = cpu.delivered_irqs(0);
    let r = f();
    count.set(count.get() + cpu.delivered_irqs(0) - before);
    r
}

/// Keeps an interrupt pending on CPU 0 until `done`, so every point where
/// CPU 0 has interrupts enabled takes one; meanwhile allocates and frees on
/// CPU 1 and shrinks now and then (drain requests to CPU 0).
fn other_cpu(host: &TestMachine, c: Cache<'_>, done: &AtomicBool) {
    let _cpu1 = host.bind(1);
    let slab = host.slab();
    let cpu = host.cpu();
    let mut n = 0u64;
    while !done.load(Ordering::Relaxed) {
        if cpu.pending_irqs(0) == 0 {
            cpu.raise_irq(0, 1);
        }
        n += 1;
        if n.is_multiple_of(64) {
            let o = slab.kmem_cache_alloc(c, Gfp::KERNEL).unwrap();
            let p = slab.kmalloc(64, Gfp::KERNEL).unwrap();
            slab.kmem_cache_free(c, o).unwrap();
            slab.kfree(p.as_ptr()).unwrap();
        }
        if n.is_multiple_of(100_000) {
            slab.kmem_cache_shrink(c).unwrap();
        }
        std::hint::spin_loop();
    }
}

/// What the handler does: `kmalloc(64)` and `kfree`; more objects of `c` than
/// its array holds and back (so every run refills from and flushes to the
/// shared array and the slab lists), one at a time and then in bulk; a
/// mempool element and back. Failures are
/// counted (there is memory to spare: there should be none).
struct Handler<'s, 'h> {
    slab: &'s SlabAllocator<'h, MockCpu>,
    cpu: &'s MockCpu,
    c: Cache<'h>,
    pool: &'s Mempool<'s, 'h, MockCpu>,
    burst: usize,
    runs: Cell<usize>,
    failed: Cell<usize>,
}

impl Handler<'_, '_> {
    fn run(&self) {
        assert!(self.cpu.in_interrupt() && self.cpu.irqs_disabled());
        self.runs.set(self.runs.get() + 1);
        match self.slab.kmalloc(64, Gfp::ATOMIC) {
            Ok(p) => self.slab.kfree(p.as_ptr()).unwrap(),
            Err(_) => self.failed.set(self.failed.get() + 1),
        }
        let mut held: Vec<NonNull<u8>> = Vec::with_capacity(self.burst);
        for _ in 0..self.burst {
            match self.slab.kmem_cache_alloc(self.c, Gfp::ATOMIC) {
                Ok(o) => held.push(o),
                Err(_) => self.failed.set(self.failed.get() + 1),
            }
        }
        for o in held {
            self.slab.kmem_cache_free(self.c, o).unwrap();
        }
        // The same burst through the bulk calls.
        let mut objs = vec![NonNull::dangling(); self.burst];
        match self
            .slab
            .kmem_cache_alloc_bulk(self.c, Gfp::ATOMIC, &mut objs)
        {
            Ok(()) => self.slab.kmem_cache_free_bulk(self.c, &objs).unwrap(),
            Err(_) => self.failed.set(self.failed.get() + 1),
        }
        match self.pool.alloc(Gfp::ATOMIC) {
            Ok(e) => self.pool.free(e).unwrap(),
            Err(_) => self.failed.set(self.failed.get() + 1),
        }
    }
}

#[test]
fn interrupts_land_in_every_slab_path() {
    let host = machine();
    let cpu = host.cpu().clone();
    let slab = host.slab();
    let c = {
        let _cpu0 = host.bind(0);
        slab.kmem_cache_create("irq", 64, 0, SlabFlags::empty(), None)
            .unwrap()
    };
    host.shrink_everywhere();
    let baseline = host.pages_out();

    #[derive(Default)]
    struct Seen {
        refill: Cell<usize>,
        flush: Cell<usize>,
        mempool: Cell<usize>,
        bulk: Cell<usize>,
        inspect: Cell<usize>,
        reap: Cell<usize>,
        shrink: Cell<usize>,
    }

    let done = AtomicBool::new(false);
    let (seen, runs, failed) = watchdog("interrupts in slab paths", LIMIT, || {
        std::thread::scope(|s| {
            // Under Miri, CPU 0 raises its own interrupts only (`landed`): a
            // second CPU spinning on the host is too slow to interpret.
            let other = (!cfg!(miri)).then(|| s.spawn(|| other_cpu(&host, c, &done)));
            let _cpu0 = host.bind(0);
            let pool = Mempool::create(slab, 16, PoolSource::Cache(c)).unwrap();
            let h = Handler {
                slab,
                cpu: &cpu,
                c,
                pool: &pool,
                burst: slab.cache_info(c).unwrap().tunables().0 + 1,
                runs: Cell::new(0),
                failed: Cell::new(0),
            };
            let handler = || h.run();
            let seen = Seen::default();
            cpu.with_irq_handler(&handler, || {
                for _ in 0..ROUNDS {
                    // Allocations that refill the array and grow the cache.
                    let objs: Vec<_> = landed(&cpu, &seen.refill, || {
                        (0..OBJS)
                            .map(|_| slab.kmem_cache_alloc(c, Gfp::KERNEL).unwrap())
                            .collect()
                    });
                    let ks: Vec<_> = landed(&cpu, &seen.refill, || {
                        (0..KMALLOCS)
                            .map(|_| slab.kmalloc(64, Gfp::KERNEL).unwrap())
                            .collect()
                    });
                    // Frees that flush the array to the shared array and
                    // the slabs.
                    landed(&cpu, &seen.flush, || {
                        for o in objs {
                            slab.kmem_cache_free(c, o).unwrap();
                        }
                        for p in ks {
                            slab.kfree(p.as_ptr()).unwrap();
                        }
                    });
                    landed(&cpu, &seen.mempool, || {
                        let es: Vec<_> = (0..POOL_OPS)
                            .map(|_| pool.alloc(Gfp::KERNEL).unwrap())
                            .collect();
                        for e in es {
                            pool.free(e).unwrap();
                        }
                    });
                    // Bulk calls past the array: refills, the slabs' part
                    // of the free.
                    landed(&cpu, &seen.bulk, || {
                        let mut objs = vec![NonNull::dangling(); OBJS];
                        slab.kmem_cache_alloc_bulk(c, Gfp::KERNEL, &mut objs)
                            .unwrap();
                        slab.kmem_cache_free_bulk(c, &objs).unwrap();
                    });
                    landed(&cpu, &seen.inspect, || {
                        let mut text = String::new();
                        slab.slabinfo(&mut text).unwrap();
                        slab.validate_cache(c).unwrap();
                        slab.cache_stats(c).unwrap();
                    });
                    landed(&cpu, &seen.reap, || {
                        slab.reap();
                        slab.reap();
                    });
                    landed(&cpu, &seen.shrink, || {
                        slab.kmem_cache_shrink(c).unwrap();
                        slab.shrink_all();
                    });
                }
            });
            done.store(true, Ordering::Relaxed);
            if let Some(other) = other {
                other.join().expect("CPU 1");
            }
            let (runs, failed) = (h.runs.get(), h.failed.get());
            pool.destroy().map_err(|e| e.1).unwrap();
            (seen, runs, failed)
        })
    });

    assert!(cpu.delivered_irqs(0) > 0, "no interrupt was delivered");
    assert_eq!(runs, cpu.delivered_irqs(0));
    for (what, n) in [
        ("allocations that refill and grow", &seen.refill),
        ("frees that flush", &seen.flush),
        ("mempool calls", &seen.mempool),
        ("bulk allocations and frees", &seen.bulk),
        ("slabinfo, validate_cache, cache_stats", &seen.inspect),
        ("reap", &seen.reap),
        ("kmem_cache_shrink, shrink_all", &seen.shrink),
    ] {
        assert!(n.get() > 0, "no interrupt landed in {what}");
    }
    assert_eq!(failed, 0, "atomic allocations failed with memory to spare");
    assert!(
        cpu.lockdep_reports().is_empty(),
        "{:?}",
        cpu.lockdep_reports()
    );
    // Everything back: no object in use, every page but the baseline's.
    host.shrink_everywhere();
    let st = slab.cache_stats(c).unwrap();
    assert_eq!((st.active_objs, st.num_slabs), (0, 0), "{st:?}");
    assert_eq!(host.pages_out(), baseline, "every page back");
}

/// An interrupt that lands while `kmem_cache_shrink` drains this CPU's array
/// of a cache (the drain runs with interrupts on, the array held, and gives
/// its objects back a batch at a time) allocates from that very cache with
/// `Gfp::ATOMIC`: the array is busy, so the allocation and the free go to the
/// slab lists instead and succeed, and the held array is not touched.
#[test]
#[cfg_attr(
    miri,
    ignore = "waits for interrupts to land at random in a short window: too slow for Miri"
)]
fn an_interrupt_on_a_held_array_takes_the_slab_lists() {
    let host = machine();
    let cpu = host.cpu().clone();
    let slab = host.slab();
    let c = {
        let _cpu0 = host.bind(0);
        slab.kmem_cache_create("reentry", 64, 0, SlabFlags::empty(), None)
            .unwrap()
    };
    let done = AtomicBool::new(false);
    let (on_held, rounds) = watchdog("re-entry on a held array", LIMIT, || {
        std::thread::scope(|s| {
            let other = s.spawn(|| {
                let _cpu1 = host.bind(1);
                while !done.load(Ordering::Relaxed) {
                    if cpu.pending_irqs(0) == 0 {
                        cpu.raise_irq(0, 1);
                    }
                    std::hint::spin_loop();
                }
            });
            let _cpu0 = host.bind(0);
            let on_held = Cell::new(0);
            let handler = || {
                if slab.array_busy(c, 0) != Some(true) {
                    return;
                }
                let before = slab.cache_stats(c).unwrap();
                let o = slab
                    .kmem_cache_alloc(c, Gfp::ATOMIC)
                    .expect("an object from the slab lists");
                let mid = slab.cache_stats(c).unwrap();
                slab.kmem_cache_free(c, o).unwrap();
                let after = slab.cache_stats(c).unwrap();
                assert_eq!(slab.array_busy(c, 0), Some(true));
                assert_eq!(
                    (mid.in_arrays, after.in_arrays),
                    (before.in_arrays, before.in_arrays),
                    "the held array was not touched"
                );
                assert_eq!(mid.active_objs, before.active_objs + 1);
                assert_eq!(after.active_objs, before.active_objs);
                on_held.set(on_held.get() + 1);
            };
            let mut rounds = 0;
            cpu.with_irq_handler(&handler, || {
                while on_held.get() < 20 && rounds < 200_000 {
                    rounds += 1;
                    {
                        // Fill the array with interrupts off, so that they
                        // land in the shrink below.
                        let _irq = cpu.irq_guard();
                        let objs: Vec<_> = (0..100)
                            .map(|_| slab.kmem_cache_alloc(c, Gfp::KERNEL).unwrap())
                            .collect();
                        for o in objs {
                            slab.kmem_cache_free(c, o).unwrap();
                        }
                    }
                    slab.kmem_cache_shrink(c).unwrap();
                }
            });
            done.store(true, Ordering::Relaxed);
            other.join().expect("CPU 1");
            (on_held.get(), rounds)
        })
    });
    assert!(
        on_held >= 20,
        "only {on_held} interrupts landed on the held array in {rounds} rounds"
    );
    assert!(
        cpu.lockdep_reports().is_empty(),
        "{:?}",
        cpu.lockdep_reports()
    );
    host.shrink_everywhere();
    let st = slab.cache_stats(c).unwrap();
    assert_eq!((st.active_objs, st.num_slabs), (0, 0), "{st:?}");
}
