//! The peers of the slab benchmarks, each on a host heap of the same size,
//! unlocked and in the locked variant a kernel would install.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use kmm_hal::PAGE_SIZE;
use slabmalloc::{AllocationError, Allocator as _, LargeObjectPage, ObjectPage, ZoneAllocator};
use talc::DefaultBinning;
use talc::base::Talc;
use talc::source::Manual;

use super::*;

/// Host memory for a peer's heap: `bytes` zeroed bytes aligned to 2 MiB
/// (slabmalloc's large pages must be aligned to their size), freed on drop.
#[derive(Debug)]
pub struct HostHeap {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: a HostHeap only owns the memory; whoever it is lent to (through the
// raw pointer) synchronises its use of the bytes.
unsafe impl Send for HostHeap {}
// SAFETY: as above: `&HostHeap` only reads the address and size.
unsafe impl Sync for HostHeap {}

impl HostHeap {
    /// The alignment of the memory.
    pub const ALIGN: usize = 2 << 20;

    /// `bytes` (at least one) of zeroed memory.
    pub fn new(bytes: usize) -> HostHeap {
        let layout = Layout::from_size_align(bytes.max(1), Self::ALIGN).expect("heap layout");
        // SAFETY: the layout's size is not zero.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        HostHeap { ptr, layout }
    }

    /// The first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The size in bytes.
    pub fn bytes(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for HostHeap {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// `talc`'s allocator (`Talc<Manual, DefaultBinning>`, the core that
/// `TalcCell` and `TalcLock` wrap) over one claimed heap. `realloc` is
/// `TalcLock`'s: in place if it can, else allocate, copy, free.
pub struct TalcHeap {
    // Declared before `mem`, so dropped before the memory it points into.
    talc: Talc<Manual, DefaultBinning>,
    _mem: HostHeap,
}

impl TalcHeap {
    /// A heap of `bytes` bytes.
    pub fn new(bytes: usize) -> TalcHeap {
        let mem = HostHeap::new(bytes);
        let mut talc = Talc::new(Manual);
        // SAFETY: the memory is ours, unused by anything else, and lives as long
        // as `talc` (same struct, dropped after it).
        unsafe { talc.claim(mem.as_ptr(), mem.bytes()) }.expect("talc claims the heap");
        TalcHeap { talc, _mem: mem }
    }
}

impl ObjAlloc for TalcHeap {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        if size == 0 {
            return None;
        }
        // SAFETY: the size is not zero.
        unsafe { self.talc.allocate(layout(size)) }
    }

    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, size: usize) {
        // SAFETY: the caller's contract.
        unsafe { self.talc.deallocate(ptr.as_ptr(), layout(size)) }
    }

    #[inline]
    unsafe fn realloc(&mut self, ptr: NonNull<u8>, old: usize, new: usize) -> Option<NonNull<u8>> {
        // SAFETY: the caller's contract; `new > 0`.
        if unsafe {
            self.talc
                .try_realloc_in_place(ptr.as_ptr(), layout(old), new)
        } {
            return Some(ptr);
        }
        // SAFETY: the caller's contract.
        unsafe { move_realloc(self, ptr, old, new) }
    }
}

/// `linked_list_allocator::Heap`: first fit over a list of holes. It has no
/// realloc of its own (its `LockedHeap` uses `GlobalAlloc`'s default:
/// allocate, copy, free), and neither has this driver.
pub struct LinkedListHeap {
    heap: linked_list_allocator::Heap,
    _mem: HostHeap,
}

impl LinkedListHeap {
    /// A heap of `bytes` bytes.
    pub fn new(bytes: usize) -> LinkedListHeap {
        let mem = HostHeap::new(bytes);
        let mut heap = linked_list_allocator::Heap::empty();
        // SAFETY: as for `TalcHeap::new`.
        unsafe { heap.init(mem.as_ptr(), mem.bytes()) };
        LinkedListHeap { heap, _mem: mem }
    }
}

impl ObjAlloc for LinkedListHeap {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        if size == 0 {
            return None;
        }
        self.heap.allocate_first_fit(layout(size)).ok()
    }

    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, size: usize) {
        // SAFETY: the caller's contract.
        unsafe { self.heap.deallocate(ptr, layout(size)) }
    }

    #[inline]
    unsafe fn realloc(&mut self, ptr: NonNull<u8>, old: usize, new: usize) -> Option<NonNull<u8>> {
        // SAFETY: the caller's contract.
        unsafe { move_realloc(self, ptr, old, new) }
    }
}

/// `buddy_system_allocator::Heap<32>`: power-of-two blocks of at least 8
/// bytes. It has no realloc of its own (its `LockedHeap` uses `GlobalAlloc`'s
/// default: allocate, copy, free), and neither has this driver: staying in
/// place within a block would break `dealloc`'s rule that the layout match the
/// allocation's (its statistics underflow).
pub struct BuddyHeap {
    heap: buddy_system_allocator::Heap<BUDDY_ORDER>,
    _mem: HostHeap,
}

impl BuddyHeap {
    /// A heap of `bytes` bytes.
    pub fn new(bytes: usize) -> BuddyHeap {
        let mem = HostHeap::new(bytes);
        let mut heap = buddy_system_allocator::Heap::new();
        // SAFETY: as for `TalcHeap::new`.
        unsafe { heap.init(mem.as_ptr().addr(), mem.bytes()) };
        BuddyHeap { heap, _mem: mem }
    }
}

impl ObjAlloc for BuddyHeap {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        if size == 0 {
            return None;
        }
        self.heap.alloc(layout(size)).ok()
    }

    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, size: usize) {
        // SAFETY: the caller's contract.
        unsafe { self.heap.dealloc(ptr, layout(size)) }
    }

    #[inline]
    unsafe fn realloc(&mut self, ptr: NonNull<u8>, old: usize, new: usize) -> Option<NonNull<u8>> {
        // SAFETY: the caller's contract.
        unsafe { move_realloc(self, ptr, old, new) }
    }
}

