//! [`Page`]: the page descriptor (Linux's `struct page`), one per page frame.

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use intrusive_collections::linked_list::{self, LinkedListOps};
use intrusive_collections::{Adapter, DefaultPointerOps, LinkOps, LinkedListLink, PointerOps};

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
        /// On a list of its owner's, linked through a [`PageAdapter`] list; the
        /// buddy allocator refuses to free the page until it is unlinked.
        const LINKED = 1 << 8;
        /// Heads a block the SLAB allocator's `kmalloc` took from the page
        /// allocator (a large or strongly aligned request): only `kfree` frees
        /// it, the page allocator refuses to.
        const KMALLOC = 1 << 9;
        /// With `SLAB`: the slab holds the SLAB allocator's own objects (cache
        /// descriptors), which no user may free.
        const SLAB_INTERNAL = 1 << 10;
        /// Heads a page a live vmalloc area owns: only `vfree` frees it, the
        /// page allocator refuses to.
        const VMALLOC = 1 << 11;
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
///
/// # The owner contract
///
/// Safe code can read a descriptor but not change what other crates' unsafe
/// code trusts: the flags, the order, the back-pointers and the list link. The
/// writers are `unsafe fn`s, and each caller promises what is called *the
/// owner contract* below:
///
/// 1. **Owner only.** The caller owns the page: the page allocator for a free
///    page (under the zone lock, or as the CPU whose per-CPU list holds it);
///    the holder of an allocated block for the pages of that block. No other
///    thread writes the page's words at the same time (the writers are plain
///    loads and stores, not atomic read-modify-writes).
/// 2. **True values.** What is written is what the readers take it to mean:
///    [`PgFlags::BUDDY`], [`PgFlags::PCP`] and `private` describe the page
///    allocator's own lists; [`PgFlags::HEAD`] and `private` an allocated
///    block and its order; [`PgFlags::SLAB`] with `owner` and `index` a live
///    slab cache and slab (the slab allocator's `kfree` dereferences them);
///    `owner` of a [`PgFlags::HIGHMEM`] page the address it is mapped at.
///
/// Safe code cannot, for example, take a page from `alloc_pages`, mark it as a
/// slab page with a forged owner and make `kfree` dereference it:
///
/// ```compile_fail,E0133
/// # use kmm_page_frame::{Page, PgFlags, ZoneType};
/// let page = Page::new(ZoneType::Normal, 0);
/// page.insert(PgFlags::SLAB); // unsafe: the owner contract
/// page.set_owner(0xdead_beef);
/// ```
///
/// nor touch the list link (see [`PageAdapter`]):
///
/// ```compile_fail,E0616
/// # use kmm_page_frame::{Page, ZoneType};
/// let page = Page::new(ZoneType::Normal, 0);
/// let _ = &page.link; // private
/// ```
///
/// The fields are ordered hot to cold: what the page allocator reads and
/// writes on every allocation, free and merge (flags, count, order, list
/// link) comes first, in the first 32 bytes on x86-64 (all 28 on i386), so
/// a free-list operation on a descriptor that is not in the cache costs one
/// cache-line miss for three descriptors in four (x86-64's 48-byte
/// descriptors start at 0, 16, 32 or 48 bytes into a 64-byte line, and
/// only the one at 48 splits its first 32 bytes), where with the link last
/// (bytes 32–48, after the back-pointers) the ones at 32 and 48 split
/// flags and link; the slab and high-memory back-pointers follow.
#[repr(C)]
pub struct Page {
    /// [`PgFlags`] in the low 24 bits; zone type and node id above.
    flags: AtomicU32,
    /// Reference count (Linux's `_count`): 0 while free, 1 when allocated.
    count: AtomicU32,
    /// The buddy order while free or allocated through the buddy allocator.
    private: AtomicUsize,
    /// Links the page into a free list, a per-CPU list or an owner's list
    /// (Linux's `lru`). Reached only through [`PageAdapter`] and
    /// [`FreeListAdapter`], whose unsafe constructors make the user promise
    /// that only the page's current owner touches it.
    link: LinkedListLink,
    /// Back-pointer: the slab cache of a SLAB page, or the kernel virtual address
    /// of a mapped high-memory page.
    owner: AtomicUsize,
    /// Second back-pointer: the slab of a SLAB page.
    index: AtomicUsize,
}

// SAFETY: all fields but `link` are atomics. `link` (Cell-based) is private and
// reached only through lists built with `PageAdapter::new` or
// `FreeListAdapter::new`, whose `# Safety` (the owner contract) promises that
// only the page's current owner — the zone lock holder, the CPU whose per-CPU
// list holds it, or the holder of the allocated page — links or unlinks it, so
// no two threads access it at once.
unsafe impl Sync for Page {}
// SAFETY: as above; a page moves between owners only through those allocators.
unsafe impl Send for Page {}

