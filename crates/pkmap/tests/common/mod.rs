//! The set-up the pkmap tests share: a mock machine with high memory and
//! kernel page tables, a kernel-wide TLB flush over the mock's checker, a
//! `Pkmap` on them, highmem pages stamped with their frame numbers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use kmm_buddy::Gfp;
use kmm_hal::{Cpu, KernelTlb, PhysAddr, VirtAddr};
use kmm_mock::{MockCpu, MockFrames, MockPageTable};
use kmm_page_frame::{Page, PgFlags};
use kmm_pkmap::{Pkmap, SpinWait};
use kmm_testkit::TestMachine;

/// The kernel-wide flush of the tests: the mock's TLB checker is one for
/// every CPU, so flushing it is flushing every CPU. Checks the HAL's
/// deadlock rule (interrupts on, so no IRQ-safe lock held) and counts calls.
pub struct TestTlb {
    host: TestMachine,
    pub calls: AtomicUsize,
}

impl TestTlb {
    pub fn new(host: &TestMachine) -> TestTlb {
        TestTlb {
            host: host.clone(),
            calls: AtomicUsize::new(0),
        }
    }

    fn flush(&self) {
        assert!(
            !self.host.cpu().irqs_disabled(),
            "kernel-wide TLB flush with interrupts disabled"
        );
        self.calls.fetch_add(1, Ordering::Relaxed);
        // The machine's own kernel-wide flush: every simulated CPU's TLB.
        KernelTlb::flush_tlb_all(self.host.machine());
    }
}

// SAFETY: forwards to the mock machine's `KernelTlb` (every simulated CPU's
// TLB flushed before it returns), counting the calls.
unsafe impl KernelTlb for TestTlb {
    fn flush_tlb_kernel_range(&self, _start: VirtAddr, _end: VirtAddr) {
        self.flush()
    }
    fn flush_tlb_all(&self) {
        self.flush()
    }
}

pub type MockPkmap<'a> = Pkmap<'a, MockPageTable, MockFrames, TestTlb, MockCpu, SpinWait>;

/// `ram_mib` of RAM, high memory from 16 MiB, `cpus` CPUs, kernel tables.
pub fn machine(ram_mib: u64, cpus: usize) -> TestMachine {
    TestMachine::builder()
        .ram_mib(ram_mib)
        .highmem_mib(16)
        .cpus(cpus)
        .kernel_tables_mib(1)
        .build()
}

/// The pkmap of `host` (the only one: each test builds its own machine).
pub fn pkmap<'a>(host: &'a TestMachine, tlb: &'a TestTlb) -> MockPkmap<'a> {
    // SAFETY: one pkmap per machine: every test builds a machine of its own
    // and one pkmap on it.
    unsafe {
        Pkmap::new(
            host.buddy().mem(),
            host.kernel_tables(),
            tlb,
            host.cpu(),
            host.machine().layout(),
            SpinWait,
        )
    }
    .expect("pkmap set-up")
}

/// Up to `max` high-memory pages from the buddy allocator, each stamped
/// with its frame number in its first and last words.
pub fn highmem_pages(host: &TestMachine, max: usize) -> Vec<&Page> {
    let buddy = host.buddy();
    let mut v = Vec::new();
    while v.len() < max {
        let Some(page) = buddy.alloc_pages(Gfp::HIGHMEM, 0) else {
            break;
        };
        if !page.test(PgFlags::HIGHMEM) {
            buddy.free_pages_page(page, 0).unwrap();
            break;
        }
        stamp(host, page);
        v.push(page);
    }
    v
}

/// A low-memory page from the buddy allocator, stamped.
pub fn lowmem_page(host: &TestMachine) -> &Page {
    let page = host.buddy().alloc_pages(Gfp::KERNEL, 0).unwrap();
    assert!(!page.test(PgFlags::HIGHMEM));
    stamp(host, page);
    page
}

pub fn phys(host: &TestMachine, page: &Page) -> PhysAddr {
    host.buddy().mem().page_to_phys(page).unwrap()
}

fn stamp_of(pa: PhysAddr) -> [u8; 8] {
    (pa.as_u64() ^ 0x5a5a_0000_0000_5a5a).to_le_bytes()
}

/// Writes the page's stamp through its frame.
pub fn stamp(host: &TestMachine, page: &Page) {
    let pa = phys(host, page);
    let s = stamp_of(pa);
    assert!(host.machine().write_phys(pa, &s));
    assert!(
        host.machine()
            .write_phys(PhysAddr::new(pa.as_u64() + 4096 - 8), &s)
    );
}

/// Reads the stamp through `va` with the checked accessor (mapped, not
/// stale in the TLB) and compares it with `page`'s.
pub fn verify(host: &TestMachine, page: &Page, va: VirtAddr) {
    let want = stamp_of(phys(host, page));
    let t = host.kernel_tables().lock(host.cpu());
    let mut buf = [0u8; 8];
    t.pt.read(va, &mut buf)
        .expect("checked read through the kmap");
    assert_eq!(buf, want, "first word at {va}");
    t.pt.read(VirtAddr::new(va.as_usize() + 4096 - 8), &mut buf)
        .expect("checked read through the kmap");
    assert_eq!(buf, want, "last word at {va}");
}

/// Writes `data` through `va` (checked) and reads it back through the frame.
pub fn write_through(host: &TestMachine, page: &Page, va: VirtAddr, data: &[u8]) {
    {
        let t = host.kernel_tables().lock(host.cpu());
        t.pt.write(VirtAddr::new(va.as_usize() + 64), data)
            .expect("checked write through the kmap");
    }
    let mut buf = vec![0u8; data.len()];
    let pa = PhysAddr::new(phys(host, page).as_u64() + 64);
    assert!(host.machine().read_phys(pa, &mut buf));
    assert_eq!(buf, data);
}
