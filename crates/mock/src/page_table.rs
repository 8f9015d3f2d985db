//! [`MockPageTable`]: the kernel's i386 tables in simulated RAM, mirrored into the
//! host window, with every change reported to the TLB checker.

use std::fmt;
use std::sync::atomic::Ordering;

use kmm_hal::{
    DirectMap, Flush, FrameSource, KernelLayout, MapError, PAGE_SIZE, PageFlags, PageSize,
    PageTable, PhysAddr, TableReclaim, Translation, VirtAddr,
};
use kmm_i386::{Pae, TwoLevel};

use crate::machine::{Machine, PagingMode};
use crate::tlb::{Change, TlbViolation};

enum Tables {
    TwoLevel(TwoLevel),
    Pae(Pae),
}

/// Runs the same expression on whichever table type is inside.
macro_rules! with_tables {
    ($self:expr, $t:ident => $e:expr) => {
        match $self {
            Tables::TwoLevel($t) => $e,
            Tables::Pae($t) => $e,
        }
    };
}

/// Why an access through [`MockPageTable::read`] or [`MockPageTable::write`]
/// failed — what would be a page fault, or worse, on real hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessError {
    /// Nothing is mapped at the address.
    NotMapped(VirtAddr),
    /// A write to a read-only page.
    ReadOnly(VirtAddr),
    /// The mapping changed and was not flushed: the CPU could use the old one.
    StaleTlb(TlbViolation),
    /// The mapping points outside simulated RAM (device memory).
    NotRam(PhysAddr),
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessError::NotMapped(va) => write!(f, "page fault: {va} is not mapped"),
            AccessError::ReadOnly(va) => write!(f, "page fault: write to read-only {va}"),
            AccessError::StaleTlb(v) => write!(f, "{v}"),
            AccessError::NotRam(pa) => write!(f, "{pa} is not simulated RAM"),
        }
    }
}

impl std::error::Error for AccessError {}

/// The kernel page table of a [`Machine`]; made by
/// [`Machine::kernel_page_table`].
///
/// Addresses are host addresses in the machine's kernel window
/// ([`crate::MockLayout`]); underneath, `kmm-i386` writes real 2-level or PAE
/// entries into simulated RAM at the corresponding i386 addresses.
pub struct MockPageTable {
    tables: Tables,
    machine: Machine,
    _claim: Claim,
}

/// Marks the machine's kernel page table as taken while it lives.
struct Claim(Machine);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.inner.tables_taken.store(false, Ordering::Release);
    }
}

impl fmt::Debug for MockPageTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockPageTable")
            .field("paging", &self.machine.paging())
            .field("root", &self.root())
            .field("table_pages", &self.table_pages())
            .finish()
    }
}

impl MockPageTable {
    pub(crate) fn new<F: FrameSource + ?Sized>(
        machine: Machine,
        frames: &mut F,
    ) -> Result<MockPageTable, MapError> {
        // The tables reach RAM through the machine's physical window, which stays
        // mapped whatever the kernel window mirrors.
        let lowmem = machine.lowmem_end().as_u64() as usize;
        let ram = machine
            .phys_ptr(PhysAddr::ZERO, lowmem)
            .expect("lowmem is RAM");
        let dm = DirectMap::new(VirtAddr::from_ptr(ram), lowmem).expect("RAM fits the host");
        let claim = Claim(machine.clone());
        let tables = match machine.paging() {
            // SAFETY: `dm` is the machine's direct map of its simulated RAM,
            // which lives as long as the machine (this table holds it), and
            // `frames` is the machine's page-table frame source.
            PagingMode::TwoLevel => Tables::TwoLevel(unsafe { TwoLevel::new(dm, true, frames) }?),
            // SAFETY: as above.
            PagingMode::Pae => Tables::Pae(unsafe { Pae::new(dm, true, frames) }?),
        };
        Ok(MockPageTable {
            tables,
            machine,
            _claim: claim,
        })
    }

    /// The machine.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// The physical address of the table root (what CR3 would hold).
    pub fn root(&self) -> PhysAddr {
        with_tables!(&self.tables, t => t.root())
    }

    /// Page-table pages in use.
    pub fn table_pages(&self) -> usize {
        with_tables!(&self.tables, t => t.table_pages())
    }

    fn guest(&self, va: VirtAddr) -> Result<VirtAddr, MapError> {
        self.machine
            .layout()
            .host_to_guest(va)
            .map(VirtAddr::new)
            .ok_or(MapError::VirtOutOfRange)
    }

    fn host(&self, guest: VirtAddr) -> VirtAddr {
        self.machine
            .layout()
            .guest_to_host(guest.as_usize())
            .expect("the tables map only kernel-window addresses")
    }

    fn size_bytes(&self, size: PageSize) -> usize {
        match size {
            PageSize::Base => PAGE_SIZE,
            PageSize::Large => with_tables!(&self.tables, t => t.large_page_size())
                .expect("a large mapping exists only with large pages"),
        }
    }

