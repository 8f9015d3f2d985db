//! [`MmMachine`]: a mock machine with the whole memory manager on it, built
//! by [`kmm::MemoryManager::init`] as a kernel builds it.

use std::ops::Range;
use std::sync::Arc;

use kmm::{BootParams, MemoryManager};
use kmm_mock::{CpuBinding, Machine, MockCpu};
use kmm_pkmap::SpinWait;

use crate::TestMachineBuilder;
use crate::platform::MockPlatform;

/// The memory manager on the mock, as the kit builds it.
pub type MockMm<'h> = MemoryManager<'h, MockPlatform>;

/// A mock machine and the [`MemoryManager`] `init` built on it: bootmem,
/// the kernel page tables, `mem_map`, the buddy and slab allocators,
/// vmalloc, pkmap and per-CPU memory. Dropping it takes the manager apart
/// ([`MemoryManager::teardown`]) before the machine's RAM goes.
pub struct MmMachine {
    /// From `init`; torn down in `drop`, before `cross` and `machine`.
    mm: *mut MockMm<'static>,
    /// The machine's CPUs as the buddy allocator's cross-CPU call, which
    /// holds them as `&'static`: dropped after the manager.
    _cross: Arc<MockCpu>,
    machine: Machine,
}

// SAFETY: the manager is shared by reference only (every allocator locks
// inside), and it is torn down once, by the last owner, in `drop`.
unsafe impl Send for MmMachine {}
// SAFETY: as above.
unsafe impl Sync for MmMachine {}

impl std::fmt::Debug for MmMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmMachine")
            .field("machine", &self.machine)
            .field("mm", self.mm())
            .finish()
    }
}

impl TestMachineBuilder {
    /// Builds the machine and brings the whole memory manager up on it with
    /// [`MemoryManager::init`] (the kernel page tables are built from
    /// bootmem by the mock's platform; [`Self::kernel_tables_mib`] is not
    /// needed). Panics if the description cannot boot: a test fixture.
    pub fn build_mm(self) -> MmMachine {
        let (machine, cross, mm) = self.boot_mm(|platform, params| {
            // SAFETY: `boot_mm`'s machine is new: its RAM is used by nothing
            // else, the memory map and reservations describe it, and its
            // direct map stays mapped until `MmMachine::drop` tears the
            // manager down (before the machine goes). The machine's CPUs and
            // its shootdown describe the CPUs; `init` runs once for this RAM.
            unsafe { MemoryManager::init(platform, params) }
        });
        let mm = mm.unwrap_or_else(|e| panic!("kmm-testkit: MemoryManager::init: {e}"));
        MmMachine {
            mm,
            _cross: cross,
            machine,
        }
    }

    /// Builds the machine and hands `boot` the mock's platform and the boot
    /// parameters the description names (memory map, reservations, layout,
    /// CPUs, shootdown, the buddy allocator's settings with the machine's
    /// CPUs as its cross-CPU call), on a bound CPU; returns the machine, the
    /// cross-CPU call `boot` was given (claimed `'static`: keep it as long as
    /// what `boot` built) and what `boot` returned. For a test of
    /// [`kmm::GlobalHeap::init`]: anything built must be leaked, or torn
    /// down before the machine and the `Arc` are dropped.
    pub fn boot_mm<R>(
        self,
        boot: impl FnOnce(MockPlatform, BootParams<'_, MockPlatform>) -> R,
    ) -> (Machine, Arc<MockCpu>, R) {
        let machine = self.mock_machine();
        let cross = Arc::new(machine.cpu().clone());
        // SAFETY: the `Arc`'s allocation never moves; the caller keeps the
        // `Arc` as long as what `boot` built (this method's contract).
        let cross_ref: &'static MockCpu = unsafe { &*Arc::as_ptr(&cross) };
        let mut config = self.config;
        config.cross_call.get_or_insert(cross_ref);
        let regions = self.regions();
        let reserved: Vec<Range<u64>> = self.reserved.iter().map(|&(b, l)| b..b + l).collect();
        let layout = match self.highmem {
            Some(high) => machine.layout().with_highmem_start(high as usize),
            None => *machine.layout(),
        };
        let params = BootParams::new(
            &regions,
            0..0,
            layout,
            machine.cpu().clone(),
            machine.clone(),
            SpinWait,
        )
        .reserved(&reserved)
        .buddy_config(config);
        let platform = MockPlatform::new(machine.clone());
        let r = {
            let _cpu = crate::cpus::bind_free(machine.cpu());
            boot(platform, params)
        };
        (machine, cross, r)
    }
}

impl MmMachine {
    /// The memory manager, for as long as this machine is borrowed.
    pub fn mm(&self) -> &MockMm<'_> {
        // SAFETY: the manager lives until `drop`, which needs `&mut self`,
        // so it outlives the borrow; shortening its lifetime parameter to
        // the borrow is sound for the reason `TestMachine`'s allocators'
        // is (no method stores a value of that lifetime into it).
        unsafe { &*self.mm.cast::<MockMm<'_>>() }
    }

    /// The mock machine (RAM, TLB checker, CPUs).
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// The machine's CPUs.
    pub fn cpu(&self) -> &MockCpu {
        self.machine.cpu()
    }

    /// Binds the calling thread to CPU `id` until the binding is dropped.
    /// Panics if it cannot.
    pub fn bind(&self, id: usize) -> CpuBinding {
        crate::cpus::bind(self.cpu(), id)
    }

    /// Runs `f(cpu)` on one thread per CPU, each bound to its CPU.
    pub fn on_each_cpu<T: Send>(&self, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
        self.cpu().run_on_each(f)
    }
}

impl Drop for MmMachine {
    fn drop(&mut self) {
        let _cpu = crate::cpus::bind_free(self.machine.cpu());
        // SAFETY: `mm` came from `init` as `&mut` and was only shared
        // through `mm()` borrows of `self`, all ended (`&mut self`); nothing
        // it handed out outlives those borrows. Called once.
        unsafe { MemoryManager::teardown(self.mm) };
    }
}
