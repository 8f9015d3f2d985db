//! The `debug` feature, like `slub_debug`: red zones around objects, poisoning
//! of free objects checked when they are handed out again, double-free reports,
//! and full cache validation. Every report names the cache, the object and the
//! offence; the last few are kept in [`Reports`] (this module's ring) and can
//! be read back. The checks are functions of a cache and an object; the
//! allocator calls them and records what they find.

use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

use kmm_hal::Cpu;
use kmm_hal::sync::IrqSpinLock;

use crate::cache::KmemCache;
use crate::slab_desc::{OBJ_ALLOCATED, OBJ_FREE, OBJ_TRANSIT};
use crate::{SlabError, SlabFlags};

/// Red-zone word of a free object.
pub const RED_INACTIVE: u64 = 0x09F9_1102_9D74_E35B;
/// Red-zone word of an allocated object.
pub const RED_ACTIVE: u64 = 0xD841_56C5_6356_88C0;
/// Fill of an allocated object's bytes past the size the caller asked for, up
/// to the back red zone (SLUB's `SLUB_RED_ACTIVE`): checked on free like the
/// red zones.
pub const RED_SLACK: u8 = 0xcc;
/// Poison byte of a free object.
pub const POISON_FREE: u8 = 0x6b;
/// Last poison byte of a free object.
pub const POISON_END: u8 = 0xa5;

/// What went wrong with an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Offence {
    /// Freed while already free.
    DoubleFree,
    /// A red zone was overwritten (the object was overrun or underrun).
    RedZone,
    /// A free object's poison was overwritten (written after free).
    UseAfterFree,
    /// A slab's bookkeeping disagrees with its objects.
    Inconsistent,
}

/// One report: which cache, which object, what offence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebugReport {
    /// The cache's name.
    pub cache: &'static str,
    /// The object's address.
    pub object: usize,
    /// The offence.
    pub offence: Offence,
}

impl fmt::Display for DebugReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.offence {
            Offence::DoubleFree => "double free",
            Offence::RedZone => "red zone overwritten",
            Offence::UseAfterFree => "poison overwritten: written after free",
            Offence::Inconsistent => "slab bookkeeping inconsistent",
        };
        write!(
            f,
            "slab error in cache {}: object {:#x}: {what}",
            self.cache, self.object
        )
    }
}

/// Reports kept for reading back.
pub(crate) const KEEP: usize = 16;

/// The report ring: the last [`KEEP`] reports, how many there were, and the
/// hook called with each. Both locks are IRQ-safe: a report can be made in
/// an interrupt handler (a double free there).
pub(crate) struct Reports {
    ring: IrqSpinLock<[Option<DebugReport>; KEEP]>,
    count: AtomicUsize,
    hook: IrqSpinLock<Option<fn(&DebugReport)>>,
}

impl Reports {
    /// No reports, no hook.
    pub(crate) const fn new() -> Reports {
        Reports {
            ring: IrqSpinLock::new("slab debug reports", [None; KEEP]),
            count: AtomicUsize::new(0),
            hook: IrqSpinLock::new("slab report hook", None),
        }
    }

    /// Every report so far into `out`, oldest first (up to the last
    /// [`KEEP`]); returns how many there were in all.
    pub(crate) fn read<C: Cpu>(&self, cpu: &C, out: &mut [Option<DebugReport>; KEEP]) -> usize {
        let ring = self.ring.lock_irqsave(cpu);
        let n = self.count.load(Ordering::Relaxed);
        let kept = n.min(KEEP);
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = if i < kept {
                ring[(n - kept + i) % KEEP]
            } else {
                None
            };
        }
        n
    }

    /// The most recent report.
    pub(crate) fn last<C: Cpu>(&self, cpu: &C) -> Option<DebugReport> {
        let ring = self.ring.lock_irqsave(cpu);
        let n = self.count.load(Ordering::Relaxed);
        n.checked_sub(1).and_then(|i| ring[i % KEEP])
    }

    /// Sets the function called with every report.
    pub(crate) fn set_hook<C: Cpu>(&self, cpu: &C, hook: Option<fn(&DebugReport)>) {
        *self.hook.lock_irqsave(cpu) = hook;
    }

    /// Records a report, then calls the hook with nothing held: the
    /// function pointer is copied out and both locks dropped before the
    /// call, so the hook may allocate, read the reports or report again
    /// (see `SlabAllocator::set_report_hook`). Callers hold no allocator lock
    /// and no CPU's array.
    pub(crate) fn record<C: Cpu>(&self, cpu: &C, r: DebugReport) {
        {
            let mut ring = self.ring.lock_irqsave(cpu);
            let n = self.count.fetch_add(1, Ordering::Relaxed);
            ring[n % KEEP] = Some(r);
        }
        let hook = *self.hook.lock_irqsave(cpu);
        if let Some(h) = hook {
            h(&r);
        }
    }
}

