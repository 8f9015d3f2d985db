//! The i386 `%fs` operations, run for real on an i686 Linux host: the test
//! asks the kernel for a TLS descriptor (`set_thread_area`) whose base is a
//! CPU's offset, loads it into this thread's `%fs` — what a kernel's per-CPU
//! segment is — and checks that `SegmentOps` reads, writes and adds the
//! copies `PerCpuAreas` and `Percpu` say are this CPU's. `every_op` keeps
//! one call of each operation at every width: `objdump -d` of the test
//! binary shows each as one instruction (`mov %al,%fs:(%ecx)`,
//! `add %eax,%fs:(%ecx)`, `mov %fs:(%ecx),%dx` …).
#![cfg(all(target_arch = "x86", target_os = "linux"))]

mod common;

use core::sync::atomic::{
    AtomicI8, AtomicI16, AtomicI32, AtomicU8, AtomicU16, AtomicU32, AtomicUsize, Ordering,
};

use common::{FakeCpu, SoftAreas, ledger};
use kmm_mock::fs_segment::{FsLimit, FsSegment};
use kmm_percpu::{
    FirstChunkOnly, Percpu, SegmentOps, Template, ThisCpuOps, define_per_cpu, setup_per_cpu_areas,
};

define_per_cpu! {
    static HITS: shared AtomicU32 = AtomicU32::new(5);
    static SMALL: shared AtomicU16 = AtomicU16::new(0);
}

/// Every operation at every width (see the module docs).
#[inline(never)]
pub fn every_op(ops: &SegmentOps<'_>, p: usize) -> u32 {
    // SAFETY: the caller's: `%fs:p` is a live copy of every width used.
    unsafe {
        ops.write::<AtomicU8>(p, 1);
        ops.add::<AtomicI8>(p, -1);
        ops.write::<AtomicU16>(p, 2);
        ops.add::<AtomicI16>(p, 3);
        ops.add::<AtomicI32>(p, 4);
        ops.add::<AtomicUsize>(p, 5);
        u32::from(ops.read::<AtomicU8>(p))
            + u32::from(ops.read::<AtomicU16>(p))
            + ops.read::<AtomicU32>(p)
    }
}

#[test]
fn fs_operations_reach_this_cpus_copies() {
    let cpu = FakeCpu::new(2);
    cpu.switch(1);
    let vars = [HITS.desc(), SMALL.desc()];
    let areas =
        setup_per_cpu_areas(&cpu, &Template::from_vars(&vars), SoftAreas(ledger())).unwrap();
    let pcpu = Percpu::new(&areas, FirstChunkOnly).unwrap();
    let dynamic = pcpu.alloc_percpu::<AtomicU32>().unwrap();
    // SAFETY: only `SegmentOps` reads through `%fs` in this test, at
    // per-CPU pointers of these areas (CPU 1's copies).
    let fs = unsafe { FsSegment::load(areas.offset(1).unwrap(), FsLimit::Flat) };
    {
        // SAFETY: this thread is "CPU 1" and its `%fs` base is CPU 1's
        // offset, with a 4 GiB limit, while `ops` lives.
        let ops = unsafe { SegmentOps::new(areas.offsets()) };
        // SAFETY: `ops` is tied to `areas`.
        let this = unsafe { areas.this_cpu_with(&ops) };
        assert_eq!(this.read(&HITS), Ok(5), "the template's value");
        this.add(&HITS, 10).unwrap();
        this.inc(&HITS).unwrap();
        this.write(&SMALL, 0xBEEF).unwrap();
        this.dec(&SMALL).unwrap();
        // SAFETY: `dynamic` is live until freed below.
        unsafe {
            this.write_ptr(dynamic, 40);
            this.add_ptr(dynamic, 2);
            assert_eq!(this.read_ptr(dynamic), 42);
        }
        assert_eq!(this.read(&HITS), Ok(16));
        assert_eq!(this.read(&SMALL), Ok(0xBEEE));
    }
    drop(fs);
    // CPU 1's copies moved, CPU 0's did not.
    let hits = |c| areas.per_cpu(&HITS, c).unwrap().load(Ordering::Relaxed);
    let small = |c| areas.per_cpu(&SMALL, c).unwrap().load(Ordering::Relaxed);
    assert_eq!((hits(0), hits(1)), (5, 16));
    assert_eq!((small(0), small(1)), (0, 0xBEEE));
    for (c, want) in [(0, 0), (1, 42)] {
        // SAFETY: live; an atomic.
        let v = unsafe { areas.per_cpu_ptr(dynamic, c).unwrap().as_ref() }.load(Ordering::Relaxed);
        assert_eq!(v, want, "CPU {c}'s dynamic copy");
    }
    pcpu.free_percpu(dynamic).unwrap();
}

#[test]
fn every_op_is_one_access_per_width() {
    #[repr(C, align(8))]
    struct Area([u8; 8]);
    let area = std::cell::UnsafeCell::new(Area([0; 8]));
    // SAFETY: as above, inside `area`.
    let fs = unsafe { FsSegment::load(area.get().expose_provenance(), FsLimit::Flat) };
    // SAFETY: `%fs` is based at `area` on this thread while `ops` lives.
    let ops = unsafe { SegmentOps::new(&[]) };
    let r = every_op(&ops, 0);
    drop(fs);
    // u8: 1 - 1 = 0; u16: 2 + 3 = 5; i32: 5 + 4 = 9; usize: 9 + 5 = 14.
    assert_eq!(r, 14 + 14 + 14);
    // SAFETY: the `%fs` writes are done; nothing else holds `area`.
    let bytes = unsafe { area.get().read_volatile() }.0;
    assert_eq!(bytes, [14, 0, 0, 0, 0, 0, 0, 0]);
}
