//! [`Percpu`]: the dynamic per-CPU allocator (Linux's `mm/percpu.c`):
//! `alloc_percpu`, `__alloc_percpu`, `free_percpu`.
//!
//! Chunks of one unit per possible CPU: the first is the dynamic part of
//! the static areas (after the template, Linux's `PERCPU_DYNAMIC_RESERVE`),
//! the others come from a [`ChunkBacking`] — the vmalloc area at the same
//! unit offsets, pages populated when an allocation first uses them. Chunks
//! sit on slots by free size ([`crate::slot`]); an allocation tries the
//! fullest chunk that fits. A chunk that becomes empty is given back by the
//! next `__alloc_percpu` or [`Percpu::shrink`] (Linux's balance work), except
//! one spare (Linux keeps one empty chunk so a free/alloc pair at the
//! boundary does not create and destroy a chunk each time).
//!
//! # Locking
//! Two plain [`SpinLock`]s, as Linux's `pcpu_alloc_mutex` and `pcpu_lock`:
//!
//! - the **allocation lock** (`pcpu_alloc_mutex`) holds the backing and is
//!   held by `__alloc_percpu` and `shrink` for their whole run, so chunks
//!   are created, populated and destroyed by one caller at a time. Its
//!   holder keeps preemption off and records its CPU: a re-entry from that
//!   CPU (a hook the buddy allocator or vmalloc calls) gets
//!   [`PercpuError::Busy`] instead of spinning on it;
//! - the **map lock** (`pcpu_lock`) covers the chunk table, the maps, the
//!   slots and the counters, and is held only for map and slot work, never
//!   across a call into the backing. `free_percpu` takes only this one and
//!   never calls the backing, so it works from such a hook.
//!
//! Backing calls (vmalloc, the buddy allocator, their hooks) run with only
//! the allocation lock held. Both locks are taken with interrupts on:
//! allocating and freeing are for process context, and return
//! [`PercpuError::InInterrupt`] from an interrupt handler or with
//! interrupts disabled (vmalloc's rule: creating a chunk may wait for a
//! kernel-wide TLB flush).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kmm_hal::sync::{SpinGuard, SpinLock};
use kmm_hal::{Cpu, PAGE_SIZE, PreemptGuard};

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

impl Chunk {
    fn is_spare(&self) -> bool {
        !self.first && self.map.is_empty()
    }
}

/// Everything the map lock covers.
struct State {
    chunks: [Option<Chunk>; PCPU_MAX_CHUNKS],
    slots: Slots,
    /// The area an `__alloc_percpu` reserved and is populating and zeroing
    /// with the map lock released: `(chunk, offset)`. Not handed out yet,
    /// so `free_percpu` of it is `NotLive`, and it is not counted.
    pending: Option<(usize, usize)>,
    nr_alloc: usize,
    used_bytes: usize,
}

impl State {
    /// Empty chunks (never the first).
    fn empty_count(&self) -> usize {
        self.chunks
            .iter()
            .flatten()
            .filter(|c| c.is_spare())
            .count()
    }

    /// Takes an empty chunk out of the table and the slots, if more than
    /// `keep` are empty: after this no free can reach it (its addresses are
    /// no chunk's: `Foreign`).
    fn take_empty(&mut self, keep: usize) -> Option<Chunk> {
        if self.empty_count() <= keep {
            return None;
        }
        let idx = (0..PCPU_MAX_CHUNKS)
            .rev()
            .find(|&i| self.chunks[i].as_ref().is_some_and(Chunk::is_spare))?;
        let chunk = self.chunks[idx].take()?;
        self.slots
            .remove(idx, pcpu_size_to_slot(chunk.map.free_bytes()));
        Some(chunk)
    }
}

/// The counters [`Percpu::stats`] reads without a lock, stored under the
/// map lock whenever the state changes.
#[derive(Default)]
struct Counters {
    chunks: AtomicUsize,
    empty_chunks: AtomicUsize,
    populated_pages: AtomicUsize,
    allocations: AtomicUsize,
    used_bytes: AtomicUsize,
    created: AtomicU64,
    destroyed: AtomicU64,
}

impl Counters {
    /// Stores what `s` holds (called with the map lock held).
    fn publish(&self, s: &State) {
        let live = s.chunks.iter().flatten();
        self.chunks.store(live.clone().count(), Ordering::Relaxed);
        self.empty_chunks.store(s.empty_count(), Ordering::Relaxed);
        let pages = live
            .filter(|c| !c.first)
            .map(|c| c.populated.count_ones() as usize)
            .sum();
        self.populated_pages.store(pages, Ordering::Relaxed);
        self.allocations.store(s.nr_alloc, Ordering::Relaxed);
        self.used_bytes.store(s.used_bytes, Ordering::Relaxed);
    }
}

