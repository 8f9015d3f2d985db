//! What a kernel reads: `/proc/slabinfo`-style statistics, the debug
//! reports, and cache validation.

use core::fmt::{self, Write};

use kmm_hal::Cpu;

use crate::allocator::SlabAllocator;
use crate::cache::{Cache, KmemCache};
use crate::debug::{self, DebugReport, Offence};

/// Counts of one cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Objects held by users (not in slabs' free lists nor in arrays).
    pub active_objs: usize,
    /// Objects in all slabs.
    pub num_objs: usize,
    /// Slabs with at least one object handed out.
    pub active_slabs: usize,
    /// All slabs.
    pub num_slabs: usize,
    /// Objects waiting in per-CPU and shared arrays.
    pub in_arrays: usize,
    /// Slabs created and given back since the cache was made.
    pub grown: usize,
    /// Slabs given back.
    pub reaped: usize,
    /// Each slab is `2^gfporder` pages.
    pub gfporder: u32,
}

impl<'a, C: Cpu> SlabAllocator<'a, C> {
    /// The counts of a cache (array contents read without the owning CPUs'
    /// cooperation: exact when they are quiet).
    pub fn cache_stats(&self, cache: Cache<'a>) -> Option<CacheStats> {
        cache.get().map(|c| self.stats_of(c))
    }

    fn stats_of(&self, c: &KmemCache) -> CacheStats {
        // The per-CPU counts are read without their CPUs' cooperation.
        let mut in_arrays: usize = c
            .arrays()
            .slots()
            .iter()
            .map(|slot| slot.shared().avail())
            .sum();
        in_arrays += c.shared().lock_irqsave(self.buddy().cpu()).avail();
        let l = c.lists().lock_irqsave(self.buddy().cpu());
        let num_slabs = l.slabs;
        let free_slabs = l.free.iter().count();
        let num_objs = num_slabs * c.geo().num;
        CacheStats {
            active_objs: num_objs - l.free_objects - in_arrays.min(num_objs - l.free_objects),
            num_objs,
            active_slabs: num_slabs - free_slabs,
            num_slabs,
            in_arrays,
            grown: l.grown,
            reaped: l.reaped,
            gfporder: c.geo().gfporder,
        }
    }

    /// True while CPU `cpu` holds its array of `cache` (inside an allocation,
    /// a free, or a drain by reap or shrink); `None` for a handle that is not
    /// live or a CPU without an array. For diagnostics and tests: code that
    /// re-enters the allocator on that CPU meanwhile (an interrupt handler
    /// that lands while a drain runs with interrupts on, a hook) finds the
    /// array held and takes its objects from, and gives them to, the slab
    /// lists instead.
    pub fn array_busy(&self, cache: Cache<'a>, cpu: usize) -> Option<bool> {
        let c = cache.get()?;
        c.arrays().slots().get(cpu).map(|slot| slot.is_busy())
    }

    /// Every report so far, oldest first (up to the last 16); returns how
    /// many there were in all.
    pub fn reports(&self, out: &mut [Option<DebugReport>; 16]) -> usize {
        self.report_ring().read(self.buddy().cpu(), out)
    }

    /// The most recent report.
    pub fn last_report(&self) -> Option<DebugReport> {
        self.report_ring().last(self.buddy().cpu())
    }

    /// Sets a function called with every report (a kernel prints it).
    ///
    /// The hook's contract: it is called after the report is recorded (so
    /// [`Self::last_report`] already returns it), on the CPU that found the
    /// problem, with no allocator lock held and no CPU's array borrowed —
    /// neither the reports' own locks nor a cache's list lock (reports found
    /// by [`Self::validate_cache`] are made once its lock is dropped). So it
    /// may allocate and free (from any cache, the reported one included),
    /// read the reports, and even cause another report, which calls it
    /// again (nested: a hook that can report must bound its own recursion).
    /// It may run with interrupts disabled when the caller had them so.
    pub fn set_report_hook(&self, hook: Option<fn(&DebugReport)>) {
        self.report_ring().set_hook(self.buddy().cpu(), hook);
    }

    /// Full validation of a cache (the `debug` feature's consistency check,
    /// also available without it for the bookkeeping part): every slab's
    /// counts agree with its state bytes and its list; with `debug`, free
    /// objects keep their poison and allocated ones their red zones. Other
    /// CPUs may allocate and free meanwhile: objects their owners are
    /// handing out or freeing are skipped, and a problem is reported only if
    /// the object fails twice in the same state. Returns the number of
    /// objects checked, or the first problem (also reported).
    pub fn validate_cache(&self, cache: Cache<'a>) -> Result<usize, DebugReport> {
        let c = cache.get().ok_or(DebugReport {
            cache: "?",
            object: 0,
            offence: Offence::Inconsistent,
        })?;
        // The lists are checked under their lock; the problem is reported
        // once the lock is dropped (the hook may allocate from this cache).
        let r = debug::check_lists(c, &c.lists().lock_irqsave(self.buddy().cpu()));
        if let Err(report) = r {
            self.report_ring().record(self.buddy().cpu(), report);
        }
        r
    }

    /// Pages held by all caches' slabs.
    pub fn slab_pages(&self) -> usize {
        let mut pages = 0;
        self.each_cache(|c| {
            pages += c.lists().lock_irqsave(self.buddy().cpu()).slabs << c.geo().gfporder
        });
        pages
    }

    /// Writes `/proc/slabinfo` (version 2.1 format).
    pub fn slabinfo(&self, w: &mut dyn Write) -> fmt::Result {
        writeln!(w, "slabinfo - version: 2.1")?;
        writeln!(
            w,
            "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>"
        )?;
        self.try_each_cache(|c| {
            let s = self.stats_of(c);
            let shared = {
                let sh = c.shared().lock_irqsave(self.buddy().cpu());
                (sh.limit() / c.tunables().1.max(1), sh.avail())
            };
            writeln!(
                w,
                "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} : tunables {:>4} {:>4} {:>4} : slabdata {:>6} {:>6} {:>6}",
                c.name(),
                s.active_objs,
                s.num_objs,
                c.geo().buffer_size,
                c.geo().num,
                1usize << c.geo().gfporder,
                c.tunables().0,
                c.tunables().1,
                shared.0,
                s.active_slabs,
                s.num_slabs,
                shared.1,
            )
        })
    }
}
