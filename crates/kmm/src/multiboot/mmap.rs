//! The boot memory map: the loader's e820 entries (flag bit 6), or the
//! `mem_lower`/`mem_upper` sizes (flag bit 0) when it gave none.

use core::fmt;

use kmm_page_frame::{Region, RegionKind};

use super::window::OutOfWindow;

/// Bytes of an entry after its `size` field that the reader decodes:
/// `base_addr: u64`, `length: u64`, `type: u32`.
const ENTRY_MIN: u32 = 20;
/// Conventional memory never reaches past 640 KiB (the spec's maximum for
/// `mem_lower`); a larger value is clamped so it cannot cover the ISA hole.
const MEM_LOWER_MAX_KIB: u32 = 640;

/// Why the memory map could not be read. Nothing is returned in part: a
/// kernel that wants to go on can fall back to
/// [`super::MultibootInfo::basic_memory_map`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemoryMapError {
    /// Neither flag bit 6 (memory map) nor bit 0 (`mem_lower`/`mem_upper`)
    /// is set: the loader said nothing about memory.
    NoMemoryInfo,
    /// The entry at byte `offset` of the map has a `size` field below 20 (0
    /// included): too small for base, length and type, and walking on by it
    /// could loop or misread.
    EntryTooSmall {
        /// Offset of the entry's `size` field from `mmap_addr`.
        offset: u32,
        /// The `size` field (which does not count itself).
        size: u32,
    },
    /// The entry at byte `offset` (its `size` field, or the `size` bytes
    /// after it) runs past `mmap_length`.
    EntryPastEnd {
        /// Offset of the entry's `size` field from `mmap_addr`.
        offset: u32,
    },
    /// The map buffer is outside the reader's window.
    OutOfWindow(OutOfWindow),
}

impl From<OutOfWindow> for MemoryMapError {
    fn from(e: OutOfWindow) -> MemoryMapError {
        MemoryMapError::OutOfWindow(e)
    }
}

impl fmt::Display for MemoryMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryMapError::NoMemoryInfo => {
                f.write_str("multiboot: the loader passed no memory information")
            }
            MemoryMapError::EntryTooSmall { offset, size } => write!(
                f,
                "multiboot: memory-map entry at offset {offset:#x} has size {size} (below 20)"
            ),
            MemoryMapError::EntryPastEnd { offset } => write!(
                f,
                "multiboot: memory-map entry at offset {offset:#x} runs past mmap_length"
            ),
            MemoryMapError::OutOfWindow(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for MemoryMapError {}

/// Where a [`BootMemoryMap`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapSource {
    /// The loader's memory map (flag bit 6): BIOS e820 entries, in order.
    Mmap,
    /// `mem_lower`/`mem_upper` (flag bit 0): two usable ranges at most,
    /// `0..mem_lower` KiB and `1 MiB..1 MiB + mem_upper` KiB.
    MemLowerUpper,
}

/// The boot memory map as kmm's [`Region`]s, copied out of the loader's
/// memory: up to `N` entries in the loader's order, and a count of those
/// that did not fit.
///
/// It borrows nothing, so it outlives the loader's memory; hand
/// [`BootMemoryMap::regions`] to [`kmm_page_frame::Bootmem::new`].
#[derive(Clone)]
pub struct BootMemoryMap<const N: usize = 32> {
    regions: [Region; N],
    len: usize,
    dropped: usize,
    source: MapSource,
}

impl<const N: usize> BootMemoryMap<N> {
    const fn empty(source: MapSource) -> BootMemoryMap<N> {
        BootMemoryMap {
            regions: [Region::new(0, 0, RegionKind::Reserved); N],
            len: 0,
            dropped: 0,
            source,
        }
    }

    fn push(&mut self, r: Region) {
        match self.regions.get_mut(self.len) {
            Some(slot) => {
                *slot = r;
                self.len += 1;
            }
            None => self.dropped += 1,
        }
    }

    /// The regions, in the loader's order (entries of length 0 included, as
    /// the loader gave them).
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    /// Entries that did not fit in `N` and were dropped (the last ones).
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Where the regions came from.
    pub fn source(&self) -> MapSource {
        self.source
    }

    /// Walks the memory-map buffer `buf` (`mmap_length` bytes at
    /// `mmap_addr`) by each entry's `size` field, which does not count
    /// itself. Entries longer than 20 bytes are fine (the extra bytes are
    /// skipped); shorter ones, and ones that run past the buffer, stop the
    /// walk with an error. Each step moves on by at least 24 bytes, so the
    /// walk ends within `buf.len() / 24` steps and reads only `buf`.
    pub(super) fn from_mmap(buf: &[u8]) -> Result<BootMemoryMap<N>, MemoryMapError> {
        let mut map = BootMemoryMap::empty(MapSource::Mmap);
        let mut off = 0;
        while off < buf.len() {
            // `buf` is at most u32::MAX bytes long (mmap_length is a u32).
            let offset = off as u32;
            let rest = &buf[off..];
            let size = le_u32(rest, 0).ok_or(MemoryMapError::EntryPastEnd { offset })?;
            if size < ENTRY_MIN {
                return Err(MemoryMapError::EntryTooSmall { offset, size });
            }
            let next = usize::try_from(u64::from(size) + 4)
                .ok()
                .filter(|&n| n <= rest.len())
                .ok_or(MemoryMapError::EntryPastEnd { offset })?;
            let entry = &rest[4..next];
            let (Some(base), Some(len), Some(ty)) =
                (le_u64(entry, 0), le_u64(entry, 8), le_u32(entry, 16))
            else {
                // Not reached: `size >= 20` was checked above.
                return Err(MemoryMapError::EntryTooSmall { offset, size });
            };
            map.push(Region::new(base, len, RegionKind::from_e820(ty)));
            off += next;
        }
        Ok(map)
    }

    /// The map from `mem_lower` and `mem_upper` (KiB): conventional memory
    /// from 0 (clamped to 640 KiB) and extended memory from 1 MiB; a size of
    /// 0 gives no region.
    pub(super) fn from_mem_fields(mem_lower: u32, mem_upper: u32) -> BootMemoryMap<N> {
        let mut map = BootMemoryMap::empty(MapSource::MemLowerUpper);
        let lower = u64::from(mem_lower.min(MEM_LOWER_MAX_KIB)) << 10;
        let upper = u64::from(mem_upper) << 10;
        if lower != 0 {
            map.push(Region::new(0, lower, RegionKind::Usable));
        }
        if upper != 0 {
            map.push(Region::new(1 << 20, upper, RegionKind::Usable));
        }
        map
    }
}

impl<const N: usize> fmt::Debug for BootMemoryMap<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootMemoryMap")
            .field("source", &self.source)
            .field("regions", &self.regions())
            .field("dropped", &self.dropped)
            .finish()
    }
}

/// The little-endian `u32` at `off` in `b`, if it is all there.
pub(super) fn le_u32(b: &[u8], off: usize) -> Option<u32> {
    let bytes = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// The little-endian `u64` at `off` in `b`, if it is all there.
fn le_u64(b: &[u8], off: usize) -> Option<u64> {
    let bytes = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}
