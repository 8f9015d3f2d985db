//! Heap efficiency: how much of a heap of the same size each allocator hands
//! out before its first failure. Not a timing; the `heap_efficiency` binary
//! prints the table.
//!
//! Three ways of asking, one column each:
//! - [`fill_until_failure`] with sizes uniform in 1–200 bytes, and in
//!   1–30 000 bytes (8-byte alignment): allocate until the first failure;
//! - [`talc_method`], talc's own benchmark: random allocations (sizes
//!   `U[4, U[16, 10 000))`, alignments `8 << (tz / 2)` of a random 16-bit
//!   word), frees and reallocations (to `U[1, 100 000)`) until the first
//!   failure, the bytes live then, averaged over rounds.
//!
//! kmm is measured twice: the umbrella's [`::kmm::GlobalHeap`] with its
//! defaults (what a kernel installs as `#[global_allocator]`), and
//! `kmm-slab`'s `kmalloc` alone.

use core::alloc::{GlobalAlloc, Layout};
use core::ops::RangeInclusive;
use core::ptr::NonNull;

use ::kmm::GlobalHeap;
use kmm_mock::{Backing, CpuBinding};
use kmm_page_frame::{Region, RegionKind};
use kmm_slab::KmallocSizes;
use kmm_testkit::{MockPlatform, TestMachine};

use crate::{KmmPath, XorShift};

use super::*;

/// Heap efficiency: allocates blocks of sizes drawn uniformly from `sizes`
/// (fixed seed) until the first allocation fails, then frees them all; returns
/// the bytes requested by the successful allocations. `live` is scratch space.
pub fn fill_until_failure<A: ObjAlloc + ?Sized>(
    a: &mut A,
    seed: u64,
    sizes: RangeInclusive<usize>,
    live: &mut Vec<(NonNull<u8>, usize)>,
) -> usize {
    let (lo, hi) = sizes.into_inner();
    assert!(0 < lo && lo <= hi);
    let mut rng = XorShift::new(seed);
    live.clear();
    let mut bytes = 0;
    loop {
        let size = lo + rng.below(hi - lo + 1);
        match a.alloc(size) {
            Some(p) => {
                live.push((p, size));
                bytes += size;
            }
            None => break,
        }
    }
    for (p, size) in live.drain(..) {
        // SAFETY: live blocks of these sizes, each freed once.
        unsafe { a.free(p, size) };
    }
    bytes
}

/// Largest first request of [`talc_method`] (talc's `HE_MAX_ALLOC_SIZE`).
pub const TALC_MAX_ALLOC: usize = 10_000;
/// Reallocations of [`talc_method`] go up to this many times
/// [`TALC_MAX_ALLOC`] (talc's `HE_MAX_REALLOC_SIZE_MULTI`).
pub const TALC_REALLOC_MULTI: usize = 10;

/// talc's heap-efficiency method on `a`: `rounds` times, random actions — an
/// allocation half the time, a free of a random live block a tenth, a
/// reallocation of one to `U[1, 100 000)` bytes the rest — until an
/// allocation or reallocation fails; then the bytes live are counted and
/// everything freed. Returns the bytes live at the failures, summed over the
/// rounds (divide by `rounds × heap`). Sizes `U[4, U[16, 10 000))`,
/// alignments `8 << (tz / 2)` of a random 16-bit word (75 % 8, 19 % 16, …,
/// up to 2 KiB).
pub fn talc_method<A: GlobalAlloc + ?Sized>(a: &A, seed: u64, rounds: usize) -> usize {
    let mut rng = XorShift::new(seed);
    let mut live: Vec<(*mut u8, Layout)> = Vec::new();
    let mut used = 0;
    for _ in 0..rounds {
        loop {
            match rng.below(10) {
                0..=4 => {
                    let cap = 16 + rng.below(TALC_MAX_ALLOC - 16);
                    let size = 4 + rng.below(cap - 4);
                    let word = rng.below(1 << 16) as u16;
                    let align = 8usize << (word.trailing_zeros() / 2);
                    let layout = Layout::from_size_align(size, align).expect("a valid layout");
                    // SAFETY: a non-zero size.
                    let p = unsafe { a.alloc(layout) };
                    if p.is_null() {
                        break;
                    }
                    live.push((p, layout));
                }
                5 => {
                    if !live.is_empty() {
                        let (p, layout) = live.swap_remove(rng.below(live.len()));
                        // SAFETY: a live block with its layout, freed once.
                        unsafe { a.dealloc(p, layout) };
                    }
                }
                _ => {
                    if !live.is_empty() {
                        let i = rng.below(live.len());
                        let new = 1 + rng.below(TALC_MAX_ALLOC * TALC_REALLOC_MULTI - 1);
                        let (p, layout) = live[i];
                        // SAFETY: a live block with its layout; a non-zero new
                        // size that does not overflow with the alignment.
                        let q = unsafe { a.realloc(p, layout, new) };
                        if q.is_null() {
                            break;
                        }
                        let layout =
                            Layout::from_size_align(new, layout.align()).expect("a valid layout");
                        live[i] = (q, layout);
                    }
                }
            }
        }
        used += live.iter().map(|(_, l)| l.size()).sum::<usize>();
        for (p, layout) in live.drain(..) {
            // SAFETY: live blocks with their layouts, each freed once.
            unsafe { a.dealloc(p, layout) };
        }
    }
    used
}

