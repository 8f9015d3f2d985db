//! The test rig: a slab allocator over a buddy allocator over a mock machine.
#![allow(dead_code)]

use kmm_buddy::{Buddy, BuddyConfig};
use kmm_hal::PhysAddr;
use kmm_mock::{Backing, Machine, MockCpu};
use kmm_page_frame::{Bootmem, MemMap, Region, RegionKind};
use kmm_slab::{Cache, SlabAllocator};

/// The slab allocator borrows the buddy allocator, which lives in a box the
/// rig owns; `Drop` takes them down in order: slab, buddy, then the machine.
pub struct Rig {
    pub slab: core::mem::ManuallyDrop<SlabAllocator<'static, MockCpu>>,
    pub buddy: &'static Buddy<'static, MockCpu>,
    buddy_box: *mut Buddy<'static, MockCpu>,
    pub machine: Machine,
}

// SAFETY: `buddy_box` is only used by `Drop`; everything else in the rig is
// Sync (the allocators are built to be shared between CPUs).
unsafe impl Sync for Rig {}

impl Drop for Rig {
    fn drop(&mut self) {
        // SAFETY: the slab allocator is dropped once, here, before the buddy
        // allocator it borrows.
        unsafe { core::mem::ManuallyDrop::drop(&mut self.slab) };
        // SAFETY: `buddy_box` came from `Box::into_raw` in `rig` and nothing
        // borrows it any more.
        drop(unsafe { Box::from_raw(self.buddy_box) });
    }
}

pub fn rig(mib: usize, cpus: usize) -> Rig {
    let machine = Machine::builder()
        .ram(mib << 20)
        .cpus(cpus)
        .backing(Backing::default_for_host())
        .build()
        .expect("machine");
    let map = [Region::new(0, (mib as u64) << 20, RegionKind::Usable)];
    let mut boot = Bootmem::new(&map, machine.lowmem_end()).expect("bootmem");
    boot.reserve(PhysAddr::new(0x10_0000), 0x10_0000)
        .expect("kernel");
    // SAFETY: the direct map is the machine's RAM, alive while the rig is.
    let mem = unsafe { MemMap::new(&mut boot, machine.layout()) }.expect("mem_map");
    let config = BuddyConfig {
        min_free_kbytes: Some(0),
        ..BuddyConfig::default()
    };
    // SAFETY: as above.
    let buddy = unsafe { Buddy::new(mem, boot, machine.cpu().clone(), config) }.expect("buddy");
    let buddy_box = Box::into_raw(Box::new(buddy));
    // SAFETY: the box lives until the rig drops it, after the slab allocator.
    let buddy: &'static Buddy<'static, MockCpu> = unsafe { &*buddy_box };
    let slab = {
        let _c = machine.cpu().bind(0).expect("bind");
        SlabAllocator::new(buddy).expect("slab")
    };
    Rig {
        slab: core::mem::ManuallyDrop::new(slab),
        buddy,
        buddy_box,
        machine,
    }
}

/// Pages the buddy allocator has handed out, less the cache of caches' slabs
/// (it keeps them, so stale cache handles can always be checked).
pub fn pages_out(r: &Rig) -> usize {
    let cc = r.slab.cache_of_caches();
    let cc_pages = slabs(r, cc) << r.slab.cache_stats(cc).unwrap().gfporder;
    r.buddy.managed_total() - r.buddy.free_pages_total() - cc_pages
}

/// Every CPU drains its arrays and every cache gives its free slabs back.
pub fn shrink_everywhere(r: &Rig) {
    r.machine.cpu().run_on_each(|_| {
        r.slab.shrink_all();
        r.buddy.drain_local();
    });
}

/// Slabs of a cache.
pub fn slabs(r: &Rig, c: Cache<'static>) -> usize {
    r.slab.cache_stats(c).expect("live cache").num_slabs
}
