//! Every bad call is a typed error and leaves the tables unchanged.

mod common;

use kmm_hal::{
    FrameSource, MapError, PageFlags, PageTable, PhysAddr, TableReclaim, Translation, VirtAddr,
};
use kmm_i386::{Pae, Paging, TwoLevel};
use kmm_mock::MockFrames;

const RW: PageFlags = PageFlags::KERNEL_RW;

/// Every mapping, and the frame count, to compare before and after a failed call.
fn snapshot<M: kmm_i386::Mode>(
    pt: &Paging<M>,
    f: &MockFrames,
) -> (Vec<(VirtAddr, Translation)>, usize, usize) {
    let mut v = Vec::new();
    pt.for_each_mapping(|va, t| v.push((va, t)));
    (v, pt.table_pages(), f.outstanding())
}

fn bad_calls<M: kmm_i386::Mode>() {
    let (_m, dm, mut f) = common::ram();
    // SAFETY: `dm` maps the test RAM, which outlives the tables.
    let mut pt = unsafe { Paging::<M>::new(dm, true, &mut f) }.unwrap();
    let va = VirtAddr::new(0xD000_0000);
    pt.map(va, PhysAddr::new(0x1000), RW, &mut f)
        .unwrap()
        .ignore();
    let large = Paging::<M>::LARGE_PAGE_SIZE;
    pt.map_large(VirtAddr::new(0xC000_0000), PhysAddr::ZERO, RW)
        .unwrap()
        .ignore();
    let before = snapshot(&pt, &f);

    let cases: Vec<(&str, Result<(), MapError>, MapError)> = vec![
        (
            "unaligned va",
            pt.map(
                VirtAddr::new(0xD000_1001),
                PhysAddr::new(0x2000),
                RW,
                &mut f,
            )
            .map(|x| x.ignore()),
            MapError::Misaligned,
        ),
        (
            "unaligned pa",
            pt.map(
                VirtAddr::new(0xD000_1000),
                PhysAddr::new(0x2001),
                RW,
                &mut f,
            )
            .map(|x| x.ignore()),
            MapError::Misaligned,
        ),
        (
            "map over present",
            pt.map(va, PhysAddr::new(0x3000), RW, &mut f)
                .map(|x| x.ignore()),
            MapError::AlreadyMapped,
        ),
        (
            "map inside a large page",
            pt.map(
                VirtAddr::new(0xC000_1000),
                PhysAddr::new(0x3000),
                RW,
                &mut f,
            )
            .map(|x| x.ignore()),
            MapError::AlreadyMapped,
        ),
        (
            "large over a page table",
            pt.map_large(VirtAddr::new(0xD000_0000), PhysAddr::ZERO, RW)
                .map(|x| x.ignore()),
            MapError::AlreadyMapped,
        ),
        (
            "large over large",
            pt.map_large(VirtAddr::new(0xC000_0000), PhysAddr::ZERO, RW)
                .map(|x| x.ignore()),
            MapError::AlreadyMapped,
        ),
        (
            "large misaligned",
            pt.map_large(VirtAddr::new(0xE000_1000), PhysAddr::ZERO, RW)
                .map(|x| x.ignore()),
            MapError::Misaligned,
        ),
        (
            "large pa misaligned",
            pt.map_large(VirtAddr::new(0xE000_0000), PhysAddr::new(0x1000), RW)
                .map(|x| x.ignore()),
            MapError::Misaligned,
        ),
        (
            "unmap not mapped",
            pt.unmap(VirtAddr::new(0xD000_1000), TableReclaim::Free, &mut f)
                .map(|x| x.1.ignore()),
            MapError::NotMapped,
        ),
        (
            "unmap unaligned",
            pt.unmap(VirtAddr::new(0xD000_0010), TableReclaim::Free, &mut f)
                .map(|x| x.1.ignore()),
            MapError::Misaligned,
        ),
        (
            "unmap inside large",
            pt.unmap(VirtAddr::new(0xC000_1000), TableReclaim::Free, &mut f)
                .map(|x| x.1.ignore()),
            MapError::InsideLargePage,
        ),
        (
            "protect not mapped",
            pt.protect(VirtAddr::new(0xD000_1000), RW)
                .map(|x| x.ignore()),
            MapError::NotMapped,
        ),
        (
            "protect inside large",
            pt.protect(VirtAddr::new(0xC000_1000), RW)
                .map(|x| x.ignore()),
            MapError::InsideLargePage,
        ),
        (
            "empty range",
            pt.map_range(VirtAddr::new(0xD100_0000), PhysAddr::ZERO, 0, RW, &mut f)
                .map(|x| x.ignore()),
            MapError::BadLength,
        ),
        (
            "ragged range",
            pt.map_range(VirtAddr::new(0xD100_0000), PhysAddr::ZERO, 100, RW, &mut f)
                .map(|x| x.ignore()),
            MapError::BadLength,
        ),
        (
            "range past 4 GiB",
            pt.map_range(
                VirtAddr::new(0xFFFF_F000),
                PhysAddr::ZERO,
                0x2000,
                RW,
                &mut f,
            )
            .map(|x| x.ignore()),
            MapError::VirtOutOfRange,
        ),
        (
            "range overlapping a mapping",
            pt.map_range(
                VirtAddr::new(0xCFFF_F000),
                PhysAddr::ZERO,
                0x3000,
                RW,
                &mut f,
            )
            .map(|x| x.ignore()),
            MapError::AlreadyMapped,
        ),
        (
            "pa past the mode's limit",
            pt.map(
                VirtAddr::new(0xD100_0000),
                PhysAddr::new(M::PHYS_LIMIT),
                RW,
                &mut f,
            )
            .map(|x| x.ignore()),
            MapError::PhysOutOfRange,
        ),
        (
            "range crossing the limit",
            pt.map_range(
                VirtAddr::new(0xD100_0000),
                PhysAddr::new(M::PHYS_LIMIT - 0x1000),
                0x2000,
                RW,
                &mut f,
            )
            .map(|x| x.ignore()),
            MapError::PhysOutOfRange,
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(got, Err(want), "{}: {what}", M::NAME);
        assert_eq!(
            snapshot(&pt, &f),
            before,
            "{}: {what} changed the tables",
            M::NAME
        );
    }
    // Above 4 GiB: only a 64-bit host can even name it.
    if let Ok(va) = usize::try_from(0x1_0000_0000u64) {
        let r = pt.map(VirtAddr::new(va), PhysAddr::ZERO, RW, &mut f);
        assert_eq!(r, Err(MapError::VirtOutOfRange));
        assert_eq!(pt.translate(VirtAddr::new(va)), None);
    }
    let _ = large;
    assert_eq!(snapshot(&pt, &f), before);
}

#[test]
fn bad_calls_two_level() {
    bad_calls::<kmm_i386::Classic>();
}

#[test]
fn bad_calls_pae() {
    bad_calls::<kmm_i386::PaeMode>();
}

#[test]
fn no_execute_needs_pae() {
    let (_m, dm, mut f) = common::ram();
    // SAFETY: `dm` maps the test RAM, which outlives the tables.
    let mut two = unsafe { TwoLevel::new(dm, true, &mut f) }.unwrap();
    let nx = RW | PageFlags::NO_EXECUTE;
    let va = VirtAddr::new(0xD000_0000);
    assert_eq!(
        two.map(va, PhysAddr::ZERO, nx, &mut f).map(|x| x.ignore()),
        Err(MapError::UnsupportedFlags)
    );
    assert_eq!(two.table_pages(), 1);
    // SAFETY: `dm` maps the test RAM, which outlives the tables.
    let mut pae = unsafe { Pae::new(dm, true, &mut f) }.unwrap();
    pae.map(va, PhysAddr::ZERO, nx, &mut f).unwrap().ignore();
    assert!(
        pae.translate(va)
            .unwrap()
            .flags
            .contains(PageFlags::NO_EXECUTE)
    );
}

#[test]
fn physical_above_4g_only_under_pae() {
    let (_m, dm, mut f) = common::ram();
    let va = VirtAddr::new(0xD000_0000);
    let high = PhysAddr::new(5 << 30);
    // SAFETY: `dm` maps the test RAM, which outlives the tables.
    let mut two = unsafe { TwoLevel::new(dm, true, &mut f) }.unwrap();
    assert_eq!(
        two.map(va, high, RW, &mut f).map(|x| x.ignore()),
        Err(MapError::PhysOutOfRange)
    );
    assert_eq!(two.translate(va), None);
    // SAFETY: `dm` maps the test RAM, which outlives the tables.
    let mut pae = unsafe { Pae::new(dm, true, &mut f) }.unwrap();
    pae.map(va, high, RW, &mut f).unwrap().ignore();
    assert_eq!(
        pae.translate(VirtAddr::new(0xD000_0123)).unwrap().phys,
        PhysAddr::new((5 << 30) + 0x123)
    );
    pae.map_large(VirtAddr::new(0xE000_0000), PhysAddr::new(40 << 30), RW)
        .unwrap()
        .ignore();
    assert_eq!(
        pae.translate(VirtAddr::new(0xE012_3456)).unwrap().phys,
        PhysAddr::new((40 << 30) + 0x12_3456)
    );
    assert_eq!(
        pae.map(
            VirtAddr::new(0xD000_1000),
            PhysAddr::new(64 << 30),
            RW,
            &mut f
        )
        .map(|x| x.ignore()),
        Err(MapError::PhysOutOfRange)
    );
}

fn exhaustion_midway<M: kmm_i386::Mode>() {
    let (_m, dm, mut f) = common::ram();
    // SAFETY: `dm` maps the test RAM, which outlives the tables.
    let mut pt = unsafe { Paging::<M>::new(dm, true, &mut f) }.unwrap();
    // The range touches 4 directory entries: the first has a table, 3 need one.
    let span = Paging::<M>::LARGE_PAGE_SIZE;
    pt.map(VirtAddr::new(0xD000_0000), PhysAddr::ZERO, RW, &mut f)
        .unwrap()
        .ignore();
    let before = snapshot(&pt, &f);
    let start = VirtAddr::new(0xD000_0000 + span - 0x1000);
    let len = span * 2 + 0x2000;
    f.fail_after(1);
    let r = pt.map_range(start, PhysAddr::new(0x10_0000), len, RW, &mut f);
    assert_eq!(r.map(|x| x.ignore()), Err(MapError::OutOfFrames));
    f.no_limit();
    assert_eq!(
        snapshot(&pt, &f),
        before,
        "{}: a failed range left traces",
        M::NAME
    );
    // With frames it goes through, all of it.
    pt.map_range(start, PhysAddr::new(0x10_0000), len, RW, &mut f)
        .unwrap()
        .ignore();
    assert_eq!(pt.table_pages(), before.1 + 3);
    let mut n = 0;
    pt.for_each_mapping(|_, _| n += 1);
    assert_eq!(n, 1 + len / 4096);
}

#[test]
fn exhaustion_midway_through_a_range_changes_nothing() {
    exhaustion_midway::<kmm_i386::Classic>();
    exhaustion_midway::<kmm_i386::PaeMode>();
}

/// A frame source that hands out a frame the tables cannot reach.
struct Rogue(PhysAddr);

// SAFETY: deliberately not: the frame is unaligned or outside the direct map,
// and the tables must refuse it before writing (this test checks that they
// check); nothing is ever written through it.
unsafe impl FrameSource for Rogue {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        Some(self.0)
    }
    fn free_frame(&mut self, frame: PhysAddr) {
        assert_eq!(frame, self.0, "only the rogue frame comes back");
    }
}

