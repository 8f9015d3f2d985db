//! Every bad call is refused with its typed error and changes nothing:
//! frees of foreign, unaligned, interior or freed addresses, frees of the
//! wrong kind, cross-allocator frees, bad sizes, and exhaustion of pages,
//! page-table frames and addresses midway (everything taken given back).

mod common;

use common::*;
use kmm_buddy::{FreeError, Gfp};
use kmm_hal::{KernelLayout, PAGE_SIZE, PageFlags, VirtAddr};
use kmm_slab::SlabError;
use kmm_vmalloc::{AreaKind, VmallocError};

/// What must not change across a refused call.
/// The caller is bound to CPU 0 of a one-CPU machine: the slab caches are
/// shrunk and this CPU's page lists drained, so that pages the caches keep
/// count as free.
fn snapshot(host: &kmm_testkit::TestMachine, vm: &Vm<'_>) -> (usize, usize, usize, usize) {
    host.slab().shrink_all();
    host.buddy().drain_local();
    let st = vm.stats();
    (
        host.buddy().free_pages_total(),
        table_frames(host),
        st.areas,
        st.pages,
    )
}

#[test]
fn bad_frees_are_refused_and_change_nothing() {
    let host = rig(32, 1);
    let _cpu0 = host.bind(0);
    let vm = vm(&host);
    let slab = host.slab();
    let v = vm.vmalloc(3 * PAGE_SIZE).unwrap();
    let page = host.buddy().alloc_pages(Gfp::KERNEL, 0).unwrap();
    let m = vm.vmap(&[page], PageFlags::KERNEL_RW).unwrap();
    let k = slab.kmalloc(64, Gfp::KERNEL).unwrap();
    let before = snapshot(&host, &vm);
    let va = v.as_ptr();
    let dm = host.machine().layout().direct_map().base().as_usize() as *const u8;
    let cases: Vec<(&str, Result<(), VmallocError>, VmallocError)> = vec![
        (
            "vfree of a kmalloc pointer",
            vm.vfree(k.as_ptr()),
            VmallocError::Foreign,
        ),
        (
            "vfree of a direct-map address",
            vm.vfree(dm),
            VmallocError::Foreign,
        ),
        (
            "vfree of an unaligned address",
            vm.vfree(va.wrapping_add(8)),
            VmallocError::Misaligned,
        ),
        (
            "vfree of an interior page",
            vm.vfree(va.wrapping_add(PAGE_SIZE)),
            VmallocError::Interior,
        ),
        (
            "vfree of the guard page",
            vm.vfree(va.wrapping_add(3 * PAGE_SIZE)),
            VmallocError::Interior,
        ),
        (
            "vfree of a vmap area",
            vm.vfree(m.as_ptr()),
            VmallocError::WrongKind { is: AreaKind::Vmap },
        ),
        (
            "vunmap of a vmalloc area",
            vm.vunmap(va),
            VmallocError::WrongKind {
                is: AreaKind::Vmalloc,
            },
        ),
        (
            "iounmap of a vmalloc area",
            vm.iounmap(va),
            VmallocError::WrongKind {
                is: AreaKind::Vmalloc,
            },
        ),
        (
            "vfree of a never-used address",
            vm.vfree(va.wrapping_add(64 * PAGE_SIZE)),
            VmallocError::NotLive,
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(got, Err(want), "{what}");
        assert_eq!(snapshot(&host, &vm), before, "{what} changed something");
    }
    // Cross-allocator: the page allocator refuses a vmalloc page, kfree a
    // vmalloc address.
    let vpage = vm.vmalloc_to_page(VirtAddr::from_ptr(va)).unwrap();
    assert_eq!(
        host.buddy().free_pages_page(vpage, 0),
        Err(FreeError::Vmalloc)
    );
    assert_eq!(slab.kfree(va), Err(SlabError::Foreign));
    assert_eq!(snapshot(&host, &vm), before);
    // Twice.
    vm.vfree(va).unwrap();
    assert_eq!(vm.vfree(va), Err(VmallocError::NotLive));
    vm.vunmap(m.as_ptr()).unwrap();
    assert_eq!(vm.vunmap(m.as_ptr()), Err(VmallocError::NotLive));
    // A null vfree is fine, as in Linux.
    assert_eq!(vm.vfree(core::ptr::null()), Ok(()));
    slab.kfree(k.as_ptr()).unwrap();
    host.buddy().free_pages_page(page, 0).unwrap();
}

#[test]
fn bad_sizes_and_pages_are_refused() {
    let host = rig(32, 1);
    let _cpu0 = host.bind(0);
    let vm = vm(&host);
    let before = snapshot(&host, &vm);
    assert_eq!(vm.vmalloc(0), Err(VmallocError::BadSize));
    assert_eq!(vm.vmalloc(usize::MAX), Err(VmallocError::BadSize));
    assert_eq!(
        vm.vmalloc(usize::MAX - PAGE_SIZE),
        Err(VmallocError::BadSize)
    );
    let range = host.machine().layout().vmalloc_end().as_usize()
        - host.machine().layout().vmalloc_start().as_usize();
    assert_eq!(
        vm.get_vm_area(range).map(|_| ()),
        Err(VmallocError::BadSize)
    );
    assert_eq!(
        vm.vmap(&[], PageFlags::KERNEL_RW).map(|_| ()),
        Err(VmallocError::BadSize)
    );
    // A free page is not the caller's to vmap.
    let page = host.buddy().alloc_pages(Gfp::KERNEL, 0).unwrap();
    host.buddy().free_pages_page(page, 0).unwrap();
    assert_eq!(
        vm.vmap(&[page], PageFlags::KERNEL_RW).map(|_| ()),
        Err(VmallocError::ForeignPage)
    );
    assert_eq!(
        vm.ioremap(kmm_hal::PhysAddr::new(0xFEE0_0000), 0)
            .map(|_| ()),
        Err(VmallocError::BadSize)
    );
    assert_eq!(
        vm.ioremap(kmm_hal::PhysAddr::new((1 << 52) - 10), 100)
            .map(|_| ()),
        Err(VmallocError::BadSize)
    );
    assert_eq!(snapshot(&host, &vm), before);
}

#[test]
fn running_out_of_pages_midway_gives_everything_back() {
    let host = rig(32, 1);
    let _cpu0 = host.bind(0);
    let vm = vm(&host);
    let before = snapshot(&host, &vm);
    // More than the machine has.
    assert_eq!(
        vm.vmalloc(40 << 20).map(|_| ()),
        Err(VmallocError::OutOfMemory)
    );
    vm.purge();
    assert_eq!(snapshot(&host, &vm), before);
    // It still works.
    let p = vm.vmalloc(PAGE_SIZE).unwrap();
    vm.vfree(p.as_ptr()).unwrap();
}

#[test]
fn running_out_of_page_table_frames_midway_gives_everything_back() {
    let host = rig(32, 1);
    let _cpu0 = host.bind(0);
    let vm = vm(&host);
    // Spread the area over several page tables: 3 000 pages span 3 tables
    // of 1 024 entries (2-level) and the first is already there or not.
    let before = snapshot(&host, &vm);
    host.kernel_tables().lock(host.cpu()).frames.fail_after(1);
    assert_eq!(
        vm.vmalloc(3000 * PAGE_SIZE).map(|_| ()),
        Err(VmallocError::OutOfMemory)
    );
    host.kernel_tables().lock(host.cpu()).frames.no_limit();
    vm.purge();
    assert_eq!(snapshot(&host, &vm), before);
    let p = vm.vmalloc(3000 * PAGE_SIZE).unwrap();
    vm.vfree(p.as_ptr()).unwrap();
}

#[test]
fn running_out_of_addresses_purges_then_fails_cleanly() {
    let host = rig(32, 1);
    let _cpu0 = host.bind(0);
    let vm = vm(&host);
    let range = host.machine().layout().vmalloc_end().as_usize()
        - host.machine().layout().vmalloc_start().as_usize();
    let big = vm.get_vm_area(range / 2 + PAGE_SIZE).unwrap();
    let before = snapshot(&host, &vm);
    assert_eq!(
        vm.get_vm_area(range / 2).map(|_| ()),
        Err(VmallocError::OutOfAddresses)
    );
    assert_eq!(snapshot(&host, &vm), before);
    // Freed, then the same size again: the failed search purges the lazily
    // freed range and the retry takes it.
    vm.free_vm_area(big.addr).unwrap();
    let again = vm.get_vm_area(range / 2 + PAGE_SIZE).unwrap();
    assert_eq!(again.addr, big.addr);
    assert!(vm.stats().purges >= 1);
    vm.free_vm_area(again.addr).unwrap();
}
