//! What the vmalloc tests share: the machine they run on, checked access
//! to its memory, and a pool of free-tree nodes that stands in for
//! `kmalloc` (counting nodes out so a test can see none is lost).
#![allow(dead_code)]

use core::ptr::NonNull;

use kmm_hal::{PAGE_SIZE, PhysAddr, VirtAddr};
use kmm_mock::{AccessError, Machine, MockCpu, MockFrames, MockPageTable};
use kmm_testkit::TestMachine;
use kmm_vmalloc::Vmalloc;
use kmm_vmalloc::free_area::{FreeNode, OwnedNode};

/// The allocator on a test machine, flushing every simulated CPU's TLB.
pub type Vm<'h> = Vmalloc<'h, MockPageTable, MockFrames, &'h Machine, MockCpu>;

/// `mib` MiB of RAM, high memory from 16 MiB on (so vmalloc pages come from
/// HIGHMEM first), `cpus` CPUs, zero watermarks, kernel page tables.
pub fn rig(mib: u64, cpus: usize) -> TestMachine {
    let host = TestMachine::builder()
        .ram_mib(mib)
        .highmem_mib(16.min(mib))
        .cpus(cpus)
        .no_reserve()
        .kernel_tables_mib(1)
        .build();
    host.slab();
    host
}

/// The allocator over `host`'s vmalloc range.
pub fn vm(host: &TestMachine) -> Vm<'_> {
    Vmalloc::new(
        host.slab(),
        host.kernel_tables(),
        host.machine(),
        host.machine().layout(),
    )
    .expect("vmalloc over the test machine")
}

/// Writes `data` at `va` through the page tables (a checked access: the
/// translation must exist and no CPU's TLB may be stale there).
pub fn write(host: &TestMachine, va: VirtAddr, data: &[u8]) -> Result<(), AccessError> {
    host.kernel_tables().lock(host.cpu()).pt.write(va, data)
}

/// Reads at `va` through the page tables (checked).
pub fn read(host: &TestMachine, va: VirtAddr, buf: &mut [u8]) -> Result<(), AccessError> {
    host.kernel_tables().lock(host.cpu()).pt.read(va, buf)
}

/// Reads physical memory.
pub fn read_phys(host: &TestMachine, pa: PhysAddr, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    assert!(host.machine().read_phys(pa, &mut v), "{pa} is RAM");
    v
}

/// Page-table frames handed out now.
pub fn table_frames(host: &TestMachine) -> usize {
    host.kernel_tables().lock(host.cpu()).frames.outstanding()
}

/// A distinct byte pattern for page `i` of a buffer.
pub fn stamp(i: usize) -> [u8; 8] {
    ((i as u64) << 8 | 0xA5).to_le_bytes()
}

/// The address of page `i` of the buffer at `p`.
pub fn page_va(p: *const u8, i: usize) -> VirtAddr {
    VirtAddr::new(p as usize + i * PAGE_SIZE)
}

/// Hands out nodes from leaked boxes and takes them back.
#[derive(Default)]
pub struct NodePool {
    /// Nodes handed out and not yet given back.
    pub outstanding: usize,
}

impl NodePool {
    /// A fresh node.
    pub fn take(&mut self) -> OwnedNode {
        self.outstanding += 1;
        let node = NonNull::from(Box::leak(Box::new(FreeNode::new())));
        // SAFETY: a fresh box nobody else knows of; `give` frees it.
        unsafe { OwnedNode::from_raw(node) }
    }

    /// Frees a node handed back.
    pub fn give(&mut self, node: OwnedNode) {
        self.outstanding -= 1;
        // SAFETY: every `OwnedNode` in these tests comes from `take` (a
        // leaked box) and is given back once.
        drop(unsafe { Box::from_raw(node.into_raw().as_ptr()) });
    }

    /// Frees every node in `nodes`, returning how many there were.
    pub fn give_all(&mut self, nodes: impl IntoIterator<Item = OwnedNode>) -> usize {
        nodes.into_iter().map(|n| self.give(n)).count()
    }
}
