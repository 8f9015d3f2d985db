//! vmalloc (kmm-vmalloc) and the highmem mappings (kmm-pkmap) on the real
//! machine: both share the kernel page tables ([`KTables`]) and flush
//! through the IPI shootdown ([`crate::smp::KernelTlb`]). A large vmalloc
//! buffer is stamped through its vmalloc address and read back page by
//! page through `kmap`; every free
//! high-memory page passes through `kmap` (see [`pkmap_check`]); the local
//! APIC is reached through `ioremap_nocache`, VGA text memory through
//! `ioremap` (the direct map: ISA range); `/proc/vmallocinfo` is printed
//! while areas of each kind are live, and every area is given back.

use alloc::boxed::Box;
use core::ptr::NonNull;

use kmm_buddy::{Freed, Gfp};
use kmm_hal::{KernelLayout, PAGE_SIZE, PageFlags, PhysAddr, VirtAddr};
use kmm_i386::{I386Layout, Mode, PAGE_OFFSET, Paging};
use kmm_page_frame::ZoneType;
use kmm_pkmap::{Pkmap, SpinWait};
use kmm_vmalloc::{AreaKind, Vmalloc, VmallocError};

use crate::buddy_check::KernelBuddy;
use crate::heap::KernelSlab;
use crate::idt;
use crate::pkmap_check::{self, KernelPkmap};
use crate::serial::{LineWriter, kprintln};
use crate::tables::{KTables, LowmemFrames};

/// The kernel's vmalloc allocator.
pub type KernelVmalloc<M> = Vmalloc<
    'static,
    Paging<M>,
    LowmemFrames,
    &'static crate::smp::KernelTlb,
    crate::smp::KernelCpu,
>;

/// Bytes of the large vmalloc buffer.
const BIG: usize = 8 << 20;
/// The local APIC's registers (its default base).
const APIC_BASE: u64 = 0xFEE0_0000;
/// The APIC version register: version in bits 0–7, the highest LVT entry
/// in bits 16–23.
const APIC_VERSION: usize = 0x30;
/// VGA text memory (80×25 cells of character and attribute).
const VGA_TEXT: u64 = 0xB_8000;
/// Bytes of VGA text memory the kernel maps.
const VGA_BYTES: usize = 80 * 25 * 2;

/// The stamp of page `i` of the big buffer.
fn stamp(i: usize) -> u32 {
    (i as u32).wrapping_mul(0x85EB_CA6B) ^ 0x766D_0000
}

fn ok<T>(r: Result<T, VmallocError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Builds vmalloc and pkmap over the kernel tables, runs every check, and
/// returns both, kept for the kernel's life (the SMP phase uses them).
pub fn run<M: Mode + Send + 'static>(
    slab: &'static KernelSlab,
    tables: &'static KTables<M>,
    layout: &I386Layout,
) -> (&'static KernelVmalloc<M>, &'static KernelPkmap<M>) {
    idt::init_and_enable();
    kprintln!("kmm: interrupts on (IDT: 32 exception gates; PICs at 0x20, every line masked)");
    let buddy = slab.buddy();
    let tables_before = tables.lock(buddy.cpu()).frames.in_use();
    let vm: KernelVmalloc<M> = ok(
        Vmalloc::new(slab, tables, crate::smp::tlb(), layout),
        "vmalloc",
    );
    // SAFETY: the only pkmap over the kernel's mem_map and tables, built with
    // `layout` (for every CPU `buddy.cpu()` counts); `buddy.cpu()` is the
    // CPUs that use them.
    let pkmap: KernelPkmap<M> = match unsafe {
        Pkmap::new(
            buddy.mem(),
            tables,
            crate::smp::tlb(),
            buddy.cpu(),
            layout,
            SpinWait,
        )
    } {
        Ok(p) => p,
        Err(e) => panic!("pkmap: {e}"),
    };
    kprintln!(
        "kmm: vmalloc: range {}..{} ({} MiB), lazy_max_pages={}; pkmap: {} entries at {}; {} page-table page(s) from the buddy allocator",
        layout.vmalloc_start(),
        layout.vmalloc_end(),
        (layout.vmalloc_end().as_usize() - layout.vmalloc_start().as_usize()) >> 20,
        vm.lazy_max_pages(),
        pkmap.last_pkmap(),
        pkmap.pkmap_base(),
        tables.lock(buddy.cpu()).frames.in_use() - tables_before
    );
    big_buffer(&vm, &pkmap);
    pkmap_check::run(buddy, &pkmap);
    let apic = apic(&vm, tables, buddy.cpu());
    vga(&vm);
    let (small, vmapped, pages) = live_areas(&vm, &pkmap, buddy);
    {
        let mut w = LineWriter::new("kmm: vmallocinfo: ");
        vm.vmallocinfo(&mut w).expect("serial output never fails");
    }
    assert_eq!(vm.stats().areas, 3, "live areas while printing");
    ok(vm.vunmap(vmapped.as_ptr()), "vunmap");
    for p in pages {
        assert_eq!(buddy.free_pages_page(p, 0), Ok(Freed::Released));
    }
    ok(vm.iounmap(apic.as_ptr()), "iounmap");
    ok(vm.vfree(small.as_ptr()), "vfree");
    vm.purge();
    let s = vm.stats();
    kprintln!(
        "kmm: vmalloc stats: areas={} pages={} lazy_pages={} purges={} flushes={} frees={} blocks={}",
        s.areas,
        s.pages,
        s.lazy_pages,
        s.purges,
        s.flushes,
        s.frees,
        s.blocks
    );
    assert_eq!(
        (s.areas, s.pages, s.lazy_pages),
        (0, 0, 0),
        "areas, pages or lazily freed addresses left"
    );
    assert_eq!(idt::stray(), 0, "stray interrupts arrived");
    kprintln!(
        "kmm: vmalloc ok (every area given back and purged; {} page-table page(s) from the buddy allocator held for the pkmap window)",
        tables.lock(buddy.cpu()).frames.in_use() - tables_before
    );
    (Box::leak(Box::new(vm)), Box::leak(Box::new(pkmap)))
}

