//! [`HighmemWindow`]: one fixmap slot through which the kernel reaches a
//! high-memory frame — which has no direct-map address — for a moment: to zero
//! it for `Gfp::ZERO`, or to write and check a test pattern.
//!
//! The slot is the fixmap's vDSO slot (this kernel has no user space), not a
//! `kmap_atomic` one: pkmap owns those, and the buddy allocator may zero a
//! high-memory page through the window while a `kmap_local_page` is held.

use kmm_hal::{
    FrameSource, KernelLayout, PAGE_SIZE, PageFlags, PageTable, Pfn, PhysAddr, TableReclaim,
    VirtAddr,
};
use kmm_i386::{I386Layout, Mode, Paging};

use crate::smp::{self, KernelCpu};

use crate::frames::BootFrames;
use crate::paging::check;
use crate::tables::KTables;

/// The fixmap slot of the window: Linux's `FIX_VDSO`.
const WINDOW_SLOT: usize = 1;

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

/// The kernel page tables and one fixmap slot that maps one frame at a time.
pub struct HighmemWindow<M: Mode + 'static> {
    tables: &'static KTables<M>,
    va: VirtAddr,
    cpu: KernelCpu,
}

/// The window's address: the page table that holds the slot is allocated
/// now, from `frames`, and kept, so that mapping through the window never
/// needs a frame (the boot frames are retired once the page allocator
/// exists, and the allocator zeroes pages through the window).
pub fn prepare<M: Mode>(
    pt: &mut Paging<M>,
    layout: &I386Layout,
    frames: &mut BootFrames,
) -> VirtAddr {
    let va = layout
        .fixmap()
        .fix_to_virt(WINDOW_SLOT)
        .expect("the layout has a vDSO fixmap slot");
    assert!(
        WINDOW_SLOT < layout.fixmap().kmap_begin,
        "the window slot is a kmap_atomic slot"
    );
    let f = check(
        pt.map(va, PhysAddr::ZERO, PageFlags::KERNEL_RW, frames),
        "highmem window: creating the slot's page table",
    );
    f.flush(pt);
    let (_, f) = check(
        pt.unmap(va, TableReclaim::Keep, frames),
        "highmem window: clearing the slot",
    );
    f.flush(pt);
    va
}

impl<M: Mode + 'static> HighmemWindow<M> {
    /// The window at `va` (from [`prepare`]) over the kernel tables.
    pub fn new(tables: &'static KTables<M>, va: VirtAddr) -> Self {
        HighmemWindow {
            tables,
            va,
            cpu: smp::cpu(),
        }
    }

    /// The window's virtual address.
    pub fn va(&self) -> VirtAddr {
        self.va
    }

    /// Maps frame `pfn` at the window, calls `f` with the window's address (one
    /// page, writable), then unmaps it; the TLB entry is invalidated (INVLPG)
    /// after each change. The tables' lock is held throughout (interrupts
    /// off): `f` must not use the window or the page tables.
    pub fn with_frame<R>(&self, pfn: Pfn, f: impl FnOnce(*mut u8) -> R) -> R {
        let mut g = self.tables.lock(&self.cpu);
        let t = &mut *g;
        let map =
            t.pt.map(self.va, pfn.phys(), PageFlags::KERNEL_RW, &mut NoFrames);
        check(map, "highmem window: map").flush(&t.pt);
        let r = f(self.va.as_mut_ptr());
        let (t, flush) = check(
            t.pt.unmap(self.va, TableReclaim::Keep, &mut NoFrames),
            "highmem window: unmap",
        );
        flush.flush(&g.pt);
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
