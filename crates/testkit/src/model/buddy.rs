//! The buddy allocator's reference model: the live blocks (head pfn, order,
//! references) and the blocks freed so far.
//!
//! Bulk steps ([`Op::BulkAlloc`], [`Op::BulkFree`]) go through
//! `alloc_pages_bulk` and `release_pages`: a bulk allocation fills only the
//! empty slots, reports how many slots from the front are filled, and each
//! page it hands out is checked as a single allocation's is (with exact
//! failures, a call that fills nothing had nothing to give); a bulk free is
//! replayed on the model element by element, so the first element the model
//! says is bad (freed, reserved, interior, of a higher order, or a duplicate
//! whose references are gone) must be the one refused, with its index, the
//! pages before it freed and it and the rest untouched.
//!
//! Checked after every step ([`Model::check`]): no two live blocks overlap;
//! each live block's head descriptor has `HEAD`, its order and its reference
//! count; the free counts are exact (free + live = managed, and each zone's
//! free lists add up to its free count). Checked by the steps themselves: a
//! block lies in a zone its GFP allows, is aligned, is handed out once, is
//! zeroed when asked; a bad free is refused and changes no zone's counts; with
//! exact failures (zero watermarks), a failed allocation really had no block
//! to give. At the end ([`Model::finish`]): after freeing everything and
//! draining every CPU, every zone is fully coalesced.

use std::collections::BTreeMap;

use kmm_buddy::{FreeError, Freed, Gfp, MAX_ORDER};
use kmm_hal::{PAGE_SIZE, Pfn};
use kmm_page_frame::{Page, PgFlags, ZoneType};

use super::{Checked, Flags, ensure, ensure_eq};
use crate::TestMachine;

/// One step of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `alloc_pages(gfp, order)` (or `alloc_pages_node` with a node) on `cpu`.
    Alloc {
        /// The CPU that allocates.
        cpu: usize,
        /// The flags.
        gfp: Flags,
        /// The order (`MAX_ORDER` and above must fail).
        order: usize,
        /// `Some(node)`: `alloc_pages_node(node, …)`.
        node: Option<usize>,
    },
    /// Frees the `pick`-th live block (modulo their number) on `cpu`, with
    /// `free_cold_page` if `cold` and it is a single page.
    Free {
        /// The CPU that frees.
        cpu: usize,
        /// Which live block.
        pick: usize,
        /// Free to the cold end.
        cold: bool,
    },
    /// `get_page` on the `pick`-th live block.
    Ref {
        /// Which live block.
        pick: usize,
    },
    /// A bad free on CPU 0: must be refused and change nothing.
    BadFree {
        /// Which live (or freed) block it aims at.
        pick: usize,
        /// What is wrong with it.
        kind: BadFree,
    },
    /// `drain_local` (or `drain_all_pages` if `all`) on `cpu`.
    Drain {
        /// The CPU that drains.
        cpu: usize,
        /// `drain_all_pages`.
        all: bool,
    },
    /// `alloc_pages_bulk(gfp, …)` on `cpu` into `slots` slots, all empty but
    /// (with `keep`) the first, which holds a live order-0 page (if there is
    /// one) that must be left alone.
    BulkAlloc {
        /// The CPU that allocates.
        cpu: usize,
        /// The flags.
        gfp: Flags,
        /// The array's length.
        slots: usize,
        /// Put a live order-0 page in slot 0 first.
        keep: bool,
    },
    /// `release_pages` on `cpu` of up to `n` live order-0 blocks from the
    /// `pick`-th on, with a bad element at `bad.0` (modulo the length + 1)
    /// if `bad` is set.
    BulkFree {
        /// The CPU that frees.
        cpu: usize,
        /// The first live block (modulo their number).
        pick: usize,
        /// How many live order-0 blocks.
        n: usize,
        /// Where a bad element goes, and what it is.
        bad: Option<(usize, BulkBad)>,
    },
    /// `alloc_pages_exact(gfp, bytes)` on `cpu`: every frame of the run
    /// becomes a live order-0 block.
    AllocExact {
        /// The CPU that allocates.
        cpu: usize,
        /// The flags.
        gfp: Flags,
        /// The size asked for.
        bytes: usize,
    },
    /// `split_page` of the `pick`-th live block: its frames become live
    /// order-0 blocks (the head keeps its references).
    Split {
        /// Which live block.
        pick: usize,
    },
}

