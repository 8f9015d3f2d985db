//! A driver for profiling kmm's fast paths outside criterion: many pairs of
//! one path, so `perf stat` / `perf record` / `valgrind --tool=callgrind`
//! see nothing else (the instruction counts in docs/benchmarks.md come from
//! it; `cargo xtask bench --report` runs it under callgrind):
//!
//! ```text
//! cargo build --release -p kmm-benches --bin hot_path_driver
//! perf stat -e cycles,instructions target/release/hot_path_driver cache
//! ```
//!
//! `hot_path_driver MODE [PAIRS]` runs PAIRS pairs (20 million if absent)
//! of one path:
//!
//! - `order0`: order-0 `alloc_pages` + `free_pages_page` of the buddy
//!   allocator (4 GiB, through the per-CPU lists);
//! - `bulk16`, `bulk32`, `bulk64` (`bulkN` for any N from 1 up): one
//!   `alloc_pages_bulk` of N order-0 pages + one `release_pages` of them, on
//!   the same machine as `order0`; here PAIRS counts pages (PAIRS ÷ N bulk
//!   calls), so instructions per pair read as instructions per page;
//! - `cache` (`kmem_cache_alloc` + `kmem_cache_free`), `kmalloc`
//!   (`kmalloc` + `kfree`) and `global` (the `KmallocHeap` `GlobalAlloc`
//!   adapter) of 64-byte objects on a 64 MiB machine;
//! - `cache_bulkN` (`cache_bulk16`, `cache_bulk32`, `cache_bulk64`, …):
//!   `kmem_cache_alloc_bulk` of N objects + `kmem_cache_free_bulk` of the
//!   same N, PAIRS ÷ N times, on the same machine and objects as `cache`:
//!   PAIRS counts objects, so instructions per pair are per object, beside
//!   `cache`'s;
//! - `global_heap`: the umbrella's `GlobalHeap` (`GlobalAlloc` over a whole
//!   memory manager brought up with `GlobalHeap::init`), 64 bytes;
//! - `kmap_mapped`: `kmap` + `kunmap` of a HIGHMEM page that stays mapped
//!   (another user holds it); `kmap_new` a different page each time (a new
//!   pkmap entry, a wrap and `flush_all_zero_pkmaps` every LAST_PKMAP
//!   pairs); `kmap_local`: `kmap_local_page` + `kunmap_local` of a HIGHMEM
//!   page;
//! - `this_cpu_add`: one `this_cpu` add (not a pair) on a static per-CPU
//!   counter through the mock's `IndexOps`;
//! - `vmalloc PAIRS LIVE PAGES`: `vmalloc` + `vfree` of PAGES pages (1 if
//!   absent) on the vmalloc bench machine with LIVE areas (100 if absent)
//!   reserved first; `first_fit PAIRS LIVE PAGES` the same on the first-fit
//!   reference.
//!
//! Two more run workloads rather than pairs: `exhaust` (PAIRS counts
//! exhaust-then-refill cycles of a 64 MiB machine, 1000 if absent),
//! `exhaust_random` (PAIRS counts cycles of `exhaust_refill_random_1GiB`'s
//! workload on its fragmented 1 GiB machine, 10 if absent) — for both a
//! third argument picks the allocator: kmm through the per-CPU lists if
//! absent, `bypass` around them, or the peers `bitmap` and `buddy_system`
//! with the frames and sequence of the criterion group, so the peers'
//! instruction and cache-miss counts can be compared — and
//! `actions200` (`random_actions_200B`'s sequence 2000 times through
//! `kmalloc`/`kfree`/`krealloc`). Anything else only builds the slab machine
//! (a baseline to subtract).

use std::hint::black_box;
use std::sync::atomic::AtomicU32;

use kmm::GlobalHeap;
use kmm_benches::pkmap::{KmapHost, kmap_local_pair, kmap_pair};
use kmm_benches::slab::{
    Global, HOT_SIZE, KMM_RAM, KmmSlab, MAX_LIVE, cache_bulk, cache_pair, pair, random_actions,
    run_actions, with_kmm,
};
use kmm_benches::vmalloc::{FirstFit, VmHost, vmalloc_free_pair};
use kmm_benches::{
    BitAlloc1M, BitAlloc64K, Bitmap, BuddySystem, FRAGMENT_BLOCKS, FRAGMENT_MAX_ORDER,
    FREE_ORDER_SEED, FrameAlloc, Host, Kmm, KmmPath, RAM_4G, SEED, alloc_free_pair,
    bulk_alloc_free, exhaust_refill, exhaust_refill_shuffled, fragment_ops, run_steps, shuffled,
};
use kmm_mock::MockCpu;
use kmm_percpu::{BuddyAreas, Template, define_per_cpu, setup_per_cpu_areas};
use kmm_slab::{KmallocHeap, SlabAllocator};
use kmm_testkit::{MockPlatform, TestMachine};

/// Pairs per run: the second argument, 20 million if absent.
fn pairs() -> usize {
    std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000_000)
}

