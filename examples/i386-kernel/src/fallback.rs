//! Zonelist fallback and watermark protection on the real memory map: with
//! HIGHMEM used up, `Gfp::HIGHUSER` falls back to NORMAL; with NORMAL used up,
//! `Gfp::KERNEL` falls back to DMA but leaves DMA its `lowmem_reserve`, which
//! `Gfp::DMA` can still use; `Gfp::ATOMIC` dips below NORMAL's `min`.

use kmm_buddy::{Freed, Gfp, MAX_ORDER, Watermark};
use kmm_hal::Pfn;
use kmm_i386::Mode;
use kmm_page_frame::{Page, ZoneType};

use crate::buddy_check::{KernelBuddy, linux_watermark_ok};
use crate::highmem::HighmemWindow;
use crate::serial::kprintln;

/// The end of a [`Held`] chain.
const END: u32 = u32::MAX;

/// Blocks held by the test, chained through their first two words (the next
/// block's frame number and this block's order), so that thousands of them
/// need no array.
struct Held<'w, M: Mode + 'static> {
    window: &'w HighmemWindow<M>,
    head: u32,
    blocks: usize,
}

impl<'w, M: Mode + 'static> Held<'w, M> {
    fn new(window: &'w HighmemWindow<M>) -> Self {
        Held {
            window,
            head: END,
            blocks: 0,
        }
    }

    /// Calls `f` with the first page of frame `pfn`: through the direct map in
    /// low memory, through the window in high memory.
    fn with_page<R>(&self, b: &KernelBuddy<'_>, pfn: u32, f: impl FnOnce(*mut u32) -> R) -> R {
        let pfn = Pfn::new(pfn as usize);
        match b.mem().direct_map().phys_to_virt(pfn.phys()) {
            Some(va) => f(va.as_mut_ptr()),
            None => self.window.with_frame(pfn, |p| f(p.cast())),
        }
    }

    /// Keeps the allocated block of `2^order` frames at `page`.
    fn push(&mut self, b: &KernelBuddy<'_>, page: &Page, order: usize) {
        let pfn = b.mem().page_to_pfn(page).expect("in mem_map").as_usize() as u32;
        let next = self.head;
        self.with_page(b, pfn, |p| {
            // SAFETY: the block is allocated to us; `p` maps its first page, of
            // which the first two words are written.
            unsafe {
                p.write_volatile(next);
                p.add(1).write_volatile(order as u32);
            }
        });
        self.head = pfn;
        self.blocks += 1;
    }

    /// Frees every block held.
    fn free_all(&mut self, b: &KernelBuddy<'_>) {
        while self.head != END {
            let pfn = self.head;
            // SAFETY: the block at `pfn` is still ours; push wrote these words.
            let (next, order) = self.with_page(b, pfn, |p| unsafe {
                (p.read_volatile(), p.add(1).read_volatile() as usize)
            });
            let page = b.mem().pfn_to_page(Pfn::new(pfn as usize)).expect("pfn");
            match b.free_pages_page(page, order) {
                Ok(Freed::Released) => {}
                r => panic!("freeing the held order-{order} block at pfn {pfn:#x}: {r:?}"),
            }
            self.head = next;
            self.blocks -= 1;
        }
    }
}

/// Free pages of a zone, its free lists and per-CPU lists together.
fn free(b: &KernelBuddy<'_>, t: ZoneType) -> usize {
    let z = &b.zones()[t as usize];
    z.free_pages() + z.pcp_pages()
}

/// HIGHMEM, used up by order-10 blocks, sends the next `Gfp::HIGHUSER`
/// block to NORMAL.
fn highmem_to_normal<M: Mode + 'static>(b: &KernelBuddy<'_>, held: &mut Held<'_, M>) {
    let top = MAX_ORDER - 1;
    let spill = loop {
        let p = b
            .alloc_pages(Gfp::HIGHUSER | Gfp::NOWARN, top)
            .expect("low memory still has order-10 blocks");
        if p.zone_type() != ZoneType::HighMem {
            break p;
        }
        held.push(b, p, top);
    };
    let n = held.blocks;
    held.push(b, spill, top);
    assert_eq!(
        spill.zone_type(),
        ZoneType::Normal,
        "HIGHUSER fell back past NORMAL"
    );
    let low = b.zones()[ZoneType::HighMem as usize].watermark(Watermark::Low);
    kprintln!(
        "kmm: fallback: {n} order-10 blocks from HighMem (then {} pages free, low watermark {low}); the next came from Normal",
        free(b, ZoneType::HighMem)
    );
    held.free_all(b);
}