#[test]
fn unusable_frames_are_rejected() {
    let (_m, dm, mut f) = common::ram();
    // SAFETY: `dm` maps the test RAM, which outlives the tables.
    let mut pt = unsafe { TwoLevel::new(dm, true, &mut f) }.unwrap();
    for rogue in [
        PhysAddr::new(0x1234),
        PhysAddr::new(common::RAM as u64),
        PhysAddr::new(1 << 40),
    ] {
        let r = pt.map(
            VirtAddr::new(0xD000_0000),
            PhysAddr::ZERO,
            RW,
            &mut Rogue(rogue),
        );
        assert_eq!(r.map(|x| x.ignore()), Err(MapError::BadFrame));
        assert_eq!(pt.table_pages(), 1);
    }
    // SAFETY: `dm` maps the test RAM; the rogue frame is refused before any
    // write (what this checks).
    assert!(unsafe { TwoLevel::new(dm, true, &mut Rogue(PhysAddr::new(0x10))) }.is_err());
}

#[test]
fn large_pages_need_pse() {
    let (_m, dm, mut f) = common::ram();
    // SAFETY: `dm` maps the test RAM, which outlives the tables.
    let mut pt = unsafe { TwoLevel::new(dm, false, &mut f) }.unwrap();
    assert_eq!(pt.large_page_size(), None);
    assert_eq!(
        pt.map_large(VirtAddr::new(0xC000_0000), PhysAddr::ZERO, RW)
            .map(|x| x.ignore()),
        Err(MapError::LargePagesUnsupported)
    );
    // SAFETY: `dm` maps the test RAM, which outlives the tables.
    let pae = unsafe { Pae::new(dm, false, &mut f) }.unwrap();
    assert_eq!(
        pae.large_page_size(),
        Some(2 << 20),
        "PAE always has 2 MiB pages"
    );
}
