//! Drivers for the vmalloc benchmarks (`benches/vmalloc.rs`): `kmm-vmalloc`
//! on a mock machine with kernel page tables, and [`FirstFit`], the reference
//! it is measured against.
//!
//! [`FirstFit`] is the method the Rust kernels in this space use for their
//! vmalloc areas today: the busy ranges in an ordered map (start → end), and
//! a new area placed in the first gap that fits, found by walking the map
//! from the start of the range. It does the same work as kmm around the
//! search — pages from the same buddy allocator, mapped through the same
//! kernel page tables — and, having no lazy purge, flushes each freed range on
//! every CPU at once, so the two differ in how addresses are found and
//! given back and in nothing else.
//!
//! # Example
//!
//! ```
//! use kmm_benches::vmalloc::{FirstFit, VmHost, vmalloc_free_pair};
//!
//! let host = VmHost::new();
//! let _cpu0 = host.bind();
//! let vm = host.vmalloc();
//! let live = host.reserve_live(&vm, 100);
//! vmalloc_free_pair(&vm, 16);
//! assert_eq!(vm.stats().areas, 100);
//! host.release_live(&vm, live);
//!
//! let mut ff = FirstFit::new(&host);
//! ff.reserve_live(100);
//! ff.vmalloc_free_pair(16);
//! assert_eq!(ff.live(), 100);
//! ```

use std::collections::BTreeMap;
use std::hint::black_box;
use std::ptr::NonNull;

use kmm_buddy::Gfp;
use kmm_hal::{KernelLayout, KernelTlb, PAGE_SIZE, PageFlags, PageTable, TableReclaim, VirtAddr};
use kmm_mock::{Backing, CpuBinding, Machine, MockCpu, MockFrames, MockPageTable};
use kmm_page_frame::Page;
use kmm_testkit::TestMachine;
use kmm_vmalloc::{VmAreaInfo, Vmalloc};

/// kmm's vmalloc on a bench machine.
pub type Vm<'h> = Vmalloc<'h, MockPageTable, MockFrames, &'h Machine, MockCpu>;

/// RAM of the bench machine: on the mock's i386 layout 64 MiB leaves about
/// 940 MiB of vmalloc addresses (room for 100 000 live one-page areas, two
/// pages of addresses each with the guard page, and the benched ones).
pub const VM_RAM_MIB: u64 = 64;
/// Page-table pages reserved for the kernel tables: 2 MiB (512 table pages;
/// the whole vmalloc range needs about 240 with 2-level paging).
pub const VM_TABLES_MIB: u64 = 2;

/// A mock machine for the vmalloc benches: [`VM_RAM_MIB`] of software-backed
/// RAM (the `mmap` backing makes one host mapping per mapped page and runs
/// into host limits), one CPU, zero watermarks, kernel page tables, the SLAB
/// allocator built.
pub struct VmHost {
    machine: TestMachine,
}

impl Default for VmHost {
    fn default() -> Self {
        VmHost::new()
    }
}

impl VmHost {
    /// A fresh machine.
    pub fn new() -> VmHost {
        let machine = TestMachine::builder()
            .ram_mib(VM_RAM_MIB)
            .backing(Backing::Software)
            .no_reserve()
            .kernel_tables_mib(VM_TABLES_MIB)
            .build();
        machine.slab();
        VmHost { machine }
    }

    /// The test machine.
    pub fn machine(&self) -> &TestMachine {
        &self.machine
    }

    /// Binds the calling thread to CPU 0 (the allocators need a CPU).
    pub fn bind(&self) -> CpuBinding {
        self.machine.bind(0)
    }

