//! Shared set-up for the i386 table tests: simulated RAM from kmm-mock in the
//! pure-software backing (so the tests also run under Miri) and a frame source.
#![allow(dead_code)]

use kmm_hal::{DirectMap, PhysAddr, VirtAddr};
use kmm_mock::{Backing, Machine, MockFrames};

/// RAM for the tests: small, so Miri can run them.
pub const RAM: usize = 4 << 20;

/// A software machine with `RAM` bytes, the direct map over all of it, and a
/// frame source over its upper half.
pub fn ram() -> (Machine, DirectMap, MockFrames) {
    let m = Machine::builder()
        .ram(RAM)
        .backing(Backing::Software)
        .build()
        .expect("machine");
    let base = m.phys_ptr(PhysAddr::ZERO, RAM).expect("RAM");
    let dm = DirectMap::new(VirtAddr::from_ptr(base), RAM).expect("direct map");
    let frames = MockFrames::new(PhysAddr::new((RAM / 2) as u64), PhysAddr::new(RAM as u64));
    (m, dm, frames)
}

/// Reads a raw 32-bit word of simulated RAM.
pub fn word(m: &Machine, pa: u64) -> u32 {
    let mut b = [0u8; 4];
    assert!(m.read_phys(PhysAddr::new(pa), &mut b));
    u32::from_le_bytes(b)
}
