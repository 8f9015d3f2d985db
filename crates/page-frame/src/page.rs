//! [`Page`]: the page descriptor (Linux's `struct page`), one per page frame.

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use intrusive_collections::{LinkedListLink, intrusive_adapter};

bitflags::bitflags! {
    /// State bits of a page descriptor (Linux's `PG_*` flags).
    ///
    /// The top eight bits of the flags word are not flags: they hold the page's
    /// zone and node (see [`Page::zone_type`] and [`Page::node`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PgFlags: u32 {
        /// Never handed out: a hole, firmware memory, the kernel image, bootmem
        /// allocations (mem_map itself included).
        const RESERVED = 1 << 0;
        /// Free, heading a block in a buddy free list; `private` holds the order.
        const BUDDY = 1 << 1;
        /// Free, on a per-CPU page list (order 0).
        const PCP = 1 << 2;
        /// Allocated and heading a block from the buddy allocator; `private`
        /// holds the order the block was allocated with.
        const HEAD = 1 << 3;
        /// Owned by the SLAB allocator; the back-pointers name the cache and slab.
        const SLAB = 1 << 4;
        /// In a high-memory zone: no permanent kernel address.
        const HIGHMEM = 1 << 5;
        /// The page's contents are known to be zero.
        const ZEROED = 1 << 6;
        /// Allocated from the reserve below the `min` watermark.
        const RESERVE = 1 << 7;
        /// Heads a block the SLAB allocator's `kmalloc` took from the page
        /// allocator (a large or strongly aligned request): only `kfree` frees
        /// it, the page allocator refuses to.
        const KMALLOC = 1 << 8;
        /// With `SLAB`: the slab holds the SLAB allocator's own objects (cache
        /// descriptors), which no user may free.
        const SLAB_INTERNAL = 1 << 9;
    }
}

/// Bits of the flags word that are [`PgFlags`].
const FLAG_MASK: u32 = (1 << 24) - 1;
/// Where the zone type sits in the flags word.
const ZONE_SHIFT: u32 = 24;
/// Where the node id sits in the flags word.
const NODE_SHIFT: u32 = 26;

/// The zone types of a node, lowest first (Linux's `enum zone_type` on i386).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ZoneType {
    /// Below 16 MiB: reachable by ISA DMA.
    Dma = 0,
    /// Direct-mapped memory above DMA.
    Normal = 1,
    /// Above the direct map: mapped on demand (`kmap`).
    HighMem = 2,
}

impl ZoneType {
    /// Every zone type, lowest first.
    pub const ALL: [ZoneType; 3] = [ZoneType::Dma, ZoneType::Normal, ZoneType::HighMem];
    /// Number of zone types.
    pub const COUNT: usize = 3;

    /// The name Linux prints (`DMA`, `Normal`, `HighMem`).
    pub const fn name(self) -> &'static str {
        match self {
            ZoneType::Dma => "DMA",
            ZoneType::Normal => "Normal",
            ZoneType::HighMem => "HighMem",
        }
    }

    /// The zone type with index `i`.
    pub const fn from_index(i: usize) -> Option<ZoneType> {
        match i {
            0 => Some(ZoneType::Dma),
            1 => Some(ZoneType::Normal),
            2 => Some(ZoneType::HighMem),
            _ => None,
        }
    }
}

impl fmt::Display for ZoneType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A page descriptor. One exists for every page frame in `mem_map`.
///
/// Every field is an atomic or an intrusive link. The words are read and written
/// with relaxed plain loads and stores by whoever owns the page at the time —
/// the buddy allocator under its zone lock or on the owning CPU's per-CPU list,
/// or the holder of an allocated page — so no field costs a locked instruction
/// except the reference count, which other CPUs may take.
#[repr(C)]
pub struct Page {
    /// [`PgFlags`] in the low 24 bits; zone type and node id above.
    flags: AtomicU32,
    /// Reference count (Linux's `_count`): 0 while free, 1 when allocated.
    count: AtomicU32,
    /// The buddy order while free or allocated through the buddy allocator.
    private: AtomicUsize,
    /// Back-pointer: the slab cache of a SLAB page, or the kernel virtual address
    /// of a mapped high-memory page.
    owner: AtomicUsize,
    /// Second back-pointer: the slab of a SLAB page.
    index: AtomicUsize,
    /// Links the page into a free list, a per-CPU list or a slab list (Linux's
    /// `lru`). Only the current owner of the page touches it.
    pub link: LinkedListLink,
}

