//! [`Machine`]: simulated RAM, the host window, the TLB checker and the CPUs.

use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use kmm_hal::{CrossCall, KernelLayout, KernelTlb, PhysAddr, VirtAddr};
use kmm_i386::I386Layout;

use crate::layout::{KERNEL_WINDOW, MockLayout};
use crate::ram::{Backing, Ram};
use crate::window::Window;
use crate::{MockCpu, TlbChecker};

/// Which i386 paging mode the machine's tables use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingMode {
    /// Classic 2-level paging, 4 MiB large pages.
    TwoLevel,
    /// PAE paging, 2 MiB large pages, physical addresses above 4 GiB.
    Pae,
}

/// Builds a [`Machine`].
#[derive(Debug, Clone)]
pub struct MachineBuilder {
    ram: usize,
    paging: PagingMode,
    cpus: usize,
    backing: Backing,
}

impl MachineBuilder {
    /// RAM size in bytes (a multiple of 4 KiB). Default 64 MiB.
    pub fn ram(mut self, bytes: usize) -> Self {
        self.ram = bytes;
        self
    }

    /// Paging mode. Default 2-level.
    pub fn paging(mut self, mode: PagingMode) -> Self {
        self.paging = mode;
        self
    }

    /// Number of CPUs. Default 1.
    pub fn cpus(mut self, n: usize) -> Self {
        self.cpus = n;
        self
    }

    /// Memory backing. Default [`Backing::default_for_host`].
    pub fn backing(mut self, backing: Backing) -> Self {
        self.backing = backing;
        self
    }

    /// Builds the machine: allocates (sparse) RAM and, in the mmap backing,
    /// reserves the kernel window and maps the direct map into it.
    ///
    /// On a 32-bit host (outside Miri) the software backing is built as the
    /// mmap one: the software RAM can lie where the kernel window's shape
    /// (the direct map, then the vmalloc area, pkmap and fixmap up to 1 GiB
    /// above it) would run past the top of the address space, and the layout
    /// would fail `kmm_hal::check_layout`.
    pub fn build(mut self) -> io::Result<Machine> {
        if cfg!(all(target_pointer_width = "32", not(miri))) && self.backing == Backing::Software {
            self.backing = Backing::Mmap;
        }
        let ram = Ram::new(self.ram, self.backing)?;
        let i386 = I386Layout::new(self.ram, self.paging == PagingMode::Pae, self.cpus);
        let direct = i386.direct_map().size();
        let window = match ram.fd() {
            Some(fd) => Window::mmap(fd, self.ram, KERNEL_WINDOW, direct)?,
            None => Window::software(ram.base(), self.ram),
        };
        let layout = MockLayout::new(i386, window.base());
        Ok(Machine {
            inner: Arc::new(Inner {
                window: Mutex::new(window),
                ram,
                layout,
                paging: self.paging,
                backing: self.backing,
                tlb: TlbChecker::with_cpus(self.cpus),
                cpu: MockCpu::new(self.cpus),
                tables_taken: AtomicBool::new(false),
            }),
        })
    }
}

pub(crate) struct Inner {
    // The window is declared before RAM so it is unmapped first.
    pub(crate) window: Mutex<Window>,
    pub(crate) ram: Ram,
    pub(crate) layout: MockLayout,
    pub(crate) paging: PagingMode,
    pub(crate) backing: Backing,
    pub(crate) tlb: TlbChecker,
    pub(crate) cpu: MockCpu,
    pub(crate) tables_taken: AtomicBool,
}

/// A simulated i386 machine on the host. Cheap to clone; clones share it.
///
/// - **RAM** of any size, sparse: a 4 GiB machine costs what is touched.
/// - **A kernel window**: Linux's i386 kernel layout shifted to a host address
///   ([`Machine::layout`]). With [`Backing::Mmap`] every mapping the kernel page
///   table makes is mirrored there, so addresses the allocators hand out can be
///   dereferenced and aliases share bytes.
/// - **Real i386 tables** ([`Machine::kernel_page_table`]), written into the
///   simulated RAM by `kmm-i386`.
/// - **A TLB checker** ([`Machine::tlb`]) with one TLB per CPU, **CPUs**
///   ([`Machine::cpu`]), and frame sources that run dry on demand
///   ([`crate::MockFrames`]).
/// - **Kernel-wide TLB flushes**: `Machine` is the mock's [`KernelTlb`], a
///   shootdown: each simulated CPU flushes its own TLB in the checker, run
///   there by [`MockCpu`]'s [`CrossCall`].
#[derive(Clone)]
pub struct Machine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("ram", &self.inner.ram.size())
            .field("paging", &self.inner.paging)
            .field("backing", &self.inner.backing)
            .field("layout", &self.inner.layout)
            .finish()
    }
}

impl Machine {
    /// A builder with the defaults: 64 MiB, 2-level paging, 1 CPU, the host's
    /// default backing.
    pub fn builder() -> MachineBuilder {
        MachineBuilder {
            ram: 64 << 20,
            paging: PagingMode::TwoLevel,
            cpus: 1,
            backing: Backing::default_for_host(),
        }
    }

