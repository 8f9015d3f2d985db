//! [`MemMap`]: the array of page descriptors for all of physical memory, built from
//! the boot memory map and placed in low memory by [`Bootmem`], with the nodes and
//! zones it describes.

use core::fmt;

use kmm_hal::{DirectMap, KernelLayout, LayoutError, PAGE_SIZE, Pfn, PhysAddr, VirtAddr};

use crate::bootmem::{Bootmem, BootmemError};
use crate::memory_map::RegionKind;
use crate::node::{MAX_NUMNODES, Node, ZoneSpan};
use crate::page::{Page, PgFlags, ZoneType};

/// Why building the memory map failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemMapError {
    /// Bootmem could not place `mem_map`.
    Bootmem(BootmemError),
    /// A region names a node at or above [`MAX_NUMNODES`].
    TooManyNodes,
    /// Two nodes' frame ranges overlap.
    OverlappingNodes,
    /// RAM extends past what a `usize` frame number can index on this target.
    TooMuchMemory,
    /// The kernel layout breaks the [`KernelLayout`] contract
    /// ([`kmm_hal::check_layout`]): overlapping or wrapping regions, physical
    /// limits out of order (high memory starting past the direct map, say).
    Layout(LayoutError),
}

impl fmt::Display for MemMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemMapError::Bootmem(e) => write!(f, "{e}"),
            MemMapError::TooManyNodes => write!(f, "node id above MAX_NUMNODES"),
            MemMapError::OverlappingNodes => write!(f, "memory nodes overlap"),
            MemMapError::TooMuchMemory => write!(f, "RAM beyond the addressable frames"),
            MemMapError::Layout(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for MemMapError {}

impl From<BootmemError> for MemMapError {
    fn from(e: BootmemError) -> Self {
        MemMapError::Bootmem(e)
    }
}

impl From<LayoutError> for MemMapError {
    fn from(e: LayoutError) -> Self {
        MemMapError::Layout(e)
    }
}

/// Why a lookup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PfnError {
    /// The frame number is beyond `mem_map`.
    OutOfRange,
    /// The address is not in the direct map.
    NotDirectMapped,
    /// The pointer does not point at a descriptor in `mem_map`.
    NotADescriptor,
}

impl fmt::Display for PfnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PfnError::OutOfRange => "frame number outside mem_map",
            PfnError::NotDirectMapped => "address not in the direct map",
            PfnError::NotADescriptor => "not a page descriptor of mem_map",
        })
    }
}

impl core::error::Error for PfnError {}

/// Frame counts of the memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemStats {
    /// Frames covered by `mem_map` (0 to the end of RAM).
    pub spanned: u64,
    /// Usable RAM frames.
    pub present: u64,
    /// Frames `mem_map` itself takes.
    pub mem_map_pages: u64,
    /// Frames bootmem handed out, `mem_map` included.
    pub bootmem_pages: u64,
    /// Usable frames reserved (by [`Bootmem::reserve`], bootmem allocations, page 0).
    pub reserved_ram: u64,
    /// Usable frames ignored because they lie above the layout's
    /// [`KernelLayout::phys_limit`].
    pub ignored_ram: u64,
}

/// All page descriptors, the nodes and the zone spans.
///
/// `mem_map` is flat (Linux's FLATMEM): descriptor `i` describes frame `i`, from
/// frame 0 to the end of the highest usable RAM, holes included (and reserved).
pub struct MemMap<'a> {
    /// The descriptors, kept as a pointer and a length so that looking one up
    /// touches (and, under Miri, retags) only that descriptor.
    base: core::ptr::NonNull<Page>,
    len: usize,
    _pages: core::marker::PhantomData<&'a [Page]>,
    nodes: [Node; MAX_NUMNODES],
    nr_nodes: usize,
    dm: DirectMap,
    dma_end: u64,
    high_start: u64,
    stats: MemStats,
}

// SAFETY: MemMap is a shared view of `&'a [Page]` (Page is Sync and Send) plus
// plain data.
unsafe impl Send for MemMap<'_> {}
// SAFETY: as above.
unsafe impl Sync for MemMap<'_> {}

impl fmt::Debug for MemMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemMap")
            .field("nodes", &&self.nodes[..self.nr_nodes])
            .field("stats", &self.stats)
            .finish()
    }
}

