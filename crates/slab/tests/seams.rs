//! The seams between the allocators and around the SLAB allocator's own data
//! (issue 8, section 3): every refusal a typed error, nothing changed, nothing
//! lost. Each test failed on the code before the fix.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kmm_buddy::{BuddyConfig, FreeError, Gfp, Zone};
use kmm_hal::{Cpu, PAGE_SIZE, VirtAddr};
use kmm_mock::watchdog;
use kmm_slab::{DebugReport, KmallocHeap, SlabError, SlabFlags};
use kmm_testkit::TestMachine;

/// A machine of `mib` MiB and `cpus` CPUs with a buddy allocator set up with
/// `config`, and the slab allocator on it.
fn rig(mib: u64, cpus: usize, config: BuddyConfig<'static>) -> TestMachine {
    let host = TestMachine::builder()
        .ram_mib(mib)
        .cpus(cpus)
        .buddy_config(config)
        .build();
    host.slab();
    host
}

fn no_reserve() -> BuddyConfig<'static> {
    BuddyConfig {
        min_free_kbytes: Some(0),
        ..BuddyConfig::default()
    }
}

// --- 1. The page allocator refuses kmalloc's large blocks -------------------

#[test]
fn buddy_refuses_a_live_large_kmalloc_block() {
    let host = rig(32, 1, no_reserve());
    let _cpu0 = host.bind(0);
    let s = host.slab();
    let b = s.buddy();
    let p = s.kmalloc(200_000, Gfp::KERNEL).unwrap();
    let page = b
        .mem()
        .virt_to_page(VirtAddr::new(p.as_ptr().addr()))
        .unwrap();
    let (free, large) = (b.free_pages_total(), s.large_pages());
    assert_eq!(large, 49, "200 000 bytes take exactly 49 frames");
    assert_eq!(b.free_pages_page(page, 6), Err(FreeError::Kmalloc));
    assert_eq!(b.free_pages_page(page, 0), Err(FreeError::Kmalloc));
    assert_eq!(
        b.free_pages(VirtAddr::new(p.as_ptr().addr()), 6),
        Err(FreeError::Kmalloc)
    );
    // Every frame of the run is refused, not only the head.
    for i in [1, 17, 48] {
        let addr = VirtAddr::new(p.as_ptr().addr() + i * PAGE_SIZE);
        assert_eq!(b.free_pages(addr, 0), Err(FreeError::Kmalloc), "frame {i}");
    }
    assert_eq!((b.free_pages_total(), s.large_pages()), (free, large));
    assert_eq!(s.ksize(p.as_ptr()), Ok(49 * PAGE_SIZE), "still kmalloc's");
    // The next large kmalloc gets another block.
    let q = s.kmalloc(200_000, Gfp::KERNEL).unwrap();
    assert_ne!(p, q);
    s.kfree(q.as_ptr()).unwrap();
    s.kfree(p.as_ptr()).unwrap();
    assert_eq!(s.large_pages(), 0);
    b.drain_local();
    assert_eq!(b.free_pages_total(), free + 49, "every page back");
}

#[test]
fn buddy_refuses_a_strongly_aligned_heap_block() {
    let host = rig(32, 1, no_reserve());
    let _cpu0 = host.bind(0);
    let s = host.slab();
    let b = s.buddy();
    let heap = KmallocHeap::new(s);
    let layout = Layout::from_size_align(100, 4 * PAGE_SIZE).unwrap();
    // SAFETY: a non-zero layout.
    let p = unsafe { heap.alloc(layout) };
    assert!(!p.is_null());
    let page = b.mem().virt_to_page(VirtAddr::new(p.addr())).unwrap();
    let free = b.free_pages_total();
    assert_eq!(b.free_pages_page(page, 2), Err(FreeError::Kmalloc));
    assert_eq!(b.free_pages_total(), free);
    // SAFETY: allocated above with `layout`.
    unsafe { heap.dealloc(p, layout) };
    assert_eq!(heap.refused(), 0, "the heap's free still goes through");
    assert_eq!(s.large_pages(), 0);
}

