//! The area descriptor (Linux's `vm_struct` and busy `vmap_area` in one):
//! where an area lies, what it maps, and the busy tree that finds it by
//! address.

use core::fmt;
use core::ptr::NonNull;

use intrusive_collections::{KeyAdapter, RBTreeLink, UnsafeRef, intrusive_adapter};
use kmm_hal::{PAGE_SIZE, PhysAddr, VirtAddr};

use crate::free_area::OwnedNode;

/// What an area maps (the flags of `/proc/vmallocinfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AreaKind {
    /// Pages `vmalloc` allocated and owns (`VM_ALLOC`); `vfree` frees them.
    Vmalloc,
    /// Like [`AreaKind::Vmalloc`], zeroed and meant to be mapped to user
    /// space (`vmalloc_user`, `VM_USERMAP`); `vfree` frees it.
    User,
    /// Pages the caller gave to `vmap` and still owns (`VM_MAP`); `vunmap`
    /// unmaps it.
    Vmap,
    /// A device's physical range (`VM_IOREMAP`); `iounmap` unmaps it.
    Ioremap,
    /// An area reserved with `get_vm_area` and nothing mapped by the
    /// allocator; `free_vm_area` gives it back.
    Reserved,
    /// A per-CPU block that `vm_map_ram` carves small mappings from.
    VmapBlock,
    /// A `vm_map_ram` mapping too large for a block; `vm_unmap_ram` unmaps
    /// it.
    MapRam,
}

impl AreaKind {
    /// The flag word `/proc/vmallocinfo` prints.
    pub const fn vmallocinfo_flag(self) -> &'static str {
        match self {
            AreaKind::Vmalloc => "vmalloc",
            AreaKind::User => "vmalloc user",
            AreaKind::Vmap => "vmap",
            AreaKind::Ioremap => "ioremap",
            AreaKind::Reserved => "",
            AreaKind::VmapBlock | AreaKind::MapRam => "vmap",
        }
    }
}

impl fmt::Display for AreaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AreaKind::Vmalloc => "vmalloc",
            AreaKind::User => "vmalloc_user",
            AreaKind::Vmap => "vmap",
            AreaKind::Ioremap => "ioremap",
            AreaKind::Reserved => "get_vm_area",
            AreaKind::VmapBlock => "vm_map_ram block",
            AreaKind::MapRam => "vm_map_ram",
        })
    }
}

/// A live area, as [`crate::Vmalloc::find_vm_area`] and the listing report
/// it (a copy: the descriptor itself stays inside the allocator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmAreaInfo {
    /// The first address.
    pub addr: VirtAddr,
    /// The usable size in bytes (the guard page not included).
    pub size: usize,
    /// What the area maps.
    pub kind: AreaKind,
    /// Pages mapped (for vmalloc and vmap areas; ioremap areas own none).
    pub nr_pages: usize,
    /// The physical address an ioremap area maps.
    pub phys: Option<PhysAddr>,
    /// The caller's tag (Linux prints the caller's symbol).
    pub caller: &'static str,
}

/// The descriptor of a live area, allocated with `kmalloc`.
///
/// It sits in the busy tree while the area is live, then in the purge tree
/// while its addresses wait for the lazy TLB flush; `spare` is the
/// free-tree node its range goes back with, allocated with the area so that
/// giving addresses back never needs memory.
pub(crate) struct VmArea {
    pub(crate) link: RBTreeLink,
    /// The first address.
    pub(crate) addr: usize,
    /// Bytes, guard page included.
    pub(crate) span: usize,
    pub(crate) kind: AreaKind,
    /// The frames mapped, one `u32` frame number each (`kmalloc`ed; enough
    /// for PAE's 64 GiB), or `None` for an area with no page array.
    pub(crate) pfns: Option<NonNull<u32>>,
    pub(crate) nr_pages: usize,
    pub(crate) phys: Option<PhysAddr>,
    pub(crate) caller: &'static str,
    pub(crate) spare: Option<OwnedNode>,
}

impl VmArea {
    /// The usable size (the guard page excluded).
    pub(crate) fn size(&self) -> usize {
        self.span - PAGE_SIZE
    }

    /// The frame numbers of the mapped pages.
    pub(crate) fn pfns(&self) -> &[u32] {
        match self.pfns {
            // SAFETY: `pfns` holds `nr_pages` initialised entries for as long
            // as the descriptor lives (written before the area is published).
            Some(p) => unsafe { core::slice::from_raw_parts(p.as_ptr(), self.nr_pages) },
            None => &[],
        }
    }

    pub(crate) fn info(&self) -> VmAreaInfo {
        VmAreaInfo {
            addr: VirtAddr::new(self.addr),
            size: self.size(),
            kind: self.kind,
            nr_pages: self.nr_pages,
            phys: self.phys,
            caller: self.caller,
        }
    }
}

intrusive_adapter!(
    /// Threads areas on the busy and purge trees, by address.
    pub(crate) AreaAdapter = UnsafeRef<VmArea>: VmArea { link => RBTreeLink }
);

impl<'a> KeyAdapter<'a> for AreaAdapter {
    type Key = usize;
    fn get_key(&self, a: &'a VmArea) -> usize {
        a.addr
    }
}
