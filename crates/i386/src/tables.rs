//! [`Paging`]: i386 page tables in physical memory, reached through a direct map.

use core::marker::PhantomData;

use kmm_hal::{
    DirectMap, Flush, FrameSource, MapError, PAGE_SIZE, PageFlags, PageSize, PageTable, PhysAddr,
    TableReclaim, Translation, VirtAddr,
};

use crate::mode::{Classic, Mode, P, PS, PaeMode, RW, US, large_addr_mask};

/// Classic 2-level i386 page tables (4 KiB pages; 4 MiB PSE pages when enabled).
pub type TwoLevel = Paging<Classic>;
/// PAE page tables (4 KiB and 2 MiB pages, physical addresses up to 64 GiB, NX).
pub type Pae = Paging<PaeMode>;

/// Flags of a directory entry that points to a page table. The page-table entry
/// decides the effective rights, so the directory entry grants all of them.
const TABLE_ENTRY: u64 = P | RW | US;
/// A software-available bit (ignored by the CPU) that `map_range` sets on the
/// directory entries of tables it allocated, so a failed call frees exactly those.
const NEW_TABLE: u64 = 1 << 9;

/// Page tables for one i386 address space.
///
/// The tables live in physical memory and are read and written through a
/// [`DirectMap`]: the identity map before paging is on, the kernel's direct map
/// after, or the mock's simulated RAM on the host. Every frame the tables use
/// must lie inside that direct map.
pub struct Paging<M: Mode> {
    root: PhysAddr,
    dirs: [PhysAddr; 4],
    dm: DirectMap,
    large_pages: bool,
    table_pages: usize,
    /// The mode is a type-level tag only: the tables are `Send` and `Sync`
    /// whatever it is.
    _mode: PhantomData<fn() -> M>,
}

impl<M: Mode> core::fmt::Debug for Paging<M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Paging")
            .field("mode", &M::NAME)
            .field("root", &self.root)
            .field("table_pages", &self.table_pages)
            .finish()
    }
}

/// Where a virtual address lands in the tables.
#[derive(Clone, Copy)]
struct Slot {
    dir: usize,
    pde: usize,
    pte: usize,
}

