//! [`SlabAllocator`]: the cache chain, the cache of caches, and bootstrap.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use intrusive_collections::{LinkedList, UnsafeRef};
use kmm_buddy::{Buddy, Gfp};
use kmm_hal::sync::IrqSpinLock;
use kmm_hal::{Cpu, PAGE_SIZE};

use crate::array::MetaLayout;
use crate::cache::{Cache, CacheAdapter, CacheParts, Ctor, KmemCache};
use crate::debug::{DebugReport, Offence, Reports};
use crate::geometry::{self, Geometry, Request};
use crate::kmalloc::Kmalloc;
use crate::kmalloc_sizes::{KmallocSizes, LINUX26, class_align};
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
/// [`KmemCache`]. `kmalloc` is served by general caches — by default 88
/// dense size classes from 8 bytes to 32 KiB ([`KmallocSizes`]), or Linux
/// 2.6's fifteen up to 128 KiB — and DMA ones with Linux 2.6's classes;
/// larger requests take a run of exactly the frames they need from the
/// page allocator. Every method may be called from several CPUs at once.
pub struct SlabAllocator<'a, C: Cpu> {
    // Touched on every call: the page allocator (and through it the CPU),
    // the handle check's owner, the kmalloc size classes.
    buddy: &'a Buddy<'a, C>,
    cache_cache: Cache<'a>,
    kmalloc: Kmalloc,
    // The cache chain (shrink, reap, slabinfo walk it).
    chain: IrqSpinLock<ChainList>,
    // Creating caches: the bootstrap arena, whether kmalloc works yet, the
    // next handle generation.
    arena: IrqSpinLock<Arena>,
    kmalloc_ready: AtomicBool,
    next_gen: AtomicU32,
    // The `debug` reports and their hook.
    reports: Reports,
}

/// The cache chain (behind the chain lock).
pub(crate) struct ChainList(pub(crate) LinkedList<CacheAdapter>);

