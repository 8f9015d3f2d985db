//! The kernel page tables once the page allocator exists: one
//! [`KernelTables`] (the tables and their frame source behind one IRQ-safe
//! lock) shared by the highmem window, vmalloc and pkmap, whose new
//! page-table pages come from the buddy allocator's low memory
//! ([`LowmemFrames`]).

use kmm_buddy::{Freed, Gfp};
use kmm_hal::{FrameSource, KernelTables, PhysAddr};
use kmm_i386::Paging;

use crate::buddy_check::KernelBuddy;

/// The kernel's shared page tables.
pub type KTables<M> = KernelTables<Paging<M>, LowmemFrames>;

/// Page-table pages from the buddy allocator: order-0 `Gfp::KERNEL` pages,
/// which come from NORMAL or DMA, so they lie in low memory and the tables
/// reach them through the direct map. Until [`LowmemFrames::attach`] gives
/// it the allocator (the tables exist before the allocator does) it has no
/// frame to give.
#[derive(Debug, Default)]
pub struct LowmemFrames {
    buddy: Option<&'static KernelBuddy<'static>>,
    allocated: usize,
    freed: usize,
}

impl LowmemFrames {
    /// A source with no allocator yet.
    pub const fn new() -> LowmemFrames {
        LowmemFrames {
            buddy: None,
            allocated: 0,
            freed: 0,
        }
    }

    /// Takes frames from `buddy` from now on.
    pub fn attach(&mut self, buddy: &'static KernelBuddy<'static>) {
        self.buddy = Some(buddy);
    }

    /// Page-table pages taken from the allocator and not given back.
    pub fn in_use(&self) -> usize {
        self.allocated - self.freed
    }
}

// SAFETY: every frame returned is an order-0 block the buddy allocator has
// just handed to this source (so nothing else uses it until `free_frame`
// gives it back), and `alloc_frame` checks that it lies in the direct map
// (Gfp::KERNEL never allocates from HIGHMEM; a frame outside it would be
// given back and `None` returned). The kernel tables are built over that
// direct map (paging::enable).
unsafe impl FrameSource for LowmemFrames {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        let buddy = self.buddy?;
        let page = buddy.alloc_pages(Gfp::KERNEL, 0)?;
        let mem = buddy.mem();
        let pa = mem.page_to_phys(page).expect("a page of mem_map");
        if !mem.direct_map().contains_page(pa) {
            let _ = buddy.free_pages_page(page, 0);
            return None;
        }
        self.allocated += 1;
        Some(pa)
    }

    fn free_frame(&mut self, frame: PhysAddr) {
        let buddy = self
            .buddy
            .expect("a page-table page given back before the allocator was attached");
        let page = frame
            .pfn()
            .ok()
            .and_then(|pfn| buddy.mem().pfn_to_page(pfn).ok())
            .unwrap_or_else(|| panic!("page-table page {frame} is not in mem_map"));
        match buddy.free_pages_page(page, 0) {
            Ok(Freed::Released) => self.freed += 1,
            r => panic!("freeing page-table page {frame}: {r:?}"),
        }
    }
}
