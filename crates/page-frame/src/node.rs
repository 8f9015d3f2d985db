//! [`Node`] (Linux's `pg_data_t`) and the zone spans inside it.

use crate::page::ZoneType;

/// Most NUMA nodes a memory map may describe.
pub const MAX_NUMNODES: usize = 8;

/// The frames a zone spans on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZoneSpan {
    /// First frame.
    pub start_pfn: u64,
    /// Frames spanned, holes included (Linux's `spanned_pages`).
    pub spanned: u64,
    /// Usable RAM frames in the span (Linux's `present_pages`).
    pub present: u64,
}

impl ZoneSpan {
    /// One past the last frame.
    pub const fn end_pfn(&self) -> u64 {
        self.start_pfn + self.spanned
    }

    /// True if `pfn` is in the span.
    pub const fn contains(&self, pfn: u64) -> bool {
        self.start_pfn <= pfn && pfn < self.end_pfn()
    }

    /// True if the zone has no usable frame.
    pub const fn is_empty(&self) -> bool {
        self.present == 0
    }
}

/// A memory node: a range of frames and the zones in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Node {
    /// The node id.
    pub id: usize,
    /// First frame of the node.
    pub start_pfn: u64,
    /// One past the last frame of the node.
    pub end_pfn: u64,
    /// Usable RAM frames on the node.
    pub present: u64,
    /// The zones, indexed by [`ZoneType`] (empty spans for absent zones).
    pub zones: [ZoneSpan; ZoneType::COUNT],
}

impl Node {
    /// The span of zone `z`.
    pub const fn zone(&self, z: ZoneType) -> &ZoneSpan {
        &self.zones[z as usize]
    }

    /// True if the node has any memory.
    pub const fn is_online(&self) -> bool {
        self.end_pfn > self.start_pfn
    }
}