    /// Enters the direct map `dm` into the tables (and the mirror): large
    /// global pages where aligned, base pages elsewhere.
    pub(crate) fn map_direct<F: FrameSource + ?Sized>(
        &mut self,
        dm: DirectMap,
        frames: &mut F,
    ) -> Result<(), MapError> {
        let large = self.large_page_size().unwrap_or(PAGE_SIZE);
        let mut pa = 0usize;
        while pa < dm.size() {
            let va = VirtAddr::new(dm.base().as_usize() + pa);
            let phys = PhysAddr::new(pa as u64);
            if dm.size() - pa >= large && large > PAGE_SIZE {
                self.map_large(va, phys, PageFlags::KERNEL_GLOBAL)?.ignore();
                pa += large;
            } else {
                let len = (dm.size() - pa).min(large);
                self.map_range(va, phys, len, PageFlags::KERNEL_GLOBAL, frames)?
                    .ignore();
                pa += len;
            }
        }
        Ok(())
    }

    /// Calls `f` with every mapping (host address, translation), in order.
    pub fn for_each_mapping(&self, mut f: impl FnMut(VirtAddr, Translation)) {
        with_tables!(&self.tables, t => t.for_each_mapping(|g, tr| f(self.host(g), tr)));
    }

    /// Gives every page table that maps nothing back to `frames`; see
    /// [`kmm_i386::Paging::free_empty_tables`].
    pub fn free_empty_tables<F: FrameSource + ?Sized>(&mut self, frames: &mut F) -> (usize, Flush) {
        with_tables!(&mut self.tables, t => t.free_empty_tables(frames))
    }

    /// Frees every page-table page back to `frames` and removes every mirrored
    /// mapping.
    pub fn destroy<F: FrameSource + ?Sized>(self, frames: &mut F) {
        let mut maps = Vec::new();
        self.for_each_mapping(|va, t| maps.push((va, t.size)));
        {
            let mut w = self.machine.window();
            for (va, size) in maps {
                w.unmap(va.as_usize(), self.size_bytes(size));
            }
        }
        let MockPageTable { tables, .. } = self;
        with_tables!(tables, t => t.destroy(frames));
    }

    /// Checks a use of `va` as the CPU would: it must be mapped, and not stale in
    /// the TLB. Returns the translation.
    pub fn check_access(&self, va: VirtAddr) -> Result<Translation, AccessError> {
        let t = self.translate(va).ok_or(AccessError::NotMapped(va))?;
        self.machine
            .tlb()
            .check(va)
            .map_err(AccessError::StaleTlb)?;
        Ok(t)
    }

    /// Reads `buf.len()` bytes at `va` through the tables (works in every
    /// backing; checks each page as [`MockPageTable::check_access`] does).
    pub fn read(&self, va: VirtAddr, buf: &mut [u8]) -> Result<(), AccessError> {
        self.access(va, buf.len(), false, |pa, range| {
            self.machine.read_phys(pa, &mut buf[range])
        })
    }

    /// Writes `data` at `va` through the tables; the pages must be writable.
    pub fn write(&self, va: VirtAddr, data: &[u8]) -> Result<(), AccessError> {
        self.access(va, data.len(), true, |pa, range| {
            self.machine.write_phys(pa, &data[range])
        })
    }

    fn access(
        &self,
        va: VirtAddr,
        len: usize,
        write: bool,
        mut op: impl FnMut(PhysAddr, std::ops::Range<usize>) -> bool,
    ) -> Result<(), AccessError> {
        let mut done = 0;
        while done < len {
            let v = VirtAddr::new(va.as_usize() + done);
            let t = self.check_access(v)?;
            if write && !t.flags.contains(PageFlags::WRITABLE) {
                return Err(AccessError::ReadOnly(v));
            }
            let chunk = (PAGE_SIZE - v.page_offset()).min(len - done);
            if !op(t.phys, done..done + chunk) {
                return Err(AccessError::NotRam(t.phys));
            }
            done += chunk;
        }
        Ok(())
    }