/// A bad element of an [`Op::BulkFree`]. Where a kind does not apply (no
/// live block of a higher order, nothing freed yet, nothing before it to
/// repeat), a reserved page stands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkBad {
    /// A page freed before and not handed out since.
    Freed,
    /// A reserved page.
    Reserved,
    /// The second page of a live block of a higher order.
    Interior,
    /// The head of a live block of a higher order.
    HigherOrder,
    /// An element earlier in the array again (bad once its references are
    /// gone).
    Duplicate,
}

impl BulkBad {
    /// Every kind.
    pub const ALL: [BulkBad; 5] = [
        BulkBad::Freed,
        BulkBad::Reserved,
        BulkBad::Interior,
        BulkBad::HigherOrder,
        BulkBad::Duplicate,
    ];
}

/// What is wrong with a [`Op::BadFree`]. Where a kind does not apply (an
/// order-0 block has no smaller order), the head is freed with order
/// `MAX_ORDER`; with no live block at all, a page picked among all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFree {
    /// A live block's head with its order + 1 (when it is aligned for it).
    OrderAbove,
    /// A live block's head with its order − 1.
    OrderBelow,
    /// A live block's last page, as order 0.
    Tail,
    /// A live block's second page, as order 0.
    SecondPage,
    /// A live block's head with order `MAX_ORDER`.
    TooLarge,
    /// A block freed before and not handed out since, as order 0.
    FreedAgain,
    /// A reserved page (the kernel image, `mem_map`, a hole's edge).
    Reserved,
}

impl BadFree {
    /// Every kind.
    pub const ALL: [BadFree; 7] = [
        BadFree::OrderAbove,
        BadFree::OrderBelow,
        BadFree::Tail,
        BadFree::SecondPage,
        BadFree::TooLarge,
        BadFree::FreedAgain,
        BadFree::Reserved,
    ];
}

/// The GFP flags the model allocates with, by selector.
pub const GFPS: [Gfp; 6] = [
    Gfp::KERNEL.union(Gfp::DMA),
    Gfp::KERNEL,
    Gfp::HIGHUSER,
    Gfp::ATOMIC,
    Gfp::HIGHUSER.union(Gfp::ZERO),
    Gfp::ATOMIC.union(Gfp::COLD),
];

impl Op {
    /// Decodes three fuzzer bytes into an operation on one of `cpus` CPUs
    /// (the fuzz target's grammar).
    pub fn decode([k, x, y]: [u8; 3], cpus: usize) -> Op {
        let cpu = usize::from(x) % cpus.max(1);
        let pick = usize::from(u16::from_le_bytes([x, y]));
        match k % 8 {
            0 => Op::Alloc {
                cpu,
                gfp: Flags(GFPS[usize::from(x >> 1) % GFPS.len()]),
                order: usize::from(y) % (MAX_ORDER + 1),
                node: (k & 0x80 != 0).then_some(usize::from(y >> 4) % 2),
            },
            1 => Op::Free {
                cpu,
                pick,
                cold: y & 1 == 1,
            },
            2 => Op::Ref { pick },
            3 => Op::BadFree {
                pick: usize::from(x),
                kind: BadFree::ALL[usize::from(y) % BadFree::ALL.len()],
            },
            4 if k & 0x40 != 0 => Op::AllocExact {
                cpu,
                gfp: Flags(GFPS[usize::from(x >> 1) % GFPS.len()]),
                bytes: usize::from(u16::from_le_bytes([y, x])) * 64,
            },
            5 if k & 0x40 != 0 => Op::Split { pick },
            4 | 5 => Op::Drain {
                cpu,
                all: k % 8 == 5,
            },
            6 => Op::BulkAlloc {
                cpu,
                gfp: Flags(GFPS[usize::from(x >> 1) % GFPS.len()]),
                slots: usize::from(y % 80),
                keep: k & 0x80 != 0,
            },
            _ => Op::BulkFree {
                cpu,
                pick: usize::from(x),
                n: usize::from(y % 72),
                bad: (k & 0x80 != 0).then(|| {
                    (
                        usize::from(y >> 2),
                        BulkBad::ALL[usize::from(k >> 3) % BulkBad::ALL.len()],
                    )
                }),
            },
        }
    }
}

