//! `MemoryManager::init` on the mock: every subsystem up from one memory
//! map, used once each, its diagnostics, and everything given back.

use kmm::buddy::{FreeError, Gfp};
use kmm::page_frame::ZoneType;
use kmm_testkit::{MmMachine, TestMachine};

fn machine(cpus: usize) -> MmMachine {
    TestMachine::builder()
        .ram_mib(64)
        .highmem_mib(32)
        .cpus(cpus)
        .bios_holes()
        .build_mm()
}

fn text(f: impl FnOnce(&mut String) -> core::fmt::Result) -> String {
    let mut s = String::new();
    f(&mut s).unwrap();
    s
}

#[test]
fn every_subsystem_works_after_init() {
    let host = machine(2);
    let _cpu = host.bind(0);
    let mm = host.mm();
    let free0 = mm.buddy().free_pages_total();

    let page = mm.alloc_pages(Gfp::KERNEL, 3).expect("an order-3 block");
    let high = mm.alloc_page(Gfp::HIGHUSER).expect("a high-memory page");
    assert_eq!(high.zone_type(), ZoneType::HighMem);

    let k = mm.kmalloc(200, Gfp::KERNEL).unwrap();
    assert!(mm.ksize(k.as_ptr()).unwrap() >= 200);
    let v = mm.vzalloc(3 << 20).unwrap();
    // SAFETY: 3 MiB of zeroed vmalloc memory.
    unsafe {
        assert_eq!(v.as_ptr().add((3 << 20) - 1).read(), 0);
        v.as_ptr().write(7);
    }

    let va = mm.kmap(high).unwrap();
    // SAFETY: `kmap` mapped the whole page.
    unsafe { va.as_mut_ptr::<u64>().write(0x1234_5678) };
    let local = mm.kmap_local_page(high).unwrap();
    // SAFETY: the same frame through a second mapping.
    assert_eq!(unsafe { local.as_ptr::<u64>().read() }, 0x1234_5678);
    mm.kunmap_local(local).unwrap();
    mm.kunmap(high).unwrap();

    let pc = mm.alloc_percpu::<u64>().unwrap();
    mm.free_percpu(pc).unwrap();

    // Bulk order-0 pages, and a bulk free that stops at a bad page.
    let mut pages = [None; 24];
    assert_eq!(mm.alloc_pages_bulk(Gfp::KERNEL, &mut pages), 24);
    pages[5] = Some(page); // an order-3 head
    let refused = mm.release_pages(&mut pages).unwrap_err();
    assert_eq!(refused.index, 5);
    assert_eq!(refused.error, FreeError::WrongOrder { allocated: 3 });
    assert!(pages[..5].iter().all(Option::is_none), "freed before it");
    pages[5] = None;
    assert_eq!(mm.release_pages(&mut pages), Ok(18));

    // Bad input reaches the right allocator's refusal.
    assert!(mm.kfree(v.as_ptr()).is_err(), "kfree of a vmalloc address");
    assert!(mm.vfree(k.as_ptr()).is_err(), "vfree of a kmalloc block");
    mm.kfree(k.as_ptr()).unwrap();
    assert!(mm.kfree(k.as_ptr()).is_err(), "double kfree");
    mm.vfree(v.as_ptr()).unwrap();
    mm.free_pages(page, 3).unwrap();
    assert!(mm.free_pages(page, 3).is_err(), "double free_pages");
    mm.free_pages(high, 0).unwrap();

    mm.vmalloc_allocator().purge();
    mm.slab().shrink_all();
    mm.buddy().drain_local();
    assert!(
        mm.buddy().free_pages_total() >= free0 - 64,
        "pages were lost"
    );
}

#[test]
fn bulk_object_paths_refuse_other_allocators_blocks_with_their_index() {
    use core::ptr::NonNull;
    use kmm::slab::{BulkFreeError, SlabError, SlabFlags};

    let host = machine(1);
    let _cpu = host.bind(0);
    let mm = host.mm();
    let cache = mm
        .slab()
        .kmem_cache_create("bulk", 96, 0, SlabFlags::empty(), None)
        .unwrap();
    let mut objs = vec![NonNull::dangling(); 48];
    mm.kmem_cache_alloc_bulk(cache, Gfp::KERNEL, &mut objs)
        .unwrap();
    let v = mm.vmalloc(8192).unwrap();
    let k = mm.kmalloc(96, Gfp::KERNEL).unwrap();
    let page = mm.get_free_pages(Gfp::KERNEL, 0).unwrap();
    let page = NonNull::new(page.as_mut_ptr::<u8>()).unwrap();
    for (bad, error) in [
        (v, SlabError::Foreign),
        (k, SlabError::WrongCache),
        (page, SlabError::Foreign),
    ] {
        let mut with_bad = objs.clone();
        with_bad.insert(10, bad);
        assert_eq!(
            mm.kmem_cache_free_bulk(cache, &with_bad),
            Err(BulkFreeError { index: 10, error })
        );
        // The ten before it were freed; take ten back for the next round.
        let mut ten = vec![NonNull::dangling(); 10];
        mm.kmem_cache_alloc_bulk(cache, Gfp::KERNEL, &mut ten)
            .unwrap();
        objs[..10].copy_from_slice(&ten);
    }
    mm.kmem_cache_free_bulk(cache, &objs).unwrap();
    assert_eq!(mm.slab().cache_stats(cache).unwrap().active_objs, 0);
    // The other allocators' blocks are still theirs.
    mm.vfree(v.as_ptr()).unwrap();
    mm.kfree(k.as_ptr()).unwrap();
    mm.buddy()
        .free_pages(kmm::hal::VirtAddr::new(page.as_ptr().addr()), 0)
        .unwrap();
}

