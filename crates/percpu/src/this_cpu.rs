//! This-CPU operations (Linux's `this_cpu_read`, `this_cpu_write`,
//! `this_cpu_add`, `this_cpu_inc`, `this_cpu_dec`): one access to the
//! calling CPU's copy of a per-CPU integer, which no interrupt on that CPU
//! can split, with no preemption guard around it.
//!
//! Two backends behind one `unsafe trait`, [`ThisCpuOps`]:
//!
//! - [`SegmentOps`] (i386 only): a single instruction through `%fs`, as
//!   Linux does — `mov %fs:(p), %reg`, `add %reg, %fs:(p)` — where each
//!   CPU's `%fs` segment base is its `per_cpu_offset`, so `%fs:(p)` is that
//!   CPU's copy of `p` wherever the thread runs;
//! - [`IndexOps`] (any machine, the mock included): the offset table indexed
//!   by [`Cpu::id`] under a preemption guard, and an atomic access.
//!
//! The integers are the atomic types ([`ThisCpuPrim`], sealed): a copy is
//! written only by its CPU, through these operations, and read by others
//! with a plain atomic load.

use core::sync::atomic::{
    AtomicI8, AtomicI16, AtomicI32, AtomicIsize, AtomicU8, AtomicU16, AtomicU32, AtomicUsize,
    Ordering,
};

use kmm_hal::Cpu;

