//! Cache geometry: object size and alignment, slab order, objects per slab,
//! where the slab management goes, colouring (Linux's `kmem_cache_create`,
//! `cache_estimate` and `calculate_slab_order`).

use kmm_hal::PAGE_SIZE;

use crate::SlabFlags;
use crate::flags::CACHE_LINE;
use crate::slab_desc::{MGMT_PER_OBJ, SlabDesc};

/// Largest slab with Linux's fit: 2^5 pages (128 KiB), which is also the
/// largest object.
pub const MAX_SLAB_ORDER: u32 = 5;
/// Largest slab with the tight fit ([`Request::tight`]): 2^6 pages (256 KiB).
pub const MAX_TIGHT_ORDER: u32 = 6;
/// Waste the tight fit accepts for objects whose management is off the slab
/// (the large ones): at most `1 / TIGHT_WASTE` of the slab.
pub const TIGHT_WASTE: usize = 16;
/// Waste the tight fit accepts for small objects (management on the slab):
/// at most `1 / TIGHT_WASTE_ON_SLAB` of the slab. Their slabs are a few
/// pages, so a higher order costs little idle memory.
pub const TIGHT_WASTE_ON_SLAB: usize = 64;
/// Largest object a cache can hold.
pub const MAX_OBJ_SIZE: usize = PAGE_SIZE << MAX_SLAB_ORDER;
/// Objects from this size on keep their slab management off the slab (Linux:
/// `PAGE_SIZE >> 3`).
pub const OFF_SLAB_MIN: usize = PAGE_SIZE >> 3;
/// Most objects in one slab (the free-list index is 16 bits).
pub const MAX_OBJS: usize = u16::MAX as usize - 1;
/// Bytes of a red zone in front of and behind each object (`debug`).
pub const RED_ZONE: usize = core::mem::size_of::<u64>();

/// The computed layout of a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// What the user asked for.
    pub obj_size: usize,
    /// Distance between objects in a slab (object, alignment padding, red zones).
    pub buffer_size: usize,
    /// Offset of the user's object inside its buffer (with red zones: the
    /// requested size's word and the front red zone).
    pub obj_offset: usize,
    /// Red zones guard the objects (`debug` with `RED_ZONE`, when they fit).
    pub red_zone: bool,
    /// Object alignment.
    pub align: usize,
    /// Slab size is `PAGE_SIZE << gfporder`.
    pub gfporder: u32,
    /// Objects per slab.
    pub num: usize,
    /// Management (descriptor, free-list index, states) kept apart from the slab.
    pub off_slab: bool,
    /// Bytes of management per slab.
    pub mgmt_size: usize,
    /// Colour step (a cache line, or the alignment if larger).
    pub colour_off: usize,
    /// Number of colours (left-over space / colour step).
    pub colour: usize,
    /// Unused bytes per slab.
    pub left_over: usize,
}

/// Object index from a byte offset in a slab with one multiply and a shift
/// instead of a division (Linux's `obj_to_index` with `reciprocal_divide`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ObjIndex {
    size: usize,
    span: usize,
    mul: u64,
}

// Every geometry `compute` accepts is exact and cannot overflow: a slab spans
// at most PAGE_SIZE << MAX_TIGHT_ORDER bytes of buffers at most MAX_OBJ_SIZE
// long, so span * size <= 2^SHIFT; and off * mul < span * (2^SHIFT / size + 1)
// <= (num + 1) * 2^SHIFT < 2^64 with num <= MAX_OBJS < 2^23.
const _: () = assert!(
    ((PAGE_SIZE << MAX_TIGHT_ORDER) as u64) * (MAX_OBJ_SIZE as u64) <= 1 << ObjIndex::SHIFT
        && (MAX_OBJS as u64) < 1 << 23
);

impl ObjIndex {
    /// The fixed-point shift: exact while `span * size <= 2^SHIFT`.
    const SHIFT: u32 = 40;

    /// Indexes `num` buffers of `size` bytes.
    pub(crate) const fn new(size: usize, num: usize) -> ObjIndex {
        // floor(off * mul / 2^SHIFT) == off / size for every off < span when
        // off * (mul * size - 2^SHIFT) < 2^SHIFT; mul * size - 2^SHIFT < size.
        // Within the limits asserted above for every geometry `compute` makes.
        debug_assert!(size > 0 && num <= MAX_OBJS);
        debug_assert!(((size * num) as u64) * (size as u64) <= 1 << Self::SHIFT);
        let span = size * num;
        ObjIndex {
            size,
            span,
            mul: (1u64 << Self::SHIFT).div_ceil(size as u64),
        }
    }

