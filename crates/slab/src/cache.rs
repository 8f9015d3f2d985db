//! [`KmemCache`]: a cache of same-size objects — its geometry, slab lists and
//! per-CPU arrays — and the [`Cache`] handle users hold.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use intrusive_collections::{LinkedList, LinkedListLink, UnsafeRef, intrusive_adapter};
use kmm_hal::sync::IrqSpinLock;

use crate::SlabFlags;
use crate::geometry::Geometry;
use crate::slab_desc::SlabAdapter;

/// A constructor, run once on every object when its slab is created.
pub type Ctor = fn(*mut u8);

/// A per-CPU (or shared) array of free objects, LIFO (Linux's `array_cache`).
/// The entries follow the header in memory. Each entry is an object's address
/// and the address of its state byte, so handing an object out needs no slab
/// lookup.
#[repr(C)]
pub(crate) struct ArrayCache {
    pub(crate) avail: usize,
    pub(crate) limit: usize,
    pub(crate) batchcount: usize,
    pub(crate) touched: bool,
}

impl ArrayCache {
    /// Bytes of an array of `limit` entries, rounded up to whole cache lines
    /// (each CPU's array starts on a line of its own: no false sharing).
    pub(crate) const fn bytes(limit: usize) -> usize {
        (core::mem::size_of::<ArrayCache>() + limit * core::mem::size_of::<Entry>())
            .next_multiple_of(64)
    }

    /// The entries. They follow the header and are reached by address (with the
    /// provenance the allocator exposed for its memory), not through `self`,
    /// whose provenance covers only the header.
    #[inline]
    pub(crate) fn entries(&mut self) -> &mut [Entry] {
        let p = self.entry_ptr(0);
        // SAFETY: `limit` entries follow the header (see `init`), and `&mut self`
        // gives exclusive access to the array they belong to.
        unsafe { core::slice::from_raw_parts_mut(p, self.limit) }
    }

    /// Takes the most recently added entry. The array must not be empty.
    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Entry {
        debug_assert!(
            self.avail > 0 && self.avail <= self.limit,
            "array underflow"
        );
        self.touched = true;
        self.avail -= 1;
        // SAFETY: 0 < avail ≤ limit (checked by the callers; the array never
        // holds more than `limit`): one of the `limit` entries after the header
        // (see `entries`).
        unsafe { self.entry_ptr(self.avail).read() }
    }

    /// Adds an entry. The array must not be full.
    #[inline(always)]
    pub(crate) fn push(&mut self, obj: usize, state: usize) {
        debug_assert!(self.avail < self.limit, "array overflow");
        let at = self.entry_ptr(self.avail).cast::<usize>();
        // SAFETY: avail < limit (checked by the callers): as for `pop`. Two
        // word stores, not one of an `Entry` built on the stack: the compiler
        // would write it as two words and read it back as one wide load, which
        // the CPU cannot forward (a stall of a dozen cycles per free).
        unsafe {
            at.write(obj);
            at.add(1).write(state);
        }
        self.avail += 1;
    }

    /// The address of entry `i`, reached as in `entries`.
    #[inline(always)]
    fn entry_ptr(&mut self, i: usize) -> *mut Entry {
        let at = (self as *mut ArrayCache).addr()
            + core::mem::size_of::<ArrayCache>()
            + i * core::mem::size_of::<Entry>();
        core::ptr::with_exposed_provenance_mut::<Entry>(at)
    }

    /// Writes an empty array at `at`.
    ///
    /// # Safety
    /// `at` must be valid for `bytes(limit)` bytes, aligned for `usize`.
    pub(crate) unsafe fn init(at: *mut ArrayCache, limit: usize, batchcount: usize) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            at.write(ArrayCache {
                avail: 0,
                limit,
                batchcount,
                touched: false,
            })
        };
    }
}

/// An array entry: an object's address and its state byte's address.
pub(crate) type Entry = [usize; 2];

/// One CPU's array for a cache, and a drain request from other CPUs. Each
/// sits on a cache line of its own, so CPUs do not share lines they write.
#[repr(C, align(64))]
pub(crate) struct CpuArray {
    pub(crate) ac: UnsafeCell<*mut ArrayCache>,
    pub(crate) drain: AtomicBool,
}

/// The slab lists of a cache, under its lock.
pub(crate) struct Lists {
    pub(crate) full: LinkedList<SlabAdapter>,
    pub(crate) partial: LinkedList<SlabAdapter>,
    pub(crate) free: LinkedList<SlabAdapter>,
    /// Free objects in the slabs (not counting arrays).
    pub(crate) free_objects: usize,
    /// Colour of the next slab.
    pub(crate) colour_next: usize,
    /// Slabs in the cache.
    pub(crate) slabs: usize,
    /// Slabs ever created, and destroyed.
    pub(crate) grown: usize,
    pub(crate) reaped: usize,
}

/// The shared array (a pointer into the cache's metadata block).
pub(crate) struct Shared(pub(crate) *mut ArrayCache);

// SAFETY: the shared array is only touched under its mutex.
unsafe impl Send for Shared {}

