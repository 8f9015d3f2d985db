//! Page allocator benchmarks: kmm's buddy allocator (through the per-CPU lists
//! and bypassing them) beside `bitmap-allocator` and `buddy_system_allocator`,
//! in the same run, on the same workloads (see `kmm_benches` for the drivers and
//! `docs/benchmarks.md` for the results):
//!
//! 1. `order0_alloc_free`: one order-0 allocation and its free, on a fresh
//!    4 GiB range;
//! 2. `random_orders`: a fixed-seed sequence of allocations of orders 0–10 and
//!    frees of random live blocks (at most 64 live), the same for everyone;
//! 3. `exhaust_refill_64MiB`: order-0 allocations until failure, then every
//!    free, on 64 MiB;
//! 4. `exhaust_refill_random_1GiB`: on 1 GiB whose free memory a fixed-seed
//!    phase of random orders fragmented first, order-0 allocations until
//!    failure, then every free in a fixed-seed random order;
//! 5. `init_4GiB`: building the allocator over 4 GiB;
//! 6. `bulk_pages`: kmm alone — one `alloc_pages_bulk` of N order-0 pages
//!    and one `release_pages` of them (N = 16, 32, 64), beside the single
//!    order-0 `alloc_pages` + `free_pages_page` pair, all through the
//!    per-CPU lists on a fresh 4 GiB range; the throughput counts pages, so
//!    each row reads as time per page (the peers have no bulk path).
//!
//! Run with `cargo xtask bench` (or `cargo bench -p kmm-benches`); criterion's
//! arguments follow, e.g. `cargo xtask bench order0` for one group.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kmm_benches::{
    BitAlloc1M, BitAlloc64K, Bitmap, BuddySystem, FRAGMENT_BLOCKS, FRAGMENT_MAX_ORDER, FRAMES_4G,
    FREE_ORDER_SEED, FrameAlloc, Host, Kmm, KmmPath, MAX_LIVE, RAM_4G, SEED, alloc_free_pair,
    bulk_alloc_free, exhaust_refill, exhaust_refill_shuffled, fragment_ops, live_frames,
    random_ops, run_ops, run_steps, shuffled,
};

/// Bench names of the two kmm paths and the peers, as they appear in reports.
const KMM_PCP: &str = "kmm_pcp";
const KMM_BYPASS: &str = "kmm_bypass";
const BITMAP: &str = "bitmap-allocator";
const BUDDY_SYSTEM: &str = "buddy_system_allocator";

/// The kmm paths and their bench names.
const KMM_PATHS: [(&str, KmmPath); 2] = [(KMM_PCP, KmmPath::PerCpu), (KMM_BYPASS, KmmPath::Bypass)];

/// RAM of the exhaust-and-refill workload.
const EXHAUST_RAM: usize = 64 << 20;
/// RAM of the fragmented exhaust-and-refill workload.
const FRAGMENTED_RAM: usize = 1 << 30;
/// Random steps per iteration of the random-order workload (plus the frees of
/// what is still live at the end).
const RANDOM_STEPS: usize = 4096;

/// Workload 1: order-0 alloc + free on a fresh 4 GiB range.
fn order0_alloc_free(c: &mut Criterion) {
    let mut g = c.benchmark_group("order0_alloc_free");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    for (name, path) in KMM_PATHS {
        let mut host = Host::new(RAM_4G);
        let mut kmm = Kmm::new(&mut host, path);
        g.bench_function(name, |b| b.iter(|| alloc_free_pair(&mut kmm)));
    }
    let mut bitmap = Bitmap::<BitAlloc1M>::new(FRAMES_4G);
    g.bench_function(BITMAP, |b| b.iter(|| alloc_free_pair(&mut bitmap)));
    let mut buddy = BuddySystem::new(FRAMES_4G);
    g.bench_function(BUDDY_SYSTEM, |b| b.iter(|| alloc_free_pair(&mut buddy)));
    g.finish();
}

/// Bulk sizes of workload 5.
const BULK_SIZES: [usize; 3] = [16, 32, 64];