    /// The buffer index and the offset into that buffer of byte `off` of the
    /// slab's objects, or `None` past the last buffer.
    #[inline(always)]
    pub(crate) fn split(&self, off: usize) -> Option<(usize, usize)> {
        if off >= self.span {
            return None;
        }
        let idx = ((off as u64 * self.mul) >> Self::SHIFT) as usize;
        Some((idx, off - idx * self.size))
    }
}

/// Objects per slab and left-over bytes for `order`.
fn estimate(order: u32, size: usize, align: usize, off_slab: bool) -> (usize, usize) {
    let bytes = PAGE_SIZE << order;
    let desc = core::mem::size_of::<SlabDesc>();
    let mut num;
    let mgmt;
    if off_slab {
        num = (bytes / size).min(MAX_OBJS);
        mgmt = 0;
    } else {
        num = (bytes.saturating_sub(desc) / (size + MGMT_PER_OBJ)).min(MAX_OBJS);
        while num > 0 && (desc + num * MGMT_PER_OBJ).next_multiple_of(align) + num * size > bytes {
            num -= 1;
        }
        mgmt = (desc + num * MGMT_PER_OBJ).next_multiple_of(align);
    }
    let used = num * size + if num > 0 { mgmt } else { 0 };
    (num, bytes - used.min(bytes))
}

/// Bytes of management for `num` objects.
pub fn mgmt_size(num: usize, align: usize, off_slab: bool) -> usize {
    let raw = core::mem::size_of::<SlabDesc>() + num * MGMT_PER_OBJ;
    if off_slab {
        raw
    } else {
        raw.next_multiple_of(align)
    }
}

/// What a cache is laid out from ([`compute`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The object size.
    pub size: usize,
    /// The alignment asked for (0: the default, a word or, with
    /// `HWCACHE_ALIGN`, a cache line).
    pub align: usize,
    /// The creation flags (`HWCACHE_ALIGN`, `RED_ZONE` and
    /// `RECLAIM_ACCOUNT` matter here).
    pub flags: SlabFlags,
    /// Red zones where `flags` ask for them (the `debug` feature).
    pub red_zones: bool,
    /// The slab management may go off the slab (false while the allocator
    /// boots: there is no kmalloc yet to take descriptors from).
    pub off_slab: bool,
    /// The slab order wastes at most `1 / TIGHT_WASTE` of the slab
    /// (`1 / TIGHT_WASTE_ON_SLAB` for small objects) where an order up to
    /// [`MAX_TIGHT_ORDER`] can (else the least share), instead of Linux's rule
    /// (at most 1/8, and no higher than order 1 once it fits): the dense
    /// kmalloc classes ([`crate::KmallocSizes::Dense`]).
    pub tight: bool,
}

impl Request {
    /// `size`-byte objects aligned to `align` with `flags`; no red zones,
    /// management off the slab allowed.
    pub const fn new(size: usize, align: usize, flags: SlabFlags) -> Request {
        Request {
            size,
            align,
            flags,
            red_zones: false,
            off_slab: true,
            tight: false,
        }
    }

    /// The same with the tight slab fit, or Linux's.
    pub const fn tight(self, on: bool) -> Request {
        Request { tight: on, ..self }
    }

    /// The same with red zones where the flags ask for them, or not.
    pub const fn red_zones(self, on: bool) -> Request {
        Request {
            red_zones: on,
            ..self
        }
    }

    /// The same with the management kept on the slab.
    pub const fn on_slab_only(self) -> Request {
        Request {
            off_slab: false,
            ..self
        }
    }
}

/// Lays out a cache (Linux's `kmem_cache_create` and
/// `calculate_slab_order`): the object's alignment, the buffer around it
/// (red zones), the slab order and objects per slab, then where the
/// management goes and the colours. `None` if the size or alignment is
/// unusable.
pub fn compute(req: Request) -> Option<Geometry> {
    let align = object_align(&req)?;
    let buffer = buffer_layout(&req, align)?;
    let off_slab = req.off_slab && buffer.size >= OFF_SLAB_MIN;
    let slab = slab_order(&req, buffer.size, align, off_slab)?;
    Some(finish(&req, align, buffer, slab))
}

/// Phase 1: checks the request; the alignment objects get (at least a word;
/// with `HWCACHE_ALIGN` a cache line, or half, a quarter… of one for objects
/// small enough to share it).
fn object_align(req: &Request) -> Option<usize> {
    let Request { size, align, .. } = *req;
    if size == 0
        || size > MAX_OBJ_SIZE
        || (align != 0 && (!align.is_power_of_two() || align > PAGE_SIZE))
    {
        return None;
    }
    let word = core::mem::size_of::<usize>();
    let hw = if req.flags.contains(SlabFlags::HWCACHE_ALIGN) {
        let mut a = CACHE_LINE;
        while size <= a / 2 && a > word {
            a /= 2;
        }
        a
    } else {
        word
    };
    Some(hw.max(align).max(word))
}

