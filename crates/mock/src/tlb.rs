//! The TLB checker: one simulated TLB per CPU. It finds a virtual address used
//! on a CPU after its mapping changed and before that CPU's TLB entry was
//! flushed — including a flush done on the CPU that made the change but left
//! out on another one (a missed shootdown).
//!
//! x86 caches only present translations, so mapping a page that was not mapped
//! needs no flush; removing a mapping or changing its rights does. A change
//! ([`TlbChecker::changed`]) makes the pages stale on **every** CPU — any CPU
//! may hold the old translation, from use or speculatively — and records which
//! CPU made it. Then:
//!
//! - [`TlbChecker::flush`] and [`TlbChecker::flush_all`] (what
//!   [`kmm_hal::PageTable::flush`] and `flush_all` of the mock's tables call)
//!   clear the stale pages of the **calling** CPU only, as INVLPG and a CR3 or
//!   CR4.PGE reload do;
//! - [`TlbChecker::flush_kernel_range`] and [`TlbChecker::flush_kernel_all`]
//!   (what the mock's [`kmm_hal::KernelTlb`] calls) clear them on every CPU,
//!   and are counted apart ([`TlbChecker::kernel_flushes`]);
//! - [`TlbChecker::check`] (every access through the mock's tables) reports a
//!   use of a page stale on the calling CPU: on a real CPU it could go through
//!   the old translation.
//!
//! The calling CPU is the simulated CPU the thread is bound to
//! ([`crate::MockCpu::bind`]); a thread bound to none — or to an id this
//! checker does not have, a CPU of another machine — counts as CPU 0.
//!
//! Each CPU's stale pages are a map of disjoint page ranges (adjacent ranges
//! with the same change and changing CPU are merged), so a change costs a few
//! tree operations per CPU and a long run of unmaps flushed in one go stays one
//! range.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use kmm_hal::{PAGE_SIZE, VirtAddr};

use crate::cpu;

/// What changed a mapping without a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The mapping was removed.
    Unmap,
    /// The mapping's rights changed.
    Protect,
}

/// Use of an address on a CPU whose TLB was not flushed since the address's
/// mapping changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlbViolation {
    /// The address used.
    pub va: VirtAddr,
    /// The change that was not flushed.
    pub change: Change,
    /// The CPU that used the stale translation.
    pub cpu: usize,
    /// The CPU that made the change.
    pub changed_on: usize,
}

impl fmt::Display for TlbViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stale TLB: CPU {} used {} after {:?} on CPU {} without a TLB flush on CPU {}",
            self.cpu, self.va, self.change, self.changed_on, self.cpu
        )
    }
}

impl std::error::Error for TlbViolation {}

/// One stale range of one CPU's TLB (its start is the map key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stale {
    end: usize,
    change: Change,
    changed_on: usize,
}

impl Stale {
    /// True if `self` and `other` may be one range.
    fn same(&self, other: &Stale) -> bool {
        self.change == other.change && self.changed_on == other.changed_on
    }
}

/// One CPU's stale page ranges: start -> range. Ranges never overlap, and
/// touching ranges with the same change and changing CPU are merged.
type Ranges = BTreeMap<usize, Stale>;

struct State {
    /// Per CPU, indexed by CPU id.
    cpus: Vec<Ranges>,
    violations: Vec<TlbViolation>,
    /// Local single-page and full flushes, every CPU together.
    flushes: u64,
    full_flushes: u64,
    /// Kernel-wide (every CPU) range and full flushes.
    kernel_range_flushes: u64,
    kernel_full_flushes: u64,
}

/// Records page-table changes and TLB flushes, one TLB per simulated CPU, and
/// checks accesses.
///
/// - [`TlbChecker::changed`] (an unmap or protect; mapping a page that was not
///   present needs no flush on x86) makes the pages stale on **every** CPU —
///   any CPU may hold the old translation — and records the CPU that made it.
/// - [`TlbChecker::flush`] and [`TlbChecker::flush_all`] (the mock tables'
///   [`kmm_hal::PageTable::flush`] and `flush_all`) clear the **calling** CPU
///   only, as INVLPG and a CR3 or CR4.PGE reload do.
/// - [`TlbChecker::flush_kernel_range`] and [`TlbChecker::flush_kernel_all`]
///   (the machine's [`kmm_hal::KernelTlb`]) clear every CPU, and are counted
///   apart ([`TlbChecker::kernel_flushes`]).
/// - [`TlbChecker::check`] (every access through the mock's tables) reports a
///   use of a page stale on the calling CPU, naming the address, the change,
///   the CPU that used it and the CPU that made the change.
///
/// The calling CPU is the one the thread is bound to
/// ([`crate::MockCpu::bind`]); a thread bound to none — or to an id this
/// checker does not have, a CPU of another machine — counts as CPU 0.
pub struct TlbChecker {
    state: Mutex<State>,
}

