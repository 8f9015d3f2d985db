//! [`FreeError`] and [`BuddyError`].

use core::fmt;

use kmm_page_frame::{BootmemError, MemMapError};

/// Why a free was refused. Nothing changed: no page was freed, moved or lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FreeError {
    /// The order is at or above `MAX_ORDER`.
    OrderTooLarge,
    /// The address or descriptor is not one of this allocator's pages (not in
    /// the direct map, not a descriptor of `mem_map`).
    Foreign,
    /// The frame lies in no zone this allocator manages.
    NotInZone,
    /// The frame is not aligned to the order, or the address not to a page.
    Misaligned,
    /// The frame is reserved (a hole, firmware memory, bootmem).
    Reserved,
    /// The block is already free (on a free list or a per-CPU list, or its
    /// reference count is zero).
    DoubleFree,
    /// The frame does not head an allocated block: an interior page of a block,
    /// or a page of a block that was freed and merged.
    NotAllocated,
    /// The block belongs to the SLAB allocator (free it there).
    Slab,
    /// The page is still on a list of its owner's (linked through a
    /// `PageAdapter` list): unlink it first.
    Linked,
    /// The block is a live `kmalloc` allocation the SLAB allocator took from
    /// the page allocator (a large or strongly aligned request): free it with
    /// `kfree`.
    Kmalloc,
    /// The page belongs to a live vmalloc area (free it with `vfree`).
    Vmalloc,
    /// The block was allocated with another order.
    WrongOrder {
        /// The order it was allocated with.
        allocated: usize,
    },
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeError::OrderTooLarge => write!(f, "order at or above MAX_ORDER"),
            FreeError::Foreign => write!(f, "not a page of this allocator"),
            FreeError::NotInZone => write!(f, "frame outside every zone"),
            FreeError::Misaligned => write!(f, "block not aligned to its order"),
            FreeError::Reserved => write!(f, "reserved page"),
            FreeError::DoubleFree => write!(f, "block already free"),
            FreeError::NotAllocated => write!(f, "page does not head an allocated block"),
            FreeError::Slab => write!(f, "block belongs to the SLAB allocator"),
            FreeError::Linked => write!(f, "page still linked on a list"),
            FreeError::Kmalloc => write!(f, "block is a live kmalloc allocation"),
            FreeError::Vmalloc => write!(f, "page belongs to a live vmalloc area"),
            FreeError::WrongOrder { allocated } => {
                write!(
                    f,
                    "wrong order: the block was allocated with order {allocated}"
                )
            }
        }
    }
}

impl core::error::Error for FreeError {}

/// Why the allocator could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuddyError {
    /// Bootmem could not place the zone structures.
    Bootmem(BootmemError),
    /// Building `mem_map` failed.
    MemMap(MemMapError),
    /// More CPUs than [`crate::MAX_CPUS`].
    TooManyCpus,
    /// The `Cpu` has more than one CPU and no cross-CPU call was given
    /// ([`crate::BuddyConfig::cross_call`]): without one there is no safe way
    /// to reach the other CPUs (their page lists, their TLBs).
    NoCrossCall,
}

impl fmt::Display for BuddyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuddyError::Bootmem(e) => write!(f, "{e}"),
            BuddyError::MemMap(e) => write!(f, "{e}"),
            BuddyError::TooManyCpus => write!(f, "more CPUs than MAX_CPUS"),
            BuddyError::NoCrossCall => {
                write!(f, "more than one CPU and no cross-CPU call (IPI) given")
            }
        }
    }
}

impl core::error::Error for BuddyError {}

impl From<BootmemError> for BuddyError {
    fn from(e: BootmemError) -> Self {
        BuddyError::Bootmem(e)
    }
}

impl From<MemMapError> for BuddyError {
    fn from(e: MemMapError) -> Self {
        BuddyError::MemMap(e)
    }
}

/// Why a bulk free ([`crate::Buddy::release_pages`]) stopped: the page at
/// `index` was refused with `error`. The pages before it were freed (their
/// slots emptied); it and every slot after it are untouched, and the
/// allocator is intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkFreeError {
    /// The slot of the refused page.
    pub index: usize,
    /// Why it was refused, as the single free would say.
    pub error: FreeError,
}

impl fmt::Display for BulkFreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page {} refused: {}", self.index, self.error)
    }
}

impl core::error::Error for BulkFreeError {}
