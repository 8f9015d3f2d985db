//! [`SlabAllocator`]: the cache chain, the cache of caches, and bootstrap.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use intrusive_collections::{LinkedList, LinkedListLink, UnsafeRef};
use kmm_buddy::{Buddy, Gfp};
use kmm_hal::sync::IrqSpinLock;
use kmm_hal::{Cpu, PAGE_SIZE};

use crate::cache::{ArrayCache, Cache, CacheAdapter, CpuArray, Ctor, KmemCache, Lists, Shared};
use crate::debug::Reports;
use crate::geometry::{self, Geometry};
use crate::kmalloc::{KMALLOC_SIZES, Kmalloc};
use crate::slab_desc::SlabAdapter;
use crate::{SlabError, SlabFlags};

/// Pages of metadata (per-CPU arrays of the first caches) taken before kmalloc
/// works, carved by a bump allocator and never given back (those caches are
/// never destroyed).
pub(crate) struct Arena {
    next: usize,
    end: usize,
}

/// Linux's SLAB allocator over a [`Buddy`] page allocator.
///
/// Caches live on a chain; the first, the cache of caches, holds every
/// [`KmemCache`]. `kmalloc` is served by general caches from 32 bytes to 128 KiB
/// (with 96 and 192), in normal and DMA variants; larger requests go to the page
/// allocator. Every method may be called from several CPUs at once.
pub struct SlabAllocator<'a, C: Cpu> {
    pub(crate) buddy: &'a Buddy<'a, C>,
    pub(crate) cache_cache: Cache<'a>,
    pub(crate) chain: IrqSpinLock<ChainList>,
    pub(crate) kmalloc: Kmalloc,
    pub(crate) arena: IrqSpinLock<Arena>,
    pub(crate) kmalloc_ready: AtomicBool,
    pub(crate) next_gen: AtomicU32,
    pub(crate) reports: Reports,
    pub(crate) large_pages: AtomicUsize,
}

/// The cache chain (behind the chain lock).
pub(crate) struct ChainList(pub(crate) LinkedList<CacheAdapter>);

// SAFETY: the list only holds pointers to caches, which are Sync; it is only
// touched under the chain mutex.
unsafe impl Send for ChainList {}

impl<'a, C: Cpu> core::fmt::Debug for SlabAllocator<'a, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SlabAllocator")
            .field("caches", &self.cache_count())
            .finish()
    }
}

