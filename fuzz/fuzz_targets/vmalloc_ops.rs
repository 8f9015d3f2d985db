//! Fuzzes the vmalloc allocator against a model of its live areas: vmalloc,
//! vzalloc and vmalloc_32 of 1–8 pages, vmap and vm_map_ram of 1–36 buddy
//! pages (past `VMAP_MAX_ALLOC`, vm_map_ram takes an area of its own),
//! ioremap of a device page above RAM, frees of live areas with the call of
//! their kind (vfree, vunmap, vm_unmap_ram, iounmap), bad frees (a kmalloc
//! pointer, an interior page, an unaligned address, the guard page, the wrong
//! call for the kind, a wrong vm_map_ram count, an address freed before),
//! purges and vm_unmap_aliases.
//!
//! After each step: a bad free was refused and changed nothing (the live
//! count, the area still found); every page of every live area holds its
//! own stamp, read through the kernel page tables with the TLB checker on
//! (so a translation used after its mapping changed and before a flush is
//! reported); a vzalloc area read zero before it was stamped; ioremap areas
//! translate to their device page; the TLB checker recorded no stale use.
//! Each input ends by freeing everything and `vm_unmap_aliases`: no area is
//! left, every page-table frame and every page is back — so the next input
//! starts afresh on the same machine.
#![no_main]

use std::sync::OnceLock;

use kmm_buddy::Gfp;
use kmm_hal::{PAGE_SIZE, PageFlags, PageTable, PhysAddr, VirtAddr};
use kmm_mock::{Machine, MockCpu, MockFrames, MockPageTable};
use kmm_page_frame::Page;
use kmm_testkit::{Backing, TestMachine};
use kmm_vmalloc::{AreaKind, VMAP_MAX_ALLOC, Vmalloc, VmallocError};
use libfuzzer_sys::fuzz_target;

type Vm<'h> = Vmalloc<'h, MockPageTable, MockFrames, &'h Machine, MockCpu>;

/// Most areas live at once (allocations past it are skipped).
const MAX_LIVE: usize = 24;
/// The device range ioremap maps (above RAM: the local APIC's neighbourhood).
const DEVICE: u64 = 0xFEC0_0000;

/// 32 MiB, high memory from 16 MiB, one CPU, zero watermarks, kernel page
/// tables, the slab allocator built.
fn host() -> &'static TestMachine {
    static HOST: OnceLock<TestMachine> = OnceLock::new();
    HOST.get_or_init(|| {
        let host = TestMachine::builder()
            .ram_mib(32)
            .highmem_mib(16)
            .backing(Backing::Software)
            .no_reserve()
            .kernel_tables_mib(1)
            .build();
        host.slab();
        host
    })
}

#[derive(Debug, Clone, Copy)]
enum Op {
    /// vmalloc (0), vzalloc (1) or vmalloc_32 (2) of `pages`.
    Vmalloc {
        pages: usize,
        how: u8,
    },
    Vmap {
        pages: usize,
    },
    MapRam {
        pages: usize,
    },
    Ioremap {
        page: u64,
    },
    Free {
        pick: usize,
    },
    BadFree {
        pick: usize,
        how: u8,
    },
    Purge,
    UnmapAliases,
}

impl Op {
    fn decode([k, a, b]: [u8; 3]) -> Op {
        let pick = usize::from(a) << 8 | usize::from(b);
        match k % 16 {
            0..=3 => Op::Vmalloc {
                pages: 1 + usize::from(a % 8),
                how: b % 3,
            },
            4 => Op::Vmap {
                pages: 1 + usize::from(a % 4),
            },
            5 | 6 => Op::MapRam {
                // Mostly block-sized, now and then past VMAP_MAX_ALLOC.
                pages: if b % 8 == 0 {
                    VMAP_MAX_ALLOC + 1 + usize::from(a % 4)
                } else {
                    1 + usize::from(a) % VMAP_MAX_ALLOC
                },
            },
            7 => Op::Ioremap {
                page: u64::from(a % 16),
            },
            8..=11 => Op::Free { pick },
            12 | 13 => Op::BadFree { pick, how: b % 9 },
            14 => Op::Purge,
            _ => Op::UnmapAliases,
        }
    }
}

