//! mem_map from memory maps with holes, unaligned edges, several nodes and RAM
//! above what the paging mode can map.

use kmm_hal::{KernelLayout, PAGE_SIZE, Pfn, PhysAddr, VirtAddr};
use kmm_mock::{Backing, Machine, PagingMode};
use kmm_page_frame::{
    Bootmem, MemMap, MemMapError, Page, PfnError, PgFlags, Region, RegionKind, ZoneType,
};

fn machine(mib: usize, backing: Backing) -> Machine {
    Machine::builder()
        .ram(mib << 20)
        .backing(backing)
        .build()
        .unwrap()
}

#[test]
fn holes_edges_and_accounting() {
    let m = machine(24, Backing::Software);
    let map = [
        Region::new(0, 0x9_fc00, RegionKind::Usable),
        Region::new(0x9_fc00, 0x400, RegionKind::Reserved),
        Region::new(0xf_0000, 0x1_0000, RegionKind::Reserved),
        Region::new(0x10_0000, 0x40_0000 - 0x10_0000 + 0x800, RegionKind::Usable),
        Region::new(0x40_0800, 0x800, RegionKind::AcpiReclaimable),
        Region::new(0x40_1000, (24 << 20) - 0x40_1000 - 0x10, RegionKind::Usable),
    ];
    let mut boot = Bootmem::new(&map, m.lowmem_end()).unwrap();
    boot.reserve(PhysAddr::new(0x10_0000), 0x8_0001).unwrap(); // kernel: 0x81 pages
    // SAFETY: the direct map is the machine's RAM; `m` outlives `mem`.
    let mut mem = unsafe { MemMap::new(&mut boot, m.layout()) }.unwrap();
    let released = mem.release_free(&boot);
    let s = mem.stats();
    // RAM: 0..0x9f (the partial page 0x9f is out), 0x100..0x400 (the page
    // holding the ACPI table's start is out), 0x401..the last whole page.
    let last = ((24 << 20) - 0x10) / PAGE_SIZE as u64;
    let present = 0x9f + (0x400 - 0x100) + (last - 0x401);
    assert_eq!(s.present, present);
    assert_eq!(s.spanned, last);
    assert_eq!(
        s.mem_map_pages,
        (last * core::mem::size_of::<Page>() as u64).div_ceil(4096)
    );
    assert_eq!(s.bootmem_pages, s.mem_map_pages);
    // Reserved RAM: page 0, the kernel, mem_map.
    assert_eq!(s.reserved_ram, 1 + 0x81 + s.mem_map_pages);
    assert_eq!(released + s.reserved_ram, s.present);
    assert_eq!(s.ignored_ram, 0);

    for (pfn, reserved) in [
        (0, true),
        (1, false),
        (0x9f, true),
        (0xa0, true),
        (0x100, true),
        (0x181, false),
        (0x400, true),
        (0x401, false),
    ] {
        let p = mem.pfn_to_page(Pfn::new(pfn)).unwrap();
        assert_eq!(p.test(PgFlags::RESERVED), reserved, "pfn {pfn:#x}");
    }
    assert_eq!(
        mem.pfn_to_page(Pfn::new(last as usize)).err(),
        Some(PfnError::OutOfRange)
    );
    let node = mem.node(0).unwrap();
    assert_eq!(node.zone(ZoneType::Dma).spanned, 4096);
    assert_eq!(node.zone(ZoneType::Normal).start_pfn, 4096);
    assert!(node.zone(ZoneType::HighMem).is_empty());
    assert_eq!(mem.nodes().count(), 1);
}

#[test]
fn address_conversions_are_range_checked() {
    // 16 MiB: the mock's layout for less RAM has its DMA limit above the
    // start of high memory, which `MemMap::new` refuses (`check_layout`).
    let m = machine(16, Backing::Software);
    let map = [Region::new(0, 16 << 20, RegionKind::Usable)];
    let mut boot = Bootmem::new(&map, m.lowmem_end()).unwrap();
    // SAFETY: as above.
    let mem = unsafe { MemMap::new(&mut boot, m.layout()) }.unwrap();
    let dm = m.layout().direct_map();
    let p = mem.pfn_to_page(Pfn::new(0x123)).unwrap();
    assert_eq!(mem.page_to_pfn(p), Ok(Pfn::new(0x123)));
    assert_eq!(mem.page_to_phys(p), Ok(PhysAddr::new(0x12_3000)));
    let va = mem.page_address(p).unwrap();
    assert_eq!(va, dm.phys_to_virt(PhysAddr::new(0x12_3000)).unwrap());
    assert!(core::ptr::eq(
        mem.virt_to_page(VirtAddr::new(va.as_usize() + 5)).unwrap(),
        p
    ));
    assert_eq!(
        mem.virt_to_page(VirtAddr::new(0x1000)).err(),
        Some(PfnError::NotDirectMapped)
    );
    let stranger = Page::new(ZoneType::Normal, 0);
    assert_eq!(mem.page_to_pfn(&stranger), Err(PfnError::NotADescriptor));
    assert_eq!(mem.page_address(&stranger), None);
}