impl<'a, C: Cpu> SlabAllocator<'a, C> {
    /// Bootstraps the allocator on `buddy`: the cache of caches (its descriptor
    /// in a page of its own), then the general caches for `kmalloc`.
    pub fn new(buddy: &'a Buddy<'a, C>) -> Result<SlabAllocator<'a, C>, SlabError> {
        let cpus = buddy.cpu().count();
        let geo = geometry::compute(
            core::mem::size_of::<KmemCache>(),
            0,
            SlabFlags::HWCACHE_ALIGN,
            false,
            false,
        )
        .ok_or(SlabError::BadSize)?;
        // The cache of caches' own descriptor and arrays: one page-block.
        let (limit, batch, _) = geometry::array_sizes(geo.buffer_size, cpus);
        let meta = meta_bytes(cpus, limit, 0);
        let own = core::mem::size_of::<KmemCache>().next_multiple_of(64);
        let order = (own + meta)
            .div_ceil(PAGE_SIZE)
            .next_power_of_two()
            .trailing_zeros() as usize;
        let va = buddy
            .get_free_pages(Gfp::KERNEL | Gfp::ZERO, order)
            .ok_or(SlabError::OutOfMemory)?;
        let cc = va.as_mut_ptr::<KmemCache>();
        let meta_at = va.as_usize() + own;
        // SAFETY: the block is ours, zeroed, big enough for the descriptor and
        // the arrays (computed above), and page-aligned.
        let cpu = unsafe { init_meta(meta_at, cpus, limit, batch, 0) };
        // SAFETY: as above; `cc` is page-aligned.
        unsafe {
            cc.write(new_cache(
                "kmem_cache",
                geo,
                SlabFlags::HWCACHE_ALIGN,
                None,
                None,
                cpu,
                cpus,
                limit,
                batch,
                0,
                meta_at,
                false,
                1,
            ));
        }
        // SAFETY: just written; `cc` is a page address, not null.
        let ptr = unsafe { NonNull::new_unchecked(cc) };
        let cache_cache = Cache {
            ptr,
            generation: 1,
            _mem: core::marker::PhantomData,
        };
        // The cache of caches keeps `owner` 0: `cache` refuses its handle
        // (`Internal`), so no user allocates a descriptor slot from it, frees
        // one to it, or writes into one (a stale handle's generation lives
        // where only the allocator writes).
        // SAFETY: as above.
        unsafe { (*cc).keep_slabs = true };
        let mut chain = LinkedList::new(CacheAdapter::NEW);
        // SAFETY: the cache of caches lives as long as the allocator.
        chain.push_back(unsafe { UnsafeRef::from_raw(cc) });
        let mut s = SlabAllocator {
            buddy,
            cache_cache,
            chain: IrqSpinLock::new("slab cache chain", ChainList(chain)),
            kmalloc: Kmalloc::empty(),
            arena: IrqSpinLock::new("slab arena", Arena { next: 0, end: 0 }),
            kmalloc_ready: AtomicBool::new(false),
            next_gen: AtomicU32::new(2),
            reports: Reports::new(),
            large_pages: AtomicUsize::new(0),
        };
        s.create_general_caches()?;
        s.kmalloc_ready.store(true, Ordering::Release);
        Ok(s)
    }

    /// The cache of caches (it holds every cache descriptor and never gives
    /// its slabs back). For statistics only ([`Self::cache_stats`],
    /// [`Self::validate_cache`], [`Self::slabinfo`]): allocating from it,
    /// freeing to it, shrinking or destroying it is refused with
    /// [`SlabError::Internal`], and so is freeing a cache descriptor.
    pub fn cache_of_caches(&self) -> Cache<'a> {
        self.cache_cache
    }

    /// The cache a user's handle names, if it is one of this allocator's live
    /// caches (the cache of caches is not: `Internal`).
    #[inline]
    pub(crate) fn cache(&self, cache: Cache<'a>) -> Result<&'a KmemCache, SlabError> {
        match cache.get() {
            Some(c) if c.owner == self.cache_cache.ptr.as_ptr().addr() => Ok(c),
            _ => Err(self.refuse_cache(cache)),
        }
    }

    /// Why `cache` refused a handle (out of line: the check above is the
    /// fast path of every `kmem_cache_*` call).
    #[cold]
    #[inline(never)]
    fn refuse_cache(&self, cache: Cache<'a>) -> SlabError {
        if cache == self.cache_cache {
            SlabError::Internal
        } else {
            SlabError::NoSuchCache
        }
    }

    /// The descriptor of the cache of caches.
    #[inline]
    pub(crate) fn cache_cache_desc(&self) -> &'a KmemCache {
        // SAFETY: the cache of caches lives, with its descriptor, as long as
        // the allocator ('a) and is never destroyed.
        unsafe { self.cache_cache.ptr.as_ref() }
    }

    /// The descriptor of a live cache of this allocator: its name, geometry,
    /// tunables and error count (`None` for the cache of caches too).
    pub fn cache_info(&self, cache: Cache<'a>) -> Option<&'a KmemCache> {
        self.cache(cache).ok()
    }

    /// The page allocator.
    pub fn buddy(&self) -> &'a Buddy<'a, C> {
        self.buddy
    }

    /// Caches on the chain (the cache of caches and the general caches
    /// included).
    pub fn cache_count(&self) -> usize {
        self.chain.lock_irqsave(self.buddy.cpu()).0.iter().count()
    }

    /// Creates a cache of `size`-byte objects aligned to `align` (0: the
    /// default), with `ctor` run once per object when a slab is grown (Linux's
    /// `kmem_cache_create`).
    pub fn kmem_cache_create(
        &self,
        name: &'static str,
        size: usize,
        align: usize,
        flags: SlabFlags,
        ctor: Option<Ctor>,
    ) -> Result<Cache<'a>, SlabError> {
        if align != 0 && (!align.is_power_of_two() || align > PAGE_SIZE) {
            return Err(SlabError::BadAlign);
        }
        let debug = cfg!(feature = "debug");
        // Like slub_debug, the debug feature checks every cache.
        let flags = if debug {
            flags | SlabFlags::RED_ZONE | SlabFlags::POISON
        } else {
            flags
        };
        // Poisoning would overwrite what the constructor set up.
        let flags = if ctor.is_some() {
            flags.difference(SlabFlags::POISON)
        } else {
            flags
        };
        let ready = self.kmalloc_ready.load(Ordering::Acquire);
        let geo = geometry::compute(size, align, flags, debug, true).ok_or(SlabError::BadSize)?;
        let cpus = self.buddy.cpu().count();
        let (limit, batch, shared) = geometry::array_sizes(geo.buffer_size, cpus);
        let slabp_cache = if geo.off_slab {
            Some(
                self.kmalloc
                    .cache_for(geo.mgmt_size, false)
                    .ok_or(SlabError::BadSize)?,
            )
        } else {
            None
        };
        let meta = meta_bytes(cpus, limit, shared);
        let meta_at = self.alloc_meta(meta, ready)?;
        // SAFETY: alloc_meta returned `meta` writable bytes, word-aligned.
        let cpu = unsafe { init_meta(meta_at, cpus, limit, batch, shared) };
        let obj = match self.alloc_object(self.cache_cache_desc(), Gfp::KERNEL, true) {
            Ok(o) => o.as_ptr().cast::<KmemCache>(),
            Err(e) => {
                self.free_meta(meta_at, ready);
                return Err(e);
            }
        };
        let generation = self.next_gen.fetch_add(1, Ordering::Relaxed).max(2);
        // SAFETY: `obj` is a fresh object of the cache of caches: sized and
        // aligned for a KmemCache.
        unsafe {
            obj.write(new_cache(
                name,
                geo,
                flags,
                ctor,
                slabp_cache,
                cpu,
                cpus,
                limit,
                batch,
                shared,
                meta_at,
                ready,
                generation,
            ));
        }
        // SAFETY: `obj` was initialised above.
        unsafe { (*obj).owner = self.cache_cache.ptr.as_ptr().addr() };
        // SAFETY: initialised above; the object stays until destroy.
        self.chain
            .lock_irqsave(self.buddy.cpu())
            .0
            .push_back(unsafe { UnsafeRef::from_raw(obj) });
        Ok(Cache {
            // SAFETY: not null: it came from the allocator.
            ptr: unsafe { NonNull::new_unchecked(obj) },
            generation,
            _mem: core::marker::PhantomData,
        })
    }

    /// Destroys a cache (Linux's `kmem_cache_destroy`): every free object and
    /// slab goes back, then the cache itself. Refused with
    /// [`SlabError::Busy`] — nothing changed but emptied arrays — while objects
    /// are in use, or for a general cache; with [`SlabError::Internal`] for the
    /// cache of caches.
    ///
    /// # Safety
    /// No CPU may use the cache during the call (Linux's rule): its per-CPU
    /// arrays are emptied from this CPU.
    pub unsafe fn kmem_cache_destroy(&self, cache: Cache<'a>) -> Result<(), SlabError> {
        let c = self.cache(cache)?;
        if self.kmalloc.contains(cache) {
            return Err(SlabError::Busy);
        }
        {
            let _irq = self.buddy.cpu().irq_guard();
            for id in 0..c.ncpu {
                // SAFETY: the caller guarantees no CPU uses the cache now.
                let ac = unsafe { &mut **c.cpu_array(id).ac.get() };
                self.free_array(c, ac, usize::MAX);
            }
            self.drain_shared(c, usize::MAX);
        }
        {
            let l = c.lists.lock_irqsave(self.buddy.cpu());
            if !l.full.is_empty() || !l.partial.is_empty() {
                return Err(SlabError::Busy);
            }
        }
        self.free_slabs(c, usize::MAX);
        // Off the chain, dead, and its memory back.
        {
            let mut chain = self.chain.lock_irqsave(self.buddy.cpu());
            // SAFETY: the cache is on the chain (it was created and not yet
            // destroyed: its generation matched).
            let mut cur = unsafe { chain.0.cursor_mut_from_ptr(c) };
            cur.remove();
        }
        c.generation.store(0, Ordering::Release);
        self.free_meta(c.meta, c.meta_kmalloc);
        let obj = (c as *const KmemCache).addr();
        let cc = self.cache_cache_desc();
        let loc = self.locate_trusted(cc, obj);
        self.free_located(loc, obj)
    }

    /// Gives `bytes` of metadata: from kmalloc once it works, from the arena
    /// before.
    fn alloc_meta(&self, bytes: usize, kmalloc: bool) -> Result<usize, SlabError> {
        if kmalloc {
            return self.kmalloc(bytes, Gfp::KERNEL).map(|p| p.as_ptr().addr());
        }
        let cpu = self.buddy.cpu();
        let fits = |a: &Arena| a.next + bytes <= a.end;
        if !fits(&self.arena.lock_irqsave(cpu)) {
            // A new block, taken with the arena's lock dropped (the page
            // allocator may call its `on_low` hook).
            let order = bytes
                .div_ceil(PAGE_SIZE)
                .next_power_of_two()
                .trailing_zeros() as usize;
            let va = self
                .buddy
                .get_free_pages(Gfp::KERNEL | Gfp::ZERO, order)
                .ok_or(SlabError::OutOfMemory)?;
            let mut a = self.arena.lock_irqsave(cpu);
            if !fits(&a) {
                a.next = va.as_usize();
                a.end = a.next + (PAGE_SIZE << order);
            } else {
                // Another CPU made room meanwhile: the block goes back.
                drop(a);
                let r = self.buddy.free_pages(va, order);
                debug_assert!(r.is_ok(), "a block just taken goes back");
            }
        }
        let mut a = self.arena.lock_irqsave(cpu);
        if !fits(&a) {
            // Taken by another CPU since: an arena is only used while the
            // allocator boots, on one CPU; refuse rather than loop.
            return Err(SlabError::OutOfMemory);
        }
        let at = a.next;
        // Cache-line aligned: the per-CPU arrays must not share lines.
        a.next = (a.next + bytes).next_multiple_of(crate::flags::CACHE_LINE);
        let _ = core::ptr::with_exposed_provenance::<u8>(at);
        Ok(at)
    }

    fn free_meta(&self, at: usize, kmalloc: bool) {
        if kmalloc {
            let p = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(at));
            if let Some(p) = p {
                let r = self.kfree(p.as_ptr());
                debug_assert!(r.is_ok(), "metadata came from kmalloc");
            }
        }
    }

    /// The general caches (`size-32` … `size-131072`, and `-DMA` variants).
    fn create_general_caches(&mut self) -> Result<(), SlabError> {
        for (i, &(size, name, dma_name)) in KMALLOC_SIZES.iter().enumerate() {
            // kmalloc objects are naturally aligned (to the largest power of two
            // dividing their size, up to a page), so a GlobalAlloc layout can be
            // matched to a size class.
            let align = crate::kmalloc::class_align(size);
            let normal = self.kmem_cache_create(name, size, align, SlabFlags::empty(), None)?;
            let dma = self.kmem_cache_create(dma_name, size, align, SlabFlags::CACHE_DMA, None)?;
            self.kmalloc.set(i, normal, dma);
        }
        Ok(())
    }
}

