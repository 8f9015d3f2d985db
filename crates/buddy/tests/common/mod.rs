//! The machines the buddy tests run on, built by the test kit.
#![allow(dead_code)]

use kmm_buddy::{Buddy, BuddyConfig};
use kmm_mock::MockCpu;
use kmm_page_frame::{Page, ZoneType};
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

/// A tag in every 64th word of a low-memory block (high memory is not in the
/// direct map: left alone).
pub fn fill(b: &Buddy<'_, MockCpu>, p: &Page, order: usize, tag: u64) {
    if p.zone_type() == ZoneType::HighMem {
        return;
    }
    let va = b.mem().page_address(p).unwrap();
    // SAFETY: the block is the caller's, in the direct map, 4096 << order
    // bytes.
    let words = unsafe { std::slice::from_raw_parts_mut(va.as_mut_ptr::<u64>(), 512 << order) };
    words.iter_mut().step_by(64).for_each(|w| *w = tag);
}

/// The tag [`fill`] wrote is intact: nobody else was handed an overlapping
/// block meanwhile.
pub fn check(b: &Buddy<'_, MockCpu>, p: &Page, order: usize, tag: u64) {
    if p.zone_type() == ZoneType::HighMem {
        return;
    }
    let va = b.mem().page_address(p).unwrap();
    // SAFETY: as in `fill`.
    let words = unsafe { std::slice::from_raw_parts(va.as_ptr::<u64>(), 512 << order) };
    assert!(
        words.iter().step_by(64).all(|&w| w == tag),
        "block overwritten: handed out twice (an overlap)"
    );
}