/// What the allocator holds ([`Percpu::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PercpuStats {
    /// Live chunks, the first included.
    pub chunks: usize,
    /// Chunks with nothing allocated (the spare, and chunks emptied by
    /// frees since the last `__alloc_percpu` or `shrink`).
    pub empty_chunks: usize,
    /// Populated pages per unit, summed over the chunks after the first
    /// (each is one page per possible CPU).
    pub populated_pages: usize,
    /// Live dynamic allocations.
    pub allocations: usize,
    /// Bytes per CPU they take (rounded to [`crate::PCPU_MIN_ALLOC_SIZE`]).
    pub used_bytes: usize,
    /// Chunks created so far.
    pub created: u64,
    /// Chunks destroyed so far.
    pub destroyed: u64,
}

/// No CPU holds the allocation lock.
const NO_OWNER: usize = usize::MAX;

/// The allocation lock held: the backing, the CPU pinned, the owner
/// recorded (cleared before the lock is released, then preemption is
/// enabled again: fields drop in order).
struct AllocGuard<'p, 'c, B, C: Cpu> {
    backing: SpinGuard<'p, B>,
    owner: &'p AtomicUsize,
    _pin: PreemptGuard<'c, C>,
}

impl<B, C: Cpu> Drop for AllocGuard<'_, '_, B, C> {
    fn drop(&mut self) {
        self.owner.store(NO_OWNER, Ordering::Relaxed);
    }
}

