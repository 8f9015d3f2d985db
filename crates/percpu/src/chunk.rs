//! A chunk's allocation map (Linux's `pcpu_chunk` with its `alloc_map` and
//! `bound_map`): which [`PCPU_MIN_ALLOC_SIZE`] blocks of the unit are in
//! use, and where each allocation starts. Pure bookkeeping on offsets, no
//! memory touched: the same code serves every chunk, and the tests run it
//! on plain memory under Miri.

use crate::{PCPU_MIN_ALLOC_SIZE, PCPU_UNIT_SIZE};

/// Blocks of a unit.
const BITS: usize = PCPU_UNIT_SIZE / PCPU_MIN_ALLOC_SIZE;
const WORDS: usize = BITS / 64;

/// Why [`AllocMap::free`] refused an offset. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapFreeError {
    /// Inside an allocation, not its start.
    Interior,
    /// No allocation there.
    NotLive,
}

/// The allocation map of one unit: a bit per [`PCPU_MIN_ALLOC_SIZE`] block
/// in use, and a bit where each allocation starts; first fit with
/// alignment. Every chunk's units share one map (they are allocated
/// together).
#[derive(Clone)]
pub struct AllocMap {
    used: [u64; WORDS],
    start: [u64; WORDS],
    free: usize,
    /// No free block below this one (a search hint, Linux's `first_free`).
    first_free: usize,
}

impl Default for AllocMap {
    fn default() -> Self {
        AllocMap::new()
    }
}

impl core::fmt::Debug for AllocMap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AllocMap")
            .field("free", &self.free)
            .field("first_free", &self.first_free)
            .finish_non_exhaustive()
    }
}

impl AllocMap {
    /// A map of a unit with nothing allocated.
    pub const fn new() -> Self {
        AllocMap {
            used: [0; WORDS],
            start: [0; WORDS],
            free: PCPU_UNIT_SIZE,
            first_free: 0,
        }
    }

    /// Free bytes.
    pub fn free_bytes(&self) -> usize {
        self.free
    }

    /// True if nothing is allocated.
    pub fn is_empty(&self) -> bool {
        self.free == PCPU_UNIT_SIZE
    }