/// A live area in the model.
#[derive(Debug)]
struct Live {
    /// What the call returned.
    ptr: usize,
    pages: usize,
    kind: Kind,
    tag: u8,
    /// The caller's pages (vmap, vm_map_ram), freed by the model.
    owned: Vec<&'static Page>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vmalloc,
    Vmap,
    /// vm_map_ram from a per-CPU block (no area of its own).
    MapRamBlock,
    /// vm_map_ram past VMAP_MAX_ALLOC (an area of its own).
    MapRamArea,
    Ioremap(u64),
}

impl Live {
    fn base(&self) -> usize {
        self.ptr & !(PAGE_SIZE - 1)
    }

    /// The end of its mapped pages (the guard page not included).
    fn end(&self) -> usize {
        self.base() + self.pages * PAGE_SIZE
    }

    /// Frees it with the call of its kind.
    fn free(&self, vm: &Vm<'_>) -> Result<(), VmallocError> {
        let p = self.ptr as *const u8;
        match self.kind {
            Kind::Vmalloc => vm.vfree(p),
            Kind::Vmap => vm.vunmap(p),
            Kind::MapRamBlock | Kind::MapRamArea => vm.vm_unmap_ram(p, self.pages),
            Kind::Ioremap(_) => vm.iounmap(p),
        }
    }
}

fn stamp(tag: u8, page: usize) -> [u8; 4] {
    [tag, page as u8, (page >> 8) as u8, !tag]
}

struct Model<'h> {
    host: &'h TestMachine,
    vm: Vm<'h>,
    live: Vec<Live>,
    /// Addresses freed, for the "freed before" bad free.
    freed: Vec<usize>,
    tag: u8,
}

