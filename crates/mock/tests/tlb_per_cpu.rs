//! One TLB per simulated CPU: a flush made only on the CPU that changed a
//! mapping leaves the old translation usable on the others, and the checker
//! catches the use; a kernel-wide flush ([`KernelTlb`]) clears every CPU.
//!
//! Two threads run as CPU 0 and CPU 1 of a two-CPU machine and share its
//! kernel page tables behind [`KernelTables`] (the tables' IRQ-safe lock, as
//! vmalloc and pkmap share them). Each test fails if the checker kept one TLB
//! for the whole machine: CPU 0's local flush would then clear CPU 1's entry.
//! The kernel-wide flush is a shootdown: CPU 1 runs its part on its own
//! thread, so while CPU 0 may flush, CPU 1 waits at interrupt points.

use std::sync::atomic::{AtomicUsize, Ordering};

use kmm_hal::{
    Cpu, KernelLayout, KernelTables, KernelTlb, PAGE_SIZE, PageFlags, PageTable, PhysAddr,
    TableReclaim, VirtAddr,
};
use kmm_mock::{
    AccessError, Backing, Change, Machine, MockFrames, MockPageTable, PagingMode, TlbViolation,
};

type Tables = KernelTables<MockPageTable, MockFrames>;

/// The old and the new frame of the remapped page, and their first bytes.
const OLD: (PhysAddr, u8) = (PhysAddr::new(0x1000), 0xAA);
const NEW: (PhysAddr, u8) = (PhysAddr::new(0x2000), 0xBB);

fn machine(mode: PagingMode) -> Machine {
    Machine::builder()
        .ram(8 << 20)
        .paging(mode)
        .cpus(2)
        .backing(Backing::default_for_host())
        .build()
        .unwrap()
}

/// The machine's kernel page tables with `OLD` mapped at the start of the
/// vmalloc area (the address returned).
fn tables(m: &Machine) -> (Tables, VirtAddr) {
    let mut frames = m.lowmem_frames(PhysAddr::new(4 << 20));
    let mut pt = m.kernel_page_table(&mut frames, true).unwrap();
    let va = m.layout().vmalloc_start();
    m.write_phys(OLD.0, &[OLD.1]);
    m.write_phys(NEW.0, &[NEW.1]);
    pt.map(va, OLD.0, PageFlags::KERNEL_RW, &mut frames)
        .unwrap()
        .ignore(); // nothing was mapped there
    (KernelTables::new(pt, frames), va)
}

/// How CPU 0 flushes after it unmaps the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flushed {
    /// `PageTable::flush`: its own TLB only.
    Locally,
    /// `KernelTlb::flush_tlb_kernel_range`, after dropping the tables' lock.
    KernelWide,
}

/// Reads the first byte at `va` on the calling CPU.
fn read(m: &Machine, t: &Tables, va: VirtAddr) -> Result<u8, AccessError> {
    let mut buf = [0];
    t.lock(m.cpu()).pt.read(va, &mut buf)?;
    Ok(buf[0])
}

/// CPU 0 unmaps `va`, flushes as told, and maps `NEW` there.
fn remap_on_cpu0(m: &Machine, t: &Tables, va: VirtAddr, how: Flushed) {
    assert_eq!(m.cpu().id(), 0);
    {
        let mut g = t.lock(m.cpu());
        let g = &mut *g;
        let (old, flush) = g.pt.unmap(va, TableReclaim::Keep, &mut g.frames).unwrap();
        assert_eq!(old.frame, OLD.0);
        match how {
            Flushed::Locally => flush.flush(&g.pt),
            Flushed::KernelWide => flush.ignore(), // flushed below, unlocked
        }
    }
    if how == Flushed::KernelWide {
        m.flush_tlb_kernel_range(va, VirtAddr::new(va.as_usize() + PAGE_SIZE));
    }
    let mut g = t.lock(m.cpu());
    let g = &mut *g;
    g.pt.map(va, NEW.0, PageFlags::KERNEL_RW, &mut g.frames)
        .unwrap()
        .ignore(); // nothing was mapped there since the unmap
}

/// Steps two CPUs take in turn. A CPU waiting for the other spins with
/// interrupts on and calls `interrupt_point`, as a kernel's CPU spinning with
/// interrupts enabled takes IPIs: a host `Barrier` would block the thread
/// where it cannot answer CPU 0's shootdown.
struct Steps(AtomicUsize);

impl Steps {
    fn reach(&self, step: usize) {
        self.0.store(step, Ordering::Release);
    }

    fn wait_for(&self, m: &Machine, step: usize) {
        while self.0.load(Ordering::Acquire) < step {
            m.cpu().interrupt_point();
            std::thread::yield_now();
        }
    }
}

/// CPU 1 reads `va` (the old frame), CPU 0 remaps it, CPU 1 reads it again.
/// Returns CPU 0's read of the new mapping and CPU 1's second read.
fn remap_under_cpu1(
    m: &Machine,
    how: Flushed,
) -> (Result<u8, AccessError>, Result<u8, AccessError>, VirtAddr) {
    let (t, va) = tables(m);
    let steps = Steps(AtomicUsize::new(0));
    let (cpu0, cpu1) = std::thread::scope(|s| {
        let cpu1 = s.spawn(|| {
            let _b = m.cpu().bind(1).unwrap();
            assert_eq!(read(m, &t, va), Ok(OLD.1), "CPU 1 uses the mapping");
            steps.reach(1); // CPU 0 may remap
            steps.wait_for(m, 2); // CPU 0 remapped
            read(m, &t, va)
        });
        let cpu0 = s.spawn(|| {
            let _b = m.cpu().bind(0).unwrap();
            steps.wait_for(m, 1);
            remap_on_cpu0(m, &t, va, how);
            let own = read(m, &t, va);
            steps.reach(2);
            own
        });
        (cpu0.join().unwrap(), cpu1.join().unwrap())
    });
    (cpu0, cpu1, va)
}