    /// The kernel layout of this machine, in host addresses.
    pub fn layout(&self) -> &MockLayout {
        &self.inner.layout
    }

    /// The paging mode.
    pub fn paging(&self) -> PagingMode {
        self.inner.paging
    }

    /// The memory backing.
    pub fn backing(&self) -> Backing {
        self.inner.backing
    }

    /// RAM size in bytes.
    pub fn ram_size(&self) -> usize {
        self.inner.ram.size()
    }

    /// The end of low memory (the direct-mapped part of RAM).
    pub fn lowmem_end(&self) -> PhysAddr {
        PhysAddr::new(self.inner.layout.direct_map().size() as u64)
    }

    /// The TLB checker: one simulated TLB per CPU. Kernel-wide flushes made
    /// through this machine's [`KernelTlb`] are counted by
    /// [`TlbChecker::kernel_flushes`] (and [`TlbChecker::kernel_flush_counts`]);
    /// local ones ([`kmm_hal::PageTable::flush`]) by
    /// [`TlbChecker::flush_counts`].
    pub fn tlb(&self) -> &TlbChecker {
        &self.inner.tlb
    }

    /// The CPUs.
    pub fn cpu(&self) -> &MockCpu {
        &self.inner.cpu
    }

    /// True if kernel-window addresses can be dereferenced on the host.
    pub fn is_mirrored(&self) -> bool {
        self.window().is_mirrored()
    }

    pub(crate) fn window(&self) -> MutexGuard<'_, Window> {
        self.inner.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A host pointer to `len` bytes of physical memory at `pa` (any RAM,
    /// highmem included), or `None` outside RAM. The pointer stays valid as long
    /// as the machine lives.
    pub fn phys_ptr(&self, pa: PhysAddr, len: usize) -> Option<*mut u8> {
        self.inner.ram.ptr(pa, len)
    }

    /// Copies physical memory at `pa` into `buf`. `false` if outside RAM.
    pub fn read_phys(&self, pa: PhysAddr, buf: &mut [u8]) -> bool {
        match self.phys_ptr(pa, buf.len()) {
            Some(p) => {
                // SAFETY: `p` is valid for buf.len() bytes of RAM; the bytes may be
                // shared with the code under test, as physical memory is, and are
                // only copied.
                unsafe { std::ptr::copy(p, buf.as_mut_ptr(), buf.len()) };
                true
            }
            None => false,
        }
    }

    /// Copies `data` into physical memory at `pa`. `false` if outside RAM.
    pub fn write_phys(&self, pa: PhysAddr, data: &[u8]) -> bool {
        match self.phys_ptr(pa, data.len()) {
            Some(p) => {
                // SAFETY: as in `read_phys`.
                unsafe { std::ptr::copy(data.as_ptr(), p, data.len()) };
                true
            }
            None => false,
        }
    }

    /// A frame source over low memory from `start` to the end of lowmem (page
    /// tables must be direct-mapped).
    pub fn lowmem_frames(&self, start: PhysAddr) -> crate::MockFrames {
        crate::MockFrames::new(start, self.lowmem_end())
    }
}

// SAFETY: the mock has no hardware TLB: host accesses go through the
// window's mirror, which a page-table change updates at once. The only TLB
// state is the checker's model, one TLB per simulated CPU. Both methods are a
// shootdown through the mock's `CrossCall` (`on_each_cpu`), which runs the
// flush on every simulated CPU, as that CPU, and returns only after all have:
// each clears the given range (whole pages, partial ones at either end
// included) or everything from its own TLB, so no CPU's later access can go
// through a translation removed or changed before the call.
unsafe impl KernelTlb for Machine {
    /// A shootdown of `[start, end)`: every simulated CPU clears the range
    /// from its own TLB in the checker, on its own thread at its next
    /// interrupt-enabled point (or, for a CPU no thread is bound to, on the
    /// caller's thread acting as it), and the call waits for all. Counted by
    /// [`TlbChecker::kernel_flush_counts`].
    ///
    /// # Panics
    /// If called with interrupts disabled, with an `IrqSpinLock` held, or
    /// from an interrupt handler on the calling CPU (the deadlock rule:
    /// [`MockCpu::assert_may_wait`]).
    #[track_caller]
    fn flush_tlb_kernel_range(&self, start: VirtAddr, end: VirtAddr) {
        self.cpu().assert_may_wait("flush_tlb_kernel_range");
        self.cpu()
            .on_each_cpu(&|| self.tlb().flush_local_range(start, end));
        self.tlb().count_kernel_flush(false);
    }

    /// A shootdown of every CPU's whole TLB, as
    /// [`Machine::flush_tlb_kernel_range`](KernelTlb::flush_tlb_kernel_range).
    ///
    /// # Panics
    /// As `flush_tlb_kernel_range`.
    #[track_caller]
    fn flush_tlb_all(&self) {
        self.cpu().assert_may_wait("flush_tlb_all");
        self.cpu().on_each_cpu(&|| self.tlb().flush_local_all());
        self.tlb().count_kernel_flush(true);
    }
}
