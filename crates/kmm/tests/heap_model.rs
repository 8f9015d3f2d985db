//! The global heap against a model: random allocations (a few bytes to
//! beyond the largest buddy block, alignments up to a page), reallocations
//! and frees; after every step no two live blocks overlap, each is aligned
//! and keeps its bytes; after each case everything is freed and every page
//! is back.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::OnceLock;

use kmm::GlobalHeap;
use kmm_testkit::{MockPlatform, TestMachine};
use proptest::prelude::*;

static HEAP: GlobalHeap<MockPlatform> = GlobalHeap::new();

/// The heap, brought up once for the whole test binary (its machine is
/// leaked: the manager is `'static`), and the free pages right after.
fn heap() -> usize {
    static BASELINE: OnceLock<usize> = OnceLock::new();
    *BASELINE.get_or_init(|| {
        let (machine, cross, mm) = TestMachine::builder()
            .ram_mib(160)
            .no_reserve()
            // SAFETY: the machine and the cross-CPU call are leaked: the
            // manager lives for the rest of the process.
            .boot_mm(|p, params| unsafe { HEAP.init(p, params) });
        let mm = mm.expect("init");
        std::mem::forget((machine, cross));
        mm.buddy().free_pages_total()
    })
}

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        size: usize,
        align_log: u32,
        zero: bool,
    },
    Realloc {
        idx: usize,
        size: usize,
    },
    Free {
        idx: usize,
    },
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 1usize..512,
        3 => 512usize..(256 << 10),
        1 => (4usize << 20)..(9 << 20),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (size(), 0u32..=12, any::<bool>()).prop_map(|(size, align_log, zero)| Op::Alloc { size, align_log, zero }),
        2 => (any::<usize>(), size()).prop_map(|(idx, size)| Op::Realloc { idx, size }),
        3 => any::<usize>().prop_map(|idx| Op::Free { idx }),
    ]
}

struct Block {
    ptr: *mut u8,
    layout: Layout,
    tag: u8,
}

fn fill(b: &Block) {
    // SAFETY: a live block of `layout.size()` bytes.
    unsafe { b.ptr.write_bytes(b.tag, b.layout.size()) };
}

fn intact(b: &Block, len: usize) -> bool {
    // SAFETY: a live block of at least `len` bytes.
    let s = unsafe { std::slice::from_raw_parts(b.ptr, len) };
    s.iter().all(|&x| x == b.tag)
}

fn check(live: &[Block]) -> Result<(), TestCaseError> {
    let mut spans: Vec<(usize, usize)> = live
        .iter()
        .map(|b| (b.ptr.addr(), b.ptr.addr() + b.layout.size()))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        prop_assert!(
            w[0].1 <= w[1].0,
            "blocks overlap: {:x?} and {:x?}",
            w[0],
            w[1]
        );
    }
    for b in live {
        prop_assert!(b.ptr.addr().is_multiple_of(b.layout.align()), "misaligned");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn the_heap_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let baseline = heap();
        let mm = HEAP.get().unwrap();
        let _cpu = mm.cpu().bind(0).unwrap();
        let mut live: Vec<Block> = Vec::new();
        let mut tag = 0u8;
        for op in ops {
            match op {
                Op::Alloc { size, align_log, zero } => {
                    let layout = Layout::from_size_align(size, 1 << align_log).unwrap();
                    // SAFETY: a non-zero layout.
                    let p = unsafe { if zero { HEAP.alloc_zeroed(layout) } else { HEAP.alloc(layout) } };
                    prop_assert!(!p.is_null(), "{layout:?} failed");
                    tag = tag.wrapping_add(1);
                    let b = Block { ptr: p, layout, tag: 0 };
                    if zero {
                        prop_assert!(intact(&b, size), "alloc_zeroed not zeroed");
                    }
                    let b = Block { tag, ..b };
                    fill(&b);
                    live.push(b);
                }
                Op::Realloc { idx, size } if !live.is_empty() => {
                    let i = idx % live.len();
                    let old = &live[i];
                    // SAFETY: a live block with its layout; `size` > 0.
                    let p = unsafe { HEAP.realloc(old.ptr, old.layout, size) };
                    prop_assert!(!p.is_null(), "realloc to {size} failed");
                    let b = Block { ptr: p, layout: Layout::from_size_align(size, old.layout.align()).unwrap(), tag: old.tag };
                    prop_assert!(intact(&b, size.min(old.layout.size())), "realloc lost bytes");
                    fill(&b);
                    live[i] = b;
                }
                Op::Free { idx } if !live.is_empty() => {
                    let b = live.swap_remove(idx % live.len());
                    prop_assert!(intact(&b, b.layout.size()), "a block was overwritten");
                    // SAFETY: a live block with its layout.
                    unsafe { HEAP.dealloc(b.ptr, b.layout) };
                }
                _ => {}
            }
            check(&live)?;
        }
        for b in live.drain(..) {
            prop_assert!(intact(&b, b.layout.size()));
            // SAFETY: a live block with its layout.
            unsafe { HEAP.dealloc(b.ptr, b.layout) };
        }
        prop_assert_eq!(HEAP.refused(), 0);
        mm.vmalloc_allocator().purge();
        mm.slab().shrink_all();
        mm.buddy().drain_local();
        prop_assert_eq!(mm.buddy().free_pages_total(), baseline, "pages not given back");
    }
}