/// Strategies for [`Op`] on `cpus` CPUs and `nodes` nodes.
#[cfg(feature = "proptest")]
pub fn op(cpus: usize, nodes: usize) -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let order = prop_oneof![6 => Just(0usize), 3 => 1usize..4, 1 => 4usize..MAX_ORDER + 1];
    // Bulk arrays up to two windows and more (fewer slots under Miri).
    let bulk_max = if cfg!(miri) { 24 } else { 140 };
    let gfp = prop_oneof![
        Just(Gfp::KERNEL | Gfp::DMA),
        Just(Gfp::KERNEL),
        Just(Gfp::HIGHUSER),
        Just(Gfp::ATOMIC),
        Just(Gfp::HIGHUSER | Gfp::ZERO),
    ];
    prop_oneof![
        6 => (0..cpus, gfp.clone(), order, any::<bool>(), prop::option::weighted(0.2, 0..nodes + 1))
            .prop_map(|(cpu, g, order, cold, node)| Op::Alloc {
                cpu,
                gfp: Flags(if cold { g | Gfp::COLD } else { g }),
                order,
                node,
            }),
        5 => (0..cpus, any::<usize>(), any::<bool>())
            .prop_map(|(cpu, pick, cold)| Op::Free { cpu, pick, cold }),
        1 => any::<usize>().prop_map(|pick| Op::Ref { pick }),
        1 => (any::<usize>(), proptest::sample::select(&BadFree::ALL[..]))
            .prop_map(|(pick, kind)| Op::BadFree { pick, kind }),
        1 => (0..cpus, any::<bool>()).prop_map(|(cpu, all)| Op::Drain { cpu, all }),
        2 => (0..cpus, gfp, 0usize..bulk_max, any::<bool>(), any::<bool>())
            .prop_map(|(cpu, g, slots, cold, keep)| Op::BulkAlloc {
                cpu,
                gfp: Flags(if cold { g | Gfp::COLD } else { g }),
                slots,
                keep,
            }),
        2 => (
            0..cpus,
            any::<usize>(),
            0usize..bulk_max,
            prop::option::weighted(
                0.3,
                (any::<usize>(), proptest::sample::select(&BulkBad::ALL[..]))
            ),
        )
            .prop_map(|(cpu, pick, n, bad)| Op::BulkFree { cpu, pick, n, bad }),
        1 => (0..cpus, gfp_exact(), 0usize..(PAGE_SIZE << 6))
            .prop_map(|(cpu, gfp, bytes)| Op::AllocExact { cpu, gfp: Flags(gfp), bytes }),
        1 => any::<usize>().prop_map(|pick| Op::Split { pick }),
    ]
}

/// The flags of [`Op::AllocExact`] (no high memory: runs are for the
/// direct map, as Linux's `alloc_pages_exact`).
#[cfg(feature = "proptest")]
fn gfp_exact() -> impl proptest::strategy::Strategy<Value = Gfp> {
    use proptest::prelude::*;
    prop_oneof![
        Just(Gfp::KERNEL | Gfp::DMA),
        Just(Gfp::KERNEL),
        Just(Gfp::KERNEL | Gfp::ZERO),
        Just(Gfp::ATOMIC),
    ]
}

