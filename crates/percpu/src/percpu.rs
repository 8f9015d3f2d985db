//! [`Percpu`]: the dynamic per-CPU allocator (Linux's `mm/percpu.c`):
//! `alloc_percpu`, `__alloc_percpu`, `free_percpu`.
//!
//! Chunks of one unit per possible CPU: the first is the dynamic part of
//! the static areas (after the template, Linux's `PERCPU_DYNAMIC_RESERVE`),
//! the others come from a [`ChunkBacking`] — the vmalloc area at the same
//! unit offsets, pages populated when an allocation first uses them. Chunks
//! sit on slots by free size ([`crate::slot`]); an allocation tries the
//! fullest chunk that fits; a chunk that becomes empty is given back, except
//! one spare (Linux keeps one empty chunk so a free/alloc pair at the
//! boundary does not create and destroy a chunk each time).
//!
//! # Locking
//! One [`SpinLock`] (Linux's `pcpu_lock` and `pcpu_alloc_mutex` in one)
//! over the chunks, the slots and the backing; it is held while a chunk is
//! created, populated or destroyed (which calls vmalloc and the buddy
//! allocator, whose locks nest inside it). It is a plain lock, taken with
//! interrupts on: allocating and freeing are for process context, and
//! return [`PercpuError::InInterrupt`] from an interrupt handler or with
//! interrupts disabled (vmalloc's rule: creating a chunk may wait for a
//! kernel-wide TLB flush).

use core::sync::atomic::{AtomicU64, Ordering};

use kmm_hal::sync::SpinLock;
use kmm_hal::{Cpu, PAGE_SIZE};

use crate::backing::{ChunkBacking, ChunkGeometry, ChunkMem};
use crate::chunk::{AllocMap, MapFreeError};
use crate::ptr::Zeroable;
use crate::setup::{AreaAlloc, PerCpuAreas};
use crate::slot::{Slots, pcpu_size_to_slot};
use crate::{PCPU_MAX_ALLOC, PCPU_MAX_CHUNKS, PCPU_UNIT_SIZE, PercpuError, PercpuPtr};

/// One chunk: its allocation map, memory and populated pages.
#[derive(Debug, Clone)]
struct Chunk {
    map: AllocMap,
    mem: ChunkMem,
    /// Bit `p`: page `p` of every unit is populated.
    populated: u32,
    first: bool,
}

/// Everything the lock covers.
struct State<B> {
    chunks: [Option<Chunk>; PCPU_MAX_CHUNKS],
    slots: Slots,
    backing: B,
    nr_alloc: usize,
    used_bytes: usize,
}

impl<B: ChunkBacking> State<B> {
    /// Empty chunks (never the first).
    fn empty_count(&self) -> usize {
        self.chunks
            .iter()
            .flatten()
            .filter(|c| !c.first && c.map.is_empty())
            .count()
    }

    /// Takes chunk `idx` out and gives it to the backing.
    fn destroy(&mut self, idx: usize, geo: &ChunkGeometry<'_>, destroyed: &AtomicU64) {
        let chunk = self.chunks[idx].take().expect("a live chunk");
        debug_assert!(!chunk.first && chunk.map.is_empty());
        self.slots
            .remove(idx, pcpu_size_to_slot(chunk.map.free_bytes()));
        // SAFETY: the chunk came from this backing, is out of the table now,
        // and holds no allocation.
        unsafe { self.backing.destroy_chunk(chunk.mem, geo, chunk.populated) };
        destroyed.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives back every empty chunk but the first.
    fn destroy_empty(&mut self, geo: &ChunkGeometry<'_>, destroyed: &AtomicU64) -> usize {
        let mut n = 0;
        for idx in 0..PCPU_MAX_CHUNKS {
            if self.chunks[idx]
                .as_ref()
                .is_some_and(|c| !c.first && c.map.is_empty())
            {
                self.destroy(idx, geo, destroyed);
                n += 1;
            }
        }
        n
    }
}

/// What the allocator holds ([`Percpu::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PercpuStats {
    /// Live chunks, the first included.
    pub chunks: usize,
    /// Chunks with nothing allocated (the spare).
    pub empty_chunks: usize,
    /// Populated pages per unit, summed over the chunks after the first
    /// (each is one page per possible CPU).
    pub populated_pages: usize,
    /// Live dynamic allocations.
    pub allocations: usize,
    /// Bytes per CPU they take (rounded to [`crate::PCPU_MIN_ALLOC_SIZE`]).
    pub used_bytes: usize,
    /// Chunks created and destroyed so far.
    pub created: u64,
    /// Chunks destroyed so far.
    pub destroyed: u64,
}

