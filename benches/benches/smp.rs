//! One CPU against two (issue 10): how the per-CPU fast paths scale, beside
//! the peers' locked variants in the same run.
//!
//! 1. `smp_order0_pair`: an order-0 page allocation and its free;
//! 2. `smp_slab_64B`: a 64-byte object allocation and its free
//!    (`kmem_cache_alloc`/`kmem_cache_free` for kmm);
//! 3. `smp_mix_cross_free`: a 64-byte object and a page per step, each put in
//!    a slot of a ring shared by the threads in exchange for the block left
//!    there earlier, which is freed; each thread walks the ring from its own
//!    half, so with two threads at the same pace most frees are of blocks
//!    the other CPU allocated.
//!
//! Each is run on one thread and on two at once (`<name>/1`, `<name>/2`); an
//! iteration is one step on every thread, and the throughput is counted in
//! steps, so two threads scaling perfectly show twice the elements per second
//! of one. kmm runs on a two-CPU mock machine, each thread bound to a
//! simulated CPU of its own; the peers are their thread-safe variants
//! (`buddy_system_allocator`'s `LockedFrameAllocator` and `LockedHeap`,
//! `bitmap-allocator` and slabmalloc behind a `spin::Mutex`, talc's
//! `TalcLock`). The machine has two cores: run with nothing else on it.
//!
//! Run with `cargo bench -p kmm-benches --bench smp`.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::ptr::{NonNull, with_exposed_provenance_mut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kmm_benches::slab::{Global, HOT_SIZE, KMM_RAM, Locked, TalcHeap, pair, threads, with_kmm};
use kmm_benches::{BitAlloc1M, Bitmap, FRAMES_4G, FrameAlloc};
use kmm_buddy::Gfp;
use kmm_hal::VirtAddr;
use kmm_slab::SlabFlags;

/// Slots shared by the threads of the mixed workload.
const SLOTS: usize = 64;

/// The thread counts compared.
const THREADS: [usize; 2] = [1, 2];

fn group<'c>(
    c: &'c mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    g
}

/// Benchmarks `work` under `name` on one thread and on two
/// (`<name>/1`, `<name>/2`), each thread set up with `setup(index)`
/// outside the timing.
fn scaling<S>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    setup: impl Fn(usize) -> S + Sync,
    work: impl Fn(&mut S) + Sync,
) {
    for t in THREADS {
        g.throughput(Throughput::Elements(t as u64));
        g.bench_with_input(BenchmarkId::new(name, t), &t, |b, &t| {
            b.iter_custom(|n| threads(t, n, &setup, &work))
        });
    }
}

/// Workload 1: the order-0 page pair.
fn order0(c: &mut Criterion) {
    let mut g = group(c, "smp_order0_pair");
    with_kmm(KMM_RAM, 2, |slab, _, cpu0| {
        drop(cpu0);
        let buddy = slab.buddy();
        let cpu = buddy.cpu();
        scaling(
            &mut g,
            "kmm",
            |id| cpu.bind(id).expect("a simulated CPU per thread"),
            |_| {
                let p = buddy.alloc_pages(Gfp::KERNEL, 0).expect("a page");
                buddy.free_pages_page(black_box(p), 0).expect("free");
            },
        );
    });
    let bsa = buddy_system_allocator::LockedFrameAllocator::<11>::new();
    bsa.lock().add_frame(0, FRAMES_4G);
    scaling(
        &mut g,
        "buddy_system_allocator_locked",
        |_| (),
        |_| {
            let f = bsa.lock().alloc(1).expect("a frame");
            bsa.lock().dealloc(black_box(f), 1);
        },
    );
    let bitmap = spin::Mutex::new(Bitmap::<BitAlloc1M>::new(FRAMES_4G));
    scaling(
        &mut g,
        "bitmap-allocator_locked",
        |_| (),
        |_| {
            let f = bitmap.lock().alloc(0).expect("a frame");
            bitmap.lock().free(black_box(f), 0);
        },
    );
    g.finish();
}

/// Workload 2: the 64-byte object pair.
fn slab64(c: &mut Criterion) {
    let mut g = group(c, "smp_slab_64B");
    let heap = with_kmm(KMM_RAM, 2, |slab, heap, cpu0| {
        let cache = slab
            .kmem_cache_create("smp-64", HOT_SIZE, 0, SlabFlags::empty(), None)
            .expect("the bench cache");
        drop(cpu0);
        let cpu = slab.buddy().cpu();
        scaling(
            &mut g,
            "kmm",
            |id| cpu.bind(id).expect("a simulated CPU per thread"),
            |_| {
                let p = slab
                    .kmem_cache_alloc(cache, Gfp::KERNEL)
                    .expect("an object");
                slab.kmem_cache_free(cache, black_box(p)).expect("free");
            },
        );
        heap
    });
    let talc = Locked::talc(heap);
    scaling(
        &mut g,
        "talc_locked",
        |_| Global(talc.heap()),
        |a| pair(a, HOT_SIZE),
    );
    drop(talc);
    let slabm = Locked::slabmalloc(heap);
    scaling(
        &mut g,
        "slabmalloc_locked",
        |_| Global(slabm.heap()),
        |a| pair(a, HOT_SIZE),
    );
    drop(slabm);
    // How well the machine itself scales during the run: each thread on an
    // unlocked talc heap of its own, nothing shared.
    scaling(
        &mut g,
        "reference_talc_per_thread",
        |_| TalcHeap::new(1 << 20),
        |a| pair(a, HOT_SIZE),
    );
    g.finish();
}