    fn test(map: &[u64; WORDS], bit: usize) -> bool {
        map[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn set(map: &mut [u64; WORDS], bit: usize, on: bool) {
        if on {
            map[bit / 64] |= 1 << (bit % 64);
        } else {
            map[bit / 64] &= !(1 << (bit % 64));
        }
    }

    /// The first bit at or after `from` set in the map `word(i)` gives.
    fn next_bit(from: usize, word: impl Fn(usize) -> u64) -> Option<usize> {
        let mut bit = from;
        while bit < BITS {
            let w = word(bit / 64) >> (bit % 64);
            if w == 0 {
                bit = (bit / 64 + 1) * 64;
                continue;
            }
            let b = bit + w.trailing_zeros() as usize;
            return (b < BITS).then_some(b);
        }
        None
    }

    /// The first used block in `[from, to)`.
    fn next_used(&self, from: usize, to: usize) -> Option<usize> {
        Self::next_bit(from, |i| self.used[i]).filter(|&b| b < to)
    }

    /// The first free block at or after `from`.
    fn next_free(&self, from: usize) -> Option<usize> {
        Self::next_bit(from, |i| !self.used[i])
    }

    /// The end of the allocation starting at `bit`: the next block that is
    /// free or starts another allocation.
    fn end_of(&self, bit: usize) -> usize {
        Self::next_bit(bit + 1, |i| !self.used[i] | self.start[i]).unwrap_or(BITS)
    }

    fn mark(&mut self, bit: usize, n: usize) {
        for b in bit..bit + n {
            Self::set(&mut self.used, b, true);
        }
        Self::set(&mut self.start, bit, true);
        self.free -= n * PCPU_MIN_ALLOC_SIZE;
        if bit <= self.first_free {
            self.first_free = self.next_free(bit + n).unwrap_or(BITS);
        }
    }

    /// Marks `[0, size)` as one allocation (the first chunk's static part).
    pub fn reserve_head(&mut self, size: usize) {
        let n = size.div_ceil(PCPU_MIN_ALLOC_SIZE);
        debug_assert!(self.is_empty() && n <= BITS);
        if n > 0 {
            self.mark(0, n);
        }
    }

    /// The lowest offset of `size` free bytes aligned to `align` (a power
    /// of two), marked in use (Linux's `pcpu_alloc_area`); `None` if none.
    pub fn alloc(&mut self, size: usize, align: usize) -> Option<usize> {
        // Also keeps `n * PCPU_MIN_ALLOC_SIZE` below from overflowing.
        if size > self.free {
            return None;
        }
        let n = size.div_ceil(PCPU_MIN_ALLOC_SIZE).max(1);
        let a = (align / PCPU_MIN_ALLOC_SIZE).max(1);
        if n * PCPU_MIN_ALLOC_SIZE > self.free {
            return None;
        }
        let mut bit = self.first_free;
        loop {
            bit = bit.next_multiple_of(a);
            if bit + n > BITS {
                return None;
            }
            match self.next_used(bit, bit + n) {
                None => break,
                Some(u) => bit = self.next_free(u + 1)?,
            }
        }
        self.mark(bit, n);
        Some(bit * PCPU_MIN_ALLOC_SIZE)
    }

    /// Frees the allocation starting at `off` and returns its size (Linux's
    /// `pcpu_free_area`). Refused with nothing changed: an offset inside an
    /// allocation, or where none is.
    pub fn free(&mut self, off: usize) -> Result<usize, MapFreeError> {
        if off >= PCPU_UNIT_SIZE {
            return Err(MapFreeError::NotLive);
        }
        let bit = off / PCPU_MIN_ALLOC_SIZE;
        let used = Self::test(&self.used, bit);
        if !off.is_multiple_of(PCPU_MIN_ALLOC_SIZE) || !Self::test(&self.start, bit) {
            return Err(if used {
                MapFreeError::Interior
            } else {
                MapFreeError::NotLive
            });
        }
        let end = self.end_of(bit);
        for b in bit..end {
            Self::set(&mut self.used, b, false);
        }
        Self::set(&mut self.start, bit, false);
        self.free += (end - bit) * PCPU_MIN_ALLOC_SIZE;
        self.first_free = self.first_free.min(bit);
        Ok((end - bit) * PCPU_MIN_ALLOC_SIZE)
    }

    /// The allocations, as `(offset, size)`, in address order.
    pub fn allocations(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut bit = 0;
        core::iter::from_fn(move || {
            let s = Self::next_bit(bit, |i| self.start[i])?;
            bit = self.end_of(s);
            Some((s * PCPU_MIN_ALLOC_SIZE, (bit - s) * PCPU_MIN_ALLOC_SIZE))
        })
    }

    /// Checks the map's invariants: every start bit is a used block, the
    /// free count matches the map, and no free block lies below the hint.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut used = 0;
        for w in 0..WORDS {
            if self.start[w] & !self.used[w] != 0 {
                return Err("an allocation starts on a free block");
            }
            used += self.used[w].count_ones() as usize;
        }
        if PCPU_UNIT_SIZE - used * PCPU_MIN_ALLOC_SIZE != self.free {
            return Err("the free count does not match the map");
        }
        if self.next_free(0).unwrap_or(BITS) < self.first_free {
            return Err("a free block below first_free");
        }
        let mut prev_end = 0;
        for (off, size) in self.allocations() {
            if off < prev_end || size == 0 {
                return Err("allocations overlap");
            }
            prev_end = off + size;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_with_alignment() {
        let mut m = AllocMap::new();
        assert_eq!(m.alloc(4, 4), Some(0));
        assert_eq!(m.alloc(8, 16), Some(16));
        assert_eq!(m.alloc(4, 4), Some(4), "the hole before the aligned block");
        assert_eq!(m.alloc(1, 1), Some(8));
        m.check().unwrap();
        assert_eq!(m.free(16), Ok(8));
        assert_eq!(m.free(16), Err(MapFreeError::NotLive));
        assert_eq!(m.free(6), Err(MapFreeError::Interior));
        assert_eq!(m.free(4), Ok(4));
        assert_eq!(m.free(0), Ok(4));
        assert_eq!(m.free(8), Ok(4));
        assert!(m.is_empty());
        m.check().unwrap();
    }

    #[test]
    fn adjacent_allocations_keep_their_sizes() {
        let mut m = AllocMap::new();
        let a = m.alloc(12, 4).unwrap();
        let b = m.alloc(12, 4).unwrap();
        assert_eq!(b, a + 12);
        assert_eq!(m.free(b + 4), Err(MapFreeError::Interior));
        assert_eq!(m.free(a), Ok(12));
        assert_eq!(m.free(b), Ok(12));
    }

    #[test]
    fn full_unit_and_head() {
        let mut m = AllocMap::new();
        m.reserve_head(100);
        assert_eq!(m.free_bytes(), PCPU_UNIT_SIZE - 100);
        let mut n = 0;
        while m.alloc(PCPU_UNIT_SIZE / 8, PCPU_UNIT_SIZE / 8).is_some() {
            n += 1;
        }
        assert_eq!(n, 7, "the first aligned block holds the head");
        assert_eq!(m.alloc(PCPU_UNIT_SIZE, 4), None);
        m.check().unwrap();
    }

    #[test]
    fn huge_sizes_and_alignments_find_nothing() {
        let mut m = AllocMap::new();
        for size in [usize::MAX, usize::MAX - 2, PCPU_UNIT_SIZE + 1] {
            assert_eq!(m.alloc(size, 4), None, "{size:#x}");
        }
        assert_eq!(m.alloc(4, 4), Some(0));
        assert_eq!(m.alloc(4, usize::MAX / 2 + 1), None);
        assert_eq!(m.free_bytes(), PCPU_UNIT_SIZE - 4);
        m.check().unwrap();
    }
}
