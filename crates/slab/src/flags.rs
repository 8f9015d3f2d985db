//! [`SlabFlags`]: how a cache lays out and checks its objects.

bitflags::bitflags! {
    /// Cache creation flags (Linux's `SLAB_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SlabFlags: u32 {
        /// Align objects to the hardware cache line (64 bytes), or to half, a
        /// quarter… of it for objects small enough to share a line.
        const HWCACHE_ALIGN = 1 << 0;
        /// Take slabs from ZONE_DMA.
        const CACHE_DMA = 1 << 1;
        /// Fill free objects with a pattern and check it on allocation
        /// (effective with the `debug` feature).
        const POISON = 1 << 2;
        /// Guard each object with red zones checked on free (effective with
        /// the `debug` feature).
        const RED_ZONE = 1 << 3;
        /// Objects are reclaimable (accounting only).
        const RECLAIM_ACCOUNT = 1 << 4;
    }
}

/// The hardware cache line size assumed for alignment and colouring.
pub const CACHE_LINE: usize = 64;
