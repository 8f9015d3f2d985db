//! Device mappings (Linux 2.6's `arch/i386/mm/ioremap.c`): `ioremap` maps a
//! physical range that is not usable RAM, uncached, into the vmalloc range;
//! the legacy ISA range is already in the direct map.

use core::ptr::NonNull;

use kmm_hal::{
    Cpu, FrameSource, KernelTlb, PAGE_SIZE, PageFlags, PageTable, Pfn, PhysAddr, VirtAddr,
};
use kmm_page_frame::PgFlags;

use crate::area::AreaKind;
use crate::{Vmalloc, VmallocError};

/// The legacy ISA hole (VGA memory, option ROMs, the BIOS): 640 KiB to 1 MiB.
pub const ISA_START: u64 = 0xA_0000;
/// The end of the ISA hole.
pub const ISA_END: u64 = 0x10_0000;

impl<'a, P: PageTable, F: FrameSource, T: KernelTlb, C: Cpu> Vmalloc<'a, P, F, T, C> {
    /// Maps `size` bytes of device memory at `phys` uncached (`PCD`, as
    /// modern Linux's `ioremap`); returns the address of `phys` itself (the
    /// offset into its page kept).
    ///
    /// The ISA range 0xA0000–0x100000 returns its direct-map address with
    /// no new mapping, as Linux 2.6 does. Refused: size 0 or overflowing
    /// ([`VmallocError::BadSize`]), a range holding usable RAM the page
    /// allocator manages ([`VmallocError::RamRefused`]; reserved RAM, such
    /// as firmware tables, may be mapped).
    pub fn ioremap(&self, phys: PhysAddr, size: usize) -> Result<NonNull<u8>, VmallocError> {
        self.ioremap_prot(phys, size, PageFlags::KERNEL_RW | PageFlags::NO_CACHE)
    }

    /// [`Self::ioremap`] with both cache-disable bits (`PCD | PWT`), Linux
    /// 2.6's `ioremap_nocache`.
    pub fn ioremap_nocache(
        &self,
        phys: PhysAddr,
        size: usize,
    ) -> Result<NonNull<u8>, VmallocError> {
        self.ioremap_prot(
            phys,
            size,
            PageFlags::KERNEL_RW | PageFlags::NO_CACHE | PageFlags::WRITE_THROUGH,
        )
    }

    /// [`Self::ioremap`] write-through (`PWT`, Linux's `ioremap_wt`), for
    /// frame buffers.
    pub fn ioremap_wt(&self, phys: PhysAddr, size: usize) -> Result<NonNull<u8>, VmallocError> {
        self.ioremap_prot(phys, size, PageFlags::KERNEL_RW | PageFlags::WRITE_THROUGH)
    }

    /// The body of the ioremap family, with the page flags to map with.
    pub fn ioremap_prot(
        &self,
        phys: PhysAddr,
        size: usize,
        prot: PageFlags,
    ) -> Result<NonNull<u8>, VmallocError> {
        let end = phys.checked_end(size as u64).ok_or(VmallocError::BadSize)?;
        if size == 0 {
            return Err(VmallocError::BadSize);
        }
        if phys.as_u64() >= ISA_START
            && end <= ISA_END
            && let Some(va) = self.mem().direct_map().phys_to_virt(phys)
        {
            return Ok(
                NonNull::new(va.as_mut_ptr::<u8>()).expect("direct-map addresses are not null")
            );
        }
        let first = phys.as_u64() / PAGE_SIZE as u64;
        let last = end.div_ceil(PAGE_SIZE as u64);
        for pfn in first..last {
            if let Ok(page) = self.mem().pfn_to_page(Pfn::new(pfn as usize))
                && !page.test(PgFlags::RESERVED)
            {
                return Err(VmallocError::RamRefused);
            }
        }
        let pages = (last - first) as usize;
        if pages >= (self.end - self.start) / PAGE_SIZE {
            return Err(VmallocError::BadSize);
        }
        let area = self.new_area(
            (pages + 1) * PAGE_SIZE,
            PAGE_SIZE,
            AreaKind::Ioremap,
            "ioremap",
        )?;
        // SAFETY: a fresh descriptor, ours until published.
        let a = unsafe { &mut *area.as_ptr() };
        let base = PhysAddr::new(first * PAGE_SIZE as u64);
        a.phys = Some(base);
        let frames = (0..pages).map(|i| PhysAddr::new(base.as_u64() + (i * PAGE_SIZE) as u64));
        if let Err(e) = self.map_frames(a.addr, frames, prot | PageFlags::PRESENT) {
            self.discard(area);
            return Err(e);
        }
        a.nr_pages = 0;
        let va = self.publish(area);
        let p = va.as_usize() + phys.page_offset();
        Ok(NonNull::new(p as *mut u8).expect("vmalloc addresses are not null"))
    }

    /// Removes an `ioremap` mapping (Linux's `iounmap`); `addr` may point
    /// anywhere in the area's first page (ioremap returns the device
    /// address's offset). An ISA-range address from the direct map is
    /// accepted and nothing is done. Refused with nothing changed: any
    /// other address not from `ioremap` (outside the range, interior, freed
    /// already, a vmalloc or vmap area).
    pub fn iounmap(&self, addr: *const u8) -> Result<(), VmallocError> {
        let va = VirtAddr::from_ptr(addr);
        if let Some(pa) = self.mem().direct_map().virt_to_phys(va)
            && (ISA_START..ISA_END).contains(&pa.as_u64())
        {
            return Ok(());
        }
        let base = VirtAddr::new(va.as_usize() & !(PAGE_SIZE - 1));
        let area = self.unpublish(base, &[AreaKind::Ioremap], None)?;
        // SAFETY: ours alone now.
        let a = unsafe { area.as_ref() };
        self.unmap_range(a.addr, a.size() / PAGE_SIZE);
        self.retire(area);
        Ok(())
    }
}