/// The dynamic per-CPU allocator over a set of [`PerCpuAreas`], with more
/// chunks from `B` ([`crate::VmallocBacking`] in a kernel).
pub struct Percpu<'a, C: Cpu, A: AreaAlloc, B: ChunkBacking> {
    areas: &'a PerCpuAreas<'a, C, A>,
    /// The allocation lock (`pcpu_alloc_mutex`) and what it guards.
    alloc: SpinLock<B>,
    /// The CPU holding `alloc`, or `NO_OWNER`. Only the holder stores its
    /// own id, so a CPU that reads its own id holds the lock.
    alloc_owner: AtomicUsize,
    /// The map lock (`pcpu_lock`).
    state: SpinLock<State>,
    counters: Counters,
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
        let state = State {
            chunks,
            slots,
            pending: None,
            nr_alloc: 0,
            used_bytes: 0,
        };
        let counters = Counters::default();
        counters.publish(&state);
        Ok(Percpu {
            areas,
            alloc: SpinLock::new("pcpu_alloc_mutex", backing),
            alloc_owner: AtomicUsize::new(NO_OWNER),
            state: SpinLock::new("pcpu_lock", state),
            counters,
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

    /// The map lock.
    fn map_lock(&self) -> SpinGuard<'_, State> {
        self.state.lock(self.areas.cpu())
    }

    /// Takes the allocation lock, pinned to this CPU; [`PercpuError::Busy`]
    /// if this CPU holds it already (a hook called from the backing).
    fn alloc_lock(&self) -> Result<AllocGuard<'_, 'a, B, C>, PercpuError> {
        let cpu = self.areas.cpu();
        // `SpinLock::lock` leaves preemption as it is: the holder pins
        // itself, so the id it records stays its own while it holds.
        let pin = cpu.preempt_guard();
        let me = pin.cpu_id();
        // Only the holder stores its own id (and clears it before it
        // unlocks): reading our id means we hold it, and spinning would
        // never end.
        if self.alloc_owner.load(Ordering::Relaxed) == me {
            return Err(PercpuError::Busy);
        }
        let backing = self.alloc.lock(cpu);
        self.alloc_owner.store(me, Ordering::Relaxed);
        Ok(AllocGuard {
            backing,
            owner: &self.alloc_owner,
            _pin: pin,
        })
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
    /// ([`PercpuError::InInterrupt`]), a re-entry from a hook on the CPU
    /// that runs an `__alloc_percpu` or `shrink` ([`PercpuError::Busy`]),
    /// no room and no new chunk ([`PercpuError::OutOfMemory`]).
    ///
    /// Before it returns (past the checks), it gives back the empty chunks
    /// beyond one spare.
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
        let mut guard = self.alloc_lock()?;
        let backing = &mut *guard.backing;
        let r = self.alloc_locked(backing, size, align);
        self.reclaim(backing, 1);
        r
    }

    /// The allocation, with the allocation lock held (`backing`): chunks
    /// are added, populated and taken out only by the holder, so what it
    /// reads under the map lock stays true when it releases it; frees
    /// change only maps and slots.
    fn alloc_locked(
        &self,
        backing: &mut B,
        size: usize,
        align: usize,
    ) -> Result<PercpuPtr<u8>, PercpuError> {
        let geo = self.geo();
        let found = {
            let mut s = self.map_lock();
            let found = Self::find(&mut s, size, align).map(|(idx, off)| {
                let c = s.chunks[idx].as_ref().expect("found live");
                (idx, off, c.mem, c.populated)
            });
            if let Some((idx, off, ..)) = found {
                s.pending = Some((idx, off));
                self.counters.publish(&s);
            }
            found
        };
        let (idx, off, mem, populated) = match found {
            Some(found) => found,
            None => self.grow(backing, &geo, size, align)?,
        };
        // Populate with the map lock released (the backing may call hooks
        // that free per-CPU memory).
        let mut done = 0u32;
        let mut res = Ok(());
        for page in off / PAGE_SIZE..=(off + size - 1) / PAGE_SIZE {
            if populated & (1 << page) == 0 {
                if let Err(e) = backing.populate(&mem, &geo, page) {
                    res = Err(e);
                    break;
                }
                done |= 1 << page;
            }
        }
        if res.is_ok() {
            for cpu in 0..geo.offsets.len() {
                let p = core::ptr::with_exposed_provenance_mut::<u8>(geo.unit(mem.base, cpu) + off);
                // SAFETY: `[off, off + size)` of every unit is populated
                // (`ChunkBacking` contract: `populated` and `done`, or the
                // first chunk's areas) and is the pending area: reserved in
                // the map, refused to `free_percpu`, the chunk kept in the
                // table by the allocation lock we hold. Ours alone.
                unsafe { p.write_bytes(0, size) };
            }
        }
        let mut s = self.map_lock();
        s.pending = None;
        let chunk = s.chunks[idx]
            .as_mut()
            .expect("only the allocation lock's holder takes chunks out");
        chunk.populated |= done;
        if let Err(e) = res {
            let slot = pcpu_size_to_slot(chunk.map.free_bytes());
            let freed = chunk.map.free(off);
            debug_assert!(freed.is_ok());
            let new = pcpu_size_to_slot(chunk.map.free_bytes());
            s.slots.remove(idx, slot);
            s.slots.insert(idx, new);
            self.counters.publish(&s);
            return Err(e);
        }
        s.nr_alloc += 1;
        s.used_bytes += size.next_multiple_of(crate::PCPU_MIN_ALLOC_SIZE);
        self.counters.publish(&s);
        Ok(PercpuPtr::from_raw(mem.base.wrapping_add(off)))
    }

    /// The fullest chunk with room: its index and the offset taken.
    fn find(s: &mut State, size: usize, align: usize) -> Option<(usize, usize)> {
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

    /// A new chunk from the backing (created with the map lock released),
    /// entered in the table with the allocation reserved in it: its index,
    /// the offset, its memory and populated pages (none).
    #[cold]
    #[inline(never)]
    fn grow(
        &self,
        backing: &mut B,
        geo: &ChunkGeometry<'_>,
        size: usize,
        align: usize,
    ) -> Result<(usize, usize, ChunkMem, u32), PercpuError> {
        // Only the allocation lock's holder fills table entries: this one
        // stays free while the map lock is released.
        let idx = self.map_lock().chunks.iter().position(Option::is_none);
        let idx = idx.ok_or(PercpuError::OutOfMemory)?;
        let mem = backing.create_chunk(geo)?;
        self.counters.created.fetch_add(1, Ordering::Relaxed);
        let mut map = AllocMap::new();
        let off = map.alloc(size, align).expect("an empty unit holds a page");
        let mut s = self.map_lock();
        s.slots.insert(idx, pcpu_size_to_slot(map.free_bytes()));
        s.chunks[idx] = Some(Chunk {
            map,
            mem,
            populated: 0,
            first: false,
        });
        s.pending = Some((idx, off));
        self.counters.publish(&s);
        Ok((idx, off, mem, 0))
    }

    /// Gives back empty chunks until at most `keep` are left, with the
    /// allocation lock held (`backing`): each is taken out of the table and
    /// slots under the map lock, then destroyed with it released.
    fn reclaim(&self, backing: &mut B, keep: usize) -> usize {
        let geo = self.geo();
        let mut n = 0;
        loop {
            let taken = {
                let mut s = self.map_lock();
                let taken = s.take_empty(keep);
                self.counters.publish(&s);
                taken
            };
            let Some(chunk) = taken else {
                return n;
            };
            // SAFETY: the chunk came from this backing and is destroyed
            // once: it is out of the table and slots, so no free reaches
            // it, and it holds no allocation (none pending either: that
            // one's chunk is not empty); no allocation can be made in it
            // (we hold the allocation lock).
            unsafe { backing.destroy_chunk(chunk.mem, &geo, chunk.populated) };
            self.counters.destroyed.fetch_add(1, Ordering::Relaxed);
            n += 1;
        }
    }

    /// Frees an allocation (Linux's `free_percpu`). Refused with nothing
    /// changed: an address no chunk holds ([`PercpuError::Foreign`]), a
    /// static variable ([`PercpuError::StaticArea`]), inside an allocation
    /// ([`PercpuError::Interior`]), freed already, never allocated or not
    /// handed out yet ([`PercpuError::NotLive`]), interrupt context
    /// ([`PercpuError::InInterrupt`]).
    ///
    /// Takes only the map lock and never calls the backing, so a hook the
    /// backing calls may free. A chunk left empty stays until the next
    /// `__alloc_percpu` or [`Percpu::shrink`] gives it back (one spare is
    /// kept by `__alloc_percpu`).
    pub fn free_percpu<T>(&self, ptr: PercpuPtr<T>) -> Result<(), PercpuError> {
        self.process_context()?;
        let mut s = self.map_lock();
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
        if s.pending == Some((idx, rel)) {
            return Err(PercpuError::NotLive);
        }
        let slot = pcpu_size_to_slot(chunk.map.free_bytes());
        let size = chunk.map.free(rel).map_err(|e| match e {
            MapFreeError::Interior => PercpuError::Interior,
            MapFreeError::NotLive => PercpuError::NotLive,
        })?;
        let new = pcpu_size_to_slot(chunk.map.free_bytes());
        s.slots.remove(idx, slot);
        s.slots.insert(idx, new);
        s.nr_alloc -= 1;
        s.used_bytes -= size;
        self.counters.publish(s);
        Ok(())
    }

    /// Gives back every empty chunk, the spare included (Linux's balance
    /// work, done on demand): how many. Process context only; a re-entry
    /// from a hook on the CPU that runs an `__alloc_percpu` or `shrink` is
    /// refused ([`PercpuError::Busy`]).
    pub fn shrink(&self) -> Result<usize, PercpuError> {
        self.process_context()?;
        let mut guard = self.alloc_lock()?;
        Ok(self.reclaim(&mut guard.backing, 0))
    }

    /// The counters, read without a lock (any context). Each is stored
    /// under the map lock; while other CPUs allocate or free, they are
    /// not one snapshot.
    pub fn stats(&self) -> PercpuStats {
        let c = &self.counters;
        PercpuStats {
            chunks: c.chunks.load(Ordering::Relaxed),
            empty_chunks: c.empty_chunks.load(Ordering::Relaxed),
            populated_pages: c.populated_pages.load(Ordering::Relaxed),
            allocations: c.allocations.load(Ordering::Relaxed),
            used_bytes: c.used_bytes.load(Ordering::Relaxed),
            created: c.created.load(Ordering::Relaxed),
            destroyed: c.destroyed.load(Ordering::Relaxed),
        }
    }

    /// Checks the allocator's invariants: each chunk's map, each live chunk
    /// in exactly the slot of its free size and dead ones in none, every
    /// allocation (but one being populated) inside populated pages, and the
    /// counters matching the maps. Takes the map lock: refused in
    /// interrupt context or with interrupts disabled.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.process_context().is_err() {
            return Err("percpu: check in interrupt context");
        }
        let s = self.map_lock();
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
                if s.pending == Some((idx, off)) {
                    continue;
                }
                allocs += 1;
                used += size as isize;
                for page in off / PAGE_SIZE..=(off + size - 1) / PAGE_SIZE {
                    if c.populated & (1 << page) == 0 {
                        return Err("an allocation on an unpopulated page");
                    }
                }
            }
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
        let backing = self.alloc.get_mut();
        let s = self.state.get_mut();
        while let Some(chunk) = s.take_empty(0) {
            // SAFETY: from this backing, out of the table, empty; `&mut
            // self`: no other call runs.
            unsafe { backing.destroy_chunk(chunk.mem, &geo, chunk.populated) };
        }
        let first_empty = s.chunks[0]
            .as_ref()
            .is_some_and(|c| c.map.free_bytes() == PCPU_UNIT_SIZE - self.areas.static_size());
        if first_empty {
            self.areas.release_first_chunk();
        }
    }
}