/// A cache of same-size objects. Lives in a slab of the cache of caches.
pub struct KmemCache {
    /// Generation: non-zero while the cache exists; handles carry it.
    pub(crate) generation: AtomicU32,
    pub(crate) name: &'static str,
    pub(crate) geo: Geometry,
    /// Object index from an offset in a slab (no division).
    pub(crate) index: crate::geometry::ObjIndex,
    pub(crate) flags: SlabFlags,
    pub(crate) ctor: Option<Ctor>,
    pub(crate) lists: IrqSpinLock<Lists>,
    /// Cache for off-slab descriptors.
    pub(crate) slabp_cache: Option<Cache<'static>>,
    /// The cache of caches of the allocator this cache belongs to; 0 in the
    /// cache of caches itself (see [`Self::is_internal`]).
    pub(crate) owner: usize,
    /// `ncpu` per-CPU arrays.
    pub(crate) cpu: *const CpuArray,
    pub(crate) ncpu: usize,
    pub(crate) shared: IrqSpinLock<Shared>,
    pub(crate) limit: usize,
    pub(crate) batchcount: usize,
    pub(crate) free_limit: usize,
    /// The metadata block (arrays) and how it was allocated.
    pub(crate) meta: usize,
    pub(crate) meta_kmalloc: bool,
    /// Links the cache on the cache chain.
    pub(crate) link: LinkedListLink,
    /// Never give free slabs back (the cache of caches: handles stay checkable).
    pub(crate) keep_slabs: bool,
    /// Allocation and free errors refused on this cache.
    pub(crate) errors: AtomicUsize,
}

// SAFETY: the lists and shared array are behind mutexes; a CPU's array is only
// touched by that CPU with interrupts off (or by `destroy`/offline drains whose
// callers guarantee no concurrent use); the chain link is only touched under
// the chain lock; the rest is immutable after creation or atomic.
unsafe impl Sync for KmemCache {}
// SAFETY: as above.
unsafe impl Send for KmemCache {}

mod adapter {
    // The macro generates items without docs.
    #![allow(missing_docs)]
    use super::{KmemCache, LinkedListLink, UnsafeRef, intrusive_adapter};

    intrusive_adapter!(
        /// Threads caches on the cache chain.
        pub CacheAdapter = UnsafeRef<KmemCache>: KmemCache { link => LinkedListLink }
    );
}
pub(crate) use adapter::CacheAdapter;

impl KmemCache {
    /// The name given at creation.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The object size asked for.
    pub fn object_size(&self) -> usize {
        self.geo.obj_size
    }

    /// The layout of the cache.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// The creation flags.
    pub fn flags(&self) -> SlabFlags {
        self.flags
    }

    /// Per-CPU array limit and batch count.
    pub fn tunables(&self) -> (usize, usize) {
        (self.limit, self.batchcount)
    }

    /// Refused calls on this cache so far.
    pub fn errors(&self) -> usize {
        self.errors.load(Ordering::Relaxed)
    }

    /// The cache of caches: its objects are the allocator's own (cache
    /// descriptors), its slab pages flagged `SLAB_INTERNAL`.
    #[inline]
    pub(crate) fn is_internal(&self) -> bool {
        self.owner == 0
    }

    #[inline]
    pub(crate) fn cpu_array(&self, id: usize) -> &CpuArray {
        assert!(id < self.ncpu, "CPU id beyond the cache's arrays");
        // SAFETY: `cpu` points at `ncpu` initialised arrays in the metadata
        // block, which lives as long as the cache.
        unsafe { &*self.cpu.add(id) }
    }
}

impl fmt::Debug for KmemCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmemCache")
            .field("name", &self.name)
            .field("geometry", &self.geo)
            .field("flags", &self.flags)
            .finish()
    }
}

/// A handle to a cache, as [`crate::SlabAllocator::kmem_cache_create`] returns
/// it. Cheap to copy; it cannot outlive the memory the allocator lives in
/// (`'a`); a handle to a destroyed cache, or to another allocator's cache, is
/// refused with [`crate::SlabError::NoSuchCache`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cache<'a> {
    pub(crate) ptr: NonNull<KmemCache>,
    pub(crate) generation: u32,
    pub(crate) _mem: PhantomData<&'a KmemCache>,
}

// SAFETY: a handle is an address and a number; every use is validated.
unsafe impl Send for Cache<'_> {}
// SAFETY: as above.
unsafe impl Sync for Cache<'_> {}

impl fmt::Debug for Cache<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cache({:p}, generation {})", self.ptr, self.generation)
    }
}

impl<'a> Cache<'a> {
    /// The same handle with another lifetime, for handles the allocator keeps
    /// inside itself (its own lifetime bounds their use).
    pub(crate) fn erase<'b>(self) -> Cache<'b> {
        Cache {
            ptr: self.ptr,
            generation: self.generation,
            _mem: PhantomData,
        }
    }

    /// The cache, if the handle is still valid. Cache objects live in slabs that
    /// are never given back (and the handle cannot outlive their memory), so
    /// reading the generation is always sound.
    #[inline]
    pub(crate) fn get(self) -> Option<&'a KmemCache> {
        // SAFETY: `ptr` points into a slab of the cache of caches, which keeps
        // its slabs for as long as the allocator's memory lives ('a); the
        // generation is atomic.
        let c = unsafe { self.ptr.as_ref() };
        (c.generation.load(Ordering::Acquire) == self.generation).then_some(c)
    }
}
