//! Linux's vmalloc for kmm: virtually contiguous kernel memory from scattered
//! pages (`vmalloc`), mappings of pages the caller owns (`vmap`,
//! `vm_map_ram`), and device mappings (`ioremap`), in
//! `[VMALLOC_START, VMALLOC_END)` of the kernel layout.
//!
//! - **Areas** are found in O(log n) whatever the number of live ones: the
//!   free ranges sit in a red-black tree by address augmented with each
//!   subtree's largest free size ([`free_area`], over [`rbtree`]; Linux's
//!   `free_vmap_area_root` since 5.2), the live ones in a second tree by
//!   address. Each area is followed by an unmapped guard page. Descriptors,
//!   tree nodes and page arrays come from kmm-slab's `kmalloc`.
//! - **Pages** come from the buddy allocator one at a time, HIGHMEM first
//!   (`vmalloc_32` excepted), and are marked so that the page allocator
//!   refuses to free them (`FreeError::Vmalloc`); `kfree` of a vmalloc
//!   address is refused too.
//! - **The TLB**: mapping needs no flush (x86 caches present translations
//!   only); unmapping is immediate, but freed addresses wait on a purge list
//!   and are handed out again only after one kernel-wide flush for the whole
//!   batch ([`kmm_hal::KernelTlb`], Linux's lazy purge with
//!   `lazy_max_pages`).
//! - **Small mappings** (`vm_map_ram`, up to [`VMAP_MAX_ALLOC`] pages) come
//!   from per-CPU vmap blocks without the address-space lock.
//! - **Bad input**: every free and unmap checks its address in O(log n) and
//!   returns a [`VmallocError`] with nothing changed (docs/vmalloc.md has the
//!   table).
//!
//! # Locking
//! The address space has one IRQ-safe spin lock (Linux's `vmap_area_lock`),
//! the page tables their own ([`kmm_hal::KernelTables`]); neither is held
//! across the other or across a kernel-wide flush. Allocating and mapping
//! are for process context ([`VmallocError::InInterrupt`] otherwise);
//! `vfree` works in an interrupt handler too, leaving only the purge's
//! flush for the next process-context call.
//!
//! # Example
//!
//! On a mock machine with high memory from 16 MiB and kernel page tables:
//! a buffer from HIGHMEM pages, its bytes seen through each page's frame.
//!
//! ```
//! use kmm_hal::{PAGE_SIZE, VirtAddr};
//! use kmm_page_frame::ZoneType;
//! use kmm_testkit::TestMachine;
//! use kmm_vmalloc::{Vmalloc, VmallocError};
//!
//! let host = TestMachine::builder()
//!     .ram_mib(32)
//!     .highmem_mib(16)
//!     .kernel_tables_mib(1)
//!     .build();
//! let _cpu0 = host.bind(0);
//! // The mock machine flushes every simulated CPU's TLB (`KernelTlb`).
//! let vm = Vmalloc::new(host.slab(), host.kernel_tables(), host.machine(), host.machine().layout())
//!     .unwrap();
//!
//! let buf = vm.vmalloc(3 * PAGE_SIZE).unwrap();
//! let va = VirtAddr::from_ptr(buf.as_ptr());
//! // Accesses checked against the page tables and every CPU's TLB.
//! host.kernel_tables().lock(host.cpu()).pt.write(va, b"vmalloc").unwrap();
//! let page = vm.vmalloc_to_page(va).unwrap();
//! assert_eq!(page.zone_type(), ZoneType::HighMem);
//! let mut bytes = [0u8; 7];
//! host.machine().read_phys(host.buddy().mem().page_to_phys(page).unwrap(), &mut bytes);
//! assert_eq!(&bytes, b"vmalloc");
//!
//! // Bad frees are refused with nothing changed.
//! assert_eq!(vm.vfree(buf.as_ptr().wrapping_add(PAGE_SIZE)), Err(VmallocError::Interior));
//! vm.vfree(buf.as_ptr()).unwrap();
//! assert_eq!(vm.vfree(buf.as_ptr()), Err(VmallocError::NotLive));
//! ```
#![no_std]
#![warn(missing_docs)]

mod area;
mod error;
pub mod free_area;
mod info;
mod ioremap;
mod pages;
pub mod rbtree;
mod vmalloc;
mod vmap;
mod vmap_area;
mod vmap_block;

pub use area::{AreaKind, VmAreaInfo};
pub use error::VmallocError;
pub use ioremap::{ISA_END, ISA_START};
pub use pages::MAX_AREA_PAGES;
pub use vmalloc::{Vmalloc, VmallocStats};
pub use vmap_block::VMAP_MAX_ALLOC;
