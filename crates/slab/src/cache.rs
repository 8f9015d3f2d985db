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
use crate::geometry::{Geometry, ObjIndex};
use crate::slab_desc::Lists;

/// A constructor, run once on every object when its slab is created.
pub type Ctor = fn(*mut u8);

/// A cache of same-size objects (Linux's `struct kmem_cache`). Lives in a slab
/// of the cache of caches.
///
/// Its fields are grouped as Linux groups them, from what every allocation
/// and free touches to statistics, and laid out in that order.
#[repr(C)]
pub struct KmemCache {
    // 1. Touched on every allocation and free: the per-CPU arrays, the
    //    handle check, and finding an object from its address.
    /// `ncpu` per-CPU array slots, in the metadata block.
    arrays: NonNull<ArraySlot>,
    ncpu: usize,
    /// Non-zero while the cache exists; handles carry it.
    generation: AtomicU32,
    /// The cache of caches of the allocator this cache belongs to; 0 in the
    /// cache of caches itself (see [`Self::is_internal`]).
    owner: usize,
    /// Object index from an offset in a slab (no division).
    index: ObjIndex,

    // 2. The slab lists and the shared array, and the limits of the batches
    //    moved between them and the per-CPU arrays.
    lists: IrqSpinLock<Lists>,
    shared: IrqSpinLock<SharedArray>,
    limit: usize,
    batchcount: usize,
    /// Free objects the slabs keep before free slabs go back.
    free_limit: usize,
    /// Never give free slabs back (the cache of caches: handles stay
    /// checkable).
    keep_slabs: bool,

    // 3. Geometry, and what growing a slab needs.
    geo: Geometry,
    flags: SlabFlags,
    ctor: Option<Ctor>,
    /// Cache for off-slab descriptors.
    slabp_cache: Option<Cache<'static>>,

    // 4. Identity: the name, the chain link, the metadata block.
    name: &'static str,
    /// Links the cache on the cache chain.
    link: LinkedListLink,
    /// The metadata block (arrays) and whether it came from kmalloc.
    meta: NonNull<u8>,
    meta_kmalloc: bool,

    // 5. Statistics.
    /// Allocation and free errors refused on this cache.
    errors: AtomicUsize,
}

/// What a new cache is made of ([`KmemCache::new`]).
pub(crate) struct CacheParts {
    pub(crate) name: &'static str,
    pub(crate) geo: Geometry,
    pub(crate) flags: SlabFlags,
    pub(crate) ctor: Option<Ctor>,
    pub(crate) slabp_cache: Option<Cache<'static>>,
    /// The per-CPU array slots and the shared array, written into `meta`.
    pub(crate) arrays: NonNull<ArraySlot>,
    pub(crate) shared: SharedArray,
    pub(crate) ncpu: usize,
    pub(crate) limit: usize,
    pub(crate) batchcount: usize,
    pub(crate) meta: NonNull<u8>,
    pub(crate) meta_kmalloc: bool,
    pub(crate) generation: u32,
    /// See [`KmemCache::is_internal`].
    pub(crate) owner: usize,
    pub(crate) keep_slabs: bool,
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
    /// A cache from its parts, with no slabs.
    pub(crate) fn new(p: CacheParts) -> KmemCache {
        KmemCache {
            arrays: p.arrays,
            ncpu: p.ncpu,
            generation: AtomicU32::new(p.generation),
            owner: p.owner,
            index: ObjIndex::new(p.geo.buffer_size, p.geo.num),
            lists: IrqSpinLock::new("kmem_cache list lock", Lists::new()),
            shared: IrqSpinLock::new("kmem_cache shared array", p.shared),
            limit: p.limit,
            batchcount: p.batchcount,
            free_limit: (1 + p.ncpu) * p.batchcount + p.geo.num,
            keep_slabs: p.keep_slabs,
            geo: p.geo,
            flags: p.flags,
            ctor: p.ctor,
            slabp_cache: p.slabp_cache,
            name: p.name,
            link: LinkedListLink::new(),
            meta: p.meta,
            meta_kmalloc: p.meta_kmalloc,
            errors: AtomicUsize::new(0),
        }
    }

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

    /// Counts a refused call.
    #[cold]
    pub(crate) fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
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

    /// True if a handle of generation `generation` names this cache.
    #[inline(always)]
    pub(crate) fn is_generation(&self, generation: u32) -> bool {
        self.generation.load(Ordering::Acquire) == generation
    }

    /// Marks the cache dead: every handle to it is refused from now on.
    pub(crate) fn kill(&self) {
        self.generation.store(0, Ordering::Release);
    }

    /// The allocator the cache belongs to (the address of its cache of
    /// caches; 0 for the cache of caches itself).
    #[inline(always)]
    pub(crate) fn owner(&self) -> usize {
        self.owner
    }

    /// The cache of caches: its objects are the allocator's own (cache
    /// descriptors), its slab pages flagged `SLAB_INTERNAL`.
    #[inline]
    pub(crate) fn is_internal(&self) -> bool {
        self.owner == 0
    }

    /// Finds an object's index from its offset in a slab.
    #[inline(always)]
    pub(crate) fn index(&self) -> &ObjIndex {
        &self.index
    }

    /// The slab lists, behind the list lock.
    #[inline]
    pub(crate) fn lists(&self) -> &IrqSpinLock<Lists> {
        &self.lists
    }

    /// The shared array, behind its lock.
    #[inline]
    pub(crate) fn shared(&self) -> &IrqSpinLock<SharedArray> {
        &self.shared
    }

    /// Free objects the slabs keep before free slabs go back to the page
    /// allocator.
    pub(crate) fn free_limit(&self) -> usize {
        self.free_limit
    }

    /// Never gives free slabs back.
    pub(crate) fn keeps_slabs(&self) -> bool {
        self.keep_slabs
    }

    /// The layout, borrowed.
    #[inline(always)]
    pub(crate) fn geo(&self) -> &Geometry {
        &self.geo
    }

    /// The constructor.
    pub(crate) fn ctor(&self) -> Option<Ctor> {
        self.ctor
    }

    /// The cache off-slab descriptors come from.
    pub(crate) fn slabp_cache(&self) -> Option<Cache<'static>> {
        self.slabp_cache
    }

    /// The metadata block and whether it came from kmalloc.
    pub(crate) fn meta(&self) -> (NonNull<u8>, bool) {
        (self.meta, self.meta_kmalloc)
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
