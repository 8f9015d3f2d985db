//! Linux's zoned buddy page allocator for kmm.
//!
//! - Per zone, `free_area[MAX_ORDER]` lists threaded through the page descriptors;
//!   a block is split on allocation and merged on free with its buddy at
//!   `pfn ^ (1 << order)` — an O(1) check through the buddy's descriptor.
//! - [`Gfp`] flags and zonelists: HIGHMEM → NORMAL → DMA, the local node first.
//! - Watermarks min/low/high from `min_free_kbytes`, lowmem reserves; only
//!   atomic and high-priority requests go below `min`; crossing `low` calls a
//!   hook.
//! - Per-CPU order-0 lists (hot and cold ends, `high` and `batch`), drained on
//!   demand and when an allocation fails: with a cross-CPU call
//!   ([`BuddyConfig::cross_call`], required on more than one CPU) a waiting
//!   allocation has every CPU drain its own lists at once (Linux's IPI), an
//!   atomic one asks them to drain at their next allocator call.
//! - Per-zone IRQ-safe spin locks ([`IrqSpinLock`]): an atomic allocation
//!   may come from an interrupt handler.
//! - `/proc/buddyinfo` and `/proc/zoneinfo` text.
//! - Bulk order-0 paths ([`Buddy::alloc_pages_bulk`], [`Buddy::release_pages`]):
//!   many pages per holding of the per-CPU list, the list refilled and
//!   spilled in batches under one zone-lock acquisition each.
//! - Every free checks its argument in O(1) and refuses bad input with a
//!   [`FreeError`], changing nothing; a bulk free refuses its first bad page
//!   with a [`BulkFreeError`] naming its index, the pages before it freed (see
//!   docs/physical-memory.md, "Bad input", for the whole table).
//!
//! [`Cpu`]: kmm_hal::Cpu
//! [`IrqSpinLock`]: kmm_hal::sync::IrqSpinLock
//!
//! # Safety and locking
//!
//! - **Zone lock** (one [`IrqSpinLock`] per zone, named `"zone lock"`): protects
//!   the zone's free lists, the `free` and `nr_free` counters and the BUDDY
//!   flag and order of the pages on the lists. Its type only lets it be taken
//!   with interrupts off — under the caller's `IrqGuard` or with
//!   `lock_irqsave` — so an interrupt handler that allocates never spins on a
//!   lock its CPU holds, and the lock checker (debug builds, the mock) never
//!   reports it. Inside the crate the lock's guard (`LockedZone`, around the
//!   `SpinGuard`) is the only way to the lists and to the counters' writers,
//!   so nothing changes them unlocked or under another zone's lock. Readers of
//!   the counters ([`Zone::free_pages`], [`Zone::nr_free`],
//!   [`Zone::watermark_ok`]) take no lock and may see a value a moment old. One
//!   zone lock at a time. There is no other lock.
//! - **Per-CPU lists**: one [`kmm_hal::CpuLocal`] per zone, one 64-byte
//!   aligned `PerCpu` slot per CPU, placed with bootmem by [`Buddy::new`]. A
//!   slot's list is touched only through `CpuLocal::with` under an
//!   `IrqGuard` of the allocator's own `Cpu` (the contract of
//!   `CpuLocal::new`), so only the owning CPU, with interrupts off, holds it;
//!   its shared part ([`PerCpuPages`]: the count, the drain request, the
//!   limits) is atomics anyone may read, and another CPU only sets the drain
//!   request. If the list is already held on this CPU — code re-entered the
//!   allocator from inside its per-CPU path — `with` refuses it and the
//!   allocation or free takes the zone path instead (no panic, no aliasing);
//!   drains leave such a list to its holder. The order is per-CPU list, then
//!   zone lock. [`Buddy::drain_offline_cpu`] is `unsafe`: the caller promises
//!   that CPU is not running in the allocator (`CpuLocal::with_offline`).
//! - **Interrupts.** Interrupt handlers may allocate and free (with
//!   [`Gfp::ATOMIC`]). Interrupts are off wherever a zone lock or a per-CPU
//!   list is held; the slow paths ([`Buddy::alloc_pages_node`],
//!   [`Buddy::drain_all_pages`], the spill of a per-CPU list) call
//!   `Cpu::interrupt_point` on entry, with no lock held, so the mock can
//!   deliver interrupts there.
//! - **The `Cpu` contract**, which every per-CPU access relies on: `id()` is
//!   unique among running CPUs, below `count()`, stable while interrupts or
//!   preemption are off, and `irq_guard` really disables interrupts.
//! - **Pages**: the allocator writes a descriptor only while it owns the page
//!   (the owner contract of [`kmm_page_frame::Page`]); its lists are built
//!   with `FreeListAdapter` and hold only pages flagged BUDDY or PCP. A page
//!   an owner keeps on a `PageAdapter` list is flagged LINKED, and every free
//!   refuses it ([`FreeError::Linked`]) in the same mask test as the other
//!   flags.
//! - **Hooks** ([`BuddyConfig::on_low`], [`BuddyConfig::zero_highmem`]) run
//!   with no zone lock held and no per-CPU list borrowed, on the allocating
//!   CPU, in the allocation's context (an interrupt handler's, for an atomic
//!   allocation there): a hook may allocate from and free to the allocator.
//!   Their contracts are on the fields.
//! - **[`Buddy::new`]** is `unsafe`: the caller promises the direct map maps
//!   the memory bootmem hands out, used by nothing else, for the allocator's
//!   lifetime; that `boot` is the bootmem `mem` was built with, in its latest
//!   state; and that the `Cpu` keeps its contract.
//!
//! See docs/physical-memory.md, "Safety and locking", for both crates at once.
//!
//! # Example
//!
//! ```
//! use kmm_buddy::{FreeError, Gfp};
//! use kmm_testkit::TestMachine;
//!
//! // A mock machine with mem_map and the buddy allocator on it (the test kit
//! // does what a kernel does at boot: `Bootmem`, `MemMap::new`, `Buddy::new`;
//! // see docs/porting.md).
//! let host = TestMachine::builder().ram_mib(32).build();
//! let _cpu0 = host.bind(0);
//! let buddy = host.buddy();
//!
//! let page = buddy.alloc_pages(Gfp::KERNEL, 3).unwrap(); // 8 frames
//! let dma = buddy.get_dma_pages(Gfp::KERNEL, 0).unwrap();
//! buddy.free_pages_page(page, 3).unwrap();
//! assert_eq!(buddy.free_pages_page(page, 3), Err(FreeError::DoubleFree));
//! buddy.free_pages(dma, 0).unwrap();
//!
//! // Many order-0 pages in one call, and back in one call.
//! let mut pages = [None; 16];
//! assert_eq!(buddy.alloc_pages_bulk(Gfp::KERNEL, &mut pages), 16);
//! assert_eq!(buddy.release_pages(&mut pages), Ok(16));
//! assert!(pages.iter().all(Option::is_none));
//!
//! let mut info = String::new();
//! buddy.buddyinfo(&mut info).unwrap();
//! assert!(info.starts_with("Node 0, zone      DMA"));
//! ```
#![no_std]

mod alloc;
mod blocks;
mod buddy;
mod bulk;
mod drain;
mod error;
mod exact;
mod free;
mod gfp;
mod pcp;
mod stats;
mod watermark;
mod zone;

/// Orders run from 0 to `MAX_ORDER - 1` (blocks of 1 to 1024 frames).
pub const MAX_ORDER: usize = 11;

pub use blocks::aligned_blocks;
pub use buddy::{Buddy, BuddyConfig, Freed, MAX_CPUS};
pub use drain::DrainAll;
pub use error::{BuddyError, BulkFreeError, FreeError};
pub use gfp::Gfp;
pub use pcp::{PerCpuLists, PerCpuPages};
pub use watermark::{Watermark, WatermarkCheck, default_min_free_kbytes};
pub use zone::Zone;
