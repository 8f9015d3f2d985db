//! Areas that own their pages: `vmalloc` and its variants allocate pages
//! from the buddy allocator one by one (HIGHMEM first where allowed), map
//! them, and `vfree` gives them back (Linux's `__vmalloc_node_range`,
//! `__vmalloc_area_node`, `vfree`).

use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use kmm_buddy::Gfp;
use kmm_hal::{Cpu, FrameSource, KernelTlb, PAGE_SIZE, PageFlags, PageTable, Pfn, VirtAddr};
use kmm_page_frame::{Page, PgFlags};

use crate::area::{AreaKind, VmArea};
use crate::{Vmalloc, VmallocError};

/// The most pages one area may hold: its page array is one `kmalloc` block
/// of `u32` frame numbers (128 KiB: 32 768 pages, 128 MiB — more than the
/// whole i386 vmalloc range).
pub const MAX_AREA_PAGES: usize = (128 << 10) / size_of::<u32>();

impl<'a, P: PageTable, F: FrameSource, T: KernelTlb, C: Cpu> Vmalloc<'a, P, F, T, C> {
    /// Allocates `size` bytes (rounded up to pages) of virtually contiguous
    /// memory from pages anywhere, HIGHMEM included (Linux's `vmalloc`).
    pub fn vmalloc(&self, size: usize) -> Result<NonNull<u8>, VmallocError> {
        self.vmalloc_gfp(
            size,
            Gfp::KERNEL | Gfp::HIGHMEM,
            None,
            AreaKind::Vmalloc,
            "vmalloc",
        )
    }

    /// [`Self::vmalloc`], zeroed (Linux's `vzalloc`).
    pub fn vzalloc(&self, size: usize) -> Result<NonNull<u8>, VmallocError> {
        self.vmalloc_gfp(
            size,
            Gfp::KERNEL | Gfp::HIGHMEM | Gfp::ZERO,
            None,
            AreaKind::Vmalloc,
            "vzalloc",
        )
    }

    /// [`Self::vmalloc`] with pages from node `node` first (Linux's
    /// `vmalloc_node`; the zonelist falls back to other nodes).
    pub fn vmalloc_node(&self, size: usize, node: usize) -> Result<NonNull<u8>, VmallocError> {
        self.vmalloc_gfp(
            size,
            Gfp::KERNEL | Gfp::HIGHMEM,
            Some(node),
            AreaKind::Vmalloc,
            "vmalloc_node",
        )
    }

    /// [`Self::vmalloc`] from pages a 32-bit device can reach (Linux's
    /// `vmalloc_32`: low memory, no HIGHMEM).
    pub fn vmalloc_32(&self, size: usize) -> Result<NonNull<u8>, VmallocError> {
        self.vmalloc_gfp(size, Gfp::KERNEL, None, AreaKind::Vmalloc, "vmalloc_32")
    }

    /// Zeroed memory meant to be mapped to user space later (Linux's
    /// `vmalloc_user`, flagged `VM_USERMAP`).
    pub fn vmalloc_user(&self, size: usize) -> Result<NonNull<u8>, VmallocError> {
        self.vmalloc_gfp(
            size,
            Gfp::KERNEL | Gfp::HIGHMEM | Gfp::ZERO,
            None,
            AreaKind::User,
            "vmalloc_user",
        )
    }