/// Workload 5: kmm's bulk order-0 paths against its single pair, per page,
/// through the per-CPU lists on a fresh 4 GiB range. `single` is one
/// `alloc_pages` + `free_pages_page`; `bulk_N` one `alloc_pages_bulk` of N
/// pages + one `release_pages` of the same N (throughput N, so criterion's
/// time per element is the time per page).
fn bulk_pages(c: &mut Criterion) {
    let mut g = c.benchmark_group("bulk_pages");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut host = Host::new(RAM_4G);
    let mut kmm = Kmm::new(&mut host, KmmPath::PerCpu);
    g.throughput(Throughput::Elements(1));
    g.bench_function("single", |b| b.iter(|| alloc_free_pair(&mut kmm)));
    for n in BULK_SIZES {
        let mut pages = vec![None; n];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("bulk_{n}"), |b| {
            b.iter(|| bulk_alloc_free(&mut kmm, &mut pages));
        });
    }
    g.finish();
}

/// Workload 2: the same random sequence of orders 0–10 for everyone, on 4 GiB.
/// One iteration runs the whole sequence from and back to nothing allocated;
/// the throughput counts its operations (allocations plus frees).
fn random_orders(c: &mut Criterion) {
    let ops = random_ops(SEED, RANDOM_STEPS, 10, MAX_LIVE);
    let mut g = c.benchmark_group("random_orders");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30)
        .throughput(Throughput::Elements(ops.len() as u64));
    for (name, path) in KMM_PATHS {
        let mut host = Host::new(RAM_4G);
        let mut kmm = Kmm::new(&mut host, path);
        let mut live = Vec::with_capacity(MAX_LIVE);
        g.bench_function(name, |b| b.iter(|| run_ops(&mut kmm, &ops, &mut live)));
    }
    let mut bitmap = Bitmap::<BitAlloc1M>::new(FRAMES_4G);
    let mut live = Vec::with_capacity(MAX_LIVE);
    g.bench_function(BITMAP, |b| b.iter(|| run_ops(&mut bitmap, &ops, &mut live)));
    let mut buddy = BuddySystem::new(FRAMES_4G);
    g.bench_function(BUDDY_SYSTEM, |b| {
        b.iter(|| run_ops(&mut buddy, &ops, &mut live))
    });
    g.finish();
}

/// Workload 3: allocate every frame of 64 MiB, then free them all; one
/// iteration is the whole cycle. The allocator ends each cycle as it started,
/// so no per-iteration setup is needed. The peers get exactly as many frames as
/// kmm hands out (kmm keeps `mem_map` and frame 0 for itself), and the
/// throughput counts pages.
fn exhaust_refill_64m(c: &mut Criterion) {
    let frames = {
        let mut host = Host::new(EXHAUST_RAM);
        let mut kmm = Kmm::new(&mut host, KmmPath::PerCpu);
        exhaust_refill(&mut kmm, &mut Vec::new())
    };
    let mut g = c.benchmark_group("exhaust_refill_64MiB");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30)
        .throughput(Throughput::Elements(frames as u64));
    let mut buf = Vec::with_capacity(frames);
    for (name, path) in KMM_PATHS {
        let mut host = Host::new(EXHAUST_RAM);
        let mut kmm = Kmm::new(&mut host, path);
        let mut buf = Vec::with_capacity(frames);
        g.bench_function(name, |b| {
            b.iter(|| assert_eq!(exhaust_refill(&mut kmm, &mut buf), frames));
        });
    }
    let mut bitmap = Bitmap::<BitAlloc64K>::new(frames);
    g.bench_function(BITMAP, |b| {
        b.iter(|| assert_eq!(exhaust_refill(&mut bitmap, &mut buf), frames));
    });
    let mut buddy = BuddySystem::new(frames);
    g.bench_function(BUDDY_SYSTEM, |b| {
        b.iter(|| assert_eq!(exhaust_refill(&mut buddy, &mut buf), frames));
    });
    g.finish();
}

