//! Moving objects between a CPU's array and the slabs in batches: refilling
//! an empty array from the shared array or the slabs (Linux's
//! `cache_alloc_refill`), flushing a full one (`cache_flusharray`), draining
//! the shared array, and giving objects back to their slabs (`free_block`).

use intrusive_collections::UnsafeRef;
use kmm_hal::{Cpu, IrqGuard};

use crate::allocator::SlabAllocator;
use crate::array::{Entry, Lifo, ObjBatch};
use crate::cache::KmemCache;
use crate::slab_desc::{SlabDesc, SlabList};

impl<'a, C: Cpu> SlabAllocator<'a, C> {
    /// Fills an empty array (this CPU's, held by the caller with interrupts
    /// off) with up to `batch` entries: from the shared array, else from the
    /// slabs (Linux's `cache_alloc_refill`, without its `cache_grow`: the
    /// caller grows the cache, with the array released, when this leaves it
    /// empty).
    #[cold]
    pub(crate) fn refill(
        &self,
        c: &KmemCache,
        a: &mut Lifo<'_>,
        batch: usize,
        irq: &IrqGuard<'_, C>,
    ) {
        let batch = batch.min(a.room());
        {
            let mut sh = c.shared().lock(irq);
            let n = batch.min(sh.avail());
            if n > 0 {
                sh.lifo().move_top(a, n);
                return;
            }
        }
        let n = self.take_from_slabs(c, &mut a.spare()[..batch], irq);
        a.filled(n);
    }

    /// One object straight from the slab lists, for a CPU whose array is
    /// already held (a re-entry); `None` if the slabs have no free object.
    #[cold]
    pub(crate) fn take_one(&self, c: &KmemCache, irq: &IrqGuard<'_, C>) -> Option<Entry> {
        let mut one = [[0; 2]];
        (self.take_from_slabs(c, &mut one, irq) == 1).then_some(one[0])
    }

    /// Fills `out` with objects from the partial, then free, slabs; returns
    /// how many it took.
    #[cold]
    fn take_from_slabs(&self, c: &KmemCache, out: &mut [Entry], irq: &IrqGuard<'_, C>) -> usize {
        let mut l = c.lists().lock(irq);
        let mut taken = 0;
        while taken < out.len() {
            let from_partial = !l.partial.is_empty();
            let slab = match (l.partial.front().get(), l.free.front().get()) {
                (Some(s), _) => s as *const SlabDesc,
                (None, Some(s)) => s as *const SlabDesc,
                (None, None) => break,
            };
            // SAFETY: the slab is on one of our lists (lock held).
            let slab = unsafe { &*slab };
            while taken < out.len() {
                let Some(i) = slab.get_obj(&mut l) else { break };
                let obj = slab.s_mem + i * c.geo().buffer_size + c.geo().obj_offset;
                let state = (slab.state(i) as *const core::sync::atomic::AtomicU8).addr();
                out[taken] = [obj, state];
                l.free_objects -= 1;
                taken += 1;
            }
            // Move the slab to the list that fits it now.
            let now = if slab.inuse(&l) == slab.num() {
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
                slab.set_list(now, &mut l);
                match now {
                    SlabList::Full => l.full.push_front(r),
                    _ => l.partial.push_front(r),
                }
            }
        }
        taken
    }

    /// Empties a full array (this CPU's, held by the caller with interrupts
    /// off) by a batch: into the shared array if it has room; else the batch
    /// is taken out and returned, for the caller to give back to its slabs
    /// once it has released the array (Linux's `cache_flusharray`).
    #[cold]
    pub(crate) fn flush(
        &self,
        c: &KmemCache,
        a: &mut Lifo<'_>,
        batch: usize,
        irq: &IrqGuard<'_, C>,
    ) -> ObjBatch {
        let batch = batch.min(a.len());
        {
            let mut sh = c.shared().lock(irq);
            let mut shared = sh.lifo();
            let n = batch.min(shared.room());
            if n > 0 {
                a.move_oldest(&mut shared, n);
                return ObjBatch::new();
            }
        }
        a.take_oldest(batch)
    }

    /// Empties up to `max` objects of the shared array back to the slabs, a
    /// chunk at a time: each chunk is taken out under the shared array's lock
    /// and given back with that lock dropped, so slabs go back to the page
    /// allocator with no slab lock held. Returns the pages given back.
    pub(crate) fn drain_shared(&self, c: &KmemCache, max: usize) -> usize {
        let cpu = self.buddy().cpu();
        let mut left = max;
        let mut pages = 0;
        while left > 0 {
            let chunk = c.shared().lock_irqsave(cpu).lifo().take_oldest(left);
            if chunk.is_empty() {
                break;
            }
            left -= chunk.len();
            pages += self.free_objects(c, chunk.as_slice());
        }
        pages
    }

    /// Returns objects to their slabs; slabs that become free are kept up to
    /// the cache's free limit and given back to the page allocator beyond it,
    /// once the list lock is dropped (Linux's `free_block`, then
    /// `slab_destroy`). Returns the pages given back.
    pub(crate) fn free_objects(&self, c: &KmemCache, objs: &[usize]) -> usize {
        let mut pages = 0;
        for chunk in objs.chunks(ObjBatch::CAP) {
            pages += self.free_block(
                c,
                chunk.iter().map(|&obj| {
                    let loc = self.locate_trusted(c, obj);
                    (loc.slab, loc.idx)
                }),
            );
        }
        pages
    }

    /// Returns at most [`ObjBatch::CAP`] objects of `c`, each given as its
    /// slab and index, to their slabs under one list-lock acquisition
    /// (Linux's `free_block`); slabs that become free beyond the cache's
    /// free limit go back to the page allocator once the lock is dropped.
    /// The objects are the caller's (handed out of their slabs, not in any
    /// array); their state bytes already say free. Returns the pages given
    /// back.
    pub(crate) fn free_block<'s>(
        &self,
        c: &KmemCache,
        objs: impl Iterator<Item = (&'s SlabDesc, usize)>,
    ) -> usize {
        let mut doomed = ObjBatch::new();
        let mut l = c.lists().lock_irqsave(self.buddy().cpu());
        for (slab, idx) in objs {
            let before = slab.list(&l);
            slab.put_obj(idx, &mut l);
            l.free_objects += 1;
            let now = if slab.inuse(&l) == 0 {
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
            if now == SlabList::Free && l.free_objects > c.free_limit() && !c.keeps_slabs() {
                l.free_objects -= slab.num();
                l.slabs -= 1;
                l.reaped += 1;
                doomed.push(slab as *const SlabDesc as usize);
                let _ = UnsafeRef::into_raw(r);
            } else {
                slab.set_list(now, &mut l);
                match now {
                    SlabList::Free => l.free.push_front(r),
                    _ => l.partial.push_front(r),
                }
            }
        }
        drop(l);
        for &s in doomed.as_slice() {
            // SAFETY: the slab was taken off every list above: it is ours
            // alone.
            self.destroy_slab(c, unsafe { &*(s as *const SlabDesc) });
        }
        doomed.len() << c.geo().gfporder
    }
}
