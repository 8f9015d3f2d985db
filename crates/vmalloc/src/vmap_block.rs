//! `vm_map_ram` / `vm_unmap_ram`: small, short-lived mappings carved from
//! per-CPU blocks of addresses (Linux's `vmap_block`), so that mapping 1 to
//! [`VMAP_MAX_ALLOC`] pages takes no global lock.
//!
//! Each CPU has a current block and bump-allocates from it under the
//! block's own lock; the vmalloc address-space lock is taken only to get a
//! new block. Unmapping clears the pages' entries and marks them dirty in
//! their block (no flush: space in a block is never reused); a block whose
//! every page is dirty goes back to the lazy purge as a whole, so its
//! addresses are reused only after a kernel-wide flush.
//!
//! Blocks are aligned to their size, so an address finds its block by
//! division, in a table with one slot per possible block. A slot's
//! descriptor is allocated once and kept (inactive between uses), so a
//! racing bad `vm_unmap_ram` can never reach freed memory.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, Ordering};

use kmm_buddy::Gfp;
use kmm_hal::sync::SpinLock;
use kmm_hal::{Cpu, FrameSource, KernelTlb, PAGE_SIZE, PageFlags, PageTable, VirtAddr};
use kmm_page_frame::{Page, PgFlags};

use crate::area::AreaKind;
use crate::{Vmalloc, VmallocError};

/// The most pages `vm_map_ram` maps from a per-CPU block (Linux's
/// `VMAP_MAX_ALLOC`, `BITS_PER_LONG` on i386); larger requests get an area
/// of their own.
pub const VMAP_MAX_ALLOC: usize = 32;
/// The most pages a block holds (Linux's `VMAP_BBMAP_BITS_MAX`).
const BLOCK_PAGES_MAX: usize = 1024;
const WORDS: usize = BLOCK_PAGES_MAX / 32;

/// A block's state, under its lock.
struct BlockState {
    /// The block's addresses are live (an area of this allocator).
    active: bool,
    /// Pages handed out so far (bump allocation).
    free_off: usize,
    /// Pages unmapped, or given up when the block stopped being a CPU's
    /// current one.
    dirty: usize,
    /// Pages mapped now.
    used: [u32; WORDS],
    /// First pages of live mappings.
    start: [u32; WORDS],
}

/// One slot's block descriptor (kept for the allocator's life).
pub(crate) struct VmapBlock {
    state: SpinLock<BlockState>,
}

/// The per-CPU blocks: the table of block slots and each CPU's current
/// block.
pub(crate) struct Blocks {
    /// Pages per block (a power of two, 64 to 1024).
    pub(crate) pages: usize,
    /// The first block-aligned address of the range.
    base: usize,
    slots: NonNull<AtomicPtr<VmapBlock>>,
    nr_slots: usize,
    /// Each CPU's current block (a slot index + 1, 0 for none).
    current: NonNull<core::sync::atomic::AtomicUsize>,
    nr_cpus: usize,
}

// SAFETY: the arrays are `kmalloc`ed, owned by this value, and only reached
// through atomics; the block descriptors they point to are `Sync` (their
// state is behind a lock).
unsafe impl Send for Blocks {}
// SAFETY: as above.
unsafe impl Sync for Blocks {}

fn bit(map: &[u32; WORDS], i: usize) -> bool {
    map[i / 32] & (1 << (i % 32)) != 0
}

fn set_bits(map: &mut [u32; WORDS], from: usize, n: usize, on: bool) {
    for i in from..from + n {
        if on {
            map[i / 32] |= 1 << (i % 32);
        } else {
            map[i / 32] &= !(1 << (i % 32));
        }
    }
}

