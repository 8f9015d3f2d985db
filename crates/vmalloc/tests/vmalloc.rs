//! vmalloc, vzalloc, vfree, vmap and ioremap on the mock: the bytes behind
//! every address are the frames' bytes, guard pages stay unmapped, freed
//! addresses come back only after one flush, and everything is given back.

mod common;

use common::*;
use kmm_buddy::Gfp;
use kmm_hal::{KernelLayout, PAGE_SIZE, PageFlags, PageTable, PhysAddr, VirtAddr};
use kmm_page_frame::ZoneType;
use kmm_vmalloc::{AreaKind, VmallocError};

#[test]
fn vmalloc_pages_alias_their_frames_highmem_first() {
    let host = rig(64, 1);
    let _cpu0 = host.bind(0);
    let vm = vm(&host);
    let pages = 40;
    let p = vm.vmalloc(pages * PAGE_SIZE - 100).unwrap();
    assert!(vm.is_vmalloc_addr(VirtAddr::from_ptr(p.as_ptr())));
    let mut high = 0;
    for i in 0..pages {
        let va = page_va(p.as_ptr(), i);
        write(&host, va, &stamp(i)).unwrap();
        let page = vm.vmalloc_to_page(va).expect("a mapped page");
        if page.zone_type() == ZoneType::HighMem {
            high += 1;
        }
        let pa = host.buddy().mem().page_to_phys(page).unwrap();
        assert_eq!(read_phys(&host, pa, 8), stamp(i));
        assert_eq!(vm.vmalloc_to_pfn(va).unwrap().phys(), pa);
    }
    assert_eq!(high, pages, "vmalloc takes HIGHMEM pages first");
    // The guard page after the area is not mapped.
    let guard = page_va(p.as_ptr(), pages);
    assert!(
        host.kernel_tables()
            .lock(host.cpu())
            .pt
            .translate(guard)
            .is_none()
    );
    let info = vm.find_vm_area(VirtAddr::from_ptr(p.as_ptr())).unwrap();
    assert_eq!(
        (info.kind, info.nr_pages, info.size),
        (AreaKind::Vmalloc, pages, pages * PAGE_SIZE)
    );
    vm.vfree(p.as_ptr()).unwrap();
    assert!(vm.find_vm_area(VirtAddr::from_ptr(p.as_ptr())).is_none());
}

#[test]
fn vzalloc_and_vmalloc_32_take_what_they_promise() {
    let host = rig(64, 1);
    let _cpu0 = host.bind(0);
    let vm = vm(&host);
    // Dirty some pages first so that zeroing is seen.
    let d = vm.vmalloc(8 * PAGE_SIZE).unwrap();
    for i in 0..8 {
        write(&host, page_va(d.as_ptr(), i), &[0xEE; 64]).unwrap();
    }
    vm.vfree(d.as_ptr()).unwrap();
    let z = vm.vzalloc(8 * PAGE_SIZE).unwrap();
    for i in 0..8 {
        let mut buf = [1u8; 64];
        read(&host, page_va(z.as_ptr(), i), &mut buf).unwrap();
        assert_eq!(buf, [0; 64]);
    }
    let low = vm.vmalloc_32(4 * PAGE_SIZE).unwrap();
    for i in 0..4 {
        let page = vm.vmalloc_to_page(page_va(low.as_ptr(), i)).unwrap();
        assert_ne!(page.zone_type(), ZoneType::HighMem);
    }
    vm.vfree(z.as_ptr()).unwrap();
    vm.vfree(low.as_ptr()).unwrap();
}

#[test]
fn everything_comes_back_after_vfree_and_a_purge() {
    let host = rig(64, 1);
    let _cpu0 = host.bind(0);
    let vm = vm(&host);
    let (pages0, frames0) = (host.buddy().free_pages_total(), table_frames(&host));
    let mut live = Vec::new();
    for i in 1..30 {
        live.push(vm.vmalloc(i * 3 * PAGE_SIZE).unwrap());
    }
    assert!(host.buddy().free_pages_total() < pages0);
    for p in live {
        vm.vfree(p.as_ptr()).unwrap();
    }
    vm.purge();
    let st = vm.stats();
    assert_eq!((st.areas, st.pages, st.lazy_pages), (0, 0, 0));
    assert_eq!(table_frames(&host), frames0, "page-table frames back");
    // kmalloc'ed descriptors are back in their caches; the pages too once
    // the caches are shrunk.
    drop(_cpu0);
    host.shrink_everywhere();
    assert_eq!(host.buddy().free_pages_total(), pages0, "every page back");
    let _cpu0 = host.bind(0);
    drop(vm);
}

