//! [`GlobalHeap`]: the memory manager as a kernel's `#[global_allocator]`,
//! `const`-constructed and brought up by one call.
//!
//! ```ignore
//! #[global_allocator]
//! static HEAP: kmm::GlobalHeap<kmm::I386> = kmm::GlobalHeap::new();
//! // once the memory map is known:
//! let mm = unsafe { HEAP.init(kmm::I386::new(), params) }.expect("memory manager");
//! ```
//!
//! Requests up to the largest buddy block (4 MiB with `MAX_ORDER` 11) go to
//! `kmalloc`; larger ones — and large ones `kmalloc` cannot place for
//! fragmentation — go to `vmalloc`, as Linux's `kvmalloc` does, so a `Vec`
//! of any size that fits in memory can grow.
//!
//! # Bad input
//!
//! `dealloc` sends an address in the vmalloc range to `vfree` and anything
//! else to `kfree`; a refusal changes nothing, is counted
//! ([`GlobalHeap::refused`]) and goes to the report hook with the pointer
//! (`crates/kmm/tests/global_heap.rs` makes each call):
//!
//! | `dealloc` of | reported as |
//! |---|---|
//! | anything, before `init` | `Refused::NotInitialized` |
//! | a `kmalloc` block already freed | `Refused::Kfree(SlabError::DoubleFree)` |
//! | a pointer inside a `kmalloc` block | `Refused::Kfree(SlabError::Interior)` |
//! | a pointer no allocator handed out (the stack, a static) | `Refused::Kfree(SlabError::Foreign)` |
//! | a `vmalloc` block already freed | `Refused::Vfree(VmallocError::NotLive)` |
//! | a pointer inside a `vmalloc` block | `Refused::Vfree(VmallocError::Interior)` |
//!
//! Allocation failures return null: out of memory, an alignment above a
//! page with a size `kmalloc` cannot serve, a layout `vmalloc` refuses.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};

use kmm_buddy::MAX_ORDER;
use kmm_hal::{PAGE_SIZE, VirtAddr};
use kmm_slab::SlabError;
use kmm_vmalloc::VmallocError;

use crate::{BootParams, InitError, MemoryManager, Platform};

/// The largest request `kmalloc` serves for the heap: the largest buddy
/// block. Larger ones go to `vmalloc`.
pub const KMALLOC_MAX_SIZE: usize = PAGE_SIZE << (MAX_ORDER - 1);

/// Why the heap refused a deallocation (the pointer was not a live block of
/// this heap): what `kfree` or `vfree` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `kfree` refused it.
    Kfree(SlabError),
    /// `vfree` refused it (a vmalloc-range address that is not a live area).
    Vfree(VmallocError),
    /// A deallocation before `init`: the heap never handed anything out.
    NotInitialized,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Kfree(e) => write!(f, "kfree: {e}"),
            Refused::Vfree(e) => write!(f, "vfree: {e}"),
            Refused::NotInitialized => f.write_str("the heap is not initialised"),
        }
    }
}

/// Called with the pointer and the reason for every deallocation the heap
/// refuses (a bug in the kernel: a double free, a foreign pointer). It runs
/// with no allocator lock held; it must not deallocate through the heap.
pub type ReportHook = fn(ptr: *mut u8, why: Refused);

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;

/// The memory manager as a `GlobalAlloc`: a `static` a kernel installs with
/// `#[global_allocator]` and brings up once with [`GlobalHeap::init`].
/// Before `init`, every allocation returns null (the allocation error
/// handler runs; nothing panics here).
pub struct GlobalHeap<P: Platform + 'static> {
    mm: AtomicPtr<MemoryManager<'static, P>>,
    state: AtomicU8,
    refused: AtomicUsize,
    report: Option<ReportHook>,
}

impl<P: Platform + 'static> fmt::Debug for GlobalHeap<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobalHeap")
            .field("ready", &self.get().is_some())
            .field("refused", &self.refused())
            .finish()
    }
}

impl<P: Platform + 'static> Default for GlobalHeap<P> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: the manager it points to is `Sync` where it is shared (its
// allocators lock internally); the pointer is published once with
// release/acquire ordering.
unsafe impl<P: Platform + 'static> Sync for GlobalHeap<P> where MemoryManager<'static, P>: Sync {}

