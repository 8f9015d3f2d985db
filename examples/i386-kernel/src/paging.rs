//! Building the kernel page tables with kmm-i386, turning paging on, and
//! proving a mapping in the vmalloc area.

use kmm_hal::{
    DirectMap, FrameSource, KernelLayout, MapError, PAGE_SIZE, PageFlags, PageSize, PageTable,
    PhysAddr, TableReclaim, VirtAddr,
};
use kmm_i386::{I386Layout, Mode, PAGE_OFFSET, Paging, arch};

use crate::frames::BootFrames;
use crate::serial::kprintln;

/// What [`build_tables`] mapped.
#[derive(Debug, Clone, Copy)]
pub struct TableStats {
    /// Large pages of the direct map at `PAGE_OFFSET`.
    pub direct_large: usize,
    /// Base pages of the direct map (a tail not aligned to a large page).
    pub direct_base: usize,
    /// End of the identity map at virtual address 0.
    pub identity_end: usize,
    /// Large pages of the identity map.
    pub identity_large: usize,
}

/// Panics with a message naming what failed.
pub fn check<T>(r: Result<T, MapError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Builds the kernel tables while paging is off, reaching them through the
/// identity map: the direct map of `lowmem` bytes at `PAGE_OFFSET` (global large
/// pages, base pages for an unaligned tail), then the identity map of everything
/// from 0 up to the kernel end and the boot frames used so far.
pub fn build_tables<M: Mode>(
    lowmem: usize,
    kernel_end: u64,
    frames: &mut BootFrames,
) -> (Paging<M>, TableStats) {
    let large = Paging::<M>::LARGE_PAGE_SIZE;
    let mut pt = check(
        // SAFETY: paging is off, so the identity map reaches all low memory,
        // and `frames` hands out free RAM below `lowmem` only to the tables.
        unsafe { Paging::<M>::new(DirectMap::identity(lowmem), true, frames) },
        "allocating the page directory",
    );
    // Paging is off: no TLB holds any entry, so every flush below is ignored.
    let aligned = lowmem & !(large - 1);
    for off in (0..aligned).step_by(large) {
        let va = VirtAddr::new(PAGE_OFFSET + off);
        let pa = PhysAddr::new(off as u64);
        check(pt.map_large(va, pa, PageFlags::KERNEL_GLOBAL), "direct map").ignore();
    }
    if lowmem > aligned {
        let va = VirtAddr::new(PAGE_OFFSET + aligned);
        let pa = PhysAddr::new(aligned as u64);
        check(
            pt.map_range(va, pa, lowmem - aligned, PageFlags::KERNEL_GLOBAL, frames),
            "direct map tail",
        )
        .ignore();
    }
    // The identity map covers the kernel image and stack, and every table page
    // allocated so far (this map needs none: large pages only).
    let identity_end = (kernel_end.max(frames.high_water()) as usize).next_multiple_of(large);
    assert!(
        identity_end <= lowmem,
        "kernel and boot frames end at {identity_end:#x}, beyond low memory {lowmem:#x}"
    );
    for off in (0..identity_end).step_by(large) {
        let a = PhysAddr::new(off as u64);
        check(
            pt.map_large(VirtAddr::new(off), a, PageFlags::KERNEL_RW),
            "identity map",
        )
        .ignore();
    }
    let stats = TableStats {
        direct_large: aligned / large,
        direct_base: (lowmem - aligned) / PAGE_SIZE,
        identity_end,
        identity_large: identity_end / large,
    };
    (pt, stats)
}

/// Turns paging on with `pt` (PSE and PGE on; PAE for PAE tables), then reaches
/// the tables through the kernel direct map of `layout`.
pub fn enable<M: Mode>(pt: &mut Paging<M>, pae: bool, layout: &I386Layout) {
    // SAFETY: ring 0 with paging off; `pt` identity-maps the kernel image, its
    // stack and data (build_tables), so the code keeps running at the same
    // addresses once CR0.PG is set.
    unsafe { arch::enable_paging(pt.root(), pae, true, true) };
    let (cr0, cr3, cr4) = (arch::read_cr0(), arch::read_cr3(), arch::read_cr4());
    assert!(
        cr0 & arch::CR0_PG != 0,
        "CR0.PG is clear after enable_paging"
    );
    assert_eq!(
        u64::from(cr3),
        pt.root().as_u64(),
        "CR3 is not the table root"
    );
    assert_eq!(
        cr4 & arch::CR4_PAE != 0,
        pae,
        "CR4.PAE does not match the mode"
    );
    kprintln!("kmm: paging enabled (cr0={cr0:#010x} cr3={cr3:#010x} cr4={cr4:#010x})");
    // SAFETY: every table page came from the boot frames, which lie below the
    // end of low memory, and the direct map just built maps all of low memory
    // writable at PAGE_OFFSET.
    unsafe { pt.set_direct_map(layout.direct_map()) };
}

/// Checks that the direct map shows the same bytes as the identity map: a word
/// on the stack, read through `PAGE_OFFSET + pa`.
pub fn check_direct_map<M: Mode>(pt: &Paging<M>, layout: &I386Layout) {
    let word: u32 = 0x4B4D_4D21;
    let pa = PhysAddr::new((&raw const word).addr() as u64);
    let Some(alias) = layout.direct_map().phys_to_virt(pa) else {
        panic!("the stack at {pa} is outside the direct map");
    };
    let t = pt.translate(alias).expect("direct-map address not mapped");
    assert_eq!(t.phys, pa, "direct map translates {alias} wrongly");
    assert_eq!(
        t.size,
        PageSize::Large,
        "direct map not made of large pages"
    );
    assert!(
        t.flags.contains(PageFlags::GLOBAL),
        "direct map is not global"
    );
    // SAFETY: `alias` maps the physical bytes of `word`, which lives until the
    // end of this function; the read is volatile so it really goes through the
    // alias.
    let seen = unsafe { alias.as_ptr::<u32>().read_volatile() };
    assert_eq!(
        seen, word,
        "direct map shows {seen:#x} at {alias}, want {word:#x}"
    );
    kprintln!("kmm: direct map ok ({pa} seen at {alias})");
}

/// The test pattern for word `i` of the page at `pa`.
fn pattern(pa: PhysAddr, i: usize) -> u32 {
    (i as u32).wrapping_mul(0x9E37_79B9) ^ (pa.as_u64() as u32) ^ 0xA5A5_0000
}

/// Maps a fresh frame as a 4 KiB page at `VMALLOC_START`, writes a pattern
/// through it, reads it back through the direct map, then unmaps it (freeing
/// the page table) and checks the translation is gone.
pub fn check_vmalloc_alias<M: Mode>(
    pt: &mut Paging<M>,
    layout: &I386Layout,
    frames: &mut BootFrames,
) {
    let frame = frames.alloc_frame().expect("no frame for the alias check");
    let va = layout.vmalloc_start();
    let tables_before = pt.table_pages();
    check(
        pt.map(va, frame, PageFlags::KERNEL_RW, frames),
        "map at VMALLOC_START",
    )
    .flush(pt);
    let t = pt.translate(va).expect("vmalloc page not mapped");
    assert_eq!(
        (t.frame, t.size),
        (frame, PageSize::Base),
        "vmalloc translation"
    );
    let words = PAGE_SIZE / 4;
    let p = va.as_mut_ptr::<u32>();
    for i in 0..words {
        // SAFETY: `va` maps the whole page of `frame`, which this function owns.
        unsafe { p.add(i).write_volatile(pattern(frame, i)) };
    }
    let alias = layout
        .direct_map()
        .phys_to_virt(frame)
        .expect("frame in lowmem");
    let q = alias.as_ptr::<u32>();
    for i in 0..words {
        // SAFETY: the direct map covers `frame`, a whole page.
        let got = unsafe { q.add(i).read_volatile() };
        assert_eq!(
            got,
            pattern(frame, i),
            "word {i} of {frame} differs through {alias}"
        );
    }
    kprintln!(
        "kmm: alias check ok ({va} -> {frame}: {PAGE_SIZE} bytes written through vmalloc, read back at {alias}; {} table page(s) added)",
        pt.table_pages() - tables_before
    );
    let (t, flush) = check(pt.unmap(va, TableReclaim::Free, frames), "unmap");
    flush.flush(pt);
    assert_eq!(t.frame, frame, "unmap returned the wrong frame");
    assert!(
        pt.translate(va).is_none(),
        "{va} still translates after unmap"
    );
    assert_eq!(
        pt.table_pages(),
        tables_before,
        "the empty page table was not freed"
    );
    frames.free_frame(frame);
    kprintln!(
        "kmm: unmap ok ({va} no longer translates; page table freed, {} table pages)",
        pt.table_pages()
    );
}

/// The end of the physical memory paging mode can map: 4 GiB with 2-level
/// tables; under PAE, 2^MAXPHYADDR — from CPUID leaf 0x80000008 where the CPU
/// has it, else 36 bits with PSE-36 and 32 without (QEMU's `qemu32` CPU has
/// PAE but 32 address bits: a PAE entry above 4 GiB faults there).
pub fn phys_limit(pae: bool) -> u64 {
    use core::arch::x86::__cpuid;
    if !pae {
        return 1 << 32;
    }
    let bits = if __cpuid(0x8000_0000).eax >= 0x8000_0008 {
        __cpuid(0x8000_0008).eax & 0xFF
    } else if __cpuid(1).edx & (1 << 17) != 0 {
        36
    } else {
        32
    };
    1 << bits.clamp(32, 52)
}