/// The integers a this-CPU operation works on: the atomic types of at most
/// a word (one instruction on i386). Sealed.
pub trait ThisCpuPrim: sealed::Sealed + Sync {
    /// The integer stored.
    type Value: Copy + core::fmt::Debug + PartialEq;
    /// One, for `inc` and `dec`.
    #[doc(hidden)]
    const ONE: Self::Value;
    /// `-v`, wrapping.
    #[doc(hidden)]
    fn neg(v: Self::Value) -> Self::Value;
    /// A relaxed load of `*p`.
    #[doc(hidden)]
    fn load(p: &Self) -> Self::Value;
    /// A relaxed store.
    #[doc(hidden)]
    fn store(p: &Self, v: Self::Value);
    /// A wrapping add.
    #[doc(hidden)]
    fn add(p: &Self, v: Self::Value);
    /// `mov %fs:(addr), %reg`.
    ///
    /// # Safety
    /// As [`ThisCpuOps::read`], with `%fs` set up.
    #[cfg(target_arch = "x86")]
    #[doc(hidden)]
    unsafe fn seg_read(addr: usize) -> Self::Value;
    /// `mov %reg, %fs:(addr)`.
    ///
    /// # Safety
    /// As [`ThisCpuOps::write`], with `%fs` set up.
    #[cfg(target_arch = "x86")]
    #[doc(hidden)]
    unsafe fn seg_write(addr: usize, v: Self::Value);
    /// `add %reg, %fs:(addr)`.
    ///
    /// # Safety
    /// As [`ThisCpuOps::add`], with `%fs` set up.
    #[cfg(target_arch = "x86")]
    #[doc(hidden)]
    unsafe fn seg_add(addr: usize, v: Self::Value);
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! prim {
    ($($atomic:ty => $v:ty, $size:literal, $reg:ident, $m:literal;)*) => { $(
        impl sealed::Sealed for $atomic {}
        impl ThisCpuPrim for $atomic {
            type Value = $v;
            const ONE: $v = 1;
            #[inline]
            fn neg(v: $v) -> $v {
                (0 as $v).wrapping_sub(v)
            }
            #[inline]
            fn load(p: &Self) -> $v {
                p.load(Ordering::Relaxed)
            }
            #[inline]
            fn store(p: &Self, v: $v) {
                p.store(v, Ordering::Relaxed)
            }
            #[inline]
            fn add(p: &Self, v: $v) {
                p.fetch_add(v, Ordering::Relaxed);
            }
            #[cfg(target_arch = "x86")]
            #[inline]
            unsafe fn seg_read(addr: usize) -> $v {
                let v: $v;
                // SAFETY: the caller's: `%fs:addr` is this CPU's live copy.
                unsafe {
                    core::arch::asm!(
                        concat!("mov {v", $m, "}, ", $size, " ptr fs:[{a}]"),
                        a = in(reg) addr, v = out($reg) v,
                        options(nostack, preserves_flags, readonly),
                    )
                };
                v
            }
            #[cfg(target_arch = "x86")]
            #[inline]
            unsafe fn seg_write(addr: usize, v: $v) {
                // SAFETY: as `seg_read`.
                unsafe {
                    core::arch::asm!(
                        concat!("mov ", $size, " ptr fs:[{a}], {v", $m, "}"),
                        a = in(reg) addr, v = in($reg) v,
                        options(nostack, preserves_flags),
                    )
                };
            }
            #[cfg(target_arch = "x86")]
            #[inline]
            unsafe fn seg_add(addr: usize, v: $v) {
                // SAFETY: as `seg_read`.
                unsafe {
                    core::arch::asm!(
                        concat!("add ", $size, " ptr fs:[{a}], {v", $m, "}"),
                        a = in(reg) addr, v = in($reg) v,
                        options(nostack),
                    )
                };
            }
        }
    )* };
}

prim! {
    AtomicU8 => u8, "byte", reg_byte, "";
    AtomicI8 => i8, "byte", reg_byte, "";
    AtomicU16 => u16, "word", reg, ":x";
    AtomicI16 => i16, "word", reg, ":x";
    AtomicU32 => u32, "dword", reg, ":e";
    AtomicI32 => i32, "dword", reg, ":e";
    AtomicUsize => usize, "dword", reg, ":e";
    AtomicIsize => isize, "dword", reg, ":e";
}

/// The this-CPU operations on a per-CPU pointer's raw cookie.
///
/// # Safety
///
/// An implementation is tied to one set of per-CPU areas (one offset table)
/// and guarantees, for every operation on `cookie`:
///
/// - **This CPU's copy.** The access goes to `cookie + per_cpu_offset(n)`,
///   where `n` is the CPU that makes the access — also if the calling thread
///   migrates just before or after: address and access are never split
///   across CPUs.
/// - **Not split by an interrupt.** An interrupt handler on that CPU sees
///   the copy before or after the operation, never in between (one
///   instruction, or an atomic access).
/// - **Atomic for others.** To another CPU the access is a relaxed atomic
///   load or store of the integer (an add: a load then a store), so other
///   CPUs may read the copy with an atomic load.
pub unsafe trait ThisCpuOps {
    /// Reads this CPU's copy.
    ///
    /// # Safety
    /// For every possible CPU `n`, `cookie + per_cpu_offset(n)` is a live,
    /// aligned `P` of the areas the implementation is tied to.
    unsafe fn read<P: ThisCpuPrim>(&self, cookie: usize) -> P::Value;

    /// Writes this CPU's copy.
    ///
    /// # Safety
    /// As [`ThisCpuOps::read`].
    unsafe fn write<P: ThisCpuPrim>(&self, cookie: usize, v: P::Value);

    /// Adds to this CPU's copy, wrapping.
    ///
    /// # Safety
    /// As [`ThisCpuOps::read`].
    unsafe fn add<P: ThisCpuPrim>(&self, cookie: usize, v: P::Value);
}

/// The this-CPU operations of any machine: the calling CPU's offset from the
/// table, under a preemption guard, then an atomic access (Linux's generic
/// `this_cpu_*`). Made by [`crate::PerCpuAreas::index_ops`].
pub struct IndexOps<'a, C: Cpu> {
    cpu: &'a C,
    offsets: &'a [usize],
}

impl<'a, C: Cpu> IndexOps<'a, C> {
    pub(crate) fn new(cpu: &'a C, offsets: &'a [usize]) -> Self {
        IndexOps { cpu, offsets }
    }

