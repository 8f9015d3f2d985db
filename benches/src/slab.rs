//! Drivers for the slab benchmarks (`benches/slab_alloc.rs`): one [`ObjAlloc`]
//! interface over kmm's SLAB allocator and the crates.io heap allocators a
//! hobby-kernel author would otherwise pick, and the workloads run on it.
//!
//! - kmm: [`KmmSlab`] is `kmm-slab`'s `kmalloc`/`kfree`/`krealloc` over
//!   `kmm-buddy` on the host mock, built by [`with_kmm`] exactly as the
//!   `kmm-slab` doc example does; [`cache_pair`] gives the
//!   `kmem_cache_alloc`/`kmem_cache_free` hot path; [`Global`] drives any
//!   `GlobalAlloc`, kmm's `KmallocHeap` included.
//! - The peers, each on a [`HostHeap`] of the same size: [`SlabMallocHeap`]
//!   (`slabmalloc`'s `ZoneAllocator` with a simple page provider),
//!   [`TalcHeap`] (`talc`), [`LinkedListHeap`] (`linked_list_allocator`'s
//!   `Heap`) and [`BuddyHeap`] (`buddy_system_allocator`'s `Heap`), unlocked;
//!   [`Locked`] puts a peer's own locked variant (or a [`SpinLocked`] one) on
//!   its heap for the two-thread workload.
//!
//! Workloads: [`pair`] (one allocation and its free), [`random_actions`] +
//! [`run_actions`] (a fixed-seed sequence of allocations, frees and reallocs,
//! the same for everyone), [`fill_until_failure`] (heap efficiency) and
//! [`two_threads`]. Every request is aligned to [`ALIGN`] bytes.
//!
//! # Example
//!
//! ```
//! use kmm_benches::slab::{KmmSlab, ObjAlloc, TalcHeap, pair, with_kmm};
//!
//! let heap = with_kmm(16 << 20, 1, |slab, heap, _cpu0| {
//!     pair(&mut KmmSlab::new(slab), 64);
//!     heap
//! });
//! let mut talc = TalcHeap::new(heap);
//! pair(&mut talc, 64);
//! ```

use core::alloc::{GlobalAlloc, Layout};
use core::ops::RangeInclusive;
use core::ptr::NonNull;
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use kmm_buddy::Gfp;
use kmm_hal::PAGE_SIZE;
use kmm_mock::{CpuBinding, MockCpu};
use kmm_slab::{SlabAllocator, SlabFlags};
use slabmalloc::{AllocationError, Allocator as _, LargeObjectPage, ObjectPage, ZoneAllocator};
use talc::DefaultBinning;
use talc::base::Talc;
use talc::source::Manual;

use crate::{Host, KmmPath, XorShift};

/// The alignment of every request (a `Layout` of `(size, ALIGN)`).
pub const ALIGN: usize = 8;
/// The object size of the hot-path workloads.
pub const HOT_SIZE: usize = 64;
/// RAM of the kmm machine; the peers get a heap of the size kmm can hand out.
pub const KMM_RAM: usize = 64 << 20;
/// Most objects live at once in the random workloads.
pub const MAX_LIVE: usize = 256;
/// Free lists of [`BuddyHeap`] (blocks up to 2^31 bytes; the crate's usual
/// choice).
pub const BUDDY_ORDER: usize = 32;

/// An object allocator as the slab workloads drive it: `size`-byte blocks
/// aligned to [`ALIGN`], handed out, resized and taken back.
pub trait ObjAlloc {
    /// Allocates `size` bytes, or `None` when the heap cannot (or `size` is 0).
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>>;

    /// Frees a block. Panics if the allocator refuses it (a driver bug).
    ///
    /// # Safety
    /// `ptr` must have come from `alloc` (or `realloc`) of this allocator for
    /// `size` bytes, and not have been freed since.
    unsafe fn free(&mut self, ptr: NonNull<u8>, size: usize);

    /// Resizes a block from `old` to `new` bytes (`new > 0`), keeping its
    /// first `min(old, new)` bytes. On `None` the old block is still live.
    ///
    /// # Safety
    /// As for [`ObjAlloc::free`] with `old`; on success `ptr` is gone (unless
    /// it is the result).
    unsafe fn realloc(&mut self, ptr: NonNull<u8>, old: usize, new: usize) -> Option<NonNull<u8>>;
}

/// The layout of a `size`-byte request.
#[inline]
fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, ALIGN).expect("request sizes are small")
}

