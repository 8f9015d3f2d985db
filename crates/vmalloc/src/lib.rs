//! Linux's vmalloc for kmm: virtually contiguous kernel memory from scattered
//! pages, device mappings, and small per-CPU mappings.
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