/// `kmem_cache_alloc` + `kmem_cache_free` pairs (each path in a function of
/// its own, so the inliner treats them as criterion's closures do).
#[inline(never)]
fn cache(slab: &SlabAllocator<'_, MockCpu>) {
    let hot = cache_pair(slab);
    for _ in 0..pairs() {
        hot();
    }
}

/// Bulk allocations and frees of `n` objects, [`pairs`] objects in all.
#[inline(never)]
fn slab_bulk(slab: &SlabAllocator<'_, MockCpu>, n: usize) {
    let mut round = cache_bulk(slab, n);
    for _ in 0..pairs() / n {
        round();
    }
}

/// `kmalloc` + `kfree` pairs.
#[inline(never)]
fn kmalloc(slab: &SlabAllocator<'_, MockCpu>) {
    let mut k = KmmSlab::new(slab);
    for _ in 0..pairs() {
        pair(&mut k, HOT_SIZE);
    }
}

/// `GlobalAlloc::alloc` + `dealloc` pairs.
#[inline(never)]
fn global(slab: &SlabAllocator<'_, MockCpu>) {
    let heap = KmallocHeap::new(slab);
    let mut k = Global(&heap);
    for _ in 0..pairs() {
        pair(&mut k, HOT_SIZE);
    }
}

/// The umbrella's global allocator, brought up by `global_heap`.
static HEAP: GlobalHeap<MockPlatform> = GlobalHeap::new();

/// `GlobalAlloc::alloc` + `dealloc` pairs on [`HEAP`] over a whole memory
/// manager (a 64 MiB machine, one CPU).
#[inline(never)]
fn global_heap() {
    let (machine, cross, mm) = TestMachine::builder()
        .ram_mib(64)
        // SAFETY: the machine and the cross-CPU call are leaked below: the
        // manager lives for the rest of the process.
        .boot_mm(|p, params| unsafe { HEAP.init(p, params) });
    mm.expect("the memory manager");
    let _cpu0 = machine.cpu().bind(0).expect("CPU 0");
    std::mem::forget((machine.clone(), cross));
    let mut k = Global(&HEAP);
    for _ in 0..pairs() {
        pair(&mut k, HOT_SIZE);
    }
}

define_per_cpu! {
    static HITS: shared AtomicU32 = AtomicU32::new(0);
}

/// `this_cpu` adds to a static per-CPU counter (the mock's `IndexOps`: the
/// offset table by CPU id under a preemption guard, then an atomic add), on
/// a two-CPU machine with the driver bound to CPU 0, as in the `percpu`
/// bench.
#[inline(never)]
fn this_cpu_add() {
    let host = TestMachine::builder().ram_mib(32).cpus(2).build();
    let _cpu0 = host.bind(0);
    let vars = [HITS.desc()];
    let areas = setup_per_cpu_areas(
        host.cpu(),
        &Template::from_vars(&vars),
        BuddyAreas::new(host.buddy(), &[]),
    )
    .expect("per-CPU areas");
    let this = areas.this_cpu();
    for _ in 0..pairs() {
        this.add(&HITS, black_box(1)).expect("a bound CPU");
    }
}

/// `random_actions_200B` through `kmalloc`, `kfree` and `krealloc`.
#[inline(never)]
fn actions200(slab: &SlabAllocator<'_, MockCpu>) {
    let actions = random_actions(SEED, 4096, 1..=200, MAX_LIVE, true);
    let mut live = Vec::with_capacity(MAX_LIVE);
    let mut k = KmmSlab::new(slab);
    for _ in 0..2000 {
        run_actions(&mut k, &actions, &mut live);
    }
}

/// Order-0 page alloc+free pairs through the per-CPU lists.
#[inline(never)]
fn order0() {
    let mut host = Host::new(RAM_4G);
    let mut kmm = Kmm::new(&mut host, KmmPath::PerCpu);
    for _ in 0..pairs() {
        alloc_free_pair(&mut kmm);
    }
}

/// Bulk alloc+free of `n` order-0 pages through the per-CPU lists, PAIRS
/// pages in all.
#[inline(never)]
fn page_bulk(n: usize) {
    let mut host = Host::new(RAM_4G);
    let mut kmm = Kmm::new(&mut host, KmmPath::PerCpu);
    let mut pages = vec![None; n];
    for _ in 0..pairs() / n {
        bulk_alloc_free(&mut kmm, &mut pages);
    }
}

/// The allocator the `exhaust` modes drive (their third argument).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    Kmm(KmmPath),
    Bitmap,
    BuddySystem,
}

impl Who {
    fn from_arg() -> Who {
        match std::env::args().nth(3).as_deref() {
            Some("bypass") => Who::Kmm(KmmPath::Bypass),
            Some("bitmap") => Who::Bitmap,
            Some("buddy_system") => Who::BuddySystem,
            _ => Who::Kmm(KmmPath::PerCpu),
        }
    }
}