/// A reallocation as `GlobalAlloc::realloc` does it by default: allocate,
/// copy, free.
///
/// # Safety
/// As for [`ObjAlloc::realloc`].
#[inline]
unsafe fn move_realloc<A: ObjAlloc + ?Sized>(
    a: &mut A,
    ptr: NonNull<u8>,
    old: usize,
    new: usize,
) -> Option<NonNull<u8>> {
    let n = a.alloc(new)?;
    // SAFETY: `ptr` is live for `old` bytes (caller), `n` is a fresh block of
    // `new` bytes: distinct, both valid for the copied length.
    unsafe {
        core::ptr::copy_nonoverlapping(ptr.as_ptr(), n.as_ptr(), old.min(new));
        a.free(ptr, old);
    }
    Some(n)
}

/// kmm's SLAB allocator over the buddy allocator of a fresh `ram`-byte host
/// machine with `cpus` simulated CPUs, built as the `kmm-slab` doc example does
/// (`Backing::Mmap`, one usable region, `Bootmem`, `MemMap::new`, `Buddy::new`
/// with `min_free_kbytes: Some(0)`, `SlabAllocator::new`), handed to `f` with
/// the heap size and the calling thread's binding to CPU 0.
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
    let mut host = Host::with_cpus(ram, cpus);
    let cpu0 = host.cpu().bind(0).expect("bind the bench thread to CPU 0");
    let buddy = host.buddy(KmmPath::PerCpu.config());
    let heap = buddy.free_pages_total() * PAGE_SIZE;
    let slab = SlabAllocator::new(&buddy).expect("slab allocator");
    f(&slab, heap, cpu0)
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

/// Hot path: one `size`-byte allocation and its free.
#[inline]
pub fn pair<A: ObjAlloc + ?Sized>(a: &mut A, size: usize) {
    let p = a.alloc(size).expect("the heap has room");
    // SAFETY: just allocated for `size` bytes.
    unsafe { a.free(black_box(p), size) };
}

/// One step of a random workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Allocate this many bytes and append the block to the live ones.
    Alloc(usize),
    /// Free the live block at this index (`swap_remove`).
    Free(usize),
    /// Resize the live block at this index to this many bytes.
    Realloc(usize, usize),
}

/// A fixed-seed sequence of `steps` random actions — allocate a block of a
/// size drawn uniformly from `sizes`, free a random live block, or (with
/// `realloc`, a third of the steps) resize a random live block to a size drawn
/// from `sizes` — followed by the frees of the blocks still live, so it starts
/// and ends with nothing allocated. An allocation or free step frees with
/// probability `live / max_live`: the live set never exceeds `max_live` and
/// hovers around half of it.
pub fn random_actions(
    seed: u64,
    steps: usize,
    sizes: RangeInclusive<usize>,
    max_live: usize,
    realloc: bool,
) -> Vec<Action> {
    let (lo, hi) = sizes.into_inner();
    assert!(0 < lo && lo <= hi && max_live > 0);
    let mut rng = XorShift::new(seed);
    let size = move |rng: &mut XorShift| lo + rng.below(hi - lo + 1);
    let mut out = Vec::with_capacity(steps + max_live);
    let mut live = 0usize;
    for _ in 0..steps {
        if realloc && live > 0 && rng.below(3) == 0 {
            out.push(Action::Realloc(rng.below(live), size(&mut rng)));
        } else if rng.below(max_live) < live {
            live -= 1;
            out.push(Action::Free(rng.below(live + 1)));
        } else {
            live += 1;
            out.push(Action::Alloc(size(&mut rng)));
        }
    }
    while live > 0 {
        out.push(Action::Free(rng.below(live)));
        live -= 1;
    }
    out
}

/// Runs a sequence from [`random_actions`]; `live` is scratch space (emptied
/// first, empty again at the end). Panics if an allocation fails.
pub fn run_actions<A: ObjAlloc + ?Sized>(
    a: &mut A,
    actions: &[Action],
    live: &mut Vec<(NonNull<u8>, usize)>,
) {
    live.clear();
    for &act in actions {
        match act {
            Action::Alloc(size) => {
                let p = a.alloc(size).expect("the random workload fits");
                live.push((black_box(p), size));
            }
            Action::Free(i) => {
                let (p, size) = live.swap_remove(i);
                // SAFETY: a live block of `size` bytes, removed from `live`.
                unsafe { a.free(p, size) };
            }
            Action::Realloc(i, new) => {
                let (p, old) = live[i];
                // SAFETY: a live block of `old` bytes; replaced in `live` below.
                let q = unsafe { a.realloc(p, old, new) }.expect("the random workload fits");
                live[i] = (black_box(q), new);
            }
        }
    }
    debug_assert!(live.is_empty());
}