#[cfg(target_pointer_width = "32")]
static_assertions::const_assert!(core::mem::size_of::<Page>() <= 32);
#[cfg(target_pointer_width = "64")]
static_assertions::const_assert!(core::mem::size_of::<Page>() <= 64);

/// The descriptor a link pointer (from [`Adapter::get_link`]) belongs to.
///
/// # Safety
/// `link` must point at the `link` field of a live [`Page`], with the
/// provenance of the whole descriptor (as `get_link` makes it).
#[inline(always)]
unsafe fn page_of(link: NonNull<LinkedListLink>) -> *const Page {
    // SAFETY: by the caller's contract, stepping back by the field's offset
    // stays inside the same descriptor.
    unsafe {
        link.as_ptr()
            .byte_sub(core::mem::offset_of!(Page, link))
            .cast::<Page>()
            .cast_const()
    }
}

/// The link of a descriptor.
///
/// # Safety
/// `value` must point at a live [`Page`].
#[inline(always)]
unsafe fn link_of(value: *const Page) -> NonNull<LinkedListLink> {
    // SAFETY: `value` points at a live Page (caller), so its field does and is
    // not null; the pointer keeps the descriptor's provenance.
    unsafe { NonNull::new_unchecked((&raw const (*value).link).cast_mut()) }
}

/// Link operations of [`PageAdapter`]: the list's own, plus
/// [`PgFlags::LINKED`] set while the page is on the list, so the buddy
/// allocator's free refuses a linked page with one bit of its flags test.
#[derive(Clone, Copy, Default)]
pub struct PageLinkOps(linked_list::LinkOps);

// SAFETY: every operation forwards to intrusive-collections' own linked-list
// operations; `acquire_link` and `release_link` also write the flag word of
// the page the link is in (never panicking), which the owner contract of
// `PageAdapter::new` lets the list's user do.
unsafe impl LinkOps for PageLinkOps {
    type LinkPtr = NonNull<LinkedListLink>;

    #[inline]
    unsafe fn acquire_link(&mut self, ptr: Self::LinkPtr) -> bool {
        // SAFETY: `ptr` comes from `PageAdapter::get_link` (the list's
        // contract), so it is a live descriptor's link.
        let ok = unsafe { self.0.acquire_link(ptr) };
        if ok {
            // SAFETY: as above; the owner contract of `PageAdapter::new` makes
            // the caller the page's only writer.
            unsafe { (*page_of(ptr)).or_flags(PgFlags::LINKED) };
        }
        ok
    }

    #[inline]
    unsafe fn release_link(&mut self, ptr: Self::LinkPtr) {
        // SAFETY: as in `acquire_link`.
        unsafe {
            self.0.release_link(ptr);
            (*page_of(ptr)).and_not_flags(PgFlags::LINKED);
        }
    }
}

// SAFETY: pure forwarding to intrusive-collections' linked-list operations.
unsafe impl LinkedListOps for PageLinkOps {
    #[inline]
    unsafe fn next(&self, ptr: Self::LinkPtr) -> Option<Self::LinkPtr> {
        // SAFETY: forwarded.
        unsafe { self.0.next(ptr) }
    }

    #[inline]
    unsafe fn prev(&self, ptr: Self::LinkPtr) -> Option<Self::LinkPtr> {
        // SAFETY: forwarded.
        unsafe { self.0.prev(ptr) }
    }

    #[inline]
    unsafe fn set_next(&mut self, ptr: Self::LinkPtr, next: Option<Self::LinkPtr>) {
        // SAFETY: forwarded.
        unsafe { self.0.set_next(ptr, next) }
    }

    #[inline]
    unsafe fn set_prev(&mut self, ptr: Self::LinkPtr, prev: Option<Self::LinkPtr>) {
        // SAFETY: forwarded.
        unsafe { self.0.set_prev(ptr, prev) }
    }
}

/// Threads [`Page`]s on an intrusive `LinkedList` of their owner's (Linux's
/// `lru` lists): a page is flagged [`PgFlags::LINKED`] while it is on the
/// list, and the buddy allocator refuses to free it (`FreeError::Linked`)
/// until it is unlinked.
///
/// Building one is `unsafe` (see [`PageAdapter::new`]): safe code cannot link
/// pages, so it can neither race two threads on a link nor put a page the
/// allocator holds on a list of its own.
///
/// ```compile_fail,E0133
/// use intrusive_collections::LinkedList;
/// use kmm_page_frame::PageAdapter;
/// let list = LinkedList::new(PageAdapter::new()); // unsafe: the owner contract
/// ```
#[derive(Clone, Copy)]
pub struct PageAdapter<'a> {
    link_ops: PageLinkOps,
    pointer_ops: DefaultPointerOps<&'a Page>,
}

