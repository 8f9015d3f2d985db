//! kmm's side of the slab benchmarks: the machine, the `kmem_cache` hot
//! pair, `kmalloc` and any `GlobalAlloc` as an [`ObjAlloc`].

use core::alloc::GlobalAlloc;
use core::ptr::NonNull;
use std::hint::black_box;

use kmm_buddy::Gfp;
use kmm_hal::PAGE_SIZE;
use kmm_mock::{CpuBinding, MockCpu};
use kmm_slab::{SlabAllocator, SlabFlags};

use crate::kmm_machine;

use super::*;

/// kmm's SLAB allocator over the buddy allocator of a fresh `ram`-byte host
/// machine with `cpus` simulated CPUs ([`kmm_machine`], built by the test
/// kit as for the `kmm-slab` doc example: `Backing::Mmap`, one usable region,
/// `Bootmem`, `MemMap::new`, `Buddy::new` with `min_free_kbytes: Some(0)`,
/// `SlabAllocator::new`), handed to `f` with the heap size and the calling
/// thread's binding to CPU 0.
///
/// The heap size is what the buddy allocator can hand out before the slab
/// allocator exists — `free_pages_total() × 4096`, all RAM less `mem_map` and
/// frame 0 — so the slab allocator's own bootstrap (the cache of caches, the
/// general caches' arrays) counts against kmm. `f` may drop the binding (to
/// let other threads bind CPU 0); keep it (`_cpu0`, not `_`) otherwise.
pub fn with_kmm<R>(
    ram: usize,
    cpus: usize,
    f: impl FnOnce(&SlabAllocator<'_, MockCpu>, usize, CpuBinding) -> R,
) -> R {
    let host = kmm_machine(ram, cpus);
    let cpu0 = host.bind(0);
    let heap = host.buddy().free_pages_total() * PAGE_SIZE;
    f(host.slab(), heap, cpu0)
}

/// Hot path, kmm: creates a cache of [`HOT_SIZE`]-byte objects (default
/// alignment, no flags, no constructor) and returns one
/// `kmem_cache_alloc` + `kmem_cache_free` pair on it, to call as often as
/// wanted, from any thread bound to a simulated CPU. (A closure, so the cache
/// handle's type is never named here.)
pub fn cache_pair<'s>(slab: &'s SlabAllocator<'_, MockCpu>) -> impl Fn() + Sync + 's {
    let cache = slab
        .kmem_cache_create("bench-64", HOT_SIZE, 0, SlabFlags::empty(), None)
        .expect("create the bench cache");
    move || {
        let p = slab
            .kmem_cache_alloc(cache, Gfp::KERNEL)
            .expect("the cache grows");
        let r = slab.kmem_cache_free(cache, black_box(p));
        assert!(r.is_ok(), "kmm refused a free: {r:?}");
    }
}

/// Objects per call of the bulk benches (`slab_bulk` and the driver's
/// `cache_bulk` mode).
pub const BULK_SIZES: [usize; 3] = [16, 32, 64];

/// Bulk paths, kmm: creates a cache of [`HOT_SIZE`]-byte objects, as
/// [`cache_pair`] does, and returns one `kmem_cache_alloc_bulk` of `n`
/// objects followed by one `kmem_cache_free_bulk` of the same `n`, to call
/// as often as wanted from a thread bound to a simulated CPU.
pub fn cache_bulk<'s>(slab: &'s SlabAllocator<'_, MockCpu>, n: usize) -> impl FnMut() + 's {
    let cache = slab
        .kmem_cache_create("bench-bulk-64", HOT_SIZE, 0, SlabFlags::empty(), None)
        .expect("create the bench cache");
    let mut objs = vec![NonNull::dangling(); n];
    move || {
        slab.kmem_cache_alloc_bulk(cache, Gfp::KERNEL, black_box(&mut objs))
            .expect("the cache grows");
        let r = slab.kmem_cache_free_bulk(cache, black_box(&objs));
        assert!(r.is_ok(), "kmm refused a bulk free: {r:?}");
    }
}

/// `kmalloc`, `kfree` and `krealloc` (`Gfp::KERNEL`) of a [`SlabAllocator`].
#[derive(Debug, Clone, Copy)]
pub struct KmmSlab<'s, 'a> {
    slab: &'s SlabAllocator<'a, MockCpu>,
}

impl<'s, 'a> KmmSlab<'s, 'a> {
    /// A driver for `slab`.
    pub fn new(slab: &'s SlabAllocator<'a, MockCpu>) -> Self {
        KmmSlab { slab }
    }
}

impl ObjAlloc for KmmSlab<'_, '_> {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        self.slab.kmalloc(size, Gfp::KERNEL).ok()
    }

    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, _size: usize) {
        let r = self.slab.kfree(ptr.as_ptr());
        assert!(r.is_ok(), "kmm refused a kfree: {r:?}");
    }

    #[inline]
    unsafe fn realloc(&mut self, ptr: NonNull<u8>, _old: usize, new: usize) -> Option<NonNull<u8>> {
        // SAFETY: the caller owns the live block `ptr`.
        unsafe { self.slab.krealloc(ptr.as_ptr(), new, Gfp::KERNEL) }.ok()
    }
}

/// Any `GlobalAlloc` (kmm's `KmallocHeap`, a peer's locked heap) as an
/// [`ObjAlloc`]; `realloc` is the allocator's own `GlobalAlloc::realloc`.
#[derive(Debug)]
pub struct Global<'g, A: GlobalAlloc>(pub &'g A);

impl<A: GlobalAlloc> ObjAlloc for Global<'_, A> {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        if size == 0 {
            return None;
        }
        // SAFETY: the layout's size is not zero.
        NonNull::new(unsafe { self.0.alloc(layout(size)) })
    }

    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, size: usize) {
        // SAFETY: the caller's contract is `dealloc`'s.
        unsafe { self.0.dealloc(ptr.as_ptr(), layout(size)) }
    }

    #[inline]
    unsafe fn realloc(&mut self, ptr: NonNull<u8>, old: usize, new: usize) -> Option<NonNull<u8>> {
        // SAFETY: the caller's contract is `realloc`'s (`new > 0`, a valid
        // layout for these sizes).
        NonNull::new(unsafe { self.0.realloc(ptr.as_ptr(), layout(old), new) })
    }
}
