//! Mock machines with kmm's allocators on them, built in safe code: the set-up
//! of kmm's integration tests, fuzz targets and benches, and of yours.
//!
//! A [`TestMachine`] is built from a description (RAM size, memory map with
//! holes, nodes, CPUs, high memory, paging mode, backing, the buddy
//! allocator's settings) and owns the mock machine, `mem_map`, the zones, the
//! buddy allocator and, from its first use, the slab allocator. It is a cheap
//! handle (an `Arc`): return it from a helper, clone it, keep it in a `static`,
//! drop the clones in any order. The allocators are borrowed from it
//! ([`TestMachine::buddy`], [`TestMachine::slab`]) for as long as the handle is,
//! so nothing they hand out can outlive the machine.
//!
//! Beside the machine: the helpers the tests share ([`TestMachine::bind`],
//! [`TestMachine::on_each_cpu`], [`TestMachine::pages_out`],
//! [`TestMachine::shrink_everywhere`], [`TestMachine::assert_fully_coalesced`],
//! …) and one reference model per allocator ([`model::buddy`],
//! [`model::slab`]) that the property tests and the fuzz targets share.
//!
//! # Example
//!
//! ```
//! use kmm_buddy::Gfp;
//! use kmm_testkit::TestMachine;
//!
//! fn fixture() -> TestMachine {
//!     TestMachine::builder().ram_mib(32).cpus(2).bios_holes().build()
//! }
//!
//! let host = fixture();
//! let _cpu0 = host.bind(0);
//! let slab = host.slab();
//! let p = slab.kmalloc(200, Gfp::KERNEL).unwrap();
//! slab.kfree(p.as_ptr()).unwrap();
//! let page = host.buddy().alloc_pages(Gfp::KERNEL, 2).unwrap();
//! host.buddy().free_pages_page(page, 2).unwrap();
//! drop(_cpu0);
//!
//! let before = host.pages_out();
//! host.shrink_everywhere(); // every CPU gives its cached objects and pages back
//! assert!(host.pages_out() <= before);
//! ```
//!
//! The allocators' borrows end with the handle's, so this does not compile:
//!
//! ```compile_fail
//! use kmm_buddy::Gfp;
//! use kmm_testkit::TestMachine;
//!
//! let page = {
//!     let host = TestMachine::builder().ram_mib(16).build();
//!     let _cpu0 = host.bind(0);
//!     host.buddy().alloc_pages(Gfp::KERNEL, 0).unwrap()
//! }; // `host` dropped here while `page` still borrows it
//! let _ = page.count();
//! ```
#![warn(missing_docs)]

mod cpus;
mod machine;
mod mm_machine;
pub mod model;
mod platform;

pub use machine::{TestMachine, TestMachineBuilder, zone_index};
pub use mm_machine::{MmMachine, MockMm};
pub use platform::MockPlatform;

/// The mock's types a description names.
pub use kmm_mock::{Backing, PagingMode};