/// Bytes of a metadata block: `cpus` array headers and arrays, and a shared
/// array.
fn meta_bytes(cpus: usize, limit: usize, shared: usize) -> usize {
    let heads = cpus * core::mem::size_of::<CpuArray>();
    heads
        + cpus * ArrayCache::bytes(limit)
        + if shared > 0 {
            ArrayCache::bytes(shared)
        } else {
            0
        }
}

/// Lays out a metadata block at `at`; returns the per-CPU array headers.
///
/// # Safety
/// `at` must be valid for `meta_bytes(cpus, limit, shared)` bytes, aligned for
/// `usize`.
unsafe fn init_meta(
    at: usize,
    cpus: usize,
    limit: usize,
    batch: usize,
    shared: usize,
) -> *const CpuArray {
    let heads = core::ptr::with_exposed_provenance_mut::<CpuArray>(at);
    let mut arrays = at + cpus * core::mem::size_of::<CpuArray>();
    for i in 0..cpus {
        let ac = core::ptr::with_exposed_provenance_mut::<ArrayCache>(arrays);
        // SAFETY: inside the block (see `meta_bytes`), aligned for usize.
        unsafe {
            ArrayCache::init(ac, limit, batch);
            heads.add(i).write(CpuArray {
                ac: core::cell::UnsafeCell::new(ac),
                drain: AtomicBool::new(false),
            });
        }
        arrays += ArrayCache::bytes(limit);
    }
    if shared > 0 {
        // SAFETY: the shared array is the block's tail.
        unsafe {
            ArrayCache::init(
                core::ptr::with_exposed_provenance_mut(arrays),
                shared,
                batch,
            )
        };
    }
    heads
}