    /// kmm's vmalloc over the machine's vmalloc range.
    pub fn vmalloc(&self) -> Vm<'_> {
        let m = &self.machine;
        Vmalloc::new(
            m.slab(),
            m.kernel_tables(),
            m.machine(),
            m.machine().layout(),
        )
        .expect("vmalloc on the bench machine")
    }

    /// `n` live one-page areas of addresses only (`get_vm_area(PAGE_SIZE)`:
    /// a descriptor and two pages of addresses each, guard included, no
    /// pages), the background the benched calls run against. 100 000 live
    /// `vmalloc(PAGE_SIZE)` areas would need 400 MiB of RAM; for the address
    /// search, the busy tree and the free tree, an area is an area.
    pub fn reserve_live(&self, vm: &Vm<'_>, n: usize) -> Vec<VmAreaInfo> {
        (0..n)
            .map(|_| vm.get_vm_area(PAGE_SIZE).expect("room for the live areas"))
            .collect()
    }

    /// Gives back what [`Self::reserve_live`] took.
    pub fn release_live(&self, vm: &Vm<'_>, live: Vec<VmAreaInfo>) {
        for a in live {
            vm.free_vm_area(a.addr).expect("a live reserved area");
        }
        vm.purge();
    }

    /// `n` order-0 pages from the buddy allocator (for vmap and vm_map_ram).
    pub fn pages(&self, n: usize) -> Vec<&Page> {
        (0..n)
            .map(|_| {
                self.machine
                    .buddy()
                    .alloc_pages(Gfp::KERNEL | Gfp::HIGHMEM, 0)
                    .expect("a page")
            })
            .collect()
    }

    /// Gives pages from [`Self::pages`] back.
    pub fn free_pages(&self, pages: Vec<&Page>) {
        for p in pages {
            self.machine
                .buddy()
                .free_pages_page(p, 0)
                .expect("a page from `pages`");
        }
    }
}

/// `vmalloc` of `pages` pages and its `vfree`.
#[inline]
pub fn vmalloc_free_pair(vm: &Vm<'_>, pages: usize) {
    let p = vm.vmalloc(pages * PAGE_SIZE).expect("vmalloc");
    vm.vfree(black_box(p.as_ptr())).expect("vfree");
}

/// `vm_map_ram` of `pages` and its `vm_unmap_ram`.
#[inline]
pub fn map_ram_pair(vm: &Vm<'_>, pages: &[&Page]) {
    let p = vm
        .vm_map_ram(pages, PageFlags::KERNEL_RW)
        .expect("vm_map_ram");
    vm.vm_unmap_ram(black_box(p.as_ptr()), pages.len())
        .expect("vm_unmap_ram");
}

/// `vmap` of `pages` and its `vunmap`.
#[inline]
pub fn vmap_pair(vm: &Vm<'_>, pages: &[&Page]) {
    let p = vm.vmap(pages, PageFlags::KERNEL_RW).expect("vmap");
    vm.vunmap(black_box(p.as_ptr())).expect("vunmap");
}

/// What [`count_flushes`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushCount {
    /// `vfree`s made.
    pub vfrees: u64,
    /// Kernel-wide flushes the machine's TLB checker recorded meanwhile.
    pub kernel_flushes: u64,
    /// Flushes vmalloc counted itself (`VmallocStats::flushes`).
    pub vm_flushes: u64,
    /// Pages of addresses each `vfree` hands to the lazy purge.
    pub pages_per_vfree: usize,
    /// The purge threshold, `lazy_max_pages`.
    pub lazy_max_pages: usize,
}

impl FlushCount {
    /// The most flushes allowed: one per `lazy_max_pages` of freed addresses
    /// (a purge runs when more than that waits).
    pub fn batches(&self) -> u64 {
        (self.vfrees * self.pages_per_vfree as u64).div_ceil(self.lazy_max_pages as u64)
    }
}

/// Runs `vfrees` `vmalloc(pages)`/`vfree` pairs on a fresh machine and counts
/// the kernel-wide TLB flushes they cause.
pub fn count_flushes(vfrees: u64, pages: usize) -> FlushCount {
    let host = VmHost::new();
    let _cpu0 = host.bind();
    let vm = host.vmalloc();
    let tlb = host.machine().machine().tlb();
    let (k0, v0) = (tlb.kernel_flushes(), vm.stats().flushes);
    for _ in 0..vfrees {
        vmalloc_free_pair(&vm, pages);
    }
    FlushCount {
        vfrees,
        kernel_flushes: tlb.kernel_flushes() - k0,
        vm_flushes: vm.stats().flushes - v0,
        pages_per_vfree: pages + 1,
        lazy_max_pages: vm.lazy_max_pages(),
    }
}

/// The reference: vmalloc with its busy ranges in a `BTreeMap` (start →
/// end) and a first-fit walk from the start of the range (see the module
/// docs). Pages come from the machine's buddy allocator and are mapped in
/// its kernel page tables, as kmm's are; a free unmaps, flushes the range on
/// every CPU and frees the pages at once.
pub struct FirstFit<'h> {
    host: &'h VmHost,
    start: usize,
    end: usize,
    busy: BTreeMap<usize, usize>,
    /// The pages of the live mapped areas, by start address.
    pages: BTreeMap<usize, Vec<&'h Page>>,
}

