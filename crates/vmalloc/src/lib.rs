//! Linux's vmalloc for kmm: virtually contiguous kernel memory from scattered
//! pages, device mappings, and small per-CPU mappings.
#![no_std]
#![warn(missing_docs)]

pub mod free_area;
pub mod rbtree;
