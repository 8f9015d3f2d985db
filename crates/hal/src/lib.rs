//! The hardware abstraction layer of kmm.
//!
//! A handful of small pieces that every kmm allocator is written against:
//!
//! - [`PhysAddr`], [`VirtAddr`] and [`Pfn`]: address newtypes whose conversions
//!   never truncate silently;
//! - [`PageFlags`]: the attributes of a mapping;
//! - [`PageTable`] and [`FrameSource`]: map, unmap, protect and translate pages,
//!   each change returning a [`Flush`] that must be consumed;
//! - [`Cpu`]: which CPU runs, and IRQ and preemption guards;
//! - [`KernelLayout`]: the direct map, vmalloc area, pkmap window and fixmap.
//!
//! `kmm-i386` implements the traits for 32-bit x86 (2-level and PAE paging);
//! `kmm-mock` implements them for a simulated machine on the host.
//!
//! # Example
//!
//! ```
//! use kmm_hal::{DirectMap, PageFlags, PhysAddr, VirtAddr, PAGE_SIZE};
//!
//! let dm = DirectMap::new(VirtAddr::new(0xC000_0000), 896 << 20).unwrap();
//! let frame = PhysAddr::new_aligned(0x0010_0000, PAGE_SIZE as u64).unwrap();
//! assert_eq!(dm.phys_to_virt(frame), Some(VirtAddr::new(0xC010_0000)));
//! // Above the direct map there is no linear address: highmem.
//! assert_eq!(dm.phys_to_virt(PhysAddr::new(0x4000_0000)), None);
//! assert!(PageFlags::KERNEL_GLOBAL.contains(PageFlags::GLOBAL));
//! ```
#![no_std]

mod addr;
mod cpu;
mod flags;
mod layout;
mod paging;

pub use addr::{AddrError, MAX_PHYS_BITS, PAGE_SHIFT, PAGE_SIZE, Pfn, PhysAddr, VirtAddr};
pub use cpu::{Cpu, IrqGuard, IrqState, PreemptGuard};
pub use flags::PageFlags;
pub use layout::{DirectMap, Fixmap, KernelLayout};
pub use paging::{Flush, FrameSource, MapError, PageSize, PageTable, TableReclaim, Translation};
