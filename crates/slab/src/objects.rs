//! Object allocation and freeing — `kmem_cache_alloc`/`kmem_cache_free` and
//! `kmalloc`/`kfree` with `ksize` and `krealloc`: the per-CPU fast path, its
//! cold ends, and finding an object's cache and slab from its address
//! (batches to and from the slabs are in `refill`, whole slabs in `grow`, the
//! size classes and large blocks in `kmalloc`).

use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use kmm_buddy::Gfp;
use kmm_hal::{Cpu, IrqGuard, VirtAddr};
use kmm_page_frame::PgFlags;

use crate::SlabError;
use crate::allocator::SlabAllocator;
use crate::array::{Entry, NO_ENTRY, ObjBatch};
use crate::cache::{Cache, KmemCache};
use crate::debug::{self, Offence};
use crate::kmalloc::Kmalloc;
use crate::slab_desc::{OBJ_ALLOCATED, OBJ_FREE, OBJ_TRANSIT, SlabDesc};

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
        self.alloc_object(c, gfp, true, c.geo().obj_size)
    }

    /// [`Self::kmem_cache_alloc`] on a cache, with or without reclaiming when
    /// the page allocator is dry (never for an allocation that may not wait:
    /// Linux reclaims for no atomic allocation; nor for an off-slab
    /// descriptor while its slab grows: the outer allocation reclaims).
    ///
    /// `requested` is the size the caller asked for (the object size but for
    /// kmalloc), which the `debug` checks guard from the start.
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
        requested: usize,
    ) -> Result<NonNull<u8>, SlabError> {
        let irq = self.buddy().cpu().irq_guard();
        let entry = c
            .arrays()
            .with(&irq, |ac, st| ac.pop(st))
            .unwrap_or(NO_ENTRY);
        if entry[0] == 0 {
            // Empty, a drain requested, or this CPU's array already held (a
            // re-entry): the slow path sorts it out. It gets the guard, so
            // the fast path restores interrupts in one place.
            return self.alloc_slow(c, gfp, reclaim, requested, irq);
        }
        drop(irq);
        Ok(self.hand_out(c, gfp, entry, requested))
    }

    /// Marks a popped entry's object allocated and hands it out (zeroed for
    /// `Gfp::ZERO`). A `debug` build checks and rewrites the red zones in
    /// transit, so a concurrent `validate_cache` never sees an allocated
    /// object with half-written zones.
    #[inline(always)]
    fn hand_out(
        &self,
        c: &KmemCache,
        gfp: Gfp,
        [obj, state]: Entry,
        requested: usize,
    ) -> NonNull<u8> {
        // SAFETY: the entry holds the address of the object's state byte in its
        // live slab's management area (an AtomicU8).
        let state =
            unsafe { &*core::ptr::with_exposed_provenance::<core::sync::atomic::AtomicU8>(state) };
        if cfg!(feature = "debug") {
            // Under the cache's list lock, which `validate_cache` holds while it
            // reads the zones: it never sees them half written. The reports go
            // out once the lock is dropped (hooks run with nothing held).
            let mut found = [None; 2];
            {
                let _lists = c.lists().lock_irqsave(self.buddy().cpu());
                state.store(OBJ_TRANSIT, Ordering::Relaxed);
                let mut n = 0;
                debug::on_alloc(c, obj, requested, |o| {
                    found[n.min(1)] = Some(o);
                    n += 1;
                });
                state.store(OBJ_ALLOCATED, Ordering::Release);
            }
            for o in found.into_iter().flatten() {
                self.report(c, obj, o);
            }
        } else {
            state.store(OBJ_ALLOCATED, Ordering::Relaxed);
        }
        if gfp.contains(Gfp::ZERO) {
            // Linux's `kmem_cache_zalloc`.
            let p = core::ptr::with_exposed_provenance_mut::<u8>(obj);
            // SAFETY: the object is now ours: `obj_size` bytes.
            unsafe { core::ptr::write_bytes(p, 0, c.geo().obj_size) };
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
    fn alloc_slow(
        &self,
        c: &KmemCache,
        gfp: Gfp,
        reclaim: bool,
        requested: usize,
        irq: IrqGuard<'_, C>,
    ) -> Result<NonNull<u8>, SlabError> {
        drop(irq);
        // Linux's cache_alloc_refill: a point where an interrupt may land.
        self.buddy().cpu().interrupt_point();
        let entry = match self.take_object(c, gfp, true) {
            Ok(e) => e,
            Err(SlabError::OutOfMemory)
                if reclaim && gfp.contains(Gfp::WAIT) && self.reclaim() > 0 =>
            {
                self.take_object(c, gfp, true)?
            }
            Err(e) => return Err(e),
        };
        Ok(self.hand_out(c, gfp, entry, requested))
    }

    /// Pops an entry from this CPU's array, refilling it if empty (Linux's
    /// `cache_alloc_refill`), with interrupts off. When the shared array and
    /// the slabs are empty the cache grows by a slab with nothing held — no
    /// lock, no CPU's array, interrupts as the caller had them — since the
    /// page allocator may call its `on_low` hook, which may allocate from
    /// this very cache; then the array is looked up again (the caller may
    /// have moved to another CPU, or the hook filled it).
    ///
    /// If this CPU's array is already held (a re-entry: an interrupt handler
    /// that landed while reap or shrink drains it, a hook), the object comes
    /// straight from the slab lists instead. A drain another CPU asked for
    /// is done first; the drained objects go back to their slabs once the
    /// array is released.
    ///
    /// Without `grow`, a cache with no free object anywhere is
    /// [`SlabError::OutOfMemory`] at once (Linux 2.6's `__GFP_NO_GROW`).
    pub(crate) fn take_object(
        &self,
        c: &KmemCache,
        gfp: Gfp,
        grow: bool,
    ) -> Result<Entry, SlabError> {
        let cpu = self.buddy().cpu();
        loop {
            let (got, drained) = {
                let irq = cpu.irq_guard();
                let held = c.arrays().with(&irq, |ac, st| {
                    let drained = if st.drain_requested() {
                        st.drain.store(false, Ordering::Relaxed);
                        ac.with_lifo(st, |a| a.take_oldest(usize::MAX))
                    } else {
                        ObjBatch::new()
                    };
                    let batch = ac.batchcount;
                    ac.touched = true;
                    let got = ac.with_lifo(st, |a| {
                        if a.is_empty() {
                            self.refill(c, a, batch, &irq);
                        }
                        a.pop()
                    });
                    (got, drained)
                });
                held.unwrap_or_else(|| (self.take_one(c, &irq), ObjBatch::new()))
            };
            if !drained.is_empty() {
                self.free_objects(c, drained.as_slice());
            }
            if let Some(e) = got {
                return Ok(e);
            }
            // Another CPU may take a freshly grown slab's objects before we
            // do: grow again until we get some; only the page allocator's
            // failure ends the loop with an error.
            if !grow {
                return Err(SlabError::OutOfMemory);
            }
            self.grow(c, gfp)?;
        }
    }

    /// Gives idle memory back to the page allocator when it has run dry, for
    /// an allocation that may wait: every CPU's arrays (through a cross-CPU
    /// call where there is one: [`Self::drain_cpu_caches`]; else this CPU's,
    /// and the others are asked), every cache's free slabs, and the per-CPU
    /// page lists ([`kmm_buddy::Buddy::drain_all_pages`]). Returns the pages
    /// given back by the caches.
    #[cold]
    pub(crate) fn reclaim(&self) -> usize {
        let drained = self.drain_cpu_caches().unwrap_or(0);
        let n = self.shrink_all();
        self.buddy().drain_all_pages();
        drained + n
    }

    /// Frees an object to its cache (Linux's `kmem_cache_free`). Refused, with
    /// nothing changed, if the pointer is not an object of `cache`: foreign, an
    /// interior pointer, another cache's object, or already free.
    #[inline]
    pub fn kmem_cache_free(&self, cache: Cache<'a>, ptr: NonNull<u8>) -> Result<(), SlabError> {
        // Only whether `locate` succeeded counts here (the error values are
        // dead code on the fast path): a refusal is classified again, out of
        // line.
        match self.locate(ptr.as_ptr()).ok() {
            // The object's cache is the one the handle names, and the handle
            // is current. That is all `cache` would check: `locate` found the
            // cache through a slab page of this allocator, and the cache of
            // caches' pages are refused there.
            Some(loc)
                if core::ptr::eq(loc.cache, cache.ptr.as_ptr())
                    && loc.cache.is_generation(cache.generation) =>
            {
                self.free_located(loc, ptr.as_ptr().addr())
            }
            _ => Err(self.refuse_free(cache, ptr.as_ptr())),
        }
    }

    /// Why `kmem_cache_free` refuses: the handle first (`NoSuchCache`,
    /// `Internal`), then the pointer (`WrongCache` for another cache's
    /// object, counted on the handle's cache; else `locate`'s verdict).
    #[cold]
    #[inline(never)]
    pub(crate) fn refuse_free(&self, cache: Cache<'a>, ptr: *mut u8) -> SlabError {
        let c = match self.cache(cache) {
            Ok(c) => c,
            Err(e) => return e,
        };
        match self.locate(ptr) {
            // Another cache's object (or, racing with a wild free, an object
            // of this one now: refused all the same, nothing changed).
            Ok(_) => {
                c.count_error();
                SlabError::WrongCache
            }
            Err(SlabError::Foreign) => self.refuse_foreign(ptr),
            Err(e) => e,
        }
    }

    /// Why `kmem_cache_free` refuses a pointer in no slab: `Internal` for a
    /// cache descriptor, `Foreign` for anything else (a large kmalloc block
    /// included: it is no cache's object).
    #[cold]
    #[inline(never)]
    fn refuse_foreign(&self, ptr: *mut u8) -> SlabError {
        match self.kmalloc_table().large_block(self.buddy().mem(), ptr) {
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
        // exchange, so even that race is caught; `debug` claims it in transit
        // while it checks the zones and poisons (see `hand_out`).
        // `debug` makes the whole change under the cache's list lock, as in
        // `hand_out`.
        let lists = cfg!(feature = "debug").then(|| c.lists().lock_irqsave(self.buddy().cpu()));
        let claimed = if cfg!(any(feature = "hardened", feature = "debug")) {
            let to = if cfg!(feature = "debug") {
                OBJ_TRANSIT
            } else {
                OBJ_FREE
            };
            state
                .compare_exchange(OBJ_ALLOCATED, to, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        } else {
            state.load(Ordering::Relaxed) == OBJ_ALLOCATED
        };
        if !claimed {
            drop(lists);
            c.count_error();
            self.report(c, obj, Offence::DoubleFree);
            return Err(SlabError::DoubleFree);
        }
        let mut damage = None;
        if let Err(e) = debug::on_free(c, obj, |o| damage = Some(o)) {
            // Damaged: reported, and left allocated.
            state.store(OBJ_ALLOCATED, Ordering::Release);
            drop(lists);
            if let Some(o) = damage {
                self.report(c, obj, o);
            }
            return Err(e);
        }
        state.store(OBJ_FREE, Ordering::Release);
        drop(lists);
        let state = (state as *const core::sync::atomic::AtomicU8).addr();
        let irq = self.buddy().cpu().irq_guard();
        let pushed = c
            .arrays()
            .with(&irq, |ac, st| ac.push(st, obj, state))
            .unwrap_or(false);
        if !pushed {
            // Full, a drain requested, or this CPU's array already held: the
            // slow path gets the guard, as in `alloc_object`.
            self.free_slow(c, obj, state, irq);
        }
        Ok(())
    }

    /// The slow end of a free (Linux's `cache_flusharray`): this CPU's array
    /// is full (a batch goes to the shared array, or is taken out and given
    /// back to its slabs once the array is released), another CPU asked for
    /// it to be drained (all of it goes back, the same way), or it is already
    /// held (a re-entry: the object goes straight back to its slab).
    #[cold]
    #[inline(never)]
    fn free_slow(&self, c: &KmemCache, obj: usize, state: usize, irq: IrqGuard<'_, C>) {
        drop(irq);
        let cpu = self.buddy().cpu();
        cpu.interrupt_point();
        let out = {
            let irq = cpu.irq_guard();
            c.arrays().with(&irq, |ac, st| {
                let drain = st.drain_requested();
                if drain {
                    st.drain.store(false, Ordering::Relaxed);
                }
                let batch = ac.batchcount;
                ac.with_lifo(st, |a| {
                    let out = if drain {
                        a.take_oldest(usize::MAX)
                    } else if a.room() == 0 {
                        self.flush(c, a, batch, &irq)
                    } else {
                        ObjBatch::new()
                    };
                    a.push([obj, state]);
                    out
                })
            })
        };
        match out {
            Some(out) if out.is_empty() => {}
            Some(out) => {
                self.free_objects(c, out.as_slice());
            }
            None => {
                self.free_objects(c, &[obj]);
            }
        }
    }

    /// Finds the cache, slab and index of an object pointer, checking that it is
    /// the start of an object in a slab page.
    #[inline(always)]
    pub(crate) fn locate(&self, ptr: *mut u8) -> Result<Located<'_>, SlabError> {
        if ptr.is_null() {
            return Err(SlabError::Foreign);
        }
        let mem = self.buddy().mem();
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
            .index()
            .split(ptr.addr().wrapping_sub(slab.s_mem))
            .ok_or(SlabError::Interior)?;
        if rem != c.geo().obj_offset {
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
            .buddy()
            .mem()
            .virt_to_page(VirtAddr::new(obj))
            .expect("slab objects are direct-mapped");
        // SAFETY: as in `locate`.
        let slab = unsafe { &*(page.index() as *const SlabDesc) };
        let (idx, _) = c
            .index()
            .split(obj - slab.s_mem)
            .expect("an object of this slab");
        // SAFETY: the cache outlives this call (the caller holds it).
        let cache = unsafe { &*(c as *const KmemCache) };
        Located { cache, slab, idx }
    }
}

/// The usable size of a located object that is live; a free one was freed
/// before.
#[inline(always)]
fn live_size(loc: &Located<'_>) -> Result<usize, SlabError> {
    if loc.state().load(Ordering::Relaxed) != OBJ_ALLOCATED {
        return Err(SlabError::DoubleFree);
    }
    Ok(loc.cache.geo().obj_size)
}

// --- kmalloc and friends, over the general caches and large blocks ---------

impl<'a, C: Cpu> SlabAllocator<'a, C> {
    /// Allocates `size` bytes (Linux's `kmalloc`): from the smallest general
    /// cache that fits (the DMA ones for `Gfp::DMA`), or straight from the page
    /// allocator above 128 KiB. Zero and overflowing sizes are
    /// [`SlabError::BadSize`].
    #[inline]
    pub fn kmalloc(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>, SlabError> {
        if size == 0 {
            return Err(SlabError::BadSize);
        }
        let dma = gfp.contains(Gfp::DMA);
        match self.kmalloc_table().desc_for(size, dma) {
            Some(c) => {
                let p = match self.alloc_object(c, gfp.difference(Gfp::ZERO), true, size) {
                    Ok(p) => p,
                    Err(SlabError::OutOfMemory) if !dma => self.kmalloc_larger(size, gfp)?,
                    Err(e) => return Err(e),
                };
                if gfp.contains(Gfp::ZERO) {
                    // SAFETY: the object is ours and at least `size` bytes.
                    unsafe { core::ptr::write_bytes(p.as_ptr(), 0, size) };
                }
                Ok(p)
            }
            None => self.kmalloc_large(size, gfp),
        }
    }

    /// The last resort of a `kmalloc` whose class cannot grow (the page
    /// allocator failed even after reclaim): a free object of a larger class,
    /// up to twice the size, taken without growing that class either. `ksize`
    /// tells the block's real size. Not in Linux, which fails here; it keeps
    /// the memory idle in other classes' slabs usable once the page allocator
    /// is dry.
    #[cold]
    #[inline(never)]
    fn kmalloc_larger(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>, SlabError> {
        let k = self.kmalloc_table();
        let mut i = k.index(size).ok_or(SlabError::BadSize)? + 1;
        while let (Some(class), Some(c)) = (k.class_size(i), k.desc_of(i)) {
            if class > size.saturating_mul(2) {
                break;
            }
            let g = gfp.difference(Gfp::ZERO);
            if let Ok(entry) = self.take_object(c, g, false) {
                return Ok(self.hand_out(c, g, entry, size));
            }
            i += 1;
        }
        Err(SlabError::OutOfMemory)
    }

    /// Allocates `size` zeroed bytes (Linux's `kzalloc`).
    pub fn kzalloc(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>, SlabError> {
        self.kmalloc(size, gfp | Gfp::ZERO)
    }

    /// Allocates an array of `n` elements of `size` bytes, zeroed (Linux's
    /// `kcalloc`); an overflowing product is [`SlabError::BadSize`].
    pub fn kcalloc(&self, n: usize, size: usize, gfp: Gfp) -> Result<NonNull<u8>, SlabError> {
        let bytes = n.checked_mul(size).ok_or(SlabError::BadSize)?;
        self.kzalloc(bytes, gfp)
    }

    /// `size` bytes straight from the page allocator (marked for `kfree`): a
    /// run of exactly the frames they need (`Buddy::alloc_pages_exact`; the
    /// rest of the power-of-two block goes back at once), so `ksize` is the
    /// size rounded up to a page.
    #[cold]
    pub(crate) fn kmalloc_large(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>, SlabError> {
        let frames = Kmalloc::large_frames(size)?;
        let g = gfp.difference(Gfp::HIGHMEM);
        let page = match self.buddy().alloc_pages_exact(g, size) {
            Some(p) => p,
            // Dry: give back what the caches hold idle and try once more — only
            // if the caller may wait (Linux reclaims for no atomic allocation;
            // the page allocator has already let it dip into the reserve).
            None if gfp.contains(Gfp::WAIT) => {
                self.reclaim();
                self.buddy()
                    .alloc_pages_exact(g, size)
                    .ok_or(SlabError::OutOfMemory)?
            }
            None => return Err(SlabError::OutOfMemory),
        };
        Ok(self
            .kmalloc_table()
            .adopt_large(self.buddy().mem(), page, frames))
    }

    /// Frees what `kmalloc` returned (Linux's `kfree`). A null pointer is fine.
    /// Refused, with nothing changed: pointers no allocator handed out,
    /// interior pointers, double frees.
    #[inline]
    pub fn kfree(&self, ptr: *mut u8) -> Result<(), SlabError> {
        if ptr.is_null() {
            return Ok(());
        }
        // As in `kmem_cache_free`: the verdict is worked out again out of
        // line.
        match self.locate(ptr).ok() {
            Some(loc) => self.free_located(loc, ptr.addr()),
            None => self.kfree_slow(ptr),
        }
    }

    /// `kfree` of a pointer in no slab: a large block, or refused.
    #[cold]
    #[inline(never)]
    fn kfree_slow(&self, ptr: *mut u8) -> Result<(), SlabError> {
        match self.locate(ptr) {
            Err(SlabError::Foreign) => self.kmalloc_table().free_large(self.buddy(), ptr),
            Err(e) => Err(e),
            // A slab object now: only a wild free racing with the page
            // changing hands gets here; it is refused, nothing changed.
            Ok(_) => Err(SlabError::Foreign),
        }
    }

    /// The usable size of a kmalloc'd block (Linux's `ksize`).
    pub fn ksize(&self, ptr: *mut u8) -> Result<usize, SlabError> {
        match self.locate(ptr) {
            Ok(loc) => live_size(&loc),
            Err(SlabError::Foreign) => self.kmalloc_table().large_size(self.buddy().mem(), ptr),
            Err(e) => Err(e),
        }
    }

    /// Resizes a kmalloc'd block (Linux's `krealloc`): the same block if it is
    /// big enough, else a new one with the contents copied and the old one
    /// freed. A null pointer allocates.
    ///
    /// Two differences from Linux: a run of frames from the page allocator
    /// (above the largest class) gives its tail frames back in place when it
    /// shrinks (or moves into a class once the size fits one), and a block
    /// that moves to grow is given the Linux 2.6 class of its new size
    /// (32, 64, 96, 128, 192, 256, then powers of two), so it can grow again
    /// in place as often as with Linux's table. `ksize` stays exact. A zero size is [`SlabError::BadSize`],
    /// and on any error the old block is untouched. A pointer kmalloc did not
    /// hand out (or already freed) is refused before it is read.
    ///
    /// # Safety
    /// `ptr` must be null or a block the caller owns: no other thread may use
    /// it during the call (its bytes are copied).
    #[inline]
    pub unsafe fn krealloc(
        &self,
        ptr: *mut u8,
        new_size: usize,
        gfp: Gfp,
    ) -> Result<NonNull<u8>, SlabError> {
        if new_size == 0 {
            return Err(SlabError::BadSize);
        }
        if ptr.is_null() {
            return self.kmalloc(new_size, gfp);
        }
        // One lookup serves the size check and the free. A block that is big
        // enough is kept without a call; a move is out of line.
        match self.locate(ptr) {
            Ok(loc) => {
                let old = live_size(&loc)?;
                if old >= new_size {
                    // In place: the `debug` checks now guard the new size
                    // (written in transit, as in `hand_out`).
                    if cfg!(feature = "debug") {
                        let _lists = loc.cache.lists().lock_irqsave(self.buddy().cpu());
                        let st = loc.state();
                        st.compare_exchange(
                            OBJ_ALLOCATED,
                            OBJ_TRANSIT,
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .map_err(|_| SlabError::DoubleFree)?;
                        debug::set_requested(loc.cache, ptr.addr(), new_size);
                        st.store(OBJ_ALLOCATED, Ordering::Release);
                    }
                    return NonNull::new(ptr).ok_or(SlabError::Foreign);
                }
                // SAFETY: forwarded from the caller; `loc` locates `ptr`, live.
                unsafe { self.krealloc_move(ptr, Some(loc), old, new_size, gfp) }
            }
            Err(SlabError::Foreign) => {
                let old = self.ksize(ptr)?;
                if old >= new_size && new_size > self.kmalloc_table().max() {
                    // A run: its tail frames go back, the head stays.
                    self.kmalloc_table()
                        .shrink_large(self.buddy(), ptr, new_size)?;
                    return NonNull::new(ptr).ok_or(SlabError::Foreign);
                }
                // SAFETY: forwarded from the caller; `ptr` is a live large block.
                unsafe { self.krealloc_move(ptr, None, old, new_size, gfp) }
            }
            Err(e) => Err(e),
        }
    }

    /// The moving end of `krealloc`: a new block, the live bytes that fit
    /// copied, the old block freed (through `loc` when it is a slab object).
    ///
    /// # Safety
    /// As for `krealloc`; `ptr` is a live block of `old` usable bytes,
    /// located at `loc` if it is a slab object.
    #[inline(never)]
    unsafe fn krealloc_move(
        &self,
        ptr: *mut u8,
        loc: Option<Located<'_>>,
        old: usize,
        new_size: usize,
        gfp: Gfp,
    ) -> Result<NonNull<u8>, SlabError> {
        // Growing: room to grow again in place, as Linux 2.6's classes give.
        let want = if new_size > old {
            self.kmalloc_table().grow_size(new_size)
        } else {
            new_size
        };
        let new = match self.kmalloc(want, gfp) {
            Ok(p) => p,
            Err(_) if want > new_size => self.kmalloc(new_size, gfp)?,
            Err(e) => return Err(e),
        };
        // SAFETY: both blocks are live, the old one `old` bytes and the new
        // one at least `new_size`.
        unsafe { core::ptr::copy_nonoverlapping(ptr, new.as_ptr(), old.min(new_size)) };
        let freed = match loc {
            Some(l) => self.free_located(l, ptr.addr()),
            None => self.kfree(ptr),
        };
        if let Err(e) = freed {
            // The old block was refused (damaged under `debug`, or freed by a
            // racing call): it stays as it was, and the new one goes back.
            let r = self.kfree(new.as_ptr());
            debug_assert!(r.is_ok());
            return Err(e);
        }
        Ok(new)
    }

    /// The general cache for `size` bytes (`dma` for the DMA variant).
    pub fn kmalloc_cache(&self, size: usize, dma: bool) -> Option<Cache<'a>> {
        self.kmalloc_table().cache_for(size, dma)
    }

    /// Pages held by kmalloc requests above 128 KiB.
    pub fn large_pages(&self) -> usize {
        self.kmalloc_table().large_pages()
    }
}
