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

#[cfg(feature = "multiboot")]
pub mod multiboot;
