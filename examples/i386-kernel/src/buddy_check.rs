//! Exercising the buddy allocator built from the real memory map: every zone
//! and every order, zeroed allocations in low and high memory, reference
//! counting, zonelist fallback (see [`fallback`](crate::fallback)), refused
//! frees (see [`bad_free`](crate::bad_free)), then proof that every page came
//! back and coalesced.

use kmm_buddy::{Buddy, Freed, Gfp, MAX_ORDER, Watermark, Zone};
use kmm_hal::{PAGE_SIZE, Pfn};
use kmm_i386::Mode;
use kmm_page_frame::{MAX_NUMNODES, Page, PgFlags, ZoneType};

use crate::bad_free;
use crate::fallback;
use crate::highmem::HighmemWindow;
use crate::physmem::print_buddyinfo;
use crate::serial::kprintln;

/// The allocator the kernel builds.
pub type KernelBuddy<'a> = Buddy<'a, crate::smp::KernelCpu>;

/// Blocks taken per zone and order, at most.
const PER_ORDER: usize = 16;
/// Zones the allocator can have.
const MAX_ZONES: usize = MAX_NUMNODES * ZoneType::COUNT;
/// The pattern goes in one word of every 64 bytes.
const STRIDE_WORDS: usize = 16;

/// The free blocks of every zone, per order, and the free total.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    total: usize,
    free: [[usize; MAX_ORDER]; MAX_ZONES],
}

impl Snapshot {
    fn take(b: &KernelBuddy<'_>) -> Snapshot {
        let mut free = [[0; MAX_ORDER]; MAX_ZONES];
        for (row, z) in free.iter_mut().zip(b.zones()) {
            for (o, n) in row.iter_mut().enumerate() {
                *n = z.nr_free(o);
            }
        }
        Snapshot {
            total: b.free_pages_total(),
            free,
        }
    }
}

/// The word the pattern puts at word `w` of frame `pfn`.
fn pattern(pfn: usize, w: usize) -> u32 {
    (pfn as u32).wrapping_mul(0x9E37_79B9) ^ (w as u32).wrapping_mul(0x85EB_CA6B) ^ 0x5A5A_0000
}

/// Writes (`write`) or checks the pattern of frame `pfn` in the page at `p`;
/// false if a word differs.
///
/// # Safety
/// `p` points at a whole page, writable if `write`, that the caller owns.
unsafe fn pattern_page(p: *mut u32, pfn: usize, write: bool) -> bool {
    for w in (0..PAGE_SIZE / 4).step_by(STRIDE_WORDS) {
        // SAFETY: w < PAGE_SIZE / 4: inside the page the caller owns.
        let q = unsafe { p.add(w) };
        if write {
            // SAFETY: as above; the page is writable.
            unsafe { q.write_volatile(pattern(pfn, w)) };
        } else {
            // SAFETY: as above.
            let got = unsafe { q.read_volatile() };
            if got != pattern(pfn, w) {
                return false;
            }
        }
    }
    true
}

/// Writes or checks the pattern in the block of `2^order` frames at `pfn`:
/// every page of a low-memory block through its direct-map address
/// (`page_address`), the first and last page of a high-memory block through
/// the window. False if a word differs.
fn pattern_block<M: Mode + 'static>(
    b: &KernelBuddy<'_>,
    window: &HighmemWindow<M>,
    head: &Page,
    pfn: usize,
    order: usize,
    write: bool,
) -> bool {
    let n = 1usize << order;
    match b.mem().page_address(head) {
        Some(va) if !head.test(PgFlags::HIGHMEM) => (0..n).all(|i| {
            let p = va
                .as_mut_ptr::<u8>()
                .wrapping_add(i * PAGE_SIZE)
                .cast::<u32>();
            // SAFETY: the block is allocated to us and lies in the direct map
            // from `va` on; page i of it is inside.
            unsafe { pattern_page(p, pfn + i, write) }
        }),
        Some(va) => panic!("high-memory pfn {pfn:#x} has a kernel address {va}"),
        None => [0, n - 1].into_iter().all(|i| {
            window.with_frame(Pfn::new(pfn + i), |p| {
                // SAFETY: the window maps frame pfn + i, which is ours.
                unsafe { pattern_page(p.cast(), pfn + i, write) }
            })
        }),
    }
}