impl<'h> FirstFit<'h> {
    /// The reference over `host`'s vmalloc range (the same range kmm gets).
    pub fn new(host: &'h VmHost) -> FirstFit<'h> {
        let layout = host.machine.machine().layout();
        FirstFit {
            host,
            start: layout.vmalloc_start().as_usize(),
            end: layout.vmalloc_end().as_usize(),
            busy: BTreeMap::new(),
            pages: BTreeMap::new(),
        }
    }

    /// Live areas.
    pub fn live(&self) -> usize {
        self.busy.len()
    }

    /// The lowest address with `span` free bytes: a walk over the busy
    /// ranges in address order.
    fn find(&self, span: usize) -> Option<usize> {
        let mut cursor = self.start;
        for (&s, &e) in &self.busy {
            if s - cursor >= span {
                return Some(cursor);
            }
            cursor = cursor.max(e);
        }
        (self.end - cursor >= span).then_some(cursor)
    }

    /// Reserves `span` bytes of addresses (guard page included).
    fn reserve(&mut self, span: usize) -> usize {
        let a = self.find(span).expect("room in the vmalloc range");
        self.busy.insert(a, a + span);
        a
    }

    /// `n` live areas of addresses only, one page and its guard each, as
    /// [`VmHost::reserve_live`] makes for kmm.
    pub fn reserve_live(&mut self, n: usize) {
        for _ in 0..n {
            self.reserve(2 * PAGE_SIZE);
        }
    }

    /// Allocates and maps `n` pages at a first-fit address.
    pub fn vmalloc(&mut self, n: usize) -> NonNull<u8> {
        let addr = self.reserve((n + 1) * PAGE_SIZE);
        let m = &self.host.machine;
        let buddy = m.buddy();
        let mut pages = Vec::with_capacity(n);
        let mut t = m.kernel_tables().lock(m.cpu());
        let t = &mut *t;
        for i in 0..n {
            let page = buddy
                .alloc_pages(Gfp::KERNEL | Gfp::HIGHMEM, 0)
                .expect("a page");
            let pa = buddy.mem().page_to_phys(page).expect("a buddy page");
            let va = VirtAddr::new(addr + i * PAGE_SIZE);
            t.pt.map(va, pa, PageFlags::KERNEL_GLOBAL, &mut t.frames)
                .expect("map")
                .ignore();
            pages.push(page);
        }
        self.pages.insert(addr, pages);
        NonNull::new(addr as *mut u8).expect("not null")
    }

    /// Unmaps and frees an area from [`Self::vmalloc`], flushing its range on
    /// every CPU.
    pub fn vfree(&mut self, p: NonNull<u8>) {
        let addr = p.as_ptr() as usize;
        let end = self.busy.remove(&addr).expect("a live area");
        let pages = self.pages.remove(&addr).expect("a mapped area");
        let m = &self.host.machine;
        {
            let mut t = m.kernel_tables().lock(m.cpu());
            let t = &mut *t;
            for i in 0..pages.len() {
                let va = VirtAddr::new(addr + i * PAGE_SIZE);
                let (_, flush) =
                    t.pt.unmap(va, TableReclaim::Free, &mut t.frames)
                        .expect("unmap");
                flush.ignore();
            }
        }
        m.machine()
            .flush_tlb_kernel_range(VirtAddr::new(addr), VirtAddr::new(end));
        for page in pages {
            m.buddy().free_pages_page(page, 0).expect("its page");
        }
    }

    /// `vmalloc` of `n` pages and its `vfree`.
    #[inline]
    pub fn vmalloc_free_pair(&mut self, n: usize) {
        let p = self.vmalloc(n);
        self.vfree(black_box(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_flush_per_batch_at_most() {
        let c = count_flushes(10_000, 1);
        assert_eq!(c.kernel_flushes, c.vm_flushes);
        assert!(c.kernel_flushes <= c.batches(), "{c:?}");
    }

    #[test]
    fn first_fit_reuses_the_lowest_gap() {
        let host = VmHost::new();
        let _cpu0 = host.bind();
        let mut ff = FirstFit::new(&host);
        ff.reserve_live(3);
        let a = ff.vmalloc(2);
        ff.vfree(a);
        let b = ff.vmalloc(1);
        assert_eq!(a, b);
        ff.vfree(b);
        assert_eq!(ff.live(), 3);
    }
}