impl Model<'static> {
    fn fail<T>(&self, what: String) -> T {
        panic!("{what}; live: {:x?}", self.live)
    }

    fn owned_pages(&self, n: usize) -> Option<Vec<&'static Page>> {
        let buddy = self.host.buddy();
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            match buddy.alloc_pages(Gfp::HIGHUSER, 0) {
                Some(p) => v.push(p),
                None => {
                    free_owned(self.host, v);
                    return None;
                }
            }
        }
        Some(v)
    }

    fn apply(&mut self, op: Op) {
        self.tag = self.tag.wrapping_add(1);
        let tag = self.tag;
        let vm = &self.vm;
        match op {
            Op::Vmalloc { .. } | Op::Vmap { .. } | Op::MapRam { .. } | Op::Ioremap { .. }
                if self.live.len() >= MAX_LIVE => {}
            Op::Vmalloc { pages, how } => {
                let r = match how {
                    0 => vm.vmalloc(pages * PAGE_SIZE),
                    1 => vm.vzalloc(pages * PAGE_SIZE - 7),
                    _ => vm.vmalloc_32(pages * PAGE_SIZE),
                };
                let p = match r {
                    Ok(p) => p.as_ptr() as usize,
                    Err(VmallocError::OutOfMemory) => return,
                    Err(e) => self.fail(format!("{op:?}: {e}")),
                };
                if how == 1 {
                    self.check_zero(p, pages);
                }
                self.add(p, pages, Kind::Vmalloc, tag, vec![]);
            }
            Op::Vmap { pages } | Op::MapRam { pages } => {
                let Some(owned) = self.owned_pages(pages) else {
                    return;
                };
                let (r, kind) = match op {
                    Op::Vmap { .. } => (vm.vmap(&owned, PageFlags::KERNEL_RW), Kind::Vmap),
                    _ if pages > VMAP_MAX_ALLOC => (
                        vm.vm_map_ram(&owned, PageFlags::KERNEL_RW),
                        Kind::MapRamArea,
                    ),
                    _ => (
                        vm.vm_map_ram(&owned, PageFlags::KERNEL_RW),
                        Kind::MapRamBlock,
                    ),
                };
                match r {
                    Ok(p) => self.add(p.as_ptr() as usize, pages, kind, tag, owned),
                    Err(VmallocError::OutOfMemory) => free_owned(self.host, owned),
                    Err(e) => self.fail(format!("{op:?}: {e}")),
                }
            }
            Op::Ioremap { page } => {
                let pa = PhysAddr::new(DEVICE + page * PAGE_SIZE as u64 + 0x10);
                match vm.ioremap(pa, 0x20) {
                    Ok(p) => self.add(p.as_ptr() as usize, 1, Kind::Ioremap(page), tag, vec![]),
                    Err(VmallocError::OutOfMemory) => {}
                    Err(e) => self.fail(format!("{op:?}: {e}")),
                }
            }
            Op::Free { pick } => {
                if self.live.is_empty() {
                    return;
                }
                let l = self.live.swap_remove(pick % self.live.len());
                if let Err(e) = l.free(vm) {
                    self.fail::<()>(format!("{op:?} of {l:x?}: {e}"));
                }
                self.freed.push(l.ptr);
                if self.freed.len() > 16 {
                    self.freed.remove(0);
                }
                free_owned(self.host, l.owned);
            }
            Op::BadFree { pick, how } => self.bad_free(pick, how),
            Op::Purge => vm.purge(),
            Op::UnmapAliases => vm.vm_unmap_aliases(),
        }
    }

    fn add(&mut self, ptr: usize, pages: usize, kind: Kind, tag: u8, owned: Vec<&'static Page>) {
        let (base, end) = (
            ptr & !(PAGE_SIZE - 1),
            (ptr & !(PAGE_SIZE - 1)) + pages * PAGE_SIZE,
        );
        if let Some(o) = self.live.iter().find(|l| base < l.end() && l.base() < end) {
            self.fail::<()>(format!("{kind:?} at {ptr:#x} overlaps {o:x?}"));
        }
        if !matches!(kind, Kind::Ioremap(_)) {
            for i in 0..pages {
                let va = VirtAddr::new(ptr + i * PAGE_SIZE);
                if let Err(e) = self.tables_write(va, &stamp(tag, i)) {
                    self.fail::<()>(format!("stamp {kind:?} page {i} at {va}: {e}"));
                }
            }
        }
        self.live.push(Live {
            ptr,
            pages,
            kind,
            tag,
            owned,
        });
    }

    fn tables_write(&self, va: VirtAddr, data: &[u8]) -> Result<(), kmm_mock::AccessError> {
        self.host
            .kernel_tables()
            .lock(self.host.cpu())
            .pt
            .write(va, data)
    }

    fn check_zero(&self, ptr: usize, pages: usize) {
        let t = self.host.kernel_tables().lock(self.host.cpu());
        let mut buf = vec![0u8; PAGE_SIZE];
        for i in 0..pages {
            let va = VirtAddr::new(ptr + i * PAGE_SIZE);
            if let Err(e) = t.pt.read(va, &mut buf) {
                drop(t);
                return self.fail(format!("vzalloc page {i}: {e}"));
            }
            if buf.iter().any(|&b| b != 0) {
                drop(t);
                return self.fail(format!("vzalloc page {i} at {va} not zeroed"));
            }
        }
    }

    /// A bad free of (or near) live area `pick`: must be refused, change
    /// nothing.
    fn bad_free(&mut self, pick: usize, how: u8) {
        let vm = &self.vm;
        let areas = vm.stats().areas;
        let got = if how == 0 {
            // A kmalloc (direct-map) pointer.
            let slab = self.host.slab();
            let k = slab.kmalloc(64, Gfp::KERNEL).expect("kmalloc");
            // (Not iounmap: it accepts a direct-map address of the ISA hole,
            // where kmalloc may have got its page.)
            let r = [
                vm.vfree(k.as_ptr()),
                vm.vunmap(k.as_ptr()),
                vm.vm_unmap_ram(k.as_ptr(), 1),
            ];
            slab.kfree(k.as_ptr()).expect("kfree");
            (
                r.iter()
                    .find(|r| r.is_ok())
                    .copied()
                    .unwrap_or(Err(VmallocError::Foreign)),
                "kmalloc pointer",
            )
        } else if how == 1 {
            // An address freed before that no live area starts at.
            let Some(&a) = self
                .freed
                .iter()
                .rev()
                .find(|&&a| !self.live.iter().any(|l| l.ptr == a || l.base() == a))
            else {
                return;
            };
            let p = a as *const u8;
            let r = [vm.vfree(p), vm.vunmap(p), vm.vm_unmap_ram(p, 1)];
            (
                r.iter()
                    .find(|r| r.is_ok())
                    .copied()
                    .unwrap_or(Err(VmallocError::NotLive)),
                "freed address",
            )
        } else {
            if self.live.is_empty() {
                return;
            }
            let l = &self.live[pick % self.live.len()];
            let p = l.ptr as *const u8;
            let r = match (how, l.kind) {
                (2, _) => match l.kind {
                    Kind::MapRamBlock | Kind::MapRamArea => {
                        vm.vm_unmap_ram(p.wrapping_add(1), l.pages)
                    }
                    _ => vm.vfree(p.wrapping_add(1)),
                },
                (3, Kind::Vmalloc | Kind::Vmap | Kind::MapRamArea) if l.pages > 1 => {
                    let q = p.wrapping_add(PAGE_SIZE);
                    match l.kind {
                        Kind::Vmalloc => vm.vfree(q),
                        Kind::Vmap => vm.vunmap(q),
                        _ => vm.vm_unmap_ram(q, l.pages - 1),
                    }
                }
                (4, Kind::Vmalloc) => vm.vunmap(p),
                (4, _) => vm.vfree(p),
                (5, Kind::Ioremap(_)) => vm.vunmap(p),
                (5, _) => vm.iounmap(p),
                (6, Kind::MapRamBlock | Kind::MapRamArea) => vm.vm_unmap_ram(p, l.pages + 1),
                (7, Kind::MapRamBlock | Kind::MapRamArea) if l.pages > 1 => {
                    vm.vm_unmap_ram(p, l.pages - 1)
                }
                (8, Kind::Vmalloc | Kind::Vmap) => vm.vm_unmap_ram(p, l.pages),
                // The guard page.
                _ => match l.kind {
                    Kind::MapRamBlock | Kind::MapRamArea => {
                        // The page after a block mapping may be another's.
                        if l.kind == Kind::MapRamBlock {
                            return;
                        }
                        vm.vm_unmap_ram(p.wrapping_add(l.pages * PAGE_SIZE), 1)
                    }
                    Kind::Ioremap(_) => vm.iounmap(p.wrapping_add(PAGE_SIZE)),
                    Kind::Vmap => vm.vunmap(p.wrapping_add(l.pages * PAGE_SIZE)),
                    Kind::Vmalloc => vm.vfree(p.wrapping_add(l.pages * PAGE_SIZE)),
                },
            };
            (r, "bad free of a live area")
        };
        match got {
            (Ok(()), what) => self.fail(format!("a bad free succeeded ({what}, how {how})")),
            (Err(VmallocError::Map(e)), what) => {
                self.fail(format!("a page-table error on a bad free ({what}): {e}"))
            }
            _ => {}
        }
        if vm.stats().areas != areas {
            self.fail::<()>(format!("a refused free (how {how}) changed the area count"));
        }
    }

    /// The invariants after a step.
    fn check(&self) {
        let t = self.host.kernel_tables().lock(self.host.cpu());
        for l in &self.live {
            if let Kind::Ioremap(page) = l.kind {
                let tr = t.pt.translate(VirtAddr::new(l.base()));
                let want = PhysAddr::new(DEVICE + page * PAGE_SIZE as u64);
                if tr.map(|tr| tr.frame) != Some(want) {
                    drop(t);
                    return self.fail(format!("ioremap at {:#x} maps {tr:x?}", l.ptr));
                }
                continue;
            }
            for i in 0..l.pages {
                let va = VirtAddr::new(l.ptr + i * PAGE_SIZE);
                let mut b = [0u8; 4];
                let r = t.pt.read(va, &mut b);
                if r.is_err() || b != stamp(l.tag, i) {
                    drop(t);
                    return self.fail(format!("{:?} page {i} at {va}: {r:?} {b:x?}", l.kind));
                }
            }
            if l.kind != Kind::MapRamBlock {
                let guard = VirtAddr::new(l.base() + l.pages * PAGE_SIZE);
                if t.pt.translate(guard).is_some() {
                    drop(t);
                    return self.fail(format!("guard page {guard} mapped"));
                }
            }
        }
        drop(t);
        for l in &self.live {
            let found = match l.kind {
                Kind::MapRamBlock => continue,
                Kind::Vmalloc => Some(AreaKind::Vmalloc),
                Kind::Vmap => Some(AreaKind::Vmap),
                Kind::MapRamArea => Some(AreaKind::MapRam),
                Kind::Ioremap(_) => Some(AreaKind::Ioremap),
            };
            let info = self.vm.find_vm_area(VirtAddr::new(l.base()));
            if info.map(|i| i.kind) != found {
                self.fail::<()>(format!("{l:x?} looked up as {info:?}"));
            }
        }
        let v = self.host.machine().tlb().violations();
        if !v.is_empty() {
            self.fail::<()>(format!("stale TLB use: {v:?}"));
        }
    }

    fn finish(mut self, frames0: usize) {
        for l in std::mem::take(&mut self.live) {
            if let Err(e) = l.free(&self.vm) {
                self.fail::<()>(format!("final free of {l:x?}: {e}"));
            }
            free_owned(self.host, l.owned);
        }
        self.vm.vm_unmap_aliases();
        let s = self.vm.stats();
        if s.areas != 0 || s.pages != 0 || s.lazy_pages != 0 {
            self.fail::<()>(format!("left at the end: {s:?}"));
        }
        let frames = table_frames(self.host);
        if frames != frames0 {
            self.fail::<()>(format!("page-table frames: {frames} out, {frames0} before"));
        }
        let v = self.host.machine().tlb().violations();
        if !v.is_empty() {
            self.fail::<()>(format!("stale TLB use: {v:?}"));
        }
    }
}