/// A cache value, ready to be written into its object.
#[allow(clippy::too_many_arguments)]
fn new_cache(
    name: &'static str,
    geo: Geometry,
    flags: SlabFlags,
    ctor: Option<Ctor>,
    slabp_cache: Option<Cache<'static>>,
    cpu: *const CpuArray,
    ncpu: usize,
    limit: usize,
    batchcount: usize,
    shared: usize,
    meta: usize,
    meta_kmalloc: bool,
    generation: u32,
) -> KmemCache {
    let shared_at = if shared > 0 {
        meta + ncpu * core::mem::size_of::<CpuArray>() + ncpu * ArrayCache::bytes(limit)
    } else {
        0
    };
    KmemCache {
        generation: AtomicU32::new(generation),
        name,
        geo,
        index: crate::geometry::ObjIndex::new(geo.buffer_size, geo.num),
        flags,
        ctor,
        lists: IrqSpinLock::new(
            "kmem_cache list lock",
            Lists {
                full: LinkedList::new(SlabAdapter::NEW),
                partial: LinkedList::new(SlabAdapter::NEW),
                free: LinkedList::new(SlabAdapter::NEW),
                free_objects: 0,
                colour_next: 0,
                slabs: 0,
                grown: 0,
                reaped: 0,
            },
        ),
        slabp_cache,
        owner: 0,
        cpu,
        ncpu,
        shared: IrqSpinLock::new(
            "kmem_cache shared array",
            Shared(core::ptr::with_exposed_provenance_mut(shared_at)),
        ),
        limit,
        batchcount,
        free_limit: (1 + ncpu) * batchcount + geo.num,
        meta,
        meta_kmalloc,
        link: LinkedListLink::new(),
        keep_slabs: false,
        errors: AtomicUsize::new(0),
    }
}
