//! The memory functions a freestanding i386 kernel must provide: `memcpy`,
//! `memmove`, `memset`, `memcmp`, `bcmp`, and the `rust_eh_personality`
//! symbol.
//!
//! # Why a kernel needs them
//!
//! Rust's `core` does not implement these functions: the compiler emits calls
//! to them for copies, fills and comparisons (a struct move, `copy_from_slice`,
//! `==` on slices), and on a hosted target the C library provides them. A
//! kernel built for `i686-unknown-linux-gnu` with its own linker script links
//! no C library, so it must provide the symbols itself; the prebuilt `core`
//! of that target (built with unwinding) also refers to
//! `rust_eh_personality`, which the standard library would provide.
//!
//! The functions are always here on x86 (tests call them by path); the
//! `mem-symbols` feature exports them under their C names, which is what a
//! kernel turns on (kmm's `mem-symbols` feature forwards to it). **Never
//! enable it on a hosted build** (a test or a program that uses `std`): the
//! symbols would clash with the C library's and the standard library's.
//!
//! # Why they cannot call themselves
//!
//! The compiler recognises a byte loop as a copy or fill and replaces it with
//! a call to `memcpy` or `memset`: a `memcpy` written as a loop would become
//! a call to itself. These are written with string instructions (`rep
//! movsb`, `rep stosb`, `repe cmpsb`) in inline assembly, which the compiler
//! does not rewrite, and call nothing but `memcpy` from `memmove`.
//!
//! ESI cannot be an operand on x86-32 (LLVM may use it as a base pointer), so
//! it is swapped in and out by hand around the string instruction. The
//! register allocator may still hand ESI out for a `reg` operand, so every
//! other operand the code uses while ESI is swapped names an explicit
//! register.

use core::arch::asm;

/// Copies `n` bytes from `src` to `dest`; the ranges must not overlap.
///
/// # Safety
///
/// `src` must be readable and `dest` writable for `n` bytes, and the ranges
/// must not overlap.
#[cfg_attr(feature = "mem-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; REP MOVSB copies forwards
    // with the direction flag clear (the ABI keeps it clear); ESI is restored.
    unsafe {
        asm!(
            "xchg esi, {src}",
            "rep movsb",
            "mov esi, {src}",
            src = inout(reg) src => _,
            inout("edi") dest => _,
            inout("ecx") n => _,
            options(nostack, preserves_flags)
        );
    }
    dest
}

/// Copies `n` bytes from `src` to `dest`; the ranges may overlap.
///
/// # Safety
///
/// `src` must be readable and `dest` writable for `n` bytes.
#[cfg_attr(feature = "mem-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // dest is below src or past its end: a forward copy never reads a
        // byte it already overwrote.
        // SAFETY: as for memcpy, and forward copying is safe for this overlap.
        return unsafe { memcpy(dest, src, n) };
    }
    // dest lies inside [src, src + n): copy backwards from the last byte.
    // SAFETY: the caller guarantees both ranges; with n > 0 here, the last
    // bytes are at offset n - 1; the direction flag is set for the copy and
    // cleared again, as the ABI requires.
    unsafe {
        asm!(
            "xchg esi, {src}",
            "std",
            "rep movsb",
            "cld",
            "mov esi, {src}",
            src = inout(reg) src.add(n - 1) => _,
            inout("edi") dest.add(n - 1) => _,
            inout("ecx") n => _,
            options(nostack)
        );
    }
    dest
}

/// Fills `n` bytes at `dest` with the low byte of `c`.
///
/// # Safety
///
/// `dest` must be writable for `n` bytes.
#[cfg_attr(feature = "mem-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range; REP STOSB stores AL forwards.
    unsafe {
        asm!(
            "rep stosb",
            inout("edi") dest => _,
            inout("ecx") n => _,
            in("al") c as u8,
            options(nostack, preserves_flags)
        );
    }
    dest
}

/// Compares `n` bytes; returns the difference of the first differing bytes
/// (as unsigned values), or 0.
///
/// # Safety
///
/// Both ranges must be readable for `n` bytes.
#[cfg_attr(feature = "mem-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    let diff: i32;
    // SAFETY: the caller guarantees both ranges; REPE CMPSB stops after the
    // first differing byte, so [esi - 1] and [edi - 1] are that pair; ESI is
    // restored. `{a}` is the only `reg` operand: if it is ESI itself, the
    // XCHGs are no-ops and the advanced ESI is a discarded output.
    unsafe {
        asm!(
            "xchg esi, {a}",
            "repe cmpsb",
            "je 2f",
            "movzx eax, byte ptr [esi - 1]",
            "movzx edx, byte ptr [edi - 1]",
            "sub eax, edx",
            "jmp 3f",
            "2:",
            "xor eax, eax",
            "3:",
            "mov esi, {a}",
            a = inout(reg) a => _,
            out("eax") diff,
            out("edx") _,
            inout("edi") b => _,
            inout("ecx") n => _,
            options(nostack, readonly)
        );
    }
    diff
}