/// Fragments `a` with the fixed phase of random orders ([`fragment_ops`])
/// and benches workload 4 on what is left under `name` (each cycle checks
/// that it got every frame `order` frees).
fn bench_fragmented<A: FrameAlloc>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    a: &mut A,
    order: &[u32],
) {
    let mut live = Vec::new();
    run_steps(
        a,
        &fragment_ops(SEED, FRAGMENT_BLOCKS, FRAGMENT_MAX_ORDER),
        &mut live,
    );
    let mut buf = Vec::with_capacity(order.len());
    g.bench_function(name, |b| {
        b.iter(|| exhaust_refill_shuffled(a, &mut buf, order));
    });
}

/// Workload 4: the twin of workload 3 on a 1 GiB machine whose free memory is
/// fragmented first: a fixed phase of random orders 0–6 ([`fragment_ops`]:
/// 8192 blocks allocated, a random half of them freed) leaves about 4096
/// blocks live, scattered; then one iteration allocates order-0 frames until
/// failure and frees them all in a fixed random order ([`shuffled`]). The
/// peers get exactly the frames kmm hands out on the fresh machine and the
/// same phase and order; the throughput counts the pages of one cycle. The
/// fragmenting phase is set-up, not timed; the cycle ends as it started.
fn exhaust_refill_random_1g(c: &mut Criterion) {
    let (frames, held) = {
        let mut host = Host::new(FRAGMENTED_RAM);
        let mut kmm = Kmm::new(&mut host, KmmPath::PerCpu);
        let frames = exhaust_refill(&mut kmm, &mut Vec::new());
        let mut live = Vec::new();
        run_steps(
            &mut kmm,
            &fragment_ops(SEED, FRAGMENT_BLOCKS, FRAGMENT_MAX_ORDER),
            &mut live,
        );
        (frames, live_frames(&live))
    };
    let order = shuffled(FREE_ORDER_SEED, frames - held);
    let mut g = c.benchmark_group("exhaust_refill_random_1GiB");
    g.warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6))
        .sample_size(10)
        .throughput(Throughput::Elements(order.len() as u64));
    for (name, path) in KMM_PATHS {
        let mut host = Host::new(FRAGMENTED_RAM);
        let mut kmm = Kmm::new(&mut host, path);
        bench_fragmented(&mut g, name, &mut kmm, &order);
    }
    let mut bitmap = Bitmap::<BitAlloc1M>::new(frames);
    bench_fragmented(&mut g, BITMAP, &mut bitmap, &order);
    drop(bitmap);
    let mut buddy = BuddySystem::new(frames);
    bench_fragmented(&mut g, BUDDY_SYSTEM, &mut buddy, &order);
    g.finish();
}

/// Workload 5: building the allocator over 4 GiB. For kmm that is `Bootmem`,
/// `MemMap::new` (a descriptor per frame) and `Buddy::new` (zones, per-CPU
/// lists, every free frame into the free lists) on one mock machine made once:
/// each iteration builds a new allocator over the same RAM, as a kernel does at
/// boot, and only the build is timed (`iter_custom`), not dropping it. The
/// peers: `BitAlloc1M` reset in place plus `insert` of the range, and a new
/// `FrameAllocator` plus `add_frame`.
fn init_4g(c: &mut Criterion) {
    let mut g = c.benchmark_group("init_4GiB");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(10);
    let mut host = Host::new(RAM_4G);
    g.bench_function("kmm", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let buddy = host.buddy(KmmPath::PerCpu.config());
                total += start.elapsed();
                black_box(&buddy);
            }
            total
        });
    });
    drop(host);
    let mut bitmap = Bitmap::<BitAlloc1M>::new(FRAMES_4G);
    g.bench_function(BITMAP, |b| {
        b.iter(|| {
            bitmap.reset(FRAMES_4G);
            black_box(&bitmap);
        });
    });
    g.bench_function(BUDDY_SYSTEM, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let buddy = BuddySystem::new(black_box(FRAMES_4G));
                total += start.elapsed();
                black_box(&buddy);
            }
            total
        });
    });
    g.finish();
}

criterion_group!(
    benches,
    order0_alloc_free,
    random_orders,
    exhaust_refill_64m,
    exhaust_refill_random_1g,
    init_4g,
    bulk_pages
);
criterion_main!(benches);
