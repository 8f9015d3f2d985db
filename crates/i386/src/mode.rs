//! The two i386 paging modes as one [`Mode`] trait: entry width, table size, large
//! page size and the flags each mode can express.

use kmm_hal::PageFlags;

/// Entry bit: the entry is present.
pub const P: u64 = 1 << 0;
/// Entry bit: writable.
pub const RW: u64 = 1 << 1;
/// Entry bit: user accessible.
pub const US: u64 = 1 << 2;
/// Entry bit in a directory entry: the entry maps a large page (PSE).
pub const PS: u64 = 1 << 7;

/// The flags every mode expresses.
const COMMON_FLAGS: u64 = PageFlags::PRESENT.bits()
    | PageFlags::WRITABLE.bits()
    | PageFlags::USER.bits()
    | PageFlags::WRITE_THROUGH.bits()
    | PageFlags::NO_CACHE.bits()
    | PageFlags::ACCESSED.bits()
    | PageFlags::DIRTY.bits()
    | PageFlags::GLOBAL.bits();

mod sealed {
    pub trait Sealed {}
}

/// A paging mode. Implemented by [`Classic`] and [`PaeMode`] only.
pub trait Mode: sealed::Sealed {
    /// A name for messages.
    const NAME: &'static str;
    /// Entries per table page.
    const ENTRIES: usize;
    /// log2 of [`Mode::ENTRIES`].
    const INDEX_BITS: u32;
    /// log2 of the large-page size: 22 (4 MiB) or 21 (2 MiB).
    const LARGE_SHIFT: u32;
    /// Number of page directories (1, or 4 under PAE behind the PDPT).
    const DIRS: usize;
    /// Physical addresses must lie below this.
    const PHYS_LIMIT: u64;
    /// The [`PageFlags`] bits the mode can express.
    const FLAG_MASK: u64;
    /// The bits of an entry that hold the frame address of a base page or table.
    const ADDR_MASK: u64;

    /// Reads entry `idx` of the table at `table`.
    ///
    /// # Safety
    /// `table` must point to a readable table page and `idx < ENTRIES`.
    unsafe fn read(table: *const u8, idx: usize) -> u64;

    /// Writes entry `idx` of the table at `table`, in the order the CPU needs to
    /// never see a half-written present entry.
    ///
    /// # Safety
    /// `table` must point to a writable table page and `idx < ENTRIES`.
    unsafe fn write(table: *mut u8, idx: usize, entry: u64);
}

/// Classic 2-level 32-bit paging: 1024 4-byte entries per table, 4 MiB PSE pages,
/// physical addresses below 4 GiB.
#[derive(Debug, Clone, Copy)]
pub enum Classic {}

/// PAE paging: a 4-entry PDPT, then 512 8-byte entries per table, 2 MiB large
/// pages, physical addresses below 64 GiB, and the NX bit.
#[derive(Debug, Clone, Copy)]
pub enum PaeMode {}

impl sealed::Sealed for Classic {}
impl sealed::Sealed for PaeMode {}

impl Mode for Classic {
    const NAME: &'static str = "2-level";
    const ENTRIES: usize = 1024;
    const INDEX_BITS: u32 = 10;
    const LARGE_SHIFT: u32 = 22;
    const DIRS: usize = 1;
    const PHYS_LIMIT: u64 = 1 << 32;
    const FLAG_MASK: u64 = COMMON_FLAGS;
    const ADDR_MASK: u64 = 0xFFFF_F000;

    unsafe fn read(table: *const u8, idx: usize) -> u64 {
        // SAFETY: the caller guarantees a readable table and idx < 1024, so the
        // 4-byte entry lies inside the page; volatile because the CPU writes the
        // accessed and dirty bits behind the compiler's back.
        u64::from(unsafe { table.cast::<u32>().add(idx).read_volatile() })
    }

    unsafe fn write(table: *mut u8, idx: usize, entry: u64) {
        debug_assert!(entry <= u64::from(u32::MAX));
        // SAFETY: as for `read`; the entry fits 32 bits because every caller builds
        // it from a physical address checked against PHYS_LIMIT.
        unsafe { table.cast::<u32>().add(idx).write_volatile(entry as u32) }
    }
}

impl Mode for PaeMode {
    const NAME: &'static str = "PAE";
    const ENTRIES: usize = 512;
    const INDEX_BITS: u32 = 9;
    const LARGE_SHIFT: u32 = 21;
    const DIRS: usize = 4;
    const PHYS_LIMIT: u64 = 1 << 36;
    const FLAG_MASK: u64 = COMMON_FLAGS | PageFlags::NO_EXECUTE.bits();
    const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

    unsafe fn read(table: *const u8, idx: usize) -> u64 {
        // SAFETY: the caller guarantees a readable table and idx < 512, so both
        // halves of the 8-byte entry lie inside the page. The halves are read
        // separately, as a 32-bit CPU must.
        unsafe {
            let p = table.cast::<u32>().add(idx * 2);
            let low = p.read_volatile();
            let high = p.add(1).read_volatile();
            (u64::from(high) << 32) | u64::from(low)
        }
    }

    unsafe fn write(table: *mut u8, idx: usize, entry: u64) {
        // SAFETY: as for `read`. Like Linux's set_pte under PAE: when the new entry
        // is present, write the high half first so the CPU never sees a present
        // low half with a stale high half; when it is not, clear the low half
        // (with the present bit) first.
        unsafe {
            let p = table.cast::<u32>().add(idx * 2);
            if entry & P != 0 {
                p.add(1).write_volatile((entry >> 32) as u32);
                core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::Release);
                p.write_volatile(entry as u32);
            } else {
                p.write_volatile(entry as u32);
                core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::Release);
                p.add(1).write_volatile((entry >> 32) as u32);
            }
        }
    }
}

/// The large-page frame-address mask of a directory entry in mode `M`.
pub(crate) const fn large_addr_mask<M: Mode>() -> u64 {
    M::ADDR_MASK & !((1u64 << M::LARGE_SHIFT) - 1)
}
