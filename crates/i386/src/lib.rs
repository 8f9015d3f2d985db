//! i386 paging for kmm.
//!
//! - [`TwoLevel`]: classic 32-bit paging — a page directory of 1024 entries,
//!   page tables of 1024, 4 KiB pages, 4 MiB PSE pages, global (PGE) pages.
//! - [`Pae`]: PAE paging — a 4-entry PDPT, directories and tables of 512 8-byte
//!   entries, 4 KiB and 2 MiB pages, physical addresses up to 64 GiB, NX.
//! - [`I386Layout`]: Linux's i386 kernel layout as a [`kmm_hal::KernelLayout`].
//! - `arch` (on `target_arch = "x86"` only): CR0/CR3/CR4, INVLPG, global flush;
//!   `I386Cpu` (same): the [`kmm_hal::Cpu`] of a uniprocessor kernel;
//!   `I386Tlb` (same): its [`kmm_hal::KernelTlb`] — INVLPG per page, or a
//!   full flush (global entries too) above [`FULL_FLUSH_PAGES`] pages.
//! - SMP (see `docs/smp.md`): `I386SmpCpu` (x86), the [`kmm_hal::Cpu`] of
//!   an SMP kernel, its id and counts per CPU through `%fs`;
//!   [`percpu_segment`], the GDT descriptor of each CPU's `%fs` segment;
//!   [`apic`], the local APIC through the fixmap's APIC slot (IPIs, INIT and
//!   STARTUP, the timer); [`ApicCrossCall`], Linux's `smp_call_function`
//!   over it; `SmpTlb` (x86), the kernel-wide flush as a real shootdown.
//!
//! - `rt` (x86): `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp`, which
//!   `core` calls and a freestanding kernel links from nowhere else; the
//!   `mem-symbols` feature exports them under their C names (a kernel only,
//!   never a hosted build).
//!
//! With the `hw-flush` feature (ring-0 code on an x86 CPU only),
//! [`kmm_hal::PageTable::flush`] executes INVLPG and `flush_all` reloads CR4.PGE
//! or CR3; without it they do nothing, and the caller (the mock) tracks flushes.
//!
//! Both table types implement [`kmm_hal::PageTable`]. The tables live in physical
//! memory and are reached through a [`kmm_hal::DirectMap`], so the same code runs
//! in a kernel (identity map before paging, `PAGE_OFFSET` after) and on the host
//! over the simulated RAM of `kmm-mock`.
//!
//! # Safety and locking
//!
//! - [`Paging::new`] and [`Paging::from_root`] are `unsafe`: the tables are
//!   read and written through the [`kmm_hal::DirectMap`] they are given, so the
//!   caller vouches that it maps RAM the tables may use (and, for `new`, that
//!   the [`kmm_hal::FrameSource`] keeps its contract). `set_direct_map` is
//!   `unsafe` for the same reason. Everything after construction is safe and
//!   keeps the [`kmm_hal::PageTable`] contract (`unsafe impl`): every change
//!   is checked before the first write, all or nothing.
//! - `Paging` has no lock: a change takes `&mut self`. A kernel whose CPUs
//!   share one set of tables serialises changes itself (vmalloc's lock, say).
//! - [`I386Layout`] keeps the [`kmm_hal::KernelLayout`] contract by
//!   construction (Linux's regions, disjoint and aligned; its tests run
//!   `check_layout` over every mode, size and CPU count).
//! - `I386Cpu::new` (on x86) is `unsafe`: every `I386Cpu` answers CPU id 0, so
//!   only one CPU may run kmm code with it.
//! - `I386Tlb::new` (on x86) is `unsafe` for the same reason: its kernel-wide
//!   flushes are local, which keeps [`kmm_hal::KernelTlb`]'s contract only
//!   while one CPU runs; `SmpTlb` is the shootdown for several.
//! - `I386SmpCpu::new` is `unsafe`: the kernel vouches for each CPU's `%fs`
//!   segment and id word and for its interrupt entry's `irq_enter`/`irq_exit`.
//!   [`ApicCrossCall::new`] and [`LocalApic::new`] are `unsafe`: the kernel
//!   vouches for the APIC mapping and the IPI vector's handler.
//!   [`ApicCrossCall`]'s protocol (one call at a time under a lock taken with
//!   interrupts on, per-CPU claim and done masks) is described in its module.
//!
//! # Example
//!
//! A kernel would pass its boot frame allocator and direct map; here a
//! page-aligned buffer stands in for physical memory.
//!
//! ```
//! use kmm_hal::{DirectMap, FrameSource, PageFlags, PageSize, PageTable, PhysAddr, VirtAddr};
//! use kmm_i386::TwoLevel;
//!
//! #[repr(C, align(4096))]
//! struct Ram([u8; 8 * 4096]);
//! let mut ram = Box::new(Ram([0; 8 * 4096]));
//! let base = VirtAddr::from_ptr(ram.0.as_mut_ptr().cast_const());
//! let _ = ram.0.as_mut_ptr().expose_provenance();
//! let dm = DirectMap::new(base, 8 * 4096).unwrap();
//!
//! // Frames 0..8 of the "RAM" feed the tables.
//! struct Bump(u64);
//! // SAFETY: frames 0..8 of `ram`, page-aligned, each handed out once.
//! unsafe impl FrameSource for Bump {
//!     fn alloc_frame(&mut self) -> Option<PhysAddr> {
//!         (self.0 < 8).then(|| { self.0 += 1; PhysAddr::new((self.0 - 1) * 4096) })
//!     }
//!     fn free_frame(&mut self, _: PhysAddr) {}
//! }
//! let mut frames = Bump(0);
//!
//! // SAFETY: `dm` maps `ram`, which outlives the tables; `frames` hands out
//! // its pages only to them.
//! let mut pt = unsafe { TwoLevel::new(dm, true, &mut frames) }.unwrap();
//! let va = VirtAddr::new(0xF880_0000);
//! pt.map(va, PhysAddr::new(0x0123_4000), PageFlags::KERNEL_RW, &mut frames)
//!     .unwrap()
//!     .ignore(); // nothing was mapped there before: no TLB entry to flush
//! let t = pt.translate(VirtAddr::new(0xF880_0042)).unwrap();
//! assert_eq!(t.phys, PhysAddr::new(0x0123_4042));
//!
//! pt.map_large(VirtAddr::new(0xC000_0000), PhysAddr::ZERO, PageFlags::KERNEL_GLOBAL)
//!     .unwrap()
//!     .ignore();
//! assert_eq!(pt.translate(VirtAddr::new(0xC012_3456)).unwrap().size, PageSize::Large);
//! ```
#![no_std]