    /// Runs `f` on this CPU's copy, pinned.
    #[inline]
    fn with<P: ThisCpuPrim, R>(&self, cookie: usize, f: impl FnOnce(&P) -> R) -> R {
        let pin = self.cpu.preempt_guard();
        let off = self.offsets[pin.cpu_id()];
        let p = core::ptr::with_exposed_provenance::<P>(cookie.wrapping_add(off));
        // SAFETY: the caller's contract (`ThisCpuOps::read`): this CPU's copy
        // is a live, aligned `P`, an atomic type (shared access is fine);
        // `pin` keeps the thread on the CPU whose offset was taken.
        f(unsafe { &*p })
    }
}

// SAFETY: the offset is the calling CPU's (`Cpu` contract: ids are stable
// and unique while preemption is off, which the guard keeps until the
// access is done), and the access is one atomic operation (not split by an
// interrupt, atomic for other CPUs).
unsafe impl<C: Cpu> ThisCpuOps for IndexOps<'_, C> {
    #[inline]
    unsafe fn read<P: ThisCpuPrim>(&self, cookie: usize) -> P::Value {
        self.with::<P, _>(cookie, P::load)
    }
    #[inline]
    unsafe fn write<P: ThisCpuPrim>(&self, cookie: usize, v: P::Value) {
        self.with::<P, _>(cookie, |p| P::store(p, v))
    }
    #[inline]
    unsafe fn add<P: ThisCpuPrim>(&self, cookie: usize, v: P::Value) {
        self.with::<P, _>(cookie, |p| P::add(p, v))
    }
}

/// The i386 this-CPU operations: one instruction through `%fs`, whose
/// segment base on every CPU is that CPU's `per_cpu_offset` (Linux's
/// `percpu_to_op`). Made by [`SegmentOps::new`].
#[cfg(target_arch = "x86")]
pub struct SegmentOps<'a> {
    _areas: core::marker::PhantomData<&'a ()>,
}

#[cfg(target_arch = "x86")]
impl<'a> SegmentOps<'a> {
    /// The `%fs` operations for the areas whose offset table is `offsets`
    /// (`PerCpuAreas::offsets`).
    ///
    /// # Safety
    /// On every CPU `n` that uses the returned value (or a reference to it),
    /// the `%fs` segment base is `offsets[n]` and stays so while the value
    /// lives (the kernel loads each CPU's per-CPU segment at bring-up and
    /// never changes `%fs` in kernel mode), and the segment's limit covers
    /// every address a per-CPU pointer reaches.
    pub unsafe fn new(offsets: &'a [usize]) -> Self {
        let _ = offsets;
        SegmentOps {
            _areas: core::marker::PhantomData,
        }
    }
}

// SAFETY: `new`'s contract makes `%fs:cookie` the running CPU's copy; the
// address is formed by the instruction itself, so it never splits across a
// migration; one instruction is not split by an interrupt, and an aligned
// access of at most a word is atomic on x86.
#[cfg(target_arch = "x86")]
unsafe impl ThisCpuOps for SegmentOps<'_> {
    #[inline]
    unsafe fn read<P: ThisCpuPrim>(&self, cookie: usize) -> P::Value {
        // SAFETY: the caller's contract and `new`'s.
        unsafe { P::seg_read(cookie) }
    }
    #[inline]
    unsafe fn write<P: ThisCpuPrim>(&self, cookie: usize, v: P::Value) {
        // SAFETY: as `read`.
        unsafe { P::seg_write(cookie, v) }
    }
    #[inline]
    unsafe fn add<P: ThisCpuPrim>(&self, cookie: usize, v: P::Value) {
        // SAFETY: as `read`.
        unsafe { P::seg_add(cookie, v) }
    }
}

// SAFETY: forwards to `T`, which keeps the contract.
unsafe impl<T: ThisCpuOps + ?Sized> ThisCpuOps for &T {
    unsafe fn read<P: ThisCpuPrim>(&self, cookie: usize) -> P::Value {
        // SAFETY: the caller's contract, forwarded.
        unsafe { (**self).read::<P>(cookie) }
    }
    unsafe fn write<P: ThisCpuPrim>(&self, cookie: usize, v: P::Value) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { (**self).write::<P>(cookie, v) }
    }
    unsafe fn add<P: ThisCpuPrim>(&self, cookie: usize, v: P::Value) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { (**self).add::<P>(cookie, v) }
    }
}
