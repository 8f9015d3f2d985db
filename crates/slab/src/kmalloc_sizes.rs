//! The kmalloc size classes (Linux's `kmalloc_sizes.h`), chosen when the
//! allocator is built: [`KmallocSizes::Dense`] (the default) or Linux 2.6's
//! table, [`KmallocSizes::Linux26`].
//!
//! | table | classes | from 1 to 256 bytes | above 256 bytes |
//! | --- | --- | --- | --- |
//! | `Dense` | 88 | every 8 bytes | eight per power of two to 32 KiB, each above 1 KiB widened to fill its slab |
//! | `Linux26` | 15 | 32, 64, 96, 128, 192, 256 | powers of two to 128 KiB |
//!
//! Above the table's largest class, `kmalloc` takes a run of exactly the
//! frames a request needs from the page allocator.
//!
//! A request takes the smallest class that holds it, so the bytes lost to
//! rounding are at most a class step: with `Dense` under 8 bytes up to 256,
//! and under an eighth of the size above. Each `Dense` class above 1 KiB is
//! widened to the largest multiple of 128 that still puts as many objects in
//! its slab (so `size-9216`, seven to a 64 KiB slab, becomes `size-9344`),
//! and its slab order is the smallest one, up to 256 KiB slabs, that wastes
//! at most 1/16 of the slab ([`crate::geometry`]'s tight fit), not Linux's
//! first order with at most 1/8 up to order 1.

use kmm_hal::PAGE_SIZE;

use crate::geometry::{MAX_OBJ_SIZE, MAX_TIGHT_ORDER, TIGHT_WASTE};

/// Which size classes `kmalloc`'s general caches have.
///
/// The DMA caches (`Gfp::DMA`) always have Linux 2.6's classes: DMA-zone
/// requests are rare, and a DMA twin for every dense class would cost more
/// metadata than it saves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KmallocSizes {
    /// 88 classes: every 8 bytes up to 256, then eight per power of two up
    /// to 32 KiB, each above 1 KiB widened to fill its slab, with slab
    /// orders (up to 256 KiB slabs) chosen to waste at most 1/16 of a slab.
    /// Heap efficiency above 90 % on uniform sizes (see
    /// `docs/benchmarks.md`).
    #[default]
    Dense,
    /// Linux 2.6's `malloc_sizes`: 32, 64, 96, 128, 192, 256, then powers of
    /// two to 128 KiB, slab orders as Linux's `calculate_slab_order` picks
    /// them. For studying Linux: what `/proc/slabinfo` showed on a 2.6
    /// kernel; it loses a quarter of a heap of uniform sizes to rounding.
    Linux26,
}

impl KmallocSizes {
    /// The classes, smallest first.
    pub const fn classes(self) -> &'static [SizeClass] {
        match self {
            KmallocSizes::Dense => &DENSE,
            KmallocSizes::Linux26 => &LINUX26,
        }
    }

    /// The largest class: `kmalloc` serves larger requests from the page
    /// allocator.
    pub const fn max_size(self) -> usize {
        match self {
            KmallocSizes::Dense => DENSE_MAX,
            KmallocSizes::Linux26 => MAX_OBJ_SIZE,
        }
    }

    /// True if the classes' slabs are laid out with the tight fit (waste at
    /// most 1/16 of a slab) rather than Linux's (at most 1/8, order 1 at most
    /// once an object fits).
    pub fn tight_fit(self) -> bool {
        self == KmallocSizes::Dense
    }
}

/// One kmalloc size class: the object size and the cache's name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SizeClass {
    /// Bytes per object.
    pub size: usize,
    name: [u8; NAME_LEN],
    dma_name: [u8; NAME_LEN],
}

impl SizeClass {
    /// The normal cache's name (`size-N`, as Linux 2.6 named them).
    pub fn name(&self) -> &str {
        text(&self.name)
    }

    /// The DMA cache's name (`size-N(DMA)`).
    pub fn dma_name(&self) -> &str {
        text(&self.dma_name)
    }
}