    /// The body of the vmalloc family (Linux's `__vmalloc_node`): `gfp` for
    /// the pages, `node` to prefer, `kind` and `caller` for the listing.
    /// All or nothing: on failure every page, page-table page and
    /// descriptor taken is given back.
    pub fn vmalloc_gfp(
        &self,
        size: usize,
        gfp: Gfp,
        node: Option<usize>,
        kind: AreaKind,
        caller: &'static str,
    ) -> Result<NonNull<u8>, VmallocError> {
        let pages = size.div_ceil(PAGE_SIZE);
        if size == 0 || pages > MAX_AREA_PAGES {
            return Err(VmallocError::BadSize);
        }
        let span = (pages + 1) * PAGE_SIZE;
        let area = self.new_area(span, PAGE_SIZE, kind, caller)?;
        // SAFETY: `new_area` returned an initialised descriptor nobody else
        // sees until it is published.
        let a = unsafe { &mut *area.as_ptr() };
        let pfns = match self.slab.kmalloc(pages * size_of::<u32>(), Gfp::KERNEL) {
            Ok(p) => p.cast::<u32>(),
            Err(_) => {
                self.discard(area);
                return Err(VmallocError::OutOfMemory);
            }
        };
        a.pfns = Some(pfns);
        for i in 0..pages {
            let page = match node {
                Some(n) => self.buddy().alloc_pages_node(n, gfp, 0),
                None => self.buddy().alloc_pages(gfp, 0),
            };
            let Some(page) = page else {
                self.free_pages_of(a, i);
                self.discard(area);
                return Err(VmallocError::OutOfMemory);
            };
            let pfn = self
                .mem()
                .page_to_pfn(page)
                .expect("the buddy allocator's page");
            // SAFETY: the page was just allocated to us (the owner
            // contract); VMALLOC tells the page allocator to refuse it.
            unsafe { page.insert(PgFlags::VMALLOC) };
            // SAFETY: `pfns` has room for `pages` entries; i < pages.
            unsafe { pfns.as_ptr().add(i).write(pfn.as_usize() as u32) };
            a.nr_pages = i + 1;
        }
        let frames = a.pfns().iter().map(|&p| Pfn::new(p as usize).phys());
        if let Err(e) = self.map_frames(a.addr, frames, PageFlags::KERNEL_GLOBAL) {
            self.free_pages_of(a, pages);
            self.discard(area);
            return Err(e);
        }
        self.stats.pages.fetch_add(pages, Ordering::Relaxed);
        let va = self.publish(area);
        Ok(NonNull::new(va.as_mut_ptr::<u8>()).expect("vmalloc addresses are not null"))
    }

    /// Frees an area `vmalloc` (or a variant) returned (Linux's `vfree`): its
    /// mappings are removed at once, its pages go back to the buddy
    /// allocator, and its addresses wait for the lazy purge. A null pointer
    /// is fine. Refused with nothing changed: an address outside the range
    /// ([`VmallocError::Foreign`]: a `kmalloc` or direct-map pointer),
    /// unaligned, interior, freed already, or of a `vmap`, `ioremap` or
    /// `get_vm_area` area ([`VmallocError::WrongKind`]).
    pub fn vfree(&self, addr: *const u8) -> Result<(), VmallocError> {
        if addr.is_null() {
            return Ok(());
        }
        let area = self.unpublish(
            VirtAddr::from_ptr(addr),
            &[AreaKind::Vmalloc, AreaKind::User],
            None,
        )?;
        // SAFETY: `unpublish` handed the descriptor to us alone.
        let a = unsafe { &mut *area.as_ptr() };
        self.unmap_range(a.addr, a.nr_pages);
        let n = a.nr_pages;
        self.free_pages_of(a, n);
        self.stats.pages.fetch_sub(n, Ordering::Relaxed);
        self.retire(area);
        Ok(())
    }

    /// Gives the first `n` pages of a vmalloc area back to the buddy
    /// allocator, then its page array to `kmalloc`.
    fn free_pages_of(&self, a: &mut VmArea, n: usize) {
        for &pfn in &a.pfns()[..n] {
            let page: &Page = self
                .mem()
                .pfn_to_page(Pfn::new(pfn as usize))
                .expect("a page vmalloc allocated");
            // SAFETY: the area owns the page; clearing VMALLOC lets the page
            // allocator take it back.
            unsafe { page.remove(PgFlags::VMALLOC) };
            let r = self.buddy().free_pages_page(page, 0);
            debug_assert!(r.is_ok(), "vmalloc: its own page: {r:?}");
        }
        if let Some(p) = a.pfns.take() {
            let _ = self.slab.kfree(p.as_ptr().cast());
        }
        a.nr_pages = 0;
    }
}
