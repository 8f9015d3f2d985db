//! [`Buddy`]: the zoned buddy allocator — construction, allocation and freeing.

use core::sync::atomic::AtomicUsize;

use kmm_hal::{Cpu, CpuLocal, CrossCall, PAGE_SIZE, PerCpu, Pfn};
use kmm_page_frame::{Bootmem, MAX_NUMNODES, MemMap, ZoneType};

use crate::BuddyError;
use crate::pcp::{Pcp, PcpSlot, PerCpuPages, batch_for};
use crate::zone::Zone;

/// Most CPUs the allocator keeps per-CPU lists for.
pub const MAX_CPUS: usize = 64;

/// Linux's `sysctl_lowmem_reserve_ratio` for DMA and NORMAL.
pub(crate) const LOWMEM_RESERVE_RATIO: [usize; 2] = [256, 32];

/// Settings for [`Buddy::new`]; the default is Linux's behaviour on one node.
#[derive(Clone, Copy, Default)]
pub struct BuddyConfig<'h> {
    /// The reserve kept free in low memory, in KiB (Linux's `min_free_kbytes`).
    /// `None` computes Linux's default, `sqrt(lowmem_kbytes * 16)` clamped to
    /// 128..=65536.
    pub min_free_kbytes: Option<usize>,
    /// The node of each CPU (index = CPU id); CPUs past the slice are on node 0.
    pub cpu_nodes: &'h [u8],
    /// Called when an allocation finds a zone below its low watermark: a kernel
    /// wakes its reclaim thread here (Linux's `wakeup_kswapd`).
    ///
    /// Contract: called from [`Buddy::alloc_pages_node`] (every allocation's
    /// slow path), once per zone of the zonelist, on the allocating CPU, with
    /// no zone lock held and no per-CPU list borrowed. It runs in the
    /// allocation's context: from an interrupt handler (interrupts off) for
    /// an atomic allocation made there, so it must not sleep or wait for
    /// anything an interrupted thread holds. It may allocate from and free to
    /// this allocator; an allocation it makes may find the zone low and call
    /// it again, so it guards its own recursion. A panic in it propagates to
    /// the allocating caller with nothing of the allocator's held.
    pub on_low: Option<&'h (dyn Fn(&Zone<'_>) + Sync)>,
    /// Zeroes a high-memory frame for `Gfp::ZERO` (a kernel maps it with
    /// `kmap_atomic`). Without it, zeroed allocations skip high memory.
    ///
    /// Contract: called once for each frame of a zeroed block that the direct
    /// map does not reach, after the block left the allocator's lists and
    /// before it is returned, on the allocating CPU, in the allocation's
    /// context, with no zone lock held and no per-CPU list borrowed. It must
    /// write zeros to the whole frame (the allocator hands the block out as
    /// zeroed) and nothing else; it may allocate from and free to this
    /// allocator.
    pub zero_highmem: Option<&'h (dyn Fn(Pfn) + Sync)>,
    /// Send order-0 requests straight to the zone free lists, as if every
    /// per-CPU list had `high` 0 (for measurement and debugging).
    pub bypass_pcp: bool,
    /// How the allocator runs code on the other CPUs (Linux's IPIs): an
    /// allocation that may wait ([`crate::Gfp::WAIT`]) and finds memory short
    /// empties every CPU's per-CPU lists through it before it gives up
    /// ([`Buddy::drain_all_pages`]); the slab allocator empties every CPU's
    /// array caches the same way. Required when the `Cpu` has more than one
    /// CPU ([`crate::BuddyError::NoCrossCall`] otherwise); `None` is fine on
    /// one CPU. It must reach the CPUs of the allocator's own `Cpu`.
    pub cross_call: Option<&'h (dyn CrossCall + Sync)>,
}

impl core::fmt::Debug for BuddyConfig<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BuddyConfig")
            .field("min_free_kbytes", &self.min_free_kbytes)
            .field("cpu_nodes", &self.cpu_nodes)
            .field("on_low", &self.on_low.is_some())
            .field("zero_highmem", &self.zero_highmem.is_some())
            .field("bypass_pcp", &self.bypass_pcp)
            .field("cross_call", &self.cross_call.is_some())
            .finish()
    }
}

/// How a successful free ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freed {
    /// The last reference went: the block is back in the allocator.
    Released,
    /// Other references remain (see [`Buddy::get_page`]); the block stays
    /// allocated.
    StillReferenced,
}

/// A precomputed zonelist: zone indices in fallback order (Linux's
/// `struct zonelist`), empty zones left out.
#[derive(Clone, Copy)]
pub(crate) struct ZoneList {
    pub(crate) zones: [u8; MAX_NUMNODES * ZoneType::COUNT],
    pub(crate) len: u8,
}

impl ZoneList {
    pub(crate) const EMPTY: ZoneList = ZoneList {
        zones: [0; MAX_NUMNODES * ZoneType::COUNT],
        len: 0,
    };

    #[inline]
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.zones[..usize::from(self.len)]
    }
}

