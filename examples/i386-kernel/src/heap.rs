//! The kernel heap: the slab allocator (kmm-slab) over the buddy allocator,
//! kept for the kernel's life, and `kmalloc` as the `#[global_allocator]`, so
//! `Vec`, `Box`, `String` and `BTreeMap` from `alloc` work once [`init`] ran.

use core::alloc::{GlobalAlloc, Layout};

use crate::smp::KernelCpu;
use kmm_slab::{KmallocHeap, SlabAllocator};

use crate::buddy_check::KernelBuddy;

/// The slab allocator the kernel builds.
pub type KernelSlab = SlabAllocator<'static, KernelCpu>;

/// The slab allocator, built once by [`init`] and kept for the kernel's life
/// (the global allocator borrows it).
static SLAB: spin::Once<KernelSlab> = spin::Once::new();

/// `kmalloc` behind `GlobalAlloc`: forwards to a [`KmallocHeap`] over the
/// kernel's slab allocator once [`init`] made it; before that every allocation
/// fails (returns null), so an early `Box::new` ends in the allocation error
/// handler's panic rather than in undefined behaviour.
pub struct KernelHeap {
    heap: spin::Once<KmallocHeap<'static, 'static, KernelCpu>>,
}

impl KernelHeap {
    /// A heap that is not ready yet.
    const fn new() -> KernelHeap {
        KernelHeap {
            heap: spin::Once::new(),
        }
    }

    /// Deallocations the heap refused (pointers kmalloc did not hand out, or
    /// already freed): 0 in a kernel without bugs.
    pub fn refused(&self) -> usize {
        self.heap.get().map_or(0, KmallocHeap::refused)
    }
}

/// The kernel's global allocator.
#[global_allocator]
pub static HEAP: KernelHeap = KernelHeap::new();

// SAFETY: every call goes to the `KmallocHeap`, whose `GlobalAlloc` contract
// holds (blocks from kmalloc, each handed out once, at least the layout's size
// and aligned to it; null on failure). Before `init` nothing is allocated:
// `alloc`, `alloc_zeroed` and `realloc` return null (which the contract
// allows), and `dealloc` cannot be reached with a pointer of ours.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.heap.get() {
            // SAFETY: the caller's contract, forwarded.
            Some(h) => unsafe { h.alloc(layout) },
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match self.heap.get() {
            // SAFETY: the caller's contract, forwarded.
            Some(h) => unsafe { h.alloc_zeroed(layout) },
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(h) = self.heap.get() {
            // SAFETY: the caller's contract, forwarded: `ptr` came from this
            // allocator (hence from the heap, which was ready) with `layout`.
            unsafe { h.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match self.heap.get() {
            // SAFETY: the caller's contract, forwarded.
            Some(h) => unsafe { h.realloc(ptr, layout, new_size) },
            None => core::ptr::null_mut(),
        }
    }
}

/// The slab allocator, once [`init`] built it.
pub fn slab() -> Option<&'static KernelSlab> {
    SLAB.get()
}

/// Builds the slab allocator over `buddy` (the cache of caches and the
/// general caches for kmalloc) and makes it the global allocator. Called once.
pub fn init(buddy: &'static KernelBuddy<'static>) -> &'static KernelSlab {
    assert!(!SLAB.is_completed(), "the slab allocator is built once");
    let slab = SLAB.call_once(|| match SlabAllocator::new(buddy) {
        Ok(s) => s,
        Err(e) => panic!("slab allocator: {e}"),
    });
    HEAP.heap.call_once(|| KmallocHeap::new(slab));
    slab
}
