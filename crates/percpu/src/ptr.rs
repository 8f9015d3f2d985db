//! [`PercpuPtr`]: a per-CPU pointer (Linux's `void __percpu *`), and
//! [`Zeroable`], the types `alloc_percpu` may hand out.

use core::fmt;
use core::marker::PhantomData;

/// A per-CPU pointer: not an address but a cookie from which every CPU's
/// copy is found, CPU `n`'s at `cookie + per_cpu_offset(n)` (Linux's
/// `void __percpu *`: `per_cpu_ptr(p, n)` is `p + __per_cpu_offset[n]`).
///
/// Copyable like a raw pointer; it does not keep the memory alive, so the
/// calls that dereference one are `unsafe` (the caller vouches that it was
/// not freed), and [`crate::Percpu::free_percpu`] checks what it is given.
pub struct PercpuPtr<T> {
    cookie: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> PercpuPtr<T> {
    /// A per-CPU pointer from its raw cookie ([`PercpuPtr::raw`]).
    pub const fn from_raw(cookie: usize) -> Self {
        PercpuPtr {
            cookie,
            _t: PhantomData,
        }
    }

    /// The raw cookie.
    pub const fn raw(self) -> usize {
        self.cookie
    }

    /// The same pointer, as a pointer to a `U`.
    pub const fn cast<U>(self) -> PercpuPtr<U> {
        PercpuPtr::from_raw(self.cookie)
    }

    /// The pointer `bytes` further on (a field of a per-CPU struct).
    pub const fn byte_add(self, bytes: usize) -> Self {
        PercpuPtr::from_raw(self.cookie.wrapping_add(bytes))
    }
}

impl<T> Clone for PercpuPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for PercpuPtr<T> {}

impl<T> PartialEq for PercpuPtr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cookie == other.cookie
    }
}

impl<T> Eq for PercpuPtr<T> {}

impl<T> fmt::Debug for PercpuPtr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PercpuPtr({:#x})", self.cookie)
    }
}

/// Types for which all-zero bytes are a valid value: what `alloc_percpu`
/// hands out (its memory is zeroed, as Linux's).
///
/// # Safety
/// Every byte pattern of zeroes of `size_of::<Self>()` bytes is a valid,
/// safe `Self`.
pub unsafe trait Zeroable {}

macro_rules! zeroable {
    ($($t:ty),*) => { $(
        // SAFETY: zero is a valid value of the type.
        unsafe impl Zeroable for $t {}
    )* };
}

zeroable!(
    u8,
    u16,
    u32,
    u64,
    usize,
    i8,
    i16,
    i32,
    i64,
    isize,
    bool,
    core::sync::atomic::AtomicU8,
    core::sync::atomic::AtomicU16,
    core::sync::atomic::AtomicU32,
    core::sync::atomic::AtomicU64,
    core::sync::atomic::AtomicUsize,
    core::sync::atomic::AtomicI8,
    core::sync::atomic::AtomicI16,
    core::sync::atomic::AtomicI32,
    core::sync::atomic::AtomicI64,
    core::sync::atomic::AtomicIsize,
    core::sync::atomic::AtomicBool
);

// SAFETY: an array of zero-valid elements is zero-valid.
unsafe impl<T: Zeroable, const N: usize> Zeroable for [T; N] {}
