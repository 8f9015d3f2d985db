//! Object allocator benchmarks: kmm's SLAB allocator (`kmm-slab` over
//! `kmm-buddy` on the host mock) beside `slabmalloc`, `talc`,
//! `linked_list_allocator` and `buddy_system_allocator`'s heap, in the same
//! run, on the same workloads, every peer on a heap of the size kmm's buddy
//! allocator can hand out on a 64 MiB machine (see `kmm_benches::slab` for the
//! drivers and `docs/benchmarks.md` for the results):
//!
//! 1. `slab_hot_64B`: one 64-byte allocation and its free — kmm through a
//!    64-byte cache (`kmem_cache_alloc`/`kmem_cache_free`), `kmalloc`/`kfree`
//!    and the `KmallocHeap` `GlobalAlloc` adapter; the peers unlocked and, as
//!    `<peer>_locked`, their thread-safe variants uncontended;
//! 2. `kmalloc_random_8-4096B`: a fixed-seed sequence of allocations of 8 to
//!    4096 bytes and frees of random live blocks (at most 256 live);
//! 3. `random_actions_200B` and `random_actions_30000B`: allocations, frees and
//!    reallocations of 1 to 200 (1 to 30 000) bytes;
//! 4. `two_threads_64B`: workload 1 on two threads at once — kmm on two
//!    simulated CPUs, the peers behind their locks; `reference_talc_per_thread`
//!    (a private talc heap per thread) shows how well the machine scales;
//! 5. `kmalloc_size`: one allocation and its free of 8, 16, … 4096 bytes
//!    (`kmalloc_size/<allocator>/<bytes>`), kmm's `kmalloc` and the peers
//!    unlocked (the cost-against-size plot of the docs);
//! 6. `slab_bulk`: `kmem_cache_alloc_bulk` + `kmem_cache_free_bulk` of 16,
//!    32 and 64 objects of 64 bytes (`slab_bulk/kmm_cache_bulk/<n>`, per
//!    object in the throughput), beside the single pair (`kmm_cache`).
//!
//! Heap efficiency is not a timing: `cargo run --release -p kmm-benches --bin
//! heap_efficiency` prints it.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p kmm-benches`); criterion's
//! arguments follow, e.g. `cargo xtask bench slab_hot` for one group.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kmm_benches::SEED;
use kmm_benches::slab::{
    Action, BULK_SIZES, BuddyHeap, Global, HOT_SIZE, KMM_RAM, KmmSlab, LinkedListHeap, Locked,
    MAX_LIVE, SlabMallocHeap, TalcHeap, cache_bulk, cache_pair, pair, random_actions, run_actions,
    two_threads, with_kmm,
};
use kmm_slab::KmallocHeap;

/// Bench names, as they appear in reports.
const KMM_CACHE: &str = "kmm_cache";
const KMM_CACHE_BULK: &str = "kmm_cache_bulk";
const KMM_KMALLOC: &str = "kmm_kmalloc";
const KMM_HEAP: &str = "kmm_globalalloc";
const SLABMALLOC: &str = "slabmalloc";
const TALC: &str = "talc";
const LINKED_LIST: &str = "linked_list_allocator";
const BUDDY: &str = "buddy_system_allocator";

/// The bench name of a peer's locked variant.
fn locked(name: &str) -> String {
    format!("{name}_locked")
}

