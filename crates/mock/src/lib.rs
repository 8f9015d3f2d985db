//! A simulated i386 machine on the host, for testing kmm.
//!
//! The mock is a machine, not a stub:
//!
//! - **RAM** of any size, sparse (a memfd, or a lazily zeroed host allocation);
//! - **the i386 tables for real**: [`Machine::kernel_page_table`] builds 2-level
//!   or PAE tables with `kmm-i386`, written into the simulated RAM;
//! - **a kernel window**: Linux's i386 layout shifted to a host address
//!   ([`MockLayout`]). In the [`Backing::Mmap`] backing every mapping is mirrored
//!   with `mmap` over the RAM memfd, so kernel addresses can be dereferenced and
//!   one frame mapped twice shows the same bytes at both addresses;
//!   [`MockPageTable::verify_mirror`] cross-checks tables and mirror;
//! - **a TLB checker** ([`TlbChecker`]), one TLB per simulated CPU, that
//!   reports a use of an address on a CPU whose TLB was not flushed since the
//!   mapping changed — a flush made only on the CPU that changed it included;
//!   the [`Machine`] is the mock's [`kmm_hal::KernelTlb`], a shootdown in
//!   which every CPU flushes its own TLB;
//! - **CPUs** ([`MockCpu`]): host threads take CPU ids; IRQ and preemption guards
//!   are tracked and can be asserted; simulated interrupts run a test's
//!   handler where the CPU has interrupts enabled; the lock checker's reports
//!   are recorded (and panic by default); cross-CPU calls
//!   ([`kmm_hal::CrossCall`]) run on each CPU's thread where it has
//!   interrupts on; [`watchdog`] turns a deadlock into a test failure;
//! - **fault injection**: [`MockFrames::fail_after`] runs the frame source dry;
//! - **a pure-software mode** ([`Backing::Software`], the default under Miri).
//!
//! # Safety and locking
//!
//! - The mock implements the HAL's `unsafe trait`s, each with a `// SAFETY:`
//!   saying why it keeps the contract: [`MockCpu`] gives each id to one
//!   thread at a time (`bind`), and aborts if a thread leaves its CPU while
//!   pinned; [`MockFrames`] hands out each frame once; [`MockLayout`] is the
//!   i386 layout shifted by one page-aligned constant; [`MockPageTable`] is
//!   the real i386 tables plus a mirror kept in step; [`Machine`]'s
//!   `KernelTlb` has every CPU clear its own entries in the checker, through
//!   a cross-CPU call, before it returns (the host mirror has no TLB of its
//!   own); [`MockCpu`]'s `CrossCall` lets a sender run a CPU's calls only
//!   after claiming that CPU (no thread bound), so ids stay unique.
//! - The host window's mirror is behind a `std` mutex; one kernel page table
//!   exists per machine at a time, so its `&mut self` methods serialise
//!   changes.
//! - The TLB checker's state is behind one `std` mutex; its calling CPU is
//!   the thread's binding (CPU 0 if unbound). A kernel-wide flush or a
//!   cross-CPU call made with interrupts disabled, with an `IrqSpinLock`
//!   held, or from an interrupt handler panics: with several CPUs it could
//!   deadlock (the deadlock rule).
//! - Interrupt and preemption state is per thread (per simulated CPU).
//!   Simulated interrupts run on the thread of the CPU they were raised for,
//!   with interrupts off, and are delivered only in builds with debug
//!   assertions (release builds keep the guards lean, for the benchmarks);
//!   cross-CPU calls are taken in every build.
//!
//! # Example
//!
//! ```
//! use kmm_hal::{KernelLayout, PageFlags, PageTable, PhysAddr, TableReclaim, VirtAddr, PAGE_SIZE};
//! use kmm_mock::{Backing, Machine, PagingMode};
//!
//! let m = Machine::builder()
//!     .ram(16 << 20)
//!     .paging(PagingMode::Pae)
//!     .backing(Backing::default_for_host())
//!     .build()
//!     .unwrap();
//! let mut frames = m.lowmem_frames(PhysAddr::new(8 << 20));
//! let mut pt = m.kernel_page_table(&mut frames, true).unwrap();
//!
//! // Map frame 0x5000 into the vmalloc area: it aliases the direct map.
//! let va = m.layout().vmalloc_start();
//! pt.map(va, PhysAddr::new(0x5000), PageFlags::KERNEL_RW, &mut frames)
//!     .unwrap()
//!     .ignore(); // nothing was mapped there: nothing to flush
//! pt.write(va, b"hello").unwrap();
//! let direct = m.layout().direct_map().phys_to_virt(PhysAddr::new(0x5000)).unwrap();
//! let mut buf = [0u8; 5];
//! pt.read(direct, &mut buf).unwrap();
//! assert_eq!(&buf, b"hello");
//!
//! // Unmap without flushing, and the TLB checker catches the next use.
//! let (_, flush) = pt.unmap(va, TableReclaim::Free, &mut frames).unwrap();
//! assert!(m.tlb().check(va).is_err());
//! flush.flush(&pt);
//! assert!(m.tlb().check(va).is_ok());
//! # assert_eq!(pt.verify_mirror().unwrap(), 8); // 16 MiB of direct map in 2 MiB pages
//!
//! // With several CPUs, a local flush clears the calling CPU only (an
//! // unbound thread is CPU 0); `Machine` is the kernel-wide flush.
//! use kmm_hal::KernelTlb;
//! let m = Machine::builder().ram(16 << 20).cpus(2).build().unwrap();
//! let mut frames = m.lowmem_frames(PhysAddr::new(8 << 20));
//! let mut pt = m.kernel_page_table(&mut frames, false).unwrap();
//! let va = m.layout().vmalloc_start();
//! pt.map(va, PhysAddr::new(0x5000), PageFlags::KERNEL_RW, &mut frames)
//!     .unwrap()
//!     .ignore();
//! let (_, flush) = pt.unmap(va, TableReclaim::Free, &mut frames).unwrap();
//! flush.flush(&pt); // CPU 0's TLB only
//! assert!(m.tlb().stale_on(1, va).is_some()); // CPU 1 may still use it
//! m.flush_tlb_kernel_range(va, VirtAddr::new(va.as_usize() + PAGE_SIZE));
//! assert!(m.tlb().stale_on(1, va).is_none());
//! assert_eq!(m.tlb().kernel_flushes(), 1);
//! ```
#![warn(missing_docs)]

mod call_queue;
mod cpu;
mod frames;
#[cfg(all(target_arch = "x86", target_os = "linux"))]
pub mod fs_segment;
mod layout;
mod machine;
mod page_table;
mod ram;
mod smp;
mod sys;
mod tlb;
mod watchdog;
mod window;

pub use cpu::{BindError, CpuBinding, MockCpu};
pub use frames::MockFrames;
pub use layout::{KERNEL_WINDOW, MockLayout};
pub use machine::{Machine, MachineBuilder, PagingMode};
pub use page_table::{AccessError, MockPageTable};
pub use ram::Backing;
pub use tlb::{Change, TlbChecker, TlbViolation};
pub use watchdog::watchdog;
