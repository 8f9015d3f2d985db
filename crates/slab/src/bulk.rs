//! The bulk object paths (Linux 4.2's `kmem_cache_alloc_bulk` and
//! `kmem_cache_free_bulk`): many objects of one cache in one call.
//!
//! Both take this CPU's array once, in one interrupts-off section, and move
//! objects between it and the caller's slice in a batch: an allocation
//! copies the array's most recent entries out, a free checks each pointer
//! and writes its entry into the array's free slots. What the array cannot
//! give is refilled in one batch of the rest ([`SlabAllocator::refill`]:
//! the shared array, else the slabs under one list-lock acquisition); what
//! it cannot take goes straight back to the slabs, a block at a time under
//! one list-lock acquisition (`free_block`).
//!
//! - **All or nothing** for an allocation: every slot of the slice gets an
//!   object, or the call fails and the objects it had taken go back.
//! - **In order** for a free: the elements are freed one after the other;
//!   the first one `kmem_cache_free` would refuse stops the call with its
//!   index ([`BulkFreeError`]), every element before it freed, it and the
//!   rest untouched, nothing else changed.
//! - Under `debug`, every object goes through the single calls (red zones,
//!   poisoning and the checks in transit are theirs); under `hardened` the
//!   free claims each object with one atomic exchange, as the single free
//!   does.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering};

use kmm_buddy::Gfp;
use kmm_hal::{Cpu, VirtAddr};
use kmm_page_frame::{MemMap, PgFlags};

use crate::SlabError;
use crate::allocator::SlabAllocator;
use crate::array::{Entry, Lifo, ObjBatch};
use crate::cache::{Cache, KmemCache};
use crate::error::BulkFreeError;
use crate::slab_desc::{OBJ_ALLOCATED, OBJ_FREE, SlabDesc};

/// Elements a bulk free gives back to their slabs in one list-lock
/// acquisition once this CPU's array is full (at most `ObjBatch::CAP`, what
/// `free_block` takes).
const FREE_BLOCK: usize = 64;
const _: () = assert!(FREE_BLOCK <= ObjBatch::CAP);

impl<'a, C: Cpu> SlabAllocator<'a, C> {
    /// Fills `objs` with objects of `cache` (Linux's
    /// `kmem_cache_alloc_bulk`): all of them, or none (the call fails and
    /// the objects it took go back; the slice's contents are then
    /// meaningless). Zeroed for `Gfp::ZERO`. An empty slice is `Ok` once
    /// the handle is checked.
    ///
    /// Linux returns the number of objects or 0; here `Ok(())` means every
    /// slot was filled, and the error says why none are.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use kmm_buddy::Gfp;
    /// # use kmm_slab::SlabFlags;
    /// # let host = kmm_testkit::TestMachine::builder().ram_mib(16).build();
    /// # let _cpu0 = host.bind(0);
    /// # let slab = host.slab();
    /// let cache = slab.kmem_cache_create("item", 64, 0, SlabFlags::empty(), None).unwrap();
    /// let mut objs = [NonNull::dangling(); 32];
    /// slab.kmem_cache_alloc_bulk(cache, Gfp::KERNEL, &mut objs).unwrap();
    /// slab.kmem_cache_free_bulk(cache, &objs).unwrap();
    /// ```
    #[inline]
    pub fn kmem_cache_alloc_bulk(
        &self,
        cache: Cache<'a>,
        gfp: Gfp,
        objs: &mut [NonNull<u8>],
    ) -> Result<(), SlabError> {
        let c = self.cache(cache)?;
        if cfg!(feature = "debug") {
            return self.alloc_bulk_each(c, gfp, objs);
        }
        let irq = self.buddy().cpu().irq_guard();
        let got = c
            .arrays()
            .with(&irq, |ac, st| {
                ac.touched = true;
                ac.with_lifo(st, |a| hand_out_top(a, objs))
            })
            .unwrap_or(0);
        drop(irq);
        if got < objs.len() {
            self.alloc_bulk_slow(c, gfp, objs, got)?;
        }
        if gfp.contains(Gfp::ZERO) {
            for p in objs.iter() {
                // SAFETY: the object is now the caller's: `obj_size` bytes.
                unsafe { core::ptr::write_bytes(p.as_ptr(), 0, c.geo().obj_size) };
            }
        }
        Ok(())
    }