fn free_owned(host: &TestMachine, pages: Vec<&Page>) {
    for p in pages {
        host.buddy()
            .free_pages_page(p, 0)
            .expect("a page of the model");
    }
}

fn table_frames(host: &TestMachine) -> usize {
    host.kernel_tables().lock(host.cpu()).frames.outstanding()
}

/// Pages the buddy allocator has free, once every cache and list is drained.
fn free_pages(host: &TestMachine) -> usize {
    host.slab().shrink_all();
    host.buddy().drain_local();
    host.buddy().free_pages_total()
}

fuzz_target!(|data: &[u8]| {
    let host = host();
    let _cpu0 = host.bind(0);
    let (pages0, frames0) = (free_pages(host), table_frames(host));
    let vm = Vmalloc::new(
        host.slab(),
        host.kernel_tables(),
        host.machine(),
        host.machine().layout(),
    )
    .expect("vmalloc over the fuzz machine");
    let mut model = Model {
        host,
        vm,
        live: Vec::new(),
        freed: Vec::new(),
        tag: 0,
    };
    for op in data.chunks_exact(3) {
        model.apply(Op::decode([op[0], op[1], op[2]]));
        model.check();
    }
    model.finish(frames0);
    let pages = free_pages(host);
    assert_eq!(pages, pages0, "every page back at the end");
});
