//! Model-based property test: random alloc / free / reference / drain sequences
//! over mixed orders, GFP zones, two nodes and several CPUs, against a model of
//! the live blocks. After each step: no two live blocks overlap, every block lies
//! in a zone its GFP allows, the free counts are exact, bad frees change nothing;
//! a failed allocation really had no block to give. After freeing everything and
//! draining every CPU's lists, every zone is fully coalesced.

mod common;

use std::collections::BTreeMap;

use common::{assert_fully_coalesced, no_reserve, rig};
use kmm_buddy::{Buddy, BuddyConfig, FreeError, Freed, Gfp, MAX_ORDER};
use kmm_mock::MockCpu;
use kmm_page_frame::{PgFlags, ZoneType};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        cpu: usize,
        zone: u8,
        order: usize,
        cold: bool,
        node: Option<usize>,
    },
    Free {
        cpu: usize,
        pick: usize,
        cold: bool,
    },
    Ref {
        pick: usize,
    },
    BadFree {
        pick: usize,
        kind: u8,
    },
    Drain {
        cpu: usize,
        all: bool,
    },
}

const CPUS: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    let order = prop_oneof![6 => Just(0usize), 3 => 1usize..4, 1 => 4usize..MAX_ORDER + 1];
    prop_oneof![
        6 => (0..CPUS, 0u8..5, order, any::<bool>(), prop::option::weighted(0.2, 0usize..3))
            .prop_map(|(cpu, zone, order, cold, node)| Op::Alloc { cpu, zone, order, cold, node }),
        5 => (0..CPUS, any::<usize>(), any::<bool>()).prop_map(|(cpu, pick, cold)| Op::Free { cpu, pick, cold }),
        1 => any::<usize>().prop_map(|pick| Op::Ref { pick }),
        1 => (any::<usize>(), 0u8..5).prop_map(|(pick, kind)| Op::BadFree { pick, kind }),
        1 => (0..CPUS, any::<bool>()).prop_map(|(cpu, all)| Op::Drain { cpu, all }),
    ]
}

fn gfp(zone: u8) -> Gfp {
    match zone {
        0 => Gfp::KERNEL | Gfp::DMA,
        1 => Gfp::KERNEL,
        2 => Gfp::HIGHUSER,
        3 => Gfp::ATOMIC,
        _ => Gfp::HIGHUSER | Gfp::ZERO,
    }
}

/// A live block in the model.
#[derive(Debug, Clone, Copy)]
struct Live {
    order: usize,
    refs: u32,
}

fn free_total(b: &Buddy<'static, MockCpu>) -> usize {
    b.free_pages_total()
}

fn check_invariants(
    b: &Buddy<'static, MockCpu>,
    live: &BTreeMap<usize, Live>,
) -> Result<(), TestCaseError> {
    // No overlap: blocks sorted by pfn never reach into the next.
    let mut prev_end = 0;
    for (&pfn, l) in live {
        prop_assert!(pfn >= prev_end, "live blocks overlap at pfn {pfn:#x}");
        prev_end = pfn + (1 << l.order);
        let page = b.mem().pfn_to_page(kmm_hal::Pfn::new(pfn)).unwrap();
        prop_assert!(page.test(PgFlags::HEAD));
        prop_assert_eq!(page.private(), l.order);
        prop_assert_eq!(page.count(), l.refs);
    }
    // Exact accounting.
    let used: usize = live.values().map(|l| 1 << l.order).sum();
    prop_assert_eq!(free_total(b) + used, b.managed_total());
    for z in b.zones() {
        let listed: usize = (0..MAX_ORDER).map(|o| z.nr_free(o) << o).sum();
        prop_assert_eq!(listed, z.free_pages());
    }
    Ok(())
}