impl core::fmt::Debug for SizeClass {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The name bytes up to the first NUL (always ASCII: [`render`] writes them).
fn text(bytes: &[u8; NAME_LEN]) -> &str {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    core::str::from_utf8(&bytes[..len]).unwrap_or("size-?")
}

/// Room for `size-131072(DMA)`.
const NAME_LEN: usize = 17;
/// Requests up to this size are looked up by `(size - 1) >> 3`.
pub(crate) const SMALL_MAX: usize = 1024;
/// Slots of the small lookup.
pub(crate) const SMALL_SLOTS: usize = SMALL_MAX / 8;
/// Slots of the large lookup (`(size - 1) >> 7`, up to [`MAX_OBJ_SIZE`]).
pub(crate) const LARGE_SLOTS: usize = MAX_OBJ_SIZE / 128;
/// Most classes a table has.
pub(crate) const MAX_CLASSES: usize = if DENSE_LEN > LINUX26_SIZES.len() {
    DENSE_LEN
} else {
    LINUX26_SIZES.len()
};

/// Linux 2.6's `malloc_sizes`.
const LINUX26_SIZES: [usize; 15] = [
    32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131_072,
];

/// The dense table's largest class: larger requests take a run of exactly
/// the frames they need from the page allocator (less idle memory than a
/// slab of large objects, and at most a page's rounding).
pub const DENSE_MAX: usize = 32 * 1024;
/// Classes of the dense table: 32 up to 256 bytes, then eight per power of
/// two.
const DENSE_LEN: usize = 32 + 8 * (DENSE_MAX / 256).trailing_zeros() as usize;
/// The dense table's sizes.
const DENSE_SIZES: [usize; DENSE_LEN] = dense_sizes();

/// Linux 2.6's classes.
pub(crate) static LINUX26: [SizeClass; 15] = classes(LINUX26_SIZES);
/// The dense classes.
static DENSE: [SizeClass; DENSE_LEN] = classes(DENSE_SIZES);

/// The dense sizes: 8 to 256 by 8, then eight steps per power of two, each
/// class above 1 KiB widened ([`widen`]) short of the next.
const fn dense_sizes() -> [usize; DENSE_LEN] {
    let mut out = [0; DENSE_LEN];
    let mut n = 0;
    while n < 32 {
        out[n] = (n + 1) * 8;
        n += 1;
    }
    let mut base = 256;
    while base < DENSE_MAX {
        let step = base / 8;
        let mut k = 1;
        while k <= 8 {
            out[n] = base + k * step;
            n += 1;
            k += 1;
        }
        base *= 2;
    }
    // Widen each class above 1 KiB, but never up to the next one.
    let mut i = 0;
    while i + 1 < out.len() {
        if out[i] > SMALL_MAX {
            let w = widen(out[i]);
            if w < out[i + 1] {
                out[i] = w;
            }
        }
        i += 1;
    }
    out
}

/// The largest multiple of 128 bytes that still fits as many objects of
/// `size` bytes in the slab the tight fit gives them (objects above 1 KiB
/// keep their management off the slab, so a slab is objects only).
pub(crate) const fn widen(size: usize) -> usize {
    let order = tight_order_off_slab(size);
    let slab = PAGE_SIZE << order;
    let num = slab / size;
    (slab / num) & !127
}

/// The tight fit for objects whose management is off the slab: the smallest
/// order (up to [`MAX_TIGHT_ORDER`]) that wastes at most `1 / TIGHT_WASTE` of
/// the slab, else the one that wastes the smallest share (as
/// [`crate::geometry::compute`] picks it for a [`crate::geometry::Request::tight`]).
pub(crate) const fn tight_order_off_slab(size: usize) -> u32 {
    let mut best = 0;
    let mut best_waste = usize::MAX;
    let mut best_bytes = 1;
    let mut order = 0;
    while order <= MAX_TIGHT_ORDER {
        let bytes = PAGE_SIZE << order;
        if size <= bytes {
            let waste = bytes % size;
            if waste * TIGHT_WASTE <= bytes {
                return order;
            }
            // waste / bytes < best_waste / best_bytes (in 64 bits: the
            // products pass 2^32 on a 32-bit target).
            if best_waste == usize::MAX
                || (waste as u64) * (best_bytes as u64) < (best_waste as u64) * (bytes as u64)
            {
                best = order;
                best_waste = waste;
                best_bytes = bytes;
            }
        }
        order += 1;
    }
    best
}

/// The classes of `sizes`, named.
const fn classes<const N: usize>(sizes: [usize; N]) -> [SizeClass; N] {
    let mut out = [SizeClass {
        size: 0,
        name: [0; NAME_LEN],
        dma_name: [0; NAME_LEN],
    }; N];
    let mut i = 0;
    while i < N {
        out[i] = SizeClass {
            size: sizes[i],
            name: render(sizes[i], false),
            dma_name: render(sizes[i], true),
        };
        i += 1;
    }
    out
}

/// `size-N` or `size-N(DMA)`, NUL-padded.
const fn render(size: usize, dma: bool) -> [u8; NAME_LEN] {
    let mut out = [0u8; NAME_LEN];
    let prefix = b"size-";
    let mut n = 0;
    while n < prefix.len() {
        out[n] = prefix[n];
        n += 1;
    }
    let mut digits = [0u8; 8];
    let mut d = 0;
    let mut v = size;
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        out[n] = digits[d];
        n += 1;
    }
    if dma {
        let suffix = b"(DMA)";
        let mut k = 0;
        while k < suffix.len() {
            out[n] = suffix[k];
            n += 1;
            k += 1;
        }
    }
    out
}

