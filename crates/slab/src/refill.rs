//! Moving objects between a CPU's array and the slabs in batches: refilling
//! an empty array from the shared array or the slabs (Linux's
//! `cache_alloc_refill`), flushing a full one (`cache_flusharray`), and giving
//! objects back to their slabs (`free_block`).

use intrusive_collections::UnsafeRef;
use kmm_hal::{Cpu, IrqGuard};

use crate::allocator::SlabAllocator;
use crate::cache::{ArrayCache, KmemCache};
use crate::slab_desc::{SlabDesc, SlabList};

impl<'a, C: Cpu> SlabAllocator<'a, C> {
    /// Fills an empty array with a batch: from the shared array, else from the
    /// slabs (Linux's `cache_alloc_refill`, without its `cache_grow`: the
    /// caller grows the cache, with this array no longer borrowed, when this
    /// leaves it empty).
    #[cold]
    pub(crate) fn refill(&self, c: &KmemCache, ac: &mut ArrayCache, irq: &IrqGuard<'_, C>) {
        let batch = ac.batchcount;
        {
            let mut sh = c.shared.lock(irq);
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
                    return;
                }
            }
        }
        self.take_from_slabs(c, ac, batch, irq);
    }

    /// Moves up to `batch` objects from the partial, then free, slabs.
    #[cold]
    fn take_from_slabs(
        &self,
        c: &KmemCache,
        ac: &mut ArrayCache,
        batch: usize,
        irq: &IrqGuard<'_, C>,
    ) {
        let mut l = c.lists.lock(irq);
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
    pub(crate) fn flush_array(&self, c: &KmemCache, ac: &mut ArrayCache, irq: &IrqGuard<'_, C>) {
        let batch = ac.batchcount.min(ac.avail);
        {
            let mut sh = c.shared.lock(irq);
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

    /// Empties up to `max` objects of the shared array back to the slabs, a
    /// chunk at a time: each chunk is taken out under the shared array's lock
    /// and given back with that lock dropped, so slabs go back to the page
    /// allocator with no slab lock held. Returns the pages given back.
    pub(crate) fn drain_shared(&self, c: &KmemCache, max: usize) -> usize {
        let cpu = self.buddy.cpu();
        let mut left = max;
        let mut pages = 0;
        while left > 0 {
            let chunk = {
                let mut sh = c.shared.lock_irqsave(cpu);
                if sh.0.is_null() {
                    return pages;
                }
                // SAFETY: as in `refill`.
                let shared = unsafe { &mut *sh.0 };
                let n = shared.avail.min(left).min(64);
                let chunk = shared.entries()[..n].to_owned_array();
                let avail = shared.avail;
                shared.entries().copy_within(n..avail, 0);
                shared.avail -= n;
                chunk
            };
            if chunk.as_slice().is_empty() {
                break;
            }
            left -= chunk.as_slice().len();
            pages += self.free_objects(c, &chunk);
        }
        pages
    }

    /// Returns objects to their slabs; slabs that become free are kept up to
    /// the cache's free limit and given back to the page allocator beyond it
    /// (Linux's `free_block`).
    fn free_objects(&self, c: &KmemCache, objs: &ObjBatch) -> usize {
        let mut doomed = ObjBatch::new();
        {
            let mut l = c.lists.lock_irqsave(self.buddy.cpu());
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
