//! The [`PageTable`] and [`FrameSource`] traits, their errors and the flush token.

use core::fmt;

use crate::{PAGE_SIZE, PageFlags, PhysAddr, VirtAddr};

/// Why a page-table operation failed. The tables are unchanged after every error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MapError {
    /// An address is not aligned to the page size of the operation.
    Misaligned,
    /// The virtual address is already mapped (or lies in a large page, or a large
    /// mapping would cover a page table that is in use).
    AlreadyMapped,
    /// The virtual address is not mapped.
    NotMapped,
    /// The address lies inside a large page; operate on the large page instead.
    InsideLargePage,
    /// The frame source had no frame for a page-table page.
    OutOfFrames,
    /// The frame source returned a frame the tables cannot use (misaligned, not
    /// reachable through the direct map, or above the paging mode's limit).
    BadFrame,
    /// The virtual address is outside what these tables translate.
    VirtOutOfRange,
    /// The physical address is above what the paging mode can reach (4 GiB for
    /// 2-level i386 paging, 64 GiB for PAE).
    PhysOutOfRange,
    /// The paging mode has no large pages, or they are not enabled.
    LargePagesUnsupported,
    /// A flag that the paging mode cannot express (for example `NO_EXECUTE`
    /// without PAE).
    UnsupportedFlags,
    /// A range length of zero or one that overflows the address space.
    BadLength,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MapError::Misaligned => "address is not aligned to the page size",
            MapError::AlreadyMapped => "virtual address is already mapped",
            MapError::NotMapped => "virtual address is not mapped",
            MapError::InsideLargePage => "address lies inside a large page",
            MapError::OutOfFrames => "no frame for a page-table page",
            MapError::BadFrame => "frame source returned an unusable frame",
            MapError::VirtOutOfRange => "virtual address out of range for these tables",
            MapError::PhysOutOfRange => "physical address out of range for the paging mode",
            MapError::LargePagesUnsupported => "large pages are not available",
            MapError::UnsupportedFlags => "flags not expressible in this paging mode",
            MapError::BadLength => "range length is zero or overflows",
        })
    }
}

impl core::error::Error for MapError {}

/// Supplies frames for page-table pages and takes them back.
///
/// The page-table code zeroes every frame it takes, so the source need not.
///
/// # Safety
///
/// The page-table code writes to every frame it is given, through the direct
/// map, and later frees the frames it no longer needs. An implementation must
/// guarantee that every frame [`FrameSource::alloc_frame`] returns is
///
/// - page-aligned, and reachable through the direct map the page tables were
///   built over (RAM, not a device or a hole);
/// - used by nothing else — no other allocator, no live object, no other
///   caller — from the moment it is returned until it is given back with
///   [`FrameSource::free_frame`].
pub unsafe trait FrameSource {
    /// Returns a page-aligned frame, or `None` when none is left.
    fn alloc_frame(&mut self) -> Option<PhysAddr>;
    /// Takes back a frame that [`FrameSource::alloc_frame`] returned.
    fn free_frame(&mut self, frame: PhysAddr);
}

// SAFETY: forwards to `F`, which keeps the contract.
unsafe impl<F: FrameSource + ?Sized> FrameSource for &mut F {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        (**self).alloc_frame()
    }
    fn free_frame(&mut self, frame: PhysAddr) {
        (**self).free_frame(frame)
    }
}

/// The size of one mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageSize {
    /// A base page ([`PAGE_SIZE`], 4 KiB).
    Base,
    /// A large page mapped by a directory entry: 4 MiB with 2-level i386 paging,
    /// 2 MiB with PAE. [`PageTable::large_page_size`] gives the byte count.
    Large,
}

/// What a virtual address translates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The physical address of the byte the virtual address names.
    pub phys: PhysAddr,
    /// The physical address of the start of the page that maps it.
    pub frame: PhysAddr,
    /// The mapping's attributes.
    pub flags: PageFlags,
    /// The size of the mapping.
    pub size: PageSize,
}

/// What to do with a page-table page that an unmap leaves empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableReclaim {
    /// Keep it for later mappings (what Linux does for kernel tables).
    #[default]
    Keep,
    /// Give it back to the frame source.
    Free,
}

/// A TLB flush that a page-table change requires.
///
/// Every call that changes a present mapping returns one. It must be consumed:
/// [`Flush::flush`] invalidates the entry now; [`Flush::ignore`] states that the
/// caller will flush later (say with one `flush_all` after a batch) or that no TLB
/// can hold the entry.
#[must_use = "a page-table change must be flushed from the TLB, or explicitly ignored"]
#[derive(Debug, PartialEq, Eq)]
pub struct Flush {
    va: VirtAddr,
    len: usize,
}

