//! kmm: the memory manager Linux built for i386, for hobby kernels.
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
pub use platform::Platform;
