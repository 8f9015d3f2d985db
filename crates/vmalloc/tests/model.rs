//! Model-based test of the vmalloc allocator: random sequences of vmalloc,
//! vzalloc, vmalloc_32, vmap, vm_map_ram, frees (good and bad), purges,
//! against a model of live areas. After every step: live areas never
//! overlap (guard pages included) and each one's bytes are its own (read
//! through the page tables, with the per-CPU TLB checker), guard pages are
//! unmapped, every live area is found at its address, bad frees change
//! nothing. At the end everything is freed: every page and page-table frame
//! comes back.

mod common;

use common::*;
use kmm_buddy::Gfp;
use kmm_hal::{PAGE_SIZE, PageFlags, PageTable, VirtAddr};
use kmm_page_frame::Page;
use kmm_vmalloc::{AreaKind, VmallocError};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Vmalloc { pages: usize, how: u8 },
    Vmap { pages: usize },
    MapRam { pages: usize },
    Free { pick: usize },
    BadFree { pick: usize, how: u8 },
    Purge,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..20, 0u8..3).prop_map(|(pages, how)| Op::Vmalloc { pages, how }),
        2 => (1usize..6).prop_map(|pages| Op::Vmap { pages }),
        2 => (1usize..40).prop_map(|pages| Op::MapRam { pages }),
        4 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        2 => (any::<usize>(), 0u8..5).prop_map(|(pick, how)| Op::BadFree { pick, how }),
        1 => Just(Op::Purge),
    ]
}

#[derive(Debug)]
struct Live<'h> {
    addr: usize,
    pages: usize,
    kind: AreaKind,
    tag: u8,
    /// The caller's pages (vmap, vm_map_ram), freed by the test.
    owned: Vec<&'h Page>,
}

fn check(
    host: &kmm_testkit::TestMachine,
    vm: &Vm<'_>,
    live: &[Live<'_>],
) -> Result<(), TestCaseError> {
    let mut spans: Vec<(usize, usize)> = live
        .iter()
        .map(|l| (l.addr, l.addr + l.pages * PAGE_SIZE))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        prop_assert!(w[0].1 <= w[1].0, "overlap: {:x?}", w);
    }
    for l in live {
        for i in 0..l.pages {
            let mut b = [0u8; 2];
            read(host, page_va(l.addr as *const u8, i), &mut b)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(b, [l.tag, i as u8], "area {:#x} page {}", l.addr, i);
        }
        if l.kind != AreaKind::VmapBlock {
            let info = vm.find_vm_area(VirtAddr::new(l.addr));
            prop_assert!(info.is_some_and(|a| a.kind == l.kind && a.size == l.pages * PAGE_SIZE));
            let guard = page_va(l.addr as *const u8, l.pages);
            prop_assert!(
                host.kernel_tables()
                    .lock(host.cpu())
                    .pt
                    .translate(guard)
                    .is_none(),
                "guard page mapped"
            );
        }
    }
    prop_assert!(host.machine().tlb().violations().is_empty());
    Ok(())
}

