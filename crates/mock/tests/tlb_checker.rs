//! The TLB checker fails code that leaves out a flush and passes code that has
//! it.

use kmm_hal::{KernelLayout, PAGE_SIZE, PageFlags, PageTable, PhysAddr, TableReclaim, VirtAddr};
use kmm_mock::{AccessError, Backing, Change, Machine, PagingMode};

fn machine(mode: PagingMode) -> Machine {
    Machine::builder()
        .ram(8 << 20)
        .paging(mode)
        .backing(Backing::default_for_host())
        .build()
        .unwrap()
}

/// Remaps a page to another frame, optionally leaving out the flush, and reads it.
fn remap(mode: PagingMode, flush: bool) -> Result<u8, AccessError> {
    let m = machine(mode);
    let mut frames = m.lowmem_frames(PhysAddr::new(4 << 20));
    let mut pt = m.kernel_page_table(&mut frames, true).unwrap();
    let va = m.layout().vmalloc_start();
    let (a, b) = (PhysAddr::new(0x1000), PhysAddr::new(0x2000));
    m.write_phys(a, &[0xAA]);
    m.write_phys(b, &[0xBB]);
    pt.map(va, a, PageFlags::KERNEL_RW, &mut frames)
        .unwrap()
        .ignore();
    let (_, f) = pt.unmap(va, TableReclaim::Keep, &mut frames).unwrap();
    if flush {
        f.flush(&pt);
    } else {
        f.ignore();
    }
    pt.map(va, b, PageFlags::KERNEL_RW, &mut frames)
        .unwrap()
        .ignore();
    let mut buf = [0];
    pt.read(va, &mut buf)?;
    Ok(buf[0])
}

#[test]
fn remap_without_flush_is_caught() {
    for mode in [PagingMode::TwoLevel, PagingMode::Pae] {
        match remap(mode, false) {
            Err(AccessError::StaleTlb(v)) => assert_eq!(v.change, Change::Unmap),
            other => panic!("{mode:?}: missing flush not caught: {other:?}"),
        }
        assert_eq!(remap(mode, true), Ok(0xBB), "{mode:?}");
    }
}

/// Makes a page read-only, optionally without the flush, then writes it.
fn write_after_protect(flush: bool) -> Result<(), AccessError> {
    let m = machine(PagingMode::TwoLevel);
    let mut frames = m.lowmem_frames(PhysAddr::new(4 << 20));
    let mut pt = m.kernel_page_table(&mut frames, true).unwrap();
    let va = m.layout().vmalloc_start();
    pt.map(va, PhysAddr::new(0x1000), PageFlags::KERNEL_RW, &mut frames)
        .unwrap()
        .ignore();
    pt.write(va, &[1])?;
    let f = pt.protect(va, PageFlags::PRESENT).unwrap();
    if flush {
        f.flush(&pt);
    } else {
        f.ignore();
    }
    pt.write(va, &[2])
}

#[test]
fn protect_without_flush_is_caught() {
    assert!(matches!(
        write_after_protect(false),
        Err(AccessError::StaleTlb(v)) if v.change == Change::Protect
    ));
    // With the flush the CPU sees the new rights: a clean write fault.
    assert!(matches!(
        write_after_protect(true),
        Err(AccessError::ReadOnly(_))
    ));
}

#[test]
fn flush_all_covers_a_batch() {
    let m = machine(PagingMode::Pae);
    let mut frames = m.lowmem_frames(PhysAddr::new(4 << 20));
    let mut pt = m.kernel_page_table(&mut frames, true).unwrap();
    let va = m.layout().vmalloc_start();
    let n = 40;
    pt.map_range(
        va,
        PhysAddr::new(0x10_0000),
        n * PAGE_SIZE,
        PageFlags::KERNEL_RW,
        &mut frames,
    )
    .unwrap()
    .ignore();
    for i in 0..n {
        let v = VirtAddr::new(va.as_usize() + i * PAGE_SIZE);
        pt.unmap(v, TableReclaim::Free, &mut frames)
            .unwrap()
            .1
            .ignore();
    }
    assert_eq!(m.tlb().pending(), n);
    assert!(
        m.tlb()
            .check(VirtAddr::new(va.as_usize() + 7 * PAGE_SIZE))
            .is_err()
    );
    pt.flush_all();
    assert_eq!(m.tlb().pending(), 0);
    assert!(m.tlb().check(va).is_ok());
    assert_eq!(m.tlb().violations().len(), 1);
}

#[test]
fn mapping_a_fresh_page_needs_no_flush() {
    let m = machine(PagingMode::TwoLevel);
    let mut frames = m.lowmem_frames(PhysAddr::new(4 << 20));
    let mut pt = m.kernel_page_table(&mut frames, true).unwrap();
    let va = m.layout().vmalloc_start();
    pt.map(va, PhysAddr::new(0x1000), PageFlags::KERNEL_RW, &mut frames)
        .unwrap()
        .ignore();
    pt.write(va, b"x").unwrap();
    assert!(m.tlb().violations().is_empty());
}
