//! The vmalloc address space (Linux's `vmap_area_root`, `free_vmap_area_root`
//! and `purge_vmap_area_root`): busy areas by address, free ranges in the
//! augmented tree, and the lazily freed areas waiting for one TLB flush.

use intrusive_collections::Bound;

use intrusive_collections::{RBTree, UnsafeRef};

use crate::area::{AreaAdapter, VmArea};
use crate::free_area::{FreeAreas, Released};

/// What lies at an address of the vmalloc range.
pub(crate) enum Lookup<'s> {
    /// A live area starts there.
    Start(&'s VmArea),
    /// The address is inside a live area (guard page included).
    Interior,
    /// No live area covers it.
    None,
}

/// The address space, behind the allocator's `vmap_area_lock`.
pub(crate) struct Space {
    pub(crate) busy: RBTree<AreaAdapter>,
    purge: RBTree<AreaAdapter>,
    /// The free ranges (taken out only when the allocator is dropped).
    pub(crate) free: core::mem::ManuallyDrop<FreeAreas>,
    /// Pages of address space in `purge`.
    pub(crate) lazy_pages: usize,
    /// Live areas.
    pub(crate) nr_busy: usize,
}

// SAFETY: the trees link descriptors that this `Space` owns exclusively (they
// are `kmalloc`ed by the allocator and reached only through the lock that
// holds the `Space`), so moving the `Space` to another thread moves that
// ownership with it.
unsafe impl Send for Space {}

impl Space {
    pub(crate) fn new(free: FreeAreas) -> Space {
        Space {
            busy: RBTree::new(AreaAdapter::new()),
            purge: RBTree::new(AreaAdapter::new()),
            free: core::mem::ManuallyDrop::new(free),
            lazy_pages: 0,
            nr_busy: 0,
        }
    }

    /// What lies at `addr`, in O(log n).
    pub(crate) fn lookup(&self, addr: usize) -> Lookup<'_> {
        match self.busy.upper_bound(Bound::Included(&addr)).get() {
            Some(a) if a.addr == addr => Lookup::Start(a),
            Some(a) if addr < a.addr + a.span => Lookup::Interior,
            _ => Lookup::None,
        }
    }

    /// Publishes a live area.
    pub(crate) fn insert_busy(&mut self, area: UnsafeRef<VmArea>) {
        self.nr_busy += 1;
        self.busy.insert(area);
    }

    /// Takes the live area starting at `addr` out of the busy tree.
    pub(crate) fn remove_busy(&mut self, addr: usize) -> Option<UnsafeRef<VmArea>> {
        let mut c = self.busy.find_mut(&addr);
        let a = c.remove()?;
        self.nr_busy -= 1;
        Some(a)
    }

    /// Parks an unmapped area until the next purge flushes its addresses
    /// (Linux's `free_vmap_area_noflush`). Returns the lazy pages now
    /// waiting.
    pub(crate) fn park(&mut self, area: UnsafeRef<VmArea>) -> usize {
        self.lazy_pages += area.span / kmm_hal::PAGE_SIZE;
        self.purge.insert(area);
        self.lazy_pages
    }

    /// Takes every parked area, and the range that covers them all.
    pub(crate) fn take_parked(&mut self) -> Option<(RBTree<AreaAdapter>, usize, usize)> {
        let first = self.purge.front().get()?.addr;
        let last = self.purge.back().get().map(|a| a.addr + a.span)?;
        self.lazy_pages = 0;
        Some((self.purge.take(), first, last))
    }

    /// Gives a purged area's range back to the free tree, with the node the
    /// area carried; returns the nodes the merge left unused.
    ///
    /// # Safety
    /// `area` is a purged area of this space whose addresses every CPU has
    /// flushed, and whose `spare` node is valid and unlinked.
    pub(crate) unsafe fn release(&mut self, area: &mut VmArea) -> Released {
        let node = area
            .spare
            .take()
            .expect("an area carries its free-tree node");
        match self.free.free(area.addr, area.span, node) {
            Ok(r) => r,
            Err((e, node)) => {
                // The range was taken from this tree and not given back
                // since: a refusal means the tree is corrupt. Leak the node.
                debug_assert!(false, "vmalloc: free tree refused a purged area: {e:?}");
                let _ = node.into_raw();
                Released::default()
            }
        }
    }
}
