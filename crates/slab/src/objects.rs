//! Object allocation and freeing: the per-CPU fast path, refills from the
//! shared array and the slab lists, flushes back, and growing and shrinking
//! caches by whole slabs.

use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use intrusive_collections::UnsafeRef;
use kmm_buddy::Gfp;
use kmm_hal::{Cpu, VirtAddr};
use kmm_page_frame::{Page, PgFlags};

use crate::allocator::SlabAllocator;
use crate::cache::{ArrayCache, Cache, KmemCache};
use crate::slab_desc::{OBJ_ALLOCATED, OBJ_FREE, SlabDesc, SlabList};
use crate::{SlabError, SlabFlags};

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
    /// the page allocator is dry (not while a refill is under way: it holds
    /// this CPU's array of another cache).
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
    /// asked for it to be drained. Refills it; when the page allocator is dry,
    /// gives back what the caches hold idle (Linux's slab shrinking under
    /// memory pressure) and tries once more.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, c: &KmemCache, gfp: Gfp, reclaim: bool) -> Result<NonNull<u8>, SlabError> {
        let entry = match self.take_object(c, gfp) {
            Ok(e) => e,
            Err(SlabError::OutOfMemory) if reclaim && self.reclaim() > 0 => {
                self.take_object(c, gfp)?
            }
            Err(e) => return Err(e),
        };
        Ok(self.hand_out(c, gfp, entry))
    }

    /// Pops an entry from this CPU's array, refilling it if empty.
    fn take_object(&self, c: &KmemCache, gfp: Gfp) -> Result<crate::cache::Entry, SlabError> {
        let cpu = self.buddy.cpu();
        let _irq = cpu.irq_guard();
        // SAFETY: interrupts are off (the guard above) and the id is ours.
        let ac = unsafe { self.local_array(c, cpu.id()) };
        if ac.avail == 0 {
            self.refill(c, ac, gfp)?;
        }
        Ok(ac.pop())
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
        let loc = self.locate(ptr.as_ptr())?;
        if !core::ptr::eq(loc.cache, c) {
            c.errors.fetch_add(1, Ordering::Relaxed);
            return Err(SlabError::WrongCache);
        }
        self.free_located(loc, ptr.as_ptr().addr())
    }

    /// Frees a located object: state check, debug checks, then this CPU's array.
    #[inline(always)]
    pub(crate) fn free_located(&self, loc: Located<'_>, obj: usize) -> Result<(), SlabError> {
        let c = loc.cache;
        let state = loc.state();
        // The default build checks and clears the state with plain loads and
        // stores (no locked instruction on the hot path): a double free is
        // refused unless two CPUs free the same object at the same instant. The
        // `debug` build claims the object with one atomic exchange, so even that
        // race is caught.
        let claimed = if cfg!(feature = "debug") {
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
        let _irq = cpu.irq_guard();
        // SAFETY: interrupts are off (the guard above) and the id is ours.
        let ac = unsafe { self.local_array(c, cpu.id()) };
        if ac.avail == ac.limit {
            self.flush_array(c, ac);
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
        if !page.test(PgFlags::SLAB) {
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

    /// Fills an empty array: from the shared array, else from the slabs, growing
    /// the cache when they are exhausted (Linux's `cache_alloc_refill`).
    #[cold]
    fn refill(&self, c: &KmemCache, ac: &mut ArrayCache, gfp: Gfp) -> Result<(), SlabError> {
        let batch = ac.batchcount;
        {
            let mut sh = c.shared.lock();
            if !sh.0.is_null() {
                // SAFETY: the shared array lives in the cache's metadata; we
                // hold its lock.
                let shared = unsafe { &mut *sh.0 };
                let n = batch.min(shared.avail);
                if n > 0 {
                    let from = shared.avail - n;
                    let (src, dst) = (
                        shared.entries()[from..from + n].as_ptr(),
                        ac.entries().as_mut_ptr(),
                    );
                    // SAFETY: distinct arrays; n ≤ both lengths (ac is empty).
                    unsafe { core::ptr::copy_nonoverlapping(src, dst, n) };
                    shared.avail -= n;
                    ac.avail = n;
                    return Ok(());
                }
            }
        }
        // Another CPU may take a freshly grown slab's objects before we do:
        // grow again until we get some; only the page allocator's failure ends
        // the loop with an error.
        loop {
            self.take_from_slabs(c, ac, batch);
            if ac.avail > 0 {
                return Ok(());
            }
            self.grow(c, gfp)?;
        }
    }

    /// Moves up to `batch` objects from the partial, then free, slabs.
    #[cold]
    fn take_from_slabs(&self, c: &KmemCache, ac: &mut ArrayCache, batch: usize) {
        let mut l = c.lists.lock();
        let mut want = batch;
        while want > 0 {
            let from_partial = !l.partial.is_empty();
            let slab = match (l.partial.front().get(), l.free.front().get()) {
                (Some(s), _) => s as *const SlabDesc,
                (None, Some(s)) => s as *const SlabDesc,
                (None, None) => break,
            };
            // SAFETY: the slab is on one of our lists (lock held).
            let slab = unsafe { &*slab };
            while want > 0 {
                let Some(i) = slab.get_obj() else { break };
                let at = ac.avail;
                let obj = slab.s_mem + i * c.geo.buffer_size + c.geo.obj_offset;
                let state = (slab.state(i) as *const core::sync::atomic::AtomicU8).addr();
                ac.entries()[at] = [obj, state];
                ac.avail += 1;
                l.free_objects -= 1;
                want -= 1;
            }
            // Move the slab to the list that fits it now.
            let now = if slab.inuse() == slab.num() {
                SlabList::Full
            } else {
                SlabList::Partial
            };
            let was = if from_partial {
                SlabList::Partial
            } else {
                SlabList::Free
            };
            if now != was {
                let r = if from_partial {
                    l.partial.pop_front()
                } else {
                    l.free.pop_front()
                };
                let r = r.expect("the slab was at the front");
                slab.set_list(now);
                match now {
                    SlabList::Full => l.full.push_front(r),
                    _ => l.partial.push_front(r),
                }
            }
        }
    }

    /// Empties a full array by a batch: into the shared array if it has room,
    /// else back to the slabs (Linux's `cache_flusharray`).
    #[cold]
    fn flush_array(&self, c: &KmemCache, ac: &mut ArrayCache) {
        let batch = ac.batchcount.min(ac.avail);
        {
            let mut sh = c.shared.lock();
            if !sh.0.is_null() {
                // SAFETY: as in `refill`.
                let shared = unsafe { &mut *sh.0 };
                let room = shared.limit - shared.avail;
                if room > 0 {
                    let n = batch.min(room);
                    let at = shared.avail;
                    shared.entries()[at..at + n].copy_from_slice(&ac.entries()[..n]);
                    shared.avail += n;
                    let avail = ac.avail;
                    ac.entries().copy_within(n..avail, 0);
                    ac.avail -= n;
                    return;
                }
            }
        }
        self.free_objects(c, &ac.entries()[..batch].to_owned_array());
        let avail = ac.avail;
        ac.entries().copy_within(batch..avail, 0);
        ac.avail -= batch;
    }

    /// Gives up to `max` objects of an array back to the slabs (oldest first);
    /// returns the pages of slabs that went back to the page allocator.
    #[cold]
    pub(crate) fn free_array(&self, c: &KmemCache, ac: &mut ArrayCache, max: usize) -> usize {
        let n = ac.avail.min(max);
        if n == 0 {
            return 0;
        }
        let avail = ac.avail;
        let mut pages = 0;
        for chunk in ac.entries()[..n].chunks(64) {
            pages += self.free_objects(c, &chunk.to_owned_array());
        }
        ac.entries().copy_within(n..avail, 0);
        ac.avail -= n;
        pages
    }

    /// Empties up to `max` objects of the shared array back to the slabs;
    /// returns the pages given back.
    pub(crate) fn drain_shared(&self, c: &KmemCache, max: usize) -> usize {
        let mut sh = c.shared.lock();
        if sh.0.is_null() {
            return 0;
        }
        // SAFETY: as in `refill`.
        let shared = unsafe { &mut *sh.0 };
        self.free_array(c, shared, max)
    }

    /// Returns objects to their slabs; slabs that become free are kept up to
    /// the cache's free limit and given back to the page allocator beyond it
    /// (Linux's `free_block`).
    fn free_objects(&self, c: &KmemCache, objs: &ObjBatch) -> usize {
        let mut doomed = ObjBatch::new();
        {
            let mut l = c.lists.lock();
            for &obj in objs.as_slice() {
                let loc = self.locate_trusted(c, obj);
                let slab = loc.slab;
                let before = slab.list();
                slab.put_obj(loc.idx);
                l.free_objects += 1;
                let now = if slab.inuse() == 0 {
                    SlabList::Free
                } else {
                    SlabList::Partial
                };
                if now == before {
                    continue;
                }
                // SAFETY: the slab is on the list `before` (lock held).
                let r = unsafe {
                    match before {
                        SlabList::Full => l.full.cursor_mut_from_ptr(slab).remove(),
                        SlabList::Partial => l.partial.cursor_mut_from_ptr(slab).remove(),
                        SlabList::Free => l.free.cursor_mut_from_ptr(slab).remove(),
                    }
                }
                .expect("the slab is on its list");
                if now == SlabList::Free && l.free_objects > c.free_limit && !c.keep_slabs {
                    l.free_objects -= slab.num();
                    l.slabs -= 1;
                    l.reaped += 1;
                    doomed.push(slab as *const SlabDesc as usize);
                    let _ = UnsafeRef::into_raw(r);
                } else {
                    slab.set_list(now);
                    match now {
                        SlabList::Free => l.free.push_front(r),
                        _ => l.partial.push_front(r),
                    }
                }
            }
        }
        for &s in doomed.as_slice() {
            // SAFETY: the slab was taken off every list above: it is ours alone.
            self.destroy_slab(c, unsafe { &*(s as *const SlabDesc) });
        }
        doomed.as_slice().len() << c.geo.gfporder
    }

    /// Gives up to `max` free slabs back to the page allocator; returns the
    /// number of pages freed.
    pub(crate) fn free_slabs(&self, c: &KmemCache, max: usize) -> usize {
        let mut pages = 0;
        for _ in 0..max {
            let slab = {
                let mut l = c.lists.lock();
                let Some(r) = l.free.pop_back() else { break };
                l.free_objects -= r.num();
                l.slabs -= 1;
                l.reaped += 1;
                UnsafeRef::into_raw(r)
            };
            // SAFETY: off every list: ours alone.
            self.destroy_slab(c, unsafe { &*slab });
            pages += 1 << c.geo.gfporder;
        }
        pages
    }

    /// Adds a slab to the cache (Linux's `cache_grow`): pages from the buddy
    /// allocator, the management on or off the slab, a colour offset, the
    /// objects constructed, the pages pointed back at the cache and slab.
    #[cold]
    pub(crate) fn grow(&self, c: &KmemCache, gfp: Gfp) -> Result<(), SlabError> {
        let geo = c.geo;
        let colour = {
            let mut l = c.lists.lock();
            let off = l.colour_next;
            if geo.colour > 0 {
                l.colour_next = (l.colour_next + 1) % geo.colour;
            }
            off * geo.colour_off
        };
        let mut g = gfp.difference(Gfp::HIGHMEM | Gfp::ZERO | Gfp::DMA) | Gfp::NOWARN;
        if c.flags.contains(SlabFlags::CACHE_DMA) {
            g |= Gfp::DMA;
        }
        let head = self
            .buddy
            .alloc_pages(g, geo.gfporder as usize)
            .ok_or(SlabError::OutOfMemory)?;
        let mem = self.buddy.mem();
        let addr = mem
            .page_address(head)
            .expect("slab pages are low memory")
            .as_usize();
        let (desc_at, s_mem) = if geo.off_slab {
            let cache = c
                .slabp_cache
                .expect("off-slab caches have a descriptor cache");
            let desc_cache = self.cache(cache.erase())?;
            match self.alloc_object(desc_cache, gfp, false) {
                Ok(p) => (p.as_ptr().addr(), addr + colour),
                Err(e) => {
                    let r = self.buddy.free_pages_page(head, geo.gfporder as usize);
                    debug_assert!(r.is_ok());
                    return Err(e);
                }
            }
        } else {
            (addr + colour, addr + colour + geo.mgmt_size)
        };
        // SAFETY: `desc_at` is ours (on the slab's own pages, or a fresh off-slab
        // object) with room for the descriptor and `num` entries.
        let slab = unsafe {
            SlabDesc::init(
                core::ptr::with_exposed_provenance_mut(desc_at),
                addr,
                s_mem,
                geo.num,
                colour,
            )
        };
        for i in 0..geo.num {
            let buf = s_mem + i * geo.buffer_size;
            self.debug_on_new(c, buf);
            if let Some(ctor) = c.ctor {
                ctor(core::ptr::with_exposed_provenance_mut(buf + geo.obj_offset));
            }
        }
        let pfn = mem.page_to_pfn(head).expect("a buddy page").as_usize();
        for p in 0..1usize << geo.gfporder {
            let page = mem
                .pfn_to_page(kmm_hal::Pfn::new(pfn + p))
                .expect("a buddy block");
            page.set_owner(c as *const KmemCache as usize);
            page.set_index(slab as *const SlabDesc as usize);
            page.insert(PgFlags::SLAB);
        }
        let mut l = c.lists.lock();
        slab.set_list(SlabList::Free);
        // SAFETY: the descriptor lives until `destroy_slab`.
        l.free.push_back(unsafe { UnsafeRef::from_raw(slab) });
        l.free_objects += geo.num;
        l.slabs += 1;
        l.grown += 1;
        Ok(())
    }

    /// Gives a slab that is on no list back to the page allocator.
    fn destroy_slab(&self, c: &KmemCache, slab: &SlabDesc) {
        let mem = self.buddy.mem();
        let head: &Page = mem
            .virt_to_page(VirtAddr::new(slab.mem))
            .expect("slab pages are direct-mapped");
        let pfn = mem.page_to_pfn(head).expect("a buddy page").as_usize();
        for p in 0..1usize << c.geo.gfporder {
            let page = mem
                .pfn_to_page(kmm_hal::Pfn::new(pfn + p))
                .expect("a buddy block");
            page.remove(PgFlags::SLAB);
            page.set_owner(0);
            page.set_index(0);
        }
        if c.geo.off_slab {
            let desc = NonNull::from(slab).cast::<u8>();
            let r = c.slabp_cache.map(|sc| self.kmem_cache_free(sc, desc));
            debug_assert!(matches!(r, Some(Ok(()))), "off-slab descriptor free failed");
        }
        let r = self.buddy.free_pages_page(head, c.geo.gfporder as usize);
        debug_assert!(r.is_ok(), "slab pages go back: {r:?}");
    }
}

/// Up to 64 object addresses copied out of an array (so the array can be
/// modified while they are freed), without a heap.
pub(crate) struct ObjBatch {
    v: [usize; 64],
    n: usize,
}

impl ObjBatch {
    fn new() -> Self {
        ObjBatch { v: [0; 64], n: 0 }
    }
    fn push(&mut self, x: usize) {
        self.v[self.n] = x;
        self.n += 1;
    }
    fn as_slice(&self) -> &[usize] {
        &self.v[..self.n]
    }
}

trait ToOwnedArray {
    fn to_owned_array(&self) -> ObjBatch;
}

impl ToOwnedArray for [crate::cache::Entry] {
    fn to_owned_array(&self) -> ObjBatch {
        let mut b = ObjBatch::new();
        for &[obj, _] in self.iter().take(64) {
            b.push(obj);
        }
        b
    }
}