// SAFETY: all fields but `link` are atomics. `link` (Cell-based) is only touched
// by the page's current owner — the zone lock holder, the CPU whose per-CPU list
// holds it, or the holder of the allocated page — which the owning allocator
// guarantees, so no two threads access it at once.
unsafe impl Sync for Page {}
// SAFETY: as above; a page moves between owners only through those allocators.
unsafe impl Send for Page {}

#[cfg(target_pointer_width = "32")]
static_assertions::const_assert!(core::mem::size_of::<Page>() <= 32);
#[cfg(target_pointer_width = "64")]
static_assertions::const_assert!(core::mem::size_of::<Page>() <= 64);

mod adapter {
    // The macro generates items without docs (`NEW`, `new`).
    #![allow(missing_docs)]
    use super::{LinkedListLink, Page, intrusive_adapter};

    intrusive_adapter!(
        /// Threads [`Page`]s on an intrusive `LinkedList` through [`Page::link`].
        pub PageAdapter<'a> = &'a Page: Page { link => LinkedListLink }
    );
}
pub use adapter::PageAdapter;

impl Page {
    /// A reserved descriptor of zone `zone` on node `node`, reference count 0.
    pub const fn new(zone: ZoneType, node: u8) -> Page {
        Page {
            flags: AtomicU32::new(
                PgFlags::RESERVED.bits()
                    | ((zone as u32) << ZONE_SHIFT)
                    | ((node as u32) << NODE_SHIFT),
            ),
            count: AtomicU32::new(0),
            private: AtomicUsize::new(0),
            owner: AtomicUsize::new(0),
            index: AtomicUsize::new(0),
            link: LinkedListLink::new(),
        }
    }

    /// The state flags.
    #[inline]
    pub fn flags(&self) -> PgFlags {
        PgFlags::from_bits_truncate(self.flags.load(Ordering::Relaxed) & FLAG_MASK)
    }

    /// True if every flag in `f` is set.
    #[inline]
    pub fn test(&self, f: PgFlags) -> bool {
        self.flags.load(Ordering::Relaxed) & f.bits() == f.bits()
    }

    /// Replaces the state flags (zone and node stay). Only the page's owner calls
    /// this.
    #[inline]
    pub fn set_flags(&self, f: PgFlags) {
        let w = self.flags.load(Ordering::Relaxed);
        self.flags
            .store((w & !FLAG_MASK) | f.bits(), Ordering::Relaxed);
    }

    /// Replaces the state flags with `set`, keeping those of `keep` that are
    /// set (zone and node stay): one load and one store (owner only).
    #[inline]
    pub fn replace_flags(&self, keep: PgFlags, set: PgFlags) {
        let w = self.flags.load(Ordering::Relaxed);
        self.flags.store(
            (w & (!FLAG_MASK | keep.bits())) | set.bits(),
            Ordering::Relaxed,
        );
    }

    /// Sets `f` (owner only; not an atomic read-modify-write).
    #[inline]
    pub fn insert(&self, f: PgFlags) {
        let w = self.flags.load(Ordering::Relaxed);
        self.flags.store(w | f.bits(), Ordering::Relaxed);
    }

    /// Clears `f` (owner only; not an atomic read-modify-write).
    #[inline]
    pub fn remove(&self, f: PgFlags) {
        let w = self.flags.load(Ordering::Relaxed);
        self.flags.store(w & !f.bits(), Ordering::Relaxed);
    }

    /// The zone type the page belongs to.
    #[inline]
    pub fn zone_type(&self) -> ZoneType {
        match (self.flags.load(Ordering::Relaxed) >> ZONE_SHIFT) & 3 {
            0 => ZoneType::Dma,
            1 => ZoneType::Normal,
            _ => ZoneType::HighMem,
        }
    }

