//! Address newtypes: [`PhysAddr`], [`VirtAddr`] and [`Pfn`].
//!
//! Physical addresses are 64 bits wide everywhere (PAE reaches 64 GiB on a 32-bit
//! CPU); virtual addresses are `usize`. Every conversion that could lose bits is
//! checked and returns an [`AddrError`]; nothing wraps or truncates silently.

use core::fmt;

/// Size of a base page in bytes (4 KiB on every architecture kmm supports).
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// Why an address could not be built or converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddrError {
    /// The address is not aligned as required.
    Misaligned,
    /// The value does not fit the target type on this machine (for example a
    /// physical address above 4 GiB converted to a 32-bit `usize`).
    OutOfRange,
    /// The alignment asked for is not a power of two.
    BadAlignment,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddrError::Misaligned => "address is misaligned",
            AddrError::OutOfRange => "address out of range",
            AddrError::BadAlignment => "alignment is not a power of two",
        })
    }
}

impl core::error::Error for AddrError {}

/// Checks that `align` is a power of two.
const fn check_align(align: u64) -> Result<(), AddrError> {
    if align.is_power_of_two() {
        Ok(())
    } else {
        Err(AddrError::BadAlignment)
    }
}

/// The widest physical address any supported CPU can form (x86's architectural
/// MAXPHYADDR): physical addresses are below `2^52`.
pub const MAX_PHYS_BITS: u32 = 52;