/// The index of the descriptor at byte offset `off` of a `mem_map` of `len`
/// descriptors, if `off` is exactly at one: `off / size_of::<Page>()` without
/// a division. The size is `2^TZ * ODD`; an offset that is a multiple of it,
/// shifted by TZ and multiplied by ODD's inverse modulo `2^BITS`, gives the
/// exact quotient; any other offset gives a number of at least `len` (were it
/// below, multiplying back by ODD would not wrap and would give the offset),
/// so one range check refuses both. Needs `len * ODD` to fit `usize`, which
/// holds because `len * SIZE` does (`MemMap::new` sizes the map with a checked
/// multiplication).
#[inline]
fn descriptor_index(off: usize, len: usize) -> Option<usize> {
    index_of::<{ core::mem::size_of::<Page>() }>(off, len)
}

/// [`descriptor_index`] for elements of `SIZE` bytes (tested with i386's and
/// x86-64's descriptor sizes).
#[inline(always)]
fn index_of<const SIZE: usize>(off: usize, len: usize) -> Option<usize> {
    let tz = SIZE.trailing_zeros();
    let inv = const { odd_inverse(SIZE >> SIZE.trailing_zeros()) };
    let idx = (off >> tz).wrapping_mul(inv);
    (off.is_multiple_of(1 << tz) && idx < len).then_some(idx)
}

