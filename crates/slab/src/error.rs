//! [`SlabError`]: why a cache call was refused. Nothing is changed by a refused
//! call: no object or page is lost or corrupted.

use core::fmt;

/// Why a cache or object operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlabError {
    /// A size of zero, or one that overflows, or objects too large for any slab.
    BadSize,
    /// An alignment that is not a power of two, or larger than a page.
    BadAlign,
    /// The page allocator had no memory.
    OutOfMemory,
    /// A null pointer, or one that no cache handed out (not in the direct map,
    /// not in a slab page).
    Foreign,
    /// The pointer is inside an object, not at its start.
    Interior,
    /// The object is already free.
    DoubleFree,
    /// The object belongs to another cache.
    WrongCache,
    /// The cache still has objects in use.
    Busy,
    /// The cache is not one of this allocator's (or was destroyed).
    NoSuchCache,
    /// The `debug` feature found a damaged object (see [`crate::DebugReport`]).
    Corrupted,
    /// The cache or object is the allocator's own: the cache of caches (no
    /// user allocates from it, frees to it or destroys it) or a cache
    /// descriptor, an object of it (destroy the cache instead).
    Internal,
}

impl fmt::Display for SlabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlabError::BadSize => "bad object size",
            SlabError::BadAlign => "alignment not a power of two or above a page",
            SlabError::OutOfMemory => "out of memory",
            SlabError::Foreign => "pointer not handed out by the slab allocator",
            SlabError::Interior => "pointer inside an object",
            SlabError::DoubleFree => "object already free",
            SlabError::WrongCache => "object belongs to another cache",
            SlabError::Busy => "cache has objects in use",
            SlabError::NoSuchCache => "no such cache",
            SlabError::Corrupted => "object corrupted",
            SlabError::Internal => "the allocator's own cache or object",
        })
    }
}

impl core::error::Error for SlabError {}

/// Why [`crate::SlabAllocator::kmem_cache_free_bulk`] stopped: the element
/// at `index` was refused with `error`, as `kmem_cache_free` would refuse
/// it. Every element before `index` was freed; it and every element after
/// it are untouched. A refused cache handle (`NoSuchCache`, `Internal`) is
/// refused before any element is read, with `index` 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkFreeError {
    /// The first element not freed: the refused one (0 for a refused
    /// handle).
    pub index: usize,
    /// Why it was refused.
    pub error: SlabError,
}

impl fmt::Display for BulkFreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bulk free refused at element {}: {}",
            self.index, self.error
        )
    }
}

impl core::error::Error for BulkFreeError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.error)
    }
}
