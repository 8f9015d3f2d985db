//! [`VmallocError`]: why a vmalloc-family call failed. Every failure leaves
//! the allocator as it was: no address, page or page-table frame is lost.

use core::fmt;

use kmm_hal::MapError;

use crate::area::AreaKind;

/// Why a vmalloc, vmap, ioremap or vm_map_ram call, or a free or unmap, was
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmallocError {
    /// A size of zero, one that overflows, or one larger than the vmalloc
    /// range (or, for `vm_map_ram`, than a vmap block).
    BadSize,
    /// No hole in the vmalloc range fits, even after the lazily freed
    /// addresses were purged.
    OutOfAddresses,
    /// The page allocator, kmalloc (for a descriptor or a page array) or the
    /// page-table frame source ran out; everything taken was given back.
    OutOfMemory,
    /// The address is outside the vmalloc range (a direct-map, kmalloc or
    /// user address): this allocator never handed it out.
    Foreign,
    /// The address is not page-aligned.
    Misaligned,
    /// The address lies inside a live area but is not its start.
    Interior,
    /// No live area starts at the address: it was freed already, or never
    /// handed out.
    NotLive,
    /// The area is of another kind than the call frees: `vunmap` of a
    /// vmalloc area, `vfree` of a vmap or ioremap area, `iounmap` of
    /// anything but an ioremap area. `is` is what the area is.
    WrongKind {
        /// The kind of the live area at the address.
        is: AreaKind,
    },
    /// `vmap` was given a page that is not a descriptor of this `mem_map`, or
    /// is free.
    ForeignPage,
    /// `ioremap` of usable RAM that the page allocator manages (map it
    /// through the direct map, or `vmap` its pages, instead).
    RamRefused,
    /// A page-table call failed in a way the allocator does not expect (the
    /// tables were changed behind its back).
    Map(MapError),
    /// An allocation, mapping or unmapping (anything but `vfree`) called in
    /// interrupt context or with interrupts disabled, where it may not wait
    /// for pages or for a kernel-wide TLB flush.
    InInterrupt,
}

impl fmt::Display for VmallocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmallocError::BadSize => f.write_str("size is zero, overflows or exceeds the range"),
            VmallocError::OutOfAddresses => f.write_str("no free range of vmalloc addresses fits"),
            VmallocError::OutOfMemory => f.write_str("out of pages, descriptors or page tables"),
            VmallocError::Foreign => f.write_str("address is outside the vmalloc range"),
            VmallocError::Misaligned => f.write_str("address is not page-aligned"),
            VmallocError::Interior => f.write_str("address is inside an area, not its start"),
            VmallocError::NotLive => f.write_str("no live area starts at the address"),
            VmallocError::WrongKind { is } => write!(f, "the area is a {is} area"),
            VmallocError::ForeignPage => f.write_str("page is not an allocated page of mem_map"),
            VmallocError::RamRefused => f.write_str("ioremap of usable RAM"),
            VmallocError::Map(e) => write!(f, "page tables: {e}"),
            VmallocError::InInterrupt => f.write_str("called in interrupt context"),
        }
    }
}

impl core::error::Error for VmallocError {}
