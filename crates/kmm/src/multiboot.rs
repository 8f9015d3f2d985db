//! Multiboot (version 1).