#[test]
fn freed_addresses_wait_for_one_flush_before_reuse() {
    let host = rig(64, 2);
    let _cpu0 = host.bind(0);
    let vm = vm(&host);
    let a = vm.vmalloc(PAGE_SIZE).unwrap();
    write(&host, VirtAddr::from_ptr(a.as_ptr()), b"old").unwrap();
    vm.vfree(a.as_ptr()).unwrap();
    // Not purged yet: the next area gets other addresses.
    let b = vm.vmalloc(PAGE_SIZE).unwrap();
    assert_ne!(
        a, b,
        "a lazily freed address is not reused before the flush"
    );
    let flushes = vm.stats().flushes;
    vm.purge();
    assert_eq!(vm.stats().flushes, flushes + 1, "one flush for the batch");
    let c = vm.vmalloc(PAGE_SIZE).unwrap();
    assert_eq!(a, c, "reused after the flush (lowest fit)");
    write(&host, VirtAddr::from_ptr(c.as_ptr()), b"new").unwrap();
    assert!(host.machine().tlb().violations().is_empty());
    vm.vfree(b.as_ptr()).unwrap();
    vm.vfree(c.as_ptr()).unwrap();
}

#[test]
fn many_vfrees_take_few_flushes() {
    let host = rig(64, 2);
    let _cpu0 = host.bind(0);
    let vm = vm(&host);
    let n = if cfg!(miri) { 50 } else { 10_000 };
    for _ in 0..n {
        let p = vm.vmalloc(PAGE_SIZE).unwrap();
        vm.vfree(p.as_ptr()).unwrap();
    }
    let st = vm.stats();
    // Each purge flushes once, for lazy_max_pages pages of two-page areas.
    let per_batch = vm.lazy_max_pages() / 2;
    assert!(
        st.flushes <= (n / per_batch) as u64 + 1,
        "{st:?}, batch {per_batch}"
    );
    assert_eq!(st.flushes, st.purges);
    assert!(host.machine().tlb().violations().is_empty());
}

#[test]
fn vmap_maps_the_callers_pages_and_vunmap_leaves_them() {
    let host = rig(64, 1);
    let _cpu0 = host.bind(0);
    let vm = vm(&host);
    let buddy = host.buddy();
    let pages: Vec<_> = (0..5)
        .map(|i| {
            buddy
                .alloc_pages(
                    if i % 2 == 0 {
                        Gfp::HIGHUSER
                    } else {
                        Gfp::KERNEL
                    },
                    0,
                )
                .unwrap()
        })
        .collect();
    let p = vm.vmap(&pages, PageFlags::KERNEL_RW).unwrap();
    for (i, page) in pages.iter().enumerate() {
        let pa = buddy.mem().page_to_phys(page).unwrap();
        assert!(host.machine().write_phys(pa, &stamp(i)));
        let mut buf = [0; 8];
        read(&host, page_va(p.as_ptr(), i), &mut buf).unwrap();
        assert_eq!(buf, stamp(i));
    }
    assert_eq!(
        vm.vfree(p.as_ptr()),
        Err(VmallocError::WrongKind { is: AreaKind::Vmap })
    );
    vm.vunmap(p.as_ptr()).unwrap();
    for page in pages {
        buddy
            .free_pages_page(page, 0)
            .expect("the caller's page, still allocated");
    }
}

