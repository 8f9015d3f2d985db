//! `I386SmpCpu` on an i686 Linux host: this thread's `%fs` is based at a
//! `SmpCpuArea` (a TLS descriptor from `set_thread_area` stands in for the
//! kernel's per-CPU GDT entry), and the id, the preemption count and the
//! interrupt-nesting count are read and changed there. (`cli`/`sti` are
//! privileged, so interrupt guards are not taken here.)
#![cfg(all(target_arch = "x86", target_os = "linux"))]

use std::cell::UnsafeCell;

use kmm_hal::Cpu;
use kmm_i386::{I386SmpCpu, SmpCpuArea};
use kmm_mock::fs_segment::{FsLimit, FsSegment};

/// CPU `n`'s words, read from memory (not through `%fs`).
fn words(areas: &UnsafeCell<[SmpCpuArea; 3]>, n: usize) -> (u32, u32, u32) {
    // SAFETY: the areas outlive this; `%fs` writes are done (one thread).
    let a = unsafe { std::ptr::addr_of!((*areas.get())[n]).read_volatile() };
    (a.cpu_number, a.preempt_count, a.irq_count)
}

#[test]
fn id_and_counts_live_in_this_cpus_area() {
    let areas = UnsafeCell::new([SmpCpuArea::new(0), SmpCpuArea::new(1), SmpCpuArea::new(2)]);
    // SAFETY: in bounds; the address is exposed for the `%fs` accesses.
    let area = unsafe { std::ptr::addr_of_mut!((*areas.get())[2]) };
    // SAFETY: only `I386SmpCpu` reads through `%fs` in this test, inside
    // CPU 2's area.
    let fs = unsafe {
        FsSegment::load(
            area.expose_provenance(),
            FsLimit::Bytes(size_of::<SmpCpuArea>() as u32 - 1),
        )
    };
    // SAFETY: this thread's `%fs` covers CPU 2's area (a distinct id below
    // the count, counts zero) while `cpu` is used, and the thread is not
    // migrated between "CPUs" (there is one).
    let cpu = unsafe { I386SmpCpu::new(3, SmpCpuArea::OFFSETS) };
    assert_eq!(cpu.id(), 2);
    let g = cpu.preempt_guard();
    assert_eq!((g.cpu_id(), cpu.preempt_count()), (2, 1));
    let inner = cpu.preempt_guard();
    assert_eq!(words(&areas, 2), (2, 2, 0), "CPU 2's count moved");
    drop(inner);
    drop(g);
    assert_eq!(cpu.preempt_count(), 0);
    cpu.irq_enter();
    assert!(cpu.in_interrupt());
    assert_eq!(words(&areas, 2), (2, 0, 1));
    // SAFETY: matches the `irq_enter` above.
    unsafe { cpu.irq_exit() };
    assert!(!cpu.in_interrupt());
    drop(fs);
    for n in 0..3 {
        assert_eq!(words(&areas, n), (n as u32, 0, 0), "CPU {n}");
    }
}
