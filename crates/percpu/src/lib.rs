//! Linux's per-CPU memory for kmm (`mm/percpu.c`, `include/linux/percpu.h`):
//! static per-CPU variables copied into one area per CPU at boot, this-CPU
//! operations that are one instruction through `%fs` on i386, and the
//! dynamic chunk allocator behind `alloc_percpu`.
//!
//! # Example
//!
//! A mock machine with two CPUs: a static counter and a private variable
//! per CPU, then a dynamic counter in a chunk the vmalloc area holds.
//!
//! ```
//! use core::sync::atomic::{AtomicU32, Ordering};
//! use kmm_percpu::{
//!     BuddyAreas, Percpu, PercpuError, Template, VmallocBacking, define_per_cpu,
//!     setup_per_cpu_areas,
//! };
//! use kmm_testkit::TestMachine;
//! use kmm_vmalloc::Vmalloc;
//!
//! define_per_cpu! {
//!     static HITS: shared AtomicU32 = AtomicU32::new(0);
//!     static LAST: usize = 0;
//! }
//!
//! let host = TestMachine::builder().ram_mib(32).cpus(2).kernel_tables_mib(1).build();
//! let _cpu0 = host.bind(0);
//!
//! // Boot: one area per possible CPU, the template copied into each.
//! let vars = [HITS.desc(), LAST.desc()];
//! let areas = setup_per_cpu_areas(
//!     host.cpu(),
//!     &Template::from_vars(&vars),
//!     BuddyAreas::new(host.buddy(), &[]),
//! )
//! .unwrap();
//!
//! // This CPU's copies: a guard with preemption off, and this-CPU ops.
//! *areas.get_cpu_var(&LAST).unwrap() = 42;
//! let this = areas.this_cpu();
//! this.add(&HITS, 3).unwrap();
//! assert_eq!(this.read(&HITS), Ok(3));
//! // Every CPU has its own copy; CPU 1's is untouched.
//! assert_eq!(areas.per_cpu(&HITS, 1).unwrap().load(Ordering::Relaxed), 0);
//! assert_eq!(
//!     areas.per_cpu(&HITS, 2).unwrap_err(),
//!     PercpuError::NoSuchCpu { cpu: 2, possible: 2 }
//! );
//!
//! // Dynamic per-CPU memory: the first chunk, then chunks in vmalloc space.
//! let vm = Vmalloc::new(host.slab(), host.kernel_tables(), host.machine(), host.machine().layout())
//!     .unwrap();
//! // SAFETY: `vm` maps its areas in these kernel tables.
//! let backing = unsafe { VmallocBacking::new(&vm, host.kernel_tables(), host.buddy(), &[]) };
//! let pcpu = Percpu::new(&areas, backing).unwrap();
//! let counter = pcpu.alloc_percpu::<AtomicU32>().unwrap();
//! // SAFETY: `counter` is live until the `free_percpu` below.
//! unsafe { this.add_ptr(counter, 5) };
//! let cpu1 = areas.per_cpu_ptr(counter, 1).unwrap();
//! // SAFETY: live, zeroed, and an atomic may be read from any CPU.
//! assert_eq!(unsafe { cpu1.as_ref() }.load(Ordering::Relaxed), 0);
//!
//! // Bad frees are refused with nothing changed.
//! assert_eq!(pcpu.free_percpu(counter.byte_add(1)), Err(PercpuError::Interior));
//! pcpu.free_percpu(counter).unwrap();
//! assert_eq!(pcpu.free_percpu(counter), Err(PercpuError::NotLive));
//! pcpu.check().unwrap();
//! ```
//!
//! # What is here
//!
//! - **Static variables**: [`define_per_cpu!`] (Linux's `DEFINE_PER_CPU`)
//!   makes a [`PerCpuVar`]; [`setup_per_cpu_areas`] copies the [`Template`]
//!   — the kernel's `.data..percpu` section, or a registration list where
//!   no linker section can be named (the host) — into one area per
//!   possible CPU, from an [`AreaAlloc`] ([`BuddyAreas`]: each CPU's area on
//!   its node; [`BootmemAreas`]: before the buddy allocator), and records
//!   the offsets ([`PerCpuAreas::offset`], Linux's `__per_cpu_offset[]`).
//!   Access: [`PerCpuAreas::per_cpu`], [`PerCpuAreas::per_cpu_ptr`],
//!   [`PerCpuAreas::get_cpu_var`].
//! - **This-CPU operations**: [`ThisCpu`] (`read`, `write`, `add`, `inc`,
//!   `dec`) over a [`ThisCpuOps`] backend: `SegmentOps` on i386 (`%fs`;
//!   built for `target_arch = "x86"` only), [`IndexOps`] anywhere (the
//!   offset table by CPU id).
//! - **Dynamic allocations**: [`Percpu`] with [`Percpu::alloc_percpu`],
//!   [`Percpu::__alloc_percpu`], [`Percpu::free_percpu`], giving
//!   [`PercpuPtr`]s; chunks after the first from a [`ChunkBacking`]
//!   ([`VmallocBacking`]: the vmalloc area; [`FirstChunkOnly`]: none).
//! - One error type, [`PercpuError`], each refusal with nothing changed.
//!
//! docs/percpu.md has the layout, the kernel's set-up (linker script, `%fs`),
//! the Linux names and the bad-input table.
//!
//! # Safety and locking
//!
//! - **A copy is its CPU's.** A static variable's copy is a
//!   [`kmm_hal::PerCpu`] slot, the primitive the buddy allocator's page
//!   lists and the slab's array caches use: its local part is reached only
//!   by its CPU, pinned ([`PerCpuAreas::get_cpu_var`] holds a
//!   [`kmm_hal::PreemptGuard`] and the slot's busy flag, so a re-entry gets
//!   [`PercpuError::Busy`], never a second `&mut`); its shared part is
//!   `Sync` and read by anyone ([`PerCpuAreas::per_cpu`]).
//! - **This-CPU operations** act on atomic integers only
//!   ([`ThisCpuPrim`]): written by their CPU, read by any with an atomic
//!   load. [`ThisCpuOps`] is an `unsafe trait` whose contract is "this
//!   CPU's copy, one access no interrupt splits"; `SegmentOps::new` is
//!   `unsafe`: the kernel vouches that each CPU's `%fs` base is its offset.
//! - **Dynamic pointers** are cookies like Linux's `__percpu` pointers:
//!   copyable, not owning, so the calls that dereference one are `unsafe`
//!   ("not freed"), while [`Percpu::free_percpu`] checks what it is given.
//! - **The allocator's locks** are two [`kmm_hal::sync::SpinLock`]s, as
//!   Linux's: the allocation lock (`pcpu_alloc_mutex`, the backing) held
//!   through `__alloc_percpu` and [`Percpu::shrink`], and the map lock
//!   (`pcpu_lock`: chunk table, maps, slots) held for map work only, never
//!   across a backing call. So hooks the backing reaches (the buddy
//!   allocator's `on_low`, vmalloc's flushes) run with no map lock held:
//!   [`Percpu::free_percpu`] works there, and `__alloc_percpu`/`shrink`
//!   on the CPU that holds the allocation lock return
//!   [`PercpuError::Busy`]. Allocation, free and [`Percpu::check`] are for
//!   process context ([`PercpuError::InInterrupt`] otherwise);
//!   [`Percpu::stats`] reads atomics, any context. [`ChunkBacking`] and
//!   [`AreaAlloc`] are `unsafe trait`s: the allocator writes through the
//!   memory they vouch for.
#![no_std]
#![warn(missing_docs)]

