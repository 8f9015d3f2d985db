//! Linux's highmem mappings for kmm: persistent kernel mappings (`kmap`) and
//! per-CPU fixmap slots (`kmap_local_page`, `kmap_atomic`).
#![no_std]
#![warn(missing_docs)]
