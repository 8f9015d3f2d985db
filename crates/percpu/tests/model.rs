//! Model-based test of the dynamic allocator on plain memory (the
//! pure-software backing: Miri runs it).
//!
//! Random sequences of allocations (sizes up to a page, alignments up to a
//! page), frees, bad frees, and injected failures of the backing, on one to
//! four CPUs, against a model that knows every live allocation. After every
//! step:
//!
//! - the same answers (a bad free refused with the error the model
//!   predicts, with nothing changed);
//! - every CPU's copy of every live allocation aligned, inside a live chunk,
//!   disjoint from every other, still holding its stamp (nothing else wrote
//!   it) — and a new allocation zeroed on every CPU;
//! - exact accounting: live allocations and bytes per CPU as the model
//!   says, the allocator's own check (maps, slots, populated pages), the
//!   backing's chunks as the allocator counts them, and at most one empty
//!   chunk after an allocation (frees leave emptied chunks for the next
//!   allocation or shrink to give back).
//!
//! At the end everything is freed and the empty chunks given back: the
//! backing holds no chunk and no page, and dropping the areas returns
//! every area.

mod common;

use std::collections::BTreeMap;

use common::{FakeCpu, Ledger, SoftAreas, SoftBacking, ledger};
use kmm_hal::PAGE_SIZE;
use kmm_percpu::{
    PCPU_MAX_CHUNKS, PCPU_MIN_ALLOC_SIZE, PCPU_UNIT_SIZE, PerCpuAreas, Percpu, PercpuError,
    PercpuPtr, Template, define_per_cpu, setup_per_cpu_areas,
};
use kmm_testkit::model::proptest_config;
use proptest::prelude::*;

define_per_cpu! {
    static STATIC_A: [u32; 16] = [7; 16];
    static STATIC_B: u8 = 1;
}

#[derive(Clone, Debug)]
enum Op {
    /// `__alloc_percpu(size, 1 << align_shift)`.
    Alloc { size: usize, align_shift: u32 },
    /// Free the live allocation with this index (modulo the number live).
    Free { index: usize },
    /// A bad free, the model predicts the error.
    BadFree { kind: u8, pick: usize },
    /// The backing fails its next `n` populate calls (or chunk creation).
    Fail { populate: usize, create: bool },
    /// Give the empty chunks back.
    Shrink,
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![
        4 => 1..=64usize,
        2 => 65..=1024usize,
        1 => 1025..=PAGE_SIZE,
    ];
    prop_oneof![
        6 => (size, 0..=12u32).prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
        4 => any::<usize>().prop_map(|index| Op::Free { index }),
        1 => (0..4u8, any::<usize>()).prop_map(|(kind, pick)| Op::BadFree { kind, pick }),
        1 => (0..3usize, any::<bool>()).prop_map(|(populate, create)| Op::Fail { populate, create }),
        1 => Just(Op::Shrink),
    ]
}

/// A live allocation: size asked, stamp written into every CPU's copy.
#[derive(Clone, Debug)]
struct Live {
    size: usize,
    align: usize,
    stamp: u8,
}

struct Model<'a> {
    cpu: &'a FakeCpu,
    areas: &'a PerCpuAreas<'a, FakeCpu, SoftAreas>,
    pcpu: Percpu<'a, FakeCpu, SoftAreas, SoftBacking>,
    ledger: std::sync::Arc<std::sync::Mutex<Ledger>>,
    live: BTreeMap<usize, Live>,
    freed: Vec<usize>,
    next_stamp: u8,
    /// A populate failure was armed before this step.
    last_fail_populate: bool,
}