/// A live block.
#[derive(Debug, Clone, Copy)]
struct Live {
    order: usize,
    refs: u32,
}

/// The model: live blocks by head pfn, and the pfns freed so far.
#[derive(Debug, Default)]
pub struct Model {
    live: BTreeMap<usize, Live>,
    freed: Vec<usize>,
    exact_failures: bool,
}

fn page(host: &TestMachine, pfn: usize) -> &Page {
    host.buddy()
        .mem()
        .pfn_to_page(Pfn::new(pfn))
        .expect("a pfn in mem_map")
}

impl Model {
    /// An empty model. With `exact_failures` (a machine with zero
    /// watermarks), every failed allocation is checked to have had no block.
    pub fn new(exact_failures: bool) -> Model {
        Model {
            exact_failures,
            ..Model::default()
        }
    }

    /// Live blocks.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Applies `op` to the allocator and the model, then [`Model::check`]s.
    /// The calling thread must not be bound to a CPU.
    pub fn apply(&mut self, host: &TestMachine, op: &Op) -> Checked {
        match *op {
            Op::Alloc {
                cpu,
                gfp,
                order,
                node,
            } => self.alloc(host, cpu, gfp.0, order, node)?,
            Op::Free { cpu, pick, cold } => self.free(host, cpu, pick, cold)?,
            Op::Ref { pick } => {
                if let Some((&pfn, _)) = self.nth(pick) {
                    ensure!(host.buddy().get_page(page(host, pfn)), "get_page refused");
                    self.live.get_mut(&pfn).expect("live").refs += 1;
                }
            }
            Op::BadFree { pick, kind } => self.bad_free(host, pick, kind)?,
            Op::Drain { cpu, all } => {
                let _on = host.bind(cpu);
                if all {
                    host.buddy().drain_all_pages();
                } else {
                    host.buddy().drain_local();
                }
            }
            Op::BulkAlloc {
                cpu,
                gfp,
                slots,
                keep,
            } => self.bulk_alloc(host, cpu, gfp.0, slots, keep)?,
            Op::BulkFree { cpu, pick, n, bad } => self.bulk_free(host, cpu, pick, n, bad)?,
            Op::AllocExact { cpu, gfp, bytes } => self.alloc_exact(host, cpu, gfp.0, bytes)?,
            Op::Split { pick } => self.split(host, pick)?,
        }
        self.check(host)
    }

    /// A run of exactly the frames `bytes` need: each frame a live order-0
    /// block, the rest of the power-of-two block back on the free lists (the
    /// check after the step counts them).
    fn alloc_exact(&mut self, host: &TestMachine, cpu: usize, g: Gfp, bytes: usize) -> Checked {
        let b = host.buddy();
        let frames = bytes.div_ceil(PAGE_SIZE);
        let got = {
            let _on = host.bind(cpu);
            b.alloc_pages_exact(g, bytes)
        };
        let Some(head) = got else {
            ensure!(
                frames == 0 || frames > 1 << (MAX_ORDER - 1) || !self.exact_failures || {
                    let order = frames.next_power_of_two().trailing_zeros() as usize;
                    self.nothing_to_give(host, cpu, g, order).is_ok()
                },
                "alloc_pages_exact({bytes}) failed with a block free"
            );
            return Ok(());
        };
        ensure!(frames > 0, "a run of 0 bytes");
        let pfn = b.mem().page_to_pfn(head).expect("in mem_map").as_usize();
        ensure_eq!(pfn % frames.next_power_of_two(), 0, "run not aligned");
        for i in 0..frames {
            let f = page(host, pfn + i);
            ensure_eq!((f.private(), f.count()), (0, 1), "frame {i} of the run");
            self.handed_out(host, f, g, 0)?;
        }
        Ok(())
    }

