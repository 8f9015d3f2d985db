//! [`BootParams`]: everything [`MemoryManager::init`](crate::MemoryManager::init)
//! is built from, and [`InitError`], what stops it.

use core::fmt;
use core::ops::Range;

use kmm_buddy::{BuddyConfig, BuddyError};
use kmm_hal::MapError;
use kmm_page_frame::{BootmemError, MemMapError, Region};
use kmm_percpu::{PercpuError, Template};
use kmm_pkmap::InitError as PkmapInitError;
use kmm_slab::{KmallocSizes, SlabError};
use kmm_vmalloc::VmallocError;

use crate::Platform;

/// What the memory manager is built from: the boot memory map and what is
/// in use in it, the layout, the CPUs and their providers, and the settings
/// of each allocator. [`BootParams::new`] takes what has no default; the
/// rest has Linux's defaults and builder methods.
pub struct BootParams<'p, P: Platform> {
    /// The firmware's memory map (e820 or multiboot), as kmm regions.
    pub regions: &'p [Region],
    /// The kernel image, physical addresses (reserved; its size is reported
    /// as the kernel's in the "Memory:" line).
    pub kernel: Range<u64>,
    /// The kernel's code (`_text.._etext`), for the "Memory:" line; empty
    /// means the whole image is counted as code.
    pub kernel_code: Range<u64>,
    /// Further physical ranges in use before the allocators exist (the
    /// loader's data, modules, an AP trampoline page): reserved.
    pub reserved: &'p [Range<u64>],
    /// The kernel's virtual layout.
    pub layout: P::Layout,
    /// The CPUs.
    pub cpu: P::Cpu,
    /// Kernel-wide TLB flushes.
    pub tlb: P::Tlb,
    /// How `kmap` waits for a free entry.
    pub wait: P::Wait,
    /// The kernel page tables, if the kernel built them itself (they must map
    /// the layout's direct map and be loaded); `None` has
    /// [`Platform::kernel_tables`] build and load them.
    pub tables: Option<P::PageTable>,
    /// The buddy allocator's settings (its `cross_call` is required with more
    /// than one CPU). Its hooks and tables are `'static`: a kernel's are.
    pub buddy: BuddyConfig<'static>,
    /// The static per-CPU variables' template (Linux's `.data..percpu`).
    pub percpu: Template<'p>,
    /// kmalloc's size classes: [`KmallocSizes::Dense`] (the default, over
    /// 90 % heap efficiency) or Linux 2.6's table, [`KmallocSizes::Linux26`].
    pub kmalloc_sizes: KmallocSizes,
}

impl<'p, P: Platform> BootParams<'p, P> {
    /// Parameters with Linux's defaults: nothing reserved but the kernel
    /// image, tables built by the platform, `BuddyConfig::default()`, no
    /// static per-CPU variables.
    pub fn new(
        regions: &'p [Region],
        kernel: Range<u64>,
        layout: P::Layout,
        cpu: P::Cpu,
        tlb: P::Tlb,
        wait: P::Wait,
    ) -> Self {
        BootParams {
            regions,
            kernel,
            kernel_code: 0..0,
            reserved: &[],
            layout,
            cpu,
            tlb,
            wait,
            tables: None,
            buddy: BuddyConfig::default(),
            percpu: Template::from_vars(&[]),
            kmalloc_sizes: KmallocSizes::Dense,
        }
    }

    /// Reserves `ranges` as well (physical addresses).
    pub fn reserved(mut self, ranges: &'p [Range<u64>]) -> Self {
        self.reserved = ranges;
        self
    }

    /// The kernel's code range, for the "Memory:" line.
    pub fn kernel_code(mut self, code: Range<u64>) -> Self {
        self.kernel_code = code;
        self
    }

    /// Tables the kernel built and loaded itself.
    pub fn tables(mut self, tables: P::PageTable) -> Self {
        self.tables = Some(tables);
        self
    }

    /// The buddy allocator's settings.
    pub fn buddy_config(mut self, config: BuddyConfig<'static>) -> Self {
        self.buddy = config;
        self
    }

    /// The static per-CPU variables' template.
    pub fn percpu_template(mut self, template: Template<'p>) -> Self {
        self.percpu = template;
        self
    }

    /// kmalloc's size classes ([`KmallocSizes::Linux26`] to study Linux
    /// 2.6's `/proc/slabinfo`).
    pub fn kmalloc_sizes(mut self, sizes: KmallocSizes) -> Self {
        self.kmalloc_sizes = sizes;
        self
    }
}

/// Why [`MemoryManager::init`](crate::MemoryManager::init) failed: the step
/// and its error. Nothing is usable after a failure (the kernel cannot go on
/// without memory), but nothing was corrupted either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitError {
    /// `init` ran before on this heap (the global allocator is set once).
    AlreadyInitialized,
    /// Bootmem refused the memory map or a reservation.
    Bootmem(BootmemError),
    /// The kernel page tables could not be built.
    PageTables(MapError),
    /// `mem_map` could not be built (layout, no room).
    MemMap(MemMapError),
    /// The buddy allocator refused its set-up.
    Buddy(BuddyError),
    /// The slab allocator could not bootstrap its caches.
    Slab(SlabError),
    /// vmalloc could not start.
    Vmalloc(VmallocError),
    /// pkmap could not build its tables.
    Pkmap(PkmapInitError),
    /// The per-CPU areas or allocator could not be set up.
    Percpu(PercpuError),
    /// No low memory was left for the memory manager's own state.
    NoMemory,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::AlreadyInitialized => {
                f.write_str("the memory manager is already initialised")
            }
            InitError::Bootmem(e) => write!(f, "bootmem: {e}"),
            InitError::PageTables(e) => write!(f, "kernel page tables: {e}"),
            InitError::MemMap(e) => write!(f, "mem_map: {e}"),
            InitError::Buddy(e) => write!(f, "buddy allocator: {e}"),
            InitError::Slab(e) => write!(f, "slab allocator: {e}"),
            InitError::Vmalloc(e) => write!(f, "vmalloc: {e}"),
            InitError::Pkmap(e) => write!(f, "pkmap: {e}"),
            InitError::Percpu(e) => write!(f, "per-CPU memory: {e}"),
            InitError::NoMemory => f.write_str("no low memory for the memory manager's state"),
        }
    }
}

impl core::error::Error for InitError {}
