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
//! - Per-CPU arrays (limit, batchcount, LIFO) refilled from and flushed to a
//!   shared array and the slab lists in batches; [`SlabAllocator::reap`] gives
//!   idle memory back; [`SlabAllocator::kmem_cache_shrink`] all free slabs.
//! - Page descriptors point back at their cache and slab, so `kfree` finds the
//!   cache in O(1).
//! - [`SlabAllocator::kmalloc`], `kzalloc`, `kcalloc`, `krealloc`, `ksize`,
//!   `kfree` over general caches of 32 B … 128 KiB (with 96 and 192) and their
//!   DMA variants; larger requests straight from the page allocator.
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
//! Hooks — the report hook ([`SlabAllocator::set_report_hook`]),
//! constructors, and the page allocator's `on_low` when a slab refill grows a
//! cache — run with no allocator lock held and no CPU's array borrowed, so
//! they may allocate. An allocation that may not wait (without `Gfp::WAIT`)
//! never reclaims.
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
//! assert_eq!(slab.ksize(p.as_ptr()), Ok(128));
//! slab.kfree(p.as_ptr()).unwrap();
//! ```
#![no_std]

mod allocator;
mod array;
mod cache;
mod debug;
mod error;
mod flags;
pub mod geometry;
mod global;
mod grow;
mod kmalloc;
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
pub use error::SlabError;
pub use flags::{CACHE_LINE, SlabFlags};
pub use global::KmallocHeap;
pub use kmalloc::KMALLOC_MAX_CACHE_SIZE;
pub use mempool::{Mempool, PoolSource};
pub use stats::CacheStats;
