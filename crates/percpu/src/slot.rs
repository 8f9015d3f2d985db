//! The chunk slots (Linux's `pcpu_slot[]`): chunks sorted by free bytes, so
//! an allocation tries the fullest chunk that may fit first and the empty
//! ones last.
//!
//! Slot `s` holds the chunks whose free bytes have bit length `s` (free in
//! `[2^(s-1), 2^s)`; slot 0: full), and the last slot the empty chunks. A
//! chunk with at least `size` free bytes is in slot `bit_length(size)` or
//! above, so that is where a search starts.

use crate::{PCPU_MAX_CHUNKS, PCPU_UNIT_SIZE};

/// The number of slots: every bit length below the unit size, and one for
/// empty chunks.
pub const PCPU_NR_SLOTS: usize = PCPU_UNIT_SIZE.trailing_zeros() as usize + 2;

const _: () = assert!(PCPU_MAX_CHUNKS <= 16, "a slot is a 16-bit chunk set");

/// The slot of a chunk with `free` bytes free (Linux's
/// `pcpu_size_to_slot`, with its empty-chunk slot).
pub fn pcpu_size_to_slot(free: usize) -> usize {
    if free >= PCPU_UNIT_SIZE {
        PCPU_NR_SLOTS - 1
    } else {
        (usize::BITS - free.leading_zeros()) as usize
    }
}

/// The chunks of each slot, as sets of chunk indices.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    sets: [u16; PCPU_NR_SLOTS],
}

impl Slots {
    /// Puts chunk `idx` in slot `slot`.
    pub fn insert(&mut self, idx: usize, slot: usize) {
        self.sets[slot] |= 1 << idx;
    }

    /// Takes chunk `idx` out of slot `slot`.
    pub fn remove(&mut self, idx: usize, slot: usize) {
        self.sets[slot] &= !(1 << idx);
    }

    /// The chunks of slots `from..`, fullest slot first.
    pub fn from_slot(&self, from: usize) -> impl Iterator<Item = usize> + '_ {
        self.sets[from.min(PCPU_NR_SLOTS)..]
            .iter()
            .flat_map(|&set| (0..PCPU_MAX_CHUNKS).filter(move |i| set & (1 << i) != 0))
    }

    /// The slot chunk `idx` is in, if any.
    pub fn slot_of(&self, idx: usize) -> Option<usize> {
        self.sets.iter().position(|&s| s & (1 << idx) != 0)
    }

    /// How many slots hold chunk `idx` (1 for a live chunk, 0 otherwise).
    pub fn count_of(&self, idx: usize) -> usize {
        self.sets.iter().filter(|&&s| s & (1 << idx) != 0).count()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn slots_by_free_size() {
        assert_eq!(pcpu_size_to_slot(0), 0);
        assert_eq!(pcpu_size_to_slot(4), 3);
        assert_eq!(pcpu_size_to_slot(PCPU_UNIT_SIZE - 4), PCPU_NR_SLOTS - 2);
        assert_eq!(pcpu_size_to_slot(PCPU_UNIT_SIZE), PCPU_NR_SLOTS - 1);
        let mut s = Slots::default();
        s.insert(2, 5);
        s.insert(1, 9);
        s.insert(0, 5);
        assert_eq!(s.from_slot(4).collect::<Vec<_>>(), [0, 2, 1]);
        assert_eq!(s.from_slot(6).collect::<Vec<_>>(), [1]);
        s.remove(1, 9);
        assert_eq!(s.slot_of(1), None);
    }
}