/// A physical address, always below `2^`[`MAX_PHYS_BITS`].
///
/// Paging modes reach less (4 GiB for 2-level i386 paging, 64 GiB for PAE); the
/// page-table code rejects what its mode cannot reach.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// The zero address.
    pub const ZERO: PhysAddr = PhysAddr(0);
    /// One past the highest physical address.
    pub const LIMIT: u64 = 1 << MAX_PHYS_BITS;

    /// Makes a physical address from a raw value.
    ///
    /// # Panics
    /// If `raw` is not below [`PhysAddr::LIMIT`] (at compile time in a const
    /// context). Use [`PhysAddr::try_new`] for values from outside.
    #[inline]
    pub const fn new(raw: u64) -> PhysAddr {
        match PhysAddr::try_new(raw) {
            Ok(p) => p,
            Err(_) => panic!("physical address above 2^52"),
        }
    }

    /// Makes a physical address, or [`AddrError::OutOfRange`] if `raw` is not
    /// below [`PhysAddr::LIMIT`].
    #[inline]
    pub const fn try_new(raw: u64) -> Result<PhysAddr, AddrError> {
        if raw < PhysAddr::LIMIT {
            Ok(PhysAddr(raw))
        } else {
            Err(AddrError::OutOfRange)
        }
    }

    /// Makes a physical address without the range check.
    ///
    /// # Safety
    /// `raw` must be below [`PhysAddr::LIMIT`]; code relies on it (for example,
    /// [`PhysAddr::pfn`] assumes the frame number fits [`Pfn`]).
    pub const unsafe fn new_unchecked(raw: u64) -> PhysAddr {
        PhysAddr(raw)
    }

    /// Makes a physical address that must be aligned to `align` (a power of two)
    /// and below [`PhysAddr::LIMIT`].
    pub const fn new_aligned(raw: u64, align: u64) -> Result<PhysAddr, AddrError> {
        if let Err(e) = check_align(align) {
            return Err(e);
        }
        if raw & (align - 1) != 0 {
            return Err(AddrError::Misaligned);
        }
        PhysAddr::try_new(raw)
    }

    /// The raw value.
    #[inline]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The value as a `usize`, or [`AddrError::OutOfRange`] if it does not fit
    /// (a physical address above 4 GiB on a 32-bit target).
    pub const fn try_as_usize(self) -> Result<usize, AddrError> {
        if self.0 > usize::MAX as u64 {
            Err(AddrError::OutOfRange)
        } else {
            Ok(self.0 as usize)
        }
    }

    /// True if the address is a multiple of `align` (which must be a power of two;
    /// any other value returns false).
    pub const fn is_aligned(self, align: u64) -> bool {
        align.is_power_of_two() && self.0 & (align - 1) == 0
    }

    /// True if the address is page-aligned.
    pub const fn is_page_aligned(self) -> bool {
        self.is_aligned(PAGE_SIZE as u64)
    }

    /// Rounds down to a multiple of `align`.
    pub const fn align_down(self, align: u64) -> Result<PhysAddr, AddrError> {
        if let Err(e) = check_align(align) {
            return Err(e);
        }
        Ok(PhysAddr(self.0 & !(align - 1)))
    }

    /// Rounds up to a multiple of `align`; fails if that overflows.
    pub const fn align_up(self, align: u64) -> Result<PhysAddr, AddrError> {
        if let Err(e) = check_align(align) {
            return Err(e);
        }
        match self.0.checked_add(align - 1) {
            Some(v) => PhysAddr::try_new(v & !(align - 1)),
            None => Err(AddrError::OutOfRange),
        }
    }

    /// Adds a byte offset; `None` if the result is not below [`PhysAddr::LIMIT`].
    pub const fn checked_add(self, bytes: u64) -> Option<PhysAddr> {
        match self.0.checked_add(bytes) {
            Some(v) if v < PhysAddr::LIMIT => Some(PhysAddr(v)),
            _ => None,
        }
    }

    /// Adds a byte offset, allowing the result to equal [`PhysAddr::LIMIT`]: the
    /// exclusive end of a range. `None` beyond.
    pub const fn checked_end(self, bytes: u64) -> Option<u64> {
        match self.0.checked_add(bytes) {
            Some(v) if v <= PhysAddr::LIMIT => Some(v),
            _ => None,
        }
    }

    /// The frame that contains this address.
    #[inline]
    pub const fn pfn(self) -> Result<Pfn, AddrError> {
        let n = self.0 >> PAGE_SHIFT;
        if n > usize::MAX as u64 {
            Err(AddrError::OutOfRange)
        } else {
            Ok(Pfn(n as usize))
        }
    }

    /// Offset of the address inside its page.
    pub const fn page_offset(self) -> usize {
        (self.0 & (PAGE_SIZE as u64 - 1)) as usize
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A virtual address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct VirtAddr(usize);

impl VirtAddr {
    /// The zero address.
    pub const ZERO: VirtAddr = VirtAddr(0);

    /// Makes a virtual address from a raw value.
    #[inline]
    pub const fn new(raw: usize) -> VirtAddr {
        VirtAddr(raw)
    }

    /// Makes a virtual address that must be aligned to `align` (a power of two).
    pub const fn new_aligned(raw: usize, align: usize) -> Result<VirtAddr, AddrError> {
        if !align.is_power_of_two() {
            return Err(AddrError::BadAlignment);
        }
        if raw & (align - 1) != 0 {
            return Err(AddrError::Misaligned);
        }
        Ok(VirtAddr(raw))
    }

    /// Makes a virtual address from a `u64`, failing if it does not fit `usize`.
    pub const fn try_from_u64(raw: u64) -> Result<VirtAddr, AddrError> {
        if raw > usize::MAX as u64 {
            Err(AddrError::OutOfRange)
        } else {
            Ok(VirtAddr(raw as usize))
        }
    }

    /// The address of a pointer.
    pub fn from_ptr<T: ?Sized>(ptr: *const T) -> VirtAddr {
        VirtAddr(ptr.cast::<u8>().addr())
    }

    /// The raw value.
    #[inline]
    pub const fn as_usize(self) -> usize {
        self.0
    }

    /// The address as a raw pointer (exposed provenance: the mock exposes the
    /// host memory it backs the machine with).
    #[inline]
    pub fn as_mut_ptr<T>(self) -> *mut T {
        core::ptr::with_exposed_provenance_mut(self.0)
    }

    /// The address as a raw const pointer.
    pub fn as_ptr<T>(self) -> *const T {
        core::ptr::with_exposed_provenance(self.0)
    }

    /// True if the address is a multiple of `align` (a power of two; any other value
    /// returns false).
    pub const fn is_aligned(self, align: usize) -> bool {
        align.is_power_of_two() && self.0 & (align - 1) == 0
    }

    /// True if the address is page-aligned.
    pub const fn is_page_aligned(self) -> bool {
        self.is_aligned(PAGE_SIZE)
    }

    /// Rounds down to a multiple of `align`.
    pub const fn align_down(self, align: usize) -> Result<VirtAddr, AddrError> {
        if !align.is_power_of_two() {
            return Err(AddrError::BadAlignment);
        }
        Ok(VirtAddr(self.0 & !(align - 1)))
    }

    /// Rounds up to a multiple of `align`; fails if that overflows.
    pub const fn align_up(self, align: usize) -> Result<VirtAddr, AddrError> {
        if !align.is_power_of_two() {
            return Err(AddrError::BadAlignment);
        }
        match self.0.checked_add(align - 1) {
            Some(v) => Ok(VirtAddr(v & !(align - 1))),
            None => Err(AddrError::OutOfRange),
        }
    }

    /// Adds a byte offset; `None` on overflow.
    pub const fn checked_add(self, bytes: usize) -> Option<VirtAddr> {
        match self.0.checked_add(bytes) {
            Some(v) => Some(VirtAddr(v)),
            None => None,
        }
    }

    /// Subtracts a byte offset; `None` on underflow.
    pub const fn checked_sub(self, bytes: usize) -> Option<VirtAddr> {
        match self.0.checked_sub(bytes) {
            Some(v) => Some(VirtAddr(v)),
            None => None,
        }
    }

    /// Offset of the address inside its page.
    pub const fn page_offset(self) -> usize {
        self.0 & (PAGE_SIZE - 1)
    }
}

impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtAddr({:#x})", self.0)
    }
}

impl fmt::Display for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A page frame number: a physical address divided by [`PAGE_SIZE`], so always
/// below [`Pfn::LIMIT`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
#[repr(transparent)]
pub struct Pfn(usize);

impl Pfn {
    /// One past the highest frame number (`PhysAddr::LIMIT / PAGE_SIZE`, or
    /// `usize::MAX` on a target whose `usize` is narrower).
    pub const LIMIT: usize = {
        let l = PhysAddr::LIMIT >> PAGE_SHIFT;
        if l > usize::MAX as u64 {
            usize::MAX
        } else {
            l as usize
        }
    };

    /// Makes a frame number.
    ///
    /// # Panics
    /// If `raw` is not below [`Pfn::LIMIT`]. Use [`Pfn::try_new`] for values
    /// from outside.
    #[inline]
    pub const fn new(raw: usize) -> Pfn {
        match Pfn::try_new(raw) {
            Ok(p) => p,
            Err(_) => panic!("frame number above the physical address limit"),
        }
    }

    /// Makes a frame number, or [`AddrError::OutOfRange`] if it is not below
    /// [`Pfn::LIMIT`].
    #[inline]
    pub const fn try_new(raw: usize) -> Result<Pfn, AddrError> {
        if raw < Pfn::LIMIT {
            Ok(Pfn(raw))
        } else {
            Err(AddrError::OutOfRange)
        }
    }

    /// Makes a frame number without the range check.
    ///
    /// # Safety
    /// `raw` must be below [`Pfn::LIMIT`]: [`Pfn::phys`] relies on it.
    pub const unsafe fn new_unchecked(raw: usize) -> Pfn {
        Pfn(raw)
    }

    /// The raw value.
    #[inline]
    pub const fn as_usize(self) -> usize {
        self.0
    }

    /// The physical address of the frame's first byte (below
    /// [`PhysAddr::LIMIT`] because the frame number is below [`Pfn::LIMIT`]).
    #[inline]
    pub const fn phys(self) -> PhysAddr {
        PhysAddr((self.0 as u64) << PAGE_SHIFT)
    }

    /// The frame `n` frames further on; `None` past [`Pfn::LIMIT`].
    pub const fn checked_add(self, n: usize) -> Option<Pfn> {
        match self.0.checked_add(n) {
            Some(v) if v < Pfn::LIMIT => Some(Pfn(v)),
            _ => None,
        }
    }

    /// True if the frame number is a multiple of `2^order`.
    pub const fn is_order_aligned(self, order: u32) -> bool {
        order < usize::BITS && self.0 & ((1usize << order) - 1) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phys_alignment_helpers() {
        let a = PhysAddr::new(0x1234);
        assert_eq!(a.align_down(0x1000), Ok(PhysAddr::new(0x1000)));
        assert_eq!(a.align_up(0x1000), Ok(PhysAddr::new(0x2000)));
        assert_eq!(a.align_up(3), Err(AddrError::BadAlignment));
        assert_eq!(
            PhysAddr::new(PhysAddr::LIMIT - 1).align_up(0x1000),
            Err(AddrError::OutOfRange)
        );
        assert_eq!(
            PhysAddr::try_new(PhysAddr::LIMIT),
            Err(AddrError::OutOfRange)
        );
        assert_eq!(
            PhysAddr::new_aligned(PhysAddr::LIMIT, 0x1000),
            Err(AddrError::OutOfRange)
        );
        // SAFETY: the value is below the limit.
        let unchecked = unsafe { PhysAddr::new_unchecked(0x1000) };
        assert_eq!(unchecked, PhysAddr::new(0x1000));
        assert_eq!(
            PhysAddr::new_aligned(0x1001, 0x1000),
            Err(AddrError::Misaligned)
        );
        assert!(PhysAddr::new(0x2000).is_page_aligned());
        assert!(!PhysAddr::new(0x2000).is_aligned(0));
        assert_eq!(a.page_offset(), 0x234);
        assert_eq!(a.pfn(), Ok(Pfn::new(1)));
    }

    #[test]
    fn phys_never_truncates() {
        let high = PhysAddr::new(0x1_0000_0000);
        if usize::BITS == 32 {
            assert_eq!(high.try_as_usize(), Err(AddrError::OutOfRange));
        } else {
            assert_eq!(high.try_as_usize().map(|v| v as u64), Ok(0x1_0000_0000));
        }
        assert_eq!(PhysAddr::new(PhysAddr::LIMIT - 1).checked_add(1), None);
        assert_eq!(
            PhysAddr::new(PhysAddr::LIMIT - 1).checked_end(1),
            Some(PhysAddr::LIMIT)
        );
        assert_eq!(PhysAddr::ZERO.checked_add(u64::MAX), None);
    }

    #[test]
    #[should_panic(expected = "above 2^52")]
    fn phys_new_panics_past_the_limit() {
        let _ = PhysAddr::new(1 << 52);
    }

    #[test]
    fn virt_alignment_helpers() {
        let v = VirtAddr::new(0xC000_0123);
        assert_eq!(v.align_down(0x1000), Ok(VirtAddr::new(0xC000_0000)));
        assert_eq!(v.align_up(0x1000), Ok(VirtAddr::new(0xC000_1000)));
        assert_eq!(VirtAddr::new(usize::MAX).checked_add(1), None);
        assert_eq!(VirtAddr::new(0).checked_sub(1), None);
        assert_eq!(
            VirtAddr::new_aligned(0x10, 0x1000),
            Err(AddrError::Misaligned)
        );
        assert_eq!(VirtAddr::new_aligned(0x10, 3), Err(AddrError::BadAlignment));
        assert_eq!(v.page_offset(), 0x123);
    }

    #[test]
    fn pfn_round_trip() {
        let p = Pfn::new(0x12345);
        assert_eq!(p.phys(), PhysAddr::new(0x1234_5000));
        assert_eq!(p.phys().pfn(), Ok(p));
        assert!(Pfn::new(8).is_order_aligned(3));
        assert!(!Pfn::new(8).is_order_aligned(4));
        assert!(!Pfn::new(0).is_order_aligned(usize::BITS));
        assert_eq!(Pfn::new(Pfn::LIMIT - 1).checked_add(1), None);
        assert_eq!(Pfn::try_new(Pfn::LIMIT), Err(AddrError::OutOfRange));
        // The last frame: PhysAddr::LIMIT's last page where usize holds the
        // frame numbers, usize::MAX - 1 (far below it) on a 32-bit target.
        assert_eq!(
            Pfn::new(Pfn::LIMIT - 1).phys().as_u64(),
            (PhysAddr::LIMIT - 4096).min((usize::MAX as u64 - 1).saturating_mul(4096))
        );
    }
}
