//! kmm: the memory manager Linux built for i386, for hobby kernels, in one
//! crate.
//!
//! [`MemoryManager::init`] brings the whole stack up from the boot memory
//! map — bootmem, the kernel page tables, `mem_map` and the zones, the buddy
//! allocator, per-CPU areas, the slab allocator and `kmalloc`, vmalloc,
//! pkmap and `alloc_percpu` — in Linux 2.6's order ([`init`] has the table),
//! and returns one value with every allocator on it, its methods named as in
//! Linux. [`GlobalHeap`] is the same behind a `const` static a kernel
//! installs as its `#[global_allocator]`.
//!
//! # A kernel in five lines
//!
//! With the `multiboot` and `hw` features, in an i386 multiboot kernel (see
//! `examples/minimal-kernel` and `docs/porting.md` for the whole path):
//!
//! ```ignore
//! #[global_allocator]
//! static HEAP: kmm::GlobalHeap<kmm::I386> = kmm::GlobalHeap::new();
//!
//! let info = unsafe { kmm::multiboot::MultibootInfo::new(ebx, 0) }.unwrap();
//! let map = info.memory_map::<32>().unwrap();
//! let reserved = info.reserved::<32>(kernel.clone()).unwrap();
//! let params = unsafe { kmm::BootParams::i386(map.regions(), kernel) }.reserved(reserved.ranges());
//! let mm = unsafe { HEAP.init(kmm::I386::new(), params) }.unwrap();
//! ```
//!
//! # The same on the host mock
//!
//! `kmm-testkit` builds mock machines through the same `init`:
//!
//! ```
//! use kmm::buddy::Gfp;
//! use kmm_testkit::TestMachine;
//!
//! let host = TestMachine::builder().ram_mib(64).highmem_mib(32).build_mm();
//! let _cpu = host.bind(0);
//! let mm = host.mm();
//! let page = mm.alloc_pages(Gfp::KERNEL, 2).unwrap();
//! let obj = mm.kmalloc(100, Gfp::KERNEL).unwrap();
//! let big = mm.vmalloc(1 << 20).unwrap();
//! assert!(mm.kfree(big.as_ptr()).is_err()); // a vmalloc address is not kmalloc's
//! mm.vfree(big.as_ptr()).unwrap();
//! mm.kfree(obj.as_ptr()).unwrap();
//! mm.free_pages(page, 2).unwrap();
//! let mut boot = String::new();
//! mm.mem_init_lines(&mut boot).unwrap();
//! assert!(boot.contains("32MB HIGHMEM available."));
//! ```
//!
//! # The family
//!
//! Each crate can be used alone; this one wires them together and
//! re-exports them. Arrows point at what is depended on:
//!
//! ```text
//! hal  <-  i386, mock
//! hal  <-  page-frame  <-  buddy  <-  slab
//!                   buddy, slab  <-  vmalloc  <-  percpu
//!          page-frame  <-  pkmap
//! all  <-  kmm (this crate)  <-  testkit  <-  tests, examples, benches, fuzz
//! ```
//!
//! | crate | re-exported as | holds |
//! |---|---|---|
//! | [`kmm_hal`] | [`hal`] | addresses, `PageFlags`, the `PageTable`/`Cpu`/`FrameSource`/`KernelLayout`/`KernelTlb`/`CrossCall` traits, IRQ-safe locks |
//! | [`kmm_i386`] | [`i386`] | 2-level and PAE tables, the i386 layout, CPUs, APIC, IPIs, TLB shootdown |
//! | [`kmm_page_frame`] | [`page_frame`] | `struct page`, bootmem, `mem_map`, nodes, zones |
//! | [`kmm_buddy`] | [`buddy`] | the zoned buddy allocator, `Gfp` |
//! | [`kmm_slab`] | [`slab`] | SLAB, `kmalloc`, mempools |
//! | [`kmm_vmalloc`] | [`vmalloc`] | `vmalloc`, `vmap`, `vm_map_ram`, `ioremap` |
//! | [`kmm_pkmap`] | [`pkmap`] | `kmap`, `kmap_local_page`, `kmap_atomic` |
//! | [`kmm_percpu`] | [`percpu`] | `define_per_cpu!`, `setup_per_cpu_areas`, `alloc_percpu` |
//!
//! # Features
//!
//! - `global-allocator` (default): [`GlobalHeap`].
//! - `multiboot`: the `multiboot` module, a multiboot (version 1) information
//!   structure as kmm's memory map and reserved ranges.
//! - `hw`: ring 0 on a real i386 (INVLPG and CR3 flushes); a kernel turns it
//!   on, host builds must not.
//! - `debug`, `hardened`: the slab allocator's checks (`slub_debug`-like red
//!   zones and poisoning; atomic claims on free).
#![no_std]

pub use kmm_buddy as buddy;
pub use kmm_hal as hal;
pub use kmm_i386 as i386;
pub use kmm_page_frame as page_frame;
pub use kmm_percpu as percpu;
pub use kmm_pkmap as pkmap;
pub use kmm_slab as slab;
pub use kmm_vmalloc as vmalloc;

mod api;
mod frames;
#[cfg(feature = "global-allocator")]
mod heap;
#[cfg(target_arch = "x86")]
mod i386_platform;
pub mod init;
mod mem_init;
mod mm;
#[cfg(feature = "multiboot")]
pub mod multiboot;
mod params;
mod platform;
mod proc;

pub use frames::PageTableFrames;
#[cfg(feature = "global-allocator")]
pub use heap::{GlobalHeap, KMALLOC_MAX_SIZE, Refused, ReportHook};
#[cfg(target_arch = "x86")]
pub use i386_platform::I386;
pub use mem_init::MemSummary;
pub use mm::{AreasOf, MemoryManager, PageAllocator, PercpuOf, PkmapOf, Slab, Tables, VmallocOf};
pub use params::{BootParams, InitError};

/// What a kernel file usually needs: `use kmm::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "global-allocator")]
    pub use crate::GlobalHeap;
    #[cfg(target_arch = "x86")]
    pub use crate::I386;
    pub use crate::buddy::Gfp;
    pub use crate::hal::{PAGE_SIZE, PhysAddr, VirtAddr};
    pub use crate::page_frame::Page;
    pub use crate::{BootParams, MemoryManager, Platform};
}

/// The allocator-api2 crate, at the version kmm's `Allocator` impls use.
pub use allocator_api2;
/// The errors of every part, in one place.
pub mod error {
    pub use crate::InitError;
    pub use crate::buddy::{BuddyError, BulkFreeError, FreeError};
    pub use crate::hal::MapError;
    #[cfg(feature = "global-allocator")]
    pub use crate::heap::Refused;
    pub use crate::page_frame::{BootmemError, MemMapError};
    pub use crate::percpu::PercpuError;
    pub use crate::pkmap::{
        InitError as PkmapInitError, KmapError, KmapLocalError, KunmapError, KunmapLocalError,
    };
    pub use crate::slab::SlabError;
    pub use crate::vmalloc::VmallocError;
}
pub use platform::Platform;
