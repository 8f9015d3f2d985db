//! Model-based test of `FreeAreas` against an interval model: a `BTreeMap`
//! of free ranges, searched by linear scan (the model only). After every
//! step: the same answers, the same ranges (so no overlap and everything
//! merged), exact totals, the tree's checker (cached sizes included), and
//! every node accounted for. At the end everything is freed: one range again,
//! with every node but one given back.

mod common;

use std::collections::BTreeMap;

use common::NodePool;
use kmm_hal::PAGE_SIZE;
use kmm_vmalloc::free_area::{AllocError, FreeAreas, FreeError, OwnedNode};
use proptest::prelude::*;

const BASE: usize = 0x4000_0000;
const PAGES: usize = 192;
const END: usize = BASE + PAGES * PAGE_SIZE;

#[derive(Clone, Debug)]
enum Op {
    /// Allocate `pages` aligned to `1 << align_shift` pages (shift 0 also
    /// tries a sub-page alignment), in a window of pages `[lo, hi)` or the
    /// whole span; `preload` fills the spare slot first.
    Alloc {
        pages: usize,
        align_shift: u32,
        window: Option<(usize, usize)>,
        preload: bool,
    },
    /// Free the allocation with this index (modulo the number live), all of
    /// it or, with `part`, only its first `part` pages.
    Free { index: usize, part: Option<usize> },
    /// A bad free: it must fail with nothing changed.
    BadFree { kind: u8, pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let window = prop::option::weighted(
        0.3,
        (0..PAGES, 1..=PAGES).prop_map(|(a, b)| (a.min(b - 1), b.max(a + 1))),
    );
    prop_oneof![
        5 => (1..=12usize, 0..=4u32, window, any::<bool>()).prop_map(|(pages, align_shift, window, preload)| Op::Alloc { pages, align_shift, window, preload }),
        4 => (any::<usize>(), prop::option::weighted(0.3, 1..=6usize)).prop_map(|(index, part)| Op::Free { index, part }),
        1 => (0..5u8, any::<usize>()).prop_map(|(kind, pick)| Op::BadFree { kind, pick }),
    ]
}

/// The free ranges, `start -> end`.
#[derive(Clone, Debug, PartialEq)]
struct Model {
    free: BTreeMap<usize, usize>,
}

impl Model {
    /// The rule of `FreeAreas::alloc`, by linear scan: the lowest aligned
    /// address in the window whose block lies in a free range that holds
    /// `vstart` or is at least the search length.
    fn find(&self, size: usize, align: usize, vstart: usize, vend: usize) -> Option<usize> {
        let align = align.max(PAGE_SIZE);
        let length = if align > PAGE_SIZE {
            size + align - 1
        } else {
            size
        };
        let up = |x: usize| x.div_ceil(align) * align;
        for (&s, &e) in &self.free {
            let a = if s <= vstart && vstart < e {
                up(vstart)
            } else if s > vstart && e - s >= length {
                up(s)
            } else {
                continue;
            };
            if a + size <= e.min(vend) {
                return Some(a);
            }
        }
        None
    }

    /// The range holding `addr`.
    fn holding(&self, addr: usize) -> Option<(usize, usize)> {
        self.free
            .range(..=addr)
            .next_back()
            .map(|(&s, &e)| (s, e))
            .filter(|&(_, e)| e > addr)
    }

    fn take(&mut self, a: usize, size: usize) {
        let (s, e) = self.holding(a).expect("taken from a free range");
        self.free.remove(&s);
        if s < a {
            self.free.insert(s, a);
        }
        if a + size < e {
            self.free.insert(a + size, e);
        }
    }