impl<'a> PageAdapter<'a> {
    /// An adapter for a list of pages the caller owns.
    ///
    /// # Safety
    /// The owner contract (see [`Page`]) for every page put on a list built
    /// with this adapter, for as long as it stays linked: only the page's
    /// current owner (the holder of the allocated block) links and unlinks it,
    /// never from two threads at once, and never a page the page allocator
    /// holds free. Unlink every page of a block before freeing the block: the
    /// free path checks the head page in O(1), not the others.
    pub const unsafe fn new() -> Self {
        PageAdapter {
            link_ops: PageLinkOps(linked_list::LinkOps),
            pointer_ops: DefaultPointerOps::new(),
        }
    }
}

/// The [`Adapter`] impl of a page adapter `$adapter<'a>` (fields `link_ops:
/// $link_ops` and `pointer_ops: DefaultPointerOps<&'a Page>`): the two adapters
/// differ only in their link operations, so they share this code, which
/// converts between a descriptor and its `link` with [`page_of`] and
/// [`link_of`].
macro_rules! page_adapter_impl {
    ($adapter:ident, $link_ops:ty) => {
        // SAFETY: `get_value` and `get_link` convert between a descriptor and
        // its `link` field (the same object), keeping the descriptor's
        // provenance.
        unsafe impl<'a> Adapter for $adapter<'a> {
            type LinkOps = $link_ops;
            type PointerOps = DefaultPointerOps<&'a Page>;

            #[inline]
            unsafe fn get_value(
                &self,
                link: <Self::LinkOps as LinkOps>::LinkPtr,
            ) -> *const <Self::PointerOps as PointerOps>::Value {
                // SAFETY: `link` came from `get_link` (the trait's contract).
                unsafe { page_of(link) }
            }

            #[inline]
            unsafe fn get_link(
                &self,
                value: *const <Self::PointerOps as PointerOps>::Value,
            ) -> <Self::LinkOps as LinkOps>::LinkPtr {
                // SAFETY: `value` is a valid pointer (the trait's contract).
                unsafe { link_of(value) }
            }

            #[inline]
            fn link_ops(&self) -> &Self::LinkOps {
                &self.link_ops
            }

            #[inline]
            fn link_ops_mut(&mut self) -> &mut Self::LinkOps {
                &mut self.link_ops
            }

            #[inline]
            fn pointer_ops(&self) -> &Self::PointerOps {
                &self.pointer_ops
            }
        }
    };
}

page_adapter_impl!(PageAdapter, PageLinkOps);

/// Threads free [`Page`]s on the page allocator's own lists (the buddy free
/// lists and the per-CPU lists): plain links, no flag bookkeeping, so the hot
/// paths pay nothing for [`PgFlags::LINKED`].
#[derive(Clone, Copy)]
pub struct FreeListAdapter<'a> {
    link_ops: linked_list::LinkOps,
    pointer_ops: DefaultPointerOps<&'a Page>,
}

impl<'a> FreeListAdapter<'a> {
    /// An adapter for the page allocator's lists of free pages.
    ///
    /// # Safety
    /// The owner contract (see [`Page`]): only the page allocator uses it,
    /// for pages it holds free, under the lock of the list (a zone lock) or as
    /// the only CPU that touches the list (a per-CPU list, interrupts off);
    /// and while a page is linked it carries [`PgFlags::BUDDY`] or
    /// [`PgFlags::PCP`], so that a free of it is refused.
    pub const unsafe fn new() -> Self {
        FreeListAdapter {
            link_ops: linked_list::LinkOps,
            pointer_ops: DefaultPointerOps::new(),
        }
    }
}

