//! Object allocation and freeing: the per-CPU fast path, its cold ends, and
//! finding an object's cache and slab from its address (batches to and from
//! the slabs are in `refill`, whole slabs in `grow`).

use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use kmm_buddy::Gfp;
use kmm_hal::{Cpu, VirtAddr};
use kmm_page_frame::PgFlags;

use crate::SlabError;
use crate::allocator::SlabAllocator;
use crate::cache::{ArrayCache, Cache, KmemCache};
use crate::slab_desc::{OBJ_ALLOCATED, OBJ_FREE, SlabDesc};

/// Where an object lives. Made only by `locate`, which checks that `idx` is
/// below the slab descriptor's object count, and `locate_trusted`, whose
/// objects come from the allocator's own arrays (the index below the cache's
/// `num`, which every slab of the cache has: `grow` makes each descriptor with
/// `geo.num`).
pub(crate) struct Located<'s> {
    pub(crate) cache: &'s KmemCache,
    pub(crate) slab: &'s SlabDesc,
    pub(crate) idx: usize,
}

impl Located<'_> {
    /// The object's state byte.
    #[inline(always)]
    pub(crate) fn state(&self) -> &core::sync::atomic::AtomicU8 {
        // SAFETY: `idx < num` (see the type).
        unsafe { self.slab.state_unchecked(self.idx) }
    }
}

impl<'a, C: Cpu> SlabAllocator<'a, C> {
    /// Allocates an object (Linux's `kmem_cache_alloc`): from this CPU's array
    /// (the most recently freed object first), refilling it in a batch from the
    /// shared array or the slabs, growing the cache by a slab if needed.
    #[inline]
    pub fn kmem_cache_alloc(&self, cache: Cache<'a>, gfp: Gfp) -> Result<NonNull<u8>, SlabError> {
        let c = self.cache(cache)?;
        self.alloc_object(c, gfp, true)
    }

    /// [`Self::kmem_cache_alloc`] on a cache, with or without reclaiming when
    /// the page allocator is dry (never for an allocation that may not wait:
    /// Linux reclaims for no atomic allocation; nor for an off-slab
    /// descriptor while its slab grows: the outer allocation reclaims).
    ///
    /// The fast path pops this CPU's array and calls nothing; everything else
    /// (refill, a drain request, reclaim) is in [`Self::alloc_slow`], called in
    /// tail position, so the fast path needs no saved registers.
    #[inline(always)]
    pub(crate) fn alloc_object(
        &self,
        c: &KmemCache,
        gfp: Gfp,
        reclaim: bool,
    ) -> Result<NonNull<u8>, SlabError> {
        let entry = {
            let cpu = self.buddy.cpu();
            let _irq = cpu.irq_guard();
            let pa = c.cpu_array(cpu.id());
            // SAFETY: interrupts are off (the guard above) and the array is this
            // CPU's: nothing else touches it while the borrow lives.
            let ac = unsafe { &mut **pa.ac.get() };
            if ac.avail == 0 || pa.drain.load(Ordering::Relaxed) {
                None
            } else {
                Some(ac.pop())
            }
        };
        match entry {
            Some(e) => Ok(self.hand_out(c, gfp, e)),
            None => self.alloc_slow(c, gfp, reclaim),
        }
    }

    /// Marks a popped entry's object allocated and hands it out (zeroed for
    /// `Gfp::ZERO`).
    #[inline(always)]
    fn hand_out(&self, c: &KmemCache, gfp: Gfp, [obj, state]: crate::cache::Entry) -> NonNull<u8> {
        // SAFETY: the entry holds the address of the object's state byte in its
        // live slab's management area (an AtomicU8).
        let state =
            unsafe { &*core::ptr::with_exposed_provenance::<core::sync::atomic::AtomicU8>(state) };
        state.store(OBJ_ALLOCATED, Ordering::Relaxed);
        self.debug_on_alloc(c, obj);
        if gfp.contains(Gfp::ZERO) {
            // Linux's `kmem_cache_zalloc`.
            let p = core::ptr::with_exposed_provenance_mut::<u8>(obj);
            // SAFETY: the object is now ours: `obj_size` bytes.
            unsafe { core::ptr::write_bytes(p, 0, c.geo.obj_size) };
        }
        // SAFETY: objects are never at address 0.
        unsafe { NonNull::new_unchecked(core::ptr::with_exposed_provenance_mut(obj)) }
    }

