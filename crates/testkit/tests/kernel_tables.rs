//! The kernel page tables a test machine can carry: shared behind their lock,
//! mapping frames the buddy allocator hands out into the vmalloc area.

use kmm_buddy::Gfp;
use kmm_hal::{KernelLayout, PageFlags, PageTable, TableReclaim};
use kmm_testkit::TestMachine;

#[test]
fn a_buddy_page_mapped_in_the_vmalloc_area_aliases_its_frame() {
    let host = TestMachine::builder()
        .ram_mib(32)
        .kernel_tables_mib(1)
        .build();
    let _cpu0 = host.bind(0);
    let buddy = host.buddy();
    let page = buddy.alloc_pages(Gfp::KERNEL, 0).unwrap();
    let pa = buddy.mem().page_to_phys(page).unwrap();
    let va = host.machine().layout().vmalloc_start();
    let cpu = host.cpu();
    {
        let mut t = host.kernel_tables().lock(cpu);
        let t = &mut *t;
        t.pt.map(va, pa, PageFlags::KERNEL_RW, &mut t.frames)
            .unwrap()
            .ignore();
        t.pt.write(va, b"through vmalloc").unwrap();
        let (_, flush) = t.pt.unmap(va, TableReclaim::Keep, &mut t.frames).unwrap();
        flush.flush(&t.pt);
    }
    let mut buf = [0u8; 15];
    assert!(host.machine().read_phys(pa, &mut buf));
    assert_eq!(&buf, b"through vmalloc");
    buddy.free_pages_page(page, 0).unwrap();
}
