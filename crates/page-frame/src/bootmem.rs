//! [`Bootmem`]: the early allocator that places `mem_map` and the zone structures
//! before the buddy allocator exists (Linux's bootmem).

use core::fmt;

use kmm_hal::{FrameSource, PAGE_SIZE, PhysAddr};

use crate::memory_map::{Region, RegionKind};
use crate::range_set::{PfnRange, RangeSet};

/// Reserved ranges a [`Bootmem`] can track (merged when adjacent).
pub const MAX_RESERVED: usize = 64;

/// Why bootmem could not do something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootmemError {
    /// No usable low memory left for the request.
    OutOfMemory,
    /// More than [`MAX_RESERVED`] separate reserved ranges.
    TooManyRanges,
    /// A zero or overflowing size, or an alignment that is not a power of two.
    BadRequest,
    /// The memory map has no usable RAM.
    NoMemory,
    /// A free of pages [`Bootmem::alloc`] did not hand out (or handed out and
    /// took back already), or not page-aligned.
    NotAllocated,
}

impl fmt::Display for BootmemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootmemError::OutOfMemory => "bootmem: out of low memory",
            BootmemError::TooManyRanges => "bootmem: too many reserved ranges",
            BootmemError::BadRequest => "bootmem: bad size or alignment",
            BootmemError::NoMemory => "bootmem: the memory map has no usable RAM",
            BootmemError::NotAllocated => "bootmem: freeing pages it did not hand out",
        })
    }
}

impl core::error::Error for BootmemError {}

/// The early boot allocator over the firmware memory map.
///
/// It hands out page-aligned physical ranges of low memory (below `lowmem_end`,
/// so they are direct-mapped), from `goal` (16 MiB, above ZONE_DMA, as Linux
/// prefers) upwards, falling back below the goal. Every allocation and every
/// [`Bootmem::reserve`] becomes a reserved range; the frame 0 (the BIOS data
/// page) is reserved from the start, as on Linux.
#[derive(Clone)]
pub struct Bootmem<'m> {
    regions: &'m [Region],
    lowmem_end: u64,
    reserved: RangeSet<MAX_RESERVED>,
    /// The ranges `alloc` handed out and nobody gave back (a subset of
    /// `reserved`): what `free` may take back.
    allocs: RangeSet<MAX_RESERVED>,
    /// Frames handed out by `alloc` (accounting).
    allocated: u64,
    goal: u64,
    /// Frames from here on are not RAM to the kernel (beyond what its page
    /// tables can map).
    limit_pfn: u64,
}

impl fmt::Debug for Bootmem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bootmem")
            .field("lowmem_end", &self.lowmem_end)
            .field("reserved", &self.reserved())
            .field("allocated_pages", &self.allocated)
            .finish()
    }
}

impl<'m> Bootmem<'m> {
    /// Bootmem over `regions`, allocating only below `lowmem_end` (bytes).
    pub fn new(regions: &'m [Region], lowmem_end: PhysAddr) -> Result<Bootmem<'m>, BootmemError> {
        if !regions
            .iter()
            .any(|r| r.kind == RegionKind::Usable && r.inner_pfns().0 < r.inner_pfns().1)
        {
            return Err(BootmemError::NoMemory);
        }
        let mut b = Bootmem {
            regions,
            lowmem_end: lowmem_end.as_u64() / PAGE_SIZE as u64,
            reserved: RangeSet::new(),
            allocs: RangeSet::new(),
            allocated: 0,
            goal: (16 << 20) / PAGE_SIZE as u64,
            limit_pfn: u64::MAX,
        };
        b.reserve_pfns(PfnRange { start: 0, end: 1 })?;
        Ok(b)
    }

    /// The memory map.
    pub fn regions(&self) -> &'m [Region] {
        self.regions
    }

    /// The reserved ranges, sorted and merged.
    pub fn reserved(&self) -> &[PfnRange] {
        self.reserved.as_slice()
    }

    /// Frames handed out by [`Bootmem::alloc`] so far.
    pub fn allocated_pages(&self) -> u64 {
        self.allocated
    }

    /// Reserves every page that `[base, base + len)` touches (the kernel image,
    /// the initial page tables, boot modules…). Pages outside RAM are fine.
    pub fn reserve(&mut self, base: PhysAddr, len: u64) -> Result<(), BootmemError> {
        if len == 0 {
            return Ok(());
        }
        let r = Region::new(base.as_u64(), len, RegionKind::Reserved);
        if base.as_u64().checked_add(len).is_none() {
            return Err(BootmemError::BadRequest);
        }
        let (start, end) = r.outer_pfns();
        self.reserve_pfns(PfnRange { start, end })
    }