impl<M: Mode> Paging<M> {
    /// `map_range`'s argument check: the page-aligned start and the last
    /// byte of a non-empty range that ends below 4 GiB.
    fn check_range(va: VirtAddr, len: usize) -> Result<(usize, usize), MapError> {
        let start = Self::check_va(va, PAGE_SIZE)?;
        if len == 0 || !len.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::BadLength);
        }
        // In u64, so a range past 4 GiB is the same error on a 32-bit and a
        // 64-bit host.
        match (start as u64).checked_add(len as u64 - 1) {
            // Below 4 GiB: fits usize on any host.
            Some(last) if last <= u64::from(u32::MAX) => Ok((start, last as usize)),
            _ => Err(MapError::VirtOutOfRange),
        }
    }

    /// The start of the large-page span after the one holding `v`, if any.
    fn next_span(v: usize) -> Option<usize> {
        (v | (Self::LARGE_PAGE_SIZE - 1)).checked_add(1)
    }

    /// `map_range` pass 1: nothing in `start..=last` may be mapped.
    fn check_unmapped(&self, start: usize, last: usize) -> Result<(), MapError> {
        let mut v = start;
        while v <= last {
            let pde = self.read_pde(Self::slot(v));
            if pde & P != 0 {
                if pde & PS != 0 {
                    return Err(MapError::AlreadyMapped);
                }
                let table = self.table_of(pde);
                let span_end = (v | (Self::LARGE_PAGE_SIZE - 1)).min(last);
                for p in (v..=span_end).step_by(PAGE_SIZE) {
                    // SAFETY: a present non-large PDE points to a table page in dm.
                    if unsafe { M::read(table, Self::slot(p).pte) } & P != 0 {
                        return Err(MapError::AlreadyMapped);
                    }
                }
            }
            let Some(n) = Self::next_span(v) else { break };
            v = n;
        }
        Ok(())
    }

    /// `map_range` pass 2: allocates every missing table of `start..=last`,
    /// marked `NEW_TABLE`; on failure gives back the ones this call took, so
    /// the tables are as they were.
    fn take_tables<F: FrameSource + ?Sized>(
        &mut self,
        start: usize,
        last: usize,
        frames: &mut F,
    ) -> Result<(), MapError> {
        let mut v = start;
        while v <= last {
            let s = Self::slot(v);
            if self.read_pde(s) & P == 0 {
                match self.take_frame(frames) {
                    Ok(f) => {
                        self.write_pde(s, f.as_u64() | TABLE_ENTRY | NEW_TABLE);
                        self.table_pages += 1;
                    }
                    Err(e) => {
                        self.drop_new_tables(start, v, frames);
                        return Err(e);
                    }
                }
            }
            let Some(n) = Self::next_span(v) else { break };
            v = n;
        }
        Ok(())
    }

    /// Gives back the tables `take_tables` allocated below `stop`.
    fn drop_new_tables<F: FrameSource + ?Sized>(
        &mut self,
        start: usize,
        stop: usize,
        frames: &mut F,
    ) {
        let mut v = start;
        while v < stop {
            let s = Self::slot(v);
            let pde = self.read_pde(s);
            if pde & NEW_TABLE != 0 {
                self.write_pde(s, 0);
                self.table_pages -= 1;
                frames.free_frame(PhysAddr::new(pde & M::ADDR_MASK));
            }
            v = (v | (Self::LARGE_PAGE_SIZE - 1)) + 1;
        }
    }

    /// `map_range` pass 3: writes `pages` entries from `start` to the frames
    /// from `pa`, and drops the new-table marks.
    fn write_entries(&mut self, start: usize, pa: PhysAddr, pages: usize, bits: u64) {
        for i in 0..pages {
            let v = start + i * PAGE_SIZE;
            let s = Self::slot(v);
            let pde = self.read_pde(s);
            if pde & NEW_TABLE != 0 {
                self.write_pde(s, pde & !NEW_TABLE);
            }
            let table = self.table_of(pde);
            let frame = pa.as_u64() + (i * PAGE_SIZE) as u64;
            // SAFETY: pass 2 made the PDE point at a table page in dm.
            unsafe { M::write(table, s.pte, frame | bits) };
        }
    }

    /// Size in bytes of a large page in this mode.
    pub const LARGE_PAGE_SIZE: usize = 1 << M::LARGE_SHIFT;

    /// Empty tables whose pages come from `frames` and are reached through `dm`.
    ///
    /// `large_pages` turns on large mappings (PSE for 2-level paging; PAE always
    /// has 2 MiB pages, so the flag is ignored there). Under PAE the PDPT and all
    /// four page directories are allocated now, as Linux does, so that the PDPT
    /// never changes after CR3 is loaded.
    ///
    /// # Safety
    /// The tables write to the frames they take from `frames` (and, by every
    /// later call, to their table pages) through `dm`: `dm` must map RAM the
    /// caller may write at those addresses, for as long as the tables live,
    /// and nothing else may use the frames `frames` hands out (the
    /// [`FrameSource`] contract).
    pub unsafe fn new<F: FrameSource + ?Sized>(
        dm: DirectMap,
        large_pages: bool,
        frames: &mut F,
    ) -> Result<Self, MapError> {
        let mut t = Paging {
            root: PhysAddr::ZERO,
            dirs: [PhysAddr::ZERO; 4],
            dm,
            large_pages: large_pages || M::DIRS > 1,
            table_pages: 0,
            _mode: PhantomData,
        };
        let mut got = [PhysAddr::ZERO; 5];
        let want = if M::DIRS > 1 { M::DIRS + 1 } else { 1 };
        for i in 0..want {
            match t.take_frame(frames) {
                Ok(f) => got[i] = f,
                Err(e) => {
                    for &f in &got[..i] {
                        frames.free_frame(f);
                    }
                    return Err(e);
                }
            }
        }
        t.root = got[0];
        t.table_pages = want;
        if M::DIRS > 1 {
            for d in 0..M::DIRS {
                t.dirs[d] = got[d + 1];
                // A PDPT entry holds only the present bit and the address: the
                // RW and US bits are reserved there.
                // SAFETY: root is a zeroed table page inside the direct map.
                unsafe { M::write(t.ptr(t.root), d, got[d + 1].as_u64() | P) };
            }
        } else {
            t.dirs[0] = t.root;
        }
        Ok(t)
    }

    /// Adopts tables that already exist, such as the ones CR3 points to.
    ///
    /// # Safety
    /// `root` must be the root of valid tables of this mode whose pages all lie in
    /// `dm`, and nothing else may change them while `self` lives.
    pub unsafe fn from_root(root: PhysAddr, dm: DirectMap, large_pages: bool) -> Self {
        let mut t = Paging {
            root,
            dirs: [PhysAddr::ZERO; 4],
            dm,
            large_pages: large_pages || M::DIRS > 1,
            table_pages: 0,
            _mode: PhantomData,
        };
        if M::DIRS > 1 {
            for d in 0..M::DIRS {
                // SAFETY: the caller guarantees root is a valid PDPT in dm.
                let e = unsafe { M::read(t.ptr(root), d) };
                t.dirs[d] = PhysAddr::new(e & M::ADDR_MASK);
            }
        } else {
            t.dirs[0] = root;
        }
        t.table_pages = t.count_table_pages();
        t
    }

    /// The physical address to load into CR3.
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// The direct map the tables are reached through.
    pub fn direct_map(&self) -> DirectMap {
        self.dm
    }

    /// Switches the direct map the tables are reached through (for example from
    /// the identity map to `PAGE_OFFSET` once paging is on).
    ///
    /// # Safety
    /// Every table page must be readable and writable through `dm` from now on.
    pub unsafe fn set_direct_map(&mut self, dm: DirectMap) {
        self.dm = dm;
    }

    /// Maps physical `[0, size)` at `base` with global large pages, and
    /// base pages for a tail that is not a whole large page (Linux's
    /// `kernel_physical_mapping_init`): the direct map when `base` is the
    /// layout's `PAGE_OFFSET`. Table pages for the tail come from `frames`.
    /// Returns how many large pages and base pages it entered; the caller
    /// flushes (or loads the tables afterwards).
    pub fn kernel_physical_mapping_init<F: FrameSource + ?Sized>(
        &mut self,
        base: VirtAddr,
        size: usize,
        flags: PageFlags,
        frames: &mut F,
    ) -> Result<(usize, usize), MapError> {
        let large = if self.large_pages {
            Self::LARGE_PAGE_SIZE
        } else {
            usize::MAX
        };
        let mut pa = 0usize;
        let (mut n_large, mut n_base) = (0, 0);
        while pa < size {
            let va = VirtAddr::new(base.as_usize() + pa);
            let phys = PhysAddr::new(pa as u64);
            if size - pa >= large {
                self.map_large(va, phys, flags)?.ignore();
                pa += large;
                n_large += 1;
            } else {
                let len = (size - pa).min(large);
                self.map_range(va, phys, len, flags, frames)?.ignore();
                pa += len;
                n_base += len / PAGE_SIZE;
            }
        }
        Ok((n_large, n_base))
    }

    /// How many page-table pages (root, directories and tables) are in use.
    pub fn table_pages(&self) -> usize {
        self.table_pages
    }

    /// True if large pages are enabled.
    pub fn large_pages(&self) -> bool {
        self.large_pages
    }

    /// Calls `f` with every mapping, in address order.
    pub fn for_each_mapping(&self, mut f: impl FnMut(VirtAddr, Translation)) {
        for d in 0..M::DIRS {
            let dir = self.ptr(self.dirs[d]);
            for i in 0..M::ENTRIES {
                // SAFETY: every directory page is a table page inside dm.
                let pde = unsafe { M::read(dir, i) };
                if pde & P == 0 {
                    continue;
                }
                // In u64: with two-level paging the directory shift is 32,
                // which a 32-bit usize cannot shift by (d is 0 there).
                let base = (((d as u64) << (M::LARGE_SHIFT + M::INDEX_BITS))
                    | ((i as u64) << M::LARGE_SHIFT)) as usize;
                if pde & PS != 0 {
                    let frame = PhysAddr::new(pde & large_addr_mask::<M>());
                    f(
                        VirtAddr::new(base),
                        Translation {
                            phys: frame,
                            frame,
                            flags: entry_flags::<M>(pde),
                            size: PageSize::Large,
                        },
                    );
                    continue;
                }
                let table = self.ptr(PhysAddr::new(pde & M::ADDR_MASK));
                for j in 0..M::ENTRIES {
                    // SAFETY: a present non-large PDE points to a table page in dm.
                    let pte = unsafe { M::read(table, j) };
                    if pte & P != 0 {
                        let frame = PhysAddr::new(pte & M::ADDR_MASK);
                        f(
                            VirtAddr::new(base | (j * PAGE_SIZE)),
                            Translation {
                                phys: frame,
                                frame,
                                flags: entry_flags::<M>(pte),
                                size: PageSize::Base,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Gives every page table that maps nothing back to `frames` (tables left
    /// empty by unmaps with [`TableReclaim::Keep`]) and returns how many. The
    /// returned flush covers the whole address space: a CPU may still cache a
    /// directory entry that pointed at a freed table.
    pub fn free_empty_tables<F: FrameSource + ?Sized>(&mut self, frames: &mut F) -> (usize, Flush) {
        let mut freed = 0;
        for d in 0..M::DIRS {
            for i in 0..M::ENTRIES {
                let s = Slot {
                    dir: d,
                    pde: i,
                    pte: 0,
                };
                let pde = self.read_pde(s);
                if pde & P != 0 && pde & PS == 0 && self.table_is_empty(self.table_of(pde)) {
                    self.write_pde(s, 0);
                    self.table_pages -= 1;
                    frames.free_frame(PhysAddr::new(pde & M::ADDR_MASK));
                    freed += 1;
                }
            }
        }
        (freed, Flush::new(VirtAddr::ZERO, usize::MAX))
    }

    /// Frees every page-table page (mappings included) back to `frames`.
    pub fn destroy<F: FrameSource + ?Sized>(self, frames: &mut F) {
        for d in 0..M::DIRS {
            let dir = self.ptr(self.dirs[d]);
            for i in 0..M::ENTRIES {
                // SAFETY: every directory page is a table page inside dm.
                let pde = unsafe { M::read(dir, i) };
                if pde & P != 0 && pde & PS == 0 {
                    frames.free_frame(PhysAddr::new(pde & M::ADDR_MASK));
                }
            }
            if M::DIRS > 1 {
                frames.free_frame(self.dirs[d]);
            }
        }
        frames.free_frame(self.root);
    }

    fn count_table_pages(&self) -> usize {
        let mut n = if M::DIRS > 1 { M::DIRS + 1 } else { 1 };
        for d in 0..M::DIRS {
            let dir = self.ptr(self.dirs[d]);
            for i in 0..M::ENTRIES {
                // SAFETY: every directory page is a table page inside dm.
                let pde = unsafe { M::read(dir, i) };
                if pde & P != 0 && pde & PS == 0 {
                    n += 1;
                }
            }
        }
        n
    }

    /// The pointer to a table page. Table pages are checked to lie in the direct
    /// map when they are taken, so this cannot fail for them.
    fn ptr(&self, table: PhysAddr) -> *mut u8 {
        match self.dm.phys_to_virt(table) {
            Some(va) => va.as_mut_ptr(),
            None => panic!("kmm-i386: table page {table} outside the direct map"),
        }
    }

    /// Takes a frame for a table page, checks it and zeroes it.
    fn take_frame<F: FrameSource + ?Sized>(&self, frames: &mut F) -> Result<PhysAddr, MapError> {
        let f = frames.alloc_frame().ok_or(MapError::OutOfFrames)?;
        if !f.is_page_aligned() || !self.dm.contains_page(f) || f.as_u64() >= M::PHYS_LIMIT {
            frames.free_frame(f);
            return Err(MapError::BadFrame);
        }
        // SAFETY: the frame is a whole page inside the direct map, and the frame
        // source gave it to us, so nothing else uses it.
        unsafe { core::ptr::write_bytes(self.ptr(f), 0, PAGE_SIZE) };
        Ok(f)
    }

    fn slot(va: usize) -> Slot {
        Slot {
            dir: (va as u64 >> (M::LARGE_SHIFT + M::INDEX_BITS)) as usize,
            pde: (va >> M::LARGE_SHIFT) & (M::ENTRIES - 1),
            pte: (va >> 12) & (M::ENTRIES - 1),
        }
    }

    fn check_va(va: VirtAddr, align: usize) -> Result<usize, MapError> {
        let v = va.as_usize();
        if v as u64 > u64::from(u32::MAX) {
            return Err(MapError::VirtOutOfRange);
        }
        if !va.is_aligned(align) {
            return Err(MapError::Misaligned);
        }
        Ok(v)
    }

    fn check_pa(pa: PhysAddr, align: usize, len: usize) -> Result<(), MapError> {
        if !pa.is_aligned(align as u64) {
            return Err(MapError::Misaligned);
        }
        match pa.checked_end(len as u64) {
            Some(end) if end <= M::PHYS_LIMIT => Ok(()),
            _ => Err(MapError::PhysOutOfRange),
        }
    }

    fn check_flags(flags: PageFlags) -> Result<u64, MapError> {
        if flags.bits() & !M::FLAG_MASK != 0 {
            return Err(MapError::UnsupportedFlags);
        }
        Ok(flags.bits() | P)
    }

    fn read_pde(&self, s: Slot) -> u64 {
        // SAFETY: s.dir < DIRS for a checked 32-bit address; directories are table
        // pages in dm; s.pde < ENTRIES by masking.
        unsafe { M::read(self.ptr(self.dirs[s.dir]), s.pde) }
    }

    fn write_pde(&mut self, s: Slot, e: u64) {
        // SAFETY: as for `read_pde`.
        unsafe { M::write(self.ptr(self.dirs[s.dir]), s.pde, e) }
    }

    fn table_of(&self, pde: u64) -> *mut u8 {
        self.ptr(PhysAddr::new(pde & M::ADDR_MASK))
    }

    /// True if every entry of the table page is zero.
    fn table_is_empty(&self, table: *mut u8) -> bool {
        // SAFETY: table is a table page in dm: PAGE_SIZE readable bytes, aligned
        // for u32.
        (0..PAGE_SIZE / 4).all(|i| unsafe { table.cast::<u32>().add(i).read_volatile() } == 0)
    }

    fn translate_raw(&self, v: usize) -> Option<Translation> {
        let s = Self::slot(v);
        let pde = self.read_pde(s);
        if pde & P == 0 {
            return None;
        }
        if pde & PS != 0 {
            let frame = PhysAddr::new(pde & large_addr_mask::<M>());
            let off = (v & (Self::LARGE_PAGE_SIZE - 1)) as u64;
            return Some(Translation {
                phys: PhysAddr::new(frame.as_u64() + off),
                frame,
                flags: entry_flags::<M>(pde),
                size: PageSize::Large,
            });
        }
        // SAFETY: a present non-large PDE points to a table page in dm.
        let pte = unsafe { M::read(self.table_of(pde), s.pte) };
        if pte & P == 0 {
            return None;
        }
        let frame = PhysAddr::new(pte & M::ADDR_MASK);
        Some(Translation {
            phys: PhysAddr::new(frame.as_u64() + (v & (PAGE_SIZE - 1)) as u64),
            frame,
            flags: entry_flags::<M>(pte),
            size: PageSize::Base,
        })
    }
}

/// The [`PageFlags`] of an entry (the PS bit and address bits dropped).
fn entry_flags<M: Mode>(e: u64) -> PageFlags {
    PageFlags::from_bits_truncate(e & M::FLAG_MASK)
}

// SAFETY: `map_range` and `map_large` write exactly the entries asked for and
// refuse a present entry (`AlreadyMapped`), checking everything before the
// first write (all or nothing); `unmap` returns the entry it clears; table
// pages come from, and go back to, the caller's `FrameSource` only when empty;
// the tables are reached through the direct map `new`'s caller vouched for.
unsafe impl<M: Mode> PageTable for Paging<M> {
    fn large_page_size(&self) -> Option<usize> {
        self.large_pages.then_some(Self::LARGE_PAGE_SIZE)
    }

    fn map_range<F: FrameSource + ?Sized>(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        len: usize,
        flags: PageFlags,
        frames: &mut F,
    ) -> Result<Flush, MapError> {
        let (start, last) = Self::check_range(va, len)?;
        Self::check_pa(pa, PAGE_SIZE, len)?;
        let bits = Self::check_flags(flags)?;
        self.check_unmapped(start, last)?;
        self.take_tables(start, last, frames)?;
        self.write_entries(start, pa, len / PAGE_SIZE, bits);
        Ok(Flush::new(va, len))
    }

    fn map_large(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        flags: PageFlags,
    ) -> Result<Flush, MapError> {
        if !self.large_pages {
            return Err(MapError::LargePagesUnsupported);
        }
        let v = Self::check_va(va, Self::LARGE_PAGE_SIZE)?;
        Self::check_pa(pa, Self::LARGE_PAGE_SIZE, Self::LARGE_PAGE_SIZE)?;
        let bits = Self::check_flags(flags)?;
        let s = Self::slot(v);
        if self.read_pde(s) & P != 0 {
            return Err(MapError::AlreadyMapped);
        }
        self.write_pde(s, pa.as_u64() | bits | PS);
        Ok(Flush::new(va, Self::LARGE_PAGE_SIZE))
    }

    fn unmap<F: FrameSource + ?Sized>(
        &mut self,
        va: VirtAddr,
        reclaim: TableReclaim,
        frames: &mut F,
    ) -> Result<(Translation, Flush), MapError> {
        let v = Self::check_va(va, PAGE_SIZE)?;
        let t = self.translate_raw(v).ok_or(MapError::NotMapped)?;
        let s = Self::slot(v);
        if t.size == PageSize::Large {
            if !va.is_aligned(Self::LARGE_PAGE_SIZE) {
                return Err(MapError::InsideLargePage);
            }
            self.write_pde(s, 0);
            return Ok((t, Flush::new(va, Self::LARGE_PAGE_SIZE)));
        }
        let pde = self.read_pde(s);
        let table = self.table_of(pde);
        // SAFETY: a present non-large PDE points to a table page in dm.
        unsafe { M::write(table, s.pte, 0) };
        if reclaim == TableReclaim::Free && self.table_is_empty(table) {
            self.write_pde(s, 0);
            self.table_pages -= 1;
            frames.free_frame(PhysAddr::new(pde & M::ADDR_MASK));
        }
        Ok((t, Flush::new(va, PAGE_SIZE)))
    }

    fn protect(&mut self, va: VirtAddr, flags: PageFlags) -> Result<Flush, MapError> {
        let v = Self::check_va(va, PAGE_SIZE)?;
        let bits = Self::check_flags(flags)?;
        let t = self.translate_raw(v).ok_or(MapError::NotMapped)?;
        let s = Self::slot(v);
        if t.size == PageSize::Large {
            if !va.is_aligned(Self::LARGE_PAGE_SIZE) {
                return Err(MapError::InsideLargePage);
            }
            self.write_pde(s, t.frame.as_u64() | bits | PS);
            return Ok(Flush::new(va, Self::LARGE_PAGE_SIZE));
        }
        let table = self.table_of(self.read_pde(s));
        // SAFETY: a present non-large PDE points to a table page in dm.
        unsafe { M::write(table, s.pte, t.frame.as_u64() | bits) };
        Ok(Flush::new(va, PAGE_SIZE))
    }

    fn translate(&self, va: VirtAddr) -> Option<Translation> {
        let v = va.as_usize();
        if v as u64 > u64::from(u32::MAX) {
            return None;
        }
        self.translate_raw(v)
    }

    fn flush(&self, va: VirtAddr) {
        #[cfg(all(feature = "hw-flush", target_arch = "x86"))]
        // SAFETY: the hw-flush feature is only enabled by code running in ring 0.
        unsafe {
            crate::arch::invlpg(va)
        };
        #[cfg(not(all(feature = "hw-flush", target_arch = "x86")))]
        let _ = va;
    }

    fn flush_all(&self) {
        #[cfg(all(feature = "hw-flush", target_arch = "x86"))]
        // SAFETY: the hw-flush feature is only enabled by code running in ring 0.
        unsafe {
            crate::arch::flush_tlb_all()
        };
    }
}