#[test]
fn ioremap_maps_devices_and_refuses_ram() {
    // 32 MiB with 1 MiB at 20 MiB reserved: firmware RAM ioremap may map.
    let host = kmm_testkit::TestMachine::builder()
        .ram_mib(32)
        .no_reserve()
        .reserve(20 << 20, 1 << 20)
        .kernel_tables_mib(1)
        .build();
    host.slab();
    let _cpu0 = host.bind(0);
    let vm = vm(&host);
    // Reserved RAM: mapped, uncached, aliasing the frame; the offset kept.
    let pa = PhysAddr::new((20 << 20) + 0x123);
    let p = vm.ioremap(pa, 0x2000).unwrap();
    assert_eq!(p.as_ptr() as usize % PAGE_SIZE, 0x123);
    write(&host, VirtAddr::from_ptr(p.as_ptr()), b"mmio").unwrap();
    assert_eq!(read_phys(&host, pa, 4), b"mmio");
    let base = VirtAddr::new(p.as_ptr() as usize & !(PAGE_SIZE - 1));
    let tr = host
        .kernel_tables()
        .lock(host.cpu())
        .pt
        .translate(base)
        .unwrap();
    assert!(tr.flags.contains(PageFlags::NO_CACHE));
    let info = vm.find_vm_area(base).unwrap();
    assert_eq!(
        (info.kind, info.phys, info.size),
        (
            AreaKind::Ioremap,
            Some(PhysAddr::new(20 << 20)),
            3 * PAGE_SIZE
        )
    );
    // A device above RAM (the local APIC's page): mapped, not RAM.
    let apic = vm
        .ioremap_nocache(PhysAddr::new(0xFEE0_0000), PAGE_SIZE)
        .unwrap();
    let tr = host
        .kernel_tables()
        .lock(host.cpu())
        .pt
        .translate(VirtAddr::from_ptr(apic.as_ptr()))
        .unwrap();
    assert_eq!(tr.frame, PhysAddr::new(0xFEE0_0000));
    assert!(
        tr.flags
            .contains(PageFlags::NO_CACHE | PageFlags::WRITE_THROUGH)
    );
    // Usable RAM the buddy allocator manages is refused.
    assert_eq!(
        vm.ioremap(PhysAddr::new(8 << 20), PAGE_SIZE),
        Err(VmallocError::RamRefused)
    );
    // The ISA hole is the direct map's, with no new area.
    let areas = vm.stats().areas;
    let vga = vm.ioremap(PhysAddr::new(0xB8000), 4000).unwrap();
    let dm = host.machine().layout().direct_map();
    assert_eq!(
        VirtAddr::from_ptr(vga.as_ptr()),
        dm.phys_to_virt(PhysAddr::new(0xB8000)).unwrap()
    );
    assert_eq!(vm.stats().areas, areas);
    vm.iounmap(vga.as_ptr()).unwrap();
    // Wrong frees.
    assert_eq!(
        vm.vfree(p.as_ptr().wrapping_sub(0x123)),
        Err(VmallocError::WrongKind {
            is: AreaKind::Ioremap
        })
    );
    let v = vm.vmalloc(PAGE_SIZE).unwrap();
    assert_eq!(
        vm.iounmap(v.as_ptr()),
        Err(VmallocError::WrongKind {
            is: AreaKind::Vmalloc
        })
    );
    vm.iounmap(p.as_ptr()).unwrap();
    assert_eq!(vm.iounmap(p.as_ptr()), Err(VmallocError::NotLive));
    vm.iounmap(apic.as_ptr()).unwrap();
    vm.vfree(v.as_ptr()).unwrap();
}

#[test]
fn vmallocinfo_lists_every_live_area() {
    let host = rig(32, 1);
    let _cpu0 = host.bind(0);
    let vm = vm(&host);
    let a = vm.vmalloc(3 * PAGE_SIZE).unwrap();
    let page = host.buddy().alloc_pages(Gfp::KERNEL, 0).unwrap();
    let b = vm.vmap(&[page], PageFlags::KERNEL_RW).unwrap();
    let mut s = String::new();
    vm.vmallocinfo(&mut s).unwrap();
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 2, "{s}");
    let start = a.as_ptr() as usize;
    assert_eq!(
        lines[0],
        format!(
            "{:#010x}-{:#010x}    16384 vmalloc pages=3 vmalloc",
            start,
            start + 4 * PAGE_SIZE
        )
    );
    assert!(
        lines[1].ends_with(" 8192 vmap pages=1 vmap"),
        "{}",
        lines[1]
    );
    vm.vfree(a.as_ptr()).unwrap();
    vm.vunmap(b.as_ptr()).unwrap();
    host.buddy().free_pages_page(page, 0).unwrap();
}