// --- 2. The cache of caches is the allocator's own ------------------------

#[test]
fn the_cache_of_caches_and_descriptors_are_refused() {
    let host = rig(32, 1, no_reserve());
    let _cpu0 = host.bind(0);
    let s = host.slab();
    let cc = s.cache_of_caches();
    let a = s
        .kmem_cache_create("a", 40, 0, SlabFlags::empty(), None)
        .unwrap();
    let b = s
        .kmem_cache_create("b", 40, 0, SlabFlags::empty(), None)
        .unwrap();
    let desc = core::ptr::NonNull::from(s.cache_info(a).unwrap()).cast::<u8>();
    let cc_before = s.cache_stats(cc).unwrap();

    assert_eq!(
        s.kmem_cache_alloc(cc, Gfp::KERNEL),
        Err(SlabError::Internal)
    );
    assert_eq!(s.kfree(desc.as_ptr()), Err(SlabError::Internal));
    assert_eq!(s.kmem_cache_free(cc, desc), Err(SlabError::Internal));
    assert_eq!(s.kmem_cache_free(b, desc), Err(SlabError::Internal));
    assert_eq!(s.ksize(desc.as_ptr()), Err(SlabError::Internal));
    assert_eq!(s.kmem_cache_shrink(cc), Err(SlabError::Internal));
    // SAFETY: no other CPU runs; the call is refused anyway.
    let destroyed = unsafe { s.kmem_cache_destroy(cc) };
    assert_eq!(destroyed, Err(SlabError::Internal));

    assert_eq!(s.cache_stats(cc).unwrap(), cc_before, "nothing changed");
    assert_eq!(s.validate_cache(cc), Ok(s.validate_cache(cc).unwrap()));
    let x = s.kmem_cache_alloc(a, Gfp::KERNEL).unwrap();
    s.kmem_cache_free(a, x).unwrap();
}

#[test]
fn a_stale_handle_stays_dead_whatever_is_written() {
    let host = rig(32, 1, no_reserve());
    let _cpu0 = host.bind(0);
    let s = host.slab();
    let a = s
        .kmem_cache_create("a", 40, 0, SlabFlags::empty(), None)
        .unwrap();
    let dbg = format!("{a:?}");
    let generation: u32 = dbg
        .rsplit(' ')
        .next()
        .and_then(|g| g.trim_end_matches(')').parse().ok())
        .expect("the handle prints its generation");
    let desc_size = s.cache_info(a).unwrap().geometry().buffer_size;
    // SAFETY: no CPU uses `a`.
    unsafe { s.kmem_cache_destroy(a) }.unwrap();
    assert_eq!(
        s.kmem_cache_alloc(a, Gfp::KERNEL),
        Err(SlabError::NoSuchCache)
    );

    // The freed descriptor slot cannot be allocated by a user...
    let cc = s.cache_of_caches();
    assert_eq!(
        s.kmem_cache_alloc(cc, Gfp::KERNEL),
        Err(SlabError::Internal)
    );
    // ... and whatever the caller writes into memory it owns, the old
    // generation everywhere included, the handle stays dead.
    let mut held = Vec::new();
    for _ in 0..256 {
        let p = s.kmalloc(desc_size, Gfp::KERNEL).unwrap();
        for off in (0..desc_size / 4 * 4).step_by(4) {
            // SAFETY: a live block of `desc_size` bytes.
            unsafe {
                p.as_ptr()
                    .add(off)
                    .cast::<u32>()
                    .write_unaligned(generation)
            };
        }
        held.push(p);
    }
    assert_eq!(
        s.kmem_cache_alloc(a, Gfp::KERNEL),
        Err(SlabError::NoSuchCache)
    );
    assert_eq!(s.kmem_cache_shrink(a), Err(SlabError::NoSuchCache));
    assert!(s.cache_stats(a).is_none());
    // A new cache may reuse the slot: the old handle still is not it.
    let n = s
        .kmem_cache_create("n", 40, 0, SlabFlags::empty(), None)
        .unwrap();
    assert_ne!(a, n);
    assert_eq!(
        s.kmem_cache_alloc(a, Gfp::KERNEL),
        Err(SlabError::NoSuchCache)
    );
    let x = s.kmem_cache_alloc(n, Gfp::KERNEL).unwrap();
    s.kmem_cache_free(n, x).unwrap();
    for p in held {
        s.kfree(p.as_ptr()).unwrap();
    }
}

