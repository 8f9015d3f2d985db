//! [`BootFrames`]: a boot-time frame source over the usable RAM of the memory
//! map — a bump pointer plus a small stack of returned frames. Not the buddy
//! allocator; it only feeds the page tables and the boot checks.

use kmm_hal::{FrameSource, PAGE_SIZE, PhysAddr};

use crate::multiboot::{MAX_REGIONS, MemoryMap, Region};

const PAGE: u64 = PAGE_SIZE as u64;
/// Returned frames kept for reuse; more are dropped (boot only, so that is fine).
const FREE_STACK: usize = 64;

/// A frame source over `[floor, ceiling)` of the usable RAM.
pub struct BootFrames {
    /// Usable ranges, page aligned, clipped, sorted by address.
    usable: [(u64, u64); MAX_REGIONS],
    usable_len: usize,
    /// Every non-usable entry of the memory map: never handed out, even where a
    /// usable entry overlaps it.
    reserved: [(u64, u64); MAX_REGIONS],
    reserved_len: usize,
    /// The range the bump pointer is in, and the pointer.
    cur: usize,
    next: u64,
    free: [PhysAddr; FREE_STACK],
    free_len: usize,
    allocated: usize,
    freed: usize,
}

impl BootFrames {
    /// A frame source over the usable RAM of `map` from `floor` (say, the end of
    /// the kernel and the loader's data) up to `ceiling` (say, the end of low
    /// memory).
    pub fn new(map: &MemoryMap, floor: u64, ceiling: u64) -> BootFrames {
        let mut f = BootFrames {
            usable: [(0, 0); MAX_REGIONS],
            usable_len: 0,
            reserved: [(0, 0); MAX_REGIONS],
            reserved_len: 0,
            cur: 0,
            next: 0,
            free: [PhysAddr::ZERO; FREE_STACK],
            free_len: 0,
            allocated: 0,
            freed: 0,
        };
        for r in map.regions() {
            if r.usable() {
                f.add_usable(r, floor, ceiling);
            } else if r.len > 0 {
                f.reserved[f.reserved_len] = (r.base, r.end());
                f.reserved_len += 1;
            }
        }
        // Insertion sort: the map is short and usually sorted already.
        for i in 1..f.usable_len {
            let mut j = i;
            while j > 0 && f.usable[j - 1].0 > f.usable[j].0 {
                f.usable.swap(j - 1, j);
                j -= 1;
            }
        }
        f.next = if f.usable_len > 0 { f.usable[0].0 } else { 0 };
        f
    }

    fn add_usable(&mut self, r: &Region, floor: u64, ceiling: u64) {
        let start = r.base.max(floor).next_multiple_of(PAGE);
        let end = r.end().min(ceiling) & !(PAGE - 1);
        if start < end {
            self.usable[self.usable_len] = (start, end);
            self.usable_len += 1;
        }
    }

    /// The end of the reserved entry that overlaps the page at `pa`, if any.
    fn reserved_end(&self, pa: u64) -> Option<u64> {
        self.reserved[..self.reserved_len]
            .iter()
            .find(|&&(s, e)| s < pa + PAGE && pa < e)
            .map(|&(_, e)| e)
    }

    /// Frames handed out and not returned.
    pub fn in_use(&self) -> usize {
        self.allocated - self.freed
    }

    /// Frames handed out in total.
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    /// The bump pointer: no frame at or above it has been handed out.
    pub fn high_water(&self) -> u64 {
        self.next
    }

    /// Every physical range `[start, end)` the bump pointer has passed over:
    /// each frame ever handed out (page tables included, and frames returned
    /// since) lies in one. The ranges skip no usable frame below the pointer, so
    /// reserving them keeps every table page away from the page allocator.
    pub fn used_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let next = self.next;
        self.usable[..self.usable_len]
            .iter()
            .map(move |&(s, e)| (s, e.min(next)))
            .filter(|&(s, e)| s < e)
    }

    /// The bytes of RAM the source can hand out in total.
    pub fn capacity(&self) -> u64 {
        self.usable[..self.usable_len]
            .iter()
            .map(|&(s, e)| e - s)
            .sum()
    }
}

// SAFETY: frames come from the multiboot map's usable RAM above the kernel
// image and modules, page-aligned and below the identity/direct map's end, each
// handed out once (a bump pointer) until it is given back to the free stack.
unsafe impl FrameSource for BootFrames {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        if self.free_len > 0 {
            self.free_len -= 1;
            self.allocated += 1;
            return Some(self.free[self.free_len]);
        }
        while self.cur < self.usable_len {
            let (_, end) = self.usable[self.cur];
            if self.next + PAGE > end {
                self.cur += 1;
                if let Some(&(start, _)) = self.usable.get(self.cur) {
                    self.next = self.next.max(start);
                }
                continue;
            }
            if let Some(skip_to) = self.reserved_end(self.next) {
                self.next = skip_to.next_multiple_of(PAGE);
                continue;
            }
            let pa = self.next;
            self.next += PAGE;
            self.allocated += 1;
            return Some(PhysAddr::new(pa));
        }
        None
    }

    fn free_frame(&mut self, frame: PhysAddr) {
        self.freed += 1;
        if self.free_len < FREE_STACK {
            self.free[self.free_len] = frame;
            self.free_len += 1;
        }
    }
}