impl Model<'_> {
    fn bytes(&self, cookie: usize, cpu: usize, len: usize) -> &[u8] {
        let p = self
            .areas
            .per_cpu_ptr(PercpuPtr::<u8>::from_raw(cookie), cpu)
            .unwrap();
        // SAFETY: a live allocation of at least `len` bytes (the model's).
        unsafe { std::slice::from_raw_parts(p.as_ptr(), len) }
    }

    fn stamp(&self, cookie: usize, cpu: usize, len: usize, v: u8) {
        let p = self
            .areas
            .per_cpu_ptr(PercpuPtr::<u8>::from_raw(cookie), cpu)
            .unwrap();
        // SAFETY: a live allocation of `len` bytes, not referenced elsewhere.
        unsafe { p.as_ptr().write_bytes(v, len) };
    }

    /// The error the model expects for freeing `cookie`, which is not the
    /// start of a live allocation.
    fn expected_bad(&self, cookie: usize) -> PercpuError {
        for (&c, l) in &self.live {
            if (c..c + l.size.next_multiple_of(PCPU_MIN_ALLOC_SIZE)).contains(&cookie) {
                return PercpuError::Interior;
            }
        }
        let base0 = self.areas.template_base();
        if cookie.wrapping_sub(base0) < self.areas.static_size() {
            return PercpuError::StaticArea;
        }
        let in_first = cookie.wrapping_sub(base0) < PCPU_UNIT_SIZE;
        let l = self.ledger.lock().unwrap();
        let in_chunk = l
            .chunks
            .iter()
            .any(|&(_, _, base)| cookie.wrapping_sub(base) < PCPU_UNIT_SIZE);
        if in_first || in_chunk {
            PercpuError::NotLive
        } else {
            PercpuError::Foreign
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let before = self.pcpu.stats();
        match *op {
            Op::Alloc { size, align_shift } => {
                let align = 1 << align_shift;
                // Run on some CPU: allocation is not tied to one.
                self.cpu.switch(size % self.cpu_count());
                match self.pcpu.__alloc_percpu(size, align) {
                    Ok(p) => {
                        let c = p.raw();
                        prop_assert!(!self.live.contains_key(&c), "handed out twice: {c:#x}");
                        let stamp = self.next_stamp;
                        self.next_stamp = self.next_stamp.wrapping_add(1).max(1);
                        for cpu in 0..self.cpu_count() {
                            prop_assert!(
                                self.bytes(c, cpu, size).iter().all(|&b| b == 0),
                                "not zeroed on CPU {cpu}"
                            );
                            self.stamp(c, cpu, size, stamp);
                        }
                        self.live.insert(c, Live { size, align, stamp });
                        self.freed.retain(|&f| f != c);
                    }
                    Err(PercpuError::OutOfMemory) => {
                        let l = self.ledger.lock().unwrap();
                        let injected = l.fail_create || before.chunks == PCPU_MAX_CHUNKS;
                        drop(l);
                        prop_assert!(
                            injected || self.last_fail_populate,
                            "OutOfMemory with room: {before:?}"
                        );
                        let after = self.pcpu.stats();
                        prop_assert_eq!(after.allocations, before.allocations);
                        prop_assert_eq!(after.used_bytes, before.used_bytes);
                    }
                    Err(e) => prop_assert!(false, "alloc({size}, {align}): {e}"),
                }
                // Frees leave emptied chunks; an allocation gives back all
                // but one spare, whatever its outcome.
                let s = self.pcpu.stats();
                prop_assert!(s.empty_chunks <= 1, "after an allocation: {s:?}");
                prop_assert_eq!(
                    s.chunks as u64 + s.destroyed - before.destroyed,
                    before.chunks as u64 + s.created - before.created
                );
            }
            Op::Free { index } => {
                if self.live.is_empty() {
                    return Ok(());
                }
                let c = *self.live.keys().nth(index % self.live.len()).unwrap();
                let l = self.live.remove(&c).unwrap();
                for cpu in 0..self.cpu_count() {
                    prop_assert!(
                        self.bytes(c, cpu, l.size).iter().all(|&b| b == l.stamp),
                        "CPU {cpu}'s copy of {c:#x} was overwritten"
                    );
                }
                self.pcpu.free_percpu(PercpuPtr::<u8>::from_raw(c)).unwrap();
                self.freed.push(c);
            }
            Op::BadFree { kind, pick } => {
                let cookie = match kind {
                    // Inside a live allocation.
                    0 if !self.live.is_empty() => {
                        let (&c, l) = self.live.iter().nth(pick % self.live.len()).unwrap();
                        c + 1 + pick % l.size.max(2).saturating_sub(1).max(1)
                    }
                    // Freed before (twice).
                    1 if !self.freed.is_empty() => self.freed[pick % self.freed.len()],
                    // A static variable.
                    2 => {
                        if pick % 2 == 0 {
                            self.areas.ptr_of(&STATIC_A).unwrap().raw()
                        } else {
                            self.areas.ptr_of(&STATIC_B).unwrap().raw()
                        }
                    }
                    // Anywhere.
                    _ => pick,
                };
                if self.live.contains_key(&cookie) {
                    return Ok(());
                }
                let want = self.expected_bad(cookie);
                let got = self.pcpu.free_percpu(PercpuPtr::<u8>::from_raw(cookie));
                prop_assert_eq!(got, Err(want), "free_percpu({:#x})", cookie);
                prop_assert_eq!(
                    self.pcpu.stats(),
                    before,
                    "a refused free changed something"
                );
            }
            Op::Fail { populate, create } => {
                let mut l = self.ledger.lock().unwrap();
                l.fail_populate = populate;
                l.fail_create = create;
            }
            Op::Shrink => {
                self.pcpu.shrink().unwrap();
                prop_assert_eq!(self.pcpu.stats().empty_chunks, 0);
            }
        }
        self.last_fail_populate = false;
        Ok(())
    }

    fn cpu_count(&self) -> usize {
        self.areas.possible_cpus()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        self.pcpu.check().map_err(TestCaseError::fail)?;
        let s = self.pcpu.stats();
        prop_assert_eq!(s.allocations, self.live.len());
        let used: usize = self
            .live
            .values()
            .map(|l| l.size.next_multiple_of(PCPU_MIN_ALLOC_SIZE))
            .sum();
        prop_assert_eq!(s.used_bytes, used);
        let l = self.ledger.lock().unwrap();
        prop_assert_eq!(s.chunks, l.chunks.len() + 1, "chunks: allocator vs backing");
        prop_assert_eq!(s.populated_pages, l.pages);
        drop(l);
        for cpu in 0..self.cpu_count() {
            let mut spans: Vec<(usize, usize)> = self
                .live
                .iter()
                .map(|(&c, l)| {
                    let a = self
                        .areas
                        .per_cpu_ptr(PercpuPtr::<u8>::from_raw(c), cpu)
                        .unwrap()
                        .as_ptr()
                        .addr();
                    (a, a + l.size)
                })
                .collect();
            for (&c, l) in &self.live {
                let a = self
                    .areas
                    .per_cpu_ptr(PercpuPtr::<u8>::from_raw(c), cpu)
                    .unwrap()
                    .as_ptr()
                    .addr();
                prop_assert!(
                    a.is_multiple_of(l.align),
                    "{a:#x} not aligned to {}",
                    l.align
                );
            }
            spans.sort_unstable();
            for w in spans.windows(2) {
                prop_assert!(
                    w[0].1 <= w[1].0,
                    "CPU {cpu}: {:x?} overlaps {:x?}",
                    w[0],
                    w[1]
                );
            }
        }
        Ok(())
    }
}

