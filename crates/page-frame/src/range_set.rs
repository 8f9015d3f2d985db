//! [`PfnRange`], a half-open range of frames, and [`RangeSet`]: a small
//! sorted set of disjoint frame ranges, merged when they touch (bootmem's
//! reserved and allocated ranges).

/// A half-open frame-number range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PfnRange {
    /// First frame.
    pub start: u64,
    /// One past the last frame.
    pub end: u64,
}

impl PfnRange {
    /// Number of frames.
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True if empty.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Up to `N` disjoint, non-touching frame ranges, sorted by start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RangeSet<const N: usize> {
    ranges: [PfnRange; N],
    len: usize,
}

/// The set has no room for another separate range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

impl<const N: usize> RangeSet<N> {
    pub(crate) const fn new() -> Self {
        RangeSet {
            ranges: [PfnRange { start: 0, end: 0 }; N],
            len: 0,
        }
    }

    /// The ranges, sorted.
    pub(crate) fn as_slice(&self) -> &[PfnRange] {
        &self.ranges[..self.len]
    }

    /// Adds `r`, merging it with every range it overlaps or touches. Fails,
    /// changing nothing, if it touches none and the set is full.
    pub(crate) fn insert(&mut self, r: PfnRange) -> Result<(), Full> {
        let n = self.len;
        let list = &mut self.ranges;
        let lo = list[..n].partition_point(|x| x.end < r.start);
        let hi = list[..n].partition_point(|x| x.start <= r.end);
        if lo < hi {
            let merged = PfnRange {
                start: list[lo].start.min(r.start),
                end: list[hi - 1].end.max(r.end),
            };
            list[lo] = merged;
            list.copy_within(hi..n, lo + 1);
            self.len = n - (hi - lo) + 1;
        } else {
            if n == N {
                return Err(Full);
            }
            list.copy_within(lo..n, lo + 1);
            list[lo] = r;
            self.len = n + 1;
        }
        Ok(())
    }

    /// The index of the range holding all of `r`, if one does.
    pub(crate) fn holding(&self, r: PfnRange) -> Option<usize> {
        let list = self.as_slice();
        let i = list.partition_point(|x| x.end <= r.start);
        (i < list.len() && list[i].start <= r.start && r.end <= list[i].end).then_some(i)
    }

    /// True if taking `r` out of range `i` (which holds it) needs a new slot.
    pub(crate) fn remove_splits(&self, i: usize, r: PfnRange) -> bool {
        let x = self.ranges[i];
        x.start < r.start && r.end < x.end
    }

    /// Takes `r` out of range `i`, which holds it ([`RangeSet::holding`]).
    /// Fails, changing nothing, if that splits the range and the set is full.
    pub(crate) fn remove(&mut self, i: usize, r: PfnRange) -> Result<(), Full> {
        let x = self.ranges[i];
        debug_assert!(x.start <= r.start && r.end <= x.end);
        let n = self.len;
        match (x.start < r.start, r.end < x.end) {
            (false, false) => {
                self.ranges.copy_within(i + 1..n, i);
                self.len = n - 1;
            }
            (true, false) => self.ranges[i].end = r.start,
            (false, true) => self.ranges[i].start = r.end,
            (true, true) => {
                if n == N {
                    return Err(Full);
                }
                self.ranges.copy_within(i + 1..n, i + 2);
                self.ranges[i].end = r.start;
                self.ranges[i + 1] = PfnRange {
                    start: r.end,
                    end: x.end,
                };
                self.len = n + 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> PfnRange {
        PfnRange { start, end }
    }

    #[test]
    fn insert_merges_and_remove_splits() {
        let mut s = RangeSet::<3>::new();
        s.insert(r(10, 20)).unwrap();
        s.insert(r(30, 40)).unwrap();
        s.insert(r(20, 30)).unwrap();
        assert_eq!(s.as_slice(), &[r(10, 40)]);
        let i = s.holding(r(15, 16)).unwrap();
        s.remove(i, r(15, 16)).unwrap();
        assert_eq!(s.as_slice(), &[r(10, 15), r(16, 40)]);
        assert_eq!(s.holding(r(14, 17)), None, "straddles a gap");
        let i = s.holding(r(16, 18)).unwrap();
        s.remove(i, r(16, 18)).unwrap();
        assert_eq!(s.as_slice(), &[r(10, 15), r(18, 40)]);
        let i = s.holding(r(39, 40)).unwrap();
        s.remove(i, r(39, 40)).unwrap();
        let i = s.holding(r(10, 15)).unwrap();
        s.remove(i, r(10, 15)).unwrap();
        assert_eq!(s.as_slice(), &[r(18, 39)]);
    }

    #[test]
    fn a_full_set_refuses_with_nothing_changed() {
        let mut s = RangeSet::<2>::new();
        s.insert(r(0, 10)).unwrap();
        s.insert(r(20, 30)).unwrap();
        assert_eq!(s.insert(r(40, 50)), Err(Full));
        let i = s.holding(r(3, 4)).unwrap();
        assert!(s.remove_splits(i, r(3, 4)));
        assert_eq!(s.remove(i, r(3, 4)), Err(Full));
        assert_eq!(s.as_slice(), &[r(0, 10), r(20, 30)]);
    }
}