#[test]
fn diagnostics_are_linux_formats() {
    let host = machine(1);
    let _cpu = host.bind(0);
    let mm = host.mm();
    let boot = text(|s| mm.mem_init_lines(s));
    assert!(boot.contains("32MB HIGHMEM available."), "{boot}");
    assert!(boot.contains("32MB LOWMEM available."), "{boot}");
    assert!(boot.contains("Zone PFN ranges:"), "{boot}");
    assert!(
        boot.contains("  HighMem  0x00002000 -> 0x00004000"),
        "{boot}"
    );
    let line = boot.lines().find(|l| l.starts_with("Memory: ")).unwrap();
    assert!(line.ends_with("k highmem)"), "{line}");
    assert!(
        line.contains("k/65532k available") || line.contains("k available"),
        "{line}"
    );
    let s = mm.summary();
    assert_eq!(s.highmem, 8192);
    assert!(s.free > 0 && s.free + s.reserved <= s.physpages);

    assert!(text(|s| mm.buddyinfo(s)).starts_with("Node 0, zone"));
    assert!(text(|s| mm.zoneinfo(s)).contains("pages free"));
    assert!(text(|s| mm.slabinfo(s)).starts_with("slabinfo - version: 2.1"));
    let v = mm.vmalloc(5 * 4096).unwrap();
    let info = text(|s| mm.vmallocinfo(s));
    assert!(info.contains("pages=5 vmalloc"), "{info}");
    mm.vfree(v.as_ptr()).unwrap();
    let all = text(|s| mm.show_mem(s));
    for h in [
        "/proc/buddyinfo:",
        "/proc/zoneinfo:",
        "/proc/slabinfo:",
        "/proc/vmallocinfo:",
    ] {
        assert!(all.contains(h));
    }
}

#[test]
fn cpus_come_up_once_each() {
    let host = machine(4);
    let mm = host.mm();
    assert_eq!(mm.online_mask(), 1, "the boot CPU is online from init");
    let offsets = host.on_each_cpu(|cpu| (cpu, mm.cpu_up(cpu)));
    for (cpu, off) in offsets {
        if cpu == 0 {
            assert_eq!(off, None, "the boot CPU is up already");
        } else {
            assert_eq!(off, Some(mm.per_cpu_areas().offsets()[cpu]));
        }
    }
    assert_eq!(mm.online_mask(), 0b1111);
    assert_eq!(mm.cpu_up(2), None, "a second cpu_up");
    assert_eq!(mm.cpu_up(4), None, "not a possible CPU");
}

#[test]
fn machines_are_independent_and_torn_down() {
    for _ in 0..3 {
        let host = machine(2);
        let _cpu = host.bind(1);
        let p = host.mm().kmalloc(64, Gfp::KERNEL).unwrap();
        host.mm().kfree(p.as_ptr()).unwrap();
    }
}

#[test]
fn a_kernel_may_bring_its_own_tables() {
    const MIB: u64 = 1 << 20;
    let (_machine, _cross, r) = TestMachine::builder()
        .ram_mib(48)
        .reserve(2 * MIB, MIB)
        .boot_mm(|platform, params| {
            let mut frames = kmm_mock::MockFrames::new(
                kmm::hal::PhysAddr::new(2 * MIB),
                kmm::hal::PhysAddr::new(3 * MIB),
            );
            let pt = platform
                .machine()
                .kernel_page_table(&mut frames, true)
                .unwrap();
            let before = frames.outstanding();
            // SAFETY: a new machine; the tables map its direct map and take
            // their pages from a reserved range.
            let mm = unsafe { kmm::MemoryManager::init(platform, params.tables(pt)) }.unwrap();
            let v = mm.vmalloc(64 << 10).unwrap();
            mm.vfree(v.as_ptr()).unwrap();
            let p: *mut kmm_testkit::MockMm<'static> = mm;
            // SAFETY: from `init`, used no more.
            unsafe { kmm::MemoryManager::teardown(p) };
            before
        });
    assert!(r > 0, "the kernel's tables took frames of its own");
}

#[test]
fn init_refuses_what_cannot_boot() {
    let (_m, _c, r) = TestMachine::builder()
        .ram_mib(16)
        .memory_map(vec![kmm::page_frame::Region::new(
            0,
            16 << 20,
            kmm::page_frame::RegionKind::Reserved,
        )])
        // SAFETY: a new machine; init fails before it builds anything.
        .boot_mm(|p, params| unsafe { kmm::MemoryManager::init(p, params) }.map(|_| ()));
    assert_eq!(
        r,
        Err(kmm::InitError::Bootmem(
            kmm::page_frame::BootmemError::NoMemory
        ))
    );
}