    fn reserve_pfns(&mut self, r: PfnRange) -> Result<(), BootmemError> {
        self.reserved
            .insert(r)
            .map_err(|_| BootmemError::TooManyRanges)
    }

    /// Gives back pages [`Bootmem::alloc`] handed out (Linux's
    /// `free_bootmem`): every page of `[base, base + len)`, which must start
    /// on a page and lie inside one allocation still out. They become free
    /// for later allocations and for the page allocator. Refused with
    /// nothing changed: a zero or overflowing length
    /// ([`BootmemError::BadRequest`]); pages not handed out by `alloc`, or
    /// given back already, or a `base` off a page boundary
    /// ([`BootmemError::NotAllocated`]: a reservation such as the kernel
    /// image is never freed this way); a range whose removal would split
    /// one of the range lists past [`MAX_RESERVED`]
    /// ([`BootmemError::TooManyRanges`]).
    pub fn free(&mut self, base: PhysAddr, len: u64) -> Result<(), BootmemError> {
        if len == 0 || base.as_u64().checked_add(len).is_none() {
            return Err(BootmemError::BadRequest);
        }
        if !base.as_u64().is_multiple_of(PAGE_SIZE as u64) {
            return Err(BootmemError::NotAllocated);
        }
        let start = base.as_u64() / PAGE_SIZE as u64;
        let r = PfnRange {
            start,
            end: start + len.div_ceil(PAGE_SIZE as u64),
        };
        let a = self.allocs.holding(r).ok_or(BootmemError::NotAllocated)?;
        let v = self.reserved.holding(r).ok_or(BootmemError::NotAllocated)?;
        // Both removals must succeed, or neither is made.
        let full = |splits: bool, len: usize| splits && len == MAX_RESERVED;
        if full(
            self.allocs.remove_splits(a, r),
            self.allocs.as_slice().len(),
        ) || full(
            self.reserved.remove_splits(v, r),
            self.reserved.as_slice().len(),
        ) {
            return Err(BootmemError::TooManyRanges);
        }
        let ok = self.allocs.remove(a, r).is_ok() && self.reserved.remove(v, r).is_ok();
        debug_assert!(ok, "checked above");
        self.allocated -= r.len();
        Ok(())
    }

    /// Ignores RAM from physical address `limit` on (what the kernel's paging
    /// mode cannot map); [`crate::MemMap::new`] applies the layout's limit.
    pub fn limit_ram(&mut self, limit: u64) {
        self.limit_pfn = self.limit_pfn.min(limit / PAGE_SIZE as u64);
    }

    /// The first frame that is not RAM because of [`Bootmem::limit_ram`].
    pub fn limit_pfn(&self) -> u64 {
        self.limit_pfn
    }

    /// True if frame `pfn` is usable RAM: inside a usable region's whole pages,
    /// touching no other region, below the limit.
    pub fn is_ram(&self, pfn: u64) -> bool {
        if pfn >= self.limit_pfn {
            return false;
        }
        let mut usable = false;
        for r in self.regions {
            if r.kind == RegionKind::Usable {
                let (s, e) = r.inner_pfns();
                usable |= s <= pfn && pfn < e;
            } else {
                let (s, e) = r.outer_pfns();
                if s <= pfn && pfn < e {
                    return false;
                }
            }
        }
        usable
    }

    /// The next frame after `pfn` where RAM status may change: the nearest
    /// region edge or the limit (`u64::MAX` if none).
    fn next_boundary(&self, pfn: u64) -> u64 {
        let mut b = if self.limit_pfn > pfn {
            self.limit_pfn
        } else {
            u64::MAX
        };
        for r in self.regions {
            let (s, e) = if r.kind == RegionKind::Usable {
                r.inner_pfns()
            } else {
                r.outer_pfns()
            };
            if s > pfn {
                b = b.min(s);
            }
            if e > pfn {
                b = b.min(e);
            }
        }
        b
    }

    /// The first run of RAM frames at or after `from` (what [`Bootmem::is_ram`]
    /// says frame by frame, found region edge by region edge).
    pub fn next_ram_run(&self, from: u64) -> Option<PfnRange> {
        let mut s = from;
        while !self.is_ram(s) {
            s = self.next_boundary(s);
            if s == u64::MAX {
                return None;
            }
        }
        let mut e = s;
        loop {
            e = self.next_boundary(e);
            if e == u64::MAX || !self.is_ram(e) {
                break;
            }
        }
        Some(PfnRange { start: s, end: e })
    }