impl Blocks {
    /// Block geometry for a range of `range` bytes from `start` and `cpus`
    /// CPUs (Linux's `VMAP_BBMAP_BITS`: the range per CPU / 16, 64 to 1024
    /// pages), with its tables from `kmalloc`.
    pub(crate) fn new<C: Cpu>(
        slab: &kmm_slab::SlabAllocator<'_, C>,
        start: usize,
        end: usize,
        cpus: usize,
    ) -> Result<Blocks, VmallocError> {
        let range_pages = (end - start) / PAGE_SIZE;
        let per_cpu = range_pages / cpus.max(1) / 16;
        let pages = per_cpu.clamp(2 * VMAP_MAX_ALLOC, BLOCK_PAGES_MAX);
        let pages = 1 << (usize::BITS - 1 - pages.leading_zeros());
        let bytes = pages * PAGE_SIZE;
        let base = start.next_multiple_of(bytes);
        let nr_slots = (end.saturating_sub(base) / bytes).max(1);
        let slots: NonNull<AtomicPtr<VmapBlock>> = slab
            .kzalloc(nr_slots * size_of::<AtomicPtr<VmapBlock>>(), Gfp::KERNEL)
            .map_err(|_| VmallocError::OutOfMemory)?
            .cast();
        let current = match slab.kzalloc(cpus.max(1) * size_of::<usize>(), Gfp::KERNEL) {
            Ok(p) => p.cast(),
            Err(_) => {
                let _ = slab.kfree(slots.as_ptr().cast());
                return Err(VmallocError::OutOfMemory);
            }
        };
        Ok(Blocks {
            pages,
            base,
            slots,
            nr_slots,
            current,
            nr_cpus: cpus.max(1),
        })
    }

    fn slot(&self, i: usize) -> &AtomicPtr<VmapBlock> {
        assert!(i < self.nr_slots);
        // SAFETY: `slots` holds `nr_slots` zeroed (null) atomics for as long
        // as `self` lives; i < nr_slots.
        unsafe { &*self.slots.as_ptr().add(i) }
    }

    fn current(&self, cpu: usize) -> &core::sync::atomic::AtomicUsize {
        assert!(cpu < self.nr_cpus);
        // SAFETY: `current` holds `nr_cpus` zeroed atomics; cpu < nr_cpus.
        unsafe { &*self.current.as_ptr().add(cpu) }
    }

    fn block(&self, i: usize) -> Option<&VmapBlock> {
        let p = self.slot(i).load(Ordering::Acquire);
        // SAFETY: a non-null slot points to a descriptor that lives as long
        // as the table (never freed before `release_tables`).
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// The slot of the block holding `addr`, if the table covers it.
    fn slot_of(&self, addr: usize) -> Option<usize> {
        let i = addr.checked_sub(self.base)? / (self.pages * PAGE_SIZE);
        (i < self.nr_slots).then_some(i)
    }

    /// Gives the tables and every block descriptor back.
    pub(crate) fn release_tables<C: Cpu>(&self, slab: &kmm_slab::SlabAllocator<'_, C>) {
        for i in 0..self.nr_slots {
            let p = self.slot(i).swap(core::ptr::null_mut(), Ordering::AcqRel);
            if !p.is_null() {
                let _ = slab.kfree(p.cast());
            }
        }
        let _ = slab.kfree(self.slots.as_ptr().cast());
        let _ = slab.kfree(self.current.as_ptr().cast());
    }
}

impl<'a, P: PageTable, F: FrameSource, T: KernelTlb, C: Cpu> Vmalloc<'a, P, F, T, C> {
    /// Maps `pages` at contiguous addresses for a short while (Linux's
    /// `vm_map_ram`): up to [`VMAP_MAX_ALLOC`] pages from this CPU's vmap
    /// block without the address-space lock, more from an area of their
    /// own. The pages stay the caller's; undo with [`Self::vm_unmap_ram`]
    /// and the same count. Refused: no pages, a page not of this `mem_map`
    /// or free.
    pub fn vm_map_ram(
        &self,
        pages: &[&Page],
        prot: PageFlags,
    ) -> Result<NonNull<u8>, VmallocError> {
        self.process_context()?;
        let n = pages.len();
        if n == 0 {
            return Err(VmallocError::BadSize);
        }
        for p in pages {
            let free = p.flags().intersects(PgFlags::BUDDY | PgFlags::PCP) || p.count() == 0;
            if free || self.mem().page_to_pfn(p).is_err() {
                return Err(VmallocError::ForeignPage);
            }
        }
        if n > VMAP_MAX_ALLOC {
            return self.map_ram_area(pages, prot);
        }
        let (slot, off) = self.block_alloc(n)?;
        let b = &self.blocks;
        let addr = b.base + slot * b.pages * PAGE_SIZE + off * PAGE_SIZE;
        let frames = pages
            .iter()
            .map(|p| self.mem().page_to_phys(p).expect("checked above"));
        if let Err(e) = self.map_frames(addr, frames, prot | PageFlags::PRESENT) {
            self.block_free(slot, off, n).expect("the range just taken");
            return Err(e);
        }
        Ok(NonNull::new(addr as *mut u8).expect("vmalloc addresses are not null"))
    }