/// vmallocs [`BIG`] bytes, stamps every page through the vmalloc address,
/// then finds each page with `vmalloc_to_page` and checks its stamp through
/// `kmap`; vfrees.
fn big_buffer<M: Mode + 'static>(vm: &KernelVmalloc<M>, pkmap: &KernelPkmap<M>) {
    let base = ok(vm.vmalloc(BIG), "vmalloc of the big buffer");
    let pages = BIG / PAGE_SIZE;
    let info = vm
        .find_vm_area(VirtAddr::from_ptr(base.as_ptr()))
        .expect("find_vm_area of a live vmalloc");
    assert_eq!(
        (info.kind, info.size, info.nr_pages),
        (AreaKind::Vmalloc, BIG, pages),
        "the big buffer's area"
    );
    let words = base.as_ptr().cast::<u32>();
    let last = PAGE_SIZE / 4 - 1;
    for i in 0..pages {
        // SAFETY: the area maps `BIG` bytes from `base`, writable, ours
        // until vfree.
        unsafe {
            let p = words.add(i * PAGE_SIZE / 4);
            p.write_volatile(stamp(i));
            p.add(last).write_volatile(!stamp(i));
        }
    }
    let mut high = 0;
    for i in 0..pages {
        let va = VirtAddr::new(base.as_ptr() as usize + i * PAGE_SIZE);
        let page = vm
            .vmalloc_to_page(va)
            .unwrap_or_else(|| panic!("vmalloc_to_page({va})"));
        if page.zone_type() == ZoneType::HighMem {
            high += 1;
        }
        let k = pkmap
            .kmap(page)
            .unwrap_or_else(|e| panic!("kmap of page {i} of the big buffer: {e}"));
        let p = k.as_ptr::<u32>();
        // SAFETY: `k` maps the page's frame until kunmap; the area owns it.
        let (first, end) = unsafe { (p.read_volatile(), p.add(last).read_volatile()) };
        assert_eq!(
            (first, end),
            (stamp(i), !stamp(i)),
            "page {i} of the big buffer seen through kmap at {k}"
        );
        pkmap.kunmap(page).expect("kunmap");
    }
    ok(vm.vfree(base.as_ptr()), "vfree of the big buffer");
    assert!(
        vm.find_vm_area(VirtAddr::from_ptr(base.as_ptr())).is_none(),
        "the big buffer is still live after vfree"
    );
    kprintln!(
        "kmm: vmalloc: {} MiB from {pages} pages ({high} highmem) checked through kmap; vmalloc_to_page found every page, vfree gave them back",
        BIG >> 20
    );
}

/// Maps the local APIC's registers uncached and reads its version register;
/// the mapping stays for the vmallocinfo listing.
fn apic<M: Mode + 'static>(
    vm: &KernelVmalloc<M>,
    tables: &KTables<M>,
    cpu: &crate::smp::KernelCpu,
) -> NonNull<u8> {
    let p = ok(
        vm.ioremap_nocache(PhysAddr::new(APIC_BASE), PAGE_SIZE),
        "ioremap_nocache of the local APIC",
    );
    let va = VirtAddr::from_ptr(p.as_ptr());
    assert!(vm.is_vmalloc_addr(va), "ioremap of the APIC at {va}");
    let info = vm.find_vm_area(va).expect("the APIC's area");
    assert_eq!(info.kind, AreaKind::Ioremap);
    let t = kmm_hal::PageTable::translate(&tables.lock(cpu).pt, va).expect("APIC mapped");
    assert_eq!(t.phys, PhysAddr::new(APIC_BASE));
    assert!(
        t.flags
            .contains(PageFlags::NO_CACHE | PageFlags::WRITE_THROUGH),
        "the APIC mapping is cached ({:?})",
        t.flags
    );
    // SAFETY: the mapping covers the APIC's register page; its registers are
    // read with 32-bit accesses, and reading the version register has no
    // side effect.
    let version = unsafe { p.as_ptr().add(APIC_VERSION).cast::<u32>().read_volatile() };
    kprintln!(
        "kmm: ioremap: local APIC {APIC_BASE:#x} at {va} (PCD|PWT): version register {version:#010x} (version {:#x}, max LVT entry {})",
        version & 0xFF,
        (version >> 16) & 0xFF
    );
    assert!(
        version & 0xFF != 0 && version != u32::MAX,
        "no local APIC answers at {APIC_BASE:#x}"
    );
    p
}

