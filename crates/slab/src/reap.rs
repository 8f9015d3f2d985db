//! Giving memory back: `kmem_cache_shrink`, periodic reaping, CPU drains.

use core::sync::atomic::{AtomicUsize, Ordering};

use kmm_hal::Cpu;

use crate::SlabError;
use crate::allocator::SlabAllocator;
use crate::cache::{Cache, KmemCache};

/// How much of a CPU's array [`SlabAllocator::drain_array`] gives back.
#[derive(Clone, Copy)]
enum Drain {
    /// Everything (shrink, a drain requested by another CPU).
    All,
    /// A fifth of the limit if untouched since the last reap, else nothing.
    Reap,
}

impl<'a, C: Cpu> SlabAllocator<'a, C> {
    /// Empties this CPU's array and the shared array, asks the other CPUs to
    /// empty theirs at their next use of the cache, and gives every free slab
    /// back to the page allocator (Linux's `kmem_cache_shrink`). Returns the
    /// number of pages given back.
    pub fn kmem_cache_shrink(&self, cache: Cache<'a>) -> Result<usize, SlabError> {
        let c = self.cache(cache)?;
        self.buddy().cpu().interrupt_point();
        let mut pages = self.drain_local(c);
        self.request_drains(c);
        pages += self.drain_shared(c, usize::MAX);
        if !c.keeps_slabs() {
            pages += self.free_slabs(c, usize::MAX);
        }
        Ok(pages)
    }

    /// Shrinks every cache; returns the pages given back. Freeing a slab of a
    /// large-object cache frees its off-slab descriptor into a small cache, so
    /// the caches are swept until a sweep gives nothing back.
    pub fn shrink_all(&self) -> usize {
        self.buddy().cpu().interrupt_point();
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
        let mut pages = 0;
        self.each_cache(|c| {
            pages += self.drain_local(c);
            self.request_drains(c);
            pages += self.drain_shared(c, usize::MAX);
            if !c.keeps_slabs() {
                pages += self.free_slabs(c, usize::MAX);
            }
        });
        pages
    }

    /// The periodic reap a kernel runs on each CPU from a timer (Linux's
    /// `cache_reap`): for every cache, an untouched per-CPU array gives back a
    /// fifth of its limit, the shared array likewise, and some free slabs go
    /// back to the page allocator. Returns the pages given back.
    pub fn reap(&self) -> usize {
        self.buddy().cpu().interrupt_point();
        let mut pages = 0;
        self.each_cache(|c| {
            pages += self.drain_array(c, Drain::Reap);
            pages += self.drain_shared(c, c.tunables().0.div_ceil(5));
            if !c.keeps_slabs() {
                let n = c.geo().num.max(1);
                let budget = c.free_limit().div_ceil(5 * n);
                pages += self.free_slabs(c, budget);
            }
        });
        pages
    }

    /// Every CPU empties its own array of every cache now, as an interrupt
    /// handler (Linux's `drain_cpu_caches`: `on_each_cpu(do_drain)`), through
    /// the page allocator's cross-CPU call. Returns the pages the drains gave
    /// back, or `None` — and nothing is done — when there is no cross-CPU
    /// call or the deadlock rule forbids one here (interrupts off, or inside
    /// an interrupt handler). An array busy on its CPU (an interrupted drain
    /// holds it) is left to its holder.
    pub fn drain_cpu_caches(&self) -> Option<usize> {
        let cpu = self.buddy().cpu();
        let cross = self.buddy().cross_call()?;
        if cpu.irqs_disabled() || cpu.in_interrupt() {
            return None;
        }
        let pages = AtomicUsize::new(0);
        cross.on_each_cpu(&|| {
            let mut n = 0;
            self.each_cache(|c| n += self.drain_local(c));
            pages.fetch_add(n, Ordering::Relaxed);
        });
        Some(pages.into_inner())
    }

    /// Empties the calling CPU's array of `c`.
    fn drain_local(&self, c: &KmemCache) -> usize {
        self.drain_array(c, Drain::All)
    }

    /// Gives objects of the calling CPU's array of `c` back to their slabs
    /// (Linux's `drain_array`), a batch at a time. Returns the pages given
    /// back.
    ///
    /// The array is held pinned by preemption only: interrupts stay as the
    /// caller had them, and there is an interrupt point before each batch. An
    /// interrupt handler that uses the cache meanwhile finds the array held
    /// and takes its objects from, and gives them to, the slab lists. If the
    /// array is already held (this is a re-entry), its holder drains it: this
    /// does nothing.
    fn drain_array(&self, c: &KmemCache, how: Drain) -> usize {
        let cpu = self.buddy().cpu();
        let pin = cpu.preempt_guard();
        c.arrays()
            .with(&pin, |ac, st| {
                // A drain another CPU asked for empties the array whatever
                // `how` says.
                let all = st.drain.swap(false, Ordering::Relaxed);
                let mut left = match how {
                    _ if all => usize::MAX,
                    Drain::All => usize::MAX,
                    Drain::Reap if ac.touched => {
                        ac.touched = false;
                        0
                    }
                    Drain::Reap => ac.limit().div_ceil(5),
                };
                let batch = ac.batchcount;
                let mut pages = 0;
                while left > 0 && st.avail() > 0 {
                    cpu.interrupt_point();
                    let chunk = ac.with_lifo(st, |a| a.take_oldest(left.min(batch)));
                    left -= chunk.len();
                    pages += self.free_objects(c, chunk.as_slice());
                }
                pages
            })
            .unwrap_or(0)
    }

    /// Asks every other CPU to empty its array of `c` at its next use.
    fn request_drains(&self, c: &KmemCache) {
        let pin = self.buddy().cpu().preempt_guard();
        let me = pin.cpu_id();
        for (id, slot) in c.arrays().slots().iter().enumerate() {
            if id != me {
                slot.shared().drain.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Empties CPU `cpu`'s array of `c` from whichever CPU calls (Linux's
    /// drain of a CPU that went offline, and `kmem_cache_destroy`'s).
    ///
    /// # Safety
    /// CPU `cpu` must not be using the cache's arrays, and must not start to
    /// until this returns; no other CPU may drain it at the same time.
    pub(crate) unsafe fn drain_offline_array(&self, c: &KmemCache, cpu: usize) -> usize {
        // SAFETY: forwarded from the caller (`with_offline`'s contract).
        let chunk = unsafe {
            c.arrays().with_offline(cpu, |ac, st| {
                st.drain.store(false, Ordering::Relaxed);
                ac.with_lifo(st, |a| a.take_oldest(usize::MAX))
            })
        };
        chunk.map_or(0, |chunk| self.free_objects(c, chunk.as_slice()))
    }

    /// Empties every array of CPU `cpu` in every cache (Linux's drain when a CPU
    /// goes offline).
    ///
    /// # Safety
    /// CPU `cpu` must not be in the allocator, and must not enter it until this
    /// returns.
    pub unsafe fn drain_offline_cpu(&self, cpu: usize) {
        self.each_cache(|c| {
            // SAFETY: forwarded from the caller.
            unsafe { self.drain_offline_array(c, cpu) };
        });
    }
}
