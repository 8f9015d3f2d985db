//! The search is O(log n): among 100 000 free ranges (500 under Miri) a fit
//! is found after visiting a number of tree nodes bounded by a multiple of
//! log2(n). Nothing is timed; the descent counts the nodes it visits.

mod common;

use common::NodePool;
use kmm_hal::PAGE_SIZE;
use kmm_vmalloc::free_area::FreeAreas;

const N: usize = if cfg!(miri) { 500 } else { 100_000 };
const BASE: usize = 0x1000_0000;

/// A small deterministic generator (xorshift), so no test depends on a seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn finding_a_fit_among_many_free_ranges_visits_o_log_n_nodes() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // N free ranges of 1..=8 pages, each followed by one busy page; the last
    // is the only one of 16 pages.
    let sizes: Vec<usize> = (0..N)
        .map(|i| if i == N - 1 { 16 } else { 1 + rng.below(8) })
        .collect();
    let pages: usize = sizes.iter().map(|s| s + 1).sum();
    let end = BASE + pages * PAGE_SIZE;
    let mut pool = NodePool::default();
    let mut areas = FreeAreas::new(BASE, end, pool.take()).unwrap();
    let all = areas
        .alloc(end - BASE, PAGE_SIZE, BASE, end, &mut None)
        .unwrap();
    assert_eq!(all.addr, BASE);
    pool.give_all(all.released);
    let mut at = BASE;
    for &s in &sizes {
        let released = areas.free(at, s * PAGE_SIZE, pool.take()).unwrap();
        assert!(released.is_empty());
        at += (s + 1) * PAGE_SIZE;
    }
    assert_eq!(areas.nodes(), N);
    if !cfg!(miri) {
        areas.check().unwrap();
    }

    let log2n = N.ilog2() as usize + 1;
    let bound = 4 * log2n + 8;
    let mut worst = 0;
    let mut check = |areas: &FreeAreas, pages: usize, align: usize, vstart: usize| {
        let fit = areas.find(pages * PAGE_SIZE, align, vstart, end).unwrap();
        assert!(fit.addr.is_some(), "{pages} pages from {vstart:#x}");
        assert!(
            fit.visited <= bound,
            "{} visits for n = {N} (bound {bound})",
            fit.visited
        );
        worst = worst.max(fit.visited);
    };
    // Only the last range holds 9..=16 pages: the descent must skip the
    // rest without walking it.
    for pages in 9..=16 {
        check(&areas, pages, PAGE_SIZE, BASE);
    }
    // Small sizes from random starting points, and larger alignments.
    for _ in 0..if cfg!(miri) { 20 } else { 2_000 } {
        let vstart = BASE + rng.below(pages - 20) * PAGE_SIZE;
        check(&areas, 1 + rng.below(8), PAGE_SIZE << rng.below(3), vstart);
    }
    std::println!("worst visits {worst} for n = {N}, bound {bound}");

    // And the allocation itself still finds the far range.
    let far = areas
        .alloc(16 * PAGE_SIZE, PAGE_SIZE, BASE, end, &mut None)
        .unwrap();
    assert_eq!(far.addr, end - 17 * PAGE_SIZE);
    pool.give_all(far.released);
    pool.give_all(areas.into_nodes());
    assert_eq!(pool.outstanding, 0);
}