/// Bytes of one of slabmalloc's large pages.
const LARGE_PAGE: usize = 2 << 20;

/// slabmalloc's page provider: 2 MiB `LargeObjectPage`s from the bottom of
/// the heap up, 4 KiB `ObjectPage`s from the top down, until they meet. Pages
/// are never taken back (slabmalloc keeps its empty pages for reuse).
#[derive(Debug)]
struct Pager {
    base: *mut u8,
    /// Offset of the next large page.
    large: usize,
    /// Offset of the end of the small pages.
    small: usize,
}

impl Pager {
    fn new(mem: &HostHeap) -> Pager {
        Pager {
            base: mem.as_ptr(),
            large: 0,
            small: mem.bytes() & !(PAGE_SIZE - 1),
        }
    }

    fn large_page(&mut self) -> Option<*mut u8> {
        if self.small - self.large < LARGE_PAGE {
            return None;
        }
        let at = self.large;
        self.large += LARGE_PAGE;
        Some(self.base.wrapping_add(at))
    }

    fn small_page(&mut self) -> Option<*mut u8> {
        if self.small - self.large < PAGE_SIZE {
            return None;
        }
        self.small -= PAGE_SIZE;
        Some(self.base.wrapping_add(self.small))
    }
}

/// `slabmalloc`'s `ZoneAllocator` (power-of-two size classes from 8 bytes to
/// 128 KiB; 4 KiB pages up to 256 bytes, 2 MiB pages above), refilled from a
/// `Pager` over its heap when a class runs out, as the crate's
/// `global_alloc` example does. `realloc` stays in place within a size class
/// (`ZoneAllocator::get_max_size`, which the crate offers for that), else
/// allocates, copies, frees.
pub struct SlabMallocHeap {
    // The zone holds `'static` references to pages of `_mem`; it is declared
    // first, so dropped first, and never hands those references out.
    zone: ZoneAllocator<'static>,
    pager: Pager,
    _mem: HostHeap,
}

// SAFETY: the zone, the pager and the memory they point into are all owned
// here; nothing is tied to a thread.
unsafe impl Send for SlabMallocHeap {}

impl SlabMallocHeap {
    /// A heap of `bytes` bytes.
    pub fn new(bytes: usize) -> SlabMallocHeap {
        let mem = HostHeap::new(bytes);
        SlabMallocHeap {
            zone: ZoneAllocator::new(),
            pager: Pager::new(&mem),
            _mem: mem,
        }
    }

    /// Gives the zone a fresh page for requests of `l`; false when the heap
    /// has no page left.
    fn refill(&mut self, l: Layout) -> bool {
        if l.size() <= ZoneAllocator::MAX_BASE_ALLOC_SIZE {
            let Some(p) = self.pager.small_page() else {
                return false;
            };
            // SAFETY: a fresh page of the zeroed heap (a valid `ObjectPage`:
            // bytes, atomics and null links), 4 KiB-aligned (the heap is 2 MiB
            // aligned and pages are carved at 4 KiB steps), used by nothing
            // else and alive as long as the zone (see the field order).
            let page = unsafe { &mut *p.cast::<ObjectPage<'static>>() };
            // SAFETY: the page is empty and unused.
            unsafe { self.zone.refill(l, page) }.is_ok()
        } else {
            let Some(p) = self.pager.large_page() else {
                return false;
            };
            // SAFETY: as above, a 2 MiB-aligned, 2 MiB page.
            let page = unsafe { &mut *p.cast::<LargeObjectPage<'static>>() };
            // SAFETY: the page is empty and unused.
            unsafe { self.zone.refill_large(l, page) }.is_ok()
        }
    }
}

impl ObjAlloc for SlabMallocHeap {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        if size == 0 {
            return None;
        }
        let l = layout(size);
        match self.zone.allocate(l) {
            Ok(p) => Some(p),
            Err(AllocationError::OutOfMemory) if self.refill(l) => self.zone.allocate(l).ok(),
            Err(_) => None,
        }
    }

    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, size: usize) {
        let r = self.zone.deallocate(ptr, layout(size));
        assert!(r.is_ok(), "slabmalloc refused a free: {r:?}");
    }