impl<P: Platform + 'static> GlobalHeap<P> {
    /// A heap that is not initialised yet; refusals are only counted.
    pub const fn new() -> Self {
        GlobalHeap {
            mm: AtomicPtr::new(ptr::null_mut()),
            state: AtomicU8::new(UNINIT),
            refused: AtomicUsize::new(0),
            report: None,
        }
    }

    /// A heap that also reports each refused deallocation to `hook`.
    pub const fn with_report(hook: ReportHook) -> Self {
        let mut h = Self::new();
        h.report = Some(hook);
        h
    }

    /// Brings the memory manager up ([`MemoryManager::init`]) and makes it
    /// this heap's. Any later call — after a success or a failure — fails
    /// with [`InitError::AlreadyInitialized`], changing nothing.
    ///
    /// # Safety
    ///
    /// [`MemoryManager::init`]'s, with `'a = 'static`: the direct map
    /// stays mapped for the rest of the kernel's life.
    pub unsafe fn init(
        &self,
        platform: P,
        params: BootParams<'_, P>,
    ) -> Result<&'static MemoryManager<'static, P>, InitError> {
        if self
            .state
            .compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(InitError::AlreadyInitialized);
        }
        // SAFETY: the caller's contract, forwarded. On failure the heap
        // stays unusable (state BUSY): a second try would build a second
        // manager over RAM the first may have claimed.
        let mm: *mut MemoryManager<'static, P> = unsafe { MemoryManager::init(platform, params) }?;
        self.mm.store(mm, Ordering::Release);
        self.state.store(READY, Ordering::Release);
        // SAFETY: the manager lives for `'static` and is only shared from
        // now on.
        Ok(unsafe { &*mm })
    }

    /// The memory manager, once [`Self::init`] built it.
    pub fn get(&self) -> Option<&'static MemoryManager<'static, P>> {
        let p = self.mm.load(Ordering::Acquire);
        // SAFETY: non-null only once `init` published a manager that lives
        // for `'static` and is only shared.
        unsafe { p.as_ref() }
    }

    /// Deallocations refused so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    fn refuse(&self, ptr: *mut u8, why: Refused) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = self.report {
            hook(ptr, why);
        }
    }

    fn is_vmalloc(mm: &MemoryManager<'static, P>, ptr: *mut u8) -> bool {
        mm.vmalloc.is_vmalloc_addr(VirtAddr::new(ptr.addr()))
    }

    fn alloc_with(&self, layout: Layout, zero: bool) -> *mut u8 {
        let Some(mm) = self.get() else {
            return ptr::null_mut();
        };
        if layout.size() <= KMALLOC_MAX_SIZE || layout.align() > PAGE_SIZE {
            // SAFETY: `layout` has a non-zero size (GlobalAlloc's contract).
            let p = unsafe {
                if zero {
                    mm.heap.alloc_zeroed(layout)
                } else {
                    mm.heap.alloc(layout)
                }
            };
            if !p.is_null() || layout.size() <= PAGE_SIZE || layout.align() > PAGE_SIZE {
                return p;
            }
        }
        // kvmalloc: too large for a buddy block, or no block free.
        let r = if zero {
            mm.vmalloc.vzalloc(layout.size())
        } else {
            mm.vmalloc.vmalloc(layout.size())
        };
        r.map_or(ptr::null_mut(), NonNull::as_ptr)
    }
}

// SAFETY: blocks come from kmalloc (each handed out once, at least the
// layout's size, aligned as `KmallocHeap` checks) or from vmalloc (page
// aligned, whole pages, only for alignments up to a page); failures return
// null; `dealloc` gives each pointer back to the allocator whose range it
// lies in, which refuses (and we report) anything it did not hand out.
unsafe impl<P: Platform + 'static> GlobalAlloc for GlobalHeap<P> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.alloc_with(layout, false)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.alloc_with(layout, true)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        let Some(mm) = self.get() else {
            self.refuse(ptr, Refused::NotInitialized);
            return;
        };
        let r = if Self::is_vmalloc(mm, ptr) {
            mm.vmalloc.vfree(ptr).map_err(Refused::Vfree)
        } else {
            mm.slab.kfree(ptr).map_err(Refused::Kfree)
        };
        if let Err(why) = r {
            self.refuse(ptr, why);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(mm) = self.get() else {
            return ptr::null_mut();
        };
        if new_size <= KMALLOC_MAX_SIZE && !Self::is_vmalloc(mm, ptr) {
            // SAFETY: GlobalAlloc's contract: `ptr` is a live kmalloc block
            // of ours with `layout`.
            let p = unsafe { mm.heap.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                return p;
            }
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        let new = self.alloc_with(new_layout, false);
        if !new.is_null() {
            // SAFETY: both blocks are live and at least min(old, new) bytes;
            // `ptr` is ours with `layout` (the caller's contract).
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
