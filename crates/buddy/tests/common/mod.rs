//! The machines the buddy tests run on, built by the test kit.
#![allow(dead_code)]

use kmm_buddy::BuddyConfig;
use kmm_testkit::{Backing, TestMachine};

/// `mib` MiB of software-backed RAM with a BIOS hole at 640 KiB–1 MiB and an
/// unaligned reserved (ACPI) range at 5 MiB, `cpus` CPUs, high memory from
/// `high_mib`, the kernel image reserved at 1–2 MiB; with `two_nodes`, node 1
/// from half the RAM up.
pub fn rig(
    mib: u64,
    high_mib: u64,
    cpus: usize,
    two_nodes: bool,
    config: BuddyConfig<'static>,
) -> TestMachine {
    TestMachine::builder()
        .ram_mib(mib)
        .highmem_mib(high_mib)
        .cpus(cpus)
        .bios_holes()
        .nodes(if two_nodes { 2 } else { 1 })
        .backing(Backing::Software)
        .buddy_config(config)
        .build()
}

/// Zero watermarks, so allocation succeeds exactly when a block exists.
pub fn no_reserve() -> BuddyConfig<'static> {
    BuddyConfig {
        min_free_kbytes: Some(0),
        ..BuddyConfig::default()
    }
}