    #[inline]
    unsafe fn realloc(&mut self, ptr: NonNull<u8>, old: usize, new: usize) -> Option<NonNull<u8>> {
        if ZoneAllocator::get_max_size(old) == ZoneAllocator::get_max_size(new) {
            return Some(ptr);
        }
        // SAFETY: the caller's contract.
        unsafe { move_realloc(self, ptr, old, new) }
    }
}

/// An unlocked peer behind a `spin::Mutex`, as a `GlobalAlloc` (slabmalloc's
/// `global_alloc` example does exactly this for its `ZoneAllocator`).
pub struct SpinLocked<T>(spin::Mutex<T>);

impl<T> SpinLocked<T> {
    /// `inner` behind the lock.
    pub fn new(inner: T) -> Self {
        SpinLocked(spin::Mutex::new(inner))
    }
}

// SAFETY: every call goes to the inner allocator under the lock, which hands
// out each block once, valid for its layout (only `ALIGN`-aligned layouts are
// served; others fail).
unsafe impl<T: ObjAlloc> GlobalAlloc for SpinLocked<T> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > ALIGN {
            return core::ptr::null_mut();
        }
        self.0
            .lock()
            .alloc(layout.size())
            .map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: `GlobalAlloc`'s contract: a live block of this layout.
            unsafe { self.0.lock().free(p, layout.size()) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(p) = NonNull::new(ptr) else {
            return core::ptr::null_mut();
        };
        // SAFETY: `GlobalAlloc`'s contract.
        unsafe { self.0.lock().realloc(p, layout.size(), new_size) }
            .map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }
}

/// `talc`'s locked allocator with `spinning_top`'s spinlock, as its README's
/// global allocator uses it.
pub type TalcLocked = talc::TalcLock<spinning_top::RawSpinlock, Manual>;

/// A peer's thread-safe heap (a `GlobalAlloc`) and the memory it manages.
pub struct Locked<A> {
    // Declared before `_mem`, so dropped before the memory it points into.
    heap: A,
    _mem: HostHeap,
}

impl<A: GlobalAlloc> Locked<A> {
    /// The allocator.
    pub fn heap(&self) -> &A {
        &self.heap
    }
}

impl Locked<TalcLocked> {
    /// `talc::TalcLock` over a heap of `bytes` bytes.
    pub fn talc(bytes: usize) -> Self {
        let mem = HostHeap::new(bytes);
        let heap = TalcLocked::new(Manual);
        // SAFETY: as for `TalcHeap::new`.
        unsafe { heap.lock().claim(mem.as_ptr(), mem.bytes()) }.expect("talc claims the heap");
        Locked { heap, _mem: mem }
    }
}

impl Locked<linked_list_allocator::LockedHeap> {
    /// `linked_list_allocator::LockedHeap` over a heap of `bytes` bytes.
    pub fn linked_list(bytes: usize) -> Self {
        let mem = HostHeap::new(bytes);
        let heap = linked_list_allocator::LockedHeap::empty();
        // SAFETY: as for `TalcHeap::new`.
        unsafe { heap.lock().init(mem.as_ptr(), mem.bytes()) };
        Locked { heap, _mem: mem }
    }
}

impl Locked<buddy_system_allocator::LockedHeap<BUDDY_ORDER>> {
    /// `buddy_system_allocator::LockedHeap<32>` over a heap of `bytes` bytes.
    pub fn buddy(bytes: usize) -> Self {
        let mem = HostHeap::new(bytes);
        let heap = buddy_system_allocator::LockedHeap::new();
        // SAFETY: as for `TalcHeap::new`.
        unsafe { heap.lock().init(mem.as_ptr().addr(), mem.bytes()) };
        Locked { heap, _mem: mem }
    }
}

impl Locked<SpinLocked<SlabMallocHeap>> {
    /// slabmalloc's `ZoneAllocator` behind a `spin::Mutex`, over a heap of
    /// `bytes` bytes (the heap lives in the [`SlabMallocHeap`]).
    pub fn slabmalloc(bytes: usize) -> Self {
        Locked {
            heap: SpinLocked::new(SlabMallocHeap::new(bytes)),
            _mem: HostHeap::new(0),
        }
    }
}
