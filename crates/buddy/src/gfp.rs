//! GFP ("get free pages") flags: where a page may come from and how hard to try.

use kmm_page_frame::ZoneType;

bitflags::bitflags! {
    /// Allocation flags (Linux's `gfp_t`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Gfp: u32 {
        /// Only from ZONE_DMA (below 16 MiB).
        const DMA = 1 << 0;
        /// High memory is acceptable (the zonelist starts at HIGHMEM).
        const HIGHMEM = 1 << 1;
        /// The caller may sleep (and so may wait for reclaim).
        const WAIT = 1 << 4;
        /// High priority: may dip further into the reserve below `min`.
        const HIGH = 1 << 5;
        /// The caller may start physical I/O.
        const IO = 1 << 6;
        /// The caller may call into the filesystem.
        const FS = 1 << 7;
        /// A cache-cold page is wanted (taken from the cold end of the per-CPU list).
        const COLD = 1 << 8;
        /// Do not count or report a failure.
        const NOWARN = 1 << 9;
        /// Zero the page(s).
        const ZERO = 1 << 15;
    }
}

impl Gfp {
    /// For atomic context (interrupts, spinlocks): cannot sleep, may use the
    /// reserve below `min`.
    pub const ATOMIC: Gfp = Gfp::HIGH;
    /// The kernel's ordinary allocation: may sleep, do I/O and call filesystems.
    pub const KERNEL: Gfp = Gfp::WAIT.union(Gfp::IO).union(Gfp::FS);
    /// Like [`Gfp::KERNEL`], for user pages.
    pub const USER: Gfp = Gfp::KERNEL;
    /// User pages that may live in high memory.
    pub const HIGHUSER: Gfp = Gfp::USER.union(Gfp::HIGHMEM);
    /// Cannot do I/O.
    pub const NOIO: Gfp = Gfp::WAIT;
    /// Cannot call into filesystems.
    pub const NOFS: Gfp = Gfp::WAIT.union(Gfp::IO);
    /// Linux's `GFP_DMA` (used with another mask, as in `GFP_KERNEL | GFP_DMA`).
    pub const GFP_DMA: Gfp = Gfp::DMA;

    /// The highest zone the flags allow (Linux's `gfp_zone`).
    pub const fn zone(self) -> ZoneType {
        if self.contains(Gfp::DMA) {
            ZoneType::Dma
        } else if self.contains(Gfp::HIGHMEM) {
            ZoneType::HighMem
        } else {
            ZoneType::Normal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_selection() {
        assert_eq!(Gfp::KERNEL.zone(), ZoneType::Normal);
        assert_eq!(Gfp::HIGHUSER.zone(), ZoneType::HighMem);
        assert_eq!((Gfp::KERNEL | Gfp::DMA).zone(), ZoneType::Dma);
        assert_eq!((Gfp::HIGHUSER | Gfp::DMA).zone(), ZoneType::Dma, "DMA wins");
        assert_eq!(Gfp::ATOMIC.zone(), ZoneType::Normal);
    }
}
