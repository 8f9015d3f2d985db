//! The physical ranges that must not reach the page allocator: the kernel
//! image and everything the loader left for the kernel to read.

use core::fmt;
use core::ops::Range;

/// What a [`ReservedRange`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReservedKind {
    /// The kernel image (the range the caller passed).
    Kernel,
    /// The multiboot information structure (88 bytes, 116 with the
    /// framebuffer fields of flag bit 12).
    InfoStructure,
    /// The command line, NUL included.
    CommandLine,
    /// The memory-map buffer (`mmap_length` bytes at `mmap_addr`).
    MemoryMap,
    /// The module list (16 bytes per module at `mods_addr`).
    ModuleList,
    /// A module's contents (`mod_start..mod_end`); the index in the list.
    Module(u32),
    /// A module's string, NUL included; the module's index in the list.
    ModuleString(u32),
}

/// One reserved physical range, `start..end`; edges need not be
/// page-aligned (reserve every page the range touches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservedRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What the range holds.
    pub kind: ReservedKind,
}

impl ReservedRange {
    /// `start..end`.
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }
}

/// The ranges [`super::MultibootInfo::reserved`] found: up to `N`, in the
/// order kernel, information structure, command line, memory map, module
/// list, then each module and its string; empty ranges are left out, and
/// ranges past `N` are counted in [`ReservedRanges::dropped`].
///
/// It borrows nothing; hand [`ReservedRanges::ranges`] to
/// [`BootParams::reserved`](crate::BootParams::reserved) (or each range to
/// [`kmm_page_frame::Bootmem::reserve`]) before the page allocator takes the
/// free memory. A `dropped()` above 0 means memory in use would be handed
/// out: treat it as fatal (or ask for a larger `N`).
#[derive(Clone)]
pub struct ReservedRanges<const N: usize = 32> {
    entries: [ReservedRange; N],
    /// `entries`' ranges again, as the slice `BootParams::reserved` takes.
    ranges: [Range<u64>; N],
    len: usize,
    dropped: usize,
}

impl<const N: usize> ReservedRanges<N> {
    pub(super) const fn new() -> ReservedRanges<N> {
        ReservedRanges {
            entries: [ReservedRange {
                start: 0,
                end: 0,
                kind: ReservedKind::Kernel,
            }; N],
            ranges: [const { 0..0 }; N],
            len: 0,
            dropped: 0,
        }
    }

    /// Adds `range` unless it is empty.
    pub(super) fn push(&mut self, kind: ReservedKind, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        match self.entries.get_mut(self.len) {
            Some(slot) => {
                *slot = ReservedRange {
                    start: range.start,
                    end: range.end,
                    kind,
                };
                self.ranges[self.len] = range;
                self.len += 1;
            }
            None => self.dropped += 1,
        }
    }

    /// The ranges, each with what it holds.
    pub fn entries(&self) -> &[ReservedRange] {
        &self.entries[..self.len]
    }

    /// The ranges as `start..end`, in the same order: what
    /// [`BootParams::reserved`](crate::BootParams::reserved) takes.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges[..self.len]
    }

    /// The ranges as `start..end`.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Range<u64>> + '_ {
        self.ranges().iter().cloned()
    }

    /// True if physical address `phys` lies in one of the ranges.
    pub fn contains(&self, phys: u64) -> bool {
        self.iter().any(|r| r.contains(&phys))
    }

    /// Non-empty ranges that did not fit in `N`.
    pub fn dropped(&self) -> usize {
        self.dropped
    }
}

impl<const N: usize> fmt::Debug for ReservedRanges<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReservedRanges")
            .field("entries", &self.entries())
            .field("dropped", &self.dropped)
            .finish()
    }
}