/// Prepares a buffer of a new slab (red zones, poison).
#[inline]
pub(crate) fn on_new(c: &KmemCache, buf: usize) {
    if !cfg!(feature = "debug") {
        return;
    }
    let obj = buf + c.geo().obj_offset;
    if c.geo().red_zone {
        set_red(c, obj, RED_INACTIVE);
    }
    if c.flags().contains(SlabFlags::POISON) {
        poison(c, obj);
    }
}

/// Checks an object being handed out — poison intact, red zones inactive —
/// and passes each problem found to `report`; then marks the red zones
/// active and records the `requested` size (see [`set_requested`]).
#[inline]
pub(crate) fn on_alloc(
    c: &KmemCache,
    obj: usize,
    requested: usize,
    mut report: impl FnMut(Offence),
) {
    if !cfg!(feature = "debug") {
        return;
    }
    if c.flags().contains(SlabFlags::POISON) && !poison_ok(c, obj) {
        report(Offence::UseAfterFree);
    }
    if c.geo().red_zone {
        if red(c, obj) != (RED_INACTIVE, RED_INACTIVE) {
            report(Offence::RedZone);
        }
        set_red(c, obj, RED_ACTIVE);
        set_requested(c, obj, requested);
    }
}

/// Records that the caller asked for `size` bytes of the object `obj` just
/// handed out (kmalloc's request, or krealloc's new size in place), so a
/// write past them is caught on free even inside the object (SLUB's
/// `orig_size`). `size` is at most the object size.
#[inline]
pub(crate) fn set_requested(c: &KmemCache, obj: usize, size: usize) {
    if !cfg!(feature = "debug") || !c.geo().red_zone {
        return;
    }
    debug_assert!(size <= c.geo().obj_size);
    set_requested_unchecked(c, obj, size);
}

/// Checks an object being freed: red zones active. A damaged object is
/// passed to `report`, counted, and not freed (`Corrupted`); a sound one is
/// poisoned.
#[inline]
pub(crate) fn on_free(
    c: &KmemCache,
    obj: usize,
    report: impl FnOnce(Offence),
) -> Result<(), SlabError> {
    if !cfg!(feature = "debug") {
        return Ok(());
    }
    if c.geo().red_zone {
        if !zones_ok(c, obj, RED_ACTIVE) {
            report(Offence::RedZone);
            c.count_error();
            return Err(SlabError::Corrupted);
        }
        set_red(c, obj, RED_INACTIVE);
    }
    if c.flags().contains(SlabFlags::POISON) {
        poison(c, obj);
    }
    Ok(())
}

