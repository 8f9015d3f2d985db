//! [`PageTableFrames`]: the kernel page tables' page-table pages once the
//! buddy allocator exists (Linux's `pte_alloc_kernel` takes them from the
//! page allocator with `GFP_KERNEL`).

use kmm_buddy::{Buddy, Freed, Gfp};
use kmm_hal::{Cpu, FrameSource, PhysAddr};

/// Order-0 `Gfp::KERNEL` pages from the buddy allocator, which lie in low
/// memory (NORMAL or DMA), so the tables reach them through the direct map.
/// Until [`PageTableFrames::attach`] gives it the allocator (the tables are
/// built before it) it has no frame to give.
pub struct PageTableFrames<'a, C: Cpu> {
    buddy: Option<&'a Buddy<'a, C>>,
    allocated: usize,
    freed: usize,
}

impl<C: Cpu> core::fmt::Debug for PageTableFrames<'_, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PageTableFrames")
            .field("attached", &self.buddy.is_some())
            .field("in_use", &self.in_use())
            .finish()
    }
}

impl<'a, C: Cpu> PageTableFrames<'a, C> {
    /// A source with no allocator yet.
    pub const fn new() -> Self {
        PageTableFrames {
            buddy: None,
            allocated: 0,
            freed: 0,
        }
    }

    /// Takes frames from `buddy` from now on.
    pub fn attach(&mut self, buddy: &'a Buddy<'a, C>) {
        self.buddy = Some(buddy);
    }

    /// Page-table pages taken from the allocator and not given back.
    pub fn in_use(&self) -> usize {
        self.allocated - self.freed
    }
}

impl<C: Cpu> Default for PageTableFrames<'_, C> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every frame returned is an order-0 block the buddy allocator has
// just handed to this source, so nothing else uses it until `free_frame`
// gives it back; `alloc_frame` checks that it lies in the direct map (a
// frame outside it is given back and `None` returned), which the kernel
// tables map for as long as they live.
unsafe impl<C: Cpu> FrameSource for PageTableFrames<'_, C> {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        let buddy = self.buddy?;
        let page = buddy.alloc_pages(Gfp::KERNEL, 0)?;
        let mem = buddy.mem();
        let pa = mem.page_to_phys(page).ok()?;
        if !mem.direct_map().contains_page(pa) {
            let _ = buddy.free_pages_page(page, 0);
            return None;
        }
        self.allocated += 1;
        Some(pa)
    }

    fn free_frame(&mut self, frame: PhysAddr) {
        let Some(buddy) = self.buddy else {
            return;
        };
        let page = frame
            .pfn()
            .ok()
            .and_then(|pfn| buddy.mem().pfn_to_page(pfn).ok());
        if let Some(page) = page
            && let Ok(Freed::Released) = buddy.free_pages_page(page, 0)
        {
            self.freed += 1;
        }
    }
}
