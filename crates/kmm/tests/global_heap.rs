//! The global allocator: null before `init`, one `init` only, `kvmalloc`
//! above the largest buddy block, refused frees reported with the pointer
//! and the reason.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Mutex;

use kmm::{GlobalHeap, InitError, KMALLOC_MAX_SIZE, Refused};
use kmm_testkit::{MockPlatform, TestMachine};

static REPORTS: Mutex<Vec<(usize, Refused)>> = Mutex::new(Vec::new());

fn report(ptr: *mut u8, why: Refused) {
    REPORTS.lock().unwrap().push((ptr.addr(), why));
}

/// What a kernel writes (the `#[global_allocator]` attribute aside: the
/// test harness allocates before `init`).
static HEAP: GlobalHeap<MockPlatform> = GlobalHeap::with_report(report);

#[test]
fn the_heap_from_before_init_to_kvmalloc() {
    let small = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: a non-zero layout.
    assert!(unsafe { HEAP.alloc(small) }.is_null(), "null before init");
    assert!(HEAP.get().is_none());
    let mut local = 0u64;
    // SAFETY: refused before anything is touched (the heap is not ready).
    unsafe { HEAP.dealloc((&raw mut local).cast(), small) };

    let (machine, cross, mm) = TestMachine::builder()
        .ram_mib(96)
        .cpus(2)
        // SAFETY: the machine and the cross-CPU call are leaked below: the
        // manager lives for the rest of the test process.
        .boot_mm(|p, params| unsafe { HEAP.init(p, params) });
    let mm = mm.expect("init");
    std::mem::forget((machine.clone(), cross));
    let _cpu = machine.cpu().bind(0).unwrap();
    assert!(std::ptr::eq(mm, HEAP.get().unwrap()));

    // A second init is refused, and the heap keeps working.
    let (_m2, _c2, again) = TestMachine::builder()
        .ram_mib(16)
        // SAFETY: refused before anything is built.
        .boot_mm(|p, params| unsafe { HEAP.init(p, params) }.map(|_| ()));
    assert_eq!(again, Err(InitError::AlreadyInitialized));

    // SAFETY: every layout below is non-zero, and each pointer is freed with
    // the layout it was allocated with (the double frees are the refusals
    // under test: the heap checks them and touches nothing).
    unsafe {
        let p = HEAP.alloc(small);
        assert!(!p.is_null());
        assert!(
            !mm.vmalloc_allocator()
                .is_vmalloc_addr(kmm::hal::VirtAddr::new(p.addr()))
        );
        HEAP.dealloc(p, small);

        // Past the largest buddy block: vmalloc.
        let big = Layout::from_size_align(KMALLOC_MAX_SIZE + 1, 8).unwrap();
        let b = HEAP.alloc_zeroed(big);
        assert!(!b.is_null());
        assert!(
            mm.vmalloc_allocator()
                .is_vmalloc_addr(kmm::hal::VirtAddr::new(b.addr()))
        );
        assert_eq!(b.add(KMALLOC_MAX_SIZE).read(), 0);
        HEAP.dealloc(b, big);

        // A Vec-like growth from 8 bytes to 24 MiB through realloc keeps
        // its contents across the kmalloc -> vmalloc switch.
        let mut layout = Layout::from_size_align(8, 8).unwrap();
        let mut v = HEAP.alloc(layout);
        v.cast::<u64>().write(0xfeed);
        while layout.size() < 24 << 20 {
            let n = layout.size() * 2;
            v = HEAP.realloc(v, layout, n);
            assert!(!v.is_null(), "growth to {n} failed");
            layout = Layout::from_size_align(n, 8).unwrap();
            v.add(n - 8).cast::<u64>().write(n as u64);
        }
        assert_eq!(v.cast::<u64>().read(), 0xfeed);
        assert_eq!(v.add((8 << 20) - 8).cast::<u64>().read(), 8 << 20);
        HEAP.dealloc(v, layout);

        // Refused frees: reported with the pointer and the reason.
        let q = HEAP.alloc(small);
        HEAP.dealloc(q, small);
        HEAP.dealloc(q, small);
        let w = HEAP.alloc(big);
        HEAP.dealloc(w.add(4096), big);
        HEAP.dealloc(w, big);
        HEAP.dealloc(w, big);
        HEAP.dealloc((&raw mut local).cast(), small);
        let k = HEAP.alloc(small);
        HEAP.dealloc(k.add(8), small);
        HEAP.dealloc(k, small);
    }
    let reports = REPORTS.lock().unwrap();
    let why: Vec<Refused> = reports.iter().map(|r| r.1).collect();
    use kmm::slab::SlabError;
    use kmm::vmalloc::VmallocError;
    assert_eq!(
        why,
        [
            Refused::NotInitialized,
            Refused::Kfree(SlabError::DoubleFree),
            Refused::Vfree(VmallocError::Interior),
            Refused::Vfree(VmallocError::NotLive),
            Refused::Kfree(SlabError::Foreign),
            Refused::Kfree(SlabError::Interior),
        ]
    );
    assert_eq!(HEAP.refused(), why.len());
    let at = (&raw const local).addr();
    assert_eq!(
        (reports[0].0, reports[4].0),
        (at, at),
        "the pointer is reported"
    );
}
