//! A mempool with a reserve (kmm-slab's `Mempool`): over a cache of 32 KiB
//! DMA buffers, taken until ZONE_DMA runs dry, so the last elements come from
//! the reserve; given back, refilling the reserve first; then the pool is
//! destroyed, the cache shrunk and destroyed, and ZONE_DMA is as before.
//!
//! "As before" is measured with every cache shrunk, at the start and at the
//! end alike. When ZONE_DMA runs dry, the slab allocator's reclaim shrinks
//! every cache: the idle slabs and per-CPU objects that earlier checks left in
//! other caches go back to the zone. On a machine whose memory is all ZONE_DMA
//! (16 MiB or less) those caches grew there, so a baseline taken without
//! shrinking counted their idle slabs as in use, and the zone ended with more
//! free pages than it began with. Shrinking before both measurements compares
//! the state reclaim leaves with itself; any idle slabs grown meanwhile (for the
//! foreign `kmalloc` below, for the `Vec` of elements) go back at the end too. A
//! pool that leaks still shows: a leaked element or reserve array is an object
//! in use, whose slab no shrink frees, and a leaked page is never free.

use alloc::vec::Vec;
use core::ptr::NonNull;

use kmm_buddy::Gfp;
use kmm_i386::PAGE_OFFSET;
use kmm_page_frame::ZoneType;
use kmm_slab::{Mempool, PoolSource, SlabError, SlabFlags};

use crate::heap::KernelSlab;
use crate::serial::kprintln;

/// Bytes of one DMA buffer (an order-3 slab each).
const BUF_SIZE: usize = 32 << 10;
/// Elements the pool keeps in reserve.
const RESERVE: usize = 4;
/// The end of ZONE_DMA.
const DMA_LIMIT: usize = 16 << 20;

/// Free pages of ZONE_DMA (node 0), per-CPU lists drained first.
fn dma_free(slab: &KernelSlab) -> usize {
    let b = slab.buddy();
    b.drain_local();
    b.zones()[ZoneType::Dma as usize].free_pages()
}

/// Free pages of ZONE_DMA with every cache shrunk first: the state the slab
/// allocator's reclaim leaves when a zone runs dry (see the module docs).
fn dma_free_shrunk(slab: &KernelSlab) -> usize {
    slab.shrink_all();
    dma_free(slab)
}

/// Runs the check.
pub fn run(slab: &KernelSlab) {
    let free0 = dma_free_shrunk(slab);
    let cache = slab
        .kmem_cache_create("kmm_dma_buf", BUF_SIZE, 0, SlabFlags::CACHE_DMA, None)
        .expect("creating the DMA buffer cache");
    let pool = Mempool::create(slab, RESERVE, PoolSource::Cache(cache)).expect("mempool_create");
    assert_eq!(pool.reserved(), RESERVE);
    let mut held: Vec<NonNull<u8>> = Vec::new();
    let mut from_reserve = 0;
    let err = loop {
        let before = pool.reserved();
        match pool.alloc(Gfp::KERNEL) {
            Ok(e) => {
                if pool.reserved() < before {
                    from_reserve += 1;
                }
                let pa = e.as_ptr().addr() - PAGE_OFFSET;
                assert!(pa + BUF_SIZE <= DMA_LIMIT, "DMA buffer at {pa:#x}");
                held.push(e);
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err, SlabError::OutOfMemory, "an empty pool on a dry zone");
    assert_eq!((from_reserve, pool.reserved()), (RESERVE, 0));
    let low = dma_free(slab);
    // An element of another source is refused before it can enter the reserve.
    let foreign = slab.kmalloc(64, Gfp::KERNEL).expect("kmalloc(64)");
    assert_eq!(pool.free(foreign), Err(SlabError::WrongCache));
    slab.kfree(foreign.as_ptr()).expect("kfree");
    let n = held.len();
    for (i, e) in held.drain(..).enumerate() {
        pool.free(e).expect("mempool_free");
        assert_eq!(
            pool.reserved(),
            (i + 1).min(RESERVE),
            "the reserve refills first"
        );
    }
    drop(held);
    let stats = slab.cache_stats(cache).expect("the cache exists");
    assert_eq!(
        stats.active_objs, RESERVE,
        "objects out besides the reserve"
    );
    pool.destroy().map_err(|(_, e)| e).expect("mempool_destroy");
    let before = dma_free(slab);
    let reported = slab.kmem_cache_shrink(cache).expect("kmem_cache_shrink");
    let pages = dma_free(slab) - before;
    // SAFETY: only the boot CPU runs yet (the others start in the SMP
    // phase), and nothing uses the cache any more.
    unsafe { slab.kmem_cache_destroy(cache) }.expect("kmem_cache_destroy");
    let free1 = dma_free_shrunk(slab);
    assert_eq!(free1, free0, "ZONE_DMA free pages after the pool");
    kprintln!(
        "kmm: mempool ok ({n} DMA buffers of {} KiB taken until ZONE_DMA ran dry ({free0} -> {low} free pages), the last {from_reserve} from the reserve of {RESERVE}, then OutOfMemory; a foreign element refused; all given back, reserve refilled first; pool destroyed, cache shrunk ({pages} pages back, {reported} reported) and destroyed; ZONE_DMA free {free1})",
        BUF_SIZE >> 10
    );
}
