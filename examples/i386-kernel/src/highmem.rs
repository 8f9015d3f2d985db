//! [`HighmemWindow`]: one fixmap slot through which the kernel reaches a
//! high-memory frame — which has no direct-map address — for a moment: to zero
//! it for `Gfp::ZERO`, or to write and check a test pattern.

use kmm_hal::{
    FrameSource, KernelLayout, PAGE_SIZE, PageFlags, PageTable, Pfn, PhysAddr, TableReclaim,
    VirtAddr,
};
use kmm_i386::{I386Layout, Mode, Paging};

use crate::frames::BootFrames;
use crate::paging::check;

/// A frame source without frames: once the window exists, mapping through it
/// needs no new page table, so it must never ask for one.
struct NoFrames;

// SAFETY: it never returns a frame.
unsafe impl FrameSource for NoFrames {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        None
    }

    fn free_frame(&mut self, frame: PhysAddr) {
        panic!("highmem window: page-table frame {frame} given back unexpectedly");
    }
}

/// The kernel page tables and one fixmap slot (CPU 0's first `kmap_atomic`
/// slot) that maps one frame at a time.
pub struct HighmemWindow<M: Mode> {
    pt: spin::Mutex<Paging<M>>,
    va: VirtAddr,
}

impl<M: Mode> HighmemWindow<M> {
    /// Takes over the kernel tables `pt` and sets up the window. The page table
    /// that holds the slot is allocated now, from `frames`, and kept: later
    /// mappings need no frame (the boot frames are retired once the page
    /// allocator exists).
    pub fn new(mut pt: Paging<M>, layout: &I386Layout, frames: &mut BootFrames) -> Self {
        let fixmap = layout.fixmap();
        let va = fixmap
            .kmap_slot(0, 0)
            .and_then(|slot| fixmap.fix_to_virt(slot))
            .expect("the layout has a kmap_atomic slot for CPU 0");
        let f = check(
            pt.map(va, PhysAddr::ZERO, PageFlags::KERNEL_RW, frames),
            "highmem window: creating the slot's page table",
        );
        f.flush(&pt);
        let (_, f) = check(
            pt.unmap(va, TableReclaim::Keep, frames),
            "highmem window: clearing the slot",
        );
        f.flush(&pt);
        HighmemWindow {
            pt: spin::Mutex::new(pt),
            va,
        }
    }

    /// The window's virtual address.
    pub fn va(&self) -> VirtAddr {
        self.va
    }

    /// Page-table pages the kernel tables use.
    pub fn table_pages(&self) -> usize {
        self.pt.lock().table_pages()
    }

    /// Maps frame `pfn` at the window, calls `f` with the window's address (one
    /// page, writable), then unmaps it; the TLB entry is invalidated (INVLPG)
    /// after each change. `f` must not use the window itself.
    pub fn with_frame<R>(&self, pfn: Pfn, f: impl FnOnce(*mut u8) -> R) -> R {
        let mut pt = self.pt.lock();
        let map = pt.map(self.va, pfn.phys(), PageFlags::KERNEL_RW, &mut NoFrames);
        check(map, "highmem window: map").flush(&*pt);
        let r = f(self.va.as_mut_ptr());
        let (t, flush) = check(
            pt.unmap(self.va, TableReclaim::Keep, &mut NoFrames),
            "highmem window: unmap",
        );
        flush.flush(&*pt);
        assert_eq!(t.frame, pfn.phys(), "highmem window mapped the wrong frame");
        r
    }

    /// Zeroes frame `pfn` through the window (the buddy allocator's
    /// `zero_highmem` hook).
    ///
    /// # Safety
    /// The caller owns the frame: nothing else uses its bytes.
    pub unsafe fn zero(&self, pfn: Pfn) {
        self.with_frame(pfn, |p| {
            // SAFETY: the window maps the whole page of `pfn`, writable, and the
            // caller owns that frame.
            unsafe { p.write_bytes(0, PAGE_SIZE) }
        });
    }
}