// --- 3. Every cache is reached -------------------------------------------

#[test]
fn shrink_reap_and_slabinfo_reach_every_cache() {
    let host = rig(64, 1, no_reserve());
    let _cpu0 = host.bind(0);
    let s = host.slab();
    let caches: Vec<_> = (0..300)
        .map(|_| {
            s.kmem_cache_create("many", 40, 0, SlabFlags::empty(), None)
                .unwrap()
        })
        .collect();
    let last = *caches.last().unwrap();
    let mut text = String::new();
    s.slabinfo(&mut text).unwrap();
    let lines = text.lines().filter(|l| l.starts_with("many ")).count();
    assert_eq!(lines, 300, "slabinfo lists every cache");

    // reap: an untouched array gives back a fifth of its limit.
    let x = s.kmem_cache_alloc(last, Gfp::KERNEL).unwrap();
    s.kmem_cache_free(last, x).unwrap();
    let held = s.cache_stats(last).unwrap().in_arrays;
    assert!(held > 0);
    s.reap(); // clears `touched`
    s.reap();
    assert!(
        s.cache_stats(last).unwrap().in_arrays < held,
        "reap reached it"
    );

    s.shrink_all();
    let st = s.cache_stats(last).unwrap();
    assert_eq!((st.in_arrays, st.num_slabs), (0, 0), "shrink reached it");
}

// --- 4. debug: an overrun past the request is caught for every size --------

#[cfg(feature = "debug")]
#[test]
fn a_one_byte_overrun_is_caught_for_every_size() {
    let host = rig(64, 1, no_reserve());
    let _cpu0 = host.bind(0);
    let s = host.slab();
    // Every size a class serves (runs of frames above the largest class have
    // no red zone, as Linux's page-allocator blocks have none).
    let largest = s.kmalloc_max_cache_size();
    let sizes = (1..=300).chain([511, 1000, 3000, 5000, 30_000, largest]);
    for size in sizes {
        // In bounds: a clean free.
        let p = s.kmalloc(size, Gfp::KERNEL).unwrap();
        // SAFETY: `size` bytes are ours.
        unsafe { core::ptr::write_bytes(p.as_ptr(), 0x5a, size) };
        assert_eq!(s.kfree(p.as_ptr()), Ok(()), "size {size}: clean");
        // One byte past: refused, reported, left allocated.
        let p = s.kmalloc(size, Gfp::KERNEL).unwrap();
        // SAFETY: deliberately one byte past the request, inside the
        // buffer (the slack or the red zone).
        unsafe { p.as_ptr().add(size).write(0) };
        assert_eq!(
            s.kfree(p.as_ptr()),
            Err(SlabError::Corrupted),
            "size {size}"
        );
        assert_eq!(
            s.last_report().map(|r| r.offence),
            Some(kmm_slab::Offence::RedZone)
        );
    }
}