/// Heap efficiency: allocates blocks of sizes drawn uniformly from `sizes`
/// (fixed seed) until the first allocation fails, then frees them all; returns
/// the bytes requested by the successful allocations. `live` is scratch space.
pub fn fill_until_failure<A: ObjAlloc + ?Sized>(
    a: &mut A,
    seed: u64,
    sizes: RangeInclusive<usize>,
    live: &mut Vec<(NonNull<u8>, usize)>,
) -> usize {
    let (lo, hi) = sizes.into_inner();
    assert!(0 < lo && lo <= hi);
    let mut rng = XorShift::new(seed);
    live.clear();
    let mut bytes = 0;
    loop {
        let size = lo + rng.below(hi - lo + 1);
        match a.alloc(size) {
            Some(p) => {
                live.push((p, size));
                bytes += size;
            }
            None => break,
        }
    }
    for (p, size) in live.drain(..) {
        // SAFETY: live blocks of these sizes, each freed once.
        unsafe { a.free(p, size) };
    }
    bytes
}

/// The allocators of the heap-efficiency table, in its order.
pub const EFFICIENCY_NAMES: [&str; 5] = [
    "kmm (kmalloc)",
    "slabmalloc",
    "talc",
    "linked_list_allocator",
    "buddy_system_allocator",
];

/// Heap efficiency of every allocator for sizes drawn from `sizes`: kmm on a
/// `ram`-byte machine ([`with_kmm`]), the peers on heaps of the size kmm can
/// hand out. Returns that heap size and, in [`EFFICIENCY_NAMES`] order, the
/// bytes each allocator handed out before its first failure.
pub fn efficiency(ram: usize, seed: u64, sizes: RangeInclusive<usize>) -> (usize, [usize; 5]) {
    let mut live = Vec::new();
    let (heap, kmm) = with_kmm(ram, 1, |slab, heap, _cpu0| {
        let got = fill_until_failure(&mut KmmSlab::new(slab), seed, sizes.clone(), &mut live);
        (heap, got)
    });
    let got = [
        kmm,
        fill_until_failure(
            &mut SlabMallocHeap::new(heap),
            seed,
            sizes.clone(),
            &mut live,
        ),
        fill_until_failure(&mut TalcHeap::new(heap), seed, sizes.clone(), &mut live),
        fill_until_failure(
            &mut LinkedListHeap::new(heap),
            seed,
            sizes.clone(),
            &mut live,
        ),
        fill_until_failure(&mut BuddyHeap::new(heap), seed, sizes, &mut live),
    ];
    (heap, got)
}

