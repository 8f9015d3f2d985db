//! Areas over pages the caller owns: `vmap` maps them contiguously and
//! `vunmap` removes the mapping (Linux's `vmap`, `vunmap`); `get_vm_area`
//! reserves addresses the caller maps itself.

use core::ptr::NonNull;

use kmm_buddy::Gfp;
use kmm_hal::{Cpu, FrameSource, KernelTlb, PAGE_SIZE, PageFlags, PageTable, Pfn, VirtAddr};
use kmm_page_frame::{Page, PgFlags};

use crate::area::{AreaKind, VmAreaInfo};
use crate::pages::MAX_AREA_PAGES;
use crate::{Vmalloc, VmallocError};

impl<'a, P: PageTable, F: FrameSource, T: KernelTlb, C: Cpu> Vmalloc<'a, P, F, T, C> {
    /// Maps `pages` (each an allocated page of `mem_map`, HIGHMEM included)
    /// at contiguous addresses with `prot` (Linux's `vmap`). The caller
    /// keeps owning the pages: `vunmap` removes the mapping and frees
    /// nothing. Refused: no pages ([`VmallocError::BadSize`]), a page not of
    /// this `mem_map` or free ([`VmallocError::ForeignPage`]).
    pub fn vmap(&self, pages: &[&Page], prot: PageFlags) -> Result<NonNull<u8>, VmallocError> {
        let n = pages.len();
        if n == 0 || n > MAX_AREA_PAGES {
            return Err(VmallocError::BadSize);
        }
        let mut pfns_ok = true;
        for p in pages {
            let free = p.flags().intersects(PgFlags::BUDDY | PgFlags::PCP) || p.count() == 0;
            if self.mem().page_to_pfn(p).is_err() || free {
                pfns_ok = false;
                break;
            }
        }
        if !pfns_ok {
            return Err(VmallocError::ForeignPage);
        }
        let area = self.new_area((n + 1) * PAGE_SIZE, PAGE_SIZE, AreaKind::Vmap, "vmap")?;
        // SAFETY: a fresh descriptor, ours until published.
        let a = unsafe { &mut *area.as_ptr() };
        let pfns = match self.slab.kmalloc(n * size_of::<u32>(), Gfp::KERNEL) {
            Ok(p) => p.cast::<u32>(),
            Err(_) => {
                self.discard(area);
                return Err(VmallocError::OutOfMemory);
            }
        };
        for (i, p) in pages.iter().enumerate() {
            let pfn = self.mem().page_to_pfn(p).expect("checked above");
            // SAFETY: room for `n` entries; i < n.
            unsafe { pfns.as_ptr().add(i).write(pfn.as_usize() as u32) };
        }
        a.pfns = Some(pfns);
        a.nr_pages = n;
        let frames = a.pfns().iter().map(|&p| Pfn::new(p as usize).phys());
        if let Err(e) = self.map_frames(a.addr, frames, prot | PageFlags::PRESENT) {
            self.drop_page_array(a);
            self.discard(area);
            return Err(e);
        }
        let va = self.publish(area);
        Ok(NonNull::new(va.as_mut_ptr::<u8>()).expect("vmalloc addresses are not null"))
    }

    /// Removes a `vmap` mapping (Linux's `vunmap`); the pages stay the
    /// caller's. Refused with nothing changed as [`Self::vfree`] refuses,
    /// and a vmalloc or ioremap area with [`VmallocError::WrongKind`].
    pub fn vunmap(&self, addr: *const u8) -> Result<(), VmallocError> {
        let area = self.unpublish(VirtAddr::from_ptr(addr), &[AreaKind::Vmap], None)?;
        // SAFETY: `unpublish` handed the descriptor to us alone.
        let a = unsafe { &mut *area.as_ptr() };
        self.unmap_range(a.addr, a.nr_pages);
        self.drop_page_array(a);
        self.retire(area);
        Ok(())
    }

    /// Reserves `size` bytes (rounded up to pages) of addresses, plus the
    /// guard page, with nothing mapped (Linux's `get_vm_area`): the caller
    /// maps them through the page tables itself, and gives them back with
    /// [`Self::free_vm_area`].
    pub fn get_vm_area(&self, size: usize) -> Result<VmAreaInfo, VmallocError> {
        let pages = size.div_ceil(PAGE_SIZE);
        if size == 0 || pages >= (self.end - self.start) / PAGE_SIZE {
            return Err(VmallocError::BadSize);
        }
        let area = self.new_area(
            (pages + 1) * PAGE_SIZE,
            PAGE_SIZE,
            AreaKind::Reserved,
            "get_vm_area",
        )?;
        // SAFETY: a fresh descriptor.
        let info = unsafe { area.as_ref() }.info();
        self.publish(area);
        Ok(info)
    }

    /// Gives back an area from [`Self::get_vm_area`] (Linux's
    /// `free_vm_area`): whatever the caller mapped in it is unmapped (the
    /// frames stay the caller's) and the addresses go to the lazy purge.
    pub fn free_vm_area(&self, addr: VirtAddr) -> Result<(), VmallocError> {
        let area = self.unpublish(addr, &[AreaKind::Reserved], None)?;
        // SAFETY: ours alone now.
        let a = unsafe { area.as_ref() };
        {
            let mut t = self.tables.lock(self.cpu());
            let t = &mut *t;
            for i in 0..a.size() / PAGE_SIZE {
                let va = VirtAddr::new(a.addr + i * PAGE_SIZE);
                if t.pt.translate(va).is_some()
                    && let Ok((_, flush)) =
                        t.pt.unmap(va, kmm_hal::TableReclaim::Free, &mut t.frames)
                {
                    flush.ignore();
                }
            }
        }
        self.retire(area);
        Ok(())
    }

    /// Gives an area's page array back to `kmalloc`.
    pub(crate) fn drop_page_array(&self, a: &mut crate::area::VmArea) {
        if let Some(p) = a.pfns.take() {
            let _ = self.slab.kfree(p.as_ptr().cast());
        }
        a.nr_pages = 0;
    }
}