fn run(cpus: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let cpu = FakeCpu::new(cpus);
    let ledger = ledger();
    let vars = [STATIC_A.desc(), STATIC_B.desc()];
    let areas =
        setup_per_cpu_areas(&cpu, &Template::from_vars(&vars), SoftAreas(ledger.clone())).unwrap();
    {
        let pcpu = Percpu::new(&areas, SoftBacking(ledger.clone())).unwrap();
        let mut m = Model {
            cpu: &cpu,
            areas: &areas,
            pcpu,
            ledger: ledger.clone(),
            live: BTreeMap::new(),
            freed: Vec::new(),
            next_stamp: 1,
            last_fail_populate: false,
        };
        for op in ops {
            {
                let l = m.ledger.lock().unwrap();
                m.last_fail_populate = l.fail_populate > 0;
            }
            m.apply(op)?;
            m.check()?;
        }
        // Everything back.
        m.ledger.lock().unwrap().fail_populate = 0;
        let keys: Vec<usize> = m.live.keys().copied().collect();
        for c in keys {
            m.pcpu.free_percpu(PercpuPtr::<u8>::from_raw(c)).unwrap();
        }
        m.live.clear();
        m.check()?;
        m.pcpu.shrink().unwrap();
        let s = m.pcpu.stats();
        prop_assert_eq!((s.chunks, s.allocations, s.used_bytes), (1, 0, 0));
        let l = ledger.lock().unwrap();
        prop_assert!(
            l.chunks.is_empty() && l.pages == 0,
            "backing still holds {l:?}"
        );
        // The statics were not touched by any of it.
        for c in 0..cpus {
            let a = areas.per_cpu_slot(&STATIC_A, c).unwrap();
            prop_assert!(!a.is_busy());
        }
    }
    drop(areas);
    prop_assert_eq!(ledger.lock().unwrap().areas, 0, "areas not given back");
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config(256, 6))]
    #[test]
    fn allocator_matches_the_model(
        cpus in 1usize..=4,
        ops in prop::collection::vec(op(), 1..if cfg!(miri) { 16 } else { 120 }),
    ) {
        run(cpus, &ops)?;
    }
}

#[test]
fn many_chunks_fill_and_drain() {
    // Page-sized allocations fill chunk after chunk, up to the table's end;
    // then everything drains back.
    let per_chunk = PCPU_UNIT_SIZE / PAGE_SIZE;
    let n = if cfg!(miri) {
        per_chunk + 2
    } else {
        PCPU_MAX_CHUNKS * per_chunk
    };
    let ops: Vec<Op> = (0..n)
        .map(|_| Op::Alloc {
            size: PAGE_SIZE,
            align_shift: 12,
        })
        .chain((0..n).map(|i| Op::Free { index: i * 7 }))
        .collect();
    run(2, &ops).unwrap();
}