/// The zoned buddy allocator over a [`MemMap`].
///
/// Zones are kept per node (DMA, NORMAL, HIGHMEM); each has `MAX_ORDER` free
/// lists threaded through the page descriptors, an IRQ-safe lock, watermarks
/// and one per-CPU order-0 list per CPU. Every method can be called from
/// several CPUs at once, and from interrupt handlers (with [`crate::Gfp::ATOMIC`]).
pub struct Buddy<'a, C: Cpu> {
    pub(crate) mem: MemMap<'a>,
    pub(crate) zones: &'a [Zone<'a>],
    pub(crate) cpu: C,
    pub(crate) cpu_nodes: [u8; MAX_CPUS],
    pub(crate) on_low: Option<&'a (dyn Fn(&Zone<'_>) + Sync)>,
    pub(crate) zero_highmem: Option<&'a (dyn Fn(Pfn) + Sync)>,
    pub(crate) min_free_kbytes: usize,
    pub(crate) failures: AtomicUsize,
    /// Drains of every CPU's lists done through a cross-CPU call.
    pub(crate) ipi_drains: AtomicUsize,
    pub(crate) cross: Option<&'a (dyn CrossCall + Sync)>,
    pub(crate) bypass_pcp: bool,
    /// `zonelists[node][highest zone]`.
    pub(crate) zonelists: [[ZoneList; ZoneType::COUNT]; MAX_NUMNODES],
    /// More than one node: the CPU's node has to be looked up.
    pub(crate) numa: bool,
}

impl<'a, C: Cpu> core::fmt::Debug for Buddy<'a, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Buddy")
            .field("zones", &self.zones)
            .field("min_free_kbytes", &self.min_free_kbytes)
            .finish()
    }
}

/// Places `n` values made by `make(i)` in bootmem memory for `'a`.
///
/// # Safety
/// As for [`Buddy::new`]: the direct map must map the memory bootmem returns,
/// for `'a`, and nothing else may use it.
unsafe fn boot_array<'a, T>(
    boot: &mut Bootmem<'_>,
    mem: &MemMap<'_>,
    n: usize,
    mut make: impl FnMut(usize) -> T,
) -> Result<&'a [T], BuddyError> {
    if n == 0 {
        return Ok(&[]);
    }
    let bytes = n
        .checked_mul(core::mem::size_of::<T>())
        .ok_or(BuddyError::Bootmem(
            kmm_page_frame::BootmemError::BadRequest,
        ))?;
    let pa = boot.alloc(bytes, core::mem::align_of::<T>().max(PAGE_SIZE))?;
    let va = mem
        .direct_map()
        .phys_to_virt(pa)
        .ok_or(BuddyError::Bootmem(
            kmm_page_frame::BootmemError::OutOfMemory,
        ))?;
    let ptr = va.as_mut_ptr::<T>();
    for i in 0..n {
        // SAFETY: bootmem reserved `bytes` for us, page-aligned (so aligned for
        // T); i < n. `Buddy::new`'s contract: the direct map maps that memory
        // writable, and nothing else uses it.
        unsafe { ptr.add(i).write(make(i)) };
    }
    // SAFETY: all n values were written; the memory stays ours for 'a.
    Ok(unsafe { core::slice::from_raw_parts(ptr.cast_const(), n) })
}

/// Places the zones and their per-CPU lists in bootmem memory (zone `z`'s
/// slots are `pcps[z * ncpu .. (z + 1) * ncpu]`, each on cache lines of its
/// own: `PerCpu` is 64-byte aligned).
///
/// # Safety
/// As for [`Buddy::new`]; and every per-CPU access to the zones' lists must
/// be made with guards of the one `Cpu` value the allocator is built with
/// (the contract of `CpuLocal::new`).
unsafe fn place_zones<'a>(
    boot: &mut Bootmem<'_>,
    mem: &MemMap<'a>,
    ncpu: usize,
) -> Result<&'a [Zone<'a>], BuddyError> {
    let nzones = mem.nr_node_ids() * ZoneType::COUNT;
    // SAFETY: forwarded from the caller.
    let pcps: &'a [PcpSlot<'a>] = unsafe {
        boot_array(boot, mem, nzones * ncpu, |i| {
            let z = i / ncpu;
            let (n, t) = (z / ZoneType::COUNT, z % ZoneType::COUNT);
            let present = mem.node(n).map_or(0, |node| node.zones[t].present);
            let (high, batch) = batch_for(present as usize);
            PerCpu::new(Pcp::new(), PerCpuPages::new(high, batch))
        })?
    };
    let make_zone = |z: usize| {
        let (n, t) = (z / ZoneType::COUNT, z % ZoneType::COUNT);
        let span = mem.node(n).map(|node| node.zones[t]).unwrap_or_default();
        let kind = ZoneType::from_index(t).expect("t < COUNT");
        // SAFETY: `CpuLocal::new`'s contract is the caller's: the allocator
        // passes only guards of its own `cpu` to these lists.
        let lists = unsafe { CpuLocal::new(&pcps[z * ncpu..(z + 1) * ncpu]) };
        Zone::new(kind, n, span, lists)
    };
    // SAFETY: forwarded from the caller.
    unsafe { boot_array(boot, mem, nzones, make_zone) }
}