#[test]
fn a_flush_left_out_on_the_other_cpu_is_caught() {
    for mode in [PagingMode::TwoLevel, PagingMode::Pae] {
        let m = machine(mode);
        let (cpu0, cpu1, va) = remap_under_cpu1(&m, Flushed::Locally);
        // CPU 0 flushed its own TLB: it sees the new frame.
        assert_eq!(cpu0, Ok(NEW.1), "{mode:?}");
        let want = TlbViolation {
            va,
            change: Change::Unmap,
            cpu: 1,
            changed_on: 0,
        };
        assert_eq!(cpu1, Err(AccessError::StaleTlb(want)), "{mode:?}");
        let msg = cpu1.unwrap_err().to_string();
        assert!(
            msg.contains("CPU 1 used") && msg.contains("on CPU 0") && msg.contains(&va.to_string()),
            "{mode:?}: {msg}"
        );
        assert_eq!(m.tlb().violations(), vec![want], "{mode:?}");
        assert_eq!(m.tlb().kernel_flushes(), 0, "{mode:?}");
    }
}

#[test]
fn a_kernel_wide_flush_clears_every_cpu() {
    for mode in [PagingMode::TwoLevel, PagingMode::Pae] {
        let m = machine(mode);
        let (cpu0, cpu1, _) = remap_under_cpu1(&m, Flushed::KernelWide);
        assert_eq!(cpu0, Ok(NEW.1), "{mode:?}");
        assert_eq!(cpu1, Ok(NEW.1), "{mode:?}");
        assert!(m.tlb().violations().is_empty(), "{mode:?}");
        assert_eq!(m.tlb().kernel_flush_counts(), (1, 0), "{mode:?}");
        assert_eq!(m.tlb().flush_counts(), (0, 0), "{mode:?}: no local flush");
        assert!((0..2).all(|c| m.tlb().pending_on(c) == 0), "{mode:?}");
        // The shootdown ran on CPU 1 (its thread, at an interrupt point);
        // CPU 0 flushed itself in the call, not through its queue.
        assert_eq!(m.cpu().cross_calls_run(1), 1, "{mode:?}");
        assert_eq!(m.cpu().cross_calls_run(0), 0, "{mode:?}");
    }
}

#[test]
fn a_local_flush_on_cpu0_leaves_cpu1_stale() {
    let m = machine(PagingMode::TwoLevel);
    let (t, va) = tables(&m);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _b = m.cpu().bind(0).unwrap();
            let mut g = t.lock(m.cpu());
            let g = &mut *g;
            g.pt.unmap(va, TableReclaim::Keep, &mut g.frames)
                .unwrap()
                .1
                .flush(&g.pt);
            // Even a full local flush is CPU 0's alone.
            g.pt.flush_all();
            assert_eq!(m.tlb().stale(va), None);
            assert_eq!(m.tlb().pending(), 0);
        })
        .join()
        .unwrap();
    });
    assert_eq!(m.tlb().stale_on(0, va), None);
    assert_eq!(m.tlb().stale_on(1, va), Some(Change::Unmap));
    assert_eq!(m.tlb().pending_on(1), 1);
    assert_eq!(m.tlb().flush_counts(), (1, 1));
    // CPU 1's own flush clears it.
    let cleared = std::thread::scope(|s| {
        s.spawn(|| {
            let _b = m.cpu().bind(1).unwrap();
            assert_eq!(m.tlb().stale(va), Some(Change::Unmap));
            t.lock(m.cpu()).pt.flush(va);
            m.tlb().stale(va)
        })
        .join()
        .unwrap()
    });
    assert_eq!(cleared, None);
    assert!(m.tlb().violations().is_empty());
}

#[test]
fn flush_tlb_all_clears_every_cpu_and_is_counted() {
    let m = machine(PagingMode::Pae);
    let (t, va) = tables(&m);
    {
        let mut g = t.lock(m.cpu());
        let g = &mut *g;
        g.pt.protect(va, PageFlags::PRESENT).unwrap().ignore();
    }
    assert!((0..2).all(|c| m.tlb().stale_on(c, va) == Some(Change::Protect)));
    m.flush_tlb_all();
    assert!((0..2).all(|c| m.tlb().pending_on(c) == 0));
    assert_eq!(m.tlb().kernel_flush_counts(), (0, 1));
    assert_eq!(m.tlb().kernel_flushes(), 1);
}

#[test]
#[should_panic(expected = "interrupts disabled")]
fn a_kernel_wide_flush_with_interrupts_off_breaks_the_deadlock_rule() {
    let m = machine(PagingMode::TwoLevel);
    let (t, va) = tables(&m);
    let _g = t.lock(m.cpu());
    m.flush_tlb_kernel_range(va, VirtAddr::new(va.as_usize() + PAGE_SIZE));
}
