//! The i386 `%fs` operations assemble for every integer width (they run in
//! the QEMU kernel, whose CPUs have their per-CPU segment; a Linux host
//! process has no `%fs` segment to point at its areas, so here they are
//! only built: `objdump -d` of the test binary shows `every_op` as
//! `mov %al,%fs:(%ecx)`, `add %eax,%fs:(%ecx)`, `mov %fs:(%ecx),%dx` …, one
//! instruction each).
#![cfg(target_arch = "x86")]

use core::sync::atomic::{
    AtomicI8, AtomicI16, AtomicI32, AtomicU8, AtomicU16, AtomicU32, AtomicUsize,
};

use kmm_percpu::{SegmentOps, ThisCpuOps};

/// Every operation at every width, never called: building it assembles them.
#[inline(never)]
pub fn every_op(ops: &SegmentOps<'_>, p: usize) -> u32 {
    // SAFETY: never called.
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
fn segment_ops_build() {
    let f: fn(&SegmentOps<'_>, usize) -> u32 = every_op;
    std::hint::black_box(f);
}
