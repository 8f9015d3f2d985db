//! The host mirror of the kernel window: every mapping the page tables make is
//! repeated with `mmap` over the memfd (in the mmap backing), and recorded in a
//! shadow map that the cross-check compares with the i386 tables.

use std::collections::BTreeMap;
use std::io;

use kmm_hal::PhysAddr;

use crate::sys;

/// One mirrored mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mirror {
    pub(crate) len: usize,
    pub(crate) pa: PhysAddr,
    pub(crate) writable: bool,
}

/// The mirror of the kernel window.
pub(crate) struct Window {
    /// Host base of the reservation (mmap backing) or of RAM (software backing).
    base: *mut u8,
    /// Reservation length, zero when nothing is reserved.
    reserved: usize,
    fd: Option<libc::c_int>,
    ram_size: usize,
    shadow: BTreeMap<usize, Mirror>,
}

// SAFETY: the raw pointer is only an address; the window is kept in a Mutex.
unsafe impl Send for Window {}

impl Window {
    /// A mirror over `fd` (mmap backing): reserves the kernel window, 4 MiB
    /// aligned, and maps the first `direct` bytes of RAM at its base.
    pub(crate) fn mmap(
        fd: libc::c_int,
        ram_size: usize,
        window: usize,
        direct: usize,
    ) -> io::Result<Window> {
        const ALIGN: usize = 4 << 20;
        let raw = sys::reserve(window + ALIGN)?;
        let base = raw.wrapping_add(raw.addr().next_multiple_of(ALIGN) - raw.addr());
        // Trim the slack so the reservation is exactly the window.
        let head = base.addr() - raw.addr();
        // SAFETY: the head and tail are parts of the reservation just made.
        unsafe {
            if head > 0 {
                sys::unmap(raw, head);
            }
            let tail = ALIGN - head;
            if tail > 0 {
                sys::unmap(base.wrapping_add(window), tail);
            }
        }
        let w = Window {
            base,
            reserved: window,
            fd: Some(fd),
            ram_size,
            shadow: BTreeMap::new(),
        };
        if direct > 0 {
            sys::map_shared(Some(base), direct, fd, 0, true)?;
        }
        let _ = base.expose_provenance();
        Ok(w)
    }

    /// A mirror that maps nothing (software backing): the window's base is RAM.
    pub(crate) fn software(ram_base: *mut u8, ram_size: usize) -> Window {
        Window {
            base: ram_base,
            reserved: 0,
            fd: None,
            ram_size,
            shadow: BTreeMap::new(),
        }
    }

    pub(crate) fn base(&self) -> usize {
        self.base.addr()
    }

    /// True if host addresses of the window can be dereferenced.
    pub(crate) fn is_mirrored(&self) -> bool {
        self.fd.is_some()
    }

    fn host(&self, va: usize) -> *mut u8 {
        self.base.wrapping_add(va - self.base.addr())
    }

    /// Mirrors a new mapping of `len` bytes at host address `va`.
    pub(crate) fn map(&mut self, va: usize, pa: PhysAddr, len: usize, writable: bool) {
        if let Some(fd) = self.fd {
            let in_ram = pa
                .checked_add(len as u64)
                .is_some_and(|end| end.as_u64() <= self.ram_size as u64);
            let r = if in_ram {
                sys::map_shared(Some(self.host(va)), len, fd, pa.as_u64(), writable).map(|_| ())
            } else {
                // Not RAM (device memory): the page stays inaccessible on the host.
                sys::map_none(self.host(va), len)
            };
            r.expect("kmm-mock: mirroring a mapping into the host window failed");
        }
        self.shadow.insert(va, Mirror { len, pa, writable });
    }

    /// Mirrors the removal of the mapping at `va`.
    pub(crate) fn unmap(&mut self, va: usize, len: usize) {
        if self.fd.is_some() {
            sys::map_none(self.host(va), len)
                .expect("kmm-mock: unmapping in the host window failed");
        }
        self.shadow.remove(&va);
    }

    /// Mirrors a protection change of the mapping at `va`.
    pub(crate) fn protect(&mut self, va: usize, writable: bool) {
        let Some(m) = self.shadow.get_mut(&va) else {
            return;
        };
        m.writable = writable;
        let (len, pa) = (m.len, m.pa);
        if self.fd.is_some()
            && pa
                .checked_add(len as u64)
                .is_some_and(|end| end.as_u64() <= self.ram_size as u64)
        {
            sys::protect(self.host(va), len, writable)
                .expect("kmm-mock: mprotect in the host window failed");
        }
    }

    /// The shadow map: host address -> mirrored mapping.
    pub(crate) fn shadow(&self) -> &BTreeMap<usize, Mirror> {
        &self.shadow
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        if self.reserved > 0 {
            // SAFETY: the reservation is ours and nothing uses it any more: the
            // machine that owned it is being dropped.
            unsafe { sys::unmap(self.base, self.reserved) };
        }
    }
}