/// Checks an allocated block: the zone asked for, aligned, inside the zone,
/// a head with its order and one reference, every page of it neither reserved
/// nor free. Returns its frame number.
fn check_block(b: &KernelBuddy<'_>, head: &Page, order: usize, zi: usize) -> usize {
    let mem = b.mem();
    let zone = &b.zones()[zi];
    let kind = zone.kind();
    let pfn = mem
        .page_to_pfn(head)
        .expect("allocated page in mem_map")
        .as_usize();
    let end = pfn + (1 << order);
    assert_eq!(
        head.zone_type(),
        kind,
        "order-{order} block at pfn {pfn:#x} comes from the wrong zone"
    );
    let span = zone.span();
    assert!(
        pfn.is_multiple_of(1 << order) && span.contains(pfn as u64) && end as u64 <= span.end_pfn(),
        "order-{order} block {pfn:#x}..{end:#x} misaligned or outside zone {kind}"
    );
    assert!(
        head.test(PgFlags::HEAD) && head.private() == order && head.count() == 1,
        "block at pfn {pfn:#x} is not an allocated order-{order} head: {head:?}"
    );
    assert_eq!(head.test(PgFlags::HIGHMEM), kind == ZoneType::HighMem);
    for f in pfn..end {
        let p = mem.pfn_to_page(Pfn::new(f)).expect("block in mem_map");
        assert!(
            !p.flags()
                .intersects(PgFlags::RESERVED | PgFlags::BUDDY | PgFlags::PCP)
                && p.zone_type() == kind,
            "pfn {f:#x} of an allocated block: {p:?}"
        );
    }
    pfn
}

/// Linux's `zone_watermark_ok`, from the zone's public counters: would a
/// block of `order` leave zone `z` above `mark` (lowered by half for a
/// high-priority request, by another quarter for one that cannot sleep) for
/// allocations whose highest zone is `class`?
pub fn linux_watermark_ok(
    z: &Zone<'_>,
    order: usize,
    mark: Watermark,
    (high, harder): (bool, bool),
    class: ZoneType,
) -> bool {
    let mut min = z.watermark(mark) as isize;
    if high {
        min -= min / 2;
    }
    if harder {
        min -= min / 4;
    }
    let mut free = z.free_pages() as isize - (1 << order) + 1;
    if free <= min + z.lowmem_reserve(class) as isize {
        return false;
    }
    for o in 0..order {
        free -= (z.nr_free(o) as isize) << o;
        min >>= 1;
        if free <= min {
            return false;
        }
    }
    true
}

/// Asserts that zone `z` may refuse a block of `order` at watermark `mark`:
/// it has no free block that large, or Linux's watermark check fails.
fn assert_may_refuse(z: &Zone<'_>, order: usize, mark: Watermark) {
    let has_block = (order..MAX_ORDER).any(|o| z.nr_free(o) > 0);
    assert!(
        !has_block || !linux_watermark_ok(z, order, mark, (false, false), z.kind()),
        "zone {} refused an order-{order} block though it has one above the {mark:?} watermark ({} free)",
        z.kind(),
        z.free_pages()
    );
}

/// For every order: takes up to [`PER_ORDER`] blocks with `gfp` from zone
/// `zi`, checks each, writes a pattern in each, checks every pattern (blocks
/// that overlap would spoil one), and frees them, the even ones first. The
/// zone may stop giving blocks only where Linux's watermark check says so; a
/// block from a lower zone (zonelist fallback) ends the order.
fn exercise_zone<M: Mode + 'static>(
    b: &KernelBuddy<'_>,
    window: &HighmemWindow<M>,
    zi: usize,
    gfp: Gfp,
) {
    let zone = &b.zones()[zi];
    let kind = zone.kind();
    let mut counts = [0usize; MAX_ORDER];
    let mut pages = 0;
    for (order, count) in counts.iter_mut().enumerate() {
        let mut blocks = [None; PER_ORDER];
        let mut n = 0;
        while n < PER_ORDER {
            let Some(head) = b.alloc_pages(gfp | Gfp::NOWARN, order) else {
                assert_may_refuse(zone, order, Watermark::Min);
                break;
            };
            if head.zone_type() < kind {
                assert_may_refuse(zone, order, Watermark::Low);
                assert_eq!(b.free_pages_page(head, order), Ok(Freed::Released));
                break;
            }
            let pfn = check_block(b, head, order, zi);
            assert!(pattern_block(b, window, head, pfn, order, true));
            blocks[n] = Some((head, pfn));
            n += 1;
        }
        for &(head, pfn) in blocks[..n].iter().flatten() {
            assert!(
                pattern_block(b, window, head, pfn, order, false),
                "zone {kind}: the pattern of the order-{order} block at pfn {pfn:#x} changed"
            );
        }
        // Even blocks first, then odd: neighbours come back apart and merge.
        for first in [0, 1] {
            for &(head, pfn) in blocks[..n].iter().skip(first).step_by(2).flatten() {
                match b.free_pages_page(head, order) {
                    Ok(Freed::Released) => {}
                    r => panic!("freeing the order-{order} block at pfn {pfn:#x}: {r:?}"),
                }
            }
        }
        *count = n;
        pages += n << order;
    }
    kprintln!(
        "kmm: zone {kind}: blocks of order 0..10 {counts:?} ({pages} pages) allocated, in zone, patterns written and read back, freed"
    );
}

