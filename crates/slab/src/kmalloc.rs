//! `kmalloc` and friends over the general caches; requests above 128 KiB go to
//! the page allocator.

use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use kmm_buddy::Gfp;
use kmm_hal::{Cpu, PAGE_SIZE, Pfn, VirtAddr};
use kmm_page_frame::{Page, PgFlags};

use crate::SlabError;
use crate::allocator::SlabAllocator;
use crate::cache::{Cache, KmemCache};
use crate::geometry::MAX_OBJ_SIZE;

/// The general caches: size, name, DMA name (Linux's `malloc_sizes`).
pub(crate) const KMALLOC_SIZES: [(usize, &str, &str); 15] = [
    (32, "size-32", "size-32(DMA)"),
    (64, "size-64", "size-64(DMA)"),
    (96, "size-96", "size-96(DMA)"),
    (128, "size-128", "size-128(DMA)"),
    (192, "size-192", "size-192(DMA)"),
    (256, "size-256", "size-256(DMA)"),
    (512, "size-512", "size-512(DMA)"),
    (1024, "size-1024", "size-1024(DMA)"),
    (2048, "size-2048", "size-2048(DMA)"),
    (4096, "size-4096", "size-4096(DMA)"),
    (8192, "size-8192", "size-8192(DMA)"),
    (16384, "size-16384", "size-16384(DMA)"),
    (32768, "size-32768", "size-32768(DMA)"),
    (65536, "size-65536", "size-65536(DMA)"),
    (131_072, "size-131072", "size-131072(DMA)"),
];

/// The alignment of a general cache's objects: the largest power of two that
/// divides the size, at most a page (so `size-96` objects are 32-aligned and
/// `size-4096` ones page-aligned).
pub(crate) const fn class_align(size: usize) -> usize {
    let a = 1usize << size.trailing_zeros();
    if a > PAGE_SIZE { PAGE_SIZE } else { a }
}

/// The largest request served by a general cache.
pub const KMALLOC_MAX_CACHE_SIZE: usize = MAX_OBJ_SIZE;

/// Marks the head page of a large kmalloc block that was freed (in its `owner`
/// word), so a second `kfree` is told apart from a foreign pointer.
const LARGE_FREED: usize = 0x6b66_7265; // "kfre"

