//! The one place physical addresses become pointers: `window + phys`.
//!
//! Every read of loader memory goes through [`Window::bytes`] or
//! [`Window::c_string`]; both build byte slices (so fields are decoded with
//! `from_le_bytes`, which has no alignment requirement) after checking that
//! the virtual range neither wraps nor starts at address 0.

use core::fmt;
use core::marker::PhantomData;

/// The longest string (command line, module string) the reader looks at, in
/// bytes before the NUL: a string without a NUL in its first `MAX_STRING`
/// bytes counts as absent, and its first `MAX_STRING` bytes are reserved.
pub const MAX_STRING: usize = 4096;

/// A physical range the reader cannot reach through its window: `window +
/// phys` (or its end) does not fit in a `usize`, or is address 0.
///
/// Returned before anything is read; with a window of 0 on a 32-bit kernel it
/// means a null pointer in the structure, with `PAGE_OFFSET` a range above
/// the 1 GiB the direct map can cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutOfWindow {
    /// Physical start of the range.
    pub phys: u64,
    /// Its length in bytes.
    pub len: u64,
}

impl fmt::Display for OutOfWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "multiboot: {:#x} bytes at physical {:#x} are outside the window",
            self.len, self.phys
        )
    }
}

impl core::error::Error for OutOfWindow {}

/// A NUL-terminated string in loader memory.
#[derive(Debug, Clone, Copy)]
pub(super) struct CString<'a> {
    /// The bytes before the NUL; `None` if there is no NUL in the first
    /// [`MAX_STRING`] bytes.
    pub bytes: Option<&'a [u8]>,
    /// The bytes the string occupies, NUL included (or [`MAX_STRING`]).
    pub span: u64,
}

/// Loader memory seen at `base + phys`, valid for `'a`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window<'a> {
    base: usize,
    _mem: PhantomData<&'a [u8]>,
}

impl<'a> Window<'a> {
    /// The window at virtual `base`.
    pub(super) const fn new(base: usize) -> Window<'a> {
        Window {
            base,
            _mem: PhantomData,
        }
    }

    /// The virtual start of `[phys, phys + len)`, if the whole range has a
    /// non-null, non-wrapping virtual address that a slice may span.
    fn virt(&self, phys: u64, len: u64) -> Option<*const u8> {
        let start = self.base.checked_add(usize::try_from(phys).ok()?)?;
        let len = usize::try_from(len).ok()?;
        start.checked_add(len)?;
        if start == 0 || len > isize::MAX as usize {
            return None;
        }
        // The direct-map boundary: the loader's memory belongs to no Rust
        // allocation, so the pointer takes the provenance exposed for it (the
        // kernel's identity or direct map; a host test's buffer).
        Some(core::ptr::with_exposed_provenance(start))
    }

    /// The `len` bytes at physical `phys`.
    ///
    /// # Safety
    /// The range is one the multiboot structure describes (the structure
    /// itself, the memory map, the module list, a module), so that
    /// [`super::MultibootInfo::new`]'s caller vouched it is readable at
    /// `base + phys` and unchanged for `'a`.
    pub(super) unsafe fn bytes(&self, phys: u64, len: u64) -> Result<&'a [u8], OutOfWindow> {
        let p = self.virt(phys, len).ok_or(OutOfWindow { phys, len })?;
        // SAFETY: `virt` checked the range is non-null, does not wrap and is
        // at most isize::MAX bytes; the caller vouches it is readable and
        // unchanged for 'a. A `u8` slice needs no alignment.
        Ok(unsafe { core::slice::from_raw_parts(p, len as usize) })
    }

    /// The NUL-terminated string at physical `phys`, read one byte at a time
    /// up to its NUL or [`MAX_STRING`] bytes, whichever comes first.
    ///
    /// # Safety
    /// `phys` is a string the structure describes (the command line, a
    /// module's string): [`super::MultibootInfo::new`]'s caller vouched it is
    /// readable up to its NUL at `base + phys` and unchanged for `'a`.
    pub(super) unsafe fn c_string(&self, phys: u64) -> Result<CString<'a>, OutOfWindow> {
        for n in 0..MAX_STRING as u64 {
            let at = phys.saturating_add(n);
            let p = self.virt(at, 1).ok_or(OutOfWindow { phys, len: n + 1 })?;
            // SAFETY: byte n of the string: every byte before it was not the
            // NUL, so it is still part of the string the caller vouched for.
            if unsafe { p.read() } == 0 {
                // SAFETY: the n bytes before the NUL, read above, are the
                // string itself.
                let bytes = unsafe { self.bytes(phys, n) }?;
                return Ok(CString {
                    bytes: Some(bytes),
                    span: n + 1,
                });
            }
        }
        Ok(CString {
            bytes: None,
            span: MAX_STRING as u64,
        })
    }
}