page_adapter_impl!(FreeListAdapter, linked_list::LinkOps);

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

    /// Replaces the state flags (zone and node stay); `mem_map` set-up only.
    #[inline]
    pub(crate) fn set_flags(&self, f: PgFlags) {
        let w = self.flags.load(Ordering::Relaxed);
        self.flags
            .store((w & !FLAG_MASK) | f.bits(), Ordering::Relaxed);
    }

    /// Replaces the state flags with `set`, keeping those of `keep` that are
    /// set (zone and node stay): one load and one store.
    ///
    /// # Safety
    /// The owner contract (see [`Page`]): the caller owns the page, no other
    /// thread writes it meanwhile, and the flags it ends with are true.
    #[inline]
    pub unsafe fn replace_flags(&self, keep: PgFlags, set: PgFlags) {
        let w = self.flags.load(Ordering::Relaxed);
        self.flags.store(
            (w & (!FLAG_MASK | keep.bits())) | set.bits(),
            Ordering::Relaxed,
        );
    }

    /// Sets `f` (not an atomic read-modify-write).
    ///
    /// # Safety
    /// The owner contract (see [`Page`]): the caller owns the page, no other
    /// thread writes it meanwhile, and the flags it ends with are true (for
    /// [`PgFlags::SLAB`]: `owner` and `index` name a live cache and slab).
    #[inline]
    pub unsafe fn insert(&self, f: PgFlags) {
        self.or_flags(f);
    }

    /// Clears `f` (not an atomic read-modify-write).
    ///
    /// # Safety
    /// As for [`Page::insert`].
    #[inline]
    pub unsafe fn remove(&self, f: PgFlags) {
        self.and_not_flags(f);
    }

    /// Sets `f`: the body of [`Page::insert`], for this crate's callers that
    /// hold the owner contract themselves.
    #[inline]
    pub(crate) fn or_flags(&self, f: PgFlags) {
        let w = self.flags.load(Ordering::Relaxed);
        self.flags.store(w | f.bits(), Ordering::Relaxed);
    }

    /// Clears `f`: the body of [`Page::remove`].
    #[inline]
    pub(crate) fn and_not_flags(&self, f: PgFlags) {
        let w = self.flags.load(Ordering::Relaxed);
        self.flags.store(w & !f.bits(), Ordering::Relaxed);
    }

    /// True while the page is on a list (any list: the page allocator's or an
    /// owner's).
    #[inline]
    pub fn is_linked(&self) -> bool {
        self.link.is_linked()
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
    ///
    /// # Safety
    /// The owner contract (see [`Page`]): only the page allocator calls it,
    /// on a page it is handing out (count 1) and that nobody else references.
    #[inline]
    pub unsafe fn set_count(&self, n: u32) {
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
    ///
    /// # Safety
    /// The caller gives up a reference it holds (as with
    /// `Arc::decrement_strong_count`): dropping someone else's would let the
    /// block be freed under them. After `Some(true)` the page has no
    /// reference left, and the caller frees it.
    #[inline]
    pub unsafe fn put_testzero(&self) -> Option<bool> {
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
    ///
    /// # Safety
    /// The owner contract (see [`Page`]): only the page allocator writes the
    /// order, of a page it holds free or is handing out.
    #[inline]
    pub unsafe fn set_private(&self, v: usize) {
        self.private.store(v, Ordering::Relaxed);
    }

    /// The first back-pointer (slab cache, or a highmem page's virtual address).
    #[inline]
    pub fn owner(&self) -> usize {
        self.owner.load(Ordering::Acquire)
    }

    /// Sets the first back-pointer.
    ///
    /// # Safety
    /// The owner contract (see [`Page`]): the caller holds the allocated
    /// block the page is in, and `v` is true — the live cache of a
    /// [`PgFlags::SLAB`] page, the mapped address of a [`PgFlags::HIGHMEM`]
    /// page, or a mark its own allocator recognises.
    #[inline]
    pub unsafe fn set_owner(&self, v: usize) {
        self.set_owner_word(v);
    }

    /// The body of [`Page::set_owner`], for [`crate::MemMap`]'s callers.
    #[inline]
    pub(crate) fn set_owner_word(&self, v: usize) {
        self.owner.store(v, Ordering::Release);
    }

    /// The second back-pointer (the slab of a SLAB page).
    #[inline]
    pub fn index(&self) -> usize {
        self.index.load(Ordering::Acquire)
    }

    /// Sets the second back-pointer.
    ///
    /// # Safety
    /// As for [`Page::set_owner`]: for a [`PgFlags::SLAB`] page, the live
    /// slab the page belongs to.
    #[inline]
    pub unsafe fn set_index(&self, v: usize) {
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
        // SAFETY: a descriptor of this test's own; nobody else sees it.
        unsafe {
            p.insert(PgFlags::ZEROED);
            p.remove(PgFlags::BUDDY);
        }
        assert_eq!(p.flags(), PgFlags::ZEROED);
        assert_eq!(p.zone_type(), ZoneType::HighMem);
        assert_eq!(p.node(), 5);
    }

    #[test]
    fn reference_counting() {
        let p = Page::new(ZoneType::Normal, 0);
        assert!(!p.get(), "a free page cannot be referenced");
        // SAFETY: a descriptor of this test's own, whose references the test
        // holds (here and below).
        assert_eq!(unsafe { p.put_testzero() }, None);
        // SAFETY: as above.
        unsafe { p.set_count(1) };
        assert!(p.get());
        // SAFETY: as above.
        assert_eq!(unsafe { p.put_testzero() }, Some(false));
        // SAFETY: as above.
        assert_eq!(unsafe { p.put_testzero() }, Some(true));
        // SAFETY: as above.
        assert_eq!(unsafe { p.put_testzero() }, None);
        assert_eq!(p.count(), 0);
    }
}