/// The shared slots of the mixed workload: a block put in, the one that was
/// there taken out.
struct Slots {
    objs: Vec<AtomicUsize>,
    pages: Vec<AtomicUsize>,
}

impl Slots {
    fn new() -> Slots {
        Slots {
            objs: (0..SLOTS).map(|_| AtomicUsize::new(0)).collect(),
            pages: (0..SLOTS).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Every block still in a slot, objects then pages; the slots empty.
    fn take_all(&self) -> (Vec<usize>, Vec<usize>) {
        let take = |v: &[AtomicUsize]| {
            v.iter()
                .map(|s| s.swap(0, Ordering::Relaxed))
                .filter(|&x| x != 0)
                .collect()
        };
        (take(&self.objs), take(&self.pages))
    }
}

/// The next slot of thread `t` at step counter `k`: each thread walks the
/// ring from its own half, so two threads at the same pace take each
/// other's blocks (cross-CPU frees) without hitting the same slots at once.
fn next_slot(t: usize, k: &mut usize) -> usize {
    *k = k.wrapping_add(1);
    (*k + t * SLOTS / 2) % SLOTS
}

/// Workload 3: an object and a page per step, exchanged through the slots.
fn mix(c: &mut Criterion) {
    let mut g = group(c, "smp_mix_cross_free");
    let heap = with_kmm(KMM_RAM, 2, |slab, heap, cpu0| {
        let cache = slab
            .kmem_cache_create("smp-mix", HOT_SIZE, 0, SlabFlags::empty(), None)
            .expect("the bench cache");
        let buddy = slab.buddy();
        drop(cpu0);
        let cpu = buddy.cpu();
        let slots = Slots::new();
        let free_obj = |o: usize| {
            let o = NonNull::new(with_exposed_provenance_mut::<u8>(o)).expect("not null");
            slab.kmem_cache_free(cache, o).expect("free");
        };
        let free_page = |p: usize| {
            buddy.free_pages(VirtAddr::new(p), 0).expect("free");
        };
        scaling(
            &mut g,
            "kmm",
            |id| {
                (
                    cpu.bind(id).expect("a simulated CPU per thread"),
                    id,
                    0usize,
                )
            },
            |(_, t, k)| {
                let i = next_slot(*t, k);
                let o = slab
                    .kmem_cache_alloc(cache, Gfp::KERNEL)
                    .expect("an object");
                let old = slots.objs[i].swap(o.as_ptr().expose_provenance(), Ordering::AcqRel);
                if old != 0 {
                    free_obj(old);
                }
                let p = buddy.get_free_pages(Gfp::KERNEL, 0).expect("a page");
                let old = slots.pages[i].swap(p.as_usize(), Ordering::AcqRel);
                if old != 0 {
                    free_page(old);
                }
            },
        );
        let _cpu0 = cpu.bind(0).expect("CPU 0");
        let (objs, pages) = slots.take_all();
        objs.into_iter().for_each(free_obj);
        pages.into_iter().for_each(free_page);
        heap
    });
    let obj = Layout::from_size_align(HOT_SIZE, 8).expect("layout");
    let page = Layout::from_size_align(4096, 4096).expect("layout");
    let peer =
        |g: &mut criterion::BenchmarkGroup<'_, _>, name: &str, heap: &(dyn GlobalAlloc + Sync)| {
            let slots = Slots::new();
            scaling(
                g,
                name,
                |t| (t, 0usize),
                |(t, k)| {
                    let i = next_slot(*t, k);
                    for (v, l) in [(&slots.objs, obj), (&slots.pages, page)] {
                        // SAFETY: a valid, non-zero-sized layout.
                        let p = unsafe { heap.alloc(l) };
                        assert!(!p.is_null(), "the heap has room");
                        let old = v[i].swap(p.expose_provenance(), Ordering::AcqRel);
                        if old != 0 {
                            // SAFETY: a live block of this layout, put in this slot
                            // by its allocation.
                            unsafe { heap.dealloc(with_exposed_provenance_mut(old), l) };
                        }
                    }
                },
            );
            let (objs, pages) = slots.take_all();
            for (v, l) in [(objs, obj), (pages, page)] {
                for p in v {
                    // SAFETY: as above.
                    unsafe { heap.dealloc(with_exposed_provenance_mut(p), l) };
                }
            }
        };
    let talc = Locked::talc(heap);
    peer(&mut g, "talc_locked", talc.heap());
    drop(talc);
    let bsa = Locked::buddy(heap);
    peer(&mut g, "buddy_system_allocator_locked", bsa.heap());
    drop(bsa);
    g.finish();
}

criterion_group!(benches, order0, slab64, mix);
criterion_main!(benches);
