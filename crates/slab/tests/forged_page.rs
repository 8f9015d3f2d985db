//! Safe code cannot forge a slab page. Before the owner contract, safe code
//! could take a page from `alloc_pages`, call `insert(PgFlags::SLAB)` and
//! `set_owner(forged)` on it, and `kfree` would dereference the forged cache
//! pointer; now those writers are `unsafe fn`s (see the `compile_fail`
//! examples in `kmm_page_frame::Page`'s docs). What safe code still can do —
//! hand `kfree` a page it got from the page allocator — is refused.

use kmm_buddy::{Buddy, BuddyConfig, Freed, Gfp};
use kmm_mock::{Backing, Machine};
use kmm_page_frame::{Bootmem, MemMap, PgFlags, Region, RegionKind};
use kmm_slab::{SlabAllocator, SlabError};

#[test]
fn kfree_of_a_page_allocator_page_is_refused() {
    let m = Machine::builder()
        .ram(32 << 20)
        .backing(Backing::Software)
        .build()
        .unwrap();
    let _cpu0 = m.cpu().bind(0).unwrap();
    let map = [Region::new(0, 32 << 20, RegionKind::Usable)];
    let mut boot = Bootmem::new(&map, m.lowmem_end()).unwrap();
    // SAFETY: the machine's RAM is the direct map, used by nothing else, and
    // outlives the allocators (dropped at the end of this test).
    let mem = unsafe { MemMap::new(&mut boot, m.layout()) }.unwrap();
    // SAFETY: as above; `boot` is the bootmem `mem` was built with.
    let buddy = unsafe { Buddy::new(mem, boot, m.cpu().clone(), BuddyConfig::default()) }.unwrap();
    let slab = SlabAllocator::new(&buddy).unwrap();

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
