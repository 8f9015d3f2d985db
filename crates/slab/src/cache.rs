//! [`KmemCache`]: a cache of same-size objects — its geometry, slab lists and
//! per-CPU arrays — and the [`Cache`] handle users hold.

use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use intrusive_collections::{LinkedListLink, UnsafeRef, intrusive_adapter};
use kmm_hal::sync::IrqSpinLock;

use crate::SlabFlags;
use crate::array::{ArraySlot, CpuArrays, SharedArray};
use crate::geometry::Geometry;
use crate::slab_desc::Lists;

/// A constructor, run once on every object when its slab is created.
pub type Ctor = fn(*mut u8);

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
    /// `ncpu` per-CPU array slots, in the metadata block.
    pub(crate) arrays: NonNull<ArraySlot>,
    pub(crate) ncpu: usize,
    pub(crate) shared: IrqSpinLock<SharedArray>,
    pub(crate) limit: usize,
    pub(crate) batchcount: usize,
    pub(crate) free_limit: usize,
    /// The metadata block (arrays) and how it was allocated.
    pub(crate) meta: NonNull<u8>,
    pub(crate) meta_kmalloc: bool,
    /// Links the cache on the cache chain.
    pub(crate) link: LinkedListLink,
    /// Never give free slabs back (the cache of caches: handles stay checkable).
    pub(crate) keep_slabs: bool,
    /// Allocation and free errors refused on this cache.
    pub(crate) errors: AtomicUsize,
}

// SAFETY: the lists and shared array are behind their locks; a CPU's array is
// reached only through `CpuLocal` (`arrays`: by its CPU, pinned, or by
// `destroy`/offline drains whose callers guarantee the CPU is not using it);
// the chain link is only touched under the chain lock; the rest is immutable
// after creation or atomic.
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

    /// The per-CPU arrays.
    #[inline(always)]
    pub(crate) fn arrays(&self) -> CpuArrays<'_> {
        // SAFETY: `arrays` points at `ncpu` slots initialised when the cache
        // was created, in its metadata block, which lives as long as the
        // cache. `CpuLocal::new`'s contract: the cache belongs to one
        // allocator, which passes only guards of its buddy allocator's `Cpu`.
        unsafe { CpuArrays::from_raw_parts(self.arrays.as_ptr(), self.ncpu) }
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