pub mod apic;
#[cfg(target_arch = "x86")]
pub mod arch;
#[cfg(target_arch = "x86")]
mod cpu;
mod ipi;
mod layout;
mod mode;
pub mod percpu_segment;
#[cfg(target_arch = "x86")]
pub mod rt;
#[cfg(target_arch = "x86")]
mod smp_cpu;
mod tables;
mod tlb;

pub use apic::{APIC_DEFAULT_PHYS_BASE, FIX_APIC_BASE, Icr, LocalApic};
#[cfg(target_arch = "x86")]
pub use cpu::I386Cpu;
pub use ipi::{ApicCrossCall, CrossCallStats, MAX_CPUS};
pub use layout::{
    DEFAULT_NR_CPUS, FIX_KMAP_BEGIN, FIXADDR_TOP, I386Layout, KM_TYPE_NR, LAST_PKMAP,
    LAST_PKMAP_PAE, MAX_LOWMEM, PAGE_OFFSET, VMALLOC_OFFSET,
};
pub use mode::{Classic, Mode, PaeMode};
#[cfg(target_arch = "x86")]
pub use smp_cpu::{I386SmpCpu, PerCpuWords, SmpCpuArea};
pub use tables::{Pae, Paging, TwoLevel};
pub use tlb::{FULL_FLUSH_PAGES, ShootdownStats};
#[cfg(target_arch = "x86")]
pub use tlb::{I386Tlb, SmpTlb};
