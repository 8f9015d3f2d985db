//! Linux's highmem mappings for kmm: persistent kernel mappings (`kmap`) and
//! per-CPU fixmap slots (`kmap_local_page`, `kmap_atomic`), after
//! `mm/highmem.c`.
//!
//! # Example
//!
//! A mock machine with high memory from 16 MiB, a high-memory page mapped
//! persistently and locally, its bytes seen through its frame:
//!
//! ```
//! use kmm_buddy::Gfp;
//! use kmm_pkmap::{Pkmap, SpinWait};
//! use kmm_testkit::TestMachine;
//!
//! let host = TestMachine::builder()
//!     .ram_mib(24)
//!     .highmem_mib(16)
//!     .kernel_tables_mib(1)
//!     .build();
//! let _cpu0 = host.bind(0);
//! // The mock machine flushes every simulated CPU's TLB (`KernelTlb`).
//! let tlb = host.machine();
//! let mem = host.buddy().mem();
//! // SAFETY: the only pkmap over this machine's mem_map and page tables.
//! let pkmap = unsafe {
//!     Pkmap::new(mem, host.kernel_tables(), tlb, host.cpu(), host.machine().layout(), SpinWait)
//! }
//! .unwrap();
//!
//! let page = host.buddy().alloc_pages(Gfp::HIGHMEM, 0).unwrap();
//! let pa = mem.page_to_phys(page).unwrap();
//! let va = pkmap.kmap(page).unwrap();
//! assert_eq!(pkmap.page_address(page), Some(va));
//! host.kernel_tables().lock(host.cpu()).pt.write(va, b"high").unwrap();
//! let mut buf = [0; 4];
//! host.machine().read_phys(pa, &mut buf);
//! assert_eq!(&buf, b"high");
//! pkmap.kunmap(page).unwrap();
//! assert_eq!(pkmap.kunmap(page), Err(kmm_pkmap::KunmapError::Unbalanced));
//!
//! {
//!     let local = pkmap.kmap_local_guard(page).unwrap();
//!     host.kernel_tables().lock(host.cpu()).pt.read(local.addr(), &mut buf).unwrap();
//!     assert_eq!(&buf, b"high");
//! } // unmapped here
//! assert_eq!(pkmap.local_depth(), 0);
//! pkmap.check().unwrap();
//! host.buddy().free_pages_page(page, 0).unwrap();
//! ```
//!
//! # What is here
//!
//! - [`Pkmap`]: one kernel's highmem mappings. Persistent kmaps:
//!   [`Pkmap::kmap`], [`Pkmap::try_kmap`], [`Pkmap::kunmap`],
//!   [`Pkmap::kmap_high`], [`Pkmap::kunmap_high`], [`Pkmap::page_address`];
//!   local ones: [`Pkmap::kmap_local_page`], [`Pkmap::kunmap_local`],
//!   [`Pkmap::kmap_atomic`], [`Pkmap::kunmap_atomic`] and the guards
//!   [`Pkmap::kmap_local_guard`], [`Pkmap::kmap_atomic_guard`]
//!   ([`KmapLocalGuard`]); [`Pkmap::check`] and [`Pkmap::stats`] for tests.
//! - [`KmapWait`]: how `kmap` waits for a free entry; [`SpinWait`] spins.
//! - One error enum per operation, each promising "nothing changed".
//!
//! docs/highmem.md maps each function to Linux's and has the bad-input table.
//!
//! # Safety and locking
//!
//! - **Page tables.** Every PTE write (pkmap entries and fixmap slots) goes
//!   through [`kmm_hal::KernelTables`], one IRQ-safe lock for the kernel
//!   tables: `kmap_local_page` may run in an interrupt handler, and takes it
//!   with interrupts off, so it never spins on a lock its own CPU holds.
//! - **The pkmap lock** (`pkmap_count`, `last_pkmap_nr`, the waiter count)
//!   is a plain [`kmm_hal::sync::SpinLock`]: `kmap` may wait, so `kmap` and
//!   `kunmap` are process context only, and refuse to run in an interrupt
//!   handler or with interrupts off (typed errors). No interrupt path
//!   reaches the lock, and every holder runs with interrupts on, so the
//!   kernel-wide TLB flush that `flush_all_zero_pkmaps` makes under it is
//!   always answered. Lock order: pkmap lock, then the page-table lock.
//! - **TLB.** A freed pkmap entry keeps its mapping (count 1) until the
//!   search wraps around; then every such entry is unmapped and one
//!   [`kmm_hal::KernelTlb::flush_tlb_kernel_range`] of the window flushes
//!   them on every CPU, with the page-table lock dropped and the pkmap lock
//!   held (nobody maps a freed entry before every CPU forgot it). A fixmap
//!   slot is used only by its CPU: its unmap is flushed on that CPU alone.
//! - **Page addresses.** A mapped high-memory page records its pkmap address
//!   in its descriptor ([`kmm_page_frame::MemMap::set_page_address`], under
//!   the pkmap lock); the address is cleared before the entry is unmapped,
//!   so a recorded address is always mapped. [`Pkmap::new`] is `unsafe`:
//!   its caller promises that this is the only pkmap over the `mem_map` and
//!   the tables.
//! - **Per-CPU slot stacks** are [`kmm_hal::CpuLocal`] data, held only with
//!   interrupts off, so an interrupt handler's `kmap_local_page` comes
//!   between two calls of the code it interrupted, never inside one.
//!   Preemption stays disabled while a local mapping is held.
//! - **Hooks** ([`KmapWait`]) run with no lock held.
#![no_std]
#![warn(missing_docs)]

mod ctx;
mod error;
mod guard;
mod highmem;
mod init;
mod local;
mod pkmap;
mod stats;
mod wait;

pub use error::{CheckError, InitError, KmapError, KmapLocalError, KunmapError, KunmapLocalError};
pub use guard::KmapLocalGuard;
pub use highmem::Pkmap;
pub use local::{KM_MAX, MAX_CPUS};
pub use pkmap::MAX_PKMAP;
pub use stats::PkmapStats;
pub use wait::{KmapWait, SpinWait};
