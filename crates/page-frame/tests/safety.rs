//! The owner contract of `Page` at run time: what safe code can see, and the
//! `LINKED` bookkeeping of `PageAdapter` lists that the buddy allocator's free
//! check relies on. (That safe code cannot write a descriptor at all is shown
//! by the `compile_fail` examples in `Page`'s and `PageAdapter`'s docs.)

use intrusive_collections::LinkedList;
use kmm_page_frame::{Page, PageAdapter, PgFlags, ZoneType};

#[test]
fn linked_flag_follows_the_link() {
    let pages: Vec<Page> = (0..3).map(|_| Page::new(ZoneType::Normal, 0)).collect();
    // SAFETY: the owner contract: the pages are this test's own, linked from
    // this thread only, and none is held free by a page allocator.
    let mut list = LinkedList::new(unsafe { PageAdapter::new() });
    for p in &pages {
        assert!(!p.is_linked() && !p.test(PgFlags::LINKED));
        list.push_back(p);
        assert!(p.is_linked() && p.test(PgFlags::LINKED));
        assert!(p.test(PgFlags::RESERVED), "other flags stay");
    }
    // Removal through a cursor, a pop and `clear` all clear the flag.
    let mut c = list.front_mut();
    c.move_next();
    let mid = c.remove().unwrap();
    assert!(!mid.is_linked() && !mid.test(PgFlags::LINKED));
    let first = list.pop_front().unwrap();
    assert!(!first.test(PgFlags::LINKED));
    list.clear();
    assert!(
        pages
            .iter()
            .all(|p| !p.is_linked() && !p.test(PgFlags::LINKED))
    );
    assert_eq!(pages[0].zone_type(), ZoneType::Normal);
}

#[test]
fn fast_clear_leaves_link_and_flag_in_agreement() {
    let page = Page::new(ZoneType::Normal, 0);
    // SAFETY: as above.
    let mut list = LinkedList::new(unsafe { PageAdapter::new() });
    list.push_back(&page);
    // Safe, and it leaves the page "linked": the flag says so too, so a free
    // of it would still be refused rather than corrupt a free list.
    list.fast_clear();
    assert!(page.is_linked() && page.test(PgFlags::LINKED));
}

#[test]
fn a_page_cannot_go_on_two_lists() {
    let page = Page::new(ZoneType::Normal, 0);
    // SAFETY: as above.
    let mut a = LinkedList::new(unsafe { PageAdapter::new() });
    // SAFETY: as above.
    let mut b = LinkedList::new(unsafe { PageAdapter::new() });
    a.push_back(&page);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.push_back(&page)));
    assert!(r.is_err(), "intrusive-collections refuses a linked object");
    assert!(b.is_empty());
    assert!(page.test(PgFlags::LINKED), "still on the first list");
    a.clear();
    assert!(!page.test(PgFlags::LINKED));
}

#[test]
fn owner_writes_are_seen_by_readers() {
    let page = Page::new(ZoneType::Normal, 0);
    // SAFETY: the owner contract: the test owns this descriptor outright, and
    // nothing dereferences the values.
    unsafe {
        page.set_owner(0x1000);
        page.set_index(0x2000);
        page.set_private(3);
        page.replace_flags(PgFlags::empty(), PgFlags::HEAD);
    }
    assert_eq!(
        (page.owner(), page.index(), page.private()),
        (0x1000, 0x2000, 3)
    );
    assert_eq!(page.flags(), PgFlags::HEAD);
    assert_eq!(page.zone_type(), ZoneType::Normal, "zone and node stay");
}
