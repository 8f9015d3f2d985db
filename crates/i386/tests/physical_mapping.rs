//! `kernel_physical_mapping_init`: large pages for the aligned part, base
//! pages for the tail, every frame at `base + pa`.

mod common;

use kmm_hal::{PAGE_SIZE, PageFlags, PageSize, PageTable, VirtAddr};
use kmm_i386::{Mode, Paging};

fn maps_with_a_tail<M: Mode>() {
    let (_m, dm, mut f) = common::ram();
    // SAFETY: `dm` maps the test RAM, which outlives the tables.
    let mut pt = unsafe { Paging::<M>::new(dm, true, &mut f) }.unwrap();
    let large = Paging::<M>::LARGE_PAGE_SIZE;
    let size = 3 * large + 5 * PAGE_SIZE;
    let base = VirtAddr::new(0xC000_0000);
    let (l, b) = pt
        .kernel_physical_mapping_init(base, size, PageFlags::KERNEL_GLOBAL, &mut f)
        .unwrap();
    assert_eq!((l, b), (3, 5));
    for pa in (0..size).step_by(PAGE_SIZE) {
        let t = pt.translate(VirtAddr::new(base.as_usize() + pa)).unwrap();
        assert_eq!(t.phys.as_u64(), pa as u64, "{pa:#x}");
        let want = if pa < 3 * large {
            PageSize::Large
        } else {
            PageSize::Base
        };
        assert_eq!(t.size, want, "{pa:#x}");
        assert!(t.flags.contains(PageFlags::GLOBAL));
    }
    assert!(
        pt.translate(VirtAddr::new(base.as_usize() + size))
            .is_none()
    );
}

#[test]
fn two_level() {
    maps_with_a_tail::<kmm_i386::Classic>();
}

#[test]
fn pae() {
    maps_with_a_tail::<kmm_i386::PaeMode>();
}
