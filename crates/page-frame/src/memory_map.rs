//! The boot memory map: what the firmware says each physical range is.

use kmm_hal::PAGE_SIZE;

/// What a range of physical memory is (multiboot / e820 types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegionKind {
    /// Usable RAM.
    Usable,
    /// Reserved by firmware or devices.
    Reserved,
    /// ACPI tables, reclaimable once read (kmm keeps them reserved).
    AcpiReclaimable,
    /// ACPI non-volatile storage.
    AcpiNvs,
    /// Defective RAM.
    Unusable,
}

impl RegionKind {
    /// The kind of a multiboot / e820 memory-map type (1 usable, 3 ACPI
    /// reclaimable, 4 ACPI NVS, 5 bad; anything else reserved).
    pub const fn from_e820(ty: u32) -> RegionKind {
        match ty {
            1 => RegionKind::Usable,
            3 => RegionKind::AcpiReclaimable,
            4 => RegionKind::AcpiNvs,
            5 => RegionKind::Unusable,
            _ => RegionKind::Reserved,
        }
    }
}

/// One entry of the boot memory map. Edges need not be page-aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the range is.
    pub kind: RegionKind,
    /// The NUMA node the range belongs to (0 on a machine without NUMA).
    pub node: u8,
}

impl Region {
    /// A region on node 0.
    pub const fn new(base: u64, len: u64, kind: RegionKind) -> Region {
        Region {
            base,
            len,
            kind,
            node: 0,
        }
    }

    /// The same region on node `node`.
    pub const fn on_node(self, node: u8) -> Region {
        Region { node, ..self }
    }

    /// End (exclusive), saturating at `u64::MAX`.
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.len)
    }

    /// The whole pages inside the region, as a frame-number range (start
    /// rounded up, end rounded down): what usable RAM contributes.
    pub const fn inner_pfns(&self) -> (u64, u64) {
        let p = PAGE_SIZE as u64;
        let start = self.base.div_ceil(p);
        let end = self.end() / p;
        if end > start {
            (start, end)
        } else {
            (start, start)
        }
    }

    /// Every page the region touches, as a frame-number range (start rounded
    /// down, end rounded up): what a reserved range takes away.
    pub const fn outer_pfns(&self) -> (u64, u64) {
        let p = PAGE_SIZE as u64;
        (self.base / p, self.end().div_ceil(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaligned_edges() {
        let r = Region::new(0x1001, 0x3000, RegionKind::Usable);
        assert_eq!(r.inner_pfns(), (2, 4));
        assert_eq!(r.outer_pfns(), (1, 5));
        let tiny = Region::new(0x1001, 0x10, RegionKind::Usable);
        assert_eq!(tiny.inner_pfns(), (2, 2), "no whole page");
        assert_eq!(
            Region::new(u64::MAX - 5, 100, RegionKind::Reserved).end(),
            u64::MAX
        );
        assert_eq!(RegionKind::from_e820(1), RegionKind::Usable);
        assert_eq!(RegionKind::from_e820(2), RegionKind::Reserved);
        assert_eq!(RegionKind::from_e820(7), RegionKind::Reserved);
    }
}
