//! [`MockFrames`]: a frame source over a range of simulated RAM that checks what
//! comes back and can be told to run dry.

use std::collections::BTreeSet;

use kmm_hal::{FrameSource, PAGE_SIZE, PhysAddr};

/// Hands out the frames of `[start, end)`, lowest first, and takes them back.
///
/// It panics on a frame given back twice or never handed out — page-table code
/// that does that is broken — and [`MockFrames::fail_after`] makes it return
/// `None` after a number of further allocations.
#[derive(Debug, Clone)]
pub struct MockFrames {
    next: u64,
    end: u64,
    free: Vec<PhysAddr>,
    out: BTreeSet<PhysAddr>,
    budget: Option<usize>,
    allocated: u64,
}

impl MockFrames {
    /// Frames from the page-aligned range `[start, end)`.
    pub fn new(start: PhysAddr, end: PhysAddr) -> MockFrames {
        let s = start.align_up(PAGE_SIZE as u64).unwrap_or(end).as_u64();
        MockFrames {
            next: s,
            end: end.as_u64() & !(PAGE_SIZE as u64 - 1),
            free: Vec::new(),
            out: BTreeSet::new(),
            budget: None,
            allocated: 0,
        }
    }

    /// After `n` more successful allocations, every allocation fails until
    /// [`MockFrames::no_limit`].
    pub fn fail_after(&mut self, n: usize) {
        self.budget = Some(n);
    }

    /// Removes the limit set by [`MockFrames::fail_after`].
    pub fn no_limit(&mut self) {
        self.budget = None;
    }

    /// Frames handed out and not given back.
    pub fn outstanding(&self) -> usize {
        self.out.len()
    }

    /// True if `frame` is handed out.
    pub fn is_outstanding(&self, frame: PhysAddr) -> bool {
        self.out.contains(&frame)
    }

    /// Successful allocations so far.
    pub fn allocations(&self) -> u64 {
        self.allocated
    }
}

// SAFETY: frames come from the machine's simulated RAM, page by page, from a
// range the machine reserved for page tables (so they are page-aligned, in the
// direct map and used by nothing else), and each is handed out once until it
// is given back (`out` tracks them).
unsafe impl FrameSource for MockFrames {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        if let Some(b) = self.budget.as_mut() {
            if *b == 0 {
                return None;
            }
            *b -= 1;
        }
        let f = if let Some(f) = self.free.pop() {
            f
        } else if self.next < self.end {
            self.next += PAGE_SIZE as u64;
            PhysAddr::new(self.next - PAGE_SIZE as u64)
        } else {
            if let Some(b) = self.budget.as_mut() {
                *b += 1;
            }
            return None;
        };
        self.out.insert(f);
        self.allocated += 1;
        Some(f)
    }

    fn free_frame(&mut self, frame: PhysAddr) {
        assert!(
            self.out.remove(&frame),
            "kmm-mock: frame {frame} given back twice or never handed out"
        );
        self.free.push(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_and_reuse() {
        let mut f = MockFrames::new(PhysAddr::new(0x1000), PhysAddr::new(0x4000));
        f.fail_after(2);
        let a = f.alloc_frame().unwrap();
        let b = f.alloc_frame().unwrap();
        assert_eq!(f.alloc_frame(), None);
        f.no_limit();
        let c = f.alloc_frame().unwrap();
        assert_eq!(f.alloc_frame(), None, "range exhausted");
        assert_eq!(
            (a, b, c),
            (
                PhysAddr::new(0x1000),
                PhysAddr::new(0x2000),
                PhysAddr::new(0x3000)
            )
        );
        f.free_frame(b);
        assert_eq!(f.outstanding(), 2);
        assert_eq!(f.alloc_frame(), Some(b));
    }

    #[test]
    #[should_panic(expected = "given back twice")]
    fn double_free_panics() {
        let mut f = MockFrames::new(PhysAddr::new(0), PhysAddr::new(0x2000));
        let a = f.alloc_frame().unwrap();
        f.free_frame(a);
        f.free_frame(a);
    }
}
