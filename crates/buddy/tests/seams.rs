//! The seams between the buddy allocator and the owners of its pages: a page
//! still linked on a list of its owner's is refused by every free path with
//! `FreeError::Linked`, changing nothing and losing no frame (before the
//! `LINKED` flag, `free_pages_page` panicked inside intrusive-collections and
//! the frame was never seen again).

use intrusive_collections::LinkedList;
use kmm_buddy::{Buddy, FreeError, Freed, Gfp};
use kmm_mock::MockCpu;
use kmm_page_frame::{Page, PageAdapter, PgFlags};
use kmm_testkit::{Backing, TestMachine};

/// A 32 MiB machine, software-backed, and the buddy allocator on it, with
/// the calling thread as CPU 0.
fn with_buddy(bypass_pcp: bool, f: impl FnOnce(&Buddy<'_, MockCpu>)) {
    let host = TestMachine::builder()
        .ram_mib(32)
        .backing(Backing::Software)
        .bypass_pcp(bypass_pcp)
        .build();
    let _cpu0 = host.bind(0);
    f(host.buddy());
}

/// What a refused free must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    free: usize,
    flags: PgFlags,
    count: u32,
    private: usize,
}

fn snapshot(b: &Buddy<'_, MockCpu>, page: &Page) -> Snapshot {
    Snapshot {
        free: b.free_pages_total(),
        flags: page.flags(),
        count: page.count(),
        private: page.private(),
    }
}

/// Every free path refuses a linked head, for order 0 (the per-CPU path) and
/// order 3 (the zone path); after unlinking, the same frees succeed and every
/// frame comes back.
fn linked_pages_are_refused(bypass_pcp: bool) {
    with_buddy(bypass_pcp, |b| {
        let total = b.free_pages_total();
        for order in [0, 3] {
            let page = b.alloc_pages(Gfp::KERNEL, order).unwrap();
            // SAFETY: the owner contract of `PageAdapter::new`: this thread
            // holds the allocated block and is the only one to link it.
            let mut list = LinkedList::new(unsafe { PageAdapter::new() });
            list.push_back(page);
            assert!(page.test(PgFlags::LINKED) && page.is_linked());

            let before = snapshot(b, page);
            assert_eq!(b.free_pages_page(page, order), Err(FreeError::Linked));
            assert_eq!(snapshot(b, page), before, "nothing changed");
            if order == 0 {
                assert_eq!(b.free_cold_page(page), Err(FreeError::Linked));
                assert_eq!(snapshot(b, page), before, "nothing changed");
            }
            let va = b.mem().page_address(page).unwrap();
            assert_eq!(b.free_pages(va, order), Err(FreeError::Linked));
            assert_eq!(snapshot(b, page), before, "nothing changed");
            assert!(page.is_linked(), "still on the caller's list");

            // Unlinked, the block frees normally: no frame was lost.
            assert!(list.pop_front().is_some());
            assert!(!page.test(PgFlags::LINKED) && !page.is_linked());
            assert_eq!(b.free_pages_page(page, order), Ok(Freed::Released));
        }
        b.drain_local();
        assert_eq!(b.free_pages_total(), total, "every frame came back");
    });
}

#[test]
fn linked_page_free_is_refused() {
    linked_pages_are_refused(false);
}

#[test]
fn linked_page_free_is_refused_without_pcp() {
    linked_pages_are_refused(true);
}

/// Dropping the owner's list unlinks its pages (and clears `LINKED`), so the
/// pages free normally afterwards.
#[test]
fn dropping_the_list_unlinks() {
    with_buddy(false, |b| {
        let pages: Vec<&Page> = (0..4)
            .map(|_| b.alloc_pages(Gfp::KERNEL, 0).unwrap())
            .collect();
        {
            // SAFETY: the owner contract: this thread holds every page.
            let mut list = LinkedList::new(unsafe { PageAdapter::new() });
            for &p in &pages {
                list.push_front(p);
            }
            assert!(pages.iter().all(|p| p.test(PgFlags::LINKED)));
        }
        for p in pages {
            assert!(!p.test(PgFlags::LINKED) && !p.is_linked());
            assert_eq!(b.free_pages_page(p, 0), Ok(Freed::Released));
        }
    });
}

/// A shared page (two references) is refused while linked too: the flag test
/// comes before the reference count, so no reference is dropped.
#[test]
fn linked_shared_page_keeps_its_references() {
    with_buddy(false, |b| {
        let page = b.alloc_pages(Gfp::KERNEL, 0).unwrap();
        assert!(b.get_page(page));
        // SAFETY: the owner contract: this thread holds the page.
        let mut list = LinkedList::new(unsafe { PageAdapter::new() });
        list.push_back(page);
        assert_eq!(b.free_pages_page(page, 0), Err(FreeError::Linked));
        assert_eq!(page.count(), 2);
        list.clear();
        assert_eq!(b.free_pages_page(page, 0), Ok(Freed::StillReferenced));
        assert_eq!(b.free_pages_page(page, 0), Ok(Freed::Released));
    });
}