/// The checks of `validate_cache` on a cache's lists (their lock held).
pub(crate) fn check_lists(
    c: &KmemCache,
    l: &crate::slab_desc::Lists,
) -> Result<usize, DebugReport> {
    let report = |object, offence| DebugReport {
        cache: c.name(),
        object,
        offence,
    };
    let mut checked = 0;
    let lists = [
        (&l.full, crate::slab_desc::SlabList::Full),
        (&l.partial, crate::slab_desc::SlabList::Partial),
        (&l.free, crate::slab_desc::SlabList::Free),
    ];
    for (list, kind) in lists {
        for slab in list.iter() {
            let ok_list = match kind {
                crate::slab_desc::SlabList::Full => slab.inuse(l) == slab.num(),
                crate::slab_desc::SlabList::Partial => {
                    slab.inuse(l) > 0 && slab.inuse(l) < slab.num()
                }
                crate::slab_desc::SlabList::Free => slab.inuse(l) == 0,
            };
            if !ok_list || slab.list(l) != kind {
                return Err(report(slab.s_mem, Offence::Inconsistent));
            }
            let mut allocated = 0;
            for i in 0..slab.num() {
                let obj = slab.s_mem + i * c.geo().buffer_size + c.geo().obj_offset;
                let state = slab.state(i);
                let seen = state.load(Ordering::Acquire);
                if seen != OBJ_FREE {
                    allocated += 1;
                }
                if let Some(offence) = object_offence(c, obj, seen) {
                    // Its owner on another CPU may have moved the object on
                    // while it was read (the lists lock does not cover
                    // objects out of the slab): it is damaged only if it
                    // fails again in the same state, unchanged across the
                    // second look (a whole free-and-allocate cycle in between
                    // leaves its zones whole).
                    let now = state.load(Ordering::Acquire);
                    if now == seen
                        && object_offence(c, obj, now).is_some()
                        && state.load(Ordering::Acquire) == seen
                    {
                        return Err(report(obj, offence));
                    }
                }
                checked += 1;
            }
            if allocated > slab.inuse(l) {
                return Err(report(slab.s_mem, Offence::Inconsistent));
            }
        }
    }
    Ok(checked)
}

/// What is wrong with an object of a slab whose state byte read `state`, if
/// anything: an allocated one's red zones and slack, a free one's poison, an
/// unknown state byte. An object in transit (its owner rewriting its zones) is
/// not judged.
fn object_offence(c: &KmemCache, obj: usize, state: u8) -> Option<Offence> {
    let debug = cfg!(feature = "debug");
    match state {
        OBJ_ALLOCATED if debug && !zones_ok(c, obj, RED_ACTIVE) => Some(Offence::RedZone),
        OBJ_FREE if debug && c.flags().contains(SlabFlags::POISON) && !poison_ok(c, obj) => {
            Some(Offence::UseAfterFree)
        }
        OBJ_ALLOCATED | OBJ_FREE => None,
        OBJ_TRANSIT if debug => None,
        _ => Some(Offence::Inconsistent),
    }
}

fn red(c: &KmemCache, obj: usize) -> (u64, u64) {
    let (front, back) = red_addrs(c, obj);
    // SAFETY: both words lie inside the object's buffer (see `geometry`), which
    // belongs to a live slab; unaligned reads are fine.
    unsafe {
        (
            core::ptr::with_exposed_provenance::<u64>(front).read_unaligned(),
            core::ptr::with_exposed_provenance::<u64>(back).read_unaligned(),
        )
    }
}

fn set_red(c: &KmemCache, obj: usize, v: u64) {
    let (front, back) = red_addrs(c, obj);
    // SAFETY: as in `red`.
    unsafe {
        core::ptr::with_exposed_provenance_mut::<u64>(front).write_unaligned(v);
        core::ptr::with_exposed_provenance_mut::<u64>(back).write_unaligned(v);
    }
}

/// Where an object's requested size is kept: the word before its front red
/// zone (`geometry` makes the front of a zoned buffer two words).
fn requested_addr(obj: usize) -> usize {
    obj - 2 * crate::geometry::RED_ZONE
}

/// Records a request of `size` bytes and fills the bytes from there to the
/// back red zone with [`RED_SLACK`].
fn set_requested_unchecked(c: &KmemCache, obj: usize, size: usize) {
    let end = back_zone(c.geo());
    // SAFETY: the size word lies in the buffer's front (see `requested_addr`),
    // the slack in the object and its padding before the back zone, all in a
    // live slab; the object is being handed out, so nobody else writes it.
    unsafe {
        core::ptr::with_exposed_provenance_mut::<u64>(requested_addr(obj))
            .write_unaligned(size as u64);
        core::ptr::write_bytes(
            core::ptr::with_exposed_provenance_mut::<u8>(obj + size),
            RED_SLACK,
            end - size,
        );
    }
}