/// Exhaust-then-refill cycles of a 64 MiB machine (the second argument
/// counts cycles here, 1000 if absent); the peers get kmm's frames.
#[inline(never)]
fn exhaust(cycles: usize, who: Who) {
    let mut host = Host::new(64 << 20);
    let mut kmm = Kmm::new(&mut host, KmmPath::PerCpu);
    let frames = exhaust_refill(&mut kmm, &mut Vec::new());
    drop(kmm);
    match who {
        Who::Kmm(path) => exhaust_cycles(&mut Kmm::new(&mut host, path), cycles),
        Who::Bitmap => exhaust_cycles(&mut Bitmap::<BitAlloc64K>::new(frames), cycles),
        Who::BuddySystem => exhaust_cycles(&mut BuddySystem::new(frames), cycles),
    }
}

fn exhaust_cycles<A: FrameAlloc>(a: &mut A, cycles: usize) {
    let mut buf = Vec::new();
    for _ in 0..cycles {
        std::hint::black_box(exhaust_refill(a, &mut buf));
    }
}

/// Cycles of the fragmented 1 GiB exhaust-then-refill workload (the set-up
/// as in `benches/page_alloc.rs`: one exhaust to count the frames, the
/// fragmenting phase, then the cycles).
#[inline(never)]
fn exhaust_random(cycles: usize, who: Who) {
    let mut host = Host::new(1 << 30);
    let mut kmm = Kmm::new(&mut host, KmmPath::PerCpu);
    let frames = exhaust_refill(&mut kmm, &mut Vec::new());
    drop(kmm);
    match who {
        Who::Kmm(path) => exhaust_random_cycles(&mut Kmm::new(&mut host, path), cycles),
        Who::Bitmap => exhaust_random_cycles(&mut Bitmap::<BitAlloc1M>::new(frames), cycles),
        Who::BuddySystem => exhaust_random_cycles(&mut BuddySystem::new(frames), cycles),
    }
}

fn exhaust_random_cycles<A: FrameAlloc>(a: &mut A, cycles: usize) {
    let mut live = Vec::new();
    let ops = fragment_ops(SEED, FRAGMENT_BLOCKS, FRAGMENT_MAX_ORDER);
    run_steps(a, &ops, &mut live);
    let mut buf = Vec::new();
    let n = exhaust_refill(a, &mut buf);
    let order = shuffled(FREE_ORDER_SEED, n);
    for _ in 1..cycles {
        std::hint::black_box(exhaust_refill_shuffled(a, &mut buf, &order));
    }
}

/// vmalloc+vfree pairs of `pages` pages with `live` areas live.
#[inline(never)]
fn vmalloc(live: usize, pages: usize) {
    let host = VmHost::new();
    let _cpu0 = host.bind();
    let vm = host.vmalloc();
    let background = host.reserve_live(&vm, live);
    for _ in 0..pairs() {
        vmalloc_free_pair(&vm, pages);
    }
    host.release_live(&vm, background);
}

/// The same on the first-fit reference.
#[inline(never)]
fn first_fit(live: usize, pages: usize) {
    let host = VmHost::new();
    let _cpu0 = host.bind();
    let mut ff = FirstFit::new(&host);
    ff.reserve_live(live);
    for _ in 0..pairs() {
        ff.vmalloc_free_pair(pages);
    }
}

/// kmap pairs: `mode` is `kmap_mapped`, `kmap_new` or `kmap_local`.
#[inline(never)]
fn kmap(mode: &str) {
    let host = KmapHost::new();
    let _cpu0 = host.bind();
    let pk = host.pkmap();
    let pages = host.highmem_pages(2048);
    match mode {
        "kmap_mapped" => {
            pk.kmap(pages[0]).expect("the holder's kmap");
            for _ in 0..pairs() {
                kmap_pair(&pk, pages[0]);
            }
        }
        "kmap_new" => {
            for i in 0..pairs() {
                kmap_pair(&pk, pages[i % pages.len()]);
            }
        }
        _ => {
            for _ in 0..pairs() {
                kmap_local_pair(&pk, pages[0]);
            }
        }
    }
}

/// The `n`th argument as a number, `default` if absent.
fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "vmalloc" => return vmalloc(arg(3, 100), arg(4, 1)),
        "first_fit" => return first_fit(arg(3, 100), arg(4, 1)),
        "kmap_mapped" | "kmap_new" | "kmap_local" => return kmap(&mode),
        "global_heap" => return global_heap(),
        "this_cpu_add" => return this_cpu_add(),
        _ => {}
    }
    if mode == "order0" {
        return order0();
    }
    if mode == "exhaust_random" {
        return exhaust_random(arg(2, 10), Who::from_arg());
    }
    if let Some(n) = mode.strip_prefix("bulk").and_then(|n| n.parse().ok())
        && n > 0
    {
        return page_bulk(n);
    }
    if mode == "exhaust" {
        return exhaust(arg(2, 1000), Who::from_arg());
    }
    with_kmm(KMM_RAM, 1, |slab, _, _cpu0| match mode.as_str() {
        "cache" => cache(slab),
        m if m.starts_with("cache_bulk") => {
            let n = m["cache_bulk".len()..].parse().unwrap_or(32);
            slab_bulk(slab, usize::max(n, 1))
        }
        "kmalloc" => kmalloc(slab),
        "global" => global(slab),
        "actions200" => actions200(slab),
        _ => {}
    });
}
