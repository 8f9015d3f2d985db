//! [`Kmalloc`]: what `kmalloc` is made of — the general caches by size class
//! (Linux's `malloc_sizes`) and the blocks above 128 KiB that come straight
//! from the page allocator, with their bookkeeping. The allocator's
//! `kmalloc`, `kfree`, `ksize` and `krealloc` (in `objects`) are built on it.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use kmm_buddy::{Buddy, MAX_ORDER};
use kmm_hal::{Cpu, PAGE_SIZE, Pfn, VirtAddr};
use kmm_page_frame::{MemMap, Page, PgFlags};

use crate::SlabError;
use crate::cache::{Cache, KmemCache};
use crate::geometry::MAX_OBJ_SIZE;
use crate::kmalloc_sizes::{
    KmallocSizes, LARGE_SLOTS, LINUX26, MAX_CLASSES, SMALL_MAX, SMALL_SLOTS, index26, lookup,
};

/// The largest request a general cache can serve: Linux 2.6's table's
/// largest class (the default dense table stops at
/// [`crate::KmallocSizes::max_size`], 32 KiB; see
/// [`crate::SlabAllocator::kmalloc_max_cache_size`]).
pub const KMALLOC_MAX_CACHE_SIZE: usize = MAX_OBJ_SIZE;

/// Marks the head page of a large kmalloc block that was freed (in its `owner`
/// word), so a second `kfree` is told apart from a foreign pointer.
const LARGE_FREED: usize = 0x6b66_7265; // "kfre"