impl Default for TlbChecker {
    /// A checker of one CPU.
    fn default() -> TlbChecker {
        TlbChecker::with_cpus(1)
    }
}

impl fmt::Debug for TlbChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("TlbChecker")
            .field("cpus", &s.cpus.len())
            .field("violations", &s.violations.len())
            .finish_non_exhaustive()
    }
}

impl TlbChecker {
    /// A checker of one CPU with no stale entries.
    pub fn new() -> TlbChecker {
        TlbChecker::default()
    }

    /// A checker of `cpus` CPUs (at least one) with no stale entries; a
    /// [`crate::Machine`] has one for its CPU count.
    pub fn with_cpus(cpus: usize) -> TlbChecker {
        TlbChecker {
            state: Mutex::new(State {
                cpus: (0..cpus.max(1)).map(|_| Ranges::new()).collect(),
                violations: Vec::new(),
                flushes: 0,
                full_flushes: 0,
                kernel_range_flushes: 0,
                kernel_full_flushes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many CPUs have a TLB here.
    pub fn cpus(&self) -> usize {
        self.lock().cpus.len()
    }

    /// The CPU the calling thread runs as, for this checker.
    fn this_cpu(s: &State) -> usize {
        cpu::current_id().filter(|&c| c < s.cpus.len()).unwrap_or(0)
    }

    /// Panics unless `cpu` has a TLB here.
    #[track_caller]
    fn cpu_tlb(s: &State, cpu: usize) -> &Ranges {
        match s.cpus.get(cpu) {
            Some(r) => r,
            None => panic!(
                "kmm-mock: no CPU {cpu} (the TLB checker has {})",
                s.cpus.len()
            ),
        }
    }

    /// The CPU the calling thread counts as: the CPU it is bound to, or 0.
    pub fn current_cpu(&self) -> usize {
        TlbChecker::this_cpu(&self.lock())
    }

    /// Records that the calling CPU removed or changed the mapping of `len`
    /// bytes at `va` (whole pages: a partial page at either end counts). The
    /// pages become stale on every CPU.
    pub fn changed(&self, va: VirtAddr, len: usize, change: Change) {
        let (start, end) = pages(va.as_usize(), va.as_usize().saturating_add(len));
        if start >= end {
            return;
        }
        let mut s = self.lock();
        let stale = Stale {
            end,
            change,
            changed_on: TlbChecker::this_cpu(&s),
        };
        for ranges in &mut s.cpus {
            insert(ranges, start, stale);
        }
    }

    /// Records a flush of the page containing `va` on the calling CPU
    /// (INVLPG; [`kmm_hal::PageTable::flush`]).
    pub fn flush(&self, va: VirtAddr) {
        let start = va.as_usize() & !(PAGE_SIZE - 1);
        let mut s = self.lock();
        s.flushes += 1;
        let cpu = TlbChecker::this_cpu(&s);
        remove(&mut s.cpus[cpu], start, start.saturating_add(PAGE_SIZE));
    }

    /// Records a flush of every entry of the calling CPU
    /// ([`kmm_hal::PageTable::flush_all`]).
    pub fn flush_all(&self) {
        let mut s = self.lock();
        s.full_flushes += 1;
        let cpu = TlbChecker::this_cpu(&s);
        s.cpus[cpu].clear();
    }

    /// Records a flush of `[start, end)` (whole pages) on every CPU (Linux's
    /// `flush_tlb_kernel_range`; [`kmm_hal::KernelTlb::flush_tlb_kernel_range`]).
    pub fn flush_kernel_range(&self, start: VirtAddr, end: VirtAddr) {
        let (start, end) = pages(start.as_usize(), end.as_usize());
        let mut s = self.lock();
        s.kernel_range_flushes += 1;
        if start < end {
            for ranges in &mut s.cpus {
                remove(ranges, start, end);
            }
        }
    }

    /// Counts one kernel-wide flush (a range one, or a full one if `full`):
    /// the machine's [`kmm_hal::KernelTlb`] counts its shootdown here and
    /// flushes each CPU on that CPU ([`TlbChecker::flush_local_range`]).
    pub(crate) fn count_kernel_flush(&self, full: bool) {
        let mut s = self.lock();
        if full {
            s.kernel_full_flushes += 1;
        } else {
            s.kernel_range_flushes += 1;
        }
    }

    /// Clears `[start, end)` (whole pages) from the calling CPU's TLB without
    /// counting a local flush: one CPU's part of a shootdown.
    pub(crate) fn flush_local_range(&self, start: VirtAddr, end: VirtAddr) {
        let (start, end) = pages(start.as_usize(), end.as_usize());
        let mut s = self.lock();
        let cpu = TlbChecker::this_cpu(&s);
        if start < end {
            remove(&mut s.cpus[cpu], start, end);
        }
    }

    /// Clears the calling CPU's whole TLB without counting a local flush:
    /// one CPU's part of a full shootdown.
    pub(crate) fn flush_local_all(&self) {
        let mut s = self.lock();
        let cpu = TlbChecker::this_cpu(&s);
        s.cpus[cpu].clear();
    }

    /// Records a flush of every entry on every CPU (Linux's `flush_tlb_all`;
    /// [`kmm_hal::KernelTlb::flush_tlb_all`]).
    pub fn flush_kernel_all(&self) {
        let mut s = self.lock();
        s.kernel_full_flushes += 1;
        for ranges in &mut s.cpus {
            ranges.clear();
        }
    }

    /// The change not yet flushed for `va` on the calling CPU, if any.
    pub fn stale(&self, va: VirtAddr) -> Option<Change> {
        let s = self.lock();
        lookup(&s.cpus[TlbChecker::this_cpu(&s)], va.as_usize()).map(|st| st.change)
    }

    /// The change not yet flushed for `va` on CPU `cpu`, if any.
    ///
    /// # Panics
    /// If `cpu` is not below [`TlbChecker::cpus`].
    #[track_caller]
    pub fn stale_on(&self, cpu: usize, va: VirtAddr) -> Option<Change> {
        let s = self.lock();
        lookup(TlbChecker::cpu_tlb(&s, cpu), va.as_usize()).map(|st| st.change)
    }

    /// Checks a use of `va` on the calling CPU: records and returns a
    /// violation if its mapping changed and this CPU did not flush it since.
    pub fn check(&self, va: VirtAddr) -> Result<(), TlbViolation> {
        let mut s = self.lock();
        let cpu = TlbChecker::this_cpu(&s);
        check_locked(&mut s, cpu, va)
    }

    /// Checks a use of `va` on CPU `cpu`, as [`TlbChecker::check`] does for the
    /// calling CPU.
    ///
    /// # Panics
    /// If `cpu` is not below [`TlbChecker::cpus`].
    #[track_caller]
    pub fn check_on(&self, cpu: usize, va: VirtAddr) -> Result<(), TlbViolation> {
        let mut s = self.lock();
        let _exists = TlbChecker::cpu_tlb(&s, cpu); // panics if not
        check_locked(&mut s, cpu, va)
    }

    /// Every violation recorded so far.
    pub fn violations(&self) -> Vec<TlbViolation> {
        self.lock().violations.clone()
    }

    /// Removes and returns the recorded violations.
    pub fn take_violations(&self) -> Vec<TlbViolation> {
        std::mem::take(&mut self.lock().violations)
    }

    /// How many pages are waiting for a flush on the calling CPU.
    pub fn pending(&self) -> usize {
        let s = self.lock();
        count_pages(&s.cpus[TlbChecker::this_cpu(&s)])
    }

    /// How many pages are waiting for a flush on CPU `cpu`.
    ///
    /// # Panics
    /// If `cpu` is not below [`TlbChecker::cpus`].
    #[track_caller]
    pub fn pending_on(&self, cpu: usize) -> usize {
        let s = self.lock();
        count_pages(TlbChecker::cpu_tlb(&s, cpu))
    }

    /// Local single-page and full flushes ([`TlbChecker::flush`],
    /// [`TlbChecker::flush_all`]) recorded so far, every CPU together.
    pub fn flush_counts(&self) -> (u64, u64) {
        let s = self.lock();
        (s.flushes, s.full_flushes)
    }

    /// Kernel-wide range and full flushes ([`TlbChecker::flush_kernel_range`],
    /// [`TlbChecker::flush_kernel_all`]) recorded so far.
    pub fn kernel_flush_counts(&self) -> (u64, u64) {
        let s = self.lock();
        (s.kernel_range_flushes, s.kernel_full_flushes)
    }

    /// How many kernel-wide flushes (range or full) were made so far: on a
    /// real SMP machine, each would be one IPI shootdown.
    pub fn kernel_flushes(&self) -> u64 {
        let (range, full) = self.kernel_flush_counts();
        range + full
    }
}

/// A use of `va` on `cpu` (an id below the CPU count), recorded if stale.
fn check_locked(s: &mut State, cpu: usize, va: VirtAddr) -> Result<(), TlbViolation> {
    match lookup(&s.cpus[cpu], va.as_usize()) {
        None => Ok(()),
        Some(st) => {
            let v = TlbViolation {
                va,
                change: st.change,
                cpu,
                changed_on: st.changed_on,
            };
            s.violations.push(v);
            Err(v)
        }
    }
}

/// `[start, end)` widened to whole pages (empty if `end <= start`).
fn pages(start: usize, end: usize) -> (usize, usize) {
    let start = start & !(PAGE_SIZE - 1);
    let end = end
        .checked_next_multiple_of(PAGE_SIZE)
        .unwrap_or(usize::MAX & !(PAGE_SIZE - 1));
    (start, end.max(start))
}

/// The stale range holding `v`, if any.
fn lookup(map: &Ranges, v: usize) -> Option<Stale> {
    map.range(..=v)
        .next_back()
        .and_then(|(_, st)| (v < st.end).then_some(*st))
}

fn count_pages(map: &Ranges) -> usize {
    map.iter().map(|(&s, st)| (st.end - s) / PAGE_SIZE).sum()
}

/// Marks `[start, stale.end)` stale, replacing whatever was recorded there
/// and merging with touching ranges of the same change and CPU.
fn insert(map: &mut Ranges, start: usize, mut stale: Stale) {
    remove(map, start, stale.end);
    let mut start = start;
    if let Some((&s0, st0)) = map.range(..start).next_back()
        && st0.end == start
        && st0.same(&stale)
    {
        start = s0;
    }
    if let Some(st1) = map.get(&stale.end)
        && st1.same(&stale)
    {
        let next = stale.end;
        stale.end = st1.end;
        map.remove(&next);
    }
    map.insert(start, stale);
}

/// Removes `[start, end)` from a set of disjoint ranges, splitting any that
/// straddle its edges.
fn remove(map: &mut Ranges, start: usize, end: usize) {
    // A range that begins before `start` and reaches into it.
    if let Some((&s0, &st0)) = map.range(..start).next_back()
        && st0.end > start
    {
        map.insert(s0, Stale { end: start, ..st0 });
        if st0.end > end {
            map.insert(end, st0);
            return;
        }
    }
    // Ranges that begin inside; only the last can reach past `end`.
    while let Some((&s, &st)) = map.range(start..end).next() {
        map.remove(&s);
        if st.end > end {
            map.insert(end, st);
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockCpu;

    fn page(i: usize) -> VirtAddr {
        VirtAddr::new(0x10_0000 + i * PAGE_SIZE)
    }

    #[test]
    fn unmap_without_flush_is_reported() {
        let t = TlbChecker::new();
        let va = page(0);
        t.changed(va, PAGE_SIZE, Change::Unmap);
        assert_eq!(
            t.check(va),
            Err(TlbViolation {
                va,
                change: Change::Unmap,
                cpu: 0,
                changed_on: 0,
            })
        );
        t.flush(va);
        assert_eq!(t.check(va), Ok(()));
        assert_eq!(t.violations().len(), 1);
    }

    #[test]
    fn flush_splits_a_large_stale_range() {
        let t = TlbChecker::new();
        let va = VirtAddr::new(0x40_0000);
        t.changed(va, 4 << 20, Change::Protect);
        t.flush(VirtAddr::new(0x40_1000));
        assert_eq!(t.stale(VirtAddr::new(0x40_0fff)), Some(Change::Protect));
        assert_eq!(t.stale(VirtAddr::new(0x40_1000)), None);
        assert_eq!(t.stale(VirtAddr::new(0x40_2000)), Some(Change::Protect));
        assert_eq!(t.stale(VirtAddr::new(0x80_0000)), None);
        assert_eq!(t.pending(), 1023);
        t.flush_all();
        assert_eq!(t.pending(), 0);
        assert_eq!(t.flush_counts(), (1, 1));
        assert_eq!(t.kernel_flushes(), 0);
    }

    #[test]
    fn touching_changes_merge_and_a_flush_splits_them_again() {
        let t = TlbChecker::new();
        for i in 0..1000 {
            t.changed(page(i), PAGE_SIZE, Change::Unmap);
        }
        assert_eq!(t.lock().cpus[0].len(), 1, "one range for a run of unmaps");
        assert_eq!(t.pending(), 1000);
        t.flush(page(500));
        assert_eq!(t.lock().cpus[0].len(), 2);
        assert_eq!(t.pending(), 999);
        // A different change does not merge with its neighbours.
        t.changed(page(500), PAGE_SIZE, Change::Protect);
        assert_eq!(t.lock().cpus[0].len(), 3);
        assert_eq!(t.stale(page(500)), Some(Change::Protect));
        // Re-unmapping it joins the three again.
        t.changed(page(500), PAGE_SIZE, Change::Unmap);
        assert_eq!(t.lock().cpus[0].len(), 1);
        assert_eq!(t.pending(), 1000);
    }

    #[test]
    fn a_change_is_stale_on_every_cpu_a_local_flush_clears_one() {
        let cpu = MockCpu::new(3);
        let t = TlbChecker::with_cpus(3);
        let va = page(7);
        {
            let _b = cpu.bind(2).unwrap();
            assert_eq!(t.current_cpu(), 2);
            t.changed(va, PAGE_SIZE, Change::Unmap);
            t.flush(va);
            assert_eq!(t.stale(va), None);
            assert_eq!(t.check(va), Ok(()));
        }
        // Unbound: CPU 0.
        assert_eq!(t.current_cpu(), 0);
        assert_eq!(t.stale(va), Some(Change::Unmap));
        assert_eq!(t.stale_on(1, va), Some(Change::Unmap));
        assert_eq!(t.stale_on(2, va), None);
        assert_eq!(
            t.check_on(1, va),
            Err(TlbViolation {
                va,
                change: Change::Unmap,
                cpu: 1,
                changed_on: 2,
            })
        );
        t.flush_all();
        assert_eq!(t.stale_on(0, va), None);
        assert_eq!(
            (t.pending_on(0), t.pending_on(1), t.pending_on(2)),
            (0, 1, 0)
        );
        assert_eq!(t.kernel_flushes(), 0);
    }

    #[test]
    fn kernel_flushes_clear_every_cpu() {
        let t = TlbChecker::with_cpus(4);
        t.changed(page(0), 10 * PAGE_SIZE, Change::Unmap);
        // Byte-granular bounds cover whole pages: pages 2..=4.
        t.flush_kernel_range(
            VirtAddr::new(page(2).as_usize() + 1),
            VirtAddr::new(page(4).as_usize() + 1),
        );
        for c in 0..4 {
            assert_eq!(t.pending_on(c), 7, "CPU {c}");
            assert_eq!(t.stale_on(c, page(1)), Some(Change::Unmap));
            assert_eq!(t.stale_on(c, page(2)), None);
            assert_eq!(t.stale_on(c, page(4)), None);
            assert_eq!(t.stale_on(c, page(5)), Some(Change::Unmap));
        }
        // An empty range flushes nothing, but is a flush.
        t.flush_kernel_range(page(6), page(6));
        assert_eq!(t.pending_on(3), 7);
        t.flush_kernel_all();
        assert!((0..4).all(|c| t.pending_on(c) == 0));
        assert_eq!(t.kernel_flush_counts(), (2, 1));
        assert_eq!(t.kernel_flushes(), 3);
        assert_eq!(t.flush_counts(), (0, 0));
    }

    #[test]
    fn a_thread_bound_past_the_checkers_cpus_is_cpu_0() {
        let cpu = MockCpu::new(4);
        let t = TlbChecker::with_cpus(2);
        let _b = cpu.bind(3).unwrap();
        assert_eq!(t.current_cpu(), 0);
    }

    #[test]
    #[should_panic(expected = "no CPU 2")]
    fn asking_about_a_missing_cpu_panics() {
        TlbChecker::with_cpus(2).stale_on(2, page(0));
    }

    #[test]
    fn violation_names_both_cpus() {
        let v = TlbViolation {
            va: VirtAddr::new(0x1000),
            change: Change::Protect,
            cpu: 1,
            changed_on: 0,
        };
        let s = v.to_string();
        assert!(s.contains("CPU 1 used"), "{s}");
        assert!(s.contains("Protect on CPU 0"), "{s}");
        assert!(s.contains(&VirtAddr::new(0x1000).to_string()), "{s}");
    }
}
