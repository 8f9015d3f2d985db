//! The entries are real i386 entries: checked bit by bit in simulated RAM.

mod common;

use common::word;
use kmm_hal::{PageFlags, PageTable, PhysAddr, TableReclaim, VirtAddr};
use kmm_i386::{Pae, TwoLevel};

#[test]
fn two_level_entries() {
    let (m, dm, mut f) = common::ram();
    // SAFETY: `dm` maps the test RAM, which outlives the tables.
    let mut pt = unsafe { TwoLevel::new(dm, true, &mut f) }.unwrap();
    let root = pt.root().as_u64();
    // 0xC0400000: PDE 769 -> a 4 MiB page at 8 MiB, present, writable, global, PS.
    pt.map_large(
        VirtAddr::new(0xC040_0000),
        PhysAddr::new(8 << 20),
        PageFlags::KERNEL_GLOBAL,
    )
    .unwrap()
    .ignore();
    assert_eq!(
        word(&m, root + 769 * 4),
        0x0080_0000 | 0x1 | 0x2 | 0x80 | 0x100
    );
    // 0xD0001000: PDE 832, PTE 1 -> frame 0x1234000, present, read-only, uncached.
    let flags = PageFlags::PRESENT | PageFlags::NO_CACHE;
    pt.map(
        VirtAddr::new(0xD000_1000),
        PhysAddr::new(0x0123_4000),
        flags,
        &mut f,
    )
    .unwrap()
    .ignore();
    let pde = word(&m, root + 832 * 4);
    assert_eq!(pde & 0xFFF, 0x7, "table entry: present, writable, user");
    let table = u64::from(pde & 0xFFFF_F000);
    assert_eq!(word(&m, table + 4), 0x0123_4000 | 0x1 | 0x10);
    // Unmapping clears the entry and, with Free, the directory entry.
    pt.unmap(VirtAddr::new(0xD000_1000), TableReclaim::Free, &mut f)
        .unwrap()
        .1
        .ignore();
    assert_eq!(word(&m, table + 4), 0);
    assert_eq!(word(&m, root + 832 * 4), 0);
}

#[test]
fn pae_entries() {
    let (m, dm, mut f) = common::ram();
    // SAFETY: `dm` maps the test RAM, which outlives the tables.
    let mut pt = unsafe { Pae::new(dm, true, &mut f) }.unwrap();
    let root = pt.root().as_u64();
    // PDPT entries: present and an address, nothing in the reserved RW/US bits.
    for i in 0..4 {
        let low = word(&m, root + i * 8);
        assert_eq!(low & 0xFFF, 0x1, "PDPTE {i} has reserved bits set");
        assert_eq!(word(&m, root + i * 8 + 4), 0);
    }
    // 0xD0001000: PDPT 3, PDE 128, PTE 1 -> frame 5 GiB + 0x2000, NX.
    let flags = PageFlags::KERNEL_RW | PageFlags::NO_EXECUTE;
    pt.map(
        VirtAddr::new(0xD000_1000),
        PhysAddr::new((5 << 30) + 0x2000),
        flags,
        &mut f,
    )
    .unwrap()
    .ignore();
    let dir = u64::from(word(&m, root + 3 * 8) & 0xFFFF_F000);
    let table = u64::from(word(&m, dir + 128 * 8) & 0xFFFF_F000);
    assert_eq!(word(&m, table + 8), 0x4000_2000 | 0x3, "low half");
    assert_eq!(
        word(&m, table + 12),
        0x8000_0001,
        "high half: NX and bit 32"
    );
    // A 2 MiB page at PDE 0 of directory 3.
    pt.map_large(
        VirtAddr::new(0xC000_0000),
        PhysAddr::new(2 << 20),
        PageFlags::KERNEL_RW,
    )
    .unwrap()
    .ignore();
    assert_eq!(word(&m, dir), 0x0020_0000 | 0x83);
}
