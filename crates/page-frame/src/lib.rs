//! Physical memory for kmm: page descriptors, `mem_map`, bootmem, nodes and zones.
//!
//! - [`Page`]: Linux's `struct page` — flags ([`PgFlags`]), a reference count,
//!   the buddy order, back-pointers for SLAB or a highmem mapping, and an
//!   intrusive list link. At most 32 bytes on 32-bit targets, 64 on 64-bit.
//! - [`Region`]: one entry of the firmware memory map (edges need not be
//!   page-aligned; holes and reserved ranges are never handed out).
//! - [`Bootmem`]: the early allocator that places `mem_map` in low memory.
//! - [`MemMap`]: the descriptor array (flat, frame 0 up to the end of RAM), the
//!   [`Node`]s and their [`ZoneSpan`]s — DMA below 16 MiB, NORMAL up to the end
//!   of the direct map, HIGHMEM above (zone limits come from the
//!   [`kmm_hal::KernelLayout`], so a layout without highmem has no HIGHMEM zone) —
//!   and `pfn_to_page`, `page_to_pfn`, `page_address`, `virt_to_page`.
//!
//! # Safety and locking
//!
//! This crate takes no lock: a descriptor's words are atomics written with
//! plain loads and stores by whoever owns the page at the time, which the
//! allocators above arrange (the buddy's zone lock for free pages, the owning
//! CPU with interrupts off for per-CPU lists, the holder of an allocated
//! block for its pages).
//!
//! - **Reading is safe, writing is `unsafe`.** [`Page`]'s writers
//!   (`insert`, `remove`, `replace_flags`, `set_private`, `set_count`,
//!   `put_testzero`, `set_owner`, `set_index`) and
//!   [`MemMap::set_page_address`] are `unsafe fn`s under the *owner
//!   contract* (see [`Page`]): only the page's owner writes, no two threads at
//!   once, and only true values (other crates' unsafe code dereferences a
//!   SLAB page's back-pointers and writes through a highmem page's address).
//! - **The list link is private.** Lists of pages are built with
//!   [`PageAdapter::new`] (an owner's list; sets [`PgFlags::LINKED`] while a
//!   page is linked, which the buddy's free refuses) or
//!   [`FreeListAdapter::new`] (the page allocator's own lists); both are
//!   `unsafe` under the owner contract, so safe code can neither race two
//!   threads on a link nor put a page the allocator holds on its own list.
//! - **[`MemMap::new`]** is `unsafe`: the caller promises that the layout's
//!   direct map maps RAM for reading and writing, that bootmem's memory is
//!   used by nothing else, and that it stays mapped for the map's lifetime.
//!   A `Bootmem` is `Clone`; the allocator above must be handed the bootmem
//!   `mem_map` was placed with, in its latest state. The layout's values are
//!   not trusted: `MemMap::new` runs [`kmm_hal::check_layout`] first and
//!   refuses a layout that breaks the `KernelLayout` contract (overlapping
//!   or wrapping regions, high memory starting past the direct map, …) with
//!   [`MemMapError::Layout`], before it writes anything.
//!
//! # Example
//!
//! ```
//! use kmm_hal::{KernelLayout, PhysAddr};
//! use kmm_mock::{Backing, Machine};
//! use kmm_page_frame::{Bootmem, MemMap, PgFlags, Region, RegionKind, ZoneType};
//!
//! let m = Machine::builder().ram(32 << 20).backing(Backing::Software).build().unwrap();
//! let map = [
//!     Region::new(0, 0x9_fc00, RegionKind::Usable),
//!     Region::new(0x10_0000, (32 << 20) - 0x10_0000, RegionKind::Usable),
//! ];
//! let mut boot = Bootmem::new(&map, m.lowmem_end()).unwrap();
//! boot.reserve(PhysAddr::new(0x10_0000), 0x20_0000).unwrap(); // the kernel image
//! // SAFETY: the machine's direct map is its RAM, and it outlives `mem`.
//! let mut mem = unsafe { MemMap::new(&mut boot, m.layout()) }.unwrap();
//! let free = mem.release_free(&boot);
//!
//! let node = mem.node(0).unwrap();
//! assert_eq!(node.zone(ZoneType::Dma).present, 0x9f + 0xf00); // 16 MiB minus holes
//! assert!(node.zone(ZoneType::HighMem).is_empty());
//! let s = mem.stats();
//! assert_eq!(free + s.reserved_ram, s.present);
//! assert!(mem.pfn_to_page(kmm_hal::Pfn::new(0x100)).unwrap().test(PgFlags::RESERVED));
//! ```
#![no_std]

mod bootmem;
mod mem_map;
mod memory_map;
mod node;
mod page;
mod range_set;

pub use bootmem::{Bootmem, BootmemError, MAX_RESERVED};
pub use mem_map::{MemMap, MemMapError, MemStats, PfnError};
pub use memory_map::{Region, RegionKind};
pub use node::{MAX_NUMNODES, Node, ZoneSpan};
pub use page::{FreeListAdapter, Page, PageAdapter, PageLinkOps, PgFlags, ZoneType};
pub use range_set::PfnRange;