#[cfg(feature = "debug")]
#[test]
fn krealloc_in_place_moves_the_checked_end() {
    let host = rig(32, 1, no_reserve());
    let _cpu0 = host.bind(0);
    let s = host.slab();
    let p = s.kmalloc(17, Gfp::KERNEL).unwrap();
    // SAFETY: the block is ours.
    let q = unsafe { s.krealloc(p.as_ptr(), 24, Gfp::KERNEL) }.unwrap();
    assert_eq!(p, q, "size-24 holds 24 bytes");
    // SAFETY: 24 bytes are ours now.
    unsafe { core::ptr::write_bytes(q.as_ptr(), 1, 24) };
    assert_eq!(s.kfree(q.as_ptr()), Ok(()));
    // A cache's own objects: the padding after an odd size is checked.
    let c = s
        .kmem_cache_create("odd", 13, 0, SlabFlags::empty(), None)
        .unwrap();
    let o = s.kmem_cache_alloc(c, Gfp::KERNEL).unwrap();
    // SAFETY: one byte past the 13-byte object, inside its buffer.
    unsafe { o.as_ptr().add(13).write(0) };
    assert_eq!(s.kmem_cache_free(c, o), Err(SlabError::Corrupted));
}

// --- 5. Hooks run with nothing held ---------------------------------------

thread_local! {
    /// The machine this thread's hooks use (hooks are plain functions).
    static HOST: RefCell<Option<TestMachine>> = const { RefCell::new(None) };
    /// An object the hook frees a second time (once).
    static VICTIM: Cell<*mut u8> = const { Cell::new(core::ptr::null_mut()) };
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// The machine installed for this thread's hooks, if any.
fn hook_host() -> Option<TestMachine> {
    HOST.with(|h| h.borrow().clone())
}

/// Installs `host` for this thread's hooks until dropped.
struct Installed;

fn install(host: &TestMachine) -> Installed {
    HOST.with(|h| *h.borrow_mut() = Some(host.clone()));
    Installed
}

impl Drop for Installed {
    fn drop(&mut self) {
        HOST.with(|h| h.borrow_mut().take());
    }
}

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn a_report_hook_may_report_again() {
    fn hook(_: &DebugReport) {
        let host = hook_host().expect("installed");
        let s = host.slab();
        let v = VICTIM.with(|v| v.replace(core::ptr::null_mut()));
        if !v.is_null() {
            // A second report from inside the hook: nested, not deadlocked.
            assert_eq!(s.kfree(v), Err(SlabError::DoubleFree));
        }
        // And it may allocate.
        let p = s.kmalloc(64, Gfp::KERNEL).unwrap();
        s.kfree(p.as_ptr()).unwrap();
        DEPTH.with(|d| d.set(d.get() + 1));
    }
    let host = rig(32, 1, no_reserve());
    watchdog("a report hook reports again", LIMIT, || {
        let _cpu0 = host.bind(0);
        let s = host.slab();
        let _hook = install(&host);
        s.set_report_hook(Some(hook));
        let a = s.kmalloc(64, Gfp::KERNEL).unwrap();
        let b = s.kmalloc(64, Gfp::KERNEL).unwrap();
        s.kfree(a.as_ptr()).unwrap();
        s.kfree(b.as_ptr()).unwrap();
        VICTIM.with(|v| v.set(b.as_ptr()));
        assert_eq!(s.kfree(a.as_ptr()), Err(SlabError::DoubleFree));
        assert_eq!(DEPTH.with(Cell::get), 2, "the hook ran for both reports");
        let mut all = [None; 16];
        assert_eq!(s.reports(&mut all), 2);
        s.set_report_hook(None);
    });
}

#[cfg(feature = "debug")]
#[test]
fn a_validate_report_hook_may_allocate_from_the_cache() {
    fn hook(_: &DebugReport) {
        let host = hook_host().expect("installed");
        let s = host.slab();
        // More than an array holds: the cache's lists are taken.
        let ps: Vec<_> = (0..300)
            .map(|_| s.kmalloc(64, Gfp::KERNEL).unwrap())
            .collect();
        for p in ps {
            s.kfree(p.as_ptr()).unwrap();
        }
        DEPTH.with(|d| d.set(d.get() + 1));
    }
    let host = rig(32, 1, no_reserve());
    watchdog("a validate hook allocates", LIMIT, || {
        let _cpu0 = host.bind(0);
        let s = host.slab();
        let _hook = install(&host);
        let p = s.kmalloc(64, Gfp::KERNEL).unwrap();
        s.kfree(p.as_ptr()).unwrap();
        // SAFETY: deliberately written after free (the object stays in
        // the cache, poisoned).
        unsafe { p.as_ptr().write(0) };
        s.set_report_hook(Some(hook));
        let c = s.kmalloc_cache(64, false).unwrap();
        let r = s.validate_cache(c);
        assert_eq!(
            r.map_err(|r| r.offence),
            Err(kmm_slab::Offence::UseAfterFree)
        );
        // At least once (the damaged object, handed out by the hook's own
        // allocations, is reported again from inside it).
        assert!(DEPTH.with(Cell::get) >= 1);
        s.set_report_hook(None);
    });
}

#[test]
fn on_low_from_a_slab_refill_runs_with_nothing_held() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static IRQS_OFF: AtomicBool = AtomicBool::new(false);
    thread_local! {
        static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    }
    fn on_low(_: &Zone<'_>) {
        let Some(host) = hook_host() else { return };
        if IN_HOOK.with(|h| h.replace(true)) {
            return;
        }
        let s = host.slab();
        CALLS.fetch_add(1, Ordering::Relaxed);
        if s.buddy().cpu().irqs_disabled() {
            IRQS_OFF.store(true, Ordering::Relaxed);
        }
        // kmalloc from the cache being refilled (it may fail: memory is
        // low; it must not alias the refilling CPU's array).
        if let Ok(p) = s.kmalloc(4096, Gfp::KERNEL) {
            s.kfree(p.as_ptr()).unwrap();
        }
        IN_HOOK.with(|h| h.set(false));
    }
    let config = BuddyConfig {
        min_free_kbytes: Some(2048),
        on_low: Some(&on_low),
        ..BuddyConfig::default()
    };
    let host = rig(32, 1, config);
    watchdog("on_low from a refill", LIMIT, || {
        let _cpu0 = host.bind(0);
        let s = host.slab();
        let _hook = install(&host);
        let mut held = Vec::new();
        while CALLS.load(Ordering::Relaxed) == 0 {
            match s.kmalloc(4096, Gfp::KERNEL) {
                Ok(p) => held.push(p),
                Err(e) => panic!("out of memory before the hook ran: {e}"),
            }
        }
        assert!(
            !IRQS_OFF.load(Ordering::Relaxed),
            "on_low ran with interrupts off (a CPU's array borrowed)"
        );
        for p in held {
            s.kfree(p.as_ptr()).unwrap();
        }
    });
}

