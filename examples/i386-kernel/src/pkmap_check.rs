//! Every free high-memory page through `kmap`: the pages are taken from the
//! buddy allocator in blocks, largest first, each page stamped through a
//! persistent kmap as its block arrives; once HIGHMEM is used up, every page
//! is mapped again and its stamp checked, then every block is freed. Far more
//! pages than the LAST_PKMAP entries pass through the window, so
//! `flush_all_zero_pkmaps` runs hundreds of times, and most pages come back
//! at another pkmap address than the one they were stamped through.

use alloc::vec::Vec;

use kmm_buddy::{Freed, Gfp, MAX_ORDER};
use kmm_hal::{PAGE_SIZE, Pfn};
use kmm_i386::{Mode, Paging};
use kmm_page_frame::{Page, ZoneType};
use kmm_pkmap::{Pkmap, SpinWait};

use crate::buddy_check::KernelBuddy;
use crate::serial::kprintln;
use crate::tables::LowmemFrames;

/// The kernel's pkmap.
pub type KernelPkmap<M> =
    Pkmap<'static, Paging<M>, LowmemFrames, crate::smp::KernelTlb, crate::smp::KernelCpu, SpinWait>;

/// The last word of a page.
const LAST_WORD: usize = PAGE_SIZE / 4 - 1;

/// The stamp of frame `pfn`: distinct for every frame (an odd multiplier is
/// a bijection of `u32`).
fn stamp(pfn: usize) -> u32 {
    (pfn as u32).wrapping_mul(0x9E37_79B9) ^ 0x6B6D_0000
}

/// Maps `page` (frame `pfn`) with `kmap`, checks the address is a pkmap
/// entry, calls `f` with it, and unmaps it.
fn with_kmap<M: Mode, R>(
    pkmap: &KernelPkmap<M>,
    page: &Page,
    pfn: usize,
    f: impl FnOnce(*mut u32) -> R,
) -> R {
    let va = pkmap
        .kmap(page)
        .unwrap_or_else(|e| panic!("kmap of pfn {pfn:#x}: {e}"));
    let base = pkmap.pkmap_base().as_usize();
    let entry = (va.as_usize() - base) / PAGE_SIZE;
    assert!(
        va.as_usize() >= base && entry < pkmap.last_pkmap(),
        "kmap of highmem pfn {pfn:#x} returned {va}, outside the pkmap window"
    );
    let r = f(va.as_mut_ptr());
    pkmap
        .kunmap(page)
        .unwrap_or_else(|e| panic!("kunmap of pfn {pfn:#x}: {e}"));
    r
}

/// Stamps (`write`) or checks every page of the block of `2^order` frames at
/// `pfn`; returns the pages whose stamp differed.
fn pass<M: Mode + 'static>(
    b: &KernelBuddy<'_>,
    pkmap: &KernelPkmap<M>,
    pfn: usize,
    order: usize,
    write: bool,
) -> usize {
    let mut bad = 0;
    for f in pfn..pfn + (1 << order) {
        let page = b
            .mem()
            .pfn_to_page(Pfn::new(f))
            .expect("a frame of mem_map");
        let s = stamp(f);
        bad += with_kmap(pkmap, page, f, |p| {
            // SAFETY: the block is allocated to this check, and `p` maps the
            // whole page of frame `f`, writable, until `kunmap`.
            unsafe {
                if write {
                    p.write_volatile(s);
                    p.add(LAST_WORD).write_volatile(!s);
                    0
                } else {
                    usize::from(p.read_volatile() != s || p.add(LAST_WORD).read_volatile() != !s)
                }
            }
        });
    }
    bad
}

/// Free pages of HIGHMEM, its free lists and per-CPU lists together.
fn highmem_free(b: &KernelBuddy<'_>) -> usize {
    let z = &b.zones()[ZoneType::HighMem as usize];
    z.free_pages() + z.pcp_pages()
}

/// Runs the check; every page is freed again.
pub fn run<M: Mode + 'static>(b: &KernelBuddy<'static>, pkmap: &KernelPkmap<M>) {
    let managed = b.zones()[ZoneType::HighMem as usize].managed();
    if managed == 0 {
        kprintln!("kmm: pkmap: no HIGHMEM zone; nothing to stamp");
        return;
    }
    let before = pkmap.stats();
    let free_before = highmem_free(b);
    // Atomic: below the watermarks too, so that only the last reserve stays.
    let gfp = Gfp::HIGHMEM | Gfp::ATOMIC | Gfp::NOWARN;
    let mut held: Vec<(u32, u8)> = Vec::new();
    let mut pages = 0;
    for order in (0..MAX_ORDER).rev() {
        while let Some(page) = b.alloc_pages(gfp, order) {
            if page.zone_type() != ZoneType::HighMem {
                assert_eq!(
                    b.free_pages_page(page, order),
                    Ok(Freed::Released),
                    "freeing a low-memory block"
                );
                break;
            }
            let pfn = b.mem().page_to_pfn(page).expect("in mem_map").as_usize();
            assert_eq!(pass(b, pkmap, pfn, order, true), 0, "stamping");
            held.push((pfn as u32, order as u8));
            pages += 1 << order;
        }
    }
    let left = highmem_free(b);
    assert_eq!(
        pages + left,
        free_before,
        "highmem pages held + free != free before"
    );
    let mut bad = 0;
    for &(pfn, order) in &held {
        bad += pass(b, pkmap, pfn as usize, order.into(), false);
    }
    assert_eq!(bad, 0, "{bad} highmem pages lost their stamp");
    for &(pfn, order) in &held {
        let page = b.mem().pfn_to_page(Pfn::new(pfn as usize)).expect("pfn");
        match b.free_pages_page(page, order.into()) {
            Ok(Freed::Released) => {}
            r => panic!("freeing the order-{order} block at pfn {pfn:#x}: {r:?}"),
        }
    }
    assert_eq!(highmem_free(b), free_before, "highmem pages not all back");
    if let Err(e) = pkmap.check() {
        panic!("pkmap consistency check: {e}");
    }
    let after = pkmap.stats();
    let runs = after.flush_all_zero_runs - before.flush_all_zero_runs;
    // Each pass maps every page anew at least once the previous pass moved
    // on: a wrap-around every LAST_PKMAP new mappings, at the least.
    assert!(
        runs >= pages / pkmap.last_pkmap(),
        "{runs} flush_all_zero_pkmaps passes for {pages} pages and {} entries",
        pkmap.last_pkmap()
    );
    kprintln!(
        "kmm: pkmap: every free HIGHMEM page stamped through kmap and verified: {pages} pages in {} blocks (all but the {left} of the atomic reserve), {runs} flush_all_zero_pkmaps passes, {} kernel TLB flushes, {} waits (LAST_PKMAP={})",
        held.len(),
        after.kernel_flushes - before.kernel_flushes,
        after.waits - before.waits,
        pkmap.last_pkmap()
    );
}