    /// The first run of free frames (RAM, not reserved) at or after `from`.
    pub fn next_free_run(&self, from: u64) -> Option<PfnRange> {
        let mut from = from;
        loop {
            let run = self.next_ram_run(from)?;
            let rs = self.reserved();
            let mut s = run.start;
            let mut i = rs.partition_point(|r| r.end <= s);
            while i < rs.len() && rs[i].start <= s {
                s = s.max(rs[i].end);
                i += 1;
            }
            if s >= run.end {
                from = run.end;
                continue;
            }
            let e = if i < rs.len() {
                run.end.min(rs[i].start)
            } else {
                run.end
            };
            return Some(PfnRange { start: s, end: e });
        }
    }

    /// True if frame `pfn` is reserved (by [`Bootmem::reserve`] or an
    /// allocation).
    pub fn is_reserved(&self, pfn: u64) -> bool {
        let rs = self.reserved();
        let i = rs.partition_point(|r| r.end <= pfn);
        i < rs.len() && rs[i].start <= pfn
    }

    /// True if frame `pfn` can be handed to the page allocator.
    pub fn is_free(&self, pfn: u64) -> bool {
        self.is_ram(pfn) && !self.is_reserved(pfn)
    }

    /// Where the next candidate after a blocked frame `pfn` starts.
    fn skip(&self, pfn: u64) -> u64 {
        let rs = self.reserved();
        let i = rs.partition_point(|r| r.end <= pfn);
        if i < rs.len() && rs[i].start <= pfn {
            rs[i].end
        } else {
            pfn + 1
        }
    }

    /// Allocates `size` bytes (rounded up to pages) aligned to `align` bytes (at
    /// least a page), in low memory, and reserves them.
    pub fn alloc(&mut self, size: usize, align: usize) -> Result<PhysAddr, BootmemError> {
        if size == 0 || !align.is_power_of_two() {
            return Err(BootmemError::BadRequest);
        }
        let pages = (size as u64).div_ceil(PAGE_SIZE as u64);
        let align = (align.max(PAGE_SIZE) / PAGE_SIZE) as u64;
        let found = self
            .find(self.goal.min(self.lowmem_end), pages, align)
            .or_else(|| self.find(1, pages, align))
            .ok_or(BootmemError::OutOfMemory)?;
        let r = PfnRange {
            start: found,
            end: found + pages,
        };
        // Room in both lists first, so a refusal changes nothing.
        let mut allocs = self.allocs;
        allocs.insert(r).map_err(|_| BootmemError::TooManyRanges)?;
        self.reserve_pfns(r)?;
        self.allocs = allocs;
        self.allocated += pages;
        Ok(PhysAddr::new(found * PAGE_SIZE as u64))
    }

    /// The first run of `pages` free frames from `from`, aligned to `align`
    /// frames, below the end of low memory.
    fn find(&self, from: u64, pages: u64, align: u64) -> Option<u64> {
        let mut cand = from.next_multiple_of(align);
        while cand.checked_add(pages)? <= self.lowmem_end {
            match (cand..cand + pages).find(|&p| !self.is_free(p)) {
                Some(p) => cand = self.skip(p).next_multiple_of(align),
                None => return Some(cand),
            }
        }
        None
    }
}

