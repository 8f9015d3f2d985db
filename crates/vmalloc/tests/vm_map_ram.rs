//! vm_map_ram: small mappings from per-CPU blocks (one trip to the address
//! space lock per block, not per mapping), large ones from areas, bad
//! unmaps refused, blocks retired through the lazy purge.

mod common;

use common::*;
use kmm_buddy::Gfp;
use kmm_hal::{PAGE_SIZE, PageFlags, VirtAddr};
use kmm_vmalloc::{VMAP_MAX_ALLOC, VmallocError};

#[test]
fn small_mappings_come_from_per_cpu_blocks() {
    let host = rig(64, 2);
    let vm = {
        let _c = host.bind(0);
        vm(&host)
    };
    let rounds = if cfg!(miri) { 20 } else { 3000 };
    host.on_each_cpu(|cpu| {
        let buddy = host.buddy();
        let pages: Vec<_> = (0..4)
            .map(|_| buddy.alloc_pages(Gfp::HIGHUSER, 0).unwrap())
            .collect();
        for r in 0..rounds {
            let n = 1 + (r + cpu) % 4;
            let p = vm.vm_map_ram(&pages[..n], PageFlags::KERNEL_RW).unwrap();
            for (i, page) in pages[..n].iter().enumerate() {
                let tag = [(r as u8) ^ (i as u8) ^ (cpu as u8 * 0x40); 8];
                write(&host, page_va(p.as_ptr(), i), &tag).unwrap();
                let pa = buddy.mem().page_to_phys(page).unwrap();
                assert_eq!(read_phys(&host, pa, 8), tag);
            }
            vm.vm_unmap_ram(p.as_ptr(), n).unwrap();
        }
        for p in pages {
            buddy.free_pages_page(p, 0).unwrap();
        }
    });
    let st = vm.stats();
    // About 2.5 pages a mapping on average over blocks of 64+ pages.
    let bound = (2 * rounds * 3 / 64 + 4) as u64;
    assert!(
        st.blocks <= bound,
        "{} blocks for {} mappings",
        st.blocks,
        2 * rounds
    );
    assert!(host.machine().tlb().violations().is_empty());
    let _c = host.bind(0);
    vm.purge();
    drop(vm);
}

#[test]
fn large_mappings_and_bad_unmaps() {
    let host = rig(64, 1);
    let _cpu0 = host.bind(0);
    let vm = vm(&host);
    let buddy = host.buddy();
    let pages: Vec<_> = (0..VMAP_MAX_ALLOC + 3)
        .map(|_| buddy.alloc_pages(Gfp::KERNEL, 0).unwrap())
        .collect();
    let big = vm.vm_map_ram(&pages, PageFlags::KERNEL_RW).unwrap();
    assert_eq!(
        vm.vm_unmap_ram(big.as_ptr(), pages.len() - 1),
        Err(VmallocError::BadSize),
        "the wrong count"
    );
    vm.vm_unmap_ram(big.as_ptr(), pages.len()).unwrap();
    let small = vm.vm_map_ram(&pages[..3], PageFlags::KERNEL_RW).unwrap();
    let next = vm.vm_map_ram(&pages[..1], PageFlags::KERNEL_RW).unwrap();
    assert_eq!(
        vm.vm_unmap_ram(small.as_ptr(), 2),
        Err(VmallocError::BadSize)
    );
    assert_eq!(
        vm.vm_unmap_ram(small.as_ptr(), 4),
        Err(VmallocError::BadSize)
    );
    assert_eq!(
        vm.vm_unmap_ram(small.as_ptr().wrapping_add(PAGE_SIZE), 1),
        Err(VmallocError::NotLive),
        "interior"
    );
    assert_eq!(
        vm.vm_unmap_ram(small.as_ptr().wrapping_add(1), 3),
        Err(VmallocError::Misaligned)
    );
    // The mapping is intact after every refusal.
    write(&host, VirtAddr::from_ptr(small.as_ptr()), b"still").unwrap();
    vm.vm_unmap_ram(small.as_ptr(), 3).unwrap();
    assert_eq!(
        vm.vm_unmap_ram(small.as_ptr(), 3),
        Err(VmallocError::NotLive),
        "twice"
    );
    let k = host.slab().kmalloc(32, Gfp::KERNEL).unwrap();
    assert_eq!(vm.vm_unmap_ram(k.as_ptr(), 1), Err(VmallocError::Foreign));
    vm.vm_unmap_ram(next.as_ptr(), 1).unwrap();
    // A free page is refused.
    let p = buddy.alloc_pages(Gfp::KERNEL, 0).unwrap();
    buddy.free_pages_page(p, 0).unwrap();
    assert_eq!(
        vm.vm_map_ram(&[p], PageFlags::KERNEL_RW).map(|_| ()),
        Err(VmallocError::ForeignPage)
    );
    host.slab().kfree(k.as_ptr()).unwrap();
    for p in pages {
        buddy.free_pages_page(p, 0).unwrap();
    }
}
