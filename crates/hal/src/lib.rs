//! The hardware abstraction layer of kmm.
//!
//! A handful of small pieces that every kmm allocator is written against:
//!
//! - [`PhysAddr`], [`VirtAddr`] and [`Pfn`]: address newtypes whose conversions
//!   never truncate silently;
//! - [`PageFlags`]: the attributes of a mapping;
//! - [`PageTable`] and [`FrameSource`]: map, unmap, protect and translate pages,
//!   each change returning a [`Flush`] that must be consumed;
//! - [`Cpu`]: which CPU runs, and IRQ and preemption guards;
//! - [`CpuLocal`]: one value per CPU, touched without a lock by its CPU;
//! - [`sync`]: spin locks that are IRQ-safe by type, and a lock checker;
//! - [`KernelLayout`]: the direct map, vmalloc area, pkmap window and fixmap;
//! - [`KernelTlb`]: kernel TLB flushes on every CPU, and [`KernelTables`]:
//!   the kernel page tables every CPU writes, behind one IRQ-safe lock;
//! - [`CrossCall`]: a short function run on the other CPUs, waiting for them
//!   (Linux's `smp_call_function` and `on_each_cpu`), and [`UpCrossCall`] for
//!   a kernel where one CPU runs.
//!
//! # Safety and locking
//!
//! The line between safe and unsafe code is in the traits: [`Cpu`],
//! [`FrameSource`], [`PageTable`] and [`KernelLayout`] are `unsafe trait`s,
//! because the allocators' unsafe code relies on them behaving (unique CPU ids,
//! frames nobody else uses, unmaps that report the frame they removed, regions
//! that do not overlap). Each trait's `# Safety` section is its contract; an
//! `unsafe impl` is the implementer's promise to keep it.
//!
//! - Per-CPU data ([`CpuLocal`]) is touched only by its own CPU, pinned by an
//!   [`IrqGuard`] (if interrupt handlers use it too) or a [`PreemptGuard`];
//!   a re-entry on the same CPU is refused, not aliased.
//! - A lock an interrupt handler can take is a [`sync::IrqSpinLock`]: held
//!   only with interrupts off, by type. [`sync::SpinLock`] is for data no
//!   interrupt path reaches. In debug builds both feed the lock checker, which
//!   reports a lock taken both in interrupt context and with interrupts
//!   enabled through [`Cpu::lockdep_report`].
//! - [`PageTable::flush`] and [`PageTable::flush_all`] are local to the calling
//!   CPU; [`KernelTlb`] is the one way to flush every CPU.
//! - **The deadlock rule.** [`KernelTlb`]'s flushes and [`CrossCall`]'s calls
//!   wait for the other CPUs, so they are made only with interrupts enabled,
//!   no [`sync::IrqSpinLock`] held, and not from an interrupt handler, as in
//!   Linux: a CPU spinning with interrupts off could never answer. A CPU
//!   spinning with interrupts on (for a [`sync::SpinLock`]) keeps answering:
//!   the locks call [`Cpu::cpu_relax`] while they spin, where an
//!   implementation may take interrupts.
//!
//! `kmm-i386` implements the traits for 32-bit x86 (2-level and PAE paging);
//! `kmm-mock` implements them for a simulated machine on the host.
//!
//! # Example
//!
//! ```
//! use kmm_hal::{DirectMap, PageFlags, PhysAddr, VirtAddr, PAGE_SIZE};
//!
//! let dm = DirectMap::new(VirtAddr::new(0xC000_0000), 896 << 20).unwrap();
//! let frame = PhysAddr::new_aligned(0x0010_0000, PAGE_SIZE as u64).unwrap();
//! assert_eq!(dm.phys_to_virt(frame), Some(VirtAddr::new(0xC010_0000)));
//! // Above the direct map there is no linear address: highmem.
//! assert_eq!(dm.phys_to_virt(PhysAddr::new(0x4000_0000)), None);
//! assert!(PageFlags::KERNEL_GLOBAL.contains(PageFlags::GLOBAL));
//! ```
#![no_std]

mod addr;
mod cpu;
mod cpu_local;
mod flags;
mod kernel_tables;
mod layout;
mod lock_report;
mod paging;
mod smp;
pub mod sync;
mod tlb;

pub use addr::{AddrError, MAX_PHYS_BITS, PAGE_SHIFT, PAGE_SIZE, Pfn, PhysAddr, VirtAddr};
pub use cpu::{Cpu, IrqGuard, IrqState, PreemptGuard};
pub use cpu_local::{CpuLocal, LocalMut, PerCpu, Pinned};
pub use flags::PageFlags;
pub use kernel_tables::{KernelTables, Tables};
pub use layout::{DirectMap, Fixmap, KernelLayout, LayoutError, check_layout};
pub use paging::{Flush, FrameSource, MapError, PageSize, PageTable, TableReclaim, Translation};
pub use smp::{CrossCall, UpCrossCall};
pub use tlb::KernelTlb;
