//! [`KmallocHeap`]: `kmalloc` as a `GlobalAlloc` (for `#[global_allocator]`)
//! and as an allocator-api2 `Allocator`.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use kmm_buddy::Gfp;
use kmm_hal::Cpu;

use crate::allocator::SlabAllocator;
use crate::kmalloc_sizes::class_align;

/// `kmalloc` behind the standard allocator interfaces.
///
/// Layouts are honoured: up to a page of alignment through the general caches
/// (kmalloc objects are naturally aligned, up to a page, so the request is
/// rounded up to a class whose alignment suffices), beyond that through the page
/// allocator, whose blocks are aligned to their size. A deallocation the
/// allocator refuses (a foreign or already freed pointer) is counted and the
/// memory left alone: never corrupted.
pub struct KmallocHeap<'s, 'a, C: Cpu> {
    slab: &'s SlabAllocator<'a, C>,
    gfp: Gfp,
    refused: AtomicUsize,
}

impl<C: Cpu> core::fmt::Debug for KmallocHeap<'_, '_, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KmallocHeap")
            .field("gfp", &self.gfp)
            .field("refused", &self.refused())
            .finish()
    }
}

impl<'s, 'a, C: Cpu> KmallocHeap<'s, 'a, C> {
    /// A heap allocating with `Gfp::KERNEL`.
    pub fn new(slab: &'s SlabAllocator<'a, C>) -> Self {
        Self::with_gfp(slab, Gfp::KERNEL)
    }

    /// A heap allocating with `gfp` (for example `Gfp::ATOMIC` for a heap used
    /// in interrupt context).
    pub fn with_gfp(slab: &'s SlabAllocator<'a, C>, gfp: Gfp) -> Self {
        KmallocHeap {
            slab,
            gfp,
            refused: AtomicUsize::new(0),
        }
    }

    /// Deallocations refused so far (bad pointers handed to `dealloc`).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    /// The size to ask kmalloc for so the block satisfies `layout`.
    #[inline]
    fn request(&self, layout: Layout) -> Option<usize> {
        let size = layout.size().max(1);
        if layout.align() <= 8 {
            return Some(size);
        }
        self.request_aligned(size, layout.align())
    }

    /// [`Self::request`] for alignments above 8. Natural alignment: the
    /// smallest class of at least `size` bytes whose objects are aligned to
    /// `align` (a class's objects are aligned to the largest power of two
    /// dividing its size, up to a page: `size-96` to 32, `size-200` to 8).
    fn request_aligned(&self, size: usize, align: usize) -> Option<usize> {
        let k = self.slab.kmalloc_table();
        let mut i = k.index(size.max(align))?;
        while let Some(class) = k.class_size(i) {
            if class_align(class) >= align {
                return Some(class);
            }
            i += 1;
        }
        None
    }

    #[inline]
    fn alloc_layout(&self, layout: Layout, zero: bool) -> *mut u8 {
        let gfp = if zero { self.gfp | Gfp::ZERO } else { self.gfp };
        match self.request(layout) {
            Some(n) => self
                .slab
                .kmalloc(n, gfp)
                .map_or(core::ptr::null_mut(), NonNull::as_ptr),
            None => self.alloc_large(layout, gfp),
        }
    }

    /// Large or strongly aligned: a page-allocator block of at least the size
    /// and the alignment (blocks are aligned to their size; the address is if
    /// the direct map's base is).
    #[cold]
    #[inline(never)]
    fn alloc_large(&self, layout: Layout, gfp: Gfp) -> *mut u8 {
        let bytes = layout.size().max(layout.align());
        match self.slab.kmalloc_large(bytes, gfp) {
            Ok(p) if p.as_ptr().addr().is_multiple_of(layout.align()) => p.as_ptr(),
            Ok(p) => {
                let r = self.slab.kfree(p.as_ptr());
                debug_assert!(r.is_ok());
                core::ptr::null_mut()
            }
            Err(_) => core::ptr::null_mut(),
        }
    }
}

// SAFETY: blocks come from kmalloc, which hands out each block once, at least
// `layout.size()` bytes, aligned as checked in `request`/`alloc_layout`; failures
// return null; `dealloc` passes the pointer back to kfree, which refuses (and
// we ignore) anything it did not hand out.
unsafe impl<C: Cpu> GlobalAlloc for KmallocHeap<'_, '_, C> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.alloc_layout(layout, false)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.alloc_layout(layout, true)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        if self.slab.kfree(ptr).is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= 8 && new_size > 0 {
            // SAFETY: GlobalAlloc's contract: `ptr` is a live block of ours that
            // the caller owns.
            let r = unsafe { self.slab.krealloc(ptr, new_size, self.gfp) };
            return r.map_or(core::ptr::null_mut(), NonNull::as_ptr);
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: forwarded contract.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, at least min(old, new) bytes.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

// SAFETY: as for GlobalAlloc: blocks are valid for the layout until deallocated;
// the allocator is shared by reference and thread-safe.
unsafe impl<C: Cpu> allocator_api2::alloc::Allocator for &KmallocHeap<'_, '_, C> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        if layout.size() == 0 {
            // A dangling, well-aligned pointer, as the API allows.
            let p = NonNull::new(core::ptr::without_provenance_mut::<u8>(layout.align()))
                .ok_or(allocator_api2::alloc::AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(p, 0));
        }
        let p = NonNull::new(self.alloc_layout(layout, false))
            .ok_or(allocator_api2::alloc::AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        if self.slab.kfree(ptr.as_ptr()).is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}