    /// The slow end of a bulk allocation: `objs[filled..]` still to fill,
    /// this CPU's array empty. The array is refilled by a batch of the rest
    /// (at least the cache's batch count, at most the array's limit) and
    /// emptied into the slice until it is full; when the shared array and
    /// the slabs are dry the cache grows by a slab with nothing held, as
    /// for a single allocation. A drain another CPU asked for is done
    /// first. On failure every object taken goes back.
    #[cold]
    #[inline(never)]
    fn alloc_bulk_slow(
        &self,
        c: &KmemCache,
        gfp: Gfp,
        objs: &mut [NonNull<u8>],
        mut filled: usize,
    ) -> Result<(), SlabError> {
        let cpu = self.buddy().cpu();
        let mut reclaimed = false;
        while filled < objs.len() {
            // As in cache_alloc_refill: a point where an interrupt may land.
            cpu.interrupt_point();
            let held = {
                let irq = cpu.irq_guard();
                let rest = &mut objs[filled..];
                c.arrays().with(&irq, |ac, st| {
                    let drained = if st.drain_requested() {
                        st.drain.store(false, Ordering::Relaxed);
                        ac.with_lifo(st, |a| a.take_oldest(usize::MAX))
                    } else {
                        ObjBatch::new()
                    };
                    ac.touched = true;
                    let batch = ac.batchcount.max(rest.len());
                    let got = ac.with_lifo(st, |a| {
                        let mut got = hand_out_top(a, rest);
                        while got < rest.len() {
                            self.refill(c, a, batch, &irq);
                            if a.is_empty() {
                                break;
                            }
                            got += hand_out_top(a, &mut rest[got..]);
                        }
                        got
                    });
                    (got, drained)
                })
            };
            let step = match held {
                Some((got, drained)) => {
                    if !drained.is_empty() {
                        self.free_objects(c, drained.as_slice());
                    }
                    filled += got;
                    if filled == objs.len() {
                        break;
                    }
                    // The shared array and the slabs are dry.
                    self.grow(c, gfp)
                }
                // This CPU's array is already held (a re-entry): one object
                // at a time from the slabs, as a single allocation takes it.
                None => self.take_object(c, gfp, true).map(|e| {
                    objs[filled] = mark_allocated(e);
                    filled += 1;
                }),
            };
            if let Err(e) = step {
                // Dry: give back what the caches hold idle, once, if the
                // caller may wait (as `alloc_slow` does).
                if e == SlabError::OutOfMemory && gfp.contains(Gfp::WAIT) && !reclaimed {
                    reclaimed = true;
                    if self.reclaim() > 0 {
                        continue;
                    }
                }
                self.give_back(c, &objs[..filled]);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A bulk allocation under `debug`: one `kmem_cache_alloc` at a time
    /// (each object checked and its red zones written in transit), all or
    /// nothing.
    #[cold]
    fn alloc_bulk_each(
        &self,
        c: &KmemCache,
        gfp: Gfp,
        objs: &mut [NonNull<u8>],
    ) -> Result<(), SlabError> {
        for i in 0..objs.len() {
            match self.alloc_object(c, gfp, true, c.geo().obj_size) {
                Ok(p) => objs[i] = p,
                Err(e) => {
                    self.give_back(c, &objs[..i]);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Frees the objects a failed bulk allocation had taken.
    #[cold]
    fn give_back(&self, c: &KmemCache, objs: &[NonNull<u8>]) {
        for p in objs {
            let obj = p.as_ptr().addr();
            let r = self.free_located(self.locate_trusted(c, obj), obj);
            debug_assert!(r.is_ok(), "an object just handed out goes back");
        }
    }

    /// Frees the objects of `objs` to `cache`, in order (Linux's
    /// `kmem_cache_free_bulk`). Each element is checked as
    /// [`Self::kmem_cache_free`] checks its pointer; the first it would
    /// refuse (foreign, interior, another cache's object, a large kmalloc
    /// block, a cache descriptor, already free — an element repeated in the
    /// slice included — or, under `debug`, damaged) stops the call with its
    /// index: every element before it is freed, it and every one after it
    /// are untouched, and nothing else changed (see [`BulkFreeError`]).
    #[inline]
    pub fn kmem_cache_free_bulk(
        &self,
        cache: Cache<'a>,
        objs: &[NonNull<u8>],
    ) -> Result<(), BulkFreeError> {
        let c = self
            .cache(cache)
            .map_err(|error| BulkFreeError { index: 0, error })?;
        let mut i = 0;
        loop {
            if !cfg!(feature = "debug") {
                i += self.free_bulk_array(c, &objs[i..]);
            }
            let Some(&p) = objs.get(i) else {
                return Ok(());
            };
            if !cfg!(feature = "debug") {
                // This CPU's array is full (or held): the next elements go
                // straight back to their slabs.
                let n = self.free_bulk_slabs(c, &objs[i..]);
                if n > 0 {
                    i += n;
                    continue;
                }
            }
            // The element is refused (or, under `debug`, every element):
            // the single call says why, with every side effect of a refusal
            // (the cache's error count, a double-free report).
            self.free_bulk_one(cache, c, p)
                .map_err(|error| BulkFreeError { index: i, error })?;
            i += 1;
        }
    }

    /// The part of a bulk free past a full array (Linux's `free_block`, as
    /// SLUB's bulk free gives objects straight to their slab pages): up to
    /// [`FREE_BLOCK`] leading elements of `objs` that are live objects of
    /// `c` claimed, then given back to their slabs under one list-lock
    /// acquisition. The array keeps the objects already in it, the most
    /// recently freed. Returns how many were freed; it stops at the first
    /// element it cannot free and leaves it and the rest untouched.
    #[cold]
    #[inline(never)]
    fn free_bulk_slabs(&self, c: &KmemCache, objs: &[NonNull<u8>]) -> usize {
        // As in the flush: a point where an interrupt may land.
        self.buddy().cpu().interrupt_point();
        let mem = self.buddy().mem();
        let mut located = [(core::ptr::null::<SlabDesc>(), 0); FREE_BLOCK];
        let mut last = None;
        let mut n = 0;
        for (slot, p) in located.iter_mut().zip(objs) {
            let Some((slab, idx, _)) = claim(mem, c, &mut last, p.as_ptr().addr()) else {
                break;
            };
            *slot = (slab as *const SlabDesc, idx);
            n += 1;
        }
        if n > 0 {
            // SAFETY: each slab was found live above and stays so: the
            // objects claimed from it are still counted in use, until
            // `free_block` gives them back.
            self.free_block(c, located[..n].iter().map(|&(s, i)| (unsafe { &*s }, i)));
        }
        n
    }

    /// One element of a bulk free, as [`Self::kmem_cache_free`] frees it
    /// (the handle was checked at the start of the call: `c` is its
    /// cache). Not `kmem_cache_free` itself: a second caller would keep the
    /// compiler from inlining it into the single pair's callers.
    #[cold]
    #[inline(never)]
    fn free_bulk_one(
        &self,
        cache: Cache<'a>,
        c: &KmemCache,
        p: NonNull<u8>,
    ) -> Result<(), SlabError> {
        match self.locate(p.as_ptr()).ok() {
            Some(loc) if core::ptr::eq(loc.cache, c) => self.free_located(loc, p.as_ptr().addr()),
            _ => Err(self.refuse_free(cache, p.as_ptr())),
        }
    }

    /// The fast part of a bulk free: this CPU's array taken once, and the
    /// leading elements of `objs` that are live objects of `c` claimed and
    /// written into its free slots, as many as fit. Returns how many were
    /// freed; it stops at the first element it cannot free here (refused,
    /// or no room left) and leaves it and the rest untouched.
    #[inline(always)]
    fn free_bulk_array(&self, c: &KmemCache, objs: &[NonNull<u8>]) -> usize {
        let mem = self.buddy().mem();
        let irq = self.buddy().cpu().irq_guard();
        c.arrays()
            .with(&irq, |ac, st| {
                ac.with_lifo(st, |a| {
                    let mut last = None;
                    let mut n = 0;
                    for (slot, p) in a.spare().iter_mut().zip(objs) {
                        let obj = p.as_ptr().addr();
                        let Some((_, _, state)) = claim(mem, c, &mut last, obj) else {
                            break;
                        };
                        *slot = [obj, state];
                        n += 1;
                    }
                    a.filled(n);
                    n
                })
            })
            .unwrap_or(0)
    }
}

/// Marks `obj` free if it is the start of a live object of `c`, and gives
/// its slab, its index and the address of its state byte; `None`, with
/// nothing changed, for anything `kmem_cache_free` would refuse. The claim is `kmem_cache_free`'s: plain
/// loads and stores, or one atomic exchange under `hardened`.
///
/// `last` is the slab of the object claimed before in the same bulk free.
/// That slab cannot go away meanwhile: the object claimed from it sits in
/// this CPU's array (held throughout) or in the caller's hands until
/// `free_block` gives it back, so the slab counts it in use. An object inside its buffers (the offset from its
/// first object below the span of `c`'s geometry) is one of its objects,
/// found with no page lookup: the common case, since objects allocated
/// together come from the same slabs (SLUB's bulk free groups by slab page
/// too). Any other is looked up as `kmem_cache_free` would ([`slab_of`]).
#[inline(always)]
fn claim<'s>(
    mem: &MemMap<'_>,
    c: &KmemCache,
    last: &mut Option<&'s SlabDesc>,
    obj: usize,
) -> Option<(&'s SlabDesc, usize, usize)> {
    let found = last.and_then(|s| {
        let (idx, rem) = c.index().split(obj.wrapping_sub(s.s_mem))?;
        Some((s, idx, rem))
    });
    let (slab, idx, rem) = match found {
        Some(f) => f,
        None => {
            let s = slab_of(mem, c, obj)?;
            let (idx, rem) = c.index().split(obj.wrapping_sub(s.s_mem))?;
            (s, idx, rem)
        }
    };
    // The slab's own count as well, as in `locate`: a wild free racing with
    // the page changing hands.
    if rem != c.geo().obj_offset || idx >= slab.num() {
        return None;
    }
    // SAFETY: idx < num, checked above.
    let state = unsafe { slab.state_unchecked(idx) };
    let claimed = if cfg!(feature = "hardened") {
        state
            .compare_exchange(OBJ_ALLOCATED, OBJ_FREE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    } else if state.load(Ordering::Relaxed) == OBJ_ALLOCATED {
        state.store(OBJ_FREE, Ordering::Release);
        true
    } else {
        false
    };
    if !claimed {
        return None;
    }
    *last = Some(slab);
    Some((slab, idx, (state as *const AtomicU8).addr()))
}

/// The slab descriptor of the page `obj` is on, if that page is a slab page
/// of `c` (`locate`'s page checks with the cache known: the owner must be
/// `c` itself, which also rules out a page of the cache of caches — `c` is
/// not it, `cache` refused that handle — and a torn-down page, owner 0).
#[inline(always)]
fn slab_of<'s>(mem: &MemMap<'_>, c: &KmemCache, obj: usize) -> Option<&'s SlabDesc> {
    let page = mem.virt_to_page(VirtAddr::new(obj)).ok()?;
    if !page.flags().contains(PgFlags::SLAB) {
        return None;
    }
    let (owner, index) = (page.owner(), page.index());
    if owner != (c as *const KmemCache).addr() || index == 0 {
        return None;
    }
    // SAFETY: a SLAB page of `c` names its slab descriptor, valid while the
    // page is a slab page (as in `locate`); the caller holds an object of
    // the slab (the one it claims) from here on.
    Some(unsafe { &*(index as *const SlabDesc) })
}

/// Copies up to `out.len()` of the array's most recent entries into `out`,
/// each object marked allocated; returns how many.
#[inline(always)]
fn hand_out_top(a: &mut Lifo<'_>, out: &mut [NonNull<u8>]) -> usize {
    let n = out.len().min(a.len());
    for (o, &e) in out[..n].iter_mut().zip(a.take_top(n)) {
        *o = mark_allocated(e);
    }
    n
}

/// Marks an entry's object allocated (outside `debug`, which checks it in
/// transit: see `hand_out`) and gives its pointer.
#[inline(always)]
fn mark_allocated([obj, state]: Entry) -> NonNull<u8> {
    // SAFETY: an entry holds the address of its object's state byte in its
    // live slab's management area (an AtomicU8), with the provenance the
    // allocator exposed for its RAM.
    let state = unsafe { &*core::ptr::with_exposed_provenance::<AtomicU8>(state) };
    state.store(OBJ_ALLOCATED, Ordering::Relaxed);
    // SAFETY: objects are never at address 0.
    unsafe { NonNull::new_unchecked(core::ptr::with_exposed_provenance_mut(obj)) }
}