    /// Gives `[a, a + size)` back; returns how many neighbours it joined.
    fn give(&mut self, a: usize, size: usize) -> usize {
        let (mut s, mut e) = (a, a + size);
        let mut joined = 0;
        if let Some((&ps, _)) = self.free.range(..a).next_back().filter(|&(_, &pe)| pe == a) {
            self.free.remove(&ps);
            s = ps;
            joined += 1;
        }
        if let Some(ne) = self.free.remove(&e) {
            e = ne;
            joined += 1;
        }
        self.free.insert(s, e);
        joined
    }
}

struct Harness {
    areas: FreeAreas,
    model: Model,
    /// Live allocations, `(start, size)`.
    live: Vec<(usize, usize)>,
    spare: Option<OwnedNode>,
    pool: NodePool,
}

impl Harness {
    fn new() -> Self {
        let mut pool = NodePool::default();
        let areas = FreeAreas::new(BASE, END, pool.take()).expect("a valid span");
        Self {
            areas,
            model: Model {
                free: BTreeMap::from([(BASE, END)]),
            },
            live: Vec::new(),
            spare: None,
            pool,
        }
    }

    fn alloc(
        &mut self,
        size: usize,
        align: usize,
        vstart: usize,
        vend: usize,
        preload: bool,
    ) -> Result<(), TestCaseError> {
        if preload && self.spare.is_none() {
            self.spare = Some(self.pool.take());
        }
        let want = self.model.find(size, align, vstart, vend);
        let fit = self
            .areas
            .find(size, align, vstart, vend)
            .expect("valid arguments");
        prop_assert_eq!(fit.addr, want);
        let nodes_before = self.areas.nodes();
        let had_spare = self.spare.is_some();
        let mut res = self.areas.alloc(size, align, vstart, vend, &mut self.spare);
        let Some(a) = want else {
            prop_assert_eq!(res.err(), Some(AllocError::NoSpace));
            return Ok(());
        };
        let (s, e) = self.model.holding(a).expect("the fit is free");
        let split = s < a && a + size < e;
        if split && !had_spare {
            // Linux's path: preload a node and try again.
            prop_assert_eq!(res.as_ref().err(), Some(&AllocError::NeedSpare));
            prop_assert_eq!(self.areas.nodes(), nodes_before);
            self.check()?;
            self.spare = Some(self.pool.take());
            res = self.areas.alloc(size, align, vstart, vend, &mut self.spare);
        }
        let got = res.map_err(|e| TestCaseError::fail(format!("alloc failed: {e}")))?;
        prop_assert_eq!(got.addr, a);
        let full = s == a && a + size == e;
        prop_assert_eq!(got.released.len(), usize::from(full));
        self.pool.give_all(got.released);
        if split {
            prop_assert!(self.spare.is_none(), "the split took the spare");
            prop_assert_eq!(self.areas.nodes(), nodes_before + 1);
        } else {
            prop_assert_eq!(self.spare.is_some(), had_spare);
        }
        self.model.take(a, size);
        self.live.push((a, size));
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Alloc {
                pages,
                align_shift,
                window,
                preload,
            } => {
                let size = pages * PAGE_SIZE;
                let align = if align_shift == 0 && preload {
                    64
                } else {
                    PAGE_SIZE << align_shift
                };
                let (vstart, vend) = window.map_or((BASE, END), |(lo, hi)| {
                    (BASE + lo * PAGE_SIZE, BASE + hi * PAGE_SIZE)
                });
                self.alloc(size, align, vstart, vend, preload)?;
            }
            Op::Free { index, part } => {
                if self.live.is_empty() {
                    return Ok(());
                }
                let i = index % self.live.len();
                let (a, size) = self.live[i];
                let freed = part.map_or(size, |p| (p * PAGE_SIZE).min(size));
                if freed == size {
                    self.live.swap_remove(i);
                } else {
                    self.live[i] = (a + freed, size - freed);
                }
                let joined = self.model.give(a, freed);
                let node = self.pool.take();
                let released = self
                    .areas
                    .free(a, freed, node)
                    .map_err(|(e, _)| TestCaseError::fail(format!("free failed: {e}")))?;
                prop_assert_eq!(released.len(), joined);
                self.pool.give_all(released);
            }
            Op::BadFree { kind, pick } => {
                let before = self.model.clone();
                let (addr, size, err) = match kind {
                    0 => (BASE, 0, FreeError::ZeroSize),
                    1 => (BASE + 1, PAGE_SIZE, FreeError::Unaligned),
                    2 => (END, PAGE_SIZE, FreeError::OutOfRange),
                    3 => (BASE - PAGE_SIZE, 2 * PAGE_SIZE, FreeError::OutOfRange),
                    _ => {
                        // A double free: a page that is free already, maybe
                        // with a live page on each side.
                        if self.model.free.is_empty() {
                            return Ok(());
                        }
                        let (&s, &e) = self
                            .model
                            .free
                            .iter()
                            .nth(pick % self.model.free.len())
                            .unwrap();
                        let pages = (e - s) / PAGE_SIZE;
                        let page = s + (pick / 7 % pages) * PAGE_SIZE;
                        let lo = page.saturating_sub(PAGE_SIZE).max(BASE);
                        let hi = (page + 2 * PAGE_SIZE).min(END);
                        if pick % 2 == 0 {
                            (page, PAGE_SIZE, FreeError::Overlap)
                        } else {
                            (lo, hi - lo, FreeError::Overlap)
                        }
                    }
                };
                let nodes = self.areas.nodes();
                let node = self.pool.take();
                let (got, node) = self
                    .areas
                    .free(addr, size, node)
                    .expect_err("a bad free is refused");
                prop_assert_eq!(got, err);
                self.pool.give(node);
                prop_assert_eq!(&self.model, &before);
                prop_assert_eq!(self.areas.nodes(), nodes);
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        self.areas
            .check()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let ranges: Vec<(usize, usize)> = self.areas.iter().map(|r| (r.start, r.end)).collect();
        let model: Vec<(usize, usize)> = self.model.free.iter().map(|(&s, &e)| (s, e)).collect();
        prop_assert_eq!(ranges, model);
        let free: usize = self.model.free.iter().map(|(s, e)| e - s).sum();
        prop_assert_eq!(self.areas.free_bytes(), free);
        let live: usize = self.live.iter().map(|l| l.1).sum();
        prop_assert_eq!(free + live, END - BASE);
        let largest = self
            .model
            .free
            .iter()
            .map(|(s, e)| e - s)
            .max()
            .unwrap_or(0);
        prop_assert_eq!(self.areas.largest(), largest);
        prop_assert_eq!(self.areas.nodes(), self.model.free.len());
        prop_assert_eq!(
            self.pool.outstanding,
            self.areas.nodes() + usize::from(self.spare.is_some())
        );
        Ok(())
    }

    /// Frees everything: one range again, every node but one given back.
    fn finish(mut self) -> Result<(), TestCaseError> {
        while let Some((a, size)) = self.live.pop() {
            self.model.give(a, size);
            let node = self.pool.take();
            let released = self
                .areas
                .free(a, size, node)
                .map_err(|(e, _)| TestCaseError::fail(e.to_string()))?;
            self.pool.give_all(released);
            self.check()?;
        }
        prop_assert_eq!(self.areas.iter().collect::<Vec<_>>(), vec![BASE..END]);
        prop_assert_eq!(self.areas.free_bytes(), END - BASE);
        prop_assert_eq!(self.pool.outstanding, 1 + usize::from(self.spare.is_some()));
        if let Some(spare) = self.spare.take() {
            self.pool.give(spare);
        }
        let back = self.pool.give_all(self.areas.into_nodes());
        prop_assert_eq!(back, 1);
        prop_assert_eq!(self.pool.outstanding, 0);
        Ok(())
    }
}

proptest! {
    #![proptest_config(kmm_testkit::model::proptest_config(256, 3))]

    #[test]
    fn free_areas_match_the_interval_model(ops in prop::collection::vec(op(), if cfg!(miri) { 1..40 } else { 1..300 })) {
        let mut h = Harness::new();
        h.check()?;
        for op in &ops {
            h.apply(op)?;
            h.check()?;
        }
        h.finish()?;
    }
}