    /// `split_page` of a live block: refused for a free block (the model
    /// picks live ones only), otherwise its frames become live.
    fn split(&mut self, host: &TestMachine, pick: usize) -> Checked {
        let Some((&pfn, &l)) = self.nth(pick) else {
            return Ok(());
        };
        host.buddy()
            .split_page(page(host, pfn), l.order)
            .map_err(|e| super::Failure(format!("split_page of a live block: {e:?}")))?;
        self.live.get_mut(&pfn).expect("live").order = 0;
        for i in 1..1usize << l.order {
            self.live.insert(pfn + i, Live { order: 0, refs: 1 });
        }
        Ok(())
    }

    fn nth(&self, pick: usize) -> Option<(&usize, &Live)> {
        self.live.iter().nth(pick % self.live.len().max(1))
    }

    fn alloc(
        &mut self,
        host: &TestMachine,
        cpu: usize,
        g: Gfp,
        order: usize,
        node: Option<usize>,
    ) -> Checked {
        let b = host.buddy();
        let _on = host.bind(cpu);
        let got = match node {
            Some(n) => b.alloc_pages_node(n, g, order),
            None => b.alloc_pages(g, order),
        };
        match got {
            Some(page) => self.handed_out(host, page, g, order)?,
            None if self.exact_failures && order < MAX_ORDER => {
                self.nothing_to_give(host, cpu, g, order)?;
            }
            None => {}
        }
        Ok(())
    }

    /// A block `alloc_pages(g, order)` (or a bulk allocation, order 0) just
    /// handed out: checked and made live.
    fn handed_out(&mut self, host: &TestMachine, page: &Page, g: Gfp, order: usize) -> Checked {
        let b = host.buddy();
        ensure!(order < MAX_ORDER, "an order-{order} block");
        let pfn = b.mem().page_to_pfn(page).expect("in mem_map").as_usize();
        ensure_eq!(pfn % (1 << order), 0, "block not aligned");
        ensure!(
            page.zone_type() <= g.zone(),
            "{:?} block for {:?}",
            page.zone_type(),
            Flags(g)
        );
        if g.contains(Gfp::DMA) {
            ensure_eq!(page.zone_type(), ZoneType::Dma, "DMA request");
        }
        let fresh = self.live.insert(pfn, Live { order, refs: 1 }).is_none();
        ensure!(fresh, "handed out twice: pfn {pfn:#x}");
        self.freed.retain(|&f| f < pfn || f >= pfn + (1 << order));
        if g.contains(Gfp::ZERO) && page.zone_type() != ZoneType::HighMem {
            let va = b.mem().page_address(page).expect("lowmem");
            // SAFETY: the block is ours, in the direct map.
            let zeroed = unsafe { super::intact(va.as_ptr::<u8>(), PAGE_SIZE << order, 0) };
            ensure!(zeroed, "not zeroed");
        }
        Ok(())
    }

    /// With zero watermarks, a failed allocation had nothing to give: no
    /// allowed zone had a block of this order on its free lists, nor (order
    /// 0) on this CPU's list.
    fn nothing_to_give(&self, host: &TestMachine, cpu: usize, g: Gfp, order: usize) -> Checked {
        for (i, z) in host.buddy().zones().iter().enumerate() {
            let allowed =
                z.kind() <= g.zone() && (!g.contains(Gfp::DMA) || z.kind() == ZoneType::Dma);
            let skipped = g.contains(Gfp::ZERO) && z.kind() == ZoneType::HighMem;
            if allowed && !skipped && z.managed() > 0 {
                for o in order..MAX_ORDER {
                    ensure_eq!(z.nr_free(o), 0, "zone {i} had an order-{o} block");
                }
                if order == 0 {
                    ensure_eq!(z.pcp()[cpu].count(), 0, "CPU {cpu}'s list");
                }
            }
        }
        Ok(())
    }