// --- 6. Atomic allocations never reclaim -----------------------------------

#[test]
fn an_atomic_allocation_fails_cleanly_without_reclaim() {
    let host = rig(32, 1, BuddyConfig::default());
    let _cpu0 = host.bind(0);
    let s = host.slab();
    let b = s.buddy();
    let idle = s
        .kmem_cache_create("idle", 200, 0, SlabFlags::empty(), None)
        .unwrap();
    let objs: Vec<_> = (0..500)
        .map(|_| s.kmem_cache_alloc(idle, Gfp::KERNEL).unwrap())
        .collect();
    for o in objs {
        s.kmem_cache_free(idle, o).unwrap();
    }
    let empty = s
        .kmem_cache_create("empty", 300, 0, SlabFlags::empty(), None)
        .unwrap();
    // Take every page: what a waiting caller may have, then the atomic
    // reserve below the `min` watermark.
    let mut pages = Vec::new();
    while let Some(p) = b.alloc_pages(Gfp::KERNEL | Gfp::NOWARN, 0) {
        pages.push(p);
    }
    let mut reserve = Vec::new();
    while let Some(p) = b.alloc_pages(Gfp::ATOMIC | Gfp::NOWARN, 0) {
        reserve.push(p);
    }
    assert!(
        !reserve.is_empty(),
        "atomic allocations dip into the reserve"
    );
    let before = s.cache_stats(idle).unwrap();
    assert!(
        before.num_slabs > before.active_slabs,
        "idle slabs to reclaim"
    );

    assert_eq!(s.kmalloc(200_000, Gfp::ATOMIC), Err(SlabError::OutOfMemory));
    assert_eq!(
        s.kmem_cache_alloc(empty, Gfp::ATOMIC),
        Err(SlabError::OutOfMemory)
    );
    assert_eq!(s.cache_stats(idle).unwrap(), before, "no reclaim");

    // A caller that may wait reclaims (the reserve back first: it only
    // gets what lies above it).
    for p in reserve {
        b.free_pages_page(p, 0).unwrap();
    }
    let p = s.kmem_cache_alloc(empty, Gfp::KERNEL).unwrap();
    assert!(s.cache_stats(idle).unwrap().num_slabs < before.num_slabs);
    s.kmem_cache_free(empty, p).unwrap();
    for p in pages {
        b.free_pages_page(p, 0).unwrap();
    }
}