impl Flush {
    /// A flush of `len` bytes starting at `va`.
    pub const fn new(va: VirtAddr, len: usize) -> Flush {
        Flush { va, len }
    }

    /// The first address to invalidate.
    pub const fn addr(&self) -> VirtAddr {
        self.va
    }

    /// How many bytes to invalidate.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// True if nothing needs invalidating.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Invalidates the range through `tables` now (one `flush` per base page, or
    /// `flush_all` when the range is longer than 32 pages, as Linux does).
    pub fn flush<P: PageTable + ?Sized>(self, tables: &P) {
        const FULL_FLUSH_PAGES: usize = 32;
        let pages = self.len.div_ceil(PAGE_SIZE);
        if pages > FULL_FLUSH_PAGES {
            tables.flush_all();
        } else {
            for i in 0..pages {
                tables.flush(VirtAddr::new(self.va.as_usize() + i * PAGE_SIZE));
            }
        }
    }

    /// Drops the flush on purpose; the caller is responsible for the TLB.
    pub fn ignore(self) {}
}

/// One address space's page tables.
///
/// Virtual addresses are in the address space the tables translate (on the mock,
/// host addresses inside the simulated kernel window). All methods leave the
/// tables unchanged when they fail.
///
/// # Safety
///
/// The allocators free what an unmap reports and hand out what a translation
/// names (vmalloc's `vfree`, `vmalloc_to_page`), so a wrong answer becomes a
/// use-after-free. An implementation must guarantee:
///
/// - [`PageTable::unmap`] returns the frame that was mapped at the address (and
///   its size) and removes that mapping; [`PageTable::translate`] returns what
///   is mapped now, and `None` only if nothing is;
/// - `map`, `map_range` and `map_large` map exactly the frames asked for and
///   never overwrite an existing mapping (they fail with
///   [`MapError::AlreadyMapped`]); every call leaves the tables unchanged when
///   it fails;
/// - page-table pages come only from the [`FrameSource`] passed in, and only
///   pages that held no mapping go back to it.
pub unsafe trait PageTable {
    /// The size of a large page in bytes, if the tables can map one.
    fn large_page_size(&self) -> Option<usize>;

    /// Maps the base page at `va` to the frame at `pa`. `PRESENT` is implied.
    ///
    /// Fails with [`MapError::AlreadyMapped`] if `va` is mapped (never
    /// overwrites), [`MapError::OutOfFrames`] if a page-table page is needed and
    /// the source has none. A one-page [`PageTable::map_range`].
    #[inline]
    fn map<F: FrameSource + ?Sized>(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        flags: PageFlags,
        frames: &mut F,
    ) -> Result<Flush, MapError> {
        self.map_range(va, pa, PAGE_SIZE, flags, frames)
    }

    /// Maps `len` bytes (a multiple of the base page) from `va` to the physical
    /// range from `pa`, all or nothing: on failure nothing is mapped and every
    /// page-table page allocated by this call has been returned.
    fn map_range<F: FrameSource + ?Sized>(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        len: usize,
        flags: PageFlags,
        frames: &mut F,
    ) -> Result<Flush, MapError>;

    /// Maps one large page at `va` (aligned to [`PageTable::large_page_size`]).
    fn map_large(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        flags: PageFlags,
    ) -> Result<Flush, MapError>;

    /// Removes the mapping at `va` — a base page, or a large page if `va` is the
    /// start of one — and returns the frame it mapped with the flush.
    ///
    /// With [`TableReclaim::Free`], a page-table page left empty goes back to
    /// `frames`.
    fn unmap<F: FrameSource + ?Sized>(
        &mut self,
        va: VirtAddr,
        reclaim: TableReclaim,
        frames: &mut F,
    ) -> Result<(Translation, Flush), MapError>;

    /// Changes the attributes of the mapping at `va` (a base page, or a large page
    /// if `va` is the start of one).
    fn protect(&mut self, va: VirtAddr, flags: PageFlags) -> Result<Flush, MapError>;

    /// What `va` translates to, if it is mapped; understands large pages.
    fn translate(&self, va: VirtAddr) -> Option<Translation>;

    /// Invalidates the calling CPU's TLB entry for `va` (i386 `INVLPG`). Local:
    /// other CPUs keep theirs until they flush (a cross-CPU shootdown is a
    /// separate HAL operation).
    fn flush(&self, va: VirtAddr);

    /// Invalidates every entry of the calling CPU's TLB, global ones included.
    /// Local, like [`PageTable::flush`].
    fn flush_all(&self);
}
