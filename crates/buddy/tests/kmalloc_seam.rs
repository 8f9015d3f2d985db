//! The free path refuses a block flagged `KMALLOC` (a live allocation the
//! SLAB allocator's kmalloc took from the page allocator), as it refuses slab
//! pages: a typed error, nothing changed, nothing lost.

use kmm_buddy::{FreeError, Freed, Gfp};
use kmm_page_frame::PgFlags;
use kmm_testkit::TestMachine;

#[test]
fn a_kmalloc_block_is_refused_until_unmarked() {
    let host = TestMachine::builder().ram_mib(16).build();
    let _cpu = host.bind(0);
    let b = host.buddy();

    let free_before = b.free_pages_total();
    let page = b.alloc_pages(Gfp::KERNEL, 2).unwrap();
    let va = b.mem().page_address(page).unwrap();
    // What kmalloc's large path does to the head page of its block.
    // SAFETY: the owner contract of `Page`: this test owns the block.
    unsafe { page.insert(PgFlags::KMALLOC) };
    let free_out = b.free_pages_total();

    assert_eq!(b.free_pages_page(page, 2), Err(FreeError::Kmalloc));
    assert_eq!(b.free_pages(va, 2), Err(FreeError::Kmalloc));
    // The wrong order is still refused as a kmalloc block: the flag decides.
    assert_eq!(b.free_pages_page(page, 1), Err(FreeError::Kmalloc));
    assert_eq!(b.free_pages_total(), free_out, "nothing freed");
    assert_eq!(page.count(), 1, "still referenced once");
    assert!(page.test(PgFlags::HEAD | PgFlags::KMALLOC));

    // kfree takes the mark off, then the free goes through.
    // SAFETY: as above.
    unsafe { page.remove(PgFlags::KMALLOC) };
    assert_eq!(b.free_pages_page(page, 2), Ok(Freed::Released));
    b.drain_local();
    assert_eq!(b.free_pages_total(), free_before, "nothing lost");
}
