//! Giving memory back: `kmem_cache_shrink`, periodic reaping, CPU drains.

use core::sync::atomic::Ordering;

use kmm_hal::Cpu;

use crate::SlabError;
use crate::allocator::SlabAllocator;
use crate::cache::{Cache, KmemCache};

impl<'a, C: Cpu> SlabAllocator<'a, C> {
    /// Empties this CPU's array and the shared array, asks the other CPUs to
    /// empty theirs at their next use of the cache, and gives every free slab
    /// back to the page allocator (Linux's `kmem_cache_shrink`). Returns the
    /// number of pages given back.
    pub fn kmem_cache_shrink(&self, cache: Cache<'a>) -> Result<usize, SlabError> {
        let c = self.cache(cache)?;
        let mut pages = self.drain_local(c);
        self.request_drains(c);
        pages += self.drain_shared(c, usize::MAX);
        if !c.keep_slabs {
            pages += self.free_slabs(c, usize::MAX);
        }
        Ok(pages)
    }

    /// Shrinks every cache; returns the pages given back. Freeing a slab of a
    /// large-object cache frees its off-slab descriptor into a small cache, so
    /// the caches are swept until a sweep gives nothing back.
    pub fn shrink_all(&self) -> usize {
        let mut total = 0;
        loop {
            let pages = self.shrink_pass();
            total += pages;
            if pages == 0 {
                return total;
            }
        }
    }

    fn shrink_pass(&self) -> usize {
        let caches = self.chain_snapshot();
        let mut pages = 0;
        for &c in caches.as_slice() {
            // SAFETY: caches on the chain are alive (destroy takes them off under
            // the chain lock before they die; destroying one while shrinking is
            // the caller's race, as in Linux).
            let c = unsafe { &*(c as *const KmemCache) };
            pages += self.drain_local(c);
            self.request_drains(c);
            pages += self.drain_shared(c, usize::MAX);
            if !c.keep_slabs {
                pages += self.free_slabs(c, usize::MAX);
            }
        }
        pages
    }

    /// The periodic reap a kernel runs on each CPU from a timer (Linux's
    /// `cache_reap`): for every cache, an untouched per-CPU array gives back a
    /// fifth of its limit, the shared array likewise, and some free slabs go
    /// back to the page allocator. Returns the pages given back.
    pub fn reap(&self) -> usize {
        let caches = self.chain_snapshot();
        let mut pages = 0;
        for &c in caches.as_slice() {
            // SAFETY: as in `shrink_all`.
            let c = unsafe { &*(c as *const KmemCache) };
            {
                let cpu = self.buddy.cpu();
                let _irq = cpu.irq_guard();
                let pa = c.cpu_array(cpu.id());
                // SAFETY: interrupts off, this CPU's array.
                let ac = unsafe { &mut **pa.ac.get() };
                if ac.touched {
                    ac.touched = false;
                } else {
                    pages += self.free_array(c, ac, ac.limit.div_ceil(5));
                }
            }
            pages += self.drain_shared(c, c.limit.div_ceil(5));
            if !c.keep_slabs {
                let n = c.geo.num.max(1);
                let budget = c.free_limit.div_ceil(5 * n);
                pages += self.free_slabs(c, budget);
            }
        }
        pages
    }

    /// Empties the calling CPU's array of `c`.
    fn drain_local(&self, c: &KmemCache) -> usize {
        let cpu = self.buddy.cpu();
        let _irq = cpu.irq_guard();
        let pa = c.cpu_array(cpu.id());
        pa.drain.store(false, Ordering::Relaxed);
        // SAFETY: interrupts off, this CPU's array.
        let ac = unsafe { &mut **pa.ac.get() };
        self.free_array(c, ac, usize::MAX)
    }

    /// Asks every other CPU to empty its array of `c` at its next use.
    fn request_drains(&self, c: &KmemCache) {
        let me = {
            let cpu = self.buddy.cpu();
            let _g = cpu.preempt_guard();
            cpu.id()
        };
        for id in (0..c.ncpu).filter(|&i| i != me) {
            c.cpu_array(id).drain.store(true, Ordering::Relaxed);
        }
    }

    /// Empties every array of CPU `cpu` in every cache (Linux's drain when a CPU
    /// goes offline).
    ///
    /// # Safety
    /// CPU `cpu` must not be in the allocator, and must not enter it until this
    /// returns.
    pub unsafe fn drain_offline_cpu(&self, cpu: usize) {
        let caches = self.chain_snapshot();
        let _irq = self.buddy.cpu().irq_guard();
        for &c in caches.as_slice() {
            // SAFETY: as in `shrink_all`.
            let c = unsafe { &*(c as *const KmemCache) };
            if cpu < c.ncpu {
                let pa = c.cpu_array(cpu);
                pa.drain.store(false, Ordering::Relaxed);
                // SAFETY: the caller guarantees the owner is not running.
                let ac = unsafe { &mut **pa.ac.get() };
                self.free_array(c, ac, usize::MAX);
            }
        }
    }

    /// The caches on the chain, copied out (at most 256).
    pub(crate) fn chain_snapshot(&self) -> CacheList {
        let chain = self.chain.lock();
        let mut l = CacheList { v: [0; 256], n: 0 };
        for c in chain.0.iter().take(256) {
            l.v[l.n] = c as *const KmemCache as usize;
            l.n += 1;
        }
        l
    }
}

/// Cache addresses copied off the chain.
pub(crate) struct CacheList {
    v: [usize; 256],
    n: usize,
}

impl CacheList {
    pub(crate) fn as_slice(&self) -> &[usize] {
        &self.v[..self.n]
    }
}