/// The two lookups of a table: the class of a request of up to 1 KiB by
/// `(size - 1) >> 3`, of a larger one by `(size - 1) >> 7`. Exact because
/// every class up to 1 KiB is a multiple of 8 and every larger one a
/// multiple of 128 (checked in the tests).
pub(crate) const fn lookup(classes: &[SizeClass]) -> ([u8; SMALL_SLOTS], [u8; LARGE_SLOTS]) {
    let mut small = [0u8; SMALL_SLOTS];
    let mut large = [0u8; LARGE_SLOTS];
    let mut j = 0;
    while j < SMALL_SLOTS {
        small[j] = first_fit(classes, (j + 1) * 8);
        j += 1;
    }
    j = 0;
    while j < LARGE_SLOTS {
        large[j] = first_fit(classes, (j + 1) * 128);
        j += 1;
    }
    (small, large)
}

/// The index of the smallest class of at least `size` bytes (the last one
/// if none: sizes above the table's largest class are not looked up).
const fn first_fit(classes: &[SizeClass], size: usize) -> u8 {
    let mut i = 0;
    while i + 1 < classes.len() && classes[i].size < size {
        i += 1;
    }
    i as u8
}

/// The Linux 2.6 class for `size` bytes (the DMA caches' lookup).
#[inline]
pub(crate) fn index26(size: usize) -> Option<usize> {
    match size {
        0 => None,
        1..=32 => Some(0),
        33..=64 => Some(1),
        65..=96 => Some(2),
        97..=128 => Some(3),
        129..=192 => Some(4),
        193..=256 => Some(5),
        _ if size <= MAX_OBJ_SIZE => Some((usize::BITS - (size - 1).leading_zeros()) as usize - 3),
        _ => None,
    }
}

/// The alignment of a general cache's objects: the largest power of two that
/// divides the size, at most a page (so `size-96` objects are 32-aligned and
/// `size-4096` ones page-aligned).
pub(crate) const fn class_align(size: usize) -> usize {
    let a = 1usize << size.trailing_zeros();
    if a > PAGE_SIZE { PAGE_SIZE } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_lookup_exact_and_end_at_the_largest_object() {
        for sizes in [KmallocSizes::Dense, KmallocSizes::Linux26] {
            let cl = sizes.classes();
            assert!(cl.windows(2).all(|w| w[0].size < w[1].size), "{sizes:?}");
            assert_eq!(cl.last().map(|c| c.size), Some(sizes.max_size()));
            for c in cl {
                let grain = if c.size <= SMALL_MAX { 8 } else { 128 };
                assert_eq!(c.size % grain, 0, "{}", c.size);
            }
            let (small, large) = lookup(cl);
            let class = |size: usize| {
                if size <= SMALL_MAX {
                    small[(size - 1) >> 3]
                } else {
                    large[(size - 1) >> 7]
                }
            };
            for size in 1..=sizes.max_size() {
                let i = usize::from(class(size));
                assert!(cl[i].size >= size, "{sizes:?} {size}");
                assert!(i == 0 || cl[i - 1].size < size, "{sizes:?} {size}");
            }
        }
    }

    #[test]
    fn dense_steps() {
        let cl = KmallocSizes::Dense.classes();
        assert_eq!(cl.len(), MAX_CLASSES);
        assert_eq!(cl[0].size, 8);
        assert_eq!(cl[31].size, 256);
        // Every step is at most 8 bytes up to 256, then at most a fifth of
        // the class below it (an eighth of a power of two, plus what
        // widening added).
        for w in cl.windows(2) {
            assert!(w[1].size - w[0].size <= (w[0].size / 5).max(8), "{w:?}");
        }
        // Widened: 9216 holds seven to a 64 KiB slab, and so does 9344.
        assert!(cl.iter().any(|c| c.size == 9344));
        assert!(!cl.iter().any(|c| c.size == 9216));
        for c in cl.iter().filter(|c| c.size > SMALL_MAX) {
            let order = tight_order_off_slab(c.size);
            let bytes = PAGE_SIZE << order;
            assert!(c.size <= bytes, "{}", c.size);
        }
    }

    #[test]
    fn names() {
        assert_eq!(LINUX26[0].name(), "size-32");
        assert_eq!(LINUX26[14].dma_name(), "size-131072(DMA)");
        assert_eq!(DENSE[0].name(), "size-8");
        assert_eq!(DENSE[DENSE_LEN - 1].name(), "size-32768");
    }

    #[test]
    fn linux26_lookup() {
        assert_eq!(index26(0), None);
        assert_eq!(index26(1), Some(0));
        assert_eq!(index26(33), Some(1));
        assert_eq!(index26(97), Some(3));
        assert_eq!(index26(257), Some(6));
        assert_eq!(index26(4096), Some(9));
        assert_eq!(index26(131_072), Some(14));
        assert_eq!(index26(131_073), None);
        for (i, c) in LINUX26.iter().enumerate() {
            assert_eq!(index26(c.size), Some(i));
        }
    }

    #[test]
    fn alignment_of_classes() {
        assert_eq!(class_align(96), 32);
        assert_eq!(class_align(40), 8);
        assert_eq!(class_align(9344), 128);
        assert_eq!(class_align(131_072), PAGE_SIZE);
    }
}
