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

/// The general caches by size class, and the large blocks.
pub(crate) struct Kmalloc {
    normal: [Option<Cache<'static>>; KMALLOC_SIZES.len()],
    dma: [Option<Cache<'static>>; KMALLOC_SIZES.len()],
    /// Pages held by large blocks.
    large_pages: AtomicUsize,
}

impl Kmalloc {
    /// No general caches yet (the allocator creates them at boot).
    pub(crate) const fn empty() -> Kmalloc {
        Kmalloc {
            normal: [None; KMALLOC_SIZES.len()],
            dma: [None; KMALLOC_SIZES.len()],
            large_pages: AtomicUsize::new(0),
        }
    }

    /// Records size class `i`'s caches.
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

    /// True if `c` is one of the general caches.
    pub(crate) fn contains(&self, c: Cache<'_>) -> bool {
        let c = Some(c.erase());
        self.normal.contains(&c) || self.dma.contains(&c)
    }

    /// Pages held by large blocks.
    pub(crate) fn large_pages(&self) -> usize {
        self.large_pages.load(Ordering::Relaxed)
    }

    /// The order of the smallest block that holds `size` bytes; `BadSize`
    /// if there is none.
    pub(crate) fn large_order(size: usize) -> Result<usize, SlabError> {
        let pages = size.checked_add(PAGE_SIZE - 1).ok_or(SlabError::BadSize)? / PAGE_SIZE;
        let order = pages.next_power_of_two().trailing_zeros() as usize;
        if order >= MAX_ORDER {
            return Err(SlabError::BadSize);
        }
        Ok(order)
    }

    /// Takes a block of `2^order` pages just allocated for a large request:
    /// marks it as kmalloc's (so the page allocator refuses to free it,
    /// `FreeError::Kmalloc`, until [`Kmalloc::free_large`] takes the mark
    /// off), counts it, and returns its address.
    pub(crate) fn adopt_large(&self, mem: &MemMap<'_>, page: &Page, order: usize) -> NonNull<u8> {
        // SAFETY: the owner contract of `Page`: the block was just allocated
        // to kmalloc, which owns it until `free_large`.
        unsafe {
            page.set_owner(0);
            page.insert(PgFlags::KMALLOC);
        }
        self.large_pages.fetch_add(1 << order, Ordering::Relaxed);
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
        let page = self.large_block(buddy.mem(), ptr)?;
        let order = page.private();
        // SAFETY: the owner contract of `Page`: a live large block (its mark
        // and head checked by `large_block`) is kmalloc's; LARGE_FREED is its
        // own mark.
        unsafe {
            page.remove(PgFlags::KMALLOC);
            page.set_owner(LARGE_FREED);
        }
        match buddy.free_pages_page(page, order) {
            Ok(_) => {
                self.large_pages.fetch_sub(1 << order, Ordering::Relaxed);
                Ok(())
            }
            // Only a racing `kfree` of the same block gets here (it was a live
            // head a moment ago): that one freed it.
            Err(_) => Err(SlabError::DoubleFree),
        }
    }

    /// The usable size of the large block `ptr` starts.
    pub(crate) fn large_size(&self, mem: &MemMap<'_>, ptr: *mut u8) -> Result<usize, SlabError> {
        Ok(PAGE_SIZE << self.large_block(mem, ptr)?.private())
    }

    /// The head page of the live large block `ptr` starts, for a pointer
    /// no slab holds; otherwise why not: `Interior` anywhere inside a live
    /// large block, `DoubleFree` at the start of one freed before,
    /// `Internal` for the allocator's own objects (cache descriptors), else
    /// `Foreign`. Cold: at most `MAX_ORDER` descriptor reads.
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
        for o in 1..MAX_ORDER {
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