    /// The slow end of an allocation: this CPU's array is empty or another CPU
    /// asked for it to be drained. Refills it; when the page allocator is dry
    /// and the caller may wait (`Gfp::WAIT`), gives back what the caches hold
    /// idle (Linux's slab shrinking under memory pressure) and tries once
    /// more. An atomic allocation has already dipped into the page
    /// allocator's reserve and fails cleanly.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, c: &KmemCache, gfp: Gfp, reclaim: bool) -> Result<NonNull<u8>, SlabError> {
        // Linux's cache_alloc_refill: a point where an interrupt may land.
        self.buddy.cpu().interrupt_point();
        let entry = match self.take_object(c, gfp) {
            Ok(e) => e,
            Err(SlabError::OutOfMemory)
                if reclaim && gfp.contains(Gfp::WAIT) && self.reclaim() > 0 =>
            {
                self.take_object(c, gfp)?
            }
            Err(e) => return Err(e),
        };
        Ok(self.hand_out(c, gfp, entry))
    }

    /// Pops an entry from this CPU's array, refilling it if empty (Linux's
    /// `cache_alloc_refill`). When the shared array and the slabs are empty
    /// the cache grows by a slab with nothing held — no lock, no CPU's array
    /// borrowed, interrupts as the caller had them — since the page
    /// allocator may call its `on_low` hook, which may allocate from this
    /// very cache; then the array is looked up again (the caller may have
    /// moved to another CPU, or the hook filled it).
    fn take_object(&self, c: &KmemCache, gfp: Gfp) -> Result<crate::cache::Entry, SlabError> {
        let cpu = self.buddy.cpu();
        loop {
            {
                let irq = cpu.irq_guard();
                // SAFETY: interrupts are off (the guard above) and the id is
                // ours.
                let ac = unsafe { self.local_array(c, cpu.id()) };
                if ac.avail == 0 {
                    self.refill(c, ac, &irq);
                }
                if ac.avail > 0 {
                    return Ok(ac.pop());
                }
            }
            // Another CPU may take a freshly grown slab's objects before we
            // do: grow again until we get some; only the page allocator's
            // failure ends the loop with an error.
            self.grow(c, gfp)?;
        }
    }

    /// Gives idle memory back to the page allocator when it has run dry: every
    /// cache's free slabs and this CPU's arrays, and this CPU's per-CPU page
    /// lists. Returns the pages given back by the caches.
    #[cold]
    pub(crate) fn reclaim(&self) -> usize {
        let n = self.shrink_all();
        self.buddy.drain_local();
        n
    }

    /// Frees an object to its cache (Linux's `kmem_cache_free`). Refused, with
    /// nothing changed, if the pointer is not an object of `cache`: foreign, an
    /// interior pointer, another cache's object, or already free.
    #[inline]
    pub fn kmem_cache_free(&self, cache: Cache<'a>, ptr: NonNull<u8>) -> Result<(), SlabError> {
        let c = self.cache(cache)?;
        let loc = match self.locate(ptr.as_ptr()) {
            Ok(loc) => loc,
            Err(SlabError::Foreign) => return Err(self.refuse_foreign(ptr.as_ptr())),
            Err(e) => return Err(e),
        };
        if !core::ptr::eq(loc.cache, c) {
            c.errors.fetch_add(1, Ordering::Relaxed);
            return Err(SlabError::WrongCache);
        }
        self.free_located(loc, ptr.as_ptr().addr())
    }

    /// Why `kmem_cache_free` refuses a pointer in no slab: `Internal` for a
    /// cache descriptor, `Foreign` for anything else (a large kmalloc block
    /// included: it is no cache's object).
    #[cold]
    #[inline(never)]
    fn refuse_foreign(&self, ptr: *mut u8) -> SlabError {
        match self.large_block(ptr) {
            Err(SlabError::Internal) => SlabError::Internal,
            _ => SlabError::Foreign,
        }
    }

    /// Frees a located object: state check, debug checks, then this CPU's array.
    #[inline(always)]
    pub(crate) fn free_located(&self, loc: Located<'_>, obj: usize) -> Result<(), SlabError> {
        let c = loc.cache;
        let state = loc.state();
        // The default build checks and clears the state with plain loads and
        // stores (no locked instruction on the hot path): a double free is
        // refused unless two CPUs free the same object at the same instant. The
        // `hardened` and `debug` builds claim the object with one atomic
        // exchange, so even that race is caught.
        let claimed = if cfg!(any(feature = "hardened", feature = "debug")) {
            state
                .compare_exchange(OBJ_ALLOCATED, OBJ_FREE, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        } else {
            state.load(Ordering::Relaxed) == OBJ_ALLOCATED
        };
        if !claimed {
            c.errors.fetch_add(1, Ordering::Relaxed);
            self.debug_report(c, obj, crate::debug::Offence::DoubleFree);
            return Err(SlabError::DoubleFree);
        }
        if let Err(e) = self.debug_on_free(c, obj) {
            // Damaged: reported, and left allocated.
            state.store(OBJ_ALLOCATED, Ordering::Relaxed);
            return Err(e);
        }
        state.store(OBJ_FREE, Ordering::Relaxed);
        let state = (state as *const core::sync::atomic::AtomicU8).addr();
        let pushed = {
            let cpu = self.buddy.cpu();
            let _irq = cpu.irq_guard();
            let pa = c.cpu_array(cpu.id());
            // SAFETY: interrupts are off (the guard above) and the array is this
            // CPU's: nothing else touches it while the borrow lives.
            let ac = unsafe { &mut **pa.ac.get() };
            if ac.avail == ac.limit || pa.drain.load(Ordering::Relaxed) {
                false
            } else {
                ac.push(obj, state);
                true
            }
        };
        if !pushed {
            self.free_slow(c, obj, state);
        }
        Ok(())
    }

    /// The slow end of a free: this CPU's array is full (flushed by a batch
    /// first) or another CPU asked for it to be drained.
    #[cold]
    #[inline(never)]
    fn free_slow(&self, c: &KmemCache, obj: usize, state: usize) {
        let cpu = self.buddy.cpu();
        cpu.interrupt_point();
        let irq = cpu.irq_guard();
        // SAFETY: interrupts are off (the guard above) and the id is ours.
        let ac = unsafe { self.local_array(c, cpu.id()) };
        if ac.avail == ac.limit {
            self.flush_array(c, ac, &irq);
        }
        ac.push(obj, state);
    }

    /// The array of CPU `id` for `c`, emptied first if another CPU asked for it.
    ///
    /// # Safety
    /// Interrupts must be off and `id` must be the calling CPU's: then nothing
    /// else touches the array (see `KmemCache`) while the borrow lives.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    unsafe fn local_array<'c>(&self, c: &'c KmemCache, id: usize) -> &'c mut ArrayCache {
        let pa = c.cpu_array(id);
        // SAFETY: exclusive by the contract above.
        let ac = unsafe { &mut **pa.ac.get() };
        if pa.drain.load(Ordering::Relaxed) {
            pa.drain.store(false, Ordering::Relaxed);
            self.free_array(c, ac, usize::MAX);
        }
        ac
    }

    /// Finds the cache, slab and index of an object pointer, checking that it is
    /// the start of an object in a slab page.
    #[inline(always)]
    pub(crate) fn locate(&self, ptr: *mut u8) -> Result<Located<'_>, SlabError> {
        if ptr.is_null() {
            return Err(SlabError::Foreign);
        }
        let mem = self.buddy.mem();
        let page = mem
            .virt_to_page(VirtAddr::new(ptr.addr()))
            .map_err(|_| SlabError::Foreign)?;
        // One mask test: a slab page, not one of the allocator's own (the
        // cache of caches': `kfree` classifies those as `Internal`).
        if page.flags() & (PgFlags::SLAB | PgFlags::SLAB_INTERNAL) != PgFlags::SLAB {
            return Err(SlabError::Foreign);
        }
        // A free racing with the slab's teardown (a double free on two CPUs)
        // can see the SLAB flag and then back-pointers already cleared.
        let (owner, index) = (page.owner(), page.index());
        if owner == 0 || index == 0 {
            return Err(SlabError::Foreign);
        }
        // SAFETY: a SLAB page's back-pointers name its cache (an object of the
        // cache of caches, never given back) and its slab descriptor (valid
        // while the page is a SLAB page); both were set (not yet cleared).
        let (c, slab) = unsafe { (&*(owner as *const KmemCache), &*(index as *const SlabDesc)) };
        // An index below `num` (the slab's span checked), and the offset into
        // that buffer, which must be the object's.
        let (idx, rem) = c
            .index
            .split(ptr.addr().wrapping_sub(slab.s_mem))
            .ok_or(SlabError::Interior)?;
        if rem != c.geo.obj_offset {
            return Err(SlabError::Interior);
        }
        // The cache's geometry bounds `idx` by its `num`, which is the slab's;
        // checking the descriptor's own count as well keeps a wild free that
        // races with the page changing hands (owner and slab read from two
        // different moments) from indexing past the state bytes.
        if idx >= slab.num() {
            return Err(SlabError::Foreign);
        }
        Ok(Located {
            cache: c,
            slab,
            idx,
        })
    }

    /// [`Self::locate`] for an address the allocator itself handed out.
    #[inline]
    pub(crate) fn locate_trusted(&self, c: &KmemCache, obj: usize) -> Located<'_> {
        let page = self
            .buddy
            .mem()
            .virt_to_page(VirtAddr::new(obj))
            .expect("slab objects are direct-mapped");
        // SAFETY: as in `locate`.
        let slab = unsafe { &*(page.index() as *const SlabDesc) };
        let (idx, _) = c
            .index
            .split(obj - slab.s_mem)
            .expect("an object of this slab");
        // SAFETY: the cache outlives this call (the caller holds it).
        let cache = unsafe { &*(c as *const KmemCache) };
        Located { cache, slab, idx }
    }
}