/// The general caches by size class, and the large blocks.
pub(crate) struct Kmalloc {
    /// Which classes the normal caches have, and their sizes.
    sizes: KmallocSizes,
    /// The largest normal class.
    max: usize,
    /// Class of a request of up to 1 KiB, by `(size - 1) >> 3`.
    small: [u8; SMALL_SLOTS],
    /// Class of a larger request, by `(size - 1) >> 7`.
    large: [u8; LARGE_SLOTS],
    normal: [Option<Cache<'static>>; MAX_CLASSES],
    /// The DMA caches: Linux 2.6's classes whichever table the normal ones
    /// use (DMA-zone requests are rare; a cache each per dense class would
    /// cost more metadata than they save).
    dma: [Option<Cache<'static>>; LINUX26.len()],
    /// Pages held by large blocks.
    large_pages: AtomicUsize,
}

impl Kmalloc {
    /// The lookup for `sizes`; no general caches yet (the allocator creates
    /// them at boot: [`Kmalloc::set_normal`], [`Kmalloc::set_dma`]).
    pub(crate) const fn new(sizes: KmallocSizes) -> Kmalloc {
        let (small, large) = lookup(sizes.classes());
        Kmalloc {
            sizes,
            max: sizes.max_size(),
            small,
            large,
            normal: [None; MAX_CLASSES],
            dma: [None; LINUX26.len()],
            large_pages: AtomicUsize::new(0),
        }
    }

    /// The class table in use.
    pub(crate) fn sizes(&self) -> KmallocSizes {
        self.sizes
    }

    /// The largest normal class.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Records normal size class `i`'s cache.
    pub(crate) fn set_normal(&mut self, i: usize, normal: Cache<'_>) {
        self.normal[i] = Some(normal.erase());
    }

    /// Records DMA size class `i`'s cache (Linux 2.6's classes).
    pub(crate) fn set_dma(&mut self, i: usize, dma: Cache<'_>) {
        self.dma[i] = Some(dma.erase());
    }

    /// The normal size class for `size` bytes: two table reads, no
    /// arithmetic beyond a shift.
    #[inline(always)]
    pub(crate) fn index(&self, size: usize) -> Option<usize> {
        match size {
            0 => None,
            1..=SMALL_MAX => Some(usize::from(self.small[(size - 1) >> 3])),
            _ if size <= self.max => Some(usize::from(self.large[(size - 1) >> 7])),
            _ => None,
        }
    }

    /// The size of normal class `i`.
    #[inline]
    pub(crate) fn class_size(&self, i: usize) -> Option<usize> {
        self.sizes.classes().get(i).map(|c| c.size)
    }

    /// The cache of `size` bytes, if one exists yet.
    #[inline]
    fn handle(&self, size: usize, dma: bool) -> Option<Cache<'static>> {
        if dma {
            self.dma[index26(size)?]
        } else {
            self.normal[self.index(size)?]
        }
    }

    /// The cache for `size` bytes, if one exists yet.
    #[inline]
    pub(crate) fn cache_for<'b>(&self, size: usize, dma: bool) -> Option<Cache<'b>> {
        self.handle(size, dma).map(Cache::erase)
    }

    /// The descriptor of normal class `i`'s cache, without a handle check
    /// (see [`Kmalloc::desc_for`]).
    #[inline(always)]
    pub(crate) fn desc_of(&self, i: usize) -> Option<&KmemCache> {
        let c = (*self.normal.get(i)?)?;
        // SAFETY: general caches are never destroyed (`kmem_cache_destroy`
        // refuses them), so the descriptor lives as long as the allocator.
        Some(unsafe { c.ptr.as_ref() })
    }

    /// The descriptor of the cache for `size` bytes, without a handle check:
    /// general caches are never destroyed (`kmem_cache_destroy` refuses them),
    /// so the descriptor lives as long as the allocator.
    #[inline(always)]
    pub(crate) fn desc_for(&self, size: usize, dma: bool) -> Option<&KmemCache> {
        let c = self.handle(size, dma)?;
        // SAFETY: see above; the handle was made for a live general cache.
        Some(unsafe { c.ptr.as_ref() })
    }

    /// True if `c` is one of the general caches.
    pub(crate) fn contains(&self, c: Cache<'_>) -> bool {
        let c = Some(c.erase());
        self.normal.contains(&c) || self.dma.contains(&c)
    }

    /// Pages held by large blocks.
    pub(crate) fn large_pages(&self) -> usize {
        self.large_pages.load(Ordering::Relaxed)
    }

    /// The frames of a large block of `size` bytes; `BadSize` if the page
    /// allocator has no block that large.
    pub(crate) fn large_frames(size: usize) -> Result<usize, SlabError> {
        let frames = size.checked_add(PAGE_SIZE - 1).ok_or(SlabError::BadSize)? / PAGE_SIZE;
        if frames > 1 << (MAX_ORDER - 1) {
            return Err(SlabError::BadSize);
        }
        Ok(frames)
    }

    /// Takes a run of `frames` frames just allocated for a large request
    /// (`Buddy::alloc_pages_exact`): marks every frame as kmalloc's (so the
    /// page allocator refuses to free any of them, `FreeError::Kmalloc`, until
    /// [`Kmalloc::free_large`] takes the marks off) — the head with its frame
    /// count, the others without `HEAD` and with their index — counts it, and
    /// returns its address.
    pub(crate) fn adopt_large(&self, mem: &MemMap<'_>, page: &Page, frames: usize) -> NonNull<u8> {
        let pfn = mem
            .page_to_pfn(page)
            .expect("an allocated page is in mem_map");
        for i in 1..frames {
            let tail = mem
                .pfn_to_page(Pfn::new(pfn.as_usize() + i))
                .expect("a frame of an allocated run is in mem_map");
            // SAFETY: the owner contract of `Page`: the run was just allocated
            // to kmalloc, which owns every frame until `free_large`.
            unsafe {
                tail.remove(PgFlags::HEAD);
                tail.insert(PgFlags::KMALLOC);
                tail.set_private(i);
            }
        }
        // SAFETY: as above, for the head.
        unsafe {
            page.set_owner(0);
            page.set_private(frames);
            page.insert(PgFlags::KMALLOC);
        }
        self.large_pages.fetch_add(frames, Ordering::Relaxed);
        let va = mem
            .page_address(page)
            .expect("blocks without HIGHMEM are direct-mapped");
        NonNull::new(va.as_mut_ptr()).expect("kernel addresses are not null")
    }

    /// Frees the large block `ptr` starts, for a pointer no slab holds.
    pub(crate) fn free_large<C: Cpu>(
        &self,
        buddy: &Buddy<'_, C>,
        ptr: *mut u8,
    ) -> Result<(), SlabError> {
        let mem = buddy.mem();
        let page = self.large_block(mem, ptr)?;
        let frames = page.private();
        let pfn = mem.page_to_pfn(page).map_err(|_| SlabError::Foreign)?;
        Self::unmark_tail(mem, pfn, 1..frames)?;
        // SAFETY: the owner contract of `Page`: a live large run (its head
        // checked by `large_block`) is kmalloc's; LARGE_FREED is kmalloc's
        // own mark.
        unsafe {
            page.remove(PgFlags::KMALLOC);
            page.set_private(0);
            page.set_owner(LARGE_FREED);
        }
        match buddy.free_pages_exact(page, frames * PAGE_SIZE) {
            Ok(()) => {
                self.large_pages.fetch_sub(frames, Ordering::Relaxed);
                Ok(())
            }
            // Only a racing `kfree` of the same block gets here (it was a live
            // head a moment ago): that one freed it.
            Err(_) => Err(SlabError::DoubleFree),
        }
    }

    /// Gives frames `range` of the live run headed at `pfn` back their
    /// page-allocator state (allocated order-0 frames, no `KMALLOC` mark),
    /// before they are freed.
    fn unmark_tail(
        mem: &MemMap<'_>,
        pfn: Pfn,
        range: core::ops::Range<usize>,
    ) -> Result<(), SlabError> {
        for i in range {
            let tail = mem
                .pfn_to_page(Pfn::new(pfn.as_usize() + i))
                .map_err(|_| SlabError::Foreign)?;
            // SAFETY: the owner contract of `Page`: the frames of a live run
            // (its head checked by the caller's `large_block`) are
            // kmalloc's until it frees them.
            unsafe {
                tail.remove(PgFlags::KMALLOC);
                tail.insert(PgFlags::HEAD);
                tail.set_private(0);
            }
        }
        Ok(())
    }

    /// What `krealloc` asks for when it moves a block to grow it to `new`
    /// bytes: the Linux 2.6 class of `new` (32, 64, 96, 128, 192, 256, then
    /// powers of two) while that is a class of this table's range, so a
    /// block that grew once can grow again in place as often as with
    /// Linux's table; `new` itself above (a run of frames, exact).
    #[inline]
    pub(crate) fn grow_size(&self, new: usize) -> usize {
        match index26(new).and_then(|i| LINUX26.get(i)) {
            Some(c) if c.size <= self.max => c.size,
            _ => new,
        }
    }

    /// Gives back the frames of the live large run `ptr` starts past those
    /// `new` bytes need (`krealloc` shrinking in place; `new` is above the
    /// largest class and at most the run).
    pub(crate) fn shrink_large<C: Cpu>(
        &self,
        buddy: &Buddy<'_, C>,
        ptr: *mut u8,
        new: usize,
    ) -> Result<(), SlabError> {
        let mem = buddy.mem();
        let page = self.large_block(mem, ptr)?;
        let frames = page.private();
        let keep = new.div_ceil(PAGE_SIZE);
        if keep == 0 || keep >= frames {
            return Ok(());
        }
        let pfn = mem.page_to_pfn(page).map_err(|_| SlabError::Foreign)?;
        Self::unmark_tail(mem, pfn, keep..frames)?;
        // SAFETY: the owner contract of `Page`: a live large run (its head
        // checked by `large_block`) is kmalloc's; the head now counts the
        // frames it keeps.
        unsafe { page.set_private(keep) };
        let first = mem
            .pfn_to_page(Pfn::new(pfn.as_usize() + keep))
            .map_err(|_| SlabError::Foreign)?;
        let r = buddy.free_pages_exact(first, (frames - keep) * PAGE_SIZE);
        debug_assert!(r.is_ok(), "the tail frames were just made allocated frames");
        self.large_pages.fetch_sub(frames - keep, Ordering::Relaxed);
        Ok(())
    }

    /// The usable size of the large block `ptr` starts.
    pub(crate) fn large_size(&self, mem: &MemMap<'_>, ptr: *mut u8) -> Result<usize, SlabError> {
        Ok(PAGE_SIZE * self.large_block(mem, ptr)?.private())
    }

    /// The head page of the live large block `ptr` starts, for a pointer
    /// no slab holds; otherwise why not: `Interior` anywhere inside a live
    /// large block, `DoubleFree` at the start of one freed before,
    /// `Internal` for the allocator's own objects (cache descriptors), else
    /// `Foreign`.
    #[cold]
    #[inline(never)]
    pub(crate) fn large_block<'m>(
        &self,
        mem: &MemMap<'m>,
        ptr: *mut u8,
    ) -> Result<&'m Page, SlabError> {
        let page = mem
            .virt_to_page(VirtAddr::new(ptr.addr()))
            .map_err(|_| SlabError::Foreign)?;
        let flags = page.flags();
        if flags.contains(PgFlags::SLAB | PgFlags::SLAB_INTERNAL) {
            return Err(SlabError::Internal);
        }
        if flags.contains(PgFlags::KMALLOC) {
            // Every frame of a live run is marked; only its head has HEAD.
            return if flags.contains(PgFlags::HEAD) && ptr.addr().is_multiple_of(PAGE_SIZE) {
                Ok(page)
            } else {
                Err(SlabError::Interior)
            };
        }
        if page.owner() == LARGE_FREED && ptr.addr().is_multiple_of(PAGE_SIZE) {
            Err(SlabError::DoubleFree)
        } else {
            Err(SlabError::Foreign)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes() {
        let k = Kmalloc::new(KmallocSizes::Linux26);
        assert_eq!(k.index(0), None);
        assert_eq!(k.index(1), Some(0));
        assert_eq!(k.index(32), Some(0));
        assert_eq!(k.index(33), Some(1));
        assert_eq!(k.index(96), Some(2));
        assert_eq!(k.index(97), Some(3));
        assert_eq!(k.index(192), Some(4));
        assert_eq!(k.index(256), Some(5));
        assert_eq!(k.index(257), Some(6));
        assert_eq!(k.index(512), Some(6));
        assert_eq!(k.index(4096), Some(9));
        assert_eq!(k.index(131_072), Some(14));
        assert_eq!(k.index(131_073), None);
        for (i, c) in LINUX26.iter().enumerate() {
            assert_eq!(k.index(c.size), Some(i), "{}", c.size);
            assert_eq!(k.index(c.size), index26(c.size));
        }
        let d = Kmalloc::new(KmallocSizes::Dense);
        assert_eq!(d.class_size(d.index(1).unwrap()), Some(8));
        assert_eq!(d.class_size(d.index(33).unwrap()), Some(40));
        assert_eq!(d.class_size(d.index(200).unwrap()), Some(200));
        assert_eq!(d.class_size(d.index(257).unwrap()), Some(288));
        assert_eq!(d.index(KmallocSizes::Dense.max_size() + 1), None);
        assert_eq!(d.index(MAX_OBJ_SIZE), None);
    }
}
