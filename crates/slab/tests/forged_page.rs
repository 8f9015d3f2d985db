//! Safe code cannot forge a slab page. Before the owner contract, safe code
//! could take a page from `alloc_pages`, call `insert(PgFlags::SLAB)` and
//! `set_owner(forged)` on it, and `kfree` would dereference the forged cache
//! pointer; now those writers are `unsafe fn`s (see the `compile_fail`
//! examples in `kmm_page_frame::Page`'s docs). What safe code still can do —
//! hand `kfree` a page it got from the page allocator — is refused.

use kmm_buddy::{Freed, Gfp};
use kmm_page_frame::PgFlags;
use kmm_slab::SlabError;
use kmm_testkit::{Backing, TestMachine};

#[test]
fn kfree_of_a_page_allocator_page_is_refused() {
    let host = TestMachine::builder()
        .ram_mib(32)
        .backing(Backing::Software)
        .build();
    let _cpu0 = host.bind(0);
    let (buddy, slab) = (host.buddy(), host.slab());

    for order in [0, 2] {
        let page = buddy.alloc_pages(Gfp::KERNEL, order).unwrap();
        // All safe code can do with the descriptor is read it.
        assert!(!page.test(PgFlags::SLAB));
        assert_eq!(page.owner(), 0);
        let va = buddy.mem().page_address(page).unwrap();
        assert_eq!(slab.kfree(va.as_mut_ptr()), Err(SlabError::Foreign));
        assert_eq!(slab.ksize(va.as_mut_ptr()), Err(SlabError::Foreign));
        assert_eq!(page.count(), 1, "nothing changed");
        assert_eq!(buddy.free_pages_page(page, order), Ok(Freed::Released));
    }
}