    fn bulk_alloc(
        &mut self,
        host: &TestMachine,
        cpu: usize,
        g: Gfp,
        slots: usize,
        keep: bool,
    ) -> Checked {
        let b = host.buddy();
        let _on = host.bind(cpu);
        let mut pages: Vec<Option<&Page>> = vec![None; slots];
        let kept = if keep && slots > 0 {
            let single = self.live.iter().find(|(_, l)| l.order == 0);
            single.map(|(&pfn, _)| {
                pages[0] = Some(page(host, pfn));
                pfn
            })
        } else {
            None
        };
        let n = b.alloc_pages_bulk(g, &mut pages);
        ensure!(n <= slots, "{n} filled of {slots}");
        ensure!(
            pages[..n].iter().all(Option::is_some),
            "a hole before the count {n}"
        );
        if n < slots {
            ensure!(pages[n].is_none(), "slot {n} filled but not counted");
        }
        let mut fresh = 0;
        for (i, p) in pages.iter().enumerate() {
            let Some(p) = *p else { continue };
            let pfn = b.mem().page_to_pfn(p).expect("in mem_map").as_usize();
            if i == 0 && kept.is_some() {
                ensure_eq!(Some(pfn), kept, "a filled slot was replaced");
                continue;
            }
            ensure!(i < n, "slot {i} filled past the count {n}");
            self.handed_out(host, p, g, 0)?;
            fresh += 1;
        }
        let empty = slots - usize::from(kept.is_some());
        if fresh == 0 && empty > 0 && self.exact_failures {
            self.nothing_to_give(host, cpu, g, 0)?;
        }
        Ok(())
    }