/// ioremaps VGA text memory (the ISA range: its direct-map address, no new
/// area) and writes and reads back a row of cells through it.
fn vga<M: Mode + 'static>(vm: &KernelVmalloc<M>) {
    let areas = vm.stats().areas;
    let p = ok(
        vm.ioremap(PhysAddr::new(VGA_TEXT), VGA_BYTES),
        "ioremap of VGA text memory",
    );
    let want = PAGE_OFFSET + VGA_TEXT as usize;
    assert_eq!(
        p.as_ptr() as usize,
        want,
        "VGA text memory not at its direct-map address"
    );
    assert_eq!(
        vm.stats().areas,
        areas,
        "ioremap of the ISA range made an area"
    );
    // Bottom row, right-aligned, white on blue.
    let text = b"kmm: ioremap ok";
    let cells = p.as_ptr().cast::<u16>();
    let first = 80 * 24 + 80 - text.len();
    for (i, &c) in text.iter().enumerate() {
        // SAFETY: the cell lies inside the 4000 bytes mapped (the direct map
        // covers the ISA range), and nothing else draws on the screen.
        unsafe { cells.add(first + i).write_volatile(0x1F00 | u16::from(c)) };
    }
    let mut back = 0;
    for (i, &c) in text.iter().enumerate() {
        // SAFETY: as above.
        let v = unsafe { cells.add(first + i).read_volatile() };
        assert_eq!(
            v,
            0x1F00 | u16::from(c),
            "VGA cell {} reads {v:#06x}",
            first + i
        );
        back += 1;
    }
    ok(vm.iounmap(p.as_ptr()), "iounmap of VGA text memory");
    kprintln!(
        "kmm: ioremap: VGA text memory {VGA_TEXT:#x} at {want:#x} (the direct map: ISA range, no new area); {back} cells written and read back"
    );
}

/// A small vmalloc and a vmap of two highmem pages (written through the
/// vmap, checked through `kmap_local_page`), kept live for the listing;
/// returns them and the pages.
fn live_areas<M: Mode + 'static>(
    vm: &KernelVmalloc<M>,
    pkmap: &KernelPkmap<M>,
    buddy: &'static KernelBuddy<'static>,
) -> (NonNull<u8>, NonNull<u8>, [&'static kmm_page_frame::Page; 2]) {
    let small = ok(vm.vzalloc(3 * PAGE_SIZE), "vzalloc");
    // SAFETY: vzalloc mapped 3 zeroed pages at `small`.
    let zero = unsafe { small.as_ptr().add(2 * PAGE_SIZE + 7).read_volatile() };
    assert_eq!(zero, 0, "vzalloc memory is not zeroed");
    let page = || {
        buddy
            .alloc_pages(Gfp::HIGHUSER, 0)
            .expect("a highmem page for vmap")
    };
    let pages = [page(), page()];
    let v = ok(vm.vmap(&pages, PageFlags::KERNEL_RW), "vmap");
    for (i, _) in pages.iter().enumerate() {
        // SAFETY: the vmap maps both pages, writable; they are ours.
        unsafe {
            v.as_ptr()
                .add(i * PAGE_SIZE)
                .cast::<u32>()
                .write_volatile(0x766D_6170 + i as u32)
        };
    }
    for (i, p) in pages.iter().enumerate() {
        let k = pkmap
            .kmap_local_page(p)
            .unwrap_or_else(|e| panic!("kmap_local_page: {e}"));
        // SAFETY: `k` maps the page until kunmap_local.
        let w = unsafe { k.as_ptr::<u32>().read_volatile() };
        pkmap.kunmap_local(k).expect("kunmap_local");
        assert_eq!(
            w,
            0x766D_6170 + i as u32,
            "vmap page {i} through kmap_local_page"
        );
    }
    kprintln!(
        "kmm: vmap: 2 highmem pages at {:p}, written through the vmap and read through kmap_local_page",
        v.as_ptr()
    );
    (small, v, pages)
}