/// Runs the fallback and protection checks; every block is freed again.
pub fn run<M: Mode + 'static>(b: &KernelBuddy<'_>, window: &HighmemWindow<M>) {
    let mut held = Held::new(window);
    if b.zones()[ZoneType::HighMem as usize].managed() > 0 {
        highmem_to_normal(b, &mut held);
    }

    let zones = b.zones();
    if zones[ZoneType::Dma as usize].managed() == 0
        || zones[ZoneType::Normal as usize].managed() == 0
    {
        kprintln!("kmm: fallback: no NORMAL and DMA zones to fall back between");
        return;
    }
    // Use up NORMAL with Gfp::KERNEL, largest blocks first, until nothing
    // more is given.
    let (mut pages, mut from_dma) = (0, 0);
    for order in (0..MAX_ORDER).rev() {
        while let Some(p) = b.alloc_pages(Gfp::KERNEL | Gfp::NOWARN, order) {
            assert_ne!(p.zone_type(), ZoneType::HighMem, "GFP_KERNEL got highmem");
            if p.zone_type() == ZoneType::Dma {
                from_dma += 1 << order;
            }
            pages += 1 << order;
            held.push(b, p, order);
        }
    }
    let (dma, normal) = (
        &b.zones()[ZoneType::Dma as usize],
        &b.zones()[ZoneType::Normal as usize],
    );
    let protected = dma.lowmem_reserve(ZoneType::Normal) + dma.watermark(Watermark::Min);
    kprintln!(
        "kmm: fallback: GFP_KERNEL took {pages} pages ({from_dma} from DMA) in {} blocks; left free: Normal {} (min {}), DMA {} (min {} + lowmem_reserve {})",
        held.blocks,
        free(b, ZoneType::Normal),
        normal.watermark(Watermark::Min),
        free(b, ZoneType::Dma),
        dma.watermark(Watermark::Min),
        dma.lowmem_reserve(ZoneType::Normal)
    );
    assert!(from_dma > 0, "GFP_KERNEL never fell back to DMA");
    assert!(
        free(b, ZoneType::Dma) >= protected,
        "GFP_KERNEL ate into DMA's protection"
    );
    let (_, batch) = normal.pcp()[0].limits();
    assert!(
        free(b, ZoneType::Normal) + batch >= normal.watermark(Watermark::Min),
        "GFP_KERNEL went below NORMAL's min watermark"
    );

    // GFP_DMA may still use DMA above its min (the lowmem_reserve kept it
    // there); GFP_ATOMIC may go below min, in NORMAL first.
    let ordinary = (false, false);
    let want_dma = linux_watermark_ok(dma, 0, Watermark::Min, ordinary, ZoneType::Dma)
        .then_some(ZoneType::Dma);
    let got_dma = b.alloc_pages(Gfp::KERNEL | Gfp::DMA | Gfp::NOWARN, 0);
    let atomic = (true, true);
    let want_atomic = [normal, dma]
        .into_iter()
        .find(|z| linux_watermark_ok(z, 0, Watermark::Min, atomic, ZoneType::Normal))
        .map(|z| z.kind());
    let got_atomic = b.alloc_pages(Gfp::ATOMIC | Gfp::NOWARN, 0);
    assert!(
        b.alloc_pages(Gfp::KERNEL | Gfp::NOWARN, 0).is_none(),
        "GFP_KERNEL got a page after it was refused"
    );
    let name = |p: Option<&Page>| p.map_or("nowhere", |p| p.zone_type().name());
    kprintln!(
        "kmm: fallback: then GFP_DMA got a page from {}, GFP_ATOMIC (below min) from {} ({} low events in Normal); freeing",
        name(got_dma),
        name(got_atomic),
        normal.low_events()
    );
    assert_eq!(got_dma.map(Page::zone_type), want_dma, "GFP_DMA");
    assert_eq!(got_atomic.map(Page::zone_type), want_atomic, "GFP_ATOMIC");
    for p in [got_dma, got_atomic].into_iter().flatten() {
        held.push(b, p, 0);
    }
    held.free_all(b);
}
