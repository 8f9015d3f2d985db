//! Model-based property test: random sequences of `kmap`, `try_kmap`,
//! `kunmap`, `kmap_local_page`, `kmap_atomic` and their unmaps (in order,
//! out of order, of the wrong kind) against a model — each page's number of
//! persistent users and the CPU's stack of local mappings.
//!
//! Invariants checked after every step:
//! - the result is the one the model predicts (errors included);
//! - `Pkmap::check` passes (counts, page tables and descriptors agree);
//! - a page with users has one address, the same on every `kmap`, and no two
//!   pages share one; the entry's users are the model's;
//! - the local depth, the preemption count and the page-fault-disable count
//!   are the model's stack's;
//! - every held mapping shows its page's stamp through a checked read.
//!
//! Before each sequence a random number of other pages is mapped and
//! unmapped, so the search for a free entry wraps (and flushes) at random
//! points of the sequence.

mod common;

use common::{MockPkmap, TestTlb, highmem_pages, lowmem_page, machine, pkmap, verify};
use kmm_hal::{Cpu, KernelLayout, VirtAddr};
use kmm_page_frame::Page;
use kmm_pkmap::{KmapLocalError, KunmapError, KunmapLocalError};
use kmm_testkit::TestMachine;
use proptest::prelude::*;

/// High-memory pages in play; one more, the last, is a low-memory page.
const HIGH: usize = 5;
const PAGES: usize = HIGH + 1;

#[derive(Debug, Clone)]
enum Op {
    Kmap(usize),
    TryKmap(usize),
    Kunmap(usize),
    KmapLocal(usize),
    KmapAtomic(usize),
    /// Undo the most recent local mapping with the matching call.
    UnmapTop,
    /// Undo the oldest one while others are held (refused unless it is the
    /// same address).
    UnmapBottom,
    /// Undo the most recent one with the call of the other kind.
    UnmapWrongKind,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..PAGES).prop_map(Op::Kmap),
        (0..PAGES).prop_map(Op::TryKmap),
        (0..PAGES).prop_map(Op::Kunmap),
        (0..PAGES).prop_map(Op::KmapLocal),
        (0..PAGES).prop_map(Op::KmapAtomic),
        Just(Op::UnmapTop),
        Just(Op::UnmapBottom),
        Just(Op::UnmapWrongKind),
    ]
}

struct Local {
    page: usize,
    va: VirtAddr,
    atomic: bool,
}

struct Model {
    users: [u32; PAGES],
    addr: [Option<VirtAddr>; PAGES],
    stack: Vec<Local>,
    per_cpu: usize,
}

struct World<'a> {
    host: &'a TestMachine,
    p: &'a MockPkmap<'a>,
    pages: Vec<&'a Page>,
}

impl World<'_> {
    fn direct(&self, i: usize) -> VirtAddr {
        let pa = common::phys(self.host, self.pages[i]);
        self.host
            .buddy()
            .mem()
            .direct_map()
            .phys_to_virt(pa)
            .unwrap()
    }

    fn unmap_local(&self, va: VirtAddr, atomic: bool) -> Result<(), KunmapLocalError> {
        if atomic {
            self.p.kunmap_atomic(va)
        } else {
            self.p.kunmap_local(va)
        }
    }
}

