//! The test rig: a buddy allocator over a mock machine, with a layout whose
//! high memory starts early so small (Miri-sized) machines have all three zones.
#![allow(dead_code)]

use kmm_buddy::{Buddy, BuddyConfig, MAX_ORDER};
use kmm_hal::{DirectMap, Fixmap, KernelLayout, PhysAddr, VirtAddr};
use kmm_mock::{Backing, Machine, MockCpu, MockLayout};
use kmm_page_frame::{Bootmem, MemMap, PgFlags, Region, RegionKind, ZoneType};

/// The mock layout with `HIGHMEM` starting at `high`.
pub struct TestLayout {
    pub inner: MockLayout,
    pub high: PhysAddr,
}

// SAFETY: the mock layout's values, with `high` between 16 MiB and the end of
// the direct map (every caller picks such a value).
unsafe impl KernelLayout for TestLayout {
    fn direct_map(&self) -> DirectMap {
        self.inner.direct_map()
    }
    fn vmalloc_start(&self) -> VirtAddr {
        self.inner.vmalloc_start()
    }
    fn vmalloc_end(&self) -> VirtAddr {
        self.inner.vmalloc_end()
    }
    fn pkmap_base(&self) -> VirtAddr {
        self.inner.pkmap_base()
    }
    fn last_pkmap(&self) -> usize {
        self.inner.last_pkmap()
    }
    fn fixmap(&self) -> Fixmap {
        self.inner.fixmap()
    }
    fn highmem_start(&self) -> PhysAddr {
        self.high
    }
}

/// A machine and a buddy allocator over it. Fields drop in order: the
/// allocator before the machine whose RAM it lives in.
pub struct Rig {
    pub buddy: Buddy<'static, MockCpu>,
    pub machine: Machine,
}

/// The memory map the rigs use: `mib` MiB of RAM with a BIOS hole at
/// 640 KiB–1 MiB, an unaligned reserved (ACPI) range at 5 MiB, and, with two
/// nodes, node 1 from half the RAM up.
pub fn memory_map(mib: u64, two_nodes: bool) -> Vec<Region> {
    let top = mib << 20;
    let half = (top / 2) & !0x3f_ffff;
    let mut v = vec![
        Region::new(0, 0x9_fc00, RegionKind::Usable),
        Region::new(0x9_fc00, 0x6_0400, RegionKind::Reserved),
        Region::new(0x50_0100, 0x1800, RegionKind::AcpiNvs),
    ];
    if two_nodes {
        v.push(Region::new(0x10_0000, half - 0x10_0000, RegionKind::Usable));
        v.push(Region::new(half, top - half, RegionKind::Usable).on_node(1));
    } else {
        v.push(Region::new(0x10_0000, top - 0x10_0000, RegionKind::Usable));
    }
    v
}

/// A rig with `mib` MiB of RAM (software backing unless `mmap`), `cpus` CPUs,
/// high memory from `high_mib`, the kernel image reserved at 1–2 MiB.
pub fn rig(
    mib: u64,
    high_mib: u64,
    cpus: usize,
    two_nodes: bool,
    config: BuddyConfig<'static>,
) -> Rig {
    rig_with(mib, high_mib, cpus, two_nodes, Backing::Software, config)
}

pub fn rig_with(
    mib: u64,
    high_mib: u64,
    cpus: usize,
    two_nodes: bool,
    backing: Backing,
    config: BuddyConfig<'static>,
) -> Rig {
    let machine = Machine::builder()
        .ram((mib << 20) as usize)
        .cpus(cpus)
        .backing(backing)
        .build()
        .expect("machine");
    // Bootmem borrows the map only until `Buddy::new` consumes it.
    let map = memory_map(mib, two_nodes);
    let mut boot = Bootmem::new(&map, machine.lowmem_end()).expect("bootmem");
    boot.reserve(PhysAddr::new(0x10_0000), 0x10_0000)
        .expect("kernel image");
    let layout = TestLayout {
        inner: *machine.layout(),
        high: PhysAddr::new(high_mib << 20),
    };
    // SAFETY: the direct map is the machine's RAM, which the rig keeps alive
    // longer than the allocator (field order).
    let mem = unsafe { MemMap::new(&mut boot, &layout) }.expect("mem_map");
    // SAFETY: as above.
    let buddy = unsafe { Buddy::new(mem, boot, machine.cpu().clone(), config) }.expect("buddy");
    Rig { buddy, machine }
}

/// Zero watermarks, so allocation succeeds exactly when a block exists.
pub fn no_reserve() -> BuddyConfig<'static> {
    BuddyConfig {
        min_free_kbytes: Some(0),
        ..BuddyConfig::default()
    }
}

/// The fewest blocks a zone's free frames can form: each run of free frames
/// split greedily into the largest aligned blocks (what full coalescing gives).
pub fn ideal_free_area(buddy: &Buddy<'static, MockCpu>, zone: usize) -> [usize; MAX_ORDER] {
    let z = &buddy.zones()[zone];
    let page = |pfn: usize| buddy.mem().pfn_to_page(kmm_hal::Pfn::new(pfn)).unwrap();
    let span = z.span();
    let mut counts = [0; MAX_ORDER];
    let mut pfn = span.start_pfn as usize;
    let end = span.end_pfn() as usize;
    while pfn < end {
        if page(pfn).test(PgFlags::RESERVED) {
            pfn += 1;
            continue;
        }
        let mut run_end = pfn;
        while run_end < end && !page(run_end).test(PgFlags::RESERVED) {
            run_end += 1;
        }
        for (_, order) in kmm_buddy::aligned_blocks(pfn, run_end) {
            counts[order] += 1;
        }
        pfn = run_end;
    }
    counts
}

/// Asserts every zone is fully coalesced and every managed page is free.
pub fn assert_fully_coalesced(buddy: &Buddy<'static, MockCpu>) {
    for (i, z) in buddy.zones().iter().enumerate() {
        assert_eq!(z.pcp_pages(), 0, "zone {i}: per-CPU lists not drained");
        assert_eq!(z.free_pages(), z.managed(), "zone {i}: pages missing");
        let got: Vec<usize> = (0..MAX_ORDER).map(|o| z.nr_free(o)).collect();
        assert_eq!(
            got,
            ideal_free_area(buddy, i).to_vec(),
            "zone {i} ({:?}) not coalesced",
            z.kind()
        );
    }
}

/// Drains every CPU's lists (each CPU drains its own, on its own thread).
pub fn drain_every_cpu(rig: &Rig) {
    rig.machine.cpu().run_on_each(|_| rig.buddy.drain_local());
}

/// The zone index (into `buddy.zones()`) of a node and zone type.
pub fn zone_index(node: usize, t: ZoneType) -> usize {
    node * ZoneType::COUNT + t as usize
}