// SAFETY: every frame `alloc_frame` returns comes from `Bootmem::alloc`:
// page-aligned, usable RAM below the end of low memory (what the direct map
// maps; page-table code that reaches frames through a smaller map refuses
// the frame as unusable, `MapError::BadFrame`), and reserved from then on,
// so no later `alloc`, no `MemMap`/buddy hand-over and no other caller gets
// it until `free_frame` gives it back. A `free_frame` of a frame this
// bootmem did not hand out is refused by `Bootmem::free` and changes
// nothing.
unsafe impl FrameSource for Bootmem<'_> {
    /// One frame from [`Bootmem::alloc`], for early page tables.
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        self.alloc(PAGE_SIZE, PAGE_SIZE).ok()
    }

    /// [`Bootmem::free`] of one frame. A frame it refuses (not handed out
    /// by this bootmem, or no room to split a range) stays as it was:
    /// reserved, never reused.
    fn free_frame(&mut self, frame: PhysAddr) {
        let _ = self.free(frame, PAGE_SIZE as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> [Region; 4] {
        [
            Region::new(0, 0x9_fc00, RegionKind::Usable),
            Region::new(0x9_fc00, 0x6_0400, RegionKind::Reserved),
            Region::new(
                0x10_0000,
                0x3ff_0000 - 0x10_0000 + 0x123,
                RegionKind::Usable,
            ),
            Region::new(0x200_0800, 0x1000, RegionKind::AcpiNvs),
        ]
    }

    #[test]
    fn ram_and_holes() {
        let m = map();
        let b = Bootmem::new(&m, PhysAddr::new(896 << 20)).unwrap();
        assert!(b.is_reserved(0), "page 0 is the BIOS page");
        assert!(b.is_free(1));
        assert!(
            !b.is_ram(0x9f),
            "partial page at the end of the first region"
        );
        assert!(!b.is_ram(0xa0));
        assert!(b.is_free(0x100));
        assert!(!b.is_ram(0x2000), "ACPI NVS touches it");
        assert!(!b.is_ram(0x2001), "ACPI NVS touches it");
        assert!(b.is_ram(0x2002));
        assert!(b.is_ram(0x3fef));
        assert!(!b.is_ram(0x3ff0), "partial last page");
    }

    #[test]
    fn alloc_prefers_above_dma_and_skips_reserved() {
        let m = map();
        let mut b = Bootmem::new(&m, PhysAddr::new(896 << 20)).unwrap();
        b.reserve(PhysAddr::new(16 << 20), 0x1001).unwrap();
        let a = b.alloc(100, 4096).unwrap();
        assert_eq!(a, PhysAddr::new((16 << 20) + 0x2000));
        let c = b.alloc(0x2000, 0x4000).unwrap();
        assert!(c.is_aligned(0x4000));
        assert!(c.as_u64() >= a.as_u64() + 0x1000);
        assert_eq!(b.allocated_pages(), 3);
        // The NVS hole at 32 MiB is never handed out.
        let big = b.alloc(20 << 20, 4096).unwrap();
        let (s, e) = (big.as_u64() >> 12, (big.as_u64() >> 12) + (20 << 8));
        assert!(!(s..e).contains(&0x2000) && !(s..e).contains(&0x2001));
        assert_eq!(b.alloc(0, 4096), Err(BootmemError::BadRequest));
        assert_eq!(b.alloc(4096, 3), Err(BootmemError::BadRequest));
        assert_eq!(b.alloc(1 << 30, 4096), Err(BootmemError::OutOfMemory));
    }

    #[test]
    fn falls_back_below_the_goal() {
        let m = [Region::new(0, 8 << 20, RegionKind::Usable)];
        let mut b = Bootmem::new(&m, PhysAddr::new(8 << 20)).unwrap();
        let a = b.alloc(4096, 4096).unwrap();
        assert_eq!(a, PhysAddr::new(0x1000));
    }

    #[test]
    fn reserved_ranges_merge() {
        let m = map();
        let mut b = Bootmem::new(&m, PhysAddr::new(896 << 20)).unwrap();
        b.reserve(PhysAddr::new(0x5000), 0x1000).unwrap();
        b.reserve(PhysAddr::new(0x3000), 0x1000).unwrap();
        b.reserve(PhysAddr::new(0x4000), 0x1000).unwrap();
        assert_eq!(
            b.reserved(),
            &[PfnRange { start: 0, end: 1 }, PfnRange { start: 3, end: 6 }]
        );
        for i in 0..MAX_RESERVED as u64 {
            let _ = b.reserve(PhysAddr::new((0x100 + 2 * i) << 12), 0x1000);
        }
        assert_eq!(b.reserved().len(), MAX_RESERVED);
        assert_eq!(
            b.reserve(PhysAddr::new(0x3000 << 12), 0x1000),
            Err(BootmemError::TooManyRanges)
        );
        // Adjacent to an existing range still fits.
        b.reserve(PhysAddr::new(0x6000), 0x1000).unwrap();
        assert!(b.is_reserved(6));
        assert!(Bootmem::new(&[], PhysAddr::new(1 << 20)).is_err());
    }

    #[test]
    fn runs_agree_with_frame_checks() {
        let m = map();
        let mut b = Bootmem::new(&m, PhysAddr::new(896 << 20)).unwrap();
        b.reserve(PhysAddr::new(0x12_3000), 0x5000).unwrap();
        b.reserve(PhysAddr::new(0x20_0000), 0x1000).unwrap();
        b.limit_ram(0x300_0000);
        let check = |next: &dyn Fn(u64) -> Option<PfnRange>, frame: &dyn Fn(u64) -> bool| {
            let mut from_runs = [false; 0x4000];
            let mut at = 0;
            while let Some(r) = next(at) {
                assert!(r.start >= at && r.end > r.start);
                for p in r.start..r.end.min(0x4000) {
                    from_runs[p as usize] = true;
                }
                at = r.end;
            }
            for p in 0..0x4000u64 {
                assert_eq!(from_runs[p as usize], frame(p), "pfn {p:#x}");
            }
        };
        check(&|p| b.next_ram_run(p), &|p| b.is_ram(p));
        check(&|p| b.next_free_run(p), &|p| b.is_free(p));
    }

    #[test]
    fn ram_above_the_limit_is_ignored() {
        let m = [Region::new(0, 6 << 30, RegionKind::Usable)];
        let mut b = Bootmem::new(&m, PhysAddr::new(896 << 20)).unwrap();
        assert!(b.is_ram((5 << 30) >> 12));
        b.limit_ram(4 << 30);
        assert!(!b.is_ram((4 << 30) >> 12));
        assert!(b.is_ram(((4 << 30) >> 12) - 1));
        assert_eq!(b.limit_pfn(), (4 << 30) >> 12);
    }

    #[test]
    fn free_gives_back_only_what_alloc_handed_out() {
        let m = map();
        let mut b = Bootmem::new(&m, PhysAddr::new(896 << 20)).unwrap();
        b.reserve(PhysAddr::new(0x10_0000), 0x10_0000).unwrap(); // a kernel image
        let a = b.alloc(3 * PAGE_SIZE, PAGE_SIZE).unwrap();
        let pfn = a.as_u64() / PAGE_SIZE as u64;
        let before = b.reserved().to_vec();
        // Refusals change nothing.
        assert_eq!(b.free(a, 0), Err(BootmemError::BadRequest));
        assert_eq!(
            b.free(a, u64::MAX),
            Err(BootmemError::BadRequest),
            "overflows"
        );
        assert_eq!(
            b.free(PhysAddr::new(a.as_u64() + 8), 8),
            Err(BootmemError::NotAllocated)
        );
        assert_eq!(
            b.free(PhysAddr::new(0x10_0000), PAGE_SIZE as u64),
            Err(BootmemError::NotAllocated),
            "the kernel image was reserved, not allocated"
        );
        assert_eq!(
            b.free(PhysAddr::new(a.as_u64()), 4 * PAGE_SIZE as u64),
            Err(BootmemError::NotAllocated)
        );
        assert_eq!(b.reserved(), &before[..]);
        assert_eq!(b.allocated_pages(), 3);
        // The middle page comes back and is handed out again.
        let mid = PhysAddr::new(a.as_u64() + PAGE_SIZE as u64);
        b.free(mid, PAGE_SIZE as u64).unwrap();
        assert!(b.is_free(pfn + 1) && b.is_reserved(pfn) && b.is_reserved(pfn + 2));
        assert_eq!(
            b.free(mid, PAGE_SIZE as u64),
            Err(BootmemError::NotAllocated),
            "twice"
        );
        assert_eq!(b.allocated_pages(), 2);
        assert_eq!(b.alloc(PAGE_SIZE, PAGE_SIZE), Ok(mid));
    }

    #[test]
    fn a_free_that_would_split_past_the_limit_is_refused() {
        let m = map();
        let mut b = Bootmem::new(&m, PhysAddr::new(896 << 20)).unwrap();
        // Frame 0 and 62 separate reservations: 63 ranges.
        for i in 0..62u64 {
            b.reserve(PhysAddr::new((100 + 2 * i) * PAGE_SIZE as u64), 1)
                .unwrap();
        }
        let a = b.alloc(3 * PAGE_SIZE, PAGE_SIZE).unwrap();
        assert_eq!(b.reserved().len(), MAX_RESERVED);
        let before = b.reserved().to_vec();
        let mid = PhysAddr::new(a.as_u64() + PAGE_SIZE as u64);
        assert_eq!(
            b.free(mid, PAGE_SIZE as u64),
            Err(BootmemError::TooManyRanges)
        );
        assert_eq!(b.reserved(), &before[..]);
        // The first page needs no split.
        b.free(a, PAGE_SIZE as u64).unwrap();
        assert!(b.is_free(a.as_u64() / PAGE_SIZE as u64));
    }

    #[test]
    fn bootmem_is_a_frame_source() {
        let m = map();
        let mut b = Bootmem::new(&m, PhysAddr::new(896 << 20)).unwrap();
        let f = b.alloc_frame().unwrap();
        assert!(f.as_u64().is_multiple_of(PAGE_SIZE as u64));
        assert!(b.is_reserved(f.as_u64() / PAGE_SIZE as u64));
        let before = b.reserved().to_vec();
        b.free_frame(PhysAddr::new(0)); // the BIOS page: refused, nothing changes
        assert_eq!(b.reserved(), &before[..]);
        b.free_frame(f);
        assert!(b.is_free(f.as_u64() / PAGE_SIZE as u64));
        assert_eq!(b.alloc_frame(), Some(f));
    }
}
