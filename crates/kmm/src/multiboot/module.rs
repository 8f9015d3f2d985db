//! Boot modules (flag bit 3): the files the loader placed in memory beside
//! the kernel (an initrd, a ramdisk, a program), each with a string.

use core::fmt;
use core::iter::FusedIterator;
use core::ops::Range;

use super::mmap::le_u32;
use super::window::{OutOfWindow, Window};

/// Bytes of one entry of the module list: `mod_start`, `mod_end`, `string`,
/// and a reserved word.
pub(super) const MODULE_ENTRY: u64 = 16;

/// One boot module, as its entry in the module list describes it.
#[derive(Clone, Copy)]
pub struct Module<'a> {
    start: u32,
    end: u32,
    string: u32,
    window: Window<'a>,
}

impl<'a> Module<'a> {
    /// `mod_start`: physical address of the module's first byte.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// `mod_end`: physical address just past the module's last byte.
    pub fn end(&self) -> u32 {
        self.end
    }

    /// The module's physical range, `mod_start..mod_end` (empty if the loader
    /// put `mod_end` below `mod_start`).
    pub fn range(&self) -> Range<u64> {
        u64::from(self.start)..u64::from(self.end.max(self.start))
    }

    /// `string`: physical address of the module's NUL-terminated string (0
    /// is taken as "no string").
    pub fn string_addr(&self) -> u32 {
        self.string
    }

    /// The module's bytes, borrowed from loader memory.
    pub fn data(&self) -> Result<&'a [u8], OutOfWindow> {
        let r = self.range();
        // SAFETY: mod_start..mod_end is memory the structure describes, which
        // `MultibootInfo::new`'s caller vouched readable for 'a.
        unsafe { self.window.bytes(r.start, r.end - r.start) }
    }

    /// The module's string (often its file name and arguments) without the
    /// NUL; `None` if there is none, it is outside the window, or it has no
    /// NUL within [`super::MAX_STRING`] bytes.
    pub fn string_bytes(&self) -> Option<&'a [u8]> {
        if self.string == 0 {
            return None;
        }
        // SAFETY: the module's string is part of what the structure
        // describes, vouched for by `MultibootInfo::new`'s caller.
        unsafe { self.window.c_string(self.string.into()) }
            .ok()?
            .bytes
    }

    /// The module's string as UTF-8 (`None` as for
    /// [`Module::string_bytes`], or if it is not UTF-8).
    pub fn string(&self) -> Option<&'a str> {
        core::str::from_utf8(self.string_bytes()?).ok()
    }

    /// The physical range of the module's string, NUL included (see
    /// [`super::MAX_STRING`] for a string without one); empty if there is no
    /// string.
    pub(super) fn string_range(&self) -> Result<Range<u64>, OutOfWindow> {
        let phys = u64::from(self.string);
        if phys == 0 {
            return Ok(0..0);
        }
        // SAFETY: as in `string_bytes`.
        let s = unsafe { self.window.c_string(phys) }?;
        Ok(phys..phys + s.span)
    }
}

impl fmt::Debug for Module<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("start", &format_args!("{:#x}", self.start))
            .field("end", &format_args!("{:#x}", self.end))
            .field("string", &self.string())
            .finish()
    }
}

/// The boot modules, in the loader's order (see
/// [`super::MultibootInfo::modules`]).
#[derive(Debug, Clone)]
pub struct Modules<'a> {
    /// The module list entries not yet yielded.
    list: &'a [u8],
    window: Window<'a>,
}

impl<'a> Modules<'a> {
    pub(super) fn new(list: &'a [u8], window: Window<'a>) -> Modules<'a> {
        Modules { list, window }
    }
}

impl<'a> Iterator for Modules<'a> {
    type Item = Module<'a>;

    fn next(&mut self) -> Option<Module<'a>> {
        let (entry, rest) = self.list.split_at_checked(MODULE_ENTRY as usize)?;
        self.list = rest;
        Some(Module {
            start: le_u32(entry, 0)?,
            end: le_u32(entry, 4)?,
            string: le_u32(entry, 8)?,
            window: self.window,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.list.len() / MODULE_ENTRY as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Modules<'_> {}

impl FusedIterator for Modules<'_> {}