    /// Cross-checks the i386 tables against the host mirror: every mapping in the
    /// tables is mirrored with the same frame, size and rights and nothing else
    /// is; with the mmap backing, the first byte seen through each mapping equals
    /// the byte of its frame. Returns the number of mappings checked.
    pub fn verify_mirror(&self) -> Result<usize, String> {
        let w = self.machine.window();
        let shadow = w.shadow();
        let mut n = 0;
        let mut err = None;
        self.for_each_mapping(|va, t| {
            if err.is_some() {
                return;
            }
            n += 1;
            let len = self.size_bytes(t.size);
            let writable = t.flags.contains(PageFlags::WRITABLE);
            match shadow.get(&va.as_usize()) {
                Some(m) if m.pa == t.frame && m.len == len && m.writable == writable => {}
                other => {
                    err = Some(format!(
                        "{va}: tables map {} ({len} bytes, writable {writable}), mirror has {other:?}",
                        t.frame
                    ));
                    return;
                }
            }
            if w.is_mirrored()
                && let Some(p) = self.machine.phys_ptr(t.frame, 1)
            {
                // SAFETY: both addresses are mapped readable: the mirror maps va
                // (checked above) and p is RAM.
                let (a, b) = unsafe { (va.as_ptr::<u8>().read_volatile(), p.read_volatile()) };
                if a != b {
                    err = Some(format!("{va}: host sees {a:#x}, frame {} holds {b:#x}", t.frame));
                }
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        if n != shadow.len() {
            return Err(format!(
                "tables hold {n} mappings, the mirror {}",
                shadow.len()
            ));
        }
        Ok(n)
    }
}

impl Machine {
    /// The kernel page table: empty i386 tables in the machine's paging mode,
    /// their pages taken from `frames`, and — if `direct_map` — the direct map of
    /// low memory entered with global large pages (base pages at an unaligned
    /// tail), as a kernel builds it at boot.
    ///
    /// Only one kernel page table may exist at a time, because it owns the
    /// host window's mirror; a second call before the first is dropped fails
    /// with [`MapError::AlreadyMapped`].
    pub fn kernel_page_table<F: kmm_hal::FrameSource + ?Sized>(
        &self,
        frames: &mut F,
        direct_map: bool,
    ) -> Result<MockPageTable, MapError> {
        if self.inner.tables_taken.swap(true, Ordering::AcqRel) {
            return Err(MapError::AlreadyMapped);
        }
        let mut pt = MockPageTable::new(self.clone(), frames).inspect_err(|_| {
            self.inner.tables_taken.store(false, Ordering::Release);
        })?;
        if direct_map {
            let dm = self.inner.layout.direct_map();
            if let Err(e) = pt.map_direct(dm, frames) {
                pt.destroy(frames);
                return Err(e);
            }
        }
        Ok(pt)
    }
}

// SAFETY: every change goes to the real i386 tables (`kmm-i386`'s `Paging`,
// which keeps the contract) and is then mirrored into the host window; a
// failed change is undone in both. `unmap` and `translate` answer from the
// i386 tables, and table pages come from the caller's frame source only.
unsafe impl PageTable for MockPageTable {
    fn large_page_size(&self) -> Option<usize> {
        with_tables!(&self.tables, t => t.large_page_size())
    }

    fn map_range<F: FrameSource + ?Sized>(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        len: usize,
        flags: PageFlags,
        frames: &mut F,
    ) -> Result<Flush, MapError> {
        let g = self.guest(va)?;
        with_tables!(&mut self.tables, t => t.map_range(g, pa, len, flags, frames))?.ignore();
        let writable = flags.contains(PageFlags::WRITABLE);
        let mut w = self.machine.window();
        for i in 0..len / PAGE_SIZE {
            w.map(
                va.as_usize() + i * PAGE_SIZE,
                PhysAddr::new(pa.as_u64() + (i * PAGE_SIZE) as u64),
                PAGE_SIZE,
                writable,
            );
        }
        Ok(Flush::new(va, len))
    }

    fn map_large(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        flags: PageFlags,
    ) -> Result<Flush, MapError> {
        let g = self.guest(va)?;
        with_tables!(&mut self.tables, t => t.map_large(g, pa, flags))?.ignore();
        let len = self.size_bytes(PageSize::Large);
        self.machine
            .window()
            .map(va.as_usize(), pa, len, flags.contains(PageFlags::WRITABLE));
        Ok(Flush::new(va, len))
    }

    fn unmap<F: FrameSource + ?Sized>(
        &mut self,
        va: VirtAddr,
        reclaim: TableReclaim,
        frames: &mut F,
    ) -> Result<(Translation, Flush), MapError> {
        let g = self.guest(va)?;
        let (t, f) = with_tables!(&mut self.tables, tb => tb.unmap(g, reclaim, frames))?;
        f.ignore();
        let len = self.size_bytes(t.size);
        self.machine.window().unmap(va.as_usize(), len);
        self.machine.tlb().changed(va, len, Change::Unmap);
        Ok((t, Flush::new(va, len)))
    }

    fn protect(&mut self, va: VirtAddr, flags: PageFlags) -> Result<Flush, MapError> {
        let g = self.guest(va)?;
        with_tables!(&mut self.tables, t => t.protect(g, flags))?.ignore();
        let size = self.translate(va).map(|t| t.size).unwrap_or(PageSize::Base);
        let len = self.size_bytes(size);
        self.machine
            .window()
            .protect(va.as_usize(), flags.contains(PageFlags::WRITABLE));
        self.machine.tlb().changed(va, len, Change::Protect);
        Ok(Flush::new(va, len))
    }

    fn translate(&self, va: VirtAddr) -> Option<Translation> {
        let g = self.guest(va).ok()?;
        with_tables!(&self.tables, t => t.translate(g))
    }

    fn flush(&self, va: VirtAddr) {
        self.machine.tlb().flush(va);
    }

    fn flush_all(&self) {
        self.machine.tlb().flush_all();
    }
}