/// An object's buffer: its size, where the object starts in it, and whether
/// red zones guard it.
#[derive(Clone, Copy)]
struct Buffer {
    size: usize,
    obj_offset: usize,
    red_zone: bool,
}

/// Phase 2: the buffer around an object. With red zones the object starts
/// two words in (the size the caller asked for, then the front zone), kept
/// aligned by making the front a whole number of alignment units, and the
/// back zone follows it; objects too big for zones go without them, as in
/// Linux.
fn buffer_layout(req: &Request, align: usize) -> Option<Buffer> {
    let zoned = |red: bool| {
        let off = if red { (2 * RED_ZONE).max(align) } else { 0 };
        let mut b = (off + req.size).next_multiple_of(align);
        if red {
            b = (b + RED_ZONE).next_multiple_of(align);
        }
        Buffer {
            size: b,
            obj_offset: off,
            red_zone: red,
        }
    };
    let mut buffer = zoned(req.red_zones && req.flags.contains(SlabFlags::RED_ZONE));
    if buffer.red_zone && buffer.size > MAX_OBJ_SIZE {
        buffer = zoned(false);
    }
    (buffer.size <= MAX_OBJ_SIZE).then_some(buffer)
}

/// A slab's order, objects and waste.
#[derive(Clone, Copy)]
struct SlabSize {
    gfporder: u32,
    num: usize,
    left_over: usize,
    off_slab: bool,
}

/// Phase 3: the smallest order whose waste is at most an eighth of the slab
/// (or order 1, or order 0 for `RECLAIM_ACCOUNT` caches), as Linux's
/// `calculate_slab_order`; with [`Request::tight`], the smallest up to
/// [`MAX_TIGHT_ORDER`] whose waste is at most `1 / TIGHT_WASTE` of the slab
/// (`1 / TIGHT_WASTE_ON_SLAB` with the management on it), else the one
/// wasting the least share.
fn slab_order(req: &Request, size: usize, align: usize, off_slab: bool) -> Option<SlabSize> {
    let mut best: Option<SlabSize> = None;
    let max = if req.tight {
        MAX_TIGHT_ORDER
    } else {
        MAX_SLAB_ORDER
    };
    for order in 0..=max {
        let (num, left_over) = estimate(order, size, align, off_slab);
        if num == 0 {
            continue;
        }
        let this = SlabSize {
            gfporder: order,
            num,
            left_over,
            off_slab,
        };
        let bytes = PAGE_SIZE << order;
        if req.tight {
            let divisor = if off_slab {
                TIGHT_WASTE
            } else {
                TIGHT_WASTE_ON_SLAB
            };
            if left_over * divisor <= bytes {
                return Some(this);
            }
            // left_over / bytes below the best share so far (in 64 bits:
            // the products pass 2^32 on a 32-bit target).
            let better = best.is_none_or(|b| {
                (left_over as u64) * ((PAGE_SIZE << b.gfporder) as u64)
                    < (b.left_over as u64) * (bytes as u64)
            });
            if better {
                best = Some(this);
            }
            continue;
        }
        best = Some(this);
        if req.flags.contains(SlabFlags::RECLAIM_ACCOUNT) || order >= 1 || left_over * 8 <= bytes {
            break;
        }
    }
    best
}

/// Phase 4: the management (kept on the slab after all if it fits in the
/// waste) and the colours the rest of the waste gives.
fn finish(req: &Request, align: usize, buffer: Buffer, slab: SlabSize) -> Geometry {
    let SlabSize {
        gfporder,
        num,
        mut left_over,
        mut off_slab,
    } = slab;
    let mut mgmt = mgmt_size(num, align, off_slab);
    if off_slab && left_over >= mgmt.next_multiple_of(align) {
        off_slab = false;
        mgmt = mgmt_size(num, align, false);
        left_over -= mgmt;
    }
    let colour_off = CACHE_LINE.max(align);
    Geometry {
        obj_size: req.size,
        buffer_size: buffer.size,
        obj_offset: buffer.obj_offset,
        red_zone: buffer.red_zone,
        align,
        gfporder,
        num,
        off_slab,
        mgmt_size: mgmt,
        colour_off,
        colour: left_over / colour_off,
        left_over,
    }
}

/// The largest per-CPU array limit [`array_sizes`] gives.
pub const MAX_ARRAY_LIMIT: usize = 120;