impl Model {
    fn apply(&mut self, w: &World<'_>, op: &Op) -> Result<(), TestCaseError> {
        let low = |i: usize| i == HIGH;
        match *op {
            Op::Kmap(i) | Op::TryKmap(i) => {
                let pg = w.pages[i];
                let r = match op {
                    Op::Kmap(_) => w.p.kmap(pg),
                    _ => w.p.try_kmap(pg),
                };
                let va = r.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                if low(i) {
                    prop_assert_eq!(va, w.direct(i));
                } else {
                    if self.users[i] > 0 {
                        prop_assert_eq!(Some(va), self.addr[i], "same address while used");
                    }
                    self.users[i] += 1;
                    self.addr[i] = Some(va);
                }
            }
            Op::Kunmap(i) => {
                let pg = w.pages[i];
                let r = w.p.kunmap(pg);
                if low(i) {
                    prop_assert_eq!(r, Ok(()));
                } else if self.users[i] > 0 {
                    prop_assert_eq!(r, Ok(()));
                    self.users[i] -= 1;
                } else if w.p.page_address(pg).is_some() {
                    prop_assert_eq!(r, Err(KunmapError::Unbalanced));
                } else {
                    prop_assert_eq!(r, Err(KunmapError::NotMapped));
                }
            }
            Op::KmapLocal(i) | Op::KmapAtomic(i) => {
                let atomic = matches!(op, Op::KmapAtomic(_));
                let pg = w.pages[i];
                let r = if atomic {
                    w.p.kmap_atomic(pg)
                } else {
                    w.p.kmap_local_page(pg)
                };
                if self.stack.len() == self.per_cpu {
                    prop_assert_eq!(r, Err(KmapLocalError::TooDeep));
                } else {
                    let va = r.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                    if low(i) {
                        prop_assert_eq!(va, w.direct(i));
                    }
                    self.stack.push(Local {
                        page: i,
                        va,
                        atomic,
                    });
                }
            }
            Op::UnmapTop => match self.stack.last() {
                None => {
                    let r = w.p.kunmap_local(w.direct(HIGH));
                    prop_assert_eq!(r, Err(KunmapLocalError::NothingMapped));
                }
                Some(top) => {
                    prop_assert_eq!(w.unmap_local(top.va, top.atomic), Ok(()));
                    self.stack.pop();
                }
            },
            Op::UnmapBottom => {
                if let [bottom, .., top] = &self.stack[..]
                    && bottom.va != top.va
                {
                    let r = w.unmap_local(bottom.va, bottom.atomic);
                    prop_assert_eq!(r, Err(KunmapLocalError::OutOfOrder { top: top.va }));
                }
            }
            Op::UnmapWrongKind => {
                if let Some(top) = self.stack.last() {
                    let r = w.unmap_local(top.va, !top.atomic);
                    prop_assert_eq!(r, Err(KunmapLocalError::WrongKind));
                }
            }
        }
        Ok(())
    }

    fn check(&self, w: &World<'_>) -> Result<(), TestCaseError> {
        w.p.check()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut seen = Vec::new();
        for i in 0..HIGH {
            let pg = w.pages[i];
            if self.users[i] > 0 {
                let va = w.p.page_address(pg);
                prop_assert_eq!(va, self.addr[i]);
                let va = va.unwrap();
                prop_assert!(!seen.contains(&va), "two pages at {}", va);
                seen.push(va);
                let nr = (va.as_usize() - w.p.pkmap_base().as_usize()) / 4096;
                prop_assert_eq!(w.p.pkmap_users(nr), Some(self.users[i]));
                verify(w.host, pg, va);
            }
        }
        let depth = self.stack.len();
        prop_assert_eq!(w.p.local_depth(), depth);
        prop_assert_eq!(w.host.cpu().preempt_count(), depth);
        let atomics = self.stack.iter().filter(|l| l.atomic).count();
        prop_assert_eq!(w.p.pagefault_disabled(), atomics);
        for l in &self.stack {
            verify(w.host, w.pages[l.page], l.va);
        }
        Ok(())
    }
}

fn run(prefix: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let host = machine(24, 1);
    let _cpu0 = host.bind(0);
    let tlb = TestTlb::new(&host);
    let p = pkmap(&host, &tlb);
    let mut pages = highmem_pages(&host, HIGH);
    pages.push(lowmem_page(&host));
    // Move the search to a random point of the table.
    for pg in highmem_pages(&host, prefix) {
        p.kmap(pg).unwrap();
        p.kunmap(pg).unwrap();
    }
    let w = World {
        host: &host,
        p: &p,
        pages,
    };
    let mut m = Model {
        users: [0; PAGES],
        addr: [None; PAGES],
        stack: Vec::new(),
        per_cpu: host.machine().layout().fixmap().kmap_per_cpu,
    };
    let r = ops.iter().try_for_each(|op| {
        m.apply(&w, op)?;
        m.check(&w)
    });
    // Unwind the local stack, failure or not: the binding may not be
    // dropped with preemption disabled.
    while w.p.local_depth() > 0 {
        let l = m.stack.pop().expect("the model knows the mapping");
        w.unmap_local(l.va, l.atomic).unwrap();
    }
    r
}

proptest! {
    #![proptest_config(kmm_testkit::model::proptest_config(32, 2))]

    #[test]
    fn pkmap_matches_the_model(
        prefix in 0usize..if cfg!(miri) { 8 } else { 1100 },
        ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 12 } else { 80 }),
    ) {
        run(prefix, &ops)?;
    }
}