    /// A page that every free refuses, of kind `kind`, for a bulk free
    /// whose elements so far are `before`.
    fn bulk_bad<'h>(
        &self,
        host: &'h TestMachine,
        kind: BulkBad,
        pick: usize,
        before: &[Option<&'h Page>],
    ) -> &'h Page {
        let higher = self
            .live
            .iter()
            .find(|(_, l)| l.order > 0)
            .map(|(&pfn, _)| pfn);
        match kind {
            BulkBad::Freed if !self.freed.is_empty() => {
                return page(host, self.freed[pick % self.freed.len()]);
            }
            BulkBad::Interior if higher.is_some() => {
                return page(host, higher.expect("some") + 1);
            }
            BulkBad::HigherOrder if higher.is_some() => {
                return page(host, higher.expect("some"));
            }
            BulkBad::Duplicate if !before.is_empty() => {
                return before[pick % before.len()].expect("filled");
            }
            _ => {}
        }
        let mem = host.buddy().mem();
        let n = mem.len();
        let reserved = (0..n)
            .map(|i| (pick + i) % n)
            .find(|&pfn| page(host, pfn).test(PgFlags::RESERVED))
            .expect("a reserved page");
        page(host, reserved)
    }

    fn bulk_free(
        &mut self,
        host: &TestMachine,
        cpu: usize,
        pick: usize,
        n: usize,
        bad: Option<(usize, BulkBad)>,
    ) -> Checked {
        let b = host.buddy();
        let singles: Vec<usize> = self
            .live
            .iter()
            .filter(|(_, l)| l.order == 0)
            .map(|(&pfn, _)| pfn)
            .collect();
        let take = n.min(singles.len());
        let first = pick % singles.len().max(1);
        let mut pages: Vec<Option<&Page>> = (0..take)
            .map(|i| Some(page(host, singles[(first + i) % singles.len()])))
            .collect();
        if let Some((at, kind)) = bad {
            let at = at % (pages.len() + 1);
            let p = self.bulk_bad(host, kind, pick, &pages[..at]);
            pages.insert(at, Some(p));
        }
        // Replay on the model: the first element it says is bad must be the
        // one refused.
        let mut refs: BTreeMap<usize, u32> = BTreeMap::new();
        let mut released = 0;
        let mut refused = None;
        for (i, p) in pages.iter().enumerate() {
            let pfn = b
                .mem()
                .page_to_pfn(p.expect("filled"))
                .expect("in mem_map")
                .as_usize();
            let live = self.live.get(&pfn).filter(|l| l.order == 0);
            let left = refs
                .get(&pfn)
                .copied()
                .unwrap_or(live.map_or(0, |l| l.refs));
            if left == 0 {
                refused = Some(i);
                break;
            }
            refs.insert(pfn, left - 1);
            if left == 1 {
                released += 1;
            }
        }
        let before: Vec<Option<&Page>> = pages.clone();
        let res = {
            let _on = host.bind(cpu);
            b.release_pages(&mut pages)
        };
        let upto = match refused {
            None => {
                ensure_eq!(res, Ok(released), "bulk free of {} pages", pages.len());
                pages.len()
            }
            Some(i) => {
                let index = res.err().map(|e| e.index);
                ensure_eq!(index, Some(i), "the bad element's index ({res:?})");
                i
            }
        };
        ensure!(
            pages[..upto].iter().all(Option::is_none),
            "a slot before {upto} not emptied"
        );
        ensure!(
            pages[upto..]
                .iter()
                .zip(&before[upto..])
                .all(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => core::ptr::eq(*a, *b),
                    _ => false,
                }),
            "a slot from {upto} on changed"
        );
        for (pfn, left) in refs {
            if let Some(l) = self.live.get_mut(&pfn) {
                if left == 0 {
                    self.live.remove(&pfn);
                    self.freed.push(pfn);
                } else {
                    l.refs = left;
                }
            }
        }
        Ok(())
    }

    fn free(&mut self, host: &TestMachine, cpu: usize, pick: usize, cold: bool) -> Checked {
        let Some((&pfn, &l)) = self.nth(pick) else {
            return Ok(());
        };
        let b = host.buddy();
        let _on = host.bind(cpu);
        let p = page(host, pfn);
        let res = if cold && l.order == 0 {
            b.free_cold_page(p)
        } else {
            b.free_pages_page(p, l.order)
        };
        if l.refs == 1 {
            ensure_eq!(res, Ok(Freed::Released), "last reference");
            self.live.remove(&pfn);
            self.freed.push(pfn);
        } else {
            ensure_eq!(res, Ok(Freed::StillReferenced), "shared block");
            self.live.get_mut(&pfn).expect("live").refs -= 1;
        }
        Ok(())
    }

    fn bad_free(&mut self, host: &TestMachine, pick: usize, kind: BadFree) -> Checked {
        let b = host.buddy();
        let mem = b.mem();
        let _on = host.bind(0);
        let counts = || -> Vec<_> {
            b.zones()
                .iter()
                .map(|z| (z.free_pages(), z.pcp_pages()))
                .collect()
        };
        let before = counts();
        let res = match (kind, self.nth(pick)) {
            (BadFree::FreedAgain, _) if !self.freed.is_empty() => {
                let pfn = self.freed[pick % self.freed.len()];
                b.free_pages_page(page(host, pfn), 0)
            }
            (BadFree::Reserved, _) => {
                let n = mem.len();
                let reserved = (0..n)
                    .map(|i| (pick + i) % n)
                    .find(|&pfn| page(host, pfn).test(PgFlags::RESERVED))
                    .expect("a reserved page");
                b.free_pages_page(page(host, reserved), 0)
            }
            (BadFree::OrderAbove, Some((&pfn, l)))
                if l.order + 1 < MAX_ORDER && pfn % (2 << l.order) == 0 =>
            {
                b.free_pages_page(page(host, pfn), l.order + 1)
            }
            (BadFree::OrderBelow, Some((&pfn, l))) if l.order > 0 => {
                b.free_pages_page(page(host, pfn), l.order - 1)
            }
            (BadFree::Tail, Some((&pfn, l))) if l.order > 0 => {
                b.free_pages_page(page(host, pfn + (1 << l.order) - 1), 0)
            }
            (BadFree::SecondPage, Some((&pfn, l))) if l.order > 0 => {
                b.free_pages_page(page(host, pfn + 1), 0)
            }
            (_, Some((&pfn, _))) => b.free_pages_page(page(host, pfn), MAX_ORDER),
            // Nothing live: any page is free or reserved.
            (_, None) => b.free_pages_page(page(host, pick % mem.pages().len()), 0),
        };
        ensure!(res.is_err(), "bad free {kind:?} accepted: {res:?}");
        ensure_eq!(before, counts(), "a refused free changed the counts");
        if let Err(FreeError::WrongOrder { allocated }) = res {
            ensure!(
                allocated < MAX_ORDER,
                "WrongOrder {{ allocated: {allocated} }}"
            );
        }
        Ok(())
    }

    /// The checks after every step (module docs).
    pub fn check(&self, host: &TestMachine) -> Checked {
        let b = host.buddy();
        let mut prev_end = 0;
        for (&pfn, l) in &self.live {
            ensure!(pfn >= prev_end, "live blocks overlap at pfn {pfn:#x}");
            prev_end = pfn + (1 << l.order);
            let p = page(host, pfn);
            ensure!(p.test(PgFlags::HEAD), "pfn {pfn:#x} lost HEAD");
            ensure_eq!(p.private(), l.order, "order of pfn {pfn:#x}");
            ensure_eq!(p.count(), l.refs, "references of pfn {pfn:#x}");
        }
        let used: usize = self.live.values().map(|l| 1 << l.order).sum();
        ensure_eq!(b.free_pages_total() + used, b.managed_total(), "pages lost");
        for z in b.zones() {
            let listed: usize = (0..MAX_ORDER).map(|o| z.nr_free(o) << o).sum();
            ensure_eq!(listed, z.free_pages(), "zone {:?}'s free lists", z.kind());
        }
        Ok(())
    }

    /// Frees every live block (on CPU 0), drains every CPU, and checks that
    /// every zone is fully coalesced. The model is empty afterwards.
    pub fn finish(&mut self, host: &TestMachine) -> Checked {
        {
            let b = host.buddy();
            let _on = host.bind(0);
            for (&pfn, l) in &self.live {
                let p = page(host, pfn);
                for _ in 1..l.refs {
                    ensure_eq!(
                        b.free_pages_page(p, l.order),
                        Ok(Freed::StillReferenced),
                        "shared block"
                    );
                }
                ensure_eq!(b.free_pages_page(p, l.order), Ok(Freed::Released), "last");
            }
        }
        self.live.clear();
        self.freed.clear();
        host.drain_every_cpu();
        fully_coalesced(host)
    }
}

/// Runs `ops` on `host` through a fresh model, checking after every step, then
/// [`Model::finish`]es.
pub fn run(host: &TestMachine, ops: &[Op], exact_failures: bool) -> Checked {
    let mut m = Model::new(exact_failures);
    for op in ops {
        m.apply(host, op)?;
    }
    m.finish(host)
}

/// Every zone fully coalesced and every managed page free.
pub fn fully_coalesced(host: &TestMachine) -> Checked {
    for (i, z) in host.buddy().zones().iter().enumerate() {
        ensure_eq!(z.pcp_pages(), 0, "zone {i}: per-CPU lists not drained");
        ensure_eq!(z.free_pages(), z.managed(), "zone {i}: pages missing");
        let got: Vec<usize> = (0..MAX_ORDER).map(|o| z.nr_free(o)).collect();
        ensure_eq!(
            got,
            host.ideal_free_area(i).to_vec(),
            "zone {i} ({:?} of node {}) not coalesced",
            z.kind(),
            z.node()
        );
    }
    Ok(())
}
