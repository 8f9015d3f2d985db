//! Linux's SLAB allocator for kmm.
//!
//! - Caches of same-size objects ([`SlabAllocator::kmem_cache_create`]) on a
//!   cache chain, the first of which — the cache of caches — is bootstrapped in
//!   a page of its own.
//! - Slabs of `2^gfporder` pages from the buddy allocator on each cache's full,
//!   partial and free lists; the slab descriptor and free-object index on the
//!   slab for small objects, off it for objects of 512 bytes and more; objects
//!   aligned (to the cache line with `HWCACHE_ALIGN`); slab colouring spreads the
//!   leftover space; constructors run once per object when a slab is grown.
//! - Per-CPU arrays (limit, batchcount, LIFO) on [`kmm_hal::CpuLocal`],
//!   refilled from and flushed to a shared array and the slab lists in
//!   batches; [`SlabAllocator::reap`] gives
//!   idle memory back; [`SlabAllocator::kmem_cache_shrink`] all free slabs.
//! - Page descriptors point back at their cache and slab, so `kfree` finds the
//!   cache in O(1).
//! - [`SlabAllocator::kmem_cache_alloc_bulk`] and
//!   [`SlabAllocator::kmem_cache_free_bulk`] (Linux 4.2's): many objects of one
//!   cache in one call, this CPU's array taken once; an allocation is all or
//!   nothing, a free stops at its first bad element with that element's
//!   index ([`BulkFreeError`]), the ones before it freed.
//! - [`SlabAllocator::kmalloc`], `kzalloc`, `kcalloc`, `krealloc`, `ksize`,
//!   `kfree` over general caches — 88 dense size classes of 8 B … 32 KiB by
//!   default, or Linux 2.6's fifteen of 32 B … 128 KiB ([`KmallocSizes`]) —
//!   and DMA variants; larger requests take a run of exactly the frames they
//!   need from the page allocator. When a class cannot
//!   grow, `kmalloc` takes a free object of a larger class (up to twice the
//!   size) before it fails.
//! - [`Mempool`]: a reserved minimum used when the underlying allocation fails.
//! - [`KmallocHeap`]: a `GlobalAlloc` (for `#[global_allocator]`) and an
//!   allocator-api2 `Allocator`.
//! - The `debug` feature (like `slub_debug`): red zones, the bytes past the
//!   size the caller asked for ([`RED_SLACK`]), poisoning checked on
//!   allocation, double-free reports, [`SlabAllocator::validate_cache`].
//! - The `hardened` feature, lighter: a free claims the object with one atomic
//!   exchange, so two CPUs freeing it at the same instant cannot both succeed
//!   (`debug` does the same).
//! - `/proc/slabinfo` text from [`SlabAllocator::slabinfo`].
//!
//! Every free checks its pointer: foreign, interior (in an object or anywhere
//! in a large block), wrong cache or double frees are refused with a
//! [`SlabError`], changing nothing; the cache of caches and the cache
//! descriptors in it are the allocator's own ([`SlabError::Internal`]). Large
//! kmalloc blocks are flagged `KMALLOC` for as long as they live, so the page
//! allocator refuses to free them (`FreeError::Kmalloc`).
//!
//! An allocation that may not wait (without `Gfp::WAIT`) never reclaims.
//!
//! # Safety and locking
//!
//! What each lock protects, what runs with interrupts off, and what only its
//! CPU touches (as the header of Linux's `mm/slab.c` says it):
//!
//! - **A CPU's array** of a cache (one [`kmm_hal::CpuLocal`] slot per CPU and
//!   cache: the entries, limit, batch count and `touched` mark): no lock. Only
//!   its CPU touches it, through `CpuLocal::with` — the allocation and free
//!   fast paths (single and bulk) and the refill and flush slow paths with
//!   interrupts off (an IRQ guard), the drains of reap and shrink pinned by preemption only, with
//!   interrupts as the caller had them. A re-entry on the same CPU — an
//!   interrupt handler that lands during such a drain, or a hook — finds the
//!   array held and takes its object from (or gives it back to) the slab
//!   lists under the list lock: never a second borrow, never a panic. Other
//!   CPUs only read the array's count (statistics) and set its drain request,
//!   which the owner honours at its next slow path with the array (refill,
//!   flush, reap, shrink).
//! - **The list lock** (`kmem_cache list lock`, one per cache): the full,
//!   partial and free slab lists, the free-object count, the next colour, the
//!   slab counts, and every slab descriptor's in-use count, free-object index
//!   and list mark — the descriptor's methods take the locked lists, so
//!   nothing reads or writes them unlocked.
//! - **The shared-array lock** (`kmem_cache shared array`, one per cache):
//!   the cache's shared array.
//! - **The chain lock** (`slab cache chain`): the cache chain's links. Held
//!   only to add or remove a cache or to copy a chunk of the chain out, never
//!   while a cache is worked on.
//! - **The arena lock** (`slab arena`): the bump allocator of the first
//!   caches' metadata while the allocator boots.
//! - **The report locks** (`slab debug reports`, `slab report hook`): the last
//!   16 reports and the hook.
//! - **A mempool's lock** (`mempool reserve`): its reserve.
//!
//! Every one of these is an [`IrqSpinLock`](kmm_hal::sync::IrqSpinLock): taken
//! with `lock(&irq_guard)` where the code already has interrupts off, else
//! with `lock_irqsave`. No slab lock is ever held with interrupts enabled, so
//! an interrupt handler that allocates (`Gfp::ATOMIC`, a
//! [`KmallocHeap::with_gfp`] heap, a [`Mempool`]) cannot spin on a lock the
//! code it interrupted holds, and the lock checker has nothing to report.
//! Locks are taken one at a time (a CPU's array first, then the shared-array
//! lock or the list lock, never both), and none is held while the page
//! allocator or a hook is called: a cache grows with nothing held, and free
//! slabs are taken off the lists, the lock dropped, then given back (Linux's
//! `slab_destroy` outside `l3->list_lock`). Reap, shrink, the refill and
//! flush slow paths, `cache_grow` and mempool calls start with
//! [`Cpu::interrupt_point`](kmm_hal::Cpu::interrupt_point), and drains call
//! it between batches: where the host mock delivers pending interrupts.
//!
//! What the allocator relies on, and what its `unsafe fn`s ask of callers:
//!
//! - **The [`Cpu`](kmm_hal::Cpu) contract** of the buddy allocator's CPUs:
//!   `id()` unique among running CPUs, below `count()`, stable while
//!   interrupts or preemption are off; `irq_save` really disables interrupts.
//!   Each cache's arrays are only ever given guards of that one `Cpu` value
//!   (the contract of `CpuLocal::new`).
//! - **Pages**: the allocator writes a page descriptor (`SLAB`,
//!   `SLAB_INTERNAL`, `KMALLOC`, owner and index) only while it owns the page
//!   (the owner contract of `kmm_page_frame::Page`), and clears `SLAB` before
//!   the back-pointers when a slab goes.
//! - [`SlabAllocator::kmem_cache_destroy`]: no CPU uses the cache during the
//!   call (interrupt handlers included) — its arrays are emptied from the
//!   calling CPU.
//! - [`SlabAllocator::drain_offline_cpu`]: that CPU is not in the allocator
//!   and does not enter it before the call returns; no other CPU drains it at
//!   the same time.
//! - [`SlabAllocator::krealloc`]: the pointer is null or a block the caller
//!   owns (no other thread uses it during the call: its bytes are copied).
//!
//! Hooks run with no allocator lock held and no CPU's array borrowed, so
//! they may allocate and free:
//!
//! - **The report hook** ([`SlabAllocator::set_report_hook`]): after the
//!   report is recorded, on the CPU that found the problem; it may report
//!   again (it is called again, nested, and must bound its own recursion); it
//!   runs with interrupts off, or in an interrupt handler, when the problem
//!   was found there.
//! - **Constructors** ([`Ctor`]): once per object while a slab grows, before
//!   the slab is on any list.
//! - **The page allocator's `on_low`**, when a refill grows a cache: the
//!   array is no longer borrowed and interrupts are as the caller had them,
//!   so the hook may allocate from the very cache being refilled.
//!   (`zero_highmem` is never reached: slabs and large blocks are low
//!   memory.)
//!
//! # Example
//!
//! ```
//! use kmm_buddy::Gfp;
//! use kmm_slab::{SlabError, SlabFlags};
//! use kmm_testkit::TestMachine;
//!
//! // A mock machine with the buddy allocator and this one on it (the test kit
//! // builds them as a kernel does at boot, see docs/porting.md, and keeps
//! // them together).
//! let host = TestMachine::builder().ram_mib(32).build();
//! let _cpu0 = host.bind(0);
//! let slab = host.slab();
//!
//! fn init(obj: *mut u8) {
//!     // SAFETY: the allocator hands the constructor a whole 48-byte object.
//!     unsafe { obj.cast::<u64>().write(0x1234) }
//! }
//! let cache = slab.kmem_cache_create("thing", 48, 0, SlabFlags::HWCACHE_ALIGN, Some(init)).unwrap();
//! let obj = slab.kmem_cache_alloc(cache, Gfp::KERNEL).unwrap();
//! assert_eq!(unsafe { obj.as_ptr().cast::<u64>().read() }, 0x1234);
//! slab.kmem_cache_free(cache, obj).unwrap();
//! assert_eq!(slab.kmem_cache_free(cache, obj), Err(SlabError::DoubleFree));
//!
//! let p = slab.kmalloc(100, Gfp::KERNEL).unwrap();
//! assert_eq!(slab.ksize(p.as_ptr()), Ok(104), "the dense classes step by 8 bytes");
//! slab.kfree(p.as_ptr()).unwrap();
//! ```
#![no_std]

mod allocator;
mod array;
mod bulk;
mod cache;
mod debug;
mod error;
mod flags;
pub mod geometry;
mod global;
mod grow;
mod kmalloc;
mod kmalloc_sizes;
mod mempool;
mod objects;
mod reap;
mod refill;
mod slab_desc;
mod stats;

pub use allocator::SlabAllocator;
pub use cache::{Cache, Ctor, KmemCache};
pub use debug::{
    DebugReport, Offence, POISON_END, POISON_FREE, RED_ACTIVE, RED_INACTIVE, RED_SLACK,
};
pub use error::{BulkFreeError, SlabError};
pub use flags::{CACHE_LINE, SlabFlags};
pub use global::KmallocHeap;
pub use kmalloc::KMALLOC_MAX_CACHE_SIZE;
pub use kmalloc_sizes::{KmallocSizes, SizeClass};
pub use mempool::{Mempool, PoolSource};
pub use stats::CacheStats;
