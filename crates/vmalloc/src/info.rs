//! Looking areas up: `find_vm_area`, `vmalloc_to_page`, `vmalloc_to_pfn`,
//! and the `/proc/vmallocinfo` listing.

use core::fmt;
use intrusive_collections::Bound;

use kmm_hal::{Cpu, FrameSource, KernelTlb, PageTable, Pfn, VirtAddr};
use kmm_page_frame::Page;

use crate::Vmalloc;
use crate::area::VmAreaInfo;
use crate::vmap_area::Lookup;

impl<'a, P: PageTable, F: FrameSource, T: KernelTlb, C: Cpu> Vmalloc<'a, P, F, T, C> {
    /// The live area starting at `addr` (Linux's `find_vm_area`), or `None`.
    pub fn find_vm_area(&self, addr: VirtAddr) -> Option<VmAreaInfo> {
        match self.space.lock_irqsave(self.cpu()).lookup(addr.as_usize()) {
            Lookup::Start(a) => Some(a.info()),
            _ => None,
        }
    }

    /// The frame mapped at `addr` in the vmalloc range, read from the page
    /// tables (Linux's `vmalloc_to_pfn`): `None` outside the range or where
    /// nothing is mapped (a guard page, a freed area).
    pub fn vmalloc_to_pfn(&self, addr: VirtAddr) -> Option<Pfn> {
        if !self.is_vmalloc_addr(addr) {
            return None;
        }
        let t = self.tables.lock(self.cpu());
        t.pt.translate(addr).and_then(|tr| tr.frame.pfn().ok())
    }

    /// The page descriptor of the frame mapped at `addr` (Linux's
    /// `vmalloc_to_page`); `None` as for [`Self::vmalloc_to_pfn`], or for a
    /// device frame (ioremap) that has no descriptor.
    pub fn vmalloc_to_page(&self, addr: VirtAddr) -> Option<&'a Page> {
        let pfn = self.vmalloc_to_pfn(addr)?;
        self.buddy().mem().pfn_to_page(pfn).ok()
    }

    /// Calls `f` with every live area in address order. The address space
    /// lock is taken once per area and never held while `f` runs, so `f` may
    /// call into this allocator.
    pub fn for_each_area(&self, mut f: impl FnMut(VmAreaInfo)) {
        let mut after: Option<usize> = None;
        loop {
            let next = {
                let s = self.space.lock_irqsave(self.cpu());
                let from = match &after {
                    Some(a) => Bound::Excluded(a),
                    None => Bound::Unbounded,
                };
                s.busy.lower_bound(from).get().map(|a| a.info())
            };
            let Some(info) = next else { return };
            after = Some(info.addr.as_usize());
            f(info);
        }
    }

    /// Writes the `/proc/vmallocinfo` listing: one line per live area with
    /// its address range (guard page included, as Linux prints it), size,
    /// caller tag, pages, physical address for ioremap, and kind.
    ///
    /// ```text
    /// 0xe0800000-0xe0803000    12288 vmalloc pages=2 vmalloc
    /// 0xe0804000-0xe0806000     8192 ioremap phys=0xfee00000 ioremap
    /// ```
    pub fn vmallocinfo(&self, w: &mut dyn fmt::Write) -> fmt::Result {
        let mut r = Ok(());
        self.for_each_area(|a| {
            if r.is_err() {
                return;
            }
            r = write_line(w, &a);
        });
        r
    }
}

fn write_line(w: &mut dyn fmt::Write, a: &VmAreaInfo) -> fmt::Result {
    let span = a.size + kmm_hal::PAGE_SIZE;
    let start = a.addr.as_usize();
    write!(
        w,
        "{:#010x}-{:#010x} {:>8} {}",
        start,
        start + span,
        span,
        a.caller
    )?;
    if a.nr_pages > 0 {
        write!(w, " pages={}", a.nr_pages)?;
    }
    if let Some(p) = a.phys {
        write!(w, " phys={:#010x}", p.as_u64())?;
    }
    let flag = a.kind.vmallocinfo_flag();
    if !flag.is_empty() {
        write!(w, " {flag}")?;
    }
    writeln!(w)
}