/// The allocators of the heap-efficiency table, in its order.
pub const EFFICIENCY_NAMES: [&str; 6] = [
    "kmm `GlobalHeap` (the umbrella's default)",
    "kmm `kmalloc` (kmm-slab alone)",
    "slabmalloc",
    "talc",
    "linked_list_allocator",
    "buddy_system_allocator",
];

/// The umbrella's global heap with `sizes` on a fresh `ram`-byte mock
/// machine set up as [`crate::kmm_machine`]'s (one CPU, one usable region,
/// no kernel image, no page reserve), and the calling thread's binding to
/// its CPU. Leaked: a [`GlobalHeap`] is `'static`.
pub fn global_heap(
    ram: usize,
    sizes: KmallocSizes,
) -> (&'static GlobalHeap<MockPlatform>, CpuBinding) {
    let heap: &'static GlobalHeap<MockPlatform> = Box::leak(Box::new(GlobalHeap::new()));
    let (machine, cross, mm) = TestMachine::builder()
        .ram(ram)
        .cpus(1)
        .backing(Backing::Mmap)
        .memory_map(vec![Region::new(0, ram as u64, RegionKind::Usable)])
        .without_kernel_image()
        .buddy_config(KmmPath::PerCpu.config())
        // SAFETY: the machine and the cross-CPU call are leaked below: the
        // manager lives as long as the process.
        .boot_mm(|p, params| unsafe { heap.init(p, params.kmalloc_sizes(sizes)) }.map(|_| ()));
    mm.expect("the memory manager boots");
    let cpu = machine.cpu().bind(0).expect("CPU 0 is free");
    core::mem::forget((machine, cross));
    (heap, cpu)
}

/// Heap efficiency of every allocator for sizes drawn from `sizes`: kmm on a
/// `ram`-byte machine, the peers on heaps of the size kmm's buddy allocator
/// can hand out before the slab allocator exists ([`with_kmm`]). Returns that
/// heap size and, in [`EFFICIENCY_NAMES`] order, the bytes each allocator
/// handed out before its first failure.
pub fn efficiency(ram: usize, seed: u64, sizes: RangeInclusive<usize>) -> (usize, [usize; 6]) {
    let mut live = Vec::new();
    let (heap, kmalloc) = with_kmm(ram, 1, |slab, heap, _cpu0| {
        let got = fill_until_failure(&mut KmmSlab::new(slab), seed, sizes.clone(), &mut live);
        (heap, got)
    });
    let global = {
        let (g, _cpu) = global_heap(ram, KmallocSizes::default());
        fill_until_failure(&mut Global(g), seed, sizes.clone(), &mut live)
    };
    let got = [
        global,
        kmalloc,
        fill_until_failure(
            &mut SlabMallocHeap::new(heap),
            seed,
            sizes.clone(),
            &mut live,
        ),
        fill_until_failure(&mut TalcHeap::new(heap), seed, sizes.clone(), &mut live),
        fill_until_failure(
            &mut LinkedListHeap::new(heap),
            seed,
            sizes.clone(),
            &mut live,
        ),
        fill_until_failure(&mut BuddyHeap::new(heap), seed, sizes, &mut live),
    ];
    (heap, got)
}

/// [`talc_method`] for every allocator of [`EFFICIENCY_NAMES`] (`None` for
/// slabmalloc: the benches' wrapper serves 8-byte alignment only), each
/// over `rounds` rounds on the heap of [`efficiency`]; returns that heap
/// size and the bytes live at the failures, summed over the rounds.
pub fn efficiency_talc_method(ram: usize, seed: u64, rounds: usize) -> (usize, [Option<usize>; 6]) {
    let (heap, kmalloc) = with_kmm(ram, 1, |slab, heap, _cpu0| {
        (
            heap,
            talc_method(&kmm_slab::KmallocHeap::new(slab), seed, rounds),
        )
    });
    let global = {
        let (g, _cpu) = global_heap(ram, KmallocSizes::default());
        talc_method(g, seed, rounds)
    };
    let got = [
        Some(global),
        Some(kmalloc),
        None,
        Some(talc_method(Locked::talc(heap).heap(), seed, rounds)),
        Some(talc_method(Locked::linked_list(heap).heap(), seed, rounds)),
        Some(talc_method(Locked::buddy(heap).heap(), seed, rounds)),
    ];
    (heap, got)
}