/// Object sizes of workload 6, in bytes.
const SIZES: [usize; 10] = [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// Random steps per iteration of the random workloads (plus the frees of what
/// is still live at the end).
const RANDOM_STEPS: usize = 4096;

/// The heap every peer gets: what kmm's buddy allocator can hand out.
fn heap_bytes() -> usize {
    with_kmm(KMM_RAM, 1, |_, heap, _cpu0| heap)
}

/// Runs `$body` with `$a` each peer in turn, unlocked, on a fresh heap of
/// `$heap` bytes, and `$name` its bench name. A macro, not a function
/// taking `&mut dyn ObjAlloc`, so every peer is called statically, as kmm is.
macro_rules! peers {
    ($heap:expr, |$name:ident, $a:ident| $body:expr) => {{
        for_peer!($heap, $name, $a, SLABMALLOC, SlabMallocHeap, $body);
        for_peer!($heap, $name, $a, TALC, TalcHeap, $body);
        for_peer!($heap, $name, $a, LINKED_LIST, LinkedListHeap, $body);
        for_peer!($heap, $name, $a, BUDDY, BuddyHeap, $body);
    }};
}

/// One peer of [`peers!`]: `$body` with `$a` a fresh `$heap_type` heap and
/// `$name` its bench name `$bench`.
macro_rules! for_peer {
    ($heap:expr, $name:ident, $a:ident, $bench:expr, $heap_type:ident, $body:expr) => {{
        let mut $a = $heap_type::new($heap);
        let $name = $bench;
        $body;
        drop($a);
    }};
}

/// Workload 1: a 64-byte allocation and its free.
fn hot_path(c: &mut Criterion) {
    let heap = heap_bytes();
    let mut g = c.benchmark_group("slab_hot_64B");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    with_kmm(KMM_RAM, 1, |slab, _, _cpu0| {
        let hot = cache_pair(slab);
        g.bench_function(KMM_CACHE, |b| b.iter(&hot));
        let mut k = KmmSlab::new(slab);
        g.bench_function(KMM_KMALLOC, |b| b.iter(|| pair(&mut k, HOT_SIZE)));
        let h = KmallocHeap::new(slab);
        let mut k = Global(&h);
        g.bench_function(KMM_HEAP, |b| b.iter(|| pair(&mut k, HOT_SIZE)));
    });
    peers!(heap, |name, a| g
        .bench_function(name, |b| b.iter(|| pair(&mut a, HOT_SIZE))));
    // The peers' thread-safe variants, uncontended: what a kernel would
    // install as its heap (kmm's paths above are all thread-safe).
    let slabm = Locked::slabmalloc(heap);
    g.bench_function(locked(SLABMALLOC), |b| {
        b.iter(|| pair(&mut Global(slabm.heap()), HOT_SIZE))
    });
    drop(slabm);
    let talc = Locked::talc(heap);
    g.bench_function(locked(TALC), |b| {
        b.iter(|| pair(&mut Global(talc.heap()), HOT_SIZE))
    });
    drop(talc);
    let ll = Locked::linked_list(heap);
    g.bench_function(locked(LINKED_LIST), |b| {
        b.iter(|| pair(&mut Global(ll.heap()), HOT_SIZE))
    });
    drop(ll);
    let buddy = Locked::buddy(heap);
    g.bench_function(locked(BUDDY), |b| {
        b.iter(|| pair(&mut Global(buddy.heap()), HOT_SIZE))
    });
    g.finish();
}

/// Workload 6: one allocation and its free at each size of [`SIZES`]
/// (`kmalloc_size/<allocator>/<bytes>`): kmm through `kmalloc`/`kfree`, the
/// peers unlocked. Short: it is there for the cost-against-size plot.
fn by_size(c: &mut Criterion) {
    let heap = heap_bytes();
    let mut g = c.benchmark_group("kmalloc_size");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    with_kmm(KMM_RAM, 1, |slab, _, _cpu0| {
        let mut k = KmmSlab::new(slab);
        for size in SIZES {
            g.bench_with_input(BenchmarkId::new(KMM_KMALLOC, size), &size, |b, &n| {
                b.iter(|| pair(&mut k, n))
            });
        }
    });
    peers!(heap, |name, a| for size in SIZES {
        g.bench_with_input(BenchmarkId::new(name, size), &size, |b, &n| {
            b.iter(|| pair(&mut a, n))
        });
    });
    g.finish();
}

/// Runs `actions` as one group: one iteration is the whole sequence, from and
/// back to nothing allocated; the throughput counts its steps.
fn actions_group(c: &mut Criterion, name: &str, actions: &[Action]) {
    let heap = heap_bytes();
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .throughput(Throughput::Elements(actions.len() as u64));
    let mut live = Vec::with_capacity(MAX_LIVE);
    with_kmm(KMM_RAM, 1, |slab, _, _cpu0| {
        let mut k = KmmSlab::new(slab);
        g.bench_function(KMM_KMALLOC, |b| {
            b.iter(|| run_actions(&mut k, actions, &mut live))
        });
    });
    peers!(heap, |name, a| g.bench_function(name, |b| b
        .iter(|| run_actions(&mut a, actions, &mut live))));
    g.finish();
}

/// Workload 2: kmalloc-style traffic, 8 to 4096 bytes, allocations and frees.
fn kmalloc_random(c: &mut Criterion) {
    let actions = random_actions(SEED, RANDOM_STEPS, 8..=4096, MAX_LIVE, false);
    actions_group(c, "kmalloc_random_8-4096B", &actions);
}

/// Workload 3: allocations, frees and reallocations up to 200 bytes and up to
/// 30 000 bytes.
fn random_mix(c: &mut Criterion) {
    let small = random_actions(SEED, RANDOM_STEPS, 1..=200, MAX_LIVE, true);
    actions_group(c, "random_actions_200B", &small);
    let large = random_actions(SEED, RANDOM_STEPS, 1..=30_000, MAX_LIVE, true);
    actions_group(c, "random_actions_30000B", &large);
}

/// Workload 5: the hot path on two threads at once. One iteration is one pair
/// on each thread; the time is the wall time of both, so perfect scaling
/// shows the single-thread time. kmm: each thread binds a simulated CPU of its
/// own (2-CPU machine); the peers: their thread-safe variants (talc's
/// `TalcLock` with `spinning_top`, `linked_list_allocator::LockedHeap`,
/// `buddy_system_allocator::LockedHeap`, slabmalloc's zone behind a
/// `spin::Mutex` as in its `global_alloc` example).
fn two_threads_hot(c: &mut Criterion) {
    let heap = heap_bytes();
    let mut g = c.benchmark_group("two_threads_64B");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .throughput(Throughput::Elements(2));
    with_kmm(KMM_RAM, 2, |slab, _, cpu0| {
        let hot = cache_pair(slab);
        drop(cpu0);
        let cpu = slab.buddy().cpu();
        let bind = |id| cpu.bind(id).expect("a simulated CPU per thread");
        g.bench_function(KMM_CACHE, |b| {
            b.iter_custom(|n| two_threads(n, bind, |_| hot()))
        });
        g.bench_function(KMM_KMALLOC, |b| {
            b.iter_custom(|n| two_threads(n, bind, |_| pair(&mut KmmSlab::new(slab), HOT_SIZE)))
        });
    });
    let slabm = Locked::slabmalloc(heap);
    g.bench_function(SLABMALLOC, |b| {
        b.iter_custom(|n| two_threads(n, |_| Global(slabm.heap()), |a| pair(a, HOT_SIZE)))
    });
    drop(slabm);
    let talc = Locked::talc(heap);
    g.bench_function(TALC, |b| {
        b.iter_custom(|n| two_threads(n, |_| Global(talc.heap()), |a| pair(a, HOT_SIZE)))
    });
    drop(talc);
    let ll = Locked::linked_list(heap);
    g.bench_function(LINKED_LIST, |b| {
        b.iter_custom(|n| two_threads(n, |_| Global(ll.heap()), |a| pair(a, HOT_SIZE)))
    });
    drop(ll);
    let buddy = Locked::buddy(heap);
    g.bench_function(BUDDY, |b| {
        b.iter_custom(|n| two_threads(n, |_| Global(buddy.heap()), |a| pair(a, HOT_SIZE)))
    });
    drop(buddy);
    // The scaling reference: each thread on a talc heap of its own, unlocked,
    // nothing shared. It shows what the machine itself does to two threads
    // (the other vCPU is often busy): perfect scaling would repeat
    // `slab_hot_64B/talc`.
    g.bench_function("reference_talc_per_thread", |b| {
        b.iter_custom(|n| two_threads(n, |_| TalcHeap::new(1 << 20), |a| pair(a, HOT_SIZE)))
    });
    g.finish();
}

/// The bulk paths (item 6 above). `kmm_cache_bulk/N` is one
/// `kmem_cache_alloc_bulk` of N 64-byte objects and one
/// `kmem_cache_free_bulk` of the same N (throughput N objects, so the time
/// per element is per object); `kmm_cache` the single pair on a cache of
/// its own in the same group, the reference (no peer has a bulk call).
fn bulk(c: &mut Criterion) {
    let mut g = c.benchmark_group("slab_bulk");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    with_kmm(KMM_RAM, 1, |slab, _, _cpu0| {
        let hot = cache_pair(slab);
        g.throughput(Throughput::Elements(1));
        g.bench_function(KMM_CACHE, |b| b.iter(&hot));
        for n in BULK_SIZES {
            let mut round = cache_bulk(slab, n);
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::new(KMM_CACHE_BULK, n), &n, |b, _| {
                b.iter(&mut round)
            });
        }
    });
    g.finish();
}

criterion_group!(
    benches,
    hot_path,
    bulk,
    kmalloc_random,
    random_mix,
    two_threads_hot,
    by_size
);
criterion_main!(benches);
