//! The per-CPU refill hands out the pages, in the order, that one `rmqueue`
//! per page would (it moves a free block whole when it fits in the batch):
//! the order-0 sequence through the per-CPU lists equals the one that
//! bypasses them, on free lists fragmented first.

mod common;

use common::{no_reserve, rig};
use kmm_buddy::{BuddyConfig, Freed, Gfp};

/// The frames of the first `n` order-0 allocations on a 64 MiB machine whose
/// free lists a fixed pattern of allocations of orders 1–4 and frees of a
/// third of them fragmented first (blocks above order 0 never pass through
/// the per-CPU lists, so both paths start from the same free lists).
fn sequence(bypass_pcp: bool, blocks: usize, n: usize) -> Vec<usize> {
    let config = BuddyConfig {
        bypass_pcp,
        ..no_reserve()
    };
    let r = rig(64, 64, 1, false, config);
    let _cpu = r.bind(0);
    let b = r.buddy();
    let pfn = |p| b.mem().page_to_pfn(p).expect("a descriptor").as_usize();
    let blocks: Vec<_> = (0..blocks)
        .map(|i| {
            let order = 1 + (i * 7) % 4;
            (b.alloc_pages(Gfp::KERNEL, order).expect("room"), order)
        })
        .collect();
    for (i, &(page, order)) in blocks.iter().enumerate() {
        if i % 3 == 1 {
            assert_eq!(b.free_pages_page(page, order), Ok(Freed::Released));
        }
    }
    (0..n)
        .map(|_| pfn(b.alloc_pages(Gfp::KERNEL, 0).expect("room")))
        .collect()
}

#[test]
fn per_cpu_refill_hands_out_what_rmqueue_would() {
    // Smaller under Miri, which runs it on the software backing too.
    let (blocks, n) = if cfg!(miri) { (60, 300) } else { (600, 3000) };
    let pcp = sequence(false, blocks, n);
    let direct = sequence(true, blocks, n);
    let first_diff = pcp.iter().zip(&direct).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "the sequences part");
    // The fragmenting frees left holes of 2–16 frames: the sequence is not
    // one run of frames.
    let jumps = pcp.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert!(jumps > blocks / 6, "{jumps} jumps");
}
