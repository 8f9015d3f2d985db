//! [`aligned_blocks`]: how a run of free frames splits into buddy blocks.

use crate::MAX_ORDER;

/// The buddy blocks a run of free frames `[start, end)` forms when fully
/// coalesced: from `start` on, each time the largest block (up to
/// `MAX_ORDER - 1`) that is aligned to its size and fits before `end`. Yields
/// `(first frame, order)`. The allocator hands boot memory over this way, and
/// tests use it as the ideal a fully merged zone must match.
pub fn aligned_blocks(start: usize, end: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut s = start;
    core::iter::from_fn(move || {
        if s >= end {
            return None;
        }
        let align = if s == 0 {
            MAX_ORDER - 1
        } else {
            s.trailing_zeros() as usize
        };
        let fit = (usize::BITS - 1 - (end - s).leading_zeros()) as usize;
        let order = align.min(fit).min(MAX_ORDER - 1);
        let block = (s, order);
        s += 1 << order;
        Some(block)
    })
}

#[cfg(test)]
mod tests {
    use super::aligned_blocks;

    #[test]
    fn splits_at_alignment_and_end() {
        let v: [(usize, usize); 4] = [(3, 0), (4, 2), (8, 3), (16, 0)];
        assert!(aligned_blocks(3, 17).eq(v));
        assert!(aligned_blocks(0, 4096).eq([(0, 10), (1024, 10), (2048, 10), (3072, 10)]));
        assert_eq!(aligned_blocks(5, 5).count(), 0);
    }
}
