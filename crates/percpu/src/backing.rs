//! Where the chunks after the first get their memory: [`ChunkBacking`],
//! and [`VmallocBacking`], which places each chunk in the vmalloc area at
//! the first chunk's unit offsets and maps its pages on demand (Linux's
//! `pcpu_get_vm_areas`, `pcpu_populate_chunk`, `pcpu_destroy_chunk`).
//!
//! # The placement rule
//!
//! A per-CPU pointer `p` names CPU `n`'s copy at `p + per_cpu_offset(n)`
//! whatever chunk it comes from, so every chunk must have its units at the
//! same offsets from its base as the first chunk has from the template:
//! the unit of CPU `n` at `base + per_cpu_offset(n)`. The first chunk's
//! units are the static areas, wherever the area allocator put them (each
//! on its CPU's node), so they may be far apart. A new chunk reserves one
//! vmalloc region of [`ChunkGeometry::span`] bytes — from the lowest unit
//! to the end of the highest — and takes
//! `base = region_start - low` (wrapping), where `low` is the offset of the
//! lowest unit ([`ChunkGeometry::low`]); then
//! `base + per_cpu_offset(n) = region_start + (area(n) - lowest area)`, in
//! the region, and the units never overlap because the areas do not. Only
//! the units' pages are ever mapped; the gaps between them stay unmapped.
//! With areas far apart (several nodes), the span may not fit the vmalloc
//! area: chunk creation then fails with `OutOfMemory` and only the first
//! chunk serves (Linux falls back to its page-by-page first chunk there).

use kmm_buddy::{Buddy, Gfp};
use kmm_hal::{
    Cpu, FrameSource, KernelTables, KernelTlb, PAGE_SIZE, PageFlags, PageTable, TableReclaim,
    VirtAddr,
};
use kmm_vmalloc::Vmalloc;

use crate::PercpuError;

/// The shape every chunk shares: the unit offsets of the first chunk.
#[derive(Debug, Clone, Copy)]
pub struct ChunkGeometry<'g> {
    /// `per_cpu_offset(n)` for every possible CPU `n`.
    pub offsets: &'g [usize],
    /// The bytes of each unit.
    pub unit_size: usize,
    /// The lowest of the offsets (the unit with the lowest address).
    pub low: usize,
    /// The bytes from the lowest unit's start to the highest unit's end.
    pub span: usize,
}

impl ChunkGeometry<'_> {
    /// The address of CPU `cpu`'s unit of the chunk at `base`.
    pub fn unit(&self, base: usize, cpu: usize) -> usize {
        base.wrapping_add(self.offsets[cpu])
    }

    /// The chunk base that puts the lowest unit at `region_start`.
    pub fn base_for(&self, region_start: usize) -> usize {
        region_start.wrapping_sub(self.low)
    }
}

/// A chunk's memory: its base (CPU `n`'s unit at `base +
/// per_cpu_offset(n)`) and the backing's own handle for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMem {
    /// The chunk's base: per-CPU pointers into it are `base + offset in
    /// the unit`.
    pub base: usize,
    /// The backing's handle (for [`VmallocBacking`], the region's start).
    pub handle: usize,
}