fn run(
    ops: Vec<Op>,
    config: BuddyConfig<'static>,
    exact_failures: bool,
) -> Result<(), TestCaseError> {
    let r = rig(40, 32, CPUS, true, config);
    let b = &r.buddy;
    let cpus = r.machine.cpu();
    let mut live: BTreeMap<usize, Live> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Alloc {
                cpu,
                zone,
                order,
                cold,
                node,
            } => {
                let _on = cpus.bind(cpu).unwrap();
                let mut g = gfp(zone);
                if cold {
                    g |= Gfp::COLD;
                }
                let got = match node {
                    Some(n) => b.alloc_pages_node(n, g, order),
                    None => b.alloc_pages(g, order),
                };
                match got {
                    Some(page) => {
                        prop_assert!(order < MAX_ORDER);
                        let pfn = b.mem().page_to_pfn(page).unwrap().as_usize();
                        prop_assert_eq!(pfn % (1 << order), 0, "block not aligned");
                        prop_assert!(
                            page.zone_type() <= g.zone(),
                            "{:?} block for {:?}",
                            page.zone_type(),
                            g
                        );
                        if g.contains(Gfp::DMA) {
                            prop_assert_eq!(page.zone_type(), ZoneType::Dma);
                        }
                        prop_assert!(
                            live.insert(pfn, Live { order, refs: 1 }).is_none(),
                            "handed out twice"
                        );
                        if g.contains(Gfp::ZERO) && page.zone_type() != ZoneType::HighMem {
                            let va = b.mem().page_address(page).unwrap();
                            // SAFETY: the block is ours and in the direct map.
                            let bytes = unsafe {
                                std::slice::from_raw_parts(va.as_ptr::<u8>(), 4096 << order)
                            };
                            prop_assert!(bytes.iter().all(|&x| x == 0), "not zeroed");
                        }
                    }
                    None if exact_failures && order < MAX_ORDER => {
                        // With zero watermarks, failure means no allowed zone had a
                        // block of this order on its free lists, nor (order 0) on
                        // this CPU's list.
                        for (i, z) in b.zones().iter().enumerate() {
                            let allowed = z.kind() <= g.zone()
                                && (!g.contains(Gfp::DMA) || z.kind() == ZoneType::Dma);
                            let skipped = g.contains(Gfp::ZERO) && z.kind() == ZoneType::HighMem;
                            if allowed && !skipped && z.managed() > 0 {
                                for o in order..MAX_ORDER {
                                    prop_assert_eq!(
                                        z.nr_free(o),
                                        0,
                                        "zone {} had an order-{} block",
                                        i,
                                        o
                                    );
                                }
                                if order == 0 {
                                    prop_assert_eq!(z.pcp()[cpu].count(), 0);
                                }
                            }
                        }
                    }
                    None => {}
                }
            }
            Op::Free { cpu, pick, cold } => {
                if live.is_empty() {
                    continue;
                }
                let _on = cpus.bind(cpu).unwrap();
                let (&pfn, &l) = live.iter().nth(pick % live.len()).unwrap();
                let page = b.mem().pfn_to_page(kmm_hal::Pfn::new(pfn)).unwrap();
                let res = if cold && l.order == 0 {
                    b.free_cold_page(page)
                } else {
                    b.free_pages_page(page, l.order)
                };
                if l.refs == 1 {
                    prop_assert_eq!(res, Ok(Freed::Released));
                    live.remove(&pfn);
                } else {
                    prop_assert_eq!(res, Ok(Freed::StillReferenced));
                    live.get_mut(&pfn).unwrap().refs -= 1;
                }
            }
            Op::Ref { pick } => {
                if live.is_empty() {
                    continue;
                }
                let (&pfn, _) = live.iter().nth(pick % live.len()).unwrap();
                let page = b.mem().pfn_to_page(kmm_hal::Pfn::new(pfn)).unwrap();
                prop_assert!(b.get_page(page));
                live.get_mut(&pfn).unwrap().refs += 1;
            }
            Op::BadFree { pick, kind } => {
                let _on = cpus.bind(0).unwrap();
                let before: Vec<_> = b
                    .zones()
                    .iter()
                    .map(|z| (z.free_pages(), z.pcp_pages()))
                    .collect();
                let res = if let Some((&pfn, &l)) = live.iter().nth(pick % live.len().max(1)) {
                    let page = b.mem().pfn_to_page(kmm_hal::Pfn::new(pfn)).unwrap();
                    match kind {
                        0 if l.order + 1 < MAX_ORDER && pfn % (2 << l.order) == 0 => {
                            b.free_pages_page(page, l.order + 1)
                        }
                        1 if l.order > 0 => b.free_pages_page(page, l.order - 1),
                        2 if l.order > 0 => {
                            let tail = b
                                .mem()
                                .pfn_to_page(kmm_hal::Pfn::new(pfn + (1 << l.order) - 1))
                                .unwrap();
                            b.free_pages_page(tail, 0)
                        }
                        _ => b.free_pages_page(page, MAX_ORDER),
                    }
                } else {
                    // Nothing live: any page is free or reserved.
                    let page = b
                        .mem()
                        .pfn_to_page(kmm_hal::Pfn::new(pick % b.mem().pages().len()))
                        .unwrap();
                    b.free_pages_page(page, 0)
                };
                prop_assert!(res.is_err(), "bad free accepted: {res:?}");
                let after: Vec<_> = b
                    .zones()
                    .iter()
                    .map(|z| (z.free_pages(), z.pcp_pages()))
                    .collect();
                prop_assert_eq!(before, after);
                if let Err(FreeError::WrongOrder { allocated }) = res {
                    prop_assert!(allocated < MAX_ORDER);
                }
            }
            Op::Drain { cpu, all } => {
                let _on = cpus.bind(cpu).unwrap();
                if all {
                    b.drain_all_pages();
                } else {
                    b.drain_local();
                }
            }
        }
        check_invariants(b, &live)?;
    }
    // Free everything, drain every CPU: fully coalesced.
    {
        let _on = cpus.bind(0).unwrap();
        for (&pfn, l) in &live {
            let page = b.mem().pfn_to_page(kmm_hal::Pfn::new(pfn)).unwrap();
            for _ in 1..l.refs {
                prop_assert_eq!(b.free_pages_page(page, l.order), Ok(Freed::StillReferenced));
            }
            prop_assert_eq!(b.free_pages_page(page, l.order), Ok(Freed::Released));
        }
    }
    common::drain_every_cpu(&r);
    assert_fully_coalesced(b);
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 48 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn len() -> std::ops::Range<usize> {
    if cfg!(miri) { 5..20 } else { 1..300 }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn buddy_matches_the_model(ops in prop::collection::vec(op(), len())) {
        run(ops, no_reserve(), true)?;
    }

    #[test]
    fn buddy_matches_the_model_with_watermarks(ops in prop::collection::vec(op(), len())) {
        run(ops, BuddyConfig::default(), false)?;
    }

    #[test]
    fn buddy_matches_the_model_without_pcp(ops in prop::collection::vec(op(), len())) {
        run(ops, BuddyConfig { bypass_pcp: true, ..no_reserve() }, true)?;
    }
}
