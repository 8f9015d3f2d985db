//! The slab workloads: the hot pair, random action sequences, heap
//! efficiency and two threads at once.

use core::ops::RangeInclusive;
use core::ptr::NonNull;
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::XorShift;

use super::*;

/// Hot path: one `size`-byte allocation and its free.
#[inline]
pub fn pair<A: ObjAlloc + ?Sized>(a: &mut A, size: usize) {
    let p = a.alloc(size).expect("the heap has room");
    // SAFETY: just allocated for `size` bytes.
    unsafe { a.free(black_box(p), size) };
}

/// One step of a random workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Allocate this many bytes and append the block to the live ones.
    Alloc(usize),
    /// Free the live block at this index (`swap_remove`).
    Free(usize),
    /// Resize the live block at this index to this many bytes.
    Realloc(usize, usize),
}

/// A fixed-seed sequence of `steps` random actions — allocate a block of a
/// size drawn uniformly from `sizes`, free a random live block, or (with
/// `realloc`, a third of the steps) resize a random live block to a size drawn
/// from `sizes` — followed by the frees of the blocks still live, so it starts
/// and ends with nothing allocated. An allocation or free step frees with
/// probability `live / max_live`: the live set never exceeds `max_live` and
/// hovers around half of it.
pub fn random_actions(
    seed: u64,
    steps: usize,
    sizes: RangeInclusive<usize>,
    max_live: usize,
    realloc: bool,
) -> Vec<Action> {
    let (lo, hi) = sizes.into_inner();
    assert!(0 < lo && lo <= hi && max_live > 0);
    let mut rng = XorShift::new(seed);
    let size = move |rng: &mut XorShift| lo + rng.below(hi - lo + 1);
    let mut out = Vec::with_capacity(steps + max_live);
    let mut live = 0usize;
    for _ in 0..steps {
        if realloc && live > 0 && rng.below(3) == 0 {
            out.push(Action::Realloc(rng.below(live), size(&mut rng)));
        } else if rng.below(max_live) < live {
            live -= 1;
            out.push(Action::Free(rng.below(live + 1)));
        } else {
            live += 1;
            out.push(Action::Alloc(size(&mut rng)));
        }
    }
    while live > 0 {
        out.push(Action::Free(rng.below(live)));
        live -= 1;
    }
    out
}

/// Runs a sequence from [`random_actions`]; `live` is scratch space (emptied
/// first, empty again at the end). Panics if an allocation fails.
pub fn run_actions<A: ObjAlloc + ?Sized>(
    a: &mut A,
    actions: &[Action],
    live: &mut Vec<(NonNull<u8>, usize)>,
) {
    live.clear();
    for &act in actions {
        match act {
            Action::Alloc(size) => {
                let p = a.alloc(size).expect("the random workload fits");
                live.push((black_box(p), size));
            }
            Action::Free(i) => {
                let (p, size) = live.swap_remove(i);
                // SAFETY: a live block of `size` bytes, removed from `live`.
                unsafe { a.free(p, size) };
            }
            Action::Realloc(i, new) => {
                let (p, old) = live[i];
                // SAFETY: a live block of `old` bytes; replaced in `live` below.
                let q = unsafe { a.realloc(p, old, new) }.expect("the random workload fits");
                live[i] = (black_box(q), new);
            }
        }
    }
    debug_assert!(live.is_empty());
}

/// Runs `work` `iters` times on each of two threads at once and returns the
/// wall time from their common start to the end of the slower one. Each
/// thread first calls `setup(thread index)` (to bind its simulated CPU, say)
/// outside the timing, and keeps the result until it is done.
pub fn two_threads<S>(
    iters: u64,
    setup: impl Fn(usize) -> S + Sync,
    work: impl Fn(&mut S) + Sync,
) -> Duration {
    threads(2, iters, setup, work)
}

/// [`two_threads`] on `count` threads: `work` `iters` times on each, the
/// wall time from their common start to the end of the slowest.
pub fn threads<S>(
    count: usize,
    iters: u64,
    setup: impl Fn(usize) -> S + Sync,
    work: impl Fn(&mut S) + Sync,
) -> Duration {
    let barrier = Barrier::new(count + 1);
    std::thread::scope(|s| {
        for id in 0..count {
            let (barrier, setup, work) = (&barrier, &setup, &work);
            s.spawn(move || {
                let mut state = setup(id);
                barrier.wait();
                for _ in 0..iters {
                    work(&mut state);
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}