/// The red zones hold `word` and, for an allocated object (`RED_ACTIVE`), the
/// recorded request is sane and every byte past it up to the back zone still
/// holds [`RED_SLACK`]. True for a cache without red zones.
fn zones_ok(c: &KmemCache, obj: usize, word: u64) -> bool {
    if !c.geo().red_zone {
        return true;
    }
    if red(c, obj) != (word, word) {
        return false;
    }
    if word != RED_ACTIVE {
        return true;
    }
    // SAFETY: as in `set_requested`; read only.
    let size =
        unsafe { core::ptr::with_exposed_provenance::<u64>(requested_addr(obj)).read_unaligned() };
    let end = back_zone(c.geo()) as u64;
    if size == 0 || size > c.geo().obj_size as u64 {
        return false;
    }
    let size = size as usize;
    // SAFETY: as in `set_requested`; `size <= obj_size <= end`.
    let slack = unsafe {
        core::slice::from_raw_parts(
            core::ptr::with_exposed_provenance::<u8>(obj + size),
            end as usize - size,
        )
    };
    slack.iter().all(|&b| b == RED_SLACK)
}

fn red_addrs(c: &KmemCache, obj: usize) -> (usize, usize) {
    (obj - crate::geometry::RED_ZONE, obj + back_zone(c.geo()))
}

/// Where the back red zone starts, from the object: right after the object
/// rounded up to the cache's alignment, as `geometry` lays the buffer out (the
/// zone is the buffer's last `RED_ZONE` bytes before its padding). Rounding to
/// 8 instead overran 4-aligned buffers on 32-bit targets.
fn back_zone(g: &crate::geometry::Geometry) -> usize {
    g.obj_size.next_multiple_of(g.align)
}

fn poison(c: &KmemCache, obj: usize) {
    let n = c.geo().obj_size;
    // SAFETY: the object's bytes belong to a live slab and nobody holds the
    // object (it is free).
    unsafe {
        let p = core::ptr::with_exposed_provenance_mut::<u8>(obj);
        core::ptr::write_bytes(p, POISON_FREE, n - 1);
        p.add(n - 1).write(POISON_END);
    }
}

fn poison_ok(c: &KmemCache, obj: usize) -> bool {
    let n = c.geo().obj_size;
    // SAFETY: as in `poison`; read only.
    let bytes =
        unsafe { core::slice::from_raw_parts(core::ptr::with_exposed_provenance::<u8>(obj), n) };
    bytes[..n - 1].iter().all(|&b| b == POISON_FREE) && bytes[n - 1] == POISON_END
}

#[cfg(test)]
mod tests {
    use crate::SlabFlags;
    use crate::geometry::{RED_ZONE, Request, compute};

    /// Both red zones lie inside the buffer and outside the object, for every
    /// size and alignment (on this target's word size; the i686 gate step
    /// runs this with 4-byte words).
    #[test]
    fn red_zones_stay_inside_the_buffer() {
        let sizes = if cfg!(miri) { 1..=40 } else { 1..=600 };
        for size in sizes {
            for align in [0, 4, 8, 16, 64] {
                for flags in [
                    SlabFlags::RED_ZONE,
                    SlabFlags::RED_ZONE | SlabFlags::HWCACHE_ALIGN,
                ] {
                    let Some(g) = compute(Request::new(size, align, flags).red_zones(true)) else {
                        continue;
                    };
                    if !g.red_zone {
                        continue;
                    }
                    let back = g.obj_offset + super::back_zone(&g);
                    assert!(
                        g.obj_offset >= 2 * RED_ZONE,
                        "{size}/{align}: requested size and front zone"
                    );
                    assert!(
                        back >= g.obj_offset + size,
                        "{size}/{align}: back zone overlaps"
                    );
                    assert!(
                        back + RED_ZONE <= g.buffer_size,
                        "{size}/{align}: back zone overruns"
                    );
                }
            }
        }
    }
}
