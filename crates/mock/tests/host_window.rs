//! The mmap backing: kernel addresses are real host addresses, aliases share
//! bytes, RAM is sparse, highmem and PAE frames above 4 GiB work.
#![cfg(not(miri))]

use kmm_hal::{
    KernelLayout, MapError, PAGE_SIZE, PageFlags, PageTable, PhysAddr, TableReclaim, VirtAddr,
};
use kmm_mock::{Backing, Machine, PagingMode};

fn mmap_machine(ram: usize, mode: PagingMode) -> Machine {
    Machine::builder()
        .ram(ram)
        .paging(mode)
        .backing(Backing::Mmap)
        .build()
        .unwrap()
}

#[test]
fn aliases_share_bytes_through_raw_pointers() {
    let m = mmap_machine(16 << 20, PagingMode::TwoLevel);
    let mut frames = m.lowmem_frames(PhysAddr::new(8 << 20));
    let mut pt = m.kernel_page_table(&mut frames, true).unwrap();
    let frame = PhysAddr::new(0x3000);
    let a = m.layout().vmalloc_start();
    let b = VirtAddr::new(a.as_usize() + 16 * PAGE_SIZE);
    pt.map(a, frame, PageFlags::KERNEL_RW, &mut frames)
        .unwrap()
        .ignore();
    pt.map(b, frame, PageFlags::KERNEL_RW, &mut frames)
        .unwrap()
        .ignore();
    let direct = m.layout().direct_map().phys_to_virt(frame).unwrap();
    // SAFETY: all three addresses are mapped to the same RAM frame in the window.
    unsafe {
        a.as_mut_ptr::<u64>().write_volatile(0x1122_3344_5566_7788);
        assert_eq!(b.as_ptr::<u64>().read_volatile(), 0x1122_3344_5566_7788);
        assert_eq!(
            direct.as_ptr::<u64>().read_volatile(),
            0x1122_3344_5566_7788
        );
    }
    assert_eq!(
        pt.verify_mirror().unwrap(),
        2 + 4,
        "two pages and four 4 MiB pages"
    );
}

// A machine this large needs a 64-bit host (the mock sizes RAM in usize and
// its memfd in off_t).
#[cfg(target_pointer_width = "64")]
#[test]
fn highmem_frames_are_reachable_once_mapped() {
    // 2 GiB: 896 MiB of lowmem, the rest highmem. Sparse: costs what is touched.
    let m = mmap_machine(2 << 30, PagingMode::TwoLevel);
    assert_eq!(m.lowmem_end(), PhysAddr::new(896 << 20));
    let mut frames = m.lowmem_frames(PhysAddr::new(16 << 20));
    let mut pt = m.kernel_page_table(&mut frames, true).unwrap();
    let high = PhysAddr::new(1536 << 20);
    assert_eq!(m.layout().direct_map().phys_to_virt(high), None);
    let pkmap = m.layout().pkmap_base();
    pt.map(pkmap, high, PageFlags::KERNEL_RW, &mut frames)
        .unwrap()
        .ignore();
    pt.write(pkmap, b"highmem").unwrap();
    let mut buf = [0u8; 7];
    assert!(m.read_phys(high, &mut buf));
    assert_eq!(&buf, b"highmem");
    // SAFETY: pkmap is mapped in the window.
    assert_eq!(unsafe { pkmap.as_ptr::<u8>().read_volatile() }, b'h');
    pt.verify_mirror().unwrap();
}

// A machine this large needs a 64-bit host (the mock sizes RAM in usize and
// its memfd in off_t).
#[cfg(target_pointer_width = "64")]
#[test]
fn pae_reaches_frames_above_4g() {
    let m = mmap_machine(6 << 30, PagingMode::Pae);
    let mut frames = m.lowmem_frames(PhysAddr::new(16 << 20));
    let mut pt = m.kernel_page_table(&mut frames, true).unwrap();
    let above = PhysAddr::new((5 << 30) + 0x7000);
    let va = m.layout().vmalloc_start();
    pt.map(va, above, PageFlags::KERNEL_RW, &mut frames)
        .unwrap()
        .ignore();
    // SAFETY: va is mapped in the window to RAM above 4 GiB.
    unsafe { va.as_mut_ptr::<u32>().write_volatile(0xCAFE_F00D) };
    let mut buf = [0u8; 4];
    assert!(m.read_phys(above, &mut buf));
    assert_eq!(u32::from_le_bytes(buf), 0xCAFE_F00D);
}

// A machine this large needs a 64-bit host (the mock sizes RAM in usize and
// its memfd in off_t).
#[cfg(target_pointer_width = "64")]
#[test]
fn a_4g_machine_costs_only_what_is_touched() {
    let m = mmap_machine(4 << 30, PagingMode::TwoLevel);
    assert_eq!(m.ram_size(), 4 << 30);
    assert!(m.write_phys(PhysAddr::new((4 << 30) - 8), &[1; 8]));
    assert!(
        !m.write_phys(PhysAddr::new((4 << 30) - 4), &[1; 8]),
        "past the end of RAM"
    );
}

#[test]
fn unmapped_and_read_only_pages_are_mirrored() {
    let m = mmap_machine(8 << 20, PagingMode::Pae);
    let mut frames = m.lowmem_frames(PhysAddr::new(4 << 20));
    let mut pt = m.kernel_page_table(&mut frames, true).unwrap();
    let va = m.layout().vmalloc_start();
    pt.map(va, PhysAddr::new(0x1000), PageFlags::KERNEL_RW, &mut frames)
        .unwrap()
        .ignore();
    pt.protect(va, PageFlags::PRESENT).unwrap().flush(&pt);
    pt.verify_mirror().unwrap();
    pt.unmap(va, TableReclaim::Free, &mut frames)
        .unwrap()
        .1
        .flush(&pt);
    pt.verify_mirror().unwrap();
    assert_eq!(pt.translate(va), None);
}

#[test]
fn only_one_kernel_page_table_at_a_time() {
    let m = mmap_machine(8 << 20, PagingMode::TwoLevel);
    let mut frames = m.lowmem_frames(PhysAddr::new(4 << 20));
    let pt = m.kernel_page_table(&mut frames, true).unwrap();
    assert_eq!(
        m.kernel_page_table(&mut frames, false).err(),
        Some(MapError::AlreadyMapped)
    );
    pt.destroy(&mut frames);
    assert_eq!(frames.outstanding(), 0);
    let pt = m.kernel_page_table(&mut frames, false).unwrap();
    assert_eq!(pt.verify_mirror().unwrap(), 0);
}

#[test]
fn table_frame_exhaustion_returns_every_frame() {
    // PAE needs its PDPT and 4 directories up front and no more for a 2 MiB
    // aligned direct map; 2-level needs its directory, then a page table for the
    // 2 MiB tail of a 6 MiB direct map (4 MiB pages).
    for (mode, needed) in [(PagingMode::TwoLevel, 2), (PagingMode::Pae, 5)] {
        let m = mmap_machine(6 << 20, mode);
        let mut frames = m.lowmem_frames(PhysAddr::new(4 << 20));
        for budget in 0..needed {
            frames.fail_after(budget);
            assert_eq!(
                m.kernel_page_table(&mut frames, true).err(),
                Some(MapError::OutOfFrames)
            );
            assert_eq!(
                frames.outstanding(),
                0,
                "{mode:?}: frames leaked at budget {budget}"
            );
        }
        frames.no_limit();
        let pt = m.kernel_page_table(&mut frames, true).unwrap();
        assert_eq!(pt.table_pages(), needed);
        assert_eq!(frames.outstanding(), needed);
    }
}