/// The node of each CPU, from the configuration; unknown nodes become 0.
fn cpu_node_table(cpu_nodes: &[u8], nr_node_ids: usize) -> [u8; MAX_CPUS] {
    let mut table = [0u8; MAX_CPUS];
    for (slot, &n) in table.iter_mut().zip(cpu_nodes) {
        *slot = if usize::from(n) < nr_node_ids { n } else { 0 };
    }
    table
}

/// Linux's `free_all_bootmem`: bootmem is done; every frame it did not keep
/// goes to its zone, in runs cut at zone boundaries, as the largest aligned
/// blocks that fit.
fn free_all_bootmem<'a, C: Cpu>(
    mem: &mut MemMap<'a>,
    boot: &Bootmem<'_>,
    zones: &'a [Zone<'a>],
    cpu: &C,
) {
    mem.release_free(boot);
    let mut at = 0;
    while let Some(run) = boot.next_free_run(at) {
        let mut pfn = run.start as usize;
        let run_end = (run.end as usize).min(mem.len());
        while pfn < run_end {
            let page = mem
                .pfn_to_page(Pfn::new(pfn))
                .expect("pfn below mem_map's end");
            let zone = &zones[page.zone_index()];
            let end = run_end.min(zone.span().end_pfn() as usize);
            zone.add_managed(end - pfn);
            let mut locked = zone.lock_irqsave(cpu);
            for (s, order) in crate::aligned_blocks(pfn, end) {
                locked.free_one(mem, s, order);
            }
            pfn = end;
        }
        at = run.end;
    }
}

impl<'a, C: Cpu> Buddy<'a, C> {
    /// Builds the allocator: places the zones and per-CPU lists with `boot`,
    /// then hands every free frame of `mem` to the zones (Linux's
    /// `free_all_bootmem`), in the largest aligned blocks, and sets the
    /// watermarks. Bootmem is finished after this.
    ///
    /// # Safety
    /// The direct map of `mem` must map the memory `boot` hands out, which
    /// nothing else may use, and it must stay mapped for `'a`. `boot` must be
    /// the bootmem `mem` was built with, in its latest state (not a clone
    /// taken before later allocations): the frames it calls free go to the
    /// allocator and must be unused. `cpu` keeps the `Cpu` contract (the
    /// per-CPU lists rely on it).
    pub unsafe fn new(
        mut mem: MemMap<'a>,
        mut boot: Bootmem<'_>,
        cpu: C,
        config: BuddyConfig<'a>,
    ) -> Result<Buddy<'a, C>, BuddyError> {
        let ncpu = cpu.count();
        if ncpu > MAX_CPUS {
            return Err(BuddyError::TooManyCpus);
        }
        if ncpu > 1 && config.cross_call.is_none() {
            return Err(BuddyError::NoCrossCall);
        }
        // SAFETY: forwarded from the caller; the lists are reached only
        // through this allocator, with guards of `cpu` (moved into it below).
        let zones = unsafe { place_zones(&mut boot, &mem, ncpu)? };
        let cpu_nodes = cpu_node_table(config.cpu_nodes, mem.nr_node_ids());
        free_all_bootmem(&mut mem, &boot, zones, &cpu);
        let mut b = Buddy {
            mem,
            zones,
            cpu,
            cpu_nodes,
            on_low: config.on_low,
            zero_highmem: config.zero_highmem,
            min_free_kbytes: 0,
            failures: AtomicUsize::new(0),
            ipi_drains: AtomicUsize::new(0),
            cross: config.cross_call,
            bypass_pcp: config.bypass_pcp,
            zonelists: [[ZoneList::EMPTY; ZoneType::COUNT]; MAX_NUMNODES],
            numa: false,
        };
        b.build_zonelists();
        b.set_min_free_kbytes(config.min_free_kbytes);
        Ok(b)
    }
}

impl<C: Cpu> Buddy<'_, C> {
    /// Builds every node's zonelists: its own zones from the highest allowed
    /// down to DMA, then the other nodes' in turn, empty zones left out.
    fn build_zonelists(&mut self) {
        let n = self.mem.nr_node_ids();
        self.numa = self.mem.nodes().count() > 1;
        for node in 0..n.min(MAX_NUMNODES) {
            for class in 0..ZoneType::COUNT {
                let mut zl = ZoneList::EMPTY;
                for i in 0..n {
                    let nd = (node + i) % n;
                    for t in (0..=class).rev() {
                        let z = nd * ZoneType::COUNT + t;
                        if self.zones[z].managed() > 0 {
                            zl.zones[usize::from(zl.len)] = z as u8;
                            zl.len += 1;
                        }
                    }
                }
                self.zonelists[node][class] = zl;
            }
        }
    }
}
