//! What the prebuilt `core` for i686-unknown-linux-gnu expects from the C
//! library: `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp`, and the unwinding
//! personality symbol.
//!
//! The memory functions are written with string instructions in inline
//! assembly, so the compiler cannot turn them back into calls to themselves.
//! ESI cannot be an operand on x86-32 (LLVM may use it as a base pointer), so it
//! is swapped in and out by hand around the string instruction. The register
//! allocator may still hand ESI out for a `reg` operand, so every other operand
//! the code uses while ESI is swapped names an explicit register.

use core::arch::asm;

/// Copies `n` bytes from `src` to `dest`; the ranges must not overlap.
///
/// # Safety
/// `src` must be readable and `dest` writable for `n` bytes, and the ranges must
/// not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; REP MOVSB copies forwards with
    // the direction flag clear (the ABI keeps it clear); ESI is restored.
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
/// `src` must be readable and `dest` writable for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // dest is below src or past its end: a forward copy never reads a byte
        // it already overwrote.
        // SAFETY: as for memcpy, and forward copying is safe for this overlap.
        return unsafe { memcpy(dest, src, n) };
    }
    // dest lies inside [src, src + n): copy backwards from the last byte.
    // SAFETY: the caller guarantees both ranges; with n > 0 here, the last bytes
    // are at offset n - 1; the direction flag is set for the copy and cleared
    // again, as the ABI requires.
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
/// `dest` must be writable for `n` bytes.
#[unsafe(no_mangle)]
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

/// Compares `n` bytes; returns the difference of the first differing bytes (as
/// unsigned values), or 0.
///
/// # Safety
/// Both ranges must be readable for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    let diff: i32;
    // SAFETY: the caller guarantees both ranges; REPE CMPSB stops after the first
    // differing byte, so [esi - 1] and [edi - 1] are that pair; ESI is restored.
    // `{a}` is the only `reg` operand: if it is ESI itself, the XCHGs are no-ops
    // and the advanced ESI is a discarded output.
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
/// Both ranges must be readable for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// The unwinding personality the prebuilt `core` refers to. The kernel is built
/// with `panic = "abort"`, so nothing ever unwinds and this is never called.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Exercises the memory functions through `core` (slice copies, overlapping
/// moves, fills and comparisons) and panics on a wrong result.
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
    // The shims themselves, called directly.
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