/// Frees a live area the way its kind is freed, then the caller's pages.
fn release(
    vm: &Vm<'_>,
    buddy: &kmm_buddy::Buddy<'_, kmm_mock::MockCpu>,
    l: Live<'_>,
) -> Result<(), TestCaseError> {
    let p = l.addr as *const u8;
    let fail = |e: &dyn std::fmt::Display| TestCaseError::fail(e.to_string());
    match l.kind {
        AreaKind::Vmalloc => vm.vfree(p),
        AreaKind::Vmap => vm.vunmap(p),
        _ => vm.vm_unmap_ram(p, l.pages),
    }
    .map_err(|e| fail(&e))?;
    for pg in l.owned {
        buddy.free_pages_page(pg, 0).map_err(|e| fail(&e))?;
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let host = rig(32, 1);
    let _cpu0 = host.bind(0);
    let buddy = host.buddy();
    host.slab().shrink_all();
    buddy.drain_local();
    let (pages0, frames0) = (buddy.free_pages_total(), table_frames(&host));
    let vm = vm(&host);
    let mut live: Vec<Live<'_>> = Vec::new();
    let mut tag = 0u8;
    for op in ops {
        tag = tag.wrapping_add(1);
        match op {
            Op::Vmalloc { pages, how } => {
                let r = match how {
                    0 => vm.vmalloc(pages * PAGE_SIZE),
                    1 => vm.vzalloc(pages * PAGE_SIZE - 1),
                    _ => vm.vmalloc_32(pages * PAGE_SIZE),
                };
                let p = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
                let kind = AreaKind::Vmalloc;
                live.push(Live {
                    addr: p.as_ptr() as usize,
                    pages,
                    kind,
                    tag,
                    owned: vec![],
                });
            }
            Op::Vmap { pages } | Op::MapRam { pages } => {
                let owned: Vec<&Page> = (0..pages)
                    .map(|_| buddy.alloc_pages(Gfp::HIGHUSER, 0).unwrap())
                    .collect();
                let (p, kind) = if matches!(op, Op::Vmap { .. }) {
                    (vm.vmap(&owned, PageFlags::KERNEL_RW), AreaKind::Vmap)
                } else if pages > kmm_vmalloc::VMAP_MAX_ALLOC {
                    (
                        vm.vm_map_ram(&owned, PageFlags::KERNEL_RW),
                        AreaKind::MapRam,
                    )
                } else {
                    (
                        vm.vm_map_ram(&owned, PageFlags::KERNEL_RW),
                        AreaKind::VmapBlock,
                    )
                };
                let p = p.map_err(|e| TestCaseError::fail(e.to_string()))?;
                live.push(Live {
                    addr: p.as_ptr() as usize,
                    pages,
                    kind,
                    tag,
                    owned,
                });
            }
            Op::Free { pick } => {
                if live.is_empty() {
                    continue;
                }
                let l = live.swap_remove(pick % live.len());
                release(&vm, buddy, l)?;
                continue;
            }
            Op::BadFree { pick, how } => {
                if live.is_empty() {
                    continue;
                }
                let l = &live[pick % live.len()];
                let p = l.addr as *const u8;
                let got = match (how, l.kind) {
                    (0, _) => vm.vfree(p.wrapping_add(1)),
                    (1, _) if l.pages > 1 => vm.vfree(p.wrapping_add(PAGE_SIZE)),
                    (2, AreaKind::Vmalloc) => vm.vunmap(p),
                    (2, _) | (3, AreaKind::Vmalloc) => vm.iounmap(p),
                    (4, AreaKind::VmapBlock) => vm.vm_unmap_ram(p, l.pages + 1),
                    _ => vm.vfree(p.wrapping_add(l.pages * PAGE_SIZE)),
                };
                prop_assert!(got.is_err(), "a bad free succeeded: {:?} {:?}", how, l);
                if matches!(got, Err(VmallocError::Map(_))) {
                    return Err(TestCaseError::fail("a page-table error on a bad free"));
                }
            }
            Op::Purge => vm.purge(),
        }
        // Stamp the newest area (or re-check the survivors).
        if let Some(l) = live.last()
            && l.tag == tag
        {
            for i in 0..l.pages {
                write(&host, page_va(l.addr as *const u8, i), &[l.tag, i as u8])
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
        }
        check(&host, &vm, &live)?;
    }
    for l in live.drain(..) {
        release(&vm, buddy, l)?;
    }
    vm.vm_unmap_aliases();
    prop_assert_eq!(
        vm.stats().areas,
        0,
        "every area, vmap blocks included, is gone"
    );
    prop_assert_eq!(table_frames(&host), frames0, "every page-table frame back");
    drop(vm);
    host.slab().shrink_all();
    buddy.drain_local();
    prop_assert_eq!(buddy.free_pages_total(), pages0, "every page back");
    Ok(())
}

proptest! {
    #![proptest_config(kmm_testkit::model::proptest_config(48, 2))]

    #[test]
    fn vmalloc_matches_the_model(ops in prop::collection::vec(op(), 1..if cfg!(miri) { 12 } else { 80 })) {
        run(ops)?;
    }
}
