//! The Linux functions a kernel calls most, as methods of
//! [`MemoryManager`] with their Linux names; everything else is on the
//! allocator itself ([`MemoryManager::buddy`], [`MemoryManager::slab`],
//! [`MemoryManager::vmalloc_allocator`], [`MemoryManager::pkmap`],
//! [`MemoryManager::percpu`]).

use core::ptr::NonNull;

use kmm_buddy::{BulkFreeError, FreeError, Freed, Gfp};
use kmm_hal::VirtAddr;
use kmm_page_frame::Page;
use kmm_percpu::{PercpuError, PercpuPtr, Zeroable};
use kmm_pkmap::{KmapError, KmapLocalError, KunmapError, KunmapLocalError};
use kmm_slab::{Cache, SlabError};
use kmm_vmalloc::VmallocError;

use crate::{MemoryManager, Platform};

impl<'a, P: Platform> MemoryManager<'a, P> {
    /// `alloc_pages`: a block of `2^order` pages, `None` if none is free.
    pub fn alloc_pages(&self, gfp: Gfp, order: usize) -> Option<&'a Page> {
        self.buddy.alloc_pages(gfp, order)
    }

    /// `alloc_page`: one page.
    pub fn alloc_page(&self, gfp: Gfp) -> Option<&'a Page> {
        self.buddy.alloc_pages(gfp, 0)
    }

    /// `__free_pages`: gives back a block `alloc_pages` handed out; a page
    /// it did not, the wrong order, or a double free is refused.
    pub fn free_pages(&self, page: &Page, order: usize) -> Result<Freed, FreeError> {
        self.buddy.free_pages_page(page, order)
    }

    /// `alloc_pages_bulk`: fills the empty slots of `pages` with order-0
    /// pages and returns how many slots from the front hold one (fewer than
    /// asked when memory is short: call again for the rest). The calling
    /// CPU's page list is taken once for many pages, so a page costs less
    /// than through [`MemoryManager::alloc_page`]; see
    /// [`Buddy::alloc_pages_bulk`](kmm_buddy::Buddy::alloc_pages_bulk).
    pub fn alloc_pages_bulk(&self, gfp: Gfp, pages: &mut [Option<&'a Page>]) -> usize {
        self.buddy.alloc_pages_bulk(gfp, pages)
    }

    /// `release_pages`: drops a reference on every order-0 page in `pages`,
    /// frees those whose last reference went and empties their slots;
    /// returns how many went back. A page the single free would refuse
    /// stops the call with its index: the pages before it are freed, it and
    /// the rest are untouched. See
    /// [`Buddy::release_pages`](kmm_buddy::Buddy::release_pages).
    pub fn release_pages(&self, pages: &mut [Option<&Page>]) -> Result<usize, BulkFreeError> {
        self.buddy.release_pages(pages)
    }

    /// `__get_free_pages`: a low-memory block's direct-map address.
    pub fn get_free_pages(&self, gfp: Gfp, order: usize) -> Option<VirtAddr> {
        self.buddy.get_free_pages(gfp, order)
    }

    /// `kmalloc`: `size` bytes from the general caches (or the page
    /// allocator above the largest).
    pub fn kmalloc(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>, SlabError> {
        self.slab.kmalloc(size, gfp)
    }

    /// `kzalloc`: `kmalloc`, zeroed.
    pub fn kzalloc(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>, SlabError> {
        self.slab.kzalloc(size, gfp)
    }

    /// `kfree`: gives back a `kmalloc` block; anything else (a vmalloc
    /// address, a page, an interior or freed pointer) is refused.
    pub fn kfree(&self, ptr: *mut u8) -> Result<(), SlabError> {
        self.slab.kfree(ptr)
    }

    /// `ksize`: the usable size of a live `kmalloc` block.
    pub fn ksize(&self, ptr: *mut u8) -> Result<usize, SlabError> {
        self.slab.ksize(ptr)
    }

    /// `kmem_cache_alloc_bulk`: fills `objs` with objects of `cache`, all
    /// of them or none (see [`kmm_slab::SlabAllocator::kmem_cache_alloc_bulk`]).
    pub fn kmem_cache_alloc_bulk(
        &self,
        cache: Cache<'a>,
        gfp: Gfp,
        objs: &mut [NonNull<u8>],
    ) -> Result<(), SlabError> {
        self.slab.kmem_cache_alloc_bulk(cache, gfp, objs)
    }

    /// `kmem_cache_free_bulk`: frees `objs` to `cache` in order; the first
    /// element `kmem_cache_free` would refuse stops the call with its index,
    /// the ones before it freed, it and the rest untouched.
    pub fn kmem_cache_free_bulk(
        &self,
        cache: Cache<'a>,
        objs: &[NonNull<u8>],
    ) -> Result<(), kmm_slab::BulkFreeError> {
        self.slab.kmem_cache_free_bulk(cache, objs)
    }

    /// `vmalloc`: `size` bytes, virtually contiguous, page by page.
    pub fn vmalloc(&self, size: usize) -> Result<NonNull<u8>, VmallocError> {
        self.vmalloc.vmalloc(size)
    }

    /// `vzalloc`: `vmalloc`, zeroed.
    pub fn vzalloc(&self, size: usize) -> Result<NonNull<u8>, VmallocError> {
        self.vmalloc.vzalloc(size)
    }

    /// `vfree`: gives back a `vmalloc` area; anything else is refused.
    pub fn vfree(&self, addr: *const u8) -> Result<(), VmallocError> {
        self.vmalloc.vfree(addr)
    }

    /// `kmap`: a kernel address for `page` (its direct-map address in low
    /// memory, a pkmap entry in high memory; may wait for an entry).
    pub fn kmap(&self, page: &Page) -> Result<VirtAddr, KmapError> {
        self.pkmap.kmap(page)
    }

    /// `kunmap`: drops a `kmap`.
    pub fn kunmap(&self, page: &Page) -> Result<(), KunmapError> {
        self.pkmap.kunmap(page)
    }

    /// `kmap_local_page`: a short-lived mapping in this CPU's fixmap slots.
    pub fn kmap_local_page(&self, page: &Page) -> Result<VirtAddr, KmapLocalError> {
        self.pkmap.kmap_local_page(page)
    }

    /// `kunmap_local`: drops the latest `kmap_local_page` of this CPU.
    pub fn kunmap_local(&self, addr: VirtAddr) -> Result<(), KunmapLocalError> {
        self.pkmap.kunmap_local(addr)
    }

    /// `alloc_percpu`: one zeroed `T` per possible CPU.
    pub fn alloc_percpu<T: Zeroable>(&self) -> Result<PercpuPtr<T>, PercpuError> {
        self.percpu.alloc_percpu()
    }

    /// `free_percpu`: gives back an `alloc_percpu` allocation.
    pub fn free_percpu<T>(&self, ptr: PercpuPtr<T>) -> Result<(), PercpuError> {
        self.percpu.free_percpu(ptr)
    }
}
