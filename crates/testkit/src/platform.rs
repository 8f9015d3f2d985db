//! [`MockPlatform`]: the host mock as a [`kmm::Platform`], so the umbrella's
//! [`kmm::MemoryManager::init`] brings the whole stack up on a mock machine
//! exactly as it does in a kernel.

use kmm::Platform;
use kmm_hal::{Cpu, MapError};
use kmm_mock::{Machine, MockCpu, MockLayout, MockPageTable};
use kmm_page_frame::Bootmem;
use kmm_pkmap::SpinWait;

/// The mock machine as a platform: its i386 tables (mirrored into the host
/// window), its TLB shootdown, `kmap` waits that spin, and CPUs of type `C`
/// (the machine's [`MockCpu`], or a test's wrapper of them).
#[derive(Debug)]
pub struct MockPlatform<C = MockCpu> {
    machine: Machine,
    _cpu: core::marker::PhantomData<fn() -> C>,
}

impl<C> MockPlatform<C> {
    /// The platform of `machine`.
    pub fn new(machine: Machine) -> Self {
        MockPlatform {
            machine,
            _cpu: core::marker::PhantomData,
        }
    }

    /// The machine.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }
}

// SAFETY: `kernel_tables` returns the machine's kernel page table with the
// direct map entered (`Machine::kernel_page_table` with `direct_map`), its
// page-table pages taken from `frames`; the mock's direct map is host memory
// mapped for as long as the machine lives, for every simulated CPU.
unsafe impl<C: Cpu + Send + Sync + 'static> Platform for MockPlatform<C> {
    type Cpu = C;
    type PageTable = MockPageTable;
    type Tlb = Machine;
    type Wait = SpinWait;
    type Layout = MockLayout;

    unsafe fn kernel_tables(
        &self,
        frames: &mut Bootmem<'_>,
        _layout: &MockLayout,
    ) -> Result<MockPageTable, MapError> {
        self.machine.kernel_page_table(frames, true)
    }
}