/// The dynamic per-CPU allocator over a set of [`PerCpuAreas`], with more
/// chunks from `B` ([`crate::VmallocBacking`] in a kernel).
pub struct Percpu<'a, C: Cpu, A: AreaAlloc, B: ChunkBacking> {
    areas: &'a PerCpuAreas<'a, C, A>,
    state: SpinLock<State<B>>,
    created: AtomicU64,
    destroyed: AtomicU64,
}

impl<'a, C: Cpu, A: AreaAlloc, B: ChunkBacking> Percpu<'a, C, A, B> {
    /// The allocator, its first chunk the dynamic part of `areas`' units
    /// (Linux's `pcpu_setup_first_chunk`), more chunks from `backing`.
    ///
    /// Refused with [`PercpuError::AreasTaken`] while another allocator
    /// serves `areas` (both would hand out the first chunk's bytes).
    pub fn new(areas: &'a PerCpuAreas<'a, C, A>, backing: B) -> Result<Self, PercpuError> {
        if !areas.claim_first_chunk() {
            return Err(PercpuError::AreasTaken);
        }
        let mut map = AllocMap::new();
        map.reserve_head(areas.static_size());
        let first = Chunk {
            map,
            mem: ChunkMem {
                base: areas.template_base(),
                handle: 0,
            },
            populated: u32::MAX,
            first: true,
        };
        let mut slots = Slots::default();
        slots.insert(0, pcpu_size_to_slot(first.map.free_bytes()));
        let mut chunks: [Option<Chunk>; PCPU_MAX_CHUNKS] = Default::default();
        chunks[0] = Some(first);
        Ok(Percpu {
            areas,
            state: SpinLock::new(
                "pcpu_lock",
                State {
                    chunks,
                    slots,
                    backing,
                    nr_alloc: 0,
                    used_bytes: 0,
                },
            ),
            created: AtomicU64::new(0),
            destroyed: AtomicU64::new(0),
        })
    }

    /// The areas the allocator works in.
    pub fn areas(&self) -> &'a PerCpuAreas<'a, C, A> {
        self.areas
    }

