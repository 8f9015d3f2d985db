//! Thin wrappers over the Linux calls the mock needs: memfd, mmap, mprotect.

use std::io;
use std::ptr;

/// Creates an anonymous memory file of `size` bytes (sparse until touched).
pub(crate) fn memfd(size: usize) -> io::Result<libc::c_int> {
    // SAFETY: the name is a NUL-terminated string; flags are valid.
    let fd = unsafe { libc::memfd_create(c"kmm-mock-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = libc::off_t::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "RAM too large"))?;
    // SAFETY: fd is the file just created.
    if unsafe { libc::ftruncate(fd, len) } != 0 {
        let e = io::Error::last_os_error();
        close(fd);
        return Err(e);
    }
    Ok(fd)
}

/// Closes a file descriptor.
pub(crate) fn close(fd: libc::c_int) {
    // SAFETY: closing a descriptor the caller owns.
    unsafe { libc::close(fd) };
}

/// Reserves `size` bytes of host address space, inaccessible, backed by nothing.
pub(crate) fn reserve(size: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh anonymous PROT_NONE mapping at an address the kernel picks.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

/// Maps `len` bytes of `fd` from `offset` shared, at `at` (replacing what was
/// there) or where the kernel picks.
pub(crate) fn map_shared(
    at: Option<*mut u8>,
    len: usize,
    fd: libc::c_int,
    offset: u64,
    writable: bool,
) -> io::Result<*mut u8> {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    let (addr, fixed) = match at {
        Some(a) => (a.cast(), libc::MAP_FIXED),
        None => (ptr::null_mut(), 0),
    };
    let off = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    // SAFETY: with MAP_FIXED the caller passes an address inside a reservation it
    // owns, so nothing else is replaced.
    let p = unsafe { libc::mmap(addr, len, prot, libc::MAP_SHARED | fixed, fd, off) };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

/// Replaces `len` bytes at `at` with an inaccessible reservation.
pub(crate) fn map_none(at: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: the caller passes a range inside a reservation it owns.
    let p = unsafe {
        libc::mmap(
            at.cast(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Changes the protection of `len` bytes at `at`.
pub(crate) fn protect(at: *mut u8, len: usize, writable: bool) -> io::Result<()> {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: the caller passes a mapped range inside a reservation it owns.
    if unsafe { libc::mprotect(at.cast(), len, prot) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmaps `len` bytes at `at`.
///
/// # Safety
/// Nothing may use the range afterwards.
pub(crate) unsafe fn unmap(at: *mut u8, len: usize) {
    // SAFETY: the caller owns the range and guarantees it is no longer used.
    unsafe { libc::munmap(at.cast(), len) };
}