mod backing;
mod chunk;
mod error;
mod percpu;
mod ptr;
mod setup;
pub mod slot;
mod this_cpu;
mod var;

pub use backing::{ChunkBacking, ChunkGeometry, ChunkMem, FirstChunkOnly, VmallocBacking};
pub use chunk::{AllocMap, MapFreeError};
pub use error::PercpuError;
pub use percpu::{Percpu, PercpuStats};
pub use ptr::{PercpuPtr, Zeroable};
pub use setup::{
    AreaAlloc, BootmemAreas, BuddyAreas, CpuVar, PerCpuAreas, ThisCpu, setup_per_cpu_areas,
};
#[cfg(target_arch = "x86")]
pub use this_cpu::SegmentOps;
pub use this_cpu::{IndexOps, ThisCpuOps, ThisCpuPrim};
pub use var::{PerCpuVar, Template, VarDesc};

use kmm_hal::PAGE_SIZE;

/// The most possible CPUs the areas have offsets for (Linux's `NR_CPUS`).
pub const NR_CPUS: usize = 64;

/// The bytes of each CPU's unit in every chunk (Linux's `pcpu_unit_size`,
/// at least `PCPU_MIN_UNIT_SIZE`, 32 KiB): the static template and the first
/// chunk's dynamic part in the first chunk, dynamic allocations only in the
/// others.
pub const PCPU_UNIT_SIZE: usize = 32 << 10;

/// The smallest allocation and the granule of the allocation maps (Linux's
/// `PCPU_MIN_ALLOC_SIZE`).
pub const PCPU_MIN_ALLOC_SIZE: usize = 4;

/// The least dynamic space the first chunk keeps after the static template
/// (Linux's `PERCPU_DYNAMIC_RESERVE`); set-up refuses a larger template.
pub const PERCPU_DYNAMIC_RESERVE: usize = 8 << 10;

/// The largest allocation per CPU: a page.
pub const PCPU_MAX_ALLOC: usize = PAGE_SIZE;

/// The most chunks the allocator holds, the first included: with
/// [`PCPU_UNIT_SIZE`] units, 256 KiB of dynamic per-CPU memory per CPU.
pub const PCPU_MAX_CHUNKS: usize = 8;

/// The most variables a registration list may hold.
pub const PCPU_MAX_STATIC_VARS: usize = 64;