/// The general caches, by size class.
pub(crate) struct Kmalloc {
    normal: [Option<Cache<'static>>; KMALLOC_SIZES.len()],
    dma: [Option<Cache<'static>>; KMALLOC_SIZES.len()],
}

impl Kmalloc {
    pub(crate) const fn empty() -> Kmalloc {
        Kmalloc {
            normal: [None; KMALLOC_SIZES.len()],
            dma: [None; KMALLOC_SIZES.len()],
        }
    }

    pub(crate) fn set(&mut self, i: usize, normal: Cache<'_>, dma: Cache<'_>) {
        self.normal[i] = Some(normal.erase());
        self.dma[i] = Some(dma.erase());
    }

    /// The size class for `size` bytes.
    #[inline]
    pub(crate) fn index(size: usize) -> Option<usize> {
        /// Classes of 1..=256 bytes by `(size - 1) / 8` (Linux's `size_index`).
        const SMALL: [u8; 32] = {
            let mut t = [0u8; 32];
            let mut i = 0;
            while i < 32 {
                let size = (i + 1) * 8;
                t[i] = if size <= 32 {
                    0
                } else if size <= 64 {
                    1
                } else if size <= 96 {
                    2
                } else if size <= 128 {
                    3
                } else if size <= 192 {
                    4
                } else {
                    5
                };
                i += 1;
            }
            t
        };
        match size {
            0 => None,
            1..=256 => Some(usize::from(SMALL[(size - 1) >> 3])),
            _ if size <= MAX_OBJ_SIZE => {
                Some((usize::BITS - (size - 1).leading_zeros()) as usize - 3)
            }
            _ => None,
        }
    }

    /// The cache for `size` bytes, if one exists yet.
    #[inline]
    pub(crate) fn cache_for<'b>(&self, size: usize, dma: bool) -> Option<Cache<'b>> {
        let i = Self::index(size)?;
        let c = if dma { self.dma[i] } else { self.normal[i] };
        c.map(Cache::erase)
    }

    /// The descriptor of the cache for `size` bytes, without a handle check:
    /// general caches are never destroyed (`kmem_cache_destroy` refuses them),
    /// so the descriptor lives as long as the allocator.
    #[inline(always)]
    pub(crate) fn desc_for(&self, size: usize, dma: bool) -> Option<&KmemCache> {
        let i = Self::index(size)?;
        let c = if dma { self.dma[i] } else { self.normal[i] }?;
        // SAFETY: see above; the handle was made for a live general cache.
        Some(unsafe { c.ptr.as_ref() })
    }

    pub(crate) fn contains(&self, c: Cache<'_>) -> bool {
        let c = Some(c.erase());
        self.normal.contains(&c) || self.dma.contains(&c)
    }
}

/// The usable size of a located object that is live; a free one was freed
/// before.
#[inline(always)]
fn live_size(loc: &crate::objects::Located<'_>) -> Result<usize, SlabError> {
    if loc.state().load(Ordering::Relaxed) != crate::slab_desc::OBJ_ALLOCATED {
        return Err(SlabError::DoubleFree);
    }
    Ok(loc.cache.geo.obj_size)
}

impl<'a, C: Cpu> SlabAllocator<'a, C> {
    /// Allocates `size` bytes (Linux's `kmalloc`): from the smallest general
    /// cache that fits (the DMA ones for `Gfp::DMA`), or straight from the page
    /// allocator above 128 KiB. Zero and overflowing sizes are
    /// [`SlabError::BadSize`].
    #[inline]
    pub fn kmalloc(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>, SlabError> {
        if size == 0 {
            return Err(SlabError::BadSize);
        }
        let dma = gfp.contains(Gfp::DMA);
        match self.kmalloc.desc_for(size, dma) {
            Some(c) => {
                let p = self.alloc_object(c, gfp.difference(Gfp::ZERO), true)?;
                self.debug_set_requested(c, p.as_ptr().addr(), size);
                if gfp.contains(Gfp::ZERO) {
                    // SAFETY: the object is ours and at least `size` bytes.
                    unsafe { core::ptr::write_bytes(p.as_ptr(), 0, size) };
                }
                Ok(p)
            }
            None => self.kmalloc_large(size, gfp),
        }
    }

    /// Allocates `size` zeroed bytes (Linux's `kzalloc`).
    pub fn kzalloc(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>, SlabError> {
        self.kmalloc(size, gfp | Gfp::ZERO)
    }

    /// Allocates an array of `n` elements of `size` bytes, zeroed (Linux's
    /// `kcalloc`); an overflowing product is [`SlabError::BadSize`].
    pub fn kcalloc(&self, n: usize, size: usize, gfp: Gfp) -> Result<NonNull<u8>, SlabError> {
        let bytes = n.checked_mul(size).ok_or(SlabError::BadSize)?;
        self.kzalloc(bytes, gfp)
    }

    /// `size` bytes straight from the page allocator (marked for `kfree`), in
    /// the smallest block that holds them.
    #[cold]
    pub(crate) fn kmalloc_large(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>, SlabError> {
        let pages = size.checked_add(PAGE_SIZE - 1).ok_or(SlabError::BadSize)? / PAGE_SIZE;
        let order = pages.next_power_of_two().trailing_zeros() as usize;
        if order >= kmm_buddy::MAX_ORDER {
            return Err(SlabError::BadSize);
        }
        let g = gfp.difference(Gfp::HIGHMEM);
        let page = match self.buddy.alloc_pages(g, order) {
            Some(p) => p,
            // Dry: give back what the caches hold idle and try once more — only
            // if the caller may wait (Linux reclaims for no atomic allocation;
            // the page allocator has already let it dip into the reserve).
            None if gfp.contains(Gfp::WAIT) => {
                self.reclaim();
                self.buddy
                    .alloc_pages(g, order)
                    .ok_or(SlabError::OutOfMemory)?
            }
            None => return Err(SlabError::OutOfMemory),
        };
        // Marked as kmalloc's: the page allocator refuses to free it
        // (`FreeError::Kmalloc`) until `kfree` takes the mark off.
        // SAFETY: the owner contract of `Page`: the block was just allocated
        // to kmalloc, which owns it until `kfree`.
        unsafe {
            page.set_owner(0);
            page.insert(PgFlags::KMALLOC);
        }
        self.large_pages.fetch_add(1 << order, Ordering::Relaxed);
        let va = self
            .buddy
            .mem()
            .page_address(page)
            .expect("blocks without HIGHMEM are direct-mapped");
        Ok(NonNull::new(va.as_mut_ptr()).expect("kernel addresses are not null"))
    }

    /// Frees what `kmalloc` returned (Linux's `kfree`). A null pointer is fine.
    /// Refused, with nothing changed: pointers no allocator handed out,
    /// interior pointers, double frees.
    #[inline]
    pub fn kfree(&self, ptr: *mut u8) -> Result<(), SlabError> {
        if ptr.is_null() {
            return Ok(());
        }
        match self.locate(ptr) {
            Ok(loc) => self.free_located(loc, ptr.addr()),
            Err(SlabError::Foreign) => self.kfree_large(ptr),
            Err(e) => Err(e),
        }
    }

    #[cold]
    #[inline(never)]
    fn kfree_large(&self, ptr: *mut u8) -> Result<(), SlabError> {
        let page = self.large_block(ptr)?;
        let order = page.private();
        // SAFETY: the owner contract of `Page`: a live large block (its mark
        // and head checked by `large_block`) is kmalloc's; LARGE_FREED is its
        // own mark.
        unsafe {
            page.remove(PgFlags::KMALLOC);
            page.set_owner(LARGE_FREED);
        }
        match self.buddy.free_pages_page(page, order) {
            Ok(_) => {
                self.large_pages.fetch_sub(1 << order, Ordering::Relaxed);
                Ok(())
            }
            // Only a racing `kfree` of the same block gets here (it was a live
            // head a moment ago): that one freed it.
            Err(_) => Err(SlabError::DoubleFree),
        }
    }

    /// The head page of the live large block `ptr` starts, for a pointer
    /// `locate` found in no slab; otherwise why not: `Interior` anywhere inside
    /// a live large block, `DoubleFree` at the start of one freed before,
    /// `Internal` for the allocator's own objects (cache descriptors), else
    /// `Foreign`. Cold: at most `MAX_ORDER` descriptor reads.
    #[cold]
    #[inline(never)]
    pub(crate) fn large_block(&self, ptr: *mut u8) -> Result<&'a Page, SlabError> {
        let mem = self.buddy.mem();
        let page = mem
            .virt_to_page(VirtAddr::new(ptr.addr()))
            .map_err(|_| SlabError::Foreign)?;
        let flags = page.flags();
        if flags.contains(PgFlags::SLAB | PgFlags::SLAB_INTERNAL) {
            return Err(SlabError::Internal);
        }
        if flags.contains(PgFlags::KMALLOC | PgFlags::HEAD) {
            return if ptr.addr().is_multiple_of(PAGE_SIZE) {
                Ok(page)
            } else {
                Err(SlabError::Interior)
            };
        }
        // A later page of a live block: its head is the frame number rounded
        // down to the block's order (blocks are aligned to their size).
        let pfn = mem.page_to_pfn(page).map_err(|_| SlabError::Foreign)?;
        let pfn = pfn.as_usize();
        for o in 1..kmm_buddy::MAX_ORDER {
            let head = pfn & !((1 << o) - 1);
            if head == pfn {
                continue;
            }
            let Ok(h) = mem.pfn_to_page(Pfn::new(head)) else {
                continue;
            };
            if h.test(PgFlags::KMALLOC | PgFlags::HEAD) && pfn - head < 1 << h.private() {
                return Err(SlabError::Interior);
            }
        }
        if page.owner() == LARGE_FREED && ptr.addr().is_multiple_of(PAGE_SIZE) {
            Err(SlabError::DoubleFree)
        } else {
            Err(SlabError::Foreign)
        }
    }

    /// The usable size of a kmalloc'd block (Linux's `ksize`).
    pub fn ksize(&self, ptr: *mut u8) -> Result<usize, SlabError> {
        match self.locate(ptr) {
            Ok(loc) => live_size(&loc),
            Err(SlabError::Foreign) => {
                let page = self.large_block(ptr)?;
                Ok(PAGE_SIZE << page.private())
            }
            Err(e) => Err(e),
        }
    }

    /// Resizes a kmalloc'd block (Linux's `krealloc`): the same block if it is
    /// big enough, else a new one with the contents copied and the old one
    /// freed. A null pointer allocates. A zero size is [`SlabError::BadSize`],
    /// and on any error the old block is untouched. A pointer kmalloc did not
    /// hand out (or already freed) is refused before it is read.
    ///
    /// # Safety
    /// `ptr` must be null or a block the caller owns: no other thread may use
    /// it during the call (its bytes are copied).
    #[inline]
    pub unsafe fn krealloc(
        &self,
        ptr: *mut u8,
        new_size: usize,
        gfp: Gfp,
    ) -> Result<NonNull<u8>, SlabError> {
        if new_size == 0 {
            return Err(SlabError::BadSize);
        }
        if ptr.is_null() {
            return self.kmalloc(new_size, gfp);
        }
        // One lookup serves the size check and the free. A block that is big
        // enough is kept without a call; a move is out of line.
        match self.locate(ptr) {
            Ok(loc) => {
                let old = live_size(&loc)?;
                if old >= new_size {
                    // In place: the `debug` checks now guard the new size.
                    self.debug_set_requested(loc.cache, ptr.addr(), new_size);
                    return NonNull::new(ptr).ok_or(SlabError::Foreign);
                }
                // SAFETY: forwarded from the caller; `loc` locates `ptr`, live.
                unsafe { self.krealloc_move(ptr, Some(loc), old, new_size, gfp) }
            }
            Err(SlabError::Foreign) => {
                let old = self.ksize(ptr)?;
                if old >= new_size {
                    return NonNull::new(ptr).ok_or(SlabError::Foreign);
                }
                // SAFETY: forwarded from the caller; `ptr` is a live large block.
                unsafe { self.krealloc_move(ptr, None, old, new_size, gfp) }
            }
            Err(e) => Err(e),
        }
    }

    /// The moving end of `krealloc`: a new block, the `old` live bytes copied,
    /// the old block freed (through `loc` when it is a slab object).
    ///
    /// # Safety
    /// As for `krealloc`; `ptr` is a live block of `old` usable bytes
    /// (`old < new_size`), located at `loc` if it is a slab object.
    #[inline(never)]
    unsafe fn krealloc_move(
        &self,
        ptr: *mut u8,
        loc: Option<crate::objects::Located<'_>>,
        old: usize,
        new_size: usize,
        gfp: Gfp,
    ) -> Result<NonNull<u8>, SlabError> {
        let new = self.kmalloc(new_size, gfp)?;
        // SAFETY: both blocks are live and at least `old` bytes (new_size > old).
        unsafe { core::ptr::copy_nonoverlapping(ptr, new.as_ptr(), old) };
        let freed = match loc {
            Some(l) => self.free_located(l, ptr.addr()),
            None => self.kfree(ptr),
        };
        if let Err(e) = freed {
            // The old block was refused (damaged under `debug`, or freed by a
            // racing call): it stays as it was, and the new one goes back.
            let r = self.kfree(new.as_ptr());
            debug_assert!(r.is_ok());
            return Err(e);
        }
        Ok(new)
    }

    /// The general cache for `size` bytes (`dma` for the DMA variant).
    pub fn kmalloc_cache(&self, size: usize, dma: bool) -> Option<Cache<'a>> {
        self.kmalloc.cache_for(size, dma)
    }

    /// Pages held by kmalloc requests above 128 KiB.
    pub fn large_pages(&self) -> usize {
        self.large_pages.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes() {
        assert_eq!(Kmalloc::index(0), None);
        assert_eq!(Kmalloc::index(1), Some(0));
        assert_eq!(Kmalloc::index(32), Some(0));
        assert_eq!(Kmalloc::index(33), Some(1));
        assert_eq!(Kmalloc::index(96), Some(2));
        assert_eq!(Kmalloc::index(97), Some(3));
        assert_eq!(Kmalloc::index(192), Some(4));
        assert_eq!(Kmalloc::index(256), Some(5));
        assert_eq!(Kmalloc::index(257), Some(6));
        assert_eq!(Kmalloc::index(512), Some(6));
        assert_eq!(Kmalloc::index(4096), Some(9));
        assert_eq!(Kmalloc::index(131_072), Some(14));
        assert_eq!(Kmalloc::index(131_073), None);
        for (i, &(size, _, _)) in KMALLOC_SIZES.iter().enumerate() {
            assert_eq!(Kmalloc::index(size), Some(i), "{size}");
        }
    }
}