    /// The page's zone as `node * ZoneType::COUNT + zone type`: the index of
    /// its zone in a flat array of every node's zones, from one load (Linux
    /// keeps the same "zone id" in `page->flags`).
    #[inline]
    pub fn zone_index(&self) -> usize {
        let w = self.flags.load(Ordering::Relaxed);
        (w >> NODE_SHIFT) as usize * ZoneType::COUNT + ((w >> ZONE_SHIFT) & 3) as usize
    }

    /// The node the page belongs to.
    #[inline]
    pub fn node(&self) -> usize {
        (self.flags.load(Ordering::Relaxed) >> NODE_SHIFT) as usize
    }

    /// The reference count.
    #[inline]
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    /// Sets the reference count (the allocator, when it hands the page out or
    /// takes it back).
    #[inline]
    pub fn set_count(&self, n: u32) {
        self.count.store(n, Ordering::Release);
    }

    /// Takes a reference (Linux's `get_page`); fails on a page with count 0 (a
    /// free page cannot be referenced) or at `u32::MAX`.
    #[inline]
    pub fn get(&self) -> bool {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                if c == 0 { None } else { c.checked_add(1) }
            })
            .is_ok()
    }

    /// Drops a reference (Linux's `put_page_testzero`): `Some(true)` if it was
    /// the last, `Some(false)` if others remain, `None` if the count was already
    /// zero (nothing changed).
    #[inline]
    pub fn put_testzero(&self) -> Option<bool> {
        // One locked decrement; a count that was already zero is put back (a
        // reader may briefly see it wrapped, which `get` treats as "cannot
        // take a reference").
        let prev = self.count.fetch_sub(1, Ordering::AcqRel);
        if prev == 0 {
            self.count.fetch_add(1, Ordering::AcqRel);
            None
        } else {
            Some(prev == 1)
        }
    }

    /// The `private` word (the buddy order).
    #[inline]
    pub fn private(&self) -> usize {
        self.private.load(Ordering::Relaxed)
    }

    /// Sets the `private` word.
    #[inline]
    pub fn set_private(&self, v: usize) {
        self.private.store(v, Ordering::Relaxed);
    }

    /// The first back-pointer (slab cache, or a highmem page's virtual address).
    #[inline]
    pub fn owner(&self) -> usize {
        self.owner.load(Ordering::Acquire)
    }

    /// Sets the first back-pointer.
    #[inline]
    pub fn set_owner(&self, v: usize) {
        self.owner.store(v, Ordering::Release);
    }

    /// The second back-pointer (the slab of a SLAB page).
    #[inline]
    pub fn index(&self) -> usize {
        self.index.load(Ordering::Acquire)
    }

    /// Sets the second back-pointer.
    #[inline]
    pub fn set_index(&self, v: usize) {
        self.index.store(v, Ordering::Release);
    }
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("flags", &self.flags())
            .field("zone", &self.zone_type())
            .field("node", &self.node())
            .field("count", &self.count())
            .field("private", &self.private())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_keep_zone_and_node() {
        let p = Page::new(ZoneType::HighMem, 5);
        assert!(p.test(PgFlags::RESERVED));
        p.set_flags(PgFlags::BUDDY);
        p.insert(PgFlags::ZEROED);
        p.remove(PgFlags::BUDDY);
        assert_eq!(p.flags(), PgFlags::ZEROED);
        assert_eq!(p.zone_type(), ZoneType::HighMem);
        assert_eq!(p.node(), 5);
    }

    #[test]
    fn reference_counting() {
        let p = Page::new(ZoneType::Normal, 0);
        assert!(!p.get(), "a free page cannot be referenced");
        assert_eq!(p.put_testzero(), None);
        p.set_count(1);
        assert!(p.get());
        assert_eq!(p.put_testzero(), Some(false));
        assert_eq!(p.put_testzero(), Some(true));
        assert_eq!(p.put_testzero(), None);
        assert_eq!(p.count(), 0);
    }
}