/// The memory of the chunks after the first.
///
/// # Safety
/// The allocator writes through the addresses this trait vouches for, so:
///
/// - [`ChunkBacking::create_chunk`] returns a base whose units
///   (`[base + offsets[n], + unit_size)` for every possible CPU `n`) are
///   addresses reserved for that chunk alone: no other chunk, area or
///   allocation uses them until [`ChunkBacking::destroy_chunk`].
/// - After [`ChunkBacking::populate`] of page `p` returns `Ok`, page `p` of
///   every unit is readable and writable memory (through the exposed
///   provenance of its address), used by nothing else, until the chunk is
///   destroyed.
pub unsafe trait ChunkBacking {
    /// Reserves the addresses of a new chunk, nothing populated.
    fn create_chunk(&mut self, geo: &ChunkGeometry<'_>) -> Result<ChunkMem, PercpuError>;

    /// Makes page `page` of every unit of the chunk memory (Linux's
    /// `pcpu_populate_chunk`). All or nothing.
    fn populate(
        &mut self,
        mem: &ChunkMem,
        geo: &ChunkGeometry<'_>,
        page: usize,
    ) -> Result<(), PercpuError>;

    /// Gives a chunk back: its populated pages (bit `p` of `populated` for
    /// page `p`) and its addresses.
    ///
    /// # Safety
    /// `mem` came from this backing's `create_chunk`, is not destroyed yet,
    /// and nothing in it is used any more.
    unsafe fn destroy_chunk(&mut self, mem: ChunkMem, geo: &ChunkGeometry<'_>, populated: u32);
}

// SAFETY: forwards to `B`, which keeps the contract.
unsafe impl<B: ChunkBacking + ?Sized> ChunkBacking for &mut B {
    fn create_chunk(&mut self, geo: &ChunkGeometry<'_>) -> Result<ChunkMem, PercpuError> {
        (**self).create_chunk(geo)
    }
    fn populate(
        &mut self,
        mem: &ChunkMem,
        geo: &ChunkGeometry<'_>,
        page: usize,
    ) -> Result<(), PercpuError> {
        (**self).populate(mem, geo, page)
    }
    unsafe fn destroy_chunk(&mut self, mem: ChunkMem, geo: &ChunkGeometry<'_>, populated: u32) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { (**self).destroy_chunk(mem, geo, populated) }
    }
}

/// No chunk beyond the first: every creation fails with `OutOfMemory`
/// (a kernel without vmalloc, or a test of the first chunk alone).
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstChunkOnly;

// SAFETY: never hands out a chunk.
unsafe impl ChunkBacking for FirstChunkOnly {
    fn create_chunk(&mut self, _geo: &ChunkGeometry<'_>) -> Result<ChunkMem, PercpuError> {
        Err(PercpuError::OutOfMemory)
    }
    fn populate(
        &mut self,
        _: &ChunkMem,
        _: &ChunkGeometry<'_>,
        _: usize,
    ) -> Result<(), PercpuError> {
        Err(PercpuError::OutOfMemory)
    }
    unsafe fn destroy_chunk(&mut self, _: ChunkMem, _: &ChunkGeometry<'_>, _: u32) {}
}

/// Chunks in the vmalloc area: one region per chunk reserved with
/// `get_vm_area`, pages from the buddy allocator (HIGHMEM first, each
/// CPU's from its node) mapped into the kernel tables when an allocation
/// first uses them, all given back when the chunk is destroyed.
pub struct VmallocBacking<'v, 'a, P: PageTable, F: FrameSource, T: KernelTlb, C: Cpu> {
    vm: &'v Vmalloc<'a, P, F, T, C>,
    tables: &'a KernelTables<P, F>,
    buddy: &'a Buddy<'a, C>,
    nodes: &'v [u8],
}

impl<'v, 'a, P: PageTable, F: FrameSource, T: KernelTlb, C: Cpu>
    VmallocBacking<'v, 'a, P, F, T, C>
{
    /// Chunks from `vm`'s range, mapped in `tables`, pages from `buddy`
    /// (CPU `n`'s from node `nodes[n]` first; an empty table: any node).
    ///
    /// # Safety
    /// `tables` are the kernel page tables `vm` maps its areas in (the ones
    /// every CPU uses), so that a page mapped in a region `vm` reserved is
    /// the memory every CPU sees there and nothing else maps it.
    pub unsafe fn new(
        vm: &'v Vmalloc<'a, P, F, T, C>,
        tables: &'a KernelTables<P, F>,
        buddy: &'a Buddy<'a, C>,
        nodes: &'v [u8],
    ) -> Self {
        VmallocBacking {
            vm,
            tables,
            buddy,
            nodes,
        }
    }

    fn alloc_page(&self, cpu: usize) -> Option<&'a kmm_page_frame::Page> {
        let gfp = Gfp::KERNEL | Gfp::HIGHMEM;
        match self.nodes.get(cpu) {
            Some(&n) => self.buddy.alloc_pages_node(usize::from(n), gfp, 0),
            None => self.buddy.alloc_pages(gfp, 0),
        }
    }

    /// Unmaps one page and gives its frame back.
    fn unmap_free(&self, va: usize) {
        let got = {
            let mut t = self.tables.lock(self.buddy.cpu());
            let t = &mut *t;
            t.pt.unmap(VirtAddr::new(va), TableReclaim::Free, &mut t.frames)
        };
        match got {
            // As vfree: the address is not reused before vmalloc's purge
            // has flushed every CPU (the region goes through it).
            Ok((tr, flush)) => {
                flush.ignore();
                let page = tr
                    .frame
                    .pfn()
                    .ok()
                    .and_then(|pfn| self.buddy.mem().pfn_to_page(pfn).ok());
                match page {
                    Some(page) => {
                        let r = self.buddy.free_pages_page(page, 0);
                        debug_assert!(r.is_ok(), "percpu: a page it mapped: {r:?}");
                    }
                    None => debug_assert!(false, "percpu: a frame outside mem_map"),
                }
            }
            Err(e) => debug_assert!(false, "percpu: unmap of a page it mapped: {e}"),
        }
    }
}

// SAFETY: a region `get_vm_area` reserved is this chunk's alone (vmalloc's
// contract); its units lie inside it (module docs: `base_for`); a
// populated page is a fresh buddy page mapped at that address in the
// kernel tables (`new`'s contract), reached through the mapping (host
// mock: mirrored memory; kernel: the MMU); destroy unmaps and frees them,
// then gives the region back.
unsafe impl<P: PageTable, F: FrameSource, T: KernelTlb, C: Cpu> ChunkBacking
    for VmallocBacking<'_, '_, P, F, T, C>
{
    fn create_chunk(&mut self, geo: &ChunkGeometry<'_>) -> Result<ChunkMem, PercpuError> {
        let area = self
            .vm
            .get_vm_area(geo.span)
            .map_err(|_| PercpuError::OutOfMemory)?;
        let region = area.addr.as_usize();
        Ok(ChunkMem {
            base: geo.base_for(region),
            handle: region,
        })
    }

    fn populate(
        &mut self,
        mem: &ChunkMem,
        geo: &ChunkGeometry<'_>,
        page: usize,
    ) -> Result<(), PercpuError> {
        for cpu in 0..geo.offsets.len() {
            let va = geo.unit(mem.base, cpu) + page * PAGE_SIZE;
            let mapped = self.alloc_page(cpu).and_then(|pg| {
                let pa = self.buddy.mem().page_to_phys(pg).ok()?;
                let r = {
                    let mut t = self.tables.lock(self.buddy.cpu());
                    let t = &mut *t;
                    t.pt.map(
                        VirtAddr::new(va),
                        pa,
                        PageFlags::KERNEL_GLOBAL,
                        &mut t.frames,
                    )
                };
                match r {
                    // Nothing was mapped there: no TLB holds it.
                    Ok(flush) => {
                        flush.ignore();
                        Some(())
                    }
                    Err(_) => {
                        let _ = self.buddy.free_pages_page(pg, 0);
                        None
                    }
                }
            });
            if mapped.is_none() {
                for done in 0..cpu {
                    self.unmap_free(geo.unit(mem.base, done) + page * PAGE_SIZE);
                }
                return Err(PercpuError::OutOfMemory);
            }
        }
        Ok(())
    }

    unsafe fn destroy_chunk(&mut self, mem: ChunkMem, geo: &ChunkGeometry<'_>, populated: u32) {
        for page in 0..geo.unit_size / PAGE_SIZE {
            if populated & (1 << page) == 0 {
                continue;
            }
            for cpu in 0..geo.offsets.len() {
                self.unmap_free(geo.unit(mem.base, cpu) + page * PAGE_SIZE);
            }
        }
        let r = self.vm.free_vm_area(VirtAddr::new(mem.handle));
        debug_assert!(r.is_ok(), "percpu: a region it reserved: {r:?}");
    }
}