/// Dirties a page, frees it, asks for a zeroed one from the same zone and
/// checks it is zero: in low memory through the direct map, in high memory
/// through the window (where the allocator zeroes through `zero_highmem`).
fn check_zeroing<M: Mode + 'static>(b: &KernelBuddy<'_>, window: &HighmemWindow<M>, highmem: bool) {
    let (gfp, name) = if highmem {
        (Gfp::HIGHUSER, "highmem")
    } else {
        (Gfp::KERNEL, "lowmem")
    };
    let access = |page: &Page, f: &mut dyn FnMut(*mut u8)| {
        let pfn = b.mem().page_to_pfn(page).expect("page in mem_map");
        match b.mem().page_address(page) {
            Some(va) => f(va.as_mut_ptr()),
            None => window.with_frame(pfn, f),
        }
        pfn
    };
    let dirty = b.alloc_pages(gfp, 0).expect("a page to dirty");
    // SAFETY: the page is ours, mapped (direct map or window) for the call.
    let dirty_pfn = access(dirty, &mut |p| unsafe { p.write_bytes(0xA5, PAGE_SIZE) });
    assert_eq!(b.free_pages_page(dirty, 0), Ok(Freed::Released));
    let page = b.alloc_pages(gfp | Gfp::ZERO, 0).expect("a zeroed page");
    assert_eq!(page.test(PgFlags::HIGHMEM), highmem, "zeroed page zone");
    let mut zero = true;
    let pfn = access(page, &mut |p| {
        // SAFETY: the page is ours, mapped for the call; a page is u32-aligned.
        let words = unsafe { core::slice::from_raw_parts(p.cast::<u32>(), PAGE_SIZE / 4) };
        zero = words.iter().all(|&w| w == 0);
    });
    let pfn = pfn.as_usize();
    assert!(zero, "{name} page at pfn {pfn:#x} is not zeroed");
    kprintln!(
        "kmm: zeroed {name} page ok (pfn {pfn:#x}, {})",
        if pfn == dirty_pfn.as_usize() {
            "the page just dirtied"
        } else {
            "another page"
        }
    );
    assert_eq!(b.free_pages_page(page, 0), Ok(Freed::Released));
}

/// Reference counting: a second reference keeps a page allocated through one
/// free; a free page cannot be referenced, nor a reserved one. A cache-cold
/// page goes back with `free_cold_page`.
fn check_refcount(b: &KernelBuddy<'_>, kernel_pfn: Pfn) {
    let p = b.alloc_pages(Gfp::KERNEL, 0).expect("an order-0 page");
    assert!(b.get_page(p), "get_page on an allocated page");
    assert_eq!(b.free_pages_page(p, 0), Ok(Freed::StillReferenced));
    assert_eq!(b.free_pages_page(p, 0), Ok(Freed::Released));
    assert!(!b.get_page(p), "get_page on a free page");
    let kernel = b.mem().pfn_to_page(kernel_pfn).expect("kernel pfn");
    assert!(!b.get_page(kernel), "get_page on a reserved page");
    let cold = b
        .alloc_pages(Gfp::KERNEL | Gfp::COLD, 0)
        .expect("a cold page");
    assert_eq!(b.free_cold_page(cold), Ok(Freed::Released));
    kprintln!(
        "kmm: refcount ok (get_page kept a page through one free; free and reserved pages refused a reference; cold page freed)"
    );
}

/// Runs every check on the freshly built allocator; `kernel_pfn` is a frame
/// of the kernel image (reserved).
pub fn run<M: Mode + 'static>(b: &KernelBuddy<'_>, window: &HighmemWindow<M>, kernel_pfn: Pfn) {
    let initial = Snapshot::take(b);
    let plan = [
        (ZoneType::Dma, Gfp::KERNEL | Gfp::DMA),
        (ZoneType::Normal, Gfp::KERNEL),
        (ZoneType::HighMem, Gfp::HIGHUSER),
    ];
    for (kind, gfp) in plan {
        let zi = kind as usize;
        if b.zones()[zi].managed() > 0 {
            exercise_zone(b, window, zi, gfp);
        }
    }
    check_zeroing(b, window, false);
    let high = &b.zones()[ZoneType::HighMem as usize];
    if high.managed() > 0 {
        check_zeroing(b, window, true);
        kprintln!(
            "kmm: highmem zone ok ({} pages from pfn {:#x}: every order allocated and freed, reached through the fixmap window at {})",
            high.managed(),
            high.span().start_pfn,
            window.va()
        );
    } else {
        kprintln!("kmm: no highmem zone (all RAM is direct-mapped)");
    }
    check_refcount(b, kernel_pfn);
    fallback::run(b, window);
    bad_free::run(b, kernel_pfn);

    b.drain_local();
    let after = Snapshot::take(b);
    print_buddyinfo(b);
    for z in b.zones() {
        assert_eq!(
            z.pcp_pages(),
            0,
            "zone {}: pages left on per-CPU lists",
            z.kind()
        );
    }
    assert_eq!(
        after.total, initial.total,
        "free pages after the checks differ from after init"
    );
    for (zi, z) in b.zones().iter().enumerate() {
        assert!(
            after.free[zi] == initial.free[zi],
            "zone {}: free blocks per order {:?}, after init {:?}",
            z.kind(),
            after.free[zi],
            initial.free[zi]
        );
    }
    kprintln!(
        "kmm: buddy ok ({} pages free as after init, every zone's buddyinfo as after init; {} failed allocations counted)",
        after.total,
        b.failures()
    );
}
