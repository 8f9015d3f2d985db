//! The kernel page tables once the page allocator exists: one
//! [`KernelTables`] (the tables and their frame source behind one IRQ-safe
//! lock) shared by the highmem window, vmalloc and pkmap, whose new
//! page-table pages come from the buddy allocator's low memory
//! ([`LowmemFrames`]).

use kmm_hal::KernelTables;
use kmm_i386::Paging;

/// The kernel's shared page tables.
pub type KTables<M> = KernelTables<Paging<M>, LowmemFrames>;

/// Page-table pages from the buddy allocator: order-0 `Gfp::KERNEL` pages,
/// which come from NORMAL or DMA, so they lie in low memory and the tables
/// reach them through the direct map; the umbrella's source, which
/// `MemoryManager::init` uses the same way. Until `attach` gives it the
/// allocator (the tables exist before the allocator does) it has no frame
/// to give.
pub type LowmemFrames = kmm::PageTableFrames<'static, crate::smp::KernelCpu>;
