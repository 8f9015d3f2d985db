//! Simulated physical RAM: a sparse memfd shared with the host window, or a plain
//! host buffer in the pure-software mode.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;

use kmm_hal::{PAGE_SIZE, PhysAddr};

use crate::sys;

/// Alignment of the software backing's RAM (that of a 2-level large page).
const RAM_ALIGN: usize = 4 << 20;

/// How the machine's memory is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// RAM is a memfd; virtual mappings are mirrored into a reserved host range
    /// with `mmap`, so every mapped kernel address can be dereferenced and aliases
    /// share bytes. Sparse: only touched pages cost memory.
    Mmap,
    /// RAM is an ordinary host allocation and nothing is mirrored: the direct map
    /// can be dereferenced, other virtual addresses are reached through
    /// [`crate::MockPageTable::read`] / [`crate::MockPageTable::write`], which walk the
    /// tables. Runs under Miri.
    Software,
}

impl Backing {
    /// The default: [`Backing::Software`] under Miri, [`Backing::Mmap`] otherwise.
    pub const fn default_for_host() -> Backing {
        if cfg!(miri) {
            Backing::Software
        } else {
            Backing::Mmap
        }
    }
}

/// The machine's physical memory.
pub(crate) struct Ram {
    base: *mut u8,
    size: usize,
    kind: RamKind,
}

enum RamKind {
    Mmap { fd: libc::c_int },
    Software { layout: Layout },
}

// SAFETY: `Ram` owns its memory; the raw pointer is only a base address. Access to
// the bytes is synchronised by whoever hands out frames (the allocators), exactly
// as for physical memory.
unsafe impl Send for Ram {}
// SAFETY: as above: `&Ram` only gives out addresses.
unsafe impl Sync for Ram {}

impl Ram {
    pub(crate) fn new(size: usize, backing: Backing) -> io::Result<Ram> {
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "RAM size must be a non-zero multiple of the page size",
            ));
        }
        match backing {
            Backing::Mmap => {
                let fd = sys::memfd(size)?;
                match sys::map_shared(None, size, fd, 0, true) {
                    Ok(base) => Ok(Ram {
                        // Exposed as in the software backing: reached by address.
                        base: {
                            let _ = base.expose_provenance();
                            base
                        },
                        size,
                        kind: RamKind::Mmap { fd },
                    }),
                    Err(e) => {
                        sys::close(fd);
                        Err(e)
                    }
                }
            }
            Backing::Software => {
                // Aligned like the mmap backing's window (4 MiB), so the direct
                // map keeps the alignment physical addresses have.
                let layout = Layout::from_size_align(size, RAM_ALIGN)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "RAM too large"))?;
                // SAFETY: the layout has a non-zero size.
                let base = unsafe { alloc_zeroed(layout) };
                if base.is_null() {
                    return Err(io::Error::new(io::ErrorKind::OutOfMemory, "no host memory"));
                }
                // The allocators reach RAM through integer addresses (as a kernel
                // does); exposing the provenance makes that sound under Miri.
                let _ = base.expose_provenance();
                Ok(Ram {
                    base,
                    size,
                    kind: RamKind::Software { layout },
                })
            }
        }
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.base
    }

    pub(crate) fn fd(&self) -> Option<libc::c_int> {
        match self.kind {
            RamKind::Mmap { fd } => Some(fd),
            RamKind::Software { .. } => None,
        }
    }

    /// A pointer to `len` bytes of RAM at `pa`, or `None` if the range is not
    /// entirely inside RAM.
    pub(crate) fn ptr(&self, pa: PhysAddr, len: usize) -> Option<*mut u8> {
        let start = usize::try_from(pa.as_u64()).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.size).then(|| self.base.wrapping_add(start))
    }
}

impl Drop for Ram {
    fn drop(&mut self) {
        match self.kind {
            RamKind::Mmap { fd } => {
                // SAFETY: base/size is the mapping made in `new`, no longer used.
                unsafe { sys::unmap(self.base, self.size) };
                sys::close(fd);
            }
            RamKind::Software { layout } => {
                // SAFETY: base was allocated with this layout in `new`.
                unsafe { dealloc(self.base, layout) };
            }
        }
    }
}