#[test]
fn nodes_and_zones_from_the_map() {
    let m = machine(48, Backing::Software);
    let map = [
        Region::new(0x1000, (20 << 20) - 0x1000, RegionKind::Usable),
        Region::new(24 << 20, 24 << 20, RegionKind::Usable).on_node(1),
    ];
    let mut boot = Bootmem::new(&map, m.lowmem_end()).unwrap();
    // SAFETY: as above.
    let mem = unsafe { MemMap::new(&mut boot, m.layout()) }.unwrap();
    assert_eq!(mem.nodes().count(), 2);
    let n0 = mem.node(0).unwrap();
    let n1 = mem.node(1).unwrap();
    assert_eq!((n0.start_pfn, n0.end_pfn), (1, 20 << 8));
    assert_eq!((n1.start_pfn, n1.end_pfn), (24 << 8, 48 << 8));
    assert_eq!(n0.zone(ZoneType::Dma).present, 4095);
    assert_eq!(n0.zone(ZoneType::Normal).present, 4 << 8);
    assert!(n1.zone(ZoneType::Dma).is_empty());
    assert_eq!(n1.zone(ZoneType::Normal).present, 24 << 8);
    // The hole between the nodes belongs to node 0, reserved.
    let hole = mem.pfn_to_page(Pfn::new(22 << 8)).unwrap();
    assert_eq!(hole.node(), 0);
    assert!(hole.test(PgFlags::RESERVED));
    assert_eq!(mem.pfn_to_page(Pfn::new(30 << 8)).unwrap().node(), 1);

    let overlapping = [
        Region::new(0, 16 << 20, RegionKind::Usable),
        Region::new(8 << 20, 16 << 20, RegionKind::Usable).on_node(1),
    ];
    let mut boot = Bootmem::new(&overlapping, m.lowmem_end()).unwrap();
    // SAFETY: as above.
    let r = unsafe { MemMap::new(&mut boot, m.layout()) };
    assert_eq!(r.err(), Some(MemMapError::OverlappingNodes));
    let bad_node = [Region::new(0, 16 << 20, RegionKind::Usable).on_node(9)];
    let mut boot = Bootmem::new(&bad_node, m.lowmem_end()).unwrap();
    // SAFETY: as above.
    let r = unsafe { MemMap::new(&mut boot, m.layout()) };
    assert_eq!(r.err(), Some(MemMapError::TooManyNodes));
}

// Gigabytes of mock RAM need a 64-bit host (the mock sizes RAM in usize and
// its memfd in off_t).
#[cfg(target_pointer_width = "64")]
#[test]
#[cfg_attr(miri, ignore = "a 2 GiB machine is too big for Miri")]
fn highmem_pages_have_an_address_only_when_mapped() {
    let m = machine(2048, Backing::Mmap);
    let map = [Region::new(0, 2 << 30, RegionKind::Usable)];
    let mut boot = Bootmem::new(&map, m.lowmem_end()).unwrap();
    // SAFETY: as above.
    let mut mem = unsafe { MemMap::new(&mut boot, m.layout()) }.unwrap();
    mem.release_free(&boot);
    let high = mem.pfn_to_page(Pfn::new((1 << 30) >> 12)).unwrap();
    assert_eq!(high.zone_type(), ZoneType::HighMem);
    assert!(high.test(PgFlags::HIGHMEM));
    assert_eq!(mem.page_address(high), None);
    let kmap = m.layout().pkmap_base();
    // SAFETY: the test owns the page; nothing writes through the recorded
    // address (the owner contract asks a true address of a real kmap).
    unsafe { mem.set_page_address(high, Some(kmap)) };
    assert_eq!(mem.page_address(high), Some(kmap));
    // SAFETY: forgetting the address is always true.
    unsafe { mem.set_page_address(high, None) };
    assert_eq!(mem.page_address(high), None);
    let node = mem.node(0).unwrap();
    assert_eq!(node.zone(ZoneType::HighMem).present, (2048 - 896) << 8);
}

// Gigabytes of mock RAM need a 64-bit host (the mock sizes RAM in usize and
// its memfd in off_t).
#[cfg(target_pointer_width = "64")]
#[test]
#[cfg_attr(miri, ignore = "a 5 GiB machine is too big for Miri")]
fn ram_beyond_the_paging_mode_is_ignored() {
    let two_level = Machine::builder()
        .ram(5 << 30)
        .paging(PagingMode::TwoLevel)
        .backing(Backing::Mmap)
        .build()
        .unwrap();
    let map = [Region::new(0, 5 << 30, RegionKind::Usable)];
    let mut boot = Bootmem::new(&map, two_level.lowmem_end()).unwrap();
    // SAFETY: as above.
    let mem = unsafe { MemMap::new(&mut boot, two_level.layout()) }.unwrap();
    assert_eq!(mem.stats().spanned, (4u64 << 30) >> 12);
    assert_eq!(mem.stats().ignored_ram, (1u64 << 30) >> 12);
    let pae = Machine::builder()
        .ram(5 << 30)
        .paging(PagingMode::Pae)
        .backing(Backing::Mmap)
        .build()
        .unwrap();
    let mut boot = Bootmem::new(&map, pae.lowmem_end()).unwrap();
    // SAFETY: as above.
    let mem = unsafe { MemMap::new(&mut boot, pae.layout()) }.unwrap();
    assert_eq!(mem.stats().spanned, (5u64 << 30) >> 12);
    assert_eq!(mem.stats().ignored_ram, 0);
}
