//! The TLB checker: finds a virtual address used after its mapping changed and
//! before the TLB entry was flushed.
//!
//! x86 caches only present translations, so mapping a page that was not mapped
//! needs no flush; removing a mapping or changing its rights does. The checker
//! marks such pages stale until `flush(va)` (for that page) or `flush_all`, and
//! an access to a stale page is a violation: on a real CPU it could go through
//! the old translation.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use kmm_hal::{PAGE_SIZE, VirtAddr};

/// What changed a mapping without a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The mapping was removed.
    Unmap,
    /// The mapping's rights changed.
    Protect,
}

/// Use of an address whose mapping changed and was not flushed since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlbViolation {
    /// The address used.
    pub va: VirtAddr,
    /// The change that was not flushed.
    pub change: Change,
}

impl fmt::Display for TlbViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stale TLB: {} used after {:?} without a TLB flush",
            self.va, self.change
        )
    }
}

impl std::error::Error for TlbViolation {}

#[derive(Default)]
struct State {
    /// Stale page ranges: start -> (end, change). Ranges never overlap.
    stale: BTreeMap<usize, (usize, Change)>,
    violations: Vec<TlbViolation>,
    flushes: u64,
    full_flushes: u64,
}

/// Records page-table changes and TLB flushes, and checks accesses.
#[derive(Default)]
pub struct TlbChecker {
    state: Mutex<State>,
}

impl TlbChecker {
    /// A checker with no stale entries.
    pub fn new() -> TlbChecker {
        TlbChecker::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the mapping of `len` bytes at `va` was removed or changed.
    pub fn changed(&self, va: VirtAddr, len: usize, change: Change) {
        let start = va.as_usize();
        let end = start + len;
        let mut s = self.lock();
        remove_range(&mut s.stale, start, end);
        s.stale.insert(start, (end, change));
    }

    /// Records a flush of the page containing `va`.
    pub fn flush(&self, va: VirtAddr) {
        let start = va.as_usize() & !(PAGE_SIZE - 1);
        let mut s = self.lock();
        s.flushes += 1;
        remove_range(&mut s.stale, start, start + PAGE_SIZE);
    }

    /// Records a flush of every entry.
    pub fn flush_all(&self) {
        let mut s = self.lock();
        s.full_flushes += 1;
        s.stale.clear();
    }

    /// The change not yet flushed for `va`, if any.
    pub fn stale(&self, va: VirtAddr) -> Option<Change> {
        let v = va.as_usize();
        let s = self.lock();
        s.stale
            .range(..=v)
            .next_back()
            .and_then(|(_, &(end, c))| (v < end).then_some(c))
    }

    /// Checks a use of `va`: records and returns a violation if its mapping
    /// changed and was not flushed since.
    pub fn check(&self, va: VirtAddr) -> Result<(), TlbViolation> {
        match self.stale(va) {
            None => Ok(()),
            Some(change) => {
                let v = TlbViolation { va, change };
                self.lock().violations.push(v);
                Err(v)
            }
        }
    }

    /// Every violation recorded so far.
    pub fn violations(&self) -> Vec<TlbViolation> {
        self.lock().violations.clone()
    }

    /// Removes and returns the recorded violations.
    pub fn take_violations(&self) -> Vec<TlbViolation> {
        std::mem::take(&mut self.lock().violations)
    }

    /// How many page ranges are waiting for a flush.
    pub fn pending(&self) -> usize {
        self.lock().stale.len()
    }

    /// Single-page and full flushes recorded so far.
    pub fn flush_counts(&self) -> (u64, u64) {
        let s = self.lock();
        (s.flushes, s.full_flushes)
    }
}

/// Removes `[start, end)` from a set of disjoint ranges, splitting any that
/// straddle its edges.
fn remove_range(map: &mut BTreeMap<usize, (usize, Change)>, start: usize, end: usize) {
    // A range that begins before `start` and reaches into it.
    if let Some((&s0, &(e0, c0))) = map.range(..start).next_back()
        && e0 > start
    {
        map.insert(s0, (start, c0));
        if e0 > end {
            map.insert(end, (e0, c0));
        }
    }
    let inside: Vec<usize> = map.range(start..end).map(|(&s, _)| s).collect();
    for s in inside {
        let (e, c) = map.remove(&s).expect("key just listed");
        if e > end {
            map.insert(end, (e, c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmap_without_flush_is_reported() {
        let t = TlbChecker::new();
        let va = VirtAddr::new(0x10_0000);
        t.changed(va, PAGE_SIZE, Change::Unmap);
        assert_eq!(
            t.check(va),
            Err(TlbViolation {
                va,
                change: Change::Unmap
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
        assert_eq!(t.pending(), 2);
        t.flush_all();
        assert_eq!(t.pending(), 0);
        assert_eq!(t.flush_counts(), (1, 1));
    }
}
