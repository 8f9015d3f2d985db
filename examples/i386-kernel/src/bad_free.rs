//! Frees the buddy allocator must refuse, each with its [`FreeError`],
//! changing nothing.

use core::fmt;

use kmm_buddy::{FreeError, Freed, Gfp, MAX_ORDER};
use kmm_hal::{PAGE_SIZE, Pfn, VirtAddr};
use kmm_page_frame::{Page, ZoneType};

use crate::buddy_check::KernelBuddy;
use crate::serial::kprintln;

/// A page descriptor that is not in `mem_map`.
static FOREIGN: Page = Page::new(ZoneType::Normal, 0);

/// Checks that `got` is one of the refusals in `want` and prints it.
fn refused(what: fmt::Arguments<'_>, got: Result<Freed, FreeError>, want: &[FreeError]) {
    match got {
        Err(e) if want.contains(&e) => kprintln!("kmm: refused {what}: {e} ({e:?})"),
        other => panic!("{what}: got {other:?}, want one of {want:?}"),
    }
}

/// Tries every kind of bad free on real blocks and on reserved and foreign
/// pages, then frees the blocks properly. `kernel_pfn` is a frame of the
/// kernel image.
pub fn run(b: &KernelBuddy<'_>, kernel_pfn: Pfn) {
    let mem = b.mem();
    let page = |pfn: usize| mem.pfn_to_page(Pfn::new(pfn)).expect("pfn in mem_map");
    let pfn_of = |p: &Page| mem.page_to_pfn(p).expect("page in mem_map").as_usize();

    let one = b.alloc_pages(Gfp::KERNEL, 0).expect("an order-0 page");
    let p1 = pfn_of(one);
    assert_eq!(b.free_pages_page(one, 0), Ok(Freed::Released));
    refused(
        format_args!("double free (order-0 page at pfn {p1:#x}, now on the per-CPU list)"),
        b.free_pages_page(one, 0),
        &[FreeError::DoubleFree],
    );

    let four = b.alloc_pages(Gfp::KERNEL, 2).expect("an order-2 block");
    let p4 = pfn_of(four);
    refused(
        format_args!("wrong order (order-2 block at pfn {p4:#x} freed as order 1)"),
        b.free_pages_page(four, 1),
        &[FreeError::WrongOrder { allocated: 2 }],
    );
    refused(
        format_args!("interior page (pfn {:#x} of that block)", p4 + 1),
        b.free_pages_page(page(p4 + 1), 0),
        &[FreeError::NotAllocated],
    );
    refused(
        format_args!("misaligned block (pfn {:#x} as order 2)", p4 + 2),
        b.free_pages_page(page(p4 + 2), 2),
        &[FreeError::Misaligned],
    );
    refused(
        format_args!("order {MAX_ORDER} (MAX_ORDER)"),
        b.free_pages_page(four, MAX_ORDER),
        &[FreeError::OrderTooLarge],
    );
    let va = mem.page_address(four).expect("a low-memory block");
    refused(
        format_args!("unaligned address ({va} + 8)"),
        b.free_pages(VirtAddr::new(va.as_usize() + 8), 2),
        &[FreeError::Misaligned],
    );
    refused(
        format_args!(
            "reserved page (kernel image, pfn {:#x})",
            kernel_pfn.as_usize()
        ),
        b.free_pages_page(page(kernel_pfn.as_usize()), 0),
        &[FreeError::Reserved],
    );
    let mem_map = mem
        .virt_to_page(VirtAddr::from_ptr(mem.pages().as_ptr()))
        .expect("mem_map is in the direct map");
    refused(
        format_args!("reserved page (mem_map itself, pfn {:#x})", pfn_of(mem_map)),
        b.free_pages_page(mem_map, 0),
        &[FreeError::Reserved],
    );
    refused(
        format_args!("foreign descriptor (a Page outside mem_map)"),
        b.free_pages_page(&FOREIGN, 0),
        &[FreeError::Foreign],
    );
    refused(
        format_args!("address outside the direct map ({:#x})", PAGE_SIZE),
        b.free_pages(VirtAddr::new(PAGE_SIZE), 0),
        &[FreeError::Foreign],
    );
    assert_eq!(b.free_pages_page(four, 2), Ok(Freed::Released));
    // Freed and perhaps merged with its buddy: free, or no longer a head.
    refused(
        format_args!("double free (order-2 block at pfn {p4:#x})"),
        b.free_pages_page(four, 2),
        &[FreeError::DoubleFree, FreeError::NotAllocated],
    );
}
