//! The allocator's hooks run with no zone lock held and no per-CPU list
//! borrowed, so a hook may call back into the allocator.
//!
//! A hook is `'static` (a function), so it reaches the allocator through a
//! `static` test machine that its test builds.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use kmm_buddy::{Buddy, BuddyConfig, Freed, Gfp, Zone};
use kmm_hal::{Cpu, Pfn};
use kmm_mock::MockCpu;
use kmm_page_frame::ZoneType;
use kmm_testkit::{Backing, TestMachine};

/// What every hook checks first: no zone lock is held, and this CPU holds no
/// per-CPU list.
fn assert_nothing_held(b: &Buddy<'_, MockCpu>) {
    let id = {
        let _g = b.cpu().preempt_guard();
        b.cpu().id()
    };
    for z in b.zones() {
        assert!(!z.is_locked(), "hook called with a zone lock held");
        assert!(!z.pcp().is_busy(id), "hook called with a per-CPU list held");
    }
}

/// `on_low` allocates and frees pages (on the per-CPU path and the zone path)
/// while the allocation that called it is still in progress.
#[test]
fn on_low_may_allocate() {
    static HOST: OnceLock<TestMachine> = OnceLock::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static DEPTH: AtomicUsize = AtomicUsize::new(0);
    fn on_low(_: &Zone<'_>) {
        CALLS.fetch_add(1, Ordering::Relaxed);
        let b = HOST.get().expect("set before the first allocation").buddy();
        assert_nothing_held(b);
        // An allocation from the hook may find the zone low too and call the
        // hook again: a hook guards against its own recursion.
        if DEPTH.fetch_add(1, Ordering::Relaxed) == 0 {
            for order in [0, 0, 2] {
                let p = b
                    .alloc_pages(Gfp::ATOMIC, order)
                    .expect("below low, above min");
                assert_eq!(b.free_pages_page(p, order), Ok(Freed::Released));
            }
            b.drain_local();
        }
        DEPTH.fetch_sub(1, Ordering::Relaxed);
    }
    let host = HOST.get_or_init(|| {
        TestMachine::builder()
            .ram_mib(32)
            .backing(Backing::Software)
            .buddy_config(BuddyConfig {
                on_low: Some(&on_low),
                ..BuddyConfig::default()
            })
            .build()
    });
    let _cpu0 = host.bind(0);
    let b = host.buddy();
    let managed = b.managed_total();
    // Blocks of 16 frames reach the low watermark in a few hundred calls
    // (Miri is slow).
    let mut live = Vec::new();
    while CALLS.load(Ordering::Relaxed) == 0 {
        live.push(b.alloc_pages(Gfp::KERNEL, 4).expect("above min"));
    }
    for p in live {
        b.free_pages_page(p, 4).unwrap();
    }
    b.drain_local();
    assert_eq!(b.free_pages_total(), managed);
    for z in b.zones() {
        assert_eq!(z.free_pages(), z.managed());
    }
}

/// `zero_highmem` (called for each frame of a zeroed high-memory block that
/// the direct map does not reach) may allocate; it zeroes the frame, here
/// through the mock's physical access.
#[test]
#[cfg_attr(miri, ignore = "1 GiB of RAM: the mmap backing")]
fn zero_highmem_may_allocate() {
    static HOST: OnceLock<TestMachine> = OnceLock::new();
    static ZEROED: AtomicUsize = AtomicUsize::new(0);
    fn zero(pfn: Pfn) {
        let host = HOST.get().expect("set before the first allocation");
        let b = host.buddy();
        assert_nothing_held(b);
        let p = b.alloc_pages(Gfp::KERNEL, 0).expect("a low page");
        assert_eq!(b.free_pages_page(p, 0), Ok(Freed::Released));
        assert!(host.machine().write_phys(pfn.phys(), &[0; 4096]));
        ZEROED.fetch_add(1, Ordering::Relaxed);
    }
    // RAM above the 896 MiB direct map: real high memory.
    let host = HOST.get_or_init(|| {
        TestMachine::builder()
            .ram_mib(1024)
            .backing(Backing::Mmap)
            .highmem_mib(896)
            .buddy_config(BuddyConfig {
                zero_highmem: Some(&zero),
                ..BuddyConfig::default()
            })
            .build()
    });
    let (m, b) = (host.machine(), host.buddy());
    let _cpu0 = host.bind(0);
    // Dirty a high page and free it (to the hot end of this CPU's list); a
    // zeroed block of order 2 comes from the free lists, a zeroed page from
    // the list: the dirtied frame, zeroed through the hook.
    let p = b.alloc_pages(Gfp::HIGHUSER, 0).unwrap();
    assert_eq!(p.zone_type(), ZoneType::HighMem);
    let pa = b.mem().page_to_phys(p).unwrap();
    assert!(m.write_phys(pa, &[0xa5; 4096]));
    b.free_pages_page(p, 0).unwrap();
    let q = b.alloc_pages(Gfp::HIGHUSER | Gfp::ZERO, 2).unwrap();
    assert_eq!(q.zone_type(), ZoneType::HighMem);
    assert_eq!(ZEROED.load(Ordering::Relaxed), 4, "one call per frame");
    let qa = b.mem().page_to_phys(q).unwrap();
    let mut buf = vec![0xffu8; 4 << 12];
    assert!(m.read_phys(qa, &mut buf));
    assert!(buf.iter().all(|&x| x == 0));
    let r = b.alloc_pages(Gfp::HIGHUSER | Gfp::ZERO, 0).unwrap();
    assert_eq!(ZEROED.load(Ordering::Relaxed), 5);
    let ra = b.mem().page_to_phys(r).unwrap();
    assert_eq!(ra, pa, "the dirtied frame, from the hot end of the list");
    let mut page = vec![0xffu8; 4096];
    assert!(m.read_phys(ra, &mut page));
    assert!(page.iter().all(|&x| x == 0));
    b.free_pages_page(q, 2).unwrap();
    b.free_pages_page(r, 0).unwrap();
}