    fn geo(&self) -> ChunkGeometry<'a> {
        self.areas.geometry()
    }

    fn process_context(&self) -> Result<(), PercpuError> {
        let cpu = self.areas.cpu();
        if cpu.in_interrupt() || cpu.irqs_disabled() {
            return Err(PercpuError::InInterrupt);
        }
        Ok(())
    }

    /// One zeroed `T` per possible CPU (Linux's `alloc_percpu(type)`).
    pub fn alloc_percpu<T: Zeroable>(&self) -> Result<PercpuPtr<T>, PercpuError> {
        Ok(self.__alloc_percpu(size_of::<T>(), align_of::<T>())?.cast())
    }

    /// `size` zeroed bytes aligned to `align` per possible CPU (Linux's
    /// `__alloc_percpu`). Refused, in this order: a size of 0
    /// ([`PercpuError::ZeroSize`]), more than [`PCPU_MAX_ALLOC`]
    /// ([`PercpuError::TooLarge`]), an alignment that is not a power of two
    /// or is above a page ([`PercpuError::BadAlign`]), interrupt context
    /// ([`PercpuError::InInterrupt`]), no room and no new chunk
    /// ([`PercpuError::OutOfMemory`]).
    #[allow(non_snake_case)]
    pub fn __alloc_percpu(&self, size: usize, align: usize) -> Result<PercpuPtr<u8>, PercpuError> {
        if size == 0 {
            return Err(PercpuError::ZeroSize);
        }
        if size > PCPU_MAX_ALLOC {
            return Err(PercpuError::TooLarge { size });
        }
        if !align.is_power_of_two() || align > PAGE_SIZE {
            return Err(PercpuError::BadAlign { align });
        }
        self.process_context()?;
        let geo = self.geo();
        let mut s = self.state.lock(self.areas.cpu());
        let s = &mut *s;
        let (idx, off) = match Self::find(s, size, align) {
            Some(found) => found,
            None => self.grow(s, &geo, size, align)?,
        };
        let chunk = s.chunks[idx].as_mut().expect("a live chunk");
        if let Err(e) = Self::populate(&mut s.backing, chunk, &geo, off, size) {
            let slot = pcpu_size_to_slot(chunk.map.free_bytes());
            let freed = chunk.map.free(off);
            debug_assert!(freed.is_ok());
            Self::reslot(&mut s.slots, idx, slot, chunk);
            // A chunk made for this allocation goes back unless it is the
            // only empty one (the spare).
            let empty = !chunk.first && chunk.map.is_empty();
            if empty && s.empty_count() > 1 {
                s.destroy(idx, &geo, &self.destroyed);
            }
            return Err(e);
        }
        let rounded = size.next_multiple_of(crate::PCPU_MIN_ALLOC_SIZE);
        for cpu in 0..geo.offsets.len() {
            let p =
                core::ptr::with_exposed_provenance_mut::<u8>(geo.unit(chunk.mem.base, cpu) + off);
            // SAFETY: `[off, off + size)` of every unit is populated
            // (`ChunkBacking` contract, or the first chunk's areas) and was
            // free in the map until now: ours alone.
            unsafe { p.write_bytes(0, size) };
        }
        s.nr_alloc += 1;
        s.used_bytes += rounded;
        Ok(PercpuPtr::from_raw(chunk.mem.base.wrapping_add(off)))
    }

    /// The fullest chunk with room: its index and the offset taken.
    fn find(s: &mut State<B>, size: usize, align: usize) -> Option<(usize, usize)> {
        let start = pcpu_size_to_slot(size.next_multiple_of(crate::PCPU_MIN_ALLOC_SIZE));
        let candidates = s.slots.from_slot(start);
        let mut found = None;
        for idx in candidates {
            let chunk = s.chunks[idx].as_mut().expect("slots hold live chunks");
            let slot = pcpu_size_to_slot(chunk.map.free_bytes());
            if let Some(off) = chunk.map.alloc(size, align) {
                found = Some((idx, off, slot));
                break;
            }
        }
        let (idx, off, slot) = found?;
        let chunk = s.chunks[idx].as_ref().expect("just used");
        let new = pcpu_size_to_slot(chunk.map.free_bytes());
        s.slots.remove(idx, slot);
        s.slots.insert(idx, new);
        Some((idx, off))
    }

    /// A new chunk from the backing, with the allocation made in it.
    #[cold]
    #[inline(never)]
    fn grow(
        &self,
        s: &mut State<B>,
        geo: &ChunkGeometry<'_>,
        size: usize,
        align: usize,
    ) -> Result<(usize, usize), PercpuError> {
        let idx = s
            .chunks
            .iter()
            .position(Option::is_none)
            .ok_or(PercpuError::OutOfMemory)?;
        let mem = s.backing.create_chunk(geo)?;
        self.created.fetch_add(1, Ordering::Relaxed);
        let mut map = AllocMap::new();
        let off = map.alloc(size, align).expect("an empty unit holds a page");
        s.slots.insert(idx, pcpu_size_to_slot(map.free_bytes()));
        s.chunks[idx] = Some(Chunk {
            map,
            mem,
            populated: 0,
            first: false,
        });
        Ok((idx, off))
    }

    /// Populates the pages `[off, off + size)` touches.
    fn populate(
        backing: &mut B,
        chunk: &mut Chunk,
        geo: &ChunkGeometry<'_>,
        off: usize,
        size: usize,
    ) -> Result<(), PercpuError> {
        for page in off / PAGE_SIZE..=(off + size - 1) / PAGE_SIZE {
            if chunk.populated & (1 << page) == 0 {
                backing.populate(&chunk.mem, geo, page)?;
                chunk.populated |= 1 << page;
            }
        }
        Ok(())
    }

    /// Moves a chunk from slot `old` to the slot of its free size.
    fn reslot(slots: &mut Slots, idx: usize, old: usize, chunk: &Chunk) {
        slots.remove(idx, old);
        slots.insert(idx, pcpu_size_to_slot(chunk.map.free_bytes()));
    }

    /// Frees an allocation (Linux's `free_percpu`). Refused with nothing
    /// changed: an address no chunk holds ([`PercpuError::Foreign`]), a
    /// static variable ([`PercpuError::StaticArea`]), inside an allocation
    /// ([`PercpuError::Interior`]), freed already or never allocated
    /// ([`PercpuError::NotLive`]), interrupt context
    /// ([`PercpuError::InInterrupt`]). A chunk left empty is given back if
    /// another empty one is kept already.
    pub fn free_percpu<T>(&self, ptr: PercpuPtr<T>) -> Result<(), PercpuError> {
        self.process_context()?;
        let geo = self.geo();
        let mut s = self.state.lock(self.areas.cpu());
        let s = &mut *s;
        let cookie = ptr.raw();
        // Units of different chunks are disjoint, so at most one chunk has
        // `cookie - base` inside a unit.
        let (idx, rel) = s
            .chunks
            .iter()
            .enumerate()
            .find_map(|(i, c)| {
                let rel = cookie.wrapping_sub(c.as_ref()?.mem.base);
                (rel < PCPU_UNIT_SIZE).then_some((i, rel))
            })
            .ok_or(PercpuError::Foreign)?;
        let chunk = s.chunks[idx].as_mut().expect("found live");
        if chunk.first && rel < self.areas.static_size() {
            return Err(PercpuError::StaticArea);
        }
        let slot = pcpu_size_to_slot(chunk.map.free_bytes());
        let size = chunk.map.free(rel).map_err(|e| match e {
            MapFreeError::Interior => PercpuError::Interior,
            MapFreeError::NotLive => PercpuError::NotLive,
        })?;
        Self::reslot(&mut s.slots, idx, slot, chunk);
        s.nr_alloc -= 1;
        s.used_bytes -= size;
        let empty = !chunk.first && chunk.map.is_empty();
        if empty && s.empty_count() > 1 {
            s.destroy(idx, &geo, &self.destroyed);
        }
        Ok(())
    }

    /// Gives back every empty chunk, the spare included (Linux's balance
    /// work, done on demand). Process context only.
    pub fn shrink(&self) -> Result<usize, PercpuError> {
        self.process_context()?;
        let geo = self.geo();
        let mut s = self.state.lock(self.areas.cpu());
        Ok(s.destroy_empty(&geo, &self.destroyed))
    }

    /// The counters. Process context, like every call that takes the
    /// allocator's lock (an interrupt handler must not take it: the lock
    /// checker would report it).
    pub fn stats(&self) -> PercpuStats {
        let s = self.state.lock(self.areas.cpu());
        let live = s.chunks.iter().flatten();
        PercpuStats {
            chunks: live.clone().count(),
            empty_chunks: live
                .clone()
                .filter(|c| !c.first && c.map.is_empty())
                .count(),
            populated_pages: live
                .filter(|c| !c.first)
                .map(|c| c.populated.count_ones() as usize)
                .sum(),
            allocations: s.nr_alloc,
            used_bytes: s.used_bytes,
            created: self.created.load(Ordering::Relaxed),
            destroyed: self.destroyed.load(Ordering::Relaxed),
        }
    }

    /// Checks the allocator's invariants: each chunk's map, each live chunk
    /// in exactly the slot of its free size and dead ones in none, every
    /// allocation inside populated pages, at most one empty chunk, and the
    /// counters matching the maps. Process context, as [`Percpu::stats`].
    pub fn check(&self) -> Result<(), &'static str> {
        let s = self.state.lock(self.areas.cpu());
        let mut allocs = 0;
        let mut used = 0;
        for (idx, c) in s.chunks.iter().enumerate() {
            let Some(c) = c else {
                if s.slots.count_of(idx) != 0 {
                    return Err("a dead chunk on a slot");
                }
                continue;
            };
            c.map.check()?;
            if s.slots.count_of(idx) != 1
                || s.slots.slot_of(idx) != Some(pcpu_size_to_slot(c.map.free_bytes()))
            {
                return Err("a chunk is not on the slot of its free size");
            }
            if c.first && self.areas.static_size() > 0 {
                used -= self.areas.static_size() as isize;
                allocs -= 1;
            }
            for (off, size) in c.map.allocations() {
                allocs += 1;
                used += size as isize;
                for page in off / PAGE_SIZE..=(off + size - 1) / PAGE_SIZE {
                    if c.populated & (1 << page) == 0 {
                        return Err("an allocation on an unpopulated page");
                    }
                }
            }
        }
        if s.empty_count() > 1 {
            return Err("more than one empty chunk kept");
        }
        if allocs != s.nr_alloc as isize || used != s.used_bytes as isize {
            return Err("the counters do not match the maps");
        }
        Ok(())
    }
}

impl<C: Cpu, A: AreaAlloc, B: ChunkBacking> Drop for Percpu<'_, C, A, B> {
    /// Gives the empty chunks back. Chunks with live allocations are left
    /// as they are (their pages leaked, never freed under a user; a kernel
    /// never drops its allocator, tests free everything first). The areas
    /// are released for another allocator only if the first chunk holds no
    /// dynamic allocation: otherwise a new allocator could hand out bytes a
    /// user still holds.
    fn drop(&mut self) {
        let geo = self.areas.geometry();
        let s = self.state.get_mut();
        s.destroy_empty(&geo, &self.destroyed);
        let first_empty = s.chunks[0]
            .as_ref()
            .is_some_and(|c| c.map.free_bytes() == PCPU_UNIT_SIZE - self.areas.static_size());
        if first_empty {
            self.areas.release_first_chunk();
        }
    }
}
