//! The machine the slab tests run on, built by the test kit.
#![allow(dead_code)]

use kmm_testkit::TestMachine;

/// `mib` MiB of RAM in one usable region, `cpus` CPUs, zero watermarks, the
/// kernel image reserved at 1–2 MiB, and the slab allocator on the buddy
/// allocator (built now, so page counts taken later include its bootstrap).
pub fn rig(mib: u64, cpus: usize) -> TestMachine {
    let host = TestMachine::builder()
        .ram_mib(mib)
        .cpus(cpus)
        .no_reserve()
        .build();
    host.slab();
    host
}
