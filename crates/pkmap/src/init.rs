//! Linux's `permanent_kmaps_init` (and the fixmap half of `pagetable_init`):
//! the page-table pages of the pkmap window and of the `kmap_atomic` slots
//! are built once, at set-up, so that neither `kmap` nor `kmap_local_page`
//! (which may run in an interrupt handler) ever needs a frame.

use kmm_hal::{FrameSource, PAGE_SIZE, PageTable, PhysAddr, TableReclaim, Tables, VirtAddr};

use crate::ctx::KMAP_PROT;
use crate::error::InitError;

/// Makes sure every page of `[start, start + pages * PAGE_SIZE)` has its
/// page-table page, and that none is mapped. For each page-table span (a
/// large page's worth of addresses, or every page if the tables have no
/// large pages) it maps one page of the span and unmaps it, keeping the
/// table. The caller flushes the range from every TLB afterwards.
pub(crate) fn populate<P: PageTable, F: FrameSource>(
    t: &mut Tables<P, F>,
    start: VirtAddr,
    pages: usize,
) -> Result<(), InitError> {
    let span = t.pt.large_page_size().unwrap_or(PAGE_SIZE);
    for i in 0..pages {
        let va = VirtAddr::new(start.as_usize() + i * PAGE_SIZE);
        if t.pt.translate(va).is_some() {
            return Err(InitError::WindowInUse(va));
        }
        if i == 0 || va.as_usize().is_multiple_of(span) {
            // Frame 0 is never touched through this mapping: it exists only
            // for the page-table walk to build the table, and goes at once.
            t.pt.map(va, PhysAddr::new(0), KMAP_PROT, &mut t.frames)
                .map_err(InitError::Map)?
                .ignore();
            let (_, flush) =
                t.pt.unmap(va, TableReclaim::Keep, &mut t.frames)
                    .map_err(InitError::Map)?;
            // The caller's kernel-wide flush covers it.
            flush.ignore();
        }
    }
    Ok(())
}