// SAFETY: the list only holds pointers to caches, which are Sync; it is only
// touched under the chain lock.
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
    /// in a page of its own), then the general caches for `kmalloc`, with the
    /// default size classes ([`KmallocSizes::Dense`]).
    pub fn new(buddy: &'a Buddy<'a, C>) -> Result<SlabAllocator<'a, C>, SlabError> {
        Self::with_sizes(buddy, KmallocSizes::default())
    }

    /// [`SlabAllocator::new`] with the kmalloc size classes `sizes`
    /// ([`KmallocSizes::Linux26`] for Linux 2.6's table).
    pub fn with_sizes(
        buddy: &'a Buddy<'a, C>,
        sizes: KmallocSizes,
    ) -> Result<SlabAllocator<'a, C>, SlabError> {
        let cache_cache = bootstrap_cache_of_caches(buddy)?;
        let mut chain = LinkedList::new(CacheAdapter::NEW);
        // SAFETY: the cache of caches lives as long as the allocator.
        chain.push_back(unsafe { UnsafeRef::from_raw(cache_cache.ptr.as_ptr()) });
        let mut s = SlabAllocator {
            buddy,
            cache_cache,
            chain: IrqSpinLock::new("slab cache chain", ChainList(chain)),
            kmalloc: Kmalloc::new(sizes),
            arena: IrqSpinLock::new("slab arena", Arena { next: 0, end: 0 }),
            kmalloc_ready: AtomicBool::new(false),
            next_gen: AtomicU32::new(2),
            reports: Reports::new(),
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
            Some(c) if c.owner() == self.cache_cache.ptr.as_ptr().addr() => Ok(c),
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
    #[inline(always)]
    pub fn buddy(&self) -> &'a Buddy<'a, C> {
        self.buddy
    }

    /// The kmalloc size classes and large blocks.
    #[inline(always)]
    pub(crate) fn kmalloc_table(&self) -> &Kmalloc {
        &self.kmalloc
    }

    /// The `debug` reports and their hook.
    pub(crate) fn report_ring(&self) -> &Reports {
        &self.reports
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
        self.create_cache(name, size, align, flags, ctor, false)
    }

    /// [`Self::kmem_cache_create`], with the tight slab fit or Linux's.
    fn create_cache(
        &self,
        name: &'static str,
        size: usize,
        align: usize,
        flags: SlabFlags,
        ctor: Option<Ctor>,
        tight: bool,
    ) -> Result<Cache<'a>, SlabError> {
        if align != 0 && (!align.is_power_of_two() || align > PAGE_SIZE) {
            return Err(SlabError::BadAlign);
        }
        let flags = creation_flags(flags, ctor);
        let req = Request::new(size, align, flags)
            .red_zones(cfg!(feature = "debug"))
            .tight(tight);
        let geo = geometry::compute(req).ok_or(SlabError::BadSize)?;
        let slabp_cache = if geo.off_slab {
            Some(
                self.kmalloc
                    .cache_for(geo.mgmt_size, false)
                    .ok_or(SlabError::BadSize)?,
            )
        } else {
            None
        };
        let layout = MetaLayout::new(geo.buffer_size, self.buddy.cpu().count());
        let ready = self.kmalloc_ready.load(Ordering::Acquire);
        let meta = self.alloc_meta(layout.bytes(), ready)?;
        let cc = self.cache_cache_desc();
        let obj = match self.alloc_object(cc, Gfp::KERNEL, true, cc.geo().obj_size) {
            Ok(o) => o.cast::<KmemCache>(),
            Err(e) => {
                self.free_meta(meta, ready);
                return Err(e);
            }
        };
        let generation = self.next_gen.fetch_add(1, Ordering::Relaxed).max(2);
        let new = NewCache {
            name,
            geo,
            flags,
            ctor,
            slabp_cache,
            layout,
            meta,
            meta_kmalloc: ready,
            generation,
            owner: self.cache_cache.ptr.as_ptr().addr(),
            keep_slabs: false,
        };
        // SAFETY: `obj` is a fresh object of the cache of caches, sized and
        // aligned for a KmemCache; `meta` is a fresh block of
        // `layout.bytes()` bytes from `alloc_meta` (cache-line aligned),
        // freed only when the cache is destroyed.
        unsafe { obj.write(new.build()) };
        // SAFETY: initialised above; the object stays until destroy.
        self.chain
            .lock_irqsave(self.buddy.cpu())
            .0
            .push_back(unsafe { UnsafeRef::from_raw(obj.as_ptr()) });
        Ok(Cache {
            ptr: obj,
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
        for id in 0..c.arrays().len() {
            // SAFETY: the caller guarantees that no CPU uses the cache now.
            unsafe { self.drain_offline_array(c, id) };
        }
        self.drain_shared(c, usize::MAX);
        {
            let l = c.lists().lock_irqsave(self.buddy.cpu());
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
        c.kill();
        let (meta, kmalloc) = c.meta();
        self.free_meta(meta, kmalloc);
        let obj = (c as *const KmemCache).addr();
        let cc = self.cache_cache_desc();
        let loc = self.locate_trusted(cc, obj);
        self.free_located(loc, obj)
    }

    /// Records a report of the `debug` checks (or a refused double free) and
    /// calls the report hook, with nothing held.
    #[cold]
    #[inline(never)]
    pub(crate) fn report(&self, c: &KmemCache, object: usize, offence: Offence) {
        let r = DebugReport {
            cache: c.name(),
            object,
            offence,
        };
        self.reports.record(self.buddy.cpu(), r);
    }

    /// Calls `f` on every cache on the chain, however many there are, until
    /// it returns an error. The chain lock is held only while a chunk of
    /// caches is copied out, never while `f` runs (so `f` may take any lock,
    /// allocate, or create a cache: one created meanwhile is reached too, as
    /// caches join at the end of the chain).
    ///
    /// Caches on the chain are alive: destroy takes a cache off under the
    /// chain lock before it dies, and destroying a cache while another CPU
    /// shrinks or reaps is the caller's race, as in Linux. (Such a race can
    /// at worst make this walk skip one cache: chunks are found by position.)
    pub(crate) fn try_each_cache<E>(
        &self,
        mut f: impl FnMut(&'a KmemCache) -> Result<(), E>,
    ) -> Result<(), E> {
        const CHUNK: usize = 32;
        let mut start = 0;
        loop {
            let mut chunk = [core::ptr::null::<KmemCache>(); CHUNK];
            let mut n = 0;
            {
                let chain = self.chain.lock_irqsave(self.buddy.cpu());
                for c in chain.0.iter().skip(start).take(CHUNK) {
                    chunk[n] = c;
                    n += 1;
                }
            }
            for &c in &chunk[..n] {
                // SAFETY: see above: a cache on the chain, alive for 'a.
                f(unsafe { &*c })?;
            }
            if n < CHUNK {
                return Ok(());
            }
            start += n;
        }
    }

    /// [`Self::try_each_cache`] with a function that cannot fail.
    pub(crate) fn each_cache(&self, mut f: impl FnMut(&'a KmemCache)) {
        let r: Result<(), core::convert::Infallible> = self.try_each_cache(|c| {
            f(c);
            Ok(())
        });
        let Ok(()) = r;
    }

    /// Gives `bytes` of metadata: from kmalloc once it works, from the arena
    /// before.
    /// Cache-line aligned, as the per-CPU array slots need.
    fn alloc_meta(&self, bytes: usize, kmalloc: bool) -> Result<NonNull<u8>, SlabError> {
        if kmalloc {
            // kmalloc objects are naturally aligned; metadata blocks are at
            // least two cache lines, so their class is cache-line aligned.
            let p = self.kmalloc(bytes, Gfp::KERNEL)?;
            debug_assert!(p.as_ptr().addr().is_multiple_of(crate::flags::CACHE_LINE));
            return Ok(p);
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
        // The arena's pages are direct-mapped RAM the page allocator handed
        // out (its exposed provenance).
        NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(at)).ok_or(SlabError::OutOfMemory)
    }

    /// Gives a metadata block back (arena blocks stay: their caches are
    /// never destroyed).
    fn free_meta(&self, at: NonNull<u8>, kmalloc: bool) {
        if kmalloc {
            let r = self.kfree(at.as_ptr());
            debug_assert!(r.is_ok(), "metadata came from kmalloc");
        }
    }

    /// The general caches (`size-8` … `size-131072`, or Linux 2.6's
    /// `size-32` … `size-131072`), then the DMA ones (Linux 2.6's classes,
    /// `-DMA`), smallest first: an off-slab cache takes its slab descriptors
    /// from a smaller general cache.
    fn create_general_caches(&mut self) -> Result<(), SlabError> {
        let sizes = self.kmalloc.sizes();
        for (i, class) in sizes.classes().iter().enumerate() {
            // kmalloc objects are naturally aligned (to the largest power of two
            // dividing their size, up to a page), so a GlobalAlloc layout can be
            // matched to a size class.
            let align = class_align(class.size);
            let c = self.create_cache(
                class.name(),
                class.size,
                align,
                SlabFlags::empty(),
                None,
                sizes.tight_fit(),
            )?;
            self.kmalloc.set_normal(i, c);
        }
        for (i, class) in LINUX26.iter().enumerate() {
            let align = class_align(class.size);
            let c = self.kmem_cache_create(
                class.dma_name(),
                class.size,
                align,
                SlabFlags::CACHE_DMA,
                None,
            )?;
            self.kmalloc.set_dma(i, c);
        }
        Ok(())
    }

    /// The kmalloc size classes this allocator was built with.
    pub fn kmalloc_sizes(&self) -> KmallocSizes {
        self.kmalloc.sizes()
    }

    /// The largest request a normal general cache serves; larger ones take
    /// a run of frames from the page allocator.
    pub fn kmalloc_max_cache_size(&self) -> usize {
        self.kmalloc.max()
    }
}

/// The flags a cache is created with: every cache checked under `debug`
/// (like slub_debug), and no poisoning where a constructor set objects up.
fn creation_flags(flags: SlabFlags, ctor: Option<Ctor>) -> SlabFlags {
    let flags = if cfg!(feature = "debug") {
        flags | SlabFlags::RED_ZONE | SlabFlags::POISON
    } else {
        flags
    };
    if ctor.is_some() {
        flags.difference(SlabFlags::POISON)
    } else {
        flags
    }
}

/// Builds the cache of caches: its descriptor and metadata in one block of
/// pages of their own (there is no cache to take them from yet), its slabs
/// never given back, and its `owner` 0, so that `cache` refuses its handle
/// (`Internal`): no user allocates a descriptor slot from it, frees one to
/// it, or writes into one (a stale handle's generation lives where only the
/// allocator writes).
fn bootstrap_cache_of_caches<'a, C: Cpu>(buddy: &'a Buddy<'a, C>) -> Result<Cache<'a>, SlabError> {
    let req = Request::new(
        core::mem::size_of::<KmemCache>(),
        0,
        SlabFlags::HWCACHE_ALIGN,
    );
    let geo = geometry::compute(req.on_slab_only()).ok_or(SlabError::BadSize)?;
    let mut layout = MetaLayout::new(geo.buffer_size, buddy.cpu().count());
    layout.shared = 0;
    let own = core::mem::size_of::<KmemCache>().next_multiple_of(crate::flags::CACHE_LINE);
    let order = (own + layout.bytes())
        .div_ceil(PAGE_SIZE)
        .next_power_of_two()
        .trailing_zeros() as usize;
    let va = buddy
        .get_free_pages(Gfp::KERNEL | Gfp::ZERO, order)
        .ok_or(SlabError::OutOfMemory)?;
    // The block is direct-mapped RAM the page allocator handed out (its
    // exposed provenance); not null.
    let cc = NonNull::new(va.as_mut_ptr::<KmemCache>()).ok_or(SlabError::OutOfMemory)?;
    let new = NewCache {
        name: "kmem_cache",
        geo,
        flags: SlabFlags::HWCACHE_ALIGN,
        ctor: None,
        slabp_cache: None,
        layout,
        // SAFETY: `own < PAGE_SIZE << order`: inside the block.
        meta: unsafe { cc.cast::<u8>().byte_add(own) },
        meta_kmalloc: false,
        generation: 1,
        owner: 0,
        keep_slabs: true,
    };
    // SAFETY: the block is ours, page-aligned and big enough for the
    // descriptor followed by the metadata (computed above), which starts on
    // a cache line; it is never given back (the cache of caches lives as long
    // as the allocator).
    unsafe { cc.write(new.build()) };
    Ok(Cache {
        ptr: cc,
        generation: 1,
        _mem: core::marker::PhantomData,
    })
}

/// What a new cache is made of, before it is written into its descriptor.
struct NewCache {
    name: &'static str,
    geo: Geometry,
    flags: SlabFlags,
    ctor: Option<Ctor>,
    slabp_cache: Option<Cache<'static>>,
    layout: MetaLayout,
    /// The metadata block, `layout.bytes()` bytes, and whether it came from
    /// kmalloc (else from the arena or the cache of caches' own pages).
    meta: NonNull<u8>,
    meta_kmalloc: bool,
    generation: u32,
    /// See [`KmemCache::is_internal`].
    owner: usize,
    keep_slabs: bool,
}

impl NewCache {
    /// The descriptor, with empty arrays written into the metadata block.
    ///
    /// # Safety
    /// `meta` must be as [`MetaLayout::init`] requires, for as long as the
    /// cache lives.
    unsafe fn build(self) -> KmemCache {
        // SAFETY: forwarded from the caller.
        let (arrays, shared) = unsafe { self.layout.init(self.meta) };
        KmemCache::new(CacheParts {
            name: self.name,
            geo: self.geo,
            flags: self.flags,
            ctor: self.ctor,
            slabp_cache: self.slabp_cache,
            arrays,
            shared,
            ncpu: self.layout.cpus,
            limit: self.layout.limit,
            batchcount: self.layout.batch,
            meta: self.meta,
            meta_kmalloc: self.meta_kmalloc,
            generation: self.generation,
            owner: self.owner,
            keep_slabs: self.keep_slabs,
        })
    }
}