/// Runs `work` `iters` times on each of two threads at once and returns the
/// wall time from their common start to the end of the slower one. Each
/// thread first calls `setup(thread index)` (to bind its simulated CPU, say)
/// outside the timing, and keeps the result until it is done.
pub fn two_threads<S>(
    iters: u64,
    setup: impl Fn(usize) -> S + Sync,
    work: impl Fn(&mut S) + Sync,
) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        for id in 0..2 {
            let (barrier, setup, work) = (&barrier, &setup, &work);
            s.spawn(move || {
                let mut state = setup(id);
                barrier.wait();
                for _ in 0..iters {
                    work(&mut state);
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SEED;

    /// Heap of the peers in the tests (slabmalloc needs a 2 MiB page for each
    /// size class above 256 bytes: seven for requests up to 30 000 bytes).
    const SMALL: usize = 32 << 20;
    /// Heap of the efficiency test.
    const EFF: usize = 8 << 20;

    /// Runs the timed workloads on `a`, small.
    fn drive<A: ObjAlloc + ?Sized>(a: &mut A) {
        for _ in 0..100 {
            pair(a, HOT_SIZE);
        }
        let mut live = Vec::new();
        for (sizes, realloc) in [(8..=4096, false), (1..=200, true), (1..=30_000, true)] {
            let acts = random_actions(SEED, 600, sizes, 32, realloc);
            run_actions(a, &acts, &mut live);
            run_actions(a, &acts, &mut live);
        }
    }

    /// Grows and shrinks one block, checking that the kept prefix survives
    /// each move: the drivers' realloc really carries the contents along.
    fn realloc_keeps_contents<A: ObjAlloc + ?Sized>(a: &mut A) {
        let mut size = 100;
        let mut p = a.alloc(size).expect("room");
        for (round, new) in [150, 3000, 20, 9000, 100].into_iter().enumerate() {
            let byte = 0xa0 + round as u8;
            // SAFETY: `p` is live for `size` bytes.
            unsafe { core::ptr::write_bytes(p.as_ptr(), byte, size) };
            // SAFETY: `p` is live for `size` bytes; it is replaced below.
            p = unsafe { a.realloc(p, size, new) }.expect("room");
            // SAFETY: the first `min(size, new)` bytes are live and kept.
            let kept = unsafe { core::slice::from_raw_parts(p.as_ptr(), size.min(new)) };
            assert!(
                kept.iter().all(|&b| b == byte),
                "{size} -> {new} lost bytes"
            );
            size = new;
        }
        // SAFETY: live for `size` bytes.
        unsafe { a.free(p, size) };
    }

    #[test]
    fn actions_are_closed_bounded_and_fixed() {
        let acts = random_actions(SEED, 5000, 1..=200, 64, true);
        assert_eq!(acts, random_actions(SEED, 5000, 1..=200, 64, true));
        let (mut live, mut max, mut reallocs) = (0usize, 0usize, 0usize);
        for a in &acts {
            match *a {
                Action::Alloc(s) => {
                    assert!((1..=200).contains(&s));
                    live += 1;
                }
                Action::Free(i) => {
                    assert!(i < live);
                    live -= 1;
                }
                Action::Realloc(i, s) => {
                    assert!(i < live && (1..=200).contains(&s));
                    reallocs += 1;
                }
            }
            max = max.max(live);
        }
        assert_eq!(live, 0);
        assert!(max > 40 && max <= 64, "the live set fills up to {max}");
        assert!(reallocs > 1400, "a third of the steps resize: {reallocs}");
        let plain = random_actions(SEED, 5000, 8..=4096, 64, false);
        assert!(!plain.iter().any(|a| matches!(a, Action::Realloc(..))));
    }

    #[test]
    fn kmm_drivers() {
        with_kmm(SMALL, 1, |slab, heap, _cpu0| {
            assert!(heap > SMALL * 9 / 10 && heap < SMALL, "{heap}");
            let hot = cache_pair(slab);
            for _ in 0..100 {
                hot();
            }
            drive(&mut KmmSlab::new(slab));
            realloc_keeps_contents(&mut KmmSlab::new(slab));
            let global = kmm_slab::KmallocHeap::new(slab);
            drive(&mut Global(&global));
            assert_eq!(global.refused(), 0);
        });
    }

    #[test]
    fn peers_drive() {
        drive(&mut SlabMallocHeap::new(SMALL));
        drive(&mut TalcHeap::new(SMALL));
        drive(&mut LinkedListHeap::new(SMALL));
        drive(&mut BuddyHeap::new(SMALL));
        realloc_keeps_contents(&mut SlabMallocHeap::new(SMALL));
        realloc_keeps_contents(&mut TalcHeap::new(SMALL));
        realloc_keeps_contents(&mut LinkedListHeap::new(SMALL));
        realloc_keeps_contents(&mut BuddyHeap::new(SMALL));
        drive(&mut Global(Locked::talc(SMALL).heap()));
        drive(&mut Global(Locked::linked_list(SMALL).heap()));
        drive(&mut Global(Locked::buddy(SMALL).heap()));
        drive(&mut Global(Locked::slabmalloc(SMALL).heap()));
    }

    #[test]
    fn heap_efficiency_is_sane() {
        for sizes in [1..=200, 1..=30_000] {
            let (heap, got) = efficiency(EFF, SEED, sizes.clone());
            for (name, &bytes) in EFFICIENCY_NAMES.iter().zip(&got) {
                assert!(
                    bytes > 0 && bytes < heap,
                    "{name} {sizes:?}: {bytes} of {heap}"
                );
            }
            // A heap refills after the frees: the allocator ends usable.
            let mut t = TalcHeap::new(heap);
            let mut live = Vec::new();
            let a = fill_until_failure(&mut t, SEED, sizes.clone(), &mut live);
            assert_eq!(a, fill_until_failure(&mut t, SEED, sizes, &mut live));
        }
        // The slabmalloc pager fails only when small and large pages meet.
        let mut s = SlabMallocHeap::new(4 << 20);
        let mut live = Vec::new();
        assert!(fill_until_failure(&mut s, SEED, 1..=200, &mut live) > (2 << 20));
    }

    #[test]
    fn two_threads_on_their_own_cpus() {
        with_kmm(SMALL, 2, |slab, _heap, cpu0| {
            let hot = cache_pair(slab);
            drop(cpu0);
            let cpu = slab.buddy().cpu();
            let t = two_threads(
                1000,
                |id| cpu.bind(id).expect("a CPU per thread"),
                |_bound| hot(),
            );
            assert!(t > Duration::ZERO);
            two_threads(
                1000,
                |id| cpu.bind(id).expect("a CPU per thread"),
                |_| pair(&mut KmmSlab::new(slab), HOT_SIZE),
            );
        });
        let talc = Locked::talc(SMALL);
        two_threads(1000, |_| Global(talc.heap()), |g| pair(g, HOT_SIZE));
        let slabm = Locked::slabmalloc(SMALL);
        two_threads(1000, |_| Global(slabm.heap()), |g| pair(g, HOT_SIZE));
    }
}
