//! The memory manager's story on the host mock, step by step, for people
//! without QEMU: `cargo run -p kmm --example walkthrough`.
//!
//! A 128 MiB i386 machine (2-level paging, high memory from 64 MiB so every
//! zone is there, two CPUs) is described by a BIOS-like memory map;
//! `MemoryManager::init` brings the whole stack up from it, as in a kernel;
//! then each subsystem is used once, with the `/proc` file that shows it.

use std::fmt::Write as _;

use kmm::buddy::Gfp;
use kmm::hal::{KernelLayout, PAGE_SIZE};
use kmm::page_frame::ZoneType;
use kmm_testkit::TestMachine;

fn show(title: &str, f: impl FnOnce(&mut String) -> std::fmt::Result) {
    let mut s = String::new();
    f(&mut s).expect("formatting to a String");
    println!("--- {title}");
    for line in s.lines() {
        println!("    {line}");
    }
}

fn main() {
    println!("kmm walkthrough: the Linux 2.6 i386 memory manager on a mock machine\n");
    let host = TestMachine::builder()
        .ram_mib(128)
        .highmem_mib(64)
        .cpus(2)
        .bios_holes()
        .build_mm();
    let _cpu0 = host.bind(0);
    let mm = host.mm();

    println!("1. init: bootmem over the memory map, the kernel page tables, mem_map and");
    println!("   the zones, the buddy allocator, per-CPU areas, the slab allocator, vmalloc,");
    println!("   pkmap and alloc_percpu (see kmm::init for the order and Linux's names).");
    show("the boot lines (Linux's mem_init)", |s| {
        mm.mem_init_lines(s)
    });
    let l = mm.layout();
    println!(
        "    layout: direct map {} MiB at {}, vmalloc {}..{}, pkmap {} entries at {}\n",
        l.direct_map().size() >> 20,
        l.direct_map().base(),
        l.vmalloc_start(),
        l.vmalloc_end(),
        l.last_pkmap(),
        l.pkmap_base()
    );

    println!("2. the buddy allocator: an order-4 block (16 pages) splits a larger one.");
    show("/proc/buddyinfo before", |s| mm.buddyinfo(s));
    let block = mm.alloc_pages(Gfp::KERNEL, 4).expect("an order-4 block");
    show("/proc/buddyinfo with the block out", |s| mm.buddyinfo(s));
    println!(
        "    a double free is refused: {:?}\n",
        mm.free_pages(block, 4)
            .and_then(|_| mm.free_pages(block, 4))
    );

    println!(
        "3. kmalloc: 100 bytes come from the size-104 cache's slabs (the dense classes step by 8 bytes; Linux 2.6's table would use size-128)."
    );
    let k = mm.kmalloc(100, Gfp::KERNEL).expect("kmalloc");
    println!(
        "    ksize = {} bytes",
        mm.ksize(k.as_ptr()).expect("a live block")
    );
    show("/proc/slabinfo (size-104)", |s| {
        let mut all = String::new();
        mm.slabinfo(&mut all)?;
        for line in all.lines().filter(|l| {
            l.starts_with("slabinfo") || l.starts_with("# name") || l.starts_with("size-104 ")
        }) {
            writeln!(s, "{line}")?;
        }
        Ok(())
    });
    println!("    kfree of a vmalloc address is refused, as is a double kfree.\n");

    println!("4. vmalloc: 6 MiB, virtually contiguous, page by page, with a guard page.");
    let v = mm.vmalloc(6 << 20).expect("vmalloc");
    println!("    kfree(vmalloc address) = {:?}", mm.kfree(v.as_ptr()));
    show("/proc/vmallocinfo", |s| mm.vmallocinfo(s));

    println!("5. highmem: a HIGHMEM page has no direct-map address; kmap gives it one.");
    let high = mm.alloc_page(Gfp::HIGHUSER).expect("a high page");
    assert_eq!(high.zone_type(), ZoneType::HighMem);
    let va = mm.kmap(high).expect("kmap");
    println!("    kmap -> {va} (a pkmap entry)");
    mm.kunmap(high).expect("kunmap");
    let local = mm.kmap_local_page(high).expect("kmap_local_page");
    println!("    kmap_local_page -> {local} (this CPU's fixmap slot)\n");
    mm.kunmap_local(local).expect("kunmap_local");

    println!("6. per-CPU memory: one u64 per CPU from the first chunk.");
    let pc = mm.alloc_percpu::<u64>().expect("alloc_percpu");
    println!("    stats: {:?}\n", mm.percpu().stats());

    println!("7. everything given back.");
    mm.free_percpu(pc).expect("free_percpu");
    mm.free_pages(high, 0).expect("free a page");
    mm.vfree(v.as_ptr()).expect("vfree");
    mm.kfree(k.as_ptr()).expect("kfree");
    mm.vmalloc_allocator().purge();
    mm.slab().shrink_all();
    mm.buddy().drain_local();
    show("/proc/buddyinfo at the end", |s| mm.buddyinfo(s));
    println!(
        "    {} of {} managed pages free ({} KiB pages)",
        mm.buddy().free_pages_total(),
        mm.buddy().managed_total(),
        PAGE_SIZE >> 10
    );
}