/// The inverse of odd `d` modulo `2^usize::BITS` (Newton's iteration: each
/// step doubles the correct low bits, from 3 for `x = d`).
const fn odd_inverse(d: usize) -> usize {
    assert!(d % 2 == 1, "only odd numbers are invertible");
    let mut x = d;
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2usize.wrapping_sub(d.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// Where the zones start: frame numbers of the DMA limit and of high memory.
#[derive(Clone, Copy)]
struct ZoneBounds {
    dma_end: u64,
    high_start: u64,
}

/// The nodes found in the memory map: the first phase of [`MemMap::new`].
struct NodeScan {
    nodes: [Node; MAX_NUMNODES],
    nr_nodes: usize,
    /// One past the highest RAM frame.
    max_pfn: u64,
    /// RAM frames above the layout's limit.
    ignored_ram: u64,
}

impl NodeScan {
    /// Each node's frame range, from the usable regions below the RAM limit.
    fn from_regions(boot: &Bootmem<'_>) -> Result<NodeScan, MemMapError> {
        let limit = boot.limit_pfn();
        let mut scan = NodeScan {
            nodes: [Node::default(); MAX_NUMNODES],
            nr_nodes: 0,
            max_pfn: 0,
            ignored_ram: 0,
        };
        for r in boot
            .regions()
            .iter()
            .filter(|r| r.kind == RegionKind::Usable)
        {
            let n = usize::from(r.node);
            if n >= MAX_NUMNODES {
                return Err(MemMapError::TooManyNodes);
            }
            let (s, e) = r.inner_pfns();
            scan.ignored_ram += e.saturating_sub(s.max(limit));
            let e = e.min(limit);
            if s >= e {
                continue;
            }
            let node = &mut scan.nodes[n];
            if node.is_online() {
                node.start_pfn = node.start_pfn.min(s);
                node.end_pfn = node.end_pfn.max(e);
            } else {
                *node = Node {
                    id: n,
                    start_pfn: s,
                    end_pfn: e,
                    ..Node::default()
                };
            }
            scan.nr_nodes = scan.nr_nodes.max(n + 1);
            scan.max_pfn = scan.max_pfn.max(e);
        }
        Ok(scan)
    }

    /// The nodes found, offline ones included.
    fn nodes(&self) -> &[Node] {
        &self.nodes[..self.nr_nodes]
    }

    /// Refuses nodes whose frame ranges overlap.
    fn check_overlap(&self) -> Result<(), MemMapError> {
        let nodes = self.nodes();
        for (i, a) in nodes.iter().enumerate() {
            for b in &nodes[i + 1..] {
                if a.is_online()
                    && b.is_online()
                    && a.start_pfn < b.end_pfn
                    && b.start_pfn < a.end_pfn
                {
                    return Err(MemMapError::OverlappingNodes);
                }
            }
        }
        Ok(())
    }

    /// Each online node's zone spans (DMA, NORMAL, HIGHMEM by address).
    fn set_zone_spans(&mut self, b: ZoneBounds) {
        let limits = [
            (0, b.dma_end),
            (b.dma_end, b.high_start),
            (b.high_start, u64::MAX),
        ];
        let nr = self.nr_nodes;
        for node in self.nodes[..nr].iter_mut().filter(|n| n.is_online()) {
            for (z, (lo, hi)) in limits.into_iter().enumerate() {
                let s = node.start_pfn.max(lo);
                let e = node.end_pfn.min(hi);
                if s < e {
                    node.zones[z] = ZoneSpan {
                        start_pfn: s,
                        spanned: e - s,
                        present: 0,
                    };
                }
            }
        }
    }

    /// The node and zone type of frame `pfn`: the node whose span holds it (a
    /// hole between nodes goes to the node below it), the zone by address.
    fn owner_of(&self, pfn: u64, b: ZoneBounds) -> (usize, ZoneType) {
        let node = self
            .nodes()
            .iter()
            .filter(|n| n.is_online() && n.start_pfn <= pfn)
            .max_by_key(|n| n.start_pfn)
            .map_or(0, |n| n.id);
        let zone = if pfn < b.dma_end {
            ZoneType::Dma
        } else if pfn < b.high_start {
            ZoneType::Normal
        } else {
            ZoneType::HighMem
        };
        (node, zone)
    }

    /// Writes every descriptor, reserved, with its zone and node — segment by
    /// segment: node and zone are constant between node starts and zone
    /// limits, so they are worked out once per segment.
    ///
    /// # Safety
    /// `ptr` must be valid for writing `max_pfn` descriptors, used by nothing
    /// else.
    unsafe fn init_descriptors(&self, ptr: *mut Page, b: ZoneBounds) {
        let mut pfn = 0;
        while pfn < self.max_pfn {
            let (node, zone) = self.owner_of(pfn, b);
            let mut end = self.max_pfn;
            for limit in [b.dma_end, b.high_start] {
                if limit > pfn {
                    end = end.min(limit);
                }
            }
            for n in self
                .nodes()
                .iter()
                .filter(|n| n.is_online() && n.start_pfn > pfn)
            {
                end = end.min(n.start_pfn);
            }
            let template = Page::new(zone, node as u8);
            if zone == ZoneType::HighMem {
                template.or_flags(PgFlags::HIGHMEM);
            }
            let flags = template.flags();
            for p in pfn..end {
                let d = Page::new(zone, node as u8);
                d.set_flags(flags);
                // SAFETY: p < max_pfn: inside the memory the caller vouches for.
                unsafe { ptr.add(p as usize).write(d) };
            }
            pfn = end;
        }
    }

    /// Counts present frames per zone and node, RAM run by RAM run, and
    /// returns the total.
    fn count_present(&mut self, boot: &Bootmem<'_>) -> u64 {
        let mut present = 0;
        let mut at = 0;
        let nr = self.nr_nodes;
        while let Some(run) = boot.next_ram_run(at) {
            let end = run.end.min(self.max_pfn);
            present += end.saturating_sub(run.start);
            for n in self.nodes[..nr].iter_mut().filter(|n| n.is_online()) {
                for z in n.zones.iter_mut() {
                    let lo = run.start.max(z.start_pfn);
                    let hi = end.min(z.end_pfn());
                    if hi > lo {
                        z.present += hi - lo;
                    }
                }
                n.present = n.zones.iter().map(|z| z.present).sum();
            }
            at = run.end;
        }
        present
    }
}

impl<'a> MemMap<'a> {
    /// Builds `mem_map` for the memory map bootmem was made from: computes nodes
    /// and zones (zone limits from `layout`), places the descriptor array with
    /// `boot` in low memory and initialises every descriptor — reserved, with its
    /// zone and node. Frames stay reserved until [`MemMap::release_free`].
    ///
    /// The layout is checked first ([`kmm_hal::check_layout`]): one that
    /// breaks the [`KernelLayout`] contract is refused with
    /// [`MemMapError::Layout`] before anything is written.
    ///
    /// # Safety
    /// `layout.direct_map()` must map physical memory for reading and writing,
    /// the memory bootmem hands out must not be used by anything else, and it
    /// must stay mapped for `'a`.
    pub unsafe fn new<L: KernelLayout>(
        boot: &mut Bootmem<'_>,
        layout: &L,
    ) -> Result<MemMap<'a>, MemMapError> {
        kmm_hal::check_layout(layout)?;
        let dm = layout.direct_map();
        let page = PAGE_SIZE as u64;
        boot.limit_ram(layout.phys_limit().min(PhysAddr::LIMIT));
        let bounds = ZoneBounds {
            dma_end: layout.dma_limit().as_u64() / page,
            high_start: layout.highmem_start().as_u64() / page,
        };
        let mut scan = NodeScan::from_regions(boot)?;
        scan.check_overlap()?;
        let count = usize::try_from(scan.max_pfn).map_err(|_| MemMapError::TooMuchMemory)?;
        let bytes = count
            .checked_mul(core::mem::size_of::<Page>())
            .ok_or(MemMapError::TooMuchMemory)?;
        let at = boot.alloc(bytes, PAGE_SIZE)?;
        let base = dm
            .phys_to_virt(at)
            .ok_or(MemMapError::Bootmem(BootmemError::OutOfMemory))?;
        scan.set_zone_spans(bounds);
        // Not trusting the layout for "not null": a direct map at a wrapping
        // base is refused here rather than relied on below.
        let ptr = core::ptr::NonNull::new(base.as_mut_ptr::<Page>())
            .ok_or(MemMapError::Bootmem(BootmemError::OutOfMemory))?;
        // SAFETY: `ptr` is `count = max_pfn` descriptors' worth of memory that
        // bootmem reserved for us; the caller's contract (the direct map of
        // `layout` maps it writable, nothing else uses it) covers the writes.
        unsafe { scan.init_descriptors(ptr.as_ptr(), bounds) };
        let present = scan.count_present(boot);
        let mem_map_pages = (bytes as u64).div_ceil(page);
        Ok(MemMap {
            // Every descriptor was initialised above and the memory stays ours
            // for 'a by the caller's contract.
            base: ptr,
            len: count,
            _pages: core::marker::PhantomData,
            nodes: scan.nodes,
            nr_nodes: scan.nr_nodes,
            dm,
            dma_end: bounds.dma_end,
            high_start: bounds.high_start,
            stats: MemStats {
                spanned: scan.max_pfn,
                present,
                mem_map_pages,
                bootmem_pages: 0,
                reserved_ram: 0,
                ignored_ram: scan.ignored_ram,
            },
        })
    }

    /// Clears the reserved flag of every frame that bootmem says is free RAM
    /// (the frames Linux's `free_all_bootmem` hands to the buddy allocator),
    /// marks high-memory frames, records the bootmem accounting and returns the
    /// number of frames released. Call once, after the last bootmem allocation;
    /// the page allocator then takes every frame without [`PgFlags::RESERVED`].
    pub fn release_free(&mut self, boot: &Bootmem<'_>) -> u64 {
        let mut released = 0;
        let mut at = 0;
        while let Some(run) = boot.next_free_run(at) {
            let end = run.end.min(self.len as u64);
            for p in run.start..end {
                // SAFETY: p < len: an initialised descriptor.
                // `&mut self`: the map is not shared yet, so nothing else
                // writes the descriptor (the owner contract).
                unsafe { &*self.base.as_ptr().add(p as usize) }.and_not_flags(PgFlags::RESERVED);
            }
            released += end.saturating_sub(run.start);
            at = run.end;
        }
        self.stats.bootmem_pages = boot.allocated_pages();
        self.stats.reserved_ram = self.stats.present - released;
        released
    }

    /// The descriptors.
    pub fn pages(&self) -> &'a [Page] {
        // SAFETY: `len` initialised descriptors at `base`, alive for 'a.
        unsafe { core::slice::from_raw_parts(self.base.as_ptr(), self.len) }
    }

    /// Number of descriptors (one past the last frame).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are no descriptors (never, for a built map).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The online nodes.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes[..self.nr_nodes].iter().filter(|n| n.is_online())
    }

    /// Node `id`, if online.
    pub fn node(&self, id: usize) -> Option<&Node> {
        self.nodes[..self.nr_nodes]
            .get(id)
            .filter(|n| n.is_online())
    }

    /// One more than the highest node id.
    #[inline]
    pub fn nr_node_ids(&self) -> usize {
        self.nr_nodes
    }

    /// Frame counts.
    pub fn stats(&self) -> MemStats {
        self.stats
    }

    /// The direct map.
    #[inline]
    pub fn direct_map(&self) -> DirectMap {
        self.dm
    }

    /// One past the last frame of `ZONE_DMA`.
    pub fn dma_end_pfn(&self) -> u64 {
        self.dma_end
    }

    /// First frame of high memory.
    pub fn highmem_start_pfn(&self) -> u64 {
        self.high_start
    }

    /// The descriptor of frame `pfn` (Linux's `pfn_to_page`).
    #[inline]
    pub fn pfn_to_page(&self, pfn: Pfn) -> Result<&'a Page, PfnError> {
        self.descriptor(pfn.as_usize())
    }

    /// Descriptor `i`, range-checked.
    #[inline]
    fn descriptor(&self, i: usize) -> Result<&'a Page, PfnError> {
        if i < self.len {
            // SAFETY: i < len: an initialised descriptor, alive for 'a.
            Ok(unsafe { &*self.base.as_ptr().add(i) })
        } else {
            Err(PfnError::OutOfRange)
        }
    }

    /// The frame number of a descriptor of this `mem_map` (Linux's
    /// `page_to_pfn`).
    #[inline]
    pub fn page_to_pfn(&self, page: &Page) -> Result<Pfn, PfnError> {
        let base = self.base.as_ptr().addr();
        let off = (page as *const Page).addr().wrapping_sub(base);
        let Some(idx) = descriptor_index(off, self.len) else {
            return Err(PfnError::NotADescriptor);
        };
        // SAFETY: below `len`; mem_map covers frames of physical addresses,
        // which are below `PhysAddr::LIMIT`, so every index fits `Pfn`.
        Ok(unsafe { Pfn::new_unchecked(idx) })
    }

    /// The frame number of a descriptor of this `mem_map` and the descriptor
    /// with the map's lifetime: [`MemMap::page_to_pfn`] and
    /// [`MemMap::pfn_to_page`] in one range check.
    #[inline]
    pub fn own(&self, page: &Page) -> Result<(Pfn, &'a Page), PfnError> {
        let pfn = self.page_to_pfn(page)?;
        // SAFETY: `page_to_pfn` checked that the pfn is below `len`: an
        // initialised descriptor, alive for 'a.
        Ok((pfn, unsafe { &*self.base.as_ptr().add(pfn.as_usize()) }))
    }

    /// The kernel address of a page: its direct-map address in low memory; for a
    /// high-memory page the address it is mapped at (see
    /// [`MemMap::set_page_address`]), or `None` while unmapped (Linux's
    /// `page_address`).
    #[inline]
    pub fn page_address(&self, page: &Page) -> Option<VirtAddr> {
        let pfn = self.page_to_pfn(page).ok()?;
        if page.test(PgFlags::HIGHMEM) || pfn.as_usize() as u64 >= self.high_start {
            let v = page.owner();
            (v != 0).then_some(VirtAddr::new(v))
        } else {
            self.dm.phys_to_virt(pfn.phys())
        }
    }

    /// Records (or, with `None`, forgets) the kernel address a high-memory page
    /// is mapped at; `kmap` calls this. Ignored for low-memory pages.
    ///
    /// # Safety
    /// The owner contract of [`Page`]: the caller owns the page's mapping (it
    /// is `kmap`, or holds the page), no other thread sets its address at the
    /// same time, and `va` is where the page's frame is mapped now, for as long
    /// as it stays recorded ([`MemMap::page_address`] hands it to code that
    /// writes through it).
    pub unsafe fn set_page_address(&self, page: &Page, va: Option<VirtAddr>) {
        if page.test(PgFlags::HIGHMEM) {
            page.set_owner_word(va.map_or(0, VirtAddr::as_usize));
        }
    }

    /// The descriptor of the page a direct-map address lies in (Linux's
    /// `virt_to_page`).
    #[inline]
    pub fn virt_to_page(&self, va: VirtAddr) -> Result<&'a Page, PfnError> {
        // The direct map's offset, shifted, is the frame number: no physical
        // address is made (its range check is implied by `len`).
        let off = va.as_usize().wrapping_sub(self.dm.base().as_usize());
        if off >= self.dm.size() {
            return Err(PfnError::NotDirectMapped);
        }
        self.descriptor(off >> kmm_hal::PAGE_SHIFT)
    }

    /// The physical address of a descriptor's frame.
    pub fn page_to_phys(&self, page: &Page) -> Result<PhysAddr, PfnError> {
        self.page_to_pfn(page).map(Pfn::phys)
    }
}

#[cfg(test)]
mod tests {
    use super::{descriptor_index, index_of};

    /// `index_of::<SIZE>` against a division, near 0 and near `usize::MAX`.
    fn check<const SIZE: usize>(f: impl Fn(usize, usize) -> Option<usize>) {
        // Miri checks the arithmetic, not the coverage: fewer lengths there.
        let lens: &[usize] = if cfg!(miri) {
            &[1, 7]
        } else {
            &[1, 2, 7, 1000]
        };
        for &len in lens {
            let offs = (0..(len + 3) * SIZE).chain((0..4 * SIZE).map(|k| usize::MAX - k));
            for off in offs {
                let want = (off % SIZE == 0 && off / SIZE < len).then_some(off / SIZE);
                assert_eq!(f(off, len), want, "size {SIZE} len {len} off {off}");
            }
        }
    }

    #[test]
    fn descriptor_index_is_exact_division() {
        check::<{ core::mem::size_of::<crate::Page>() }>(descriptor_index);
        // i386's and x86-64's descriptor sizes, whatever the host.
        check::<28>(index_of::<28>);
        check::<48>(index_of::<48>);
        check::<32>(index_of::<32>);
    }
}