    /// Removes a [`Self::vm_map_ram`] mapping of `count` pages (Linux's
    /// `vm_unmap_ram`). Refused with nothing changed: an address not from
    /// `vm_map_ram`, unaligned, a count other than the mapping's
    /// ([`VmallocError::BadSize`]), or a mapping already removed
    /// ([`VmallocError::NotLive`]).
    pub fn vm_unmap_ram(&self, addr: *const u8, count: usize) -> Result<(), VmallocError> {
        self.process_context()?;
        let a = addr as usize;
        if !(self.start..self.end).contains(&a) {
            return Err(VmallocError::Foreign);
        }
        if !a.is_multiple_of(PAGE_SIZE) {
            return Err(VmallocError::Misaligned);
        }
        if count == 0 {
            return Err(VmallocError::BadSize);
        }
        if count > VMAP_MAX_ALLOC {
            let area = self.unpublish(VirtAddr::new(a), &[AreaKind::MapRam], Some(count))?;
            // SAFETY: ours alone now.
            let ar = unsafe { area.as_ref() };
            self.unmap_range(ar.addr, count);
            self.retire(area);
            return Ok(());
        }
        let b = &self.blocks;
        let slot = b.slot_of(a).ok_or(VmallocError::NotLive)?;
        let off = (a - b.base - slot * b.pages * PAGE_SIZE) / PAGE_SIZE;
        self.block_check(slot, off, count)?;
        self.unmap_range(a, count);
        self.block_free(slot, off, count)
    }

    /// A mapping of more than `VMAP_MAX_ALLOC` pages: an area of its own.
    fn map_ram_area(&self, pages: &[&Page], prot: PageFlags) -> Result<NonNull<u8>, VmallocError> {
        let n = pages.len();
        let area = self.new_area(
            (n + 1) * PAGE_SIZE,
            PAGE_SIZE,
            AreaKind::MapRam,
            "vm_map_ram",
        )?;
        // SAFETY: a fresh descriptor, ours until published.
        let a = unsafe { area.as_ref() };
        let frames = pages
            .iter()
            .map(|p| self.mem().page_to_phys(p).expect("checked"));
        if let Err(e) = self.map_frames(a.addr, frames, prot | PageFlags::PRESENT) {
            self.discard(area);
            return Err(e);
        }
        let va = self.publish(area);
        Ok(NonNull::new(va.as_mut_ptr::<u8>()).expect("vmalloc addresses are not null"))
    }

    /// `n` pages from this CPU's current block, getting a new block when it
    /// has no room: the slot and the page offset.
    fn block_alloc(&self, n: usize) -> Result<(usize, usize), VmallocError> {
        let b = &self.blocks;
        let cpu = self.cpu();
        let _pinned = cpu.preempt_guard();
        let cur = b.current(cpu.id());
        loop {
            let c = cur.load(Ordering::Relaxed);
            if c != 0 {
                let slot = c - 1;
                let blk = b.block(slot).expect("a current block has a descriptor");
                let mut s = blk.state.lock(cpu);
                if s.active && s.free_off + n <= b.pages {
                    let off = s.free_off;
                    s.free_off += n;
                    set_bits(&mut s.used, off, n, true);
                    set_bits(&mut s.start, off, 1, true);
                    return Ok((slot, off));
                }
                // No room: the rest of the block is given up, and the block
                // goes once its mappings are gone.
                let rest = b.pages - s.free_off;
                s.free_off = b.pages;
                s.dirty += rest;
                let done = s.active && s.dirty == b.pages;
                drop(s);
                cur.store(0, Ordering::Relaxed);
                if done {
                    self.block_release(slot);
                }
            }
            let slot = self.new_block()?;
            cur.store(slot + 1, Ordering::Relaxed);
        }
    }