/// Per-CPU array sizes for objects of `size` bytes (Linux's
/// `enable_cpucache`): (limit, batchcount, shared limit).
pub fn array_sizes(size: usize, cpus: usize) -> (usize, usize, usize) {
    let limit: usize = if size > 131_072 {
        1
    } else if size > PAGE_SIZE {
        8
    } else if size > 1024 {
        24
    } else if size > 256 {
        54
    } else {
        MAX_ARRAY_LIMIT
    };
    let batch = limit.div_ceil(2);
    let shared = if cpus > 1 && size <= PAGE_SIZE {
        8 * batch
    } else {
        0
    };
    (limit, batch, shared)
}

#[cfg(test)]
mod tests {
    #[test]
    fn obj_index_divides_exactly() {
        // Under Miri a sample: it checks the arithmetic, the native run the
        // coverage.
        let (every, step) = if cfg!(miri) { (37, 4099) } else { (1, 1) };
        for size in (1..=300)
            .step_by(every)
            .chain([4096, 4104, 8192, 32_768, 65_600, 131_072])
        {
            let num = (MAX_OBJ_SIZE / size).clamp(1, MAX_OBJS);
            let ix = super::ObjIndex::new(size, num);
            for off in (0..size * num)
                .step_by(size.div_ceil(64).max(step))
                .chain([size * num - 1])
            {
                assert_eq!(
                    ix.split(off),
                    Some((off / size, off % size)),
                    "size {size} off {off}"
                );
            }
            assert_eq!(ix.split(size * num), None);
            assert_eq!(ix.split(usize::MAX), None);
        }
    }

    use super::*;

    #[test]
    fn small_objects_on_slab() {
        let g = compute(Request::new(32, 0, SlabFlags::HWCACHE_ALIGN)).unwrap();
        assert_eq!(
            (g.buffer_size, g.align, g.gfporder, g.off_slab),
            (32, 32, 0, false)
        );
        assert!(g.num * 32 + g.mgmt_size <= PAGE_SIZE);
        assert!(g.left_over < 32 + g.colour_off);
        let g = compute(Request::new(20, 0, SlabFlags::empty())).unwrap();
        assert_eq!(
            g.buffer_size,
            20usize.next_multiple_of(core::mem::size_of::<usize>()),
            "word aligned"
        );
    }

    #[test]
    fn large_objects_off_slab() {
        let g = compute(Request::new(1024, 0, SlabFlags::empty())).unwrap();
        assert!(g.off_slab);
        assert_eq!((g.gfporder, g.num), (0, 4));
        let g = compute(Request::new(3000, 0, SlabFlags::empty())).unwrap();
        assert!(g.num >= 1);
        assert!(g.left_over * 8 <= PAGE_SIZE << g.gfporder || g.gfporder >= 1);
        let g = compute(Request::new(MAX_OBJ_SIZE, 0, SlabFlags::empty())).unwrap();
        assert_eq!((g.gfporder, g.num), (MAX_SLAB_ORDER, 1));
        // Without kmalloc (bootstrap) management stays on the slab.
        let g = compute(Request::new(1024, 0, SlabFlags::empty()).on_slab_only()).unwrap();
        assert!(!g.off_slab);
        // Three fit in a page with a quarter wasted: an order-1 slab holds 7.
        assert_eq!((g.gfporder, g.num), (1, 7));
    }

    #[test]
    fn bad_requests() {
        assert!(compute(Request::new(0, 0, SlabFlags::empty())).is_none());
        assert!(compute(Request::new(MAX_OBJ_SIZE + 1, 0, SlabFlags::empty())).is_none());
        assert!(compute(Request::new(64, 3, SlabFlags::empty())).is_none());
        assert!(compute(Request::new(64, PAGE_SIZE * 2, SlabFlags::empty())).is_none());
    }

    #[test]
    fn alignment_and_red_zones() {
        let g = compute(Request::new(100, 256, SlabFlags::empty())).unwrap();
        assert_eq!((g.align, g.buffer_size), (256, 256));
        let g = compute(Request::new(24, 0, SlabFlags::RED_ZONE).red_zones(true)).unwrap();
        assert_eq!(g.obj_offset, 16, "the requested size, then the front zone");
        assert_eq!(g.buffer_size, 16 + 24 + 8);
        let g = compute(Request::new(24, 0, SlabFlags::RED_ZONE)).unwrap();
        assert_eq!(g.obj_offset, 0, "red zones only with the debug feature");
    }

    #[test]
    fn linux_array_sizes() {
        assert_eq!(array_sizes(32, 1), (120, 60, 0));
        assert_eq!(array_sizes(512, 2), (54, 27, 216));
        assert_eq!(array_sizes(2048, 4), (24, 12, 96));
        assert_eq!(array_sizes(8192, 4), (8, 4, 0));
        assert_eq!(array_sizes(1 << 20, 4), (1, 1, 0));
    }
}
