//! Page-exact runs: an allocated block split into frames (Linux's
//! `split_page`), and a run of exactly as many frames as a size needs, the
//! rest of its power-of-two block given back at once (Linux's
//! `alloc_pages_exact` / `free_pages_exact`).

use kmm_hal::{Cpu, PAGE_SIZE, Pfn};
use kmm_page_frame::{Page, PgFlags};

use crate::buddy::Buddy;
use crate::{FreeError, Gfp, MAX_ORDER, aligned_blocks};

/// The flags an allocated frame's owner may not have left on a frame it
/// hands back: anything but HIGHMEM, HEAD and RESERVE says the frame is
/// still in use (or free).
const IN_USE: PgFlags = PgFlags::RESERVED
    .union(PgFlags::BUDDY)
    .union(PgFlags::PCP)
    .union(PgFlags::SLAB)
    .union(PgFlags::LINKED)
    .union(PgFlags::KMALLOC)
    .union(PgFlags::VMALLOC)
    .union(PgFlags::SLAB_INTERNAL);

impl<'a, C: Cpu> Buddy<'a, C> {
    /// Splits the allocated block of `2^order` frames headed by `page` into
    /// `2^order` allocated frames, each freed on its own with order 0
    /// (Linux's `split_page`). The head keeps its references; every other
    /// frame gets one.
    ///
    /// Refused, with nothing changed, as [`Buddy::free_pages_page`] would
    /// refuse freeing the block (not ours, free, another order, a slab or
    /// kmalloc page, …), and if a later frame of the block is marked in use
    /// by its owner ([`FreeError::Slab`], [`FreeError::Kmalloc`],
    /// [`FreeError::Vmalloc`], [`FreeError::Linked`], or
    /// [`FreeError::NotAllocated`] for any other mark).
    pub fn split_page(&self, page: &Page, order: usize) -> Result<(), FreeError> {
        let head = self.check_free(page, order)?;
        let frames = 1usize << order;
        for i in 1..frames {
            let tail = self.frame(head.pfn + i);
            let f = tail.flags();
            if f.intersects(IN_USE) {
                return Err(Self::in_use(f));
            }
        }
        let keep = head.page.flags() & PgFlags::RESERVE;
        for i in 1..frames {
            let tail = self.frame(head.pfn + i);
            // SAFETY: the owner contract: the caller owns the allocated block
            // (checked above) and hands its frames over as frames; these are
            // the words of an allocated order-0 head.
            unsafe {
                tail.replace_flags(PgFlags::HIGHMEM, PgFlags::HEAD | keep);
                tail.set_private(0);
                tail.set_count(1);
            }
        }
        // SAFETY: as above: the head is an allocated order-0 frame now.
        unsafe { head.page.set_private(0) };
        Ok(())
    }

    /// Allocates a run of `size.div_ceil(PAGE_SIZE)` frames, aligned to the
    /// power of two above that count (Linux's `alloc_pages_exact`): a block of
    /// that order, whose frames past the run go straight back to the free
    /// lists as the largest aligned blocks they form. Each frame of the run is
    /// an allocated order-0 frame; free the run with
    /// [`Buddy::free_pages_exact`] (or frame by frame). `None` if `size` is 0,
    /// needs a block of `MAX_ORDER` or more, or no block is free.
    pub fn alloc_pages_exact(&self, gfp: Gfp, size: usize) -> Option<&'a Page> {
        let frames = size.div_ceil(PAGE_SIZE);
        if frames == 0 {
            return None;
        }
        let order = frames.next_power_of_two().trailing_zeros() as usize;
        if order >= MAX_ORDER {
            return None;
        }
        let page = self.alloc_pages(gfp, order)?;
        let pfn = self.pfn_of(page);
        let keep = page.flags() & PgFlags::RESERVE;
        // SAFETY: the owner contract: the allocator just handed the block out
        // and nobody else has seen it; the frames of the run become allocated
        // order-0 heads.
        unsafe { page.set_private(0) };
        for i in 1..frames {
            // SAFETY: as above.
            unsafe {
                let f = self.frame(pfn + i);
                f.replace_flags(PgFlags::HIGHMEM, PgFlags::HEAD | keep);
                f.set_private(0);
                f.set_count(1);
            }
        }
        // The tail, as the largest aligned blocks it forms: each one's head
        // becomes an allocated head of its order, and goes back.
        for (first, o) in aligned_blocks(pfn + frames, pfn + (1 << order)) {
            let h = self.frame(first);
            // SAFETY: as above, for an allocated head of order `o`.
            unsafe {
                h.replace_flags(PgFlags::HIGHMEM, PgFlags::HEAD | keep);
                h.set_private(o);
                h.set_count(1);
            }
            let r = self.free_pages_page(h, o);
            debug_assert!(r.is_ok(), "a tail block just made goes back");
        }
        Some(page)
    }

    /// Frees a run from [`Buddy::alloc_pages_exact`] of `size` bytes headed by
    /// `page` (Linux's `free_pages_exact`): each of its
    /// `size.div_ceil(PAGE_SIZE)` frames drops a reference and goes back.
    ///
    /// All or nothing: if any frame of the run would be refused as an order-0
    /// free (see [`Buddy::free_pages_page`]), nothing is freed and the first
    /// such frame's refusal is returned with its index in the run.
    pub fn free_pages_exact(&self, page: &Page, size: usize) -> Result<(), (usize, FreeError)> {
        let frames = size.div_ceil(PAGE_SIZE);
        let (pfn, _) = self.mem.own(page).map_err(|_| (0, FreeError::Foreign))?;
        let pfn = pfn.as_usize();
        for i in 0..frames {
            let f = self
                .mem
                .pfn_to_page(Pfn::new(pfn + i))
                .map_err(|_| (i, FreeError::Foreign))?;
            self.check_free(f, 0).map_err(|e| (i, e))?;
        }
        for i in 0..frames {
            let r = self.free_pages_page(self.frame(pfn + i), 0);
            debug_assert!(r.is_ok(), "checked above");
        }
        Ok(())
    }

    /// The descriptor of frame `pfn`, inside a block this allocator handed
    /// out (so in `mem_map`).
    fn frame(&self, pfn: usize) -> &'a Page {
        self.mem
            .pfn_to_page(Pfn::new(pfn))
            .expect("a frame of an allocated block is in mem_map")
    }

    /// The frame number of an allocated page.
    fn pfn_of(&self, page: &Page) -> usize {
        self.mem
            .page_to_pfn(page)
            .expect("an allocated page is in mem_map")
            .as_usize()
    }

    /// Why a frame marked in use cannot be split off.
    fn in_use(f: PgFlags) -> FreeError {
        if f.intersects(PgFlags::SLAB | PgFlags::SLAB_INTERNAL) {
            FreeError::Slab
        } else if f.contains(PgFlags::KMALLOC) {
            FreeError::Kmalloc
        } else if f.contains(PgFlags::VMALLOC) {
            FreeError::Vmalloc
        } else if f.contains(PgFlags::LINKED) {
            FreeError::Linked
        } else {
            FreeError::NotAllocated
        }
    }
}