    /// A new block: an area of the block size, aligned to it, and its slot's
    /// descriptor made active.
    fn new_block(&self) -> Result<usize, VmallocError> {
        let b = &self.blocks;
        let bytes = b.pages * PAGE_SIZE;
        let area = self.new_area(bytes + PAGE_SIZE, bytes, AreaKind::VmapBlock, "vm_map_ram")?;
        // SAFETY: a fresh descriptor.
        let addr = unsafe { area.as_ref() }.addr;
        let Some(slot) = b.slot_of(addr) else {
            self.discard(area);
            return Err(VmallocError::OutOfAddresses);
        };
        if b.block(slot).is_none() {
            let p = match self.slab.kmalloc(size_of::<VmapBlock>(), Gfp::KERNEL) {
                Ok(p) => p.cast::<VmapBlock>(),
                Err(_) => {
                    self.discard(area);
                    return Err(VmallocError::OutOfMemory);
                }
            };
            // SAFETY: a fresh `kmalloc` block of a descriptor's size.
            unsafe {
                p.as_ptr().write(VmapBlock {
                    state: SpinLock::new(
                        "vmap_block",
                        BlockState {
                            active: false,
                            free_off: 0,
                            dirty: 0,
                            used: [0; WORDS],
                            start: [0; WORDS],
                        },
                    ),
                })
            };
            // Only the holder of the slot's area gets here, so no other CPU
            // installs a descriptor in this slot meanwhile.
            b.slot(slot).store(p.as_ptr(), Ordering::Release);
        }
        {
            let blk = b.block(slot).expect("installed above");
            let mut s = blk.state.lock(self.cpu());
            *s = BlockState {
                active: true,
                free_off: 0,
                dirty: 0,
                used: [0; WORDS],
                start: [0; WORDS],
            };
        }
        self.publish(area);
        self.stats.blocks.fetch_add(1, Ordering::Relaxed);
        Ok(slot)
    }

    /// Checks that a live mapping of exactly `count` pages starts at page
    /// `off` of block `slot`.
    fn block_check(&self, slot: usize, off: usize, count: usize) -> Result<(), VmallocError> {
        let b = &self.blocks;
        let blk = b.block(slot).ok_or(VmallocError::NotLive)?;
        let s = blk.state.lock(self.cpu());
        if !s.active || off + count > b.pages || !bit(&s.start, off) || !bit(&s.used, off) {
            return Err(VmallocError::NotLive);
        }
        let whole = (off..off + count).all(|i| bit(&s.used, i) && (i == off || !bit(&s.start, i)));
        let ends =
            off + count == b.pages || !bit(&s.used, off + count) || bit(&s.start, off + count);
        if !whole || !ends {
            return Err(VmallocError::BadSize);
        }
        Ok(())
    }

    /// Marks `count` pages at `off` of block `slot` unmapped; the block goes
    /// to the lazy purge when every page is.
    fn block_free(&self, slot: usize, off: usize, count: usize) -> Result<(), VmallocError> {
        let b = &self.blocks;
        let blk = b.block(slot).ok_or(VmallocError::NotLive)?;
        let done = {
            let mut s = blk.state.lock(self.cpu());
            if !s.active || !bit(&s.start, off) {
                return Err(VmallocError::NotLive);
            }
            set_bits(&mut s.used, off, count, false);
            set_bits(&mut s.start, off, 1, false);
            s.dirty += count;
            s.dirty == b.pages
        };
        if done {
            self.block_release(slot);
        }
        Ok(())
    }

    /// Retires every block with no live mapping, current ones included (a
    /// CPU whose current block went finds it inactive and takes a new one):
    /// their areas go to the lazy purge.
    pub(crate) fn retire_idle_blocks(&self) {
        let b = &self.blocks;
        for slot in 0..b.nr_slots {
            let Some(blk) = b.block(slot) else { continue };
            let idle = {
                let mut s = blk.state.lock(self.cpu());
                let idle = s.active && s.used.iter().all(|&w| w == 0);
                if idle {
                    s.free_off = b.pages;
                    s.dirty = b.pages;
                }
                idle
            };
            if idle {
                self.block_release(slot);
            }
        }
    }

    /// A block with every page dirty: inactive, and its area to the purge.
    fn block_release(&self, slot: usize) {
        let b = &self.blocks;
        let blk = b.block(slot).expect("a released block has a descriptor");
        {
            let mut s = blk.state.lock(self.cpu());
            if !s.active {
                return;
            }
            s.active = false;
        }
        let addr = VirtAddr::new(b.base + slot * b.pages * PAGE_SIZE);
        if let Ok(area) = self.unpublish(addr, &[AreaKind::VmapBlock], None) {
            self.retire(area);
        }
    }
}