// --- 7. The bad-input table: inside a large block is Interior ---------------

#[test]
fn inside_a_large_block_is_interior_everywhere() {
    let host = rig(32, 1, no_reserve());
    let _cpu0 = host.bind(0);
    let s = host.slab();
    let p = s.kmalloc(200_000, Gfp::KERNEL).unwrap();
    let free = s.buddy().free_pages_total();
    for off in [8, PAGE_SIZE, 2 * PAGE_SIZE, 8192 + 8, 48 * PAGE_SIZE] {
        let q = p.as_ptr().wrapping_add(off);
        assert_eq!(s.kfree(q), Err(SlabError::Interior), "offset {off}");
        assert_eq!(s.ksize(q), Err(SlabError::Interior), "offset {off}");
    }
    assert_eq!((s.buddy().free_pages_total(), s.large_pages()), (free, 49));
    s.kfree(p.as_ptr()).unwrap();
    assert_eq!(s.kfree(p.as_ptr()), Err(SlabError::DoubleFree));
    assert_eq!(
        s.kfree(p.as_ptr().wrapping_add(PAGE_SIZE)),
        Err(SlabError::Foreign),
        "inside a freed block"
    );
}

// --- 8. hardened: racing double frees ------------------------------------

#[cfg(any(feature = "hardened", feature = "debug"))]
#[test]
fn racing_double_frees_free_once() {
    use std::sync::Barrier;
    const ROUNDS: usize = 20_000;
    let host = rig(32, 2, no_reserve());
    let s = host.slab();
    let c = {
        let _cpu = host.bind(0);
        s.kmem_cache_create("race", 64, 0, SlabFlags::empty(), None)
            .unwrap()
    };
    let shared = AtomicUsize::new(0);
    let wins = AtomicUsize::new(0);
    let barrier = Barrier::new(2);
    let doubles = host.on_each_cpu(|id| {
        let mut doubles = 0;
        for _ in 0..ROUNDS {
            if id == 0 {
                let o = s.kmem_cache_alloc(c, Gfp::KERNEL).unwrap();
                shared.store(o.as_ptr().addr(), Ordering::Relaxed);
                wins.store(0, Ordering::Relaxed);
            }
            barrier.wait();
            let o = core::ptr::NonNull::new(shared.load(Ordering::Relaxed) as *mut u8).unwrap();
            match s.kmem_cache_free(c, o) {
                Ok(()) => {
                    wins.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => assert_eq!(e, SlabError::DoubleFree),
            }
            barrier.wait();
            if id == 0 && wins.load(Ordering::Relaxed) != 1 {
                doubles += 1;
            }
            barrier.wait();
        }
        doubles
    });
    assert_eq!(doubles, vec![0, 0], "an object freed twice at once");
    // The cache is consistent: every object came back once.
    let _cpu = host.bind(0);
    s.shrink_all();
    assert_eq!(s.validate_cache(c).map(|_| ()), Ok(()));
}