/// Compares `n` bytes for equality: 0 if equal, non-zero otherwise.
///
/// # Safety
///
/// Both ranges must be readable for `n` bytes.
#[cfg_attr(feature = "mem-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// The unwinding personality the prebuilt `core` refers to. A kernel is
/// built with `panic = "abort"`, so nothing ever unwinds and this is never
/// called. Exported only with `mem-symbols` (the standard library has its
/// own).
#[cfg(feature = "mem-symbols")]
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Exercises the memory functions — through `core` (slice copies,
/// overlapping moves, fills and comparisons, which call the linked symbols:
/// these with `mem-symbols`) and directly — for a kernel to run once at boot.
///
/// # Panics
///
/// On a wrong result, naming the function.
pub fn self_test() {
    use core::hint::black_box;
    let mut buf = [0u8; 96];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = i as u8;
    }
    let n = black_box(64);
    // Overlapping moves both ways (memmove).
    buf.copy_within(0..n, 8);
    assert!(
        buf[8..8 + n].iter().enumerate().all(|(i, &b)| b == i as u8),
        "memmove up"
    );
    buf.copy_within(8..8 + n, 0);
    assert!(
        buf[..n].iter().enumerate().all(|(i, &b)| b == i as u8),
        "memmove down"
    );
    // Disjoint copy (memcpy) and fill (memset).
    let mut other = [0xFFu8; 96];
    other[..n].copy_from_slice(&buf[..n]);
    black_box(&mut other)[n..].fill(black_box(0x5A));
    assert!(other[n..].iter().all(|&b| b == 0x5A), "memset");
    // Comparisons (memcmp / bcmp).
    assert!(black_box(&other[..n]) == black_box(&buf[..n]), "bcmp equal");
    other[n / 2] ^= 1;
    assert!(
        black_box(&other[..n]) != black_box(&buf[..n]),
        "bcmp differ"
    );
    let less = black_box(&buf[..n]) < black_box(&other[..n]);
    assert_eq!(less, buf[n / 2] < other[n / 2], "memcmp order");
    // The functions themselves, called directly.
    let (a, b) = (black_box(&buf[..n]), black_box(&other[..n]));
    // SAFETY: both slices are readable for n bytes.
    let (m, e, z) = unsafe {
        (
            memcmp(a.as_ptr(), b.as_ptr(), n),
            bcmp(a.as_ptr(), a.as_ptr(), n),
            memcmp(a.as_ptr(), b.as_ptr(), 0),
        )
    };
    assert_eq!(
        m.signum(),
        i32::from(a[n / 2]).cmp(&i32::from(b[n / 2])) as i32,
        "memcmp"
    );
    assert_eq!((e, z), (0, 0), "bcmp/memcmp of equal ranges");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern<const N: usize>() -> [u8; N] {
        core::array::from_fn(|i| (i * 7 + 3) as u8)
    }

    #[test]
    fn memcpy_copies_and_returns_dest() {
        let src = pattern::<37>();
        let mut dst = [0u8; 40];
        // SAFETY: 37 bytes readable and writable, disjoint.
        let r = unsafe { memcpy(dst.as_mut_ptr().add(2), src.as_ptr(), 37) };
        assert_eq!(r, dst[2..].as_mut_ptr());
        assert_eq!(&dst[2..39], &src[..]);
        assert_eq!((dst[0], dst[1], dst[39]), (0, 0, 0));
        // SAFETY: zero bytes.
        unsafe { memcpy(dst.as_mut_ptr(), src.as_ptr(), 0) };
        assert_eq!(dst[0], 0);
    }

    #[test]
    fn memmove_overlaps_both_ways() {
        for shift in 1..12usize {
            let orig = pattern::<64>();
            let mut up = orig;
            // SAFETY: both ranges inside `up` (64 bytes).
            unsafe { memmove(up.as_mut_ptr().add(shift), up.as_ptr(), 64 - shift) };
            assert_eq!(&up[shift..], &orig[..64 - shift], "up by {shift}");
            assert_eq!(&up[..shift], &orig[..shift]);
            let mut down = orig;
            // SAFETY: as above.
            unsafe { memmove(down.as_mut_ptr(), down.as_ptr().add(shift), 64 - shift) };
            assert_eq!(&down[..64 - shift], &orig[shift..], "down by {shift}");
            assert_eq!(&down[64 - shift..], &orig[64 - shift..]);
        }
        let mut buf = pattern::<8>();
        // SAFETY: zero bytes; then the whole buffer onto itself.
        unsafe {
            memmove(buf.as_mut_ptr().add(1), buf.as_ptr(), 0);
            memmove(buf.as_mut_ptr(), buf.as_ptr(), 8);
        }
        assert_eq!(buf, pattern::<8>());
    }

    #[test]
    fn memset_fills_the_low_byte() {
        let mut buf = [1u8; 20];
        // SAFETY: bytes 3..13 of `buf`.
        unsafe { memset(buf.as_mut_ptr().add(3), 0x1AB, 10) };
        assert!(buf[3..13].iter().all(|&b| b == 0xAB));
        assert!(buf[..3].iter().chain(&buf[13..]).all(|&b| b == 1));
    }

    #[test]
    fn memcmp_orders_unsigned_bytes() {
        let a = [1u8, 2, 3, 0x80];
        let b = [1u8, 2, 3, 0x7F];
        // SAFETY: both arrays are 4 bytes.
        unsafe {
            assert!(
                memcmp(a.as_ptr(), b.as_ptr(), 4) > 0,
                "0x80 > 0x7f unsigned"
            );
            assert!(memcmp(b.as_ptr(), a.as_ptr(), 4) < 0);
            assert_eq!(memcmp(a.as_ptr(), b.as_ptr(), 3), 0);
            assert_eq!(memcmp(a.as_ptr(), b.as_ptr(), 0), 0);
            assert_ne!(bcmp(a.as_ptr(), b.as_ptr(), 4), 0);
            assert_eq!(bcmp(a.as_ptr(), a.as_ptr(), 4), 0);
        }
    }

    #[test]
    fn self_test_passes() {
        self_test();
    }
}
