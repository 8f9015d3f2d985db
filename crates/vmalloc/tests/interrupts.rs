//! `vfree` from an interrupt handler: the area is unpublished, unmapped and
//! its pages freed at once under IRQ-safe locks; the purge (a kernel-wide
//! flush that waits for other CPUs) is left for process context. Every other
//! call is refused there with `InInterrupt`, nothing changed. The lock
//! checker (which panics on a report) has nothing to say.

mod common;

use std::cell::{Cell, RefCell};
use std::ptr::NonNull;

use common::*;
use kmm_buddy::Gfp;
use kmm_hal::{Cpu, PAGE_SIZE, PageFlags, VirtAddr};
use kmm_vmalloc::VmallocError;

#[test]
fn vfree_works_in_an_interrupt_handler_and_nothing_else_does() {
    let host = rig(32, 1);
    let _cpu0 = host.bind(0);
    let vm = vm(&host);
    let cpu = host.cpu().clone();
    host.slab().shrink_all();
    host.buddy().drain_local();
    let pages0 = host.buddy().free_pages_total();
    let frames0 = table_frames(&host);
    let areas: RefCell<Vec<NonNull<u8>>> = RefCell::new(
        (1..=8)
            .map(|n| vm.vmalloc(n * PAGE_SIZE).unwrap())
            .collect(),
    );
    let page = host.buddy().alloc_pages(Gfp::KERNEL, 0).unwrap();
    let freed = Cell::new(0);
    let refused = Cell::new(0);
    let handler = || {
        assert!(cpu.in_interrupt() && cpu.irqs_disabled());
        if let Some(p) = areas.borrow_mut().pop() {
            vm.vfree(p.as_ptr()).expect("vfree in interrupt context");
            freed.set(freed.get() + 1);
        }
        let refusals = [
            vm.vmalloc(PAGE_SIZE).map(|_| ()),
            vm.vmap(&[page], PageFlags::KERNEL_RW).map(|_| ()),
            vm.vm_map_ram(&[page], PageFlags::KERNEL_RW).map(|_| ()),
            vm.vunmap(VirtAddr::new(0).as_ptr()),
        ];
        for r in refusals {
            assert_eq!(r, Err(VmallocError::InInterrupt));
            refused.set(refused.get() + 1);
        }
        // The purge waits for process context.
        let flushes = vm.stats().flushes;
        vm.purge();
        assert_eq!(vm.stats().flushes, flushes);
    };
    cpu.with_irq_handler(&handler, || {
        for _ in 0..8 {
            cpu.raise_irq(0, 1);
            cpu.interrupt_point();
        }
    });
    assert_eq!(freed.get(), 8, "every area freed from the handler");
    assert_eq!(refused.get(), 32);
    assert!(areas.borrow().is_empty());
    let st = vm.stats();
    assert_eq!((st.areas, st.pages), (0, 0));
    assert!(st.lazy_pages > 0, "the addresses wait for the purge");
    vm.purge();
    assert_eq!(vm.stats().lazy_pages, 0);
    assert!(
        cpu.lockdep_reports().is_empty(),
        "{:?}",
        cpu.lockdep_reports()
    );
    assert!(host.machine().tlb().violations().is_empty());
    host.buddy().free_pages_page(page, 0).unwrap();
    host.slab().shrink_all();
    host.buddy().drain_local();
    assert_eq!(table_frames(&host), frames0);
    // Descriptors and nodes freed in the handler went back to kmalloc; the
    // pages too once the caches are shrunk.
    assert_eq!(host.buddy().free_pages_total(), pages0, "every page back");
    drop(vm);
}
