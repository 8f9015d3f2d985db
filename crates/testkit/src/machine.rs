//! [`TestMachine`]: a mock machine that owns its allocators.
//!
//! # The one unsafe part
//! The allocators borrow what they are built on: `Buddy<'a>` lives in the
//! machine's RAM for `'a`, `SlabAllocator<'a>` holds a `&'a Buddy<'a>`. To let a
//! user return a machine from a helper and drop handles in any order, the
//! machine, the buddy allocator and the slab allocator live together in one
//! [`Arc`]'d [`Inner`], built with `'static` in their types. That `'static` is
//! a promise kept by this module alone:
//!
//! - **Drop order.** `Inner`'s fields drop in declaration order: the slab
//!   allocator, then the buddy allocator it borrows, then the cross-CPU call
//!   the buddy allocator holds as `&'static` (the machine's [`MockCpu`], in an
//!   `Arc` whose allocation never moves), then the CPUs they ran on, then the
//!   machine whose RAM (the direct map) holds `mem_map` and the zones.
//! - **No move.** The buddy allocator sits inside the `Arc`'s allocation, which
//!   never moves; the slab allocator's `&'static Buddy` points there. It is only
//!   replaced through `&mut self` with the `Arc` unique
//!   ([`TestMachine::rebuild`]), after the slab allocator is dropped.
//! - **No escape.** Users never see a `'static` allocator: [`TestMachine::buddy`]
//!   and [`TestMachine::slab`] hand out `&'h Buddy<'h>` and
//!   `&'h SlabAllocator<'h>`, where `'h` is the borrow of the `TestMachine`, so
//!   every page, cache handle or zone they return dies with that borrow
//!   ([`reborrow`] says why shortening the lifetime is sound).

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use kmm_buddy::{Buddy, BuddyConfig, MAX_ORDER};
use kmm_hal::{Cpu, KernelTables, Pfn, PhysAddr};
use kmm_mock::{Backing, CpuBinding, Machine, MockCpu, MockFrames, MockPageTable, PagingMode};
use kmm_page_frame::{PgFlags, Region, RegionKind, ZoneType};
use kmm_slab::{Cache, KmallocSizes, SlabAllocator};

const MIB: u64 = 1 << 20;
/// Node boundaries are rounded down to this (a 2-level large page).
const NODE_ALIGN: u64 = 4 * MIB;

/// What a [`TestMachine`] is built from; see the builder's methods.
#[derive(Debug, Clone)]
pub struct TestMachineBuilder {
    ram: usize,
    cpus: usize,
    paging: PagingMode,
    backing: Backing,
    map: Option<Vec<Region>>,
    bios_holes: bool,
    nodes: usize,
    pub(crate) highmem: Option<u64>,
    pub(crate) reserved: Vec<(u64, u64)>,
    pub(crate) config: BuddyConfig<'static>,
    page_tables: Option<(u64, u64)>,
    kmalloc_sizes: KmallocSizes,
}

impl Default for TestMachineBuilder {
    fn default() -> Self {
        TestMachineBuilder {
            ram: 64 << 20,
            cpus: 1,
            paging: PagingMode::TwoLevel,
            backing: Backing::default_for_host(),
            map: None,
            bios_holes: false,
            nodes: 1,
            highmem: None,
            reserved: vec![(MIB, MIB)],
            config: BuddyConfig::default(),
            page_tables: None,
            kmalloc_sizes: KmallocSizes::default(),
        }
    }
}

impl TestMachineBuilder {
    /// RAM in MiB. Default 64 MiB.
    pub fn ram_mib(self, mib: u64) -> Self {
        self.ram((mib << 20) as usize)
    }

    /// RAM in bytes (a multiple of 4 KiB).
    pub fn ram(mut self, bytes: usize) -> Self {
        self.ram = bytes;
        self
    }

    /// Simulated CPUs. Default 1.
    pub fn cpus(mut self, n: usize) -> Self {
        self.cpus = n;
        self
    }

    /// The i386 paging mode. Default 2-level.
    pub fn paging(mut self, mode: PagingMode) -> Self {
        self.paging = mode;
        self
    }

    /// How RAM is backed. Default [`Backing::default_for_host`] (`Mmap`,
    /// `Software` under Miri).
    pub fn backing(mut self, backing: Backing) -> Self {
        self.backing = backing;
        self
    }

    /// The BIOS memory map of a PC: usable RAM with a hole at 640 KiB–1 MiB
    /// and an unaligned ACPI NVS range at 5 MiB (the page holding it is
    /// reserved).
    pub fn bios_holes(mut self) -> Self {
        self.bios_holes = true;
        self
    }

    /// Splits the usable RAM into `n` nodes of equal size (boundaries rounded
    /// down to 4 MiB). Default 1.
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n.max(1);
        self
    }

    /// An explicit memory map, in place of the one [`Self::bios_holes`] and
    /// [`Self::nodes`] describe.
    pub fn memory_map(mut self, regions: Vec<Region>) -> Self {
        self.map = Some(regions);
        self
    }

    /// High memory from `mib` MiB on (default: where i386 puts it, 896 MiB),
    /// so that small machines have all three zones.
    pub fn highmem_mib(mut self, mib: u64) -> Self {
        self.highmem = Some(mib << 20);
        self
    }

    /// Reserves `len` bytes at `base` at boot, besides the kernel image at
    /// 1–2 MiB (unless [`Self::without_kernel_image`]).
    pub fn reserve(mut self, base: u64, len: u64) -> Self {
        self.reserved.push((base, len));
        self
    }

    /// Reserves nothing for a kernel image: every usable frame but the ones
    /// `mem_map` and the zones take goes to the buddy allocator (as the
    /// benches want, to compare with allocators that manage all of RAM).
    /// Reservations made with [`Self::reserve`] after this stay.
    pub fn without_kernel_image(mut self) -> Self {
        self.reserved.retain(|&r| r != (MIB, MIB));
        self
    }

    /// Builds the kernel page tables ([`TestMachine::kernel_tables`]): the
    /// i386 tables in the machine's paging mode with the direct map entered,
    /// their page-table pages taken from `mib` MiB of low memory reserved at
    /// boot from 2 MiB on (right after the kernel image), as vmalloc and
    /// pkmap need.
    pub fn kernel_tables_mib(mut self, mib: u64) -> Self {
        self.page_tables = Some((2 * MIB, mib * MIB));
        self.reserved.push((2 * MIB, mib * MIB));
        self
    }

    /// The buddy allocator's settings (default: `BuddyConfig::default()`).
    /// Hooks and `cpu_nodes` are `'static`: a function, or a `static`.
    pub fn buddy_config(mut self, config: BuddyConfig<'static>) -> Self {
        self.config = config;
        self
    }

    /// Zero watermarks (`min_free_kbytes: Some(0)`), so an allocation
    /// succeeds exactly when a block exists.
    pub fn no_reserve(self) -> Self {
        self.min_free_kbytes(Some(0))
    }

    /// The kmalloc size classes of the slab allocator ([`TestMachine::slab`];
    /// default [`KmallocSizes::Dense`]).
    pub fn kmalloc_sizes(mut self, sizes: KmallocSizes) -> Self {
        self.kmalloc_sizes = sizes;
        self
    }

    /// The buddy allocator's `min_free_kbytes` (`None`: Linux's default).
    pub fn min_free_kbytes(mut self, kbytes: Option<usize>) -> Self {
        self.config.min_free_kbytes = kbytes;
        self
    }

    /// The node of each CPU (index = CPU id).
    pub fn cpu_nodes(mut self, nodes: &'static [u8]) -> Self {
        self.config.cpu_nodes = nodes;
        self
    }

    /// Send order-0 requests past the per-CPU lists.
    pub fn bypass_pcp(mut self, bypass: bool) -> Self {
        self.config.bypass_pcp = bypass;
        self
    }

    /// The memory map the machine boots with.
    pub fn regions(&self) -> Vec<Region> {
        if let Some(map) = &self.map {
            return map.clone();
        }
        let top = self.ram as u64;
        let mut v = Vec::new();
        let low = if self.bios_holes {
            v.push(Region::new(0, 0x9_fc00, RegionKind::Usable));
            v.push(Region::new(0x9_fc00, 0x6_0400, RegionKind::Reserved));
            v.push(Region::new(0x50_0100, 0x1800, RegionKind::AcpiNvs));
            MIB
        } else {
            0
        };
        let n = self.nodes as u64;
        let bound = |i: u64| {
            if i == 0 {
                low
            } else if i == n {
                top
            } else {
                (top * i / n) & !(NODE_ALIGN - 1)
            }
        };
        for i in 0..n {
            let (s, e) = (bound(i), bound(i + 1));
            if e > s {
                v.push(Region::new(s, e - s, RegionKind::Usable).on_node(i as u8));
            }
        }
        v
    }

    /// Builds the machine and the buddy allocator on it (the slab allocator
    /// comes with the first [`TestMachine::slab`]). Panics if the description
    /// cannot boot: this is a test fixture.
    pub fn build(self) -> TestMachine {
        self.build_with_cpu(|cpu| cpu)
    }

    /// [`Self::build`], with the allocators running on `wrap(cpus)` instead of
    /// the machine's CPUs `cpus`: a [`Cpu`] of the test's own that forwards to
    /// the mock's and adds to it (a probe at the allocator's interrupt points,
    /// say). Threads still bind through the machine's CPUs
    /// ([`TestMachine::bind`], [`TestMachine::on_each_cpu`]), so the wrapper
    /// takes its ids from the [`MockCpu`] it wraps. Implementing `Cpu` is
    /// `unsafe`: keeping its contract is the wrapper's promise.
    ///
    /// ```
    /// use kmm_hal::sync::LockReport;
    /// use kmm_hal::{Cpu, IrqState};
    /// use kmm_mock::MockCpu;
    /// use kmm_testkit::TestMachine;
    ///
    /// /// The mock's CPUs, under another name.
    /// #[derive(Clone)]
    /// struct MyCpu(MockCpu);
    ///
    /// // SAFETY: every method forwards to `MockCpu`, which keeps the contract.
    /// unsafe impl Cpu for MyCpu {
    ///     fn count(&self) -> usize { self.0.count() }
    ///     fn id(&self) -> usize { self.0.id() }
    ///     fn irq_save(&self) -> IrqState { self.0.irq_save() }
    ///     unsafe fn irq_restore(&self, state: IrqState) {
    ///         // SAFETY: forwarded from the caller.
    ///         unsafe { self.0.irq_restore(state) }
    ///     }
    ///     fn irqs_disabled(&self) -> bool { self.0.irqs_disabled() }
    ///     fn preempt_disable(&self) { self.0.preempt_disable() }
    ///     unsafe fn preempt_enable(&self) {
    ///         // SAFETY: forwarded from the caller.
    ///         unsafe { self.0.preempt_enable() }
    ///     }
    ///     fn preempt_count(&self) -> usize { self.0.preempt_count() }
    ///     fn in_interrupt(&self) -> bool { self.0.in_interrupt() }
    ///     fn interrupt_point(&self) { self.0.interrupt_point() }
    ///     fn cpu_relax(&self) { self.0.cpu_relax() }
    ///     fn lockdep_report(&self, report: &LockReport) { self.0.lockdep_report(report) }
    /// }
    ///
    /// let host = TestMachine::builder().ram_mib(16).build_with_cpu(MyCpu);
    /// let _cpu0 = host.bind(0);
    /// let page = host.buddy().alloc_pages(kmm_buddy::Gfp::KERNEL, 0).unwrap();
    /// host.buddy().free_pages_page(page, 0).unwrap();
    /// ```
    pub fn build_with_cpu<C: Cpu + Clone + Send + Sync + 'static>(
        self,
        wrap: impl FnOnce(MockCpu) -> C,
    ) -> TestMachine<C> {
        let machine = self.mock_machine();
        let cpu = wrap(machine.cpu().clone());
        let cross = Arc::new(machine.cpu().clone());
        let buddy = boot_buddy(&machine, &self, cpu.clone(), &cross, self.config);
        let tables = self.page_tables.map(|(base, len)| {
            let mut frames = MockFrames::new(PhysAddr::new(base), PhysAddr::new(base + len));
            let pt = machine
                .kernel_page_table(&mut frames, true)
                .expect("kmm-testkit: the kernel page tables");
            KernelTables::new(pt, frames)
        });
        TestMachine {
            inner: Arc::new(Inner {
                slab: OnceLock::new(),
                tables,
                buddy: Some(buddy),
                cross,
                cpu,
                machine,
                desc: self,
            }),
        }
    }
}

impl TestMachineBuilder {
    /// The mock machine the description names, with nothing on it yet.
    pub(crate) fn mock_machine(&self) -> Machine {
        Machine::builder()
            .ram(self.ram)
            .cpus(self.cpus)
            .paging(self.paging)
            .backing(self.backing)
            .build()
            .expect("kmm-testkit: the mock machine")
    }
}

/// Boots `mem_map` and the buddy allocator on `machine` as a kernel does:
/// bootmem over the memory map, the reservations, `MemMap::new`, `Buddy::new`.
///
/// The result claims `'static`; see the module docs for who keeps that promise
/// (the caller stores it in an [`Inner`] beside a clone of `machine`).
///
/// Unless `config` names one, the allocator's cross-CPU call is `cross`, the
/// machine's CPUs, claimed `'static` as well (the `Inner` keeps the `Arc` and
/// drops it after the allocator).
fn boot_buddy<C: Cpu>(
    machine: &Machine,
    desc: &TestMachineBuilder,
    cpu: C,
    cross: &Arc<MockCpu>,
    mut config: BuddyConfig<'static>,
) -> Buddy<'static, C> {
    // SAFETY: the `Arc`'s allocation never moves and the `Inner` that stores
    // the result keeps the `Arc` and drops it after the allocator (module
    // docs), so the reference outlives every use.
    let cross: &'static MockCpu = unsafe { &*Arc::as_ptr(cross) };
    config.cross_call.get_or_insert(cross);
    let map = desc.regions();
    let layout = match desc.highmem {
        Some(high) => machine.layout().with_highmem_start(high as usize),
        None => *machine.layout(),
    };
    let reserved: Vec<Range<u64>> = desc.reserved.iter().map(|&(b, l)| b..b + l).collect();
    // Steps 1, 4 and 5 of `MemoryManager::init`, as a kernel boots them.
    let boot = kmm::init::bootmem(&map, &layout, &reserved).expect("kmm-testkit: bootmem");
    // SAFETY: the direct map is `machine`'s RAM, which is mapped for reading
    // and writing and which nothing else uses (the machine is new, or the
    // allocator that used it is gone: `TestMachine::rebuild`). It stays mapped
    // as long as the allocator: the `Inner` that stores the result holds a
    // clone of the machine and drops it last (module docs). The reservations
    // cover what is in use, and `cpu` keeps the `Cpu` contract (its type's
    // `unsafe impl`).
    unsafe { kmm::init::page_allocator(boot, &layout, cpu, config) }
        .unwrap_or_else(|e| panic!("kmm-testkit: {e}"))
}

/// What a [`TestMachine`] owns. Fields drop in declaration order: slab,
/// buddy, CPUs, machine (module docs).
struct Inner<C: Cpu + 'static> {
    slab: OnceLock<SlabAllocator<'static, C>>,
    /// The kernel page tables, if asked for (`kernel_tables_mib`).
    tables: Option<KernelTables<MockPageTable, MockFrames>>,
    /// Always `Some` but inside [`TestMachine::rebuild`].
    buddy: Option<Buddy<'static, C>>,
    /// The machine's CPUs as the buddy allocator's cross-CPU call (it holds
    /// them as `&'static`: dropped after it).
    cross: Arc<MockCpu>,
    /// The CPUs the allocators run on (the machine's, or a test's wrapper of
    /// them); a copy for [`TestMachine::rebuild`].
    cpu: C,
    machine: Machine,
    desc: TestMachineBuilder,
}

/// Shortens the allocator's lifetime parameter to the borrow `'h`.
///
/// `Buddy<'a>` and `SlabAllocator<'a>` are invariant in `'a` (their locks hold
/// `'a` data), so the compiler does not shorten it on its own. Shortening a
/// shared reference's inner lifetime is sound here because no method reachable
/// through `&Buddy<'h>` or `&SlabAllocator<'h>` stores a value of lifetime `'h`
/// inside the allocator: pages are taken as `&Page` of any lifetime and checked
/// against `mem_map`, cache handles are validated on every use, and the report
/// hook is a `fn` pointer. What the allocators hand out with `'h` (pages, zones,
/// cache handles) is valid for `'h`, as the allocator is. The CPU type `C` is
/// `'static` and the same on both sides.
macro_rules! reborrow {
    ($r:expr, $ty:ident) => {{
        let r: &'h $ty<'static, C> = $r;
        // SAFETY: see `reborrow`'s docs: the allocator outlives `'h`, and
        // nothing of lifetime `'h` can be stored into it.
        unsafe { &*(r as *const $ty<'static, C>).cast::<$ty<'h, C>>() }
    }};
}

/// A mock machine with `mem_map`, the zones and the buddy allocator on it, and
/// the slab allocator on first use. Cheap to clone (clones share it); `Send`
/// and `Sync` (with a wrapper `C`, when `C` is); return it from helpers, keep it in a `static`, drop clones in
/// any order: the allocators go when the last clone does, before the machine.
///
/// `C` is the CPU type the allocators run on: the machine's [`MockCpu`], or a
/// test's wrapper of it ([`TestMachineBuilder::build_with_cpu`]).
pub struct TestMachine<C: Cpu + 'static = MockCpu> {
    inner: Arc<Inner<C>>,
}

impl<C: Cpu + 'static> Clone for TestMachine<C> {
    fn clone(&self) -> Self {
        TestMachine {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Cpu + 'static> std::fmt::Debug for TestMachine<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestMachine")
            .field("machine", &self.inner.machine)
            .field("description", &self.inner.desc)
            .field("slab", &self.inner.slab.get().is_some())
            .finish()
    }
}

impl TestMachine {
    /// A builder with the defaults: 64 MiB of RAM in one usable region on one
    /// node, 1 CPU, 2-level paging, the host's default backing, the kernel
    /// image reserved at 1–2 MiB, `BuddyConfig::default()`.
    pub fn builder() -> TestMachineBuilder {
        TestMachineBuilder::default()
    }

    /// Asserts that every zone is fully coalesced and every managed page free.
    pub fn assert_fully_coalesced(&self) {
        if let Err(e) = crate::model::buddy::fully_coalesced(self) {
            panic!("{e}");
        }
    }
}

impl<C: Cpu + Clone + Send + Sync + 'static> TestMachine<C> {
    /// The description this machine was built from.
    pub fn description(&self) -> &TestMachineBuilder {
        &self.inner.desc
    }

    /// The mock machine (RAM, TLB checker, CPUs).
    pub fn machine(&self) -> &Machine {
        &self.inner.machine
    }

    /// The kernel page tables and their frame source (the frames reserved by
    /// [`TestMachineBuilder::kernel_tables_mib`]), behind their IRQ-safe
    /// lock. Panics if the machine was built without them.
    pub fn kernel_tables(&self) -> &KernelTables<MockPageTable, MockFrames> {
        self.inner
            .tables
            .as_ref()
            .expect("kmm-testkit: build the machine with `kernel_tables_mib` for page tables")
    }

    /// The machine's CPUs (the ones threads bind to).
    pub fn cpu(&self) -> &MockCpu {
        self.inner.machine.cpu()
    }

    /// Binds the calling thread to CPU `id` until the binding is dropped.
    /// Panics if it cannot (no such CPU, taken, or this thread is bound).
    pub fn bind(&self, id: usize) -> CpuBinding {
        crate::cpus::bind(self.cpu(), id)
    }

    /// Runs `f(cpu)` on one thread per CPU, each bound to its CPU; the results
    /// in CPU order.
    pub fn on_each_cpu<T: Send>(&self, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
        self.cpu().run_on_each(f)
    }

    /// The buddy allocator, for as long as this handle is borrowed.
    pub fn buddy<'h>(&'h self) -> &'h Buddy<'h, C> {
        reborrow!(self.inner_buddy(), Buddy)
    }

    fn inner_buddy(&self) -> &Buddy<'static, C> {
        self.inner
            .buddy
            .as_ref()
            .expect("kmm-testkit: a buddy allocator outside rebuild")
    }

    /// The slab allocator, built on the buddy allocator the first time it is
    /// asked for (on the calling thread's CPU, or on the first free CPU if the
    /// thread is not bound).
    pub fn slab<'h>(&'h self) -> &'h SlabAllocator<'h, C> {
        let slab = self.inner.slab.get_or_init(|| {
            let buddy: *const Buddy<'static, C> = self.inner_buddy();
            // SAFETY: the slab allocator is stored in the same `Inner` as the
            // buddy allocator, which sits in the `Arc`'s allocation (it never
            // moves), is only replaced after the slab allocator is dropped
            // (`rebuild`), and drops after it (field order; module docs).
            let buddy: &'static Buddy<'static, C> = unsafe { &*buddy };
            let sizes = self.inner.desc.kmalloc_sizes;
            self.on_some_cpu(|| {
                SlabAllocator::with_sizes(buddy, sizes).expect("kmm-testkit: slab allocator")
            })
        });
        reborrow!(slab, SlabAllocator)
    }

    /// Runs `f` on the calling thread as a CPU: the one it is bound to, or
    /// the first free one for the duration of `f`.
    pub fn on_some_cpu<T>(&self, f: impl FnOnce() -> T) -> T {
        let free = crate::cpus::bind_free(self.cpu());
        let r = f();
        drop(free);
        r
    }

    /// Throws the allocators away and boots a new buddy allocator with
    /// `config` on the same machine (its RAM is reused, as a kernel reuses it
    /// at the next boot). The slab allocator comes back on first use.
    ///
    /// Panics if this is not the only clone of the machine.
    pub fn rebuild(&mut self, config: BuddyConfig<'static>) {
        let inner = Arc::get_mut(&mut self.inner)
            .expect("kmm-testkit: rebuild needs the only handle to the machine");
        // The slab allocator borrows the buddy allocator: it goes first.
        inner.slab = OnceLock::new();
        inner.desc.config = config;
        // The old buddy allocator is dropped before the new one is built
        // over the same RAM.
        inner.buddy = None;
        let cpu = inner.cpu.clone();
        inner.buddy = Some(boot_buddy(
            &inner.machine,
            &inner.desc,
            cpu,
            &inner.cross,
            config,
        ));
    }

    /// Drains every CPU's per-CPU page lists (each CPU its own, on its own
    /// thread).
    pub fn drain_every_cpu(&self) {
        self.on_each_cpu(|_| self.buddy().drain_local());
    }

    /// Every CPU drains its slab arrays and every cache gives its free slabs
    /// back, then every CPU drains its page lists. Builds the slab allocator
    /// if there is none yet.
    pub fn shrink_everywhere(&self) {
        let slab = self.slab();
        self.on_each_cpu(|_| {
            slab.shrink_all();
            self.buddy().drain_local();
        });
    }

    /// Pages the buddy allocator has handed out, less the slabs of the cache
    /// of caches if the slab allocator exists (it keeps them, so stale cache
    /// handles can always be checked).
    pub fn pages_out(&self) -> usize {
        let b = self.buddy();
        let kept = self.inner.slab.get().map_or(0, |_| {
            let s = self.slab();
            let st = s
                .cache_stats(s.cache_of_caches())
                .expect("the cache of caches");
            st.num_slabs << st.gfporder
        });
        b.managed_total() - b.free_pages_total() - kept
    }

    /// The number of slabs of a live cache.
    pub fn slabs(&self, cache: Cache<'_>) -> usize {
        let s = self.slab();
        // The handle came from this machine's allocator (or is refused).
        s.cache_stats(cache).expect("a live cache").num_slabs
    }

    /// The fewest blocks zone `zone` (an index into `buddy().zones()`) can form
    /// from its free frames: each run of free frames split greedily into the
    /// largest aligned blocks (what full coalescing gives).
    pub fn ideal_free_area(&self, zone: usize) -> [usize; MAX_ORDER] {
        let buddy = self.buddy();
        let z = &buddy.zones()[zone];
        let page = |pfn: usize| buddy.mem().pfn_to_page(Pfn::new(pfn)).expect("in mem_map");
        let span = z.span();
        let mut counts = [0; MAX_ORDER];
        let mut pfn = span.start_pfn as usize;
        let end = span.end_pfn() as usize;
        while pfn < end {
            if page(pfn).test(PgFlags::RESERVED) {
                pfn += 1;
                continue;
            }
            let mut run_end = pfn;
            while run_end < end && !page(run_end).test(PgFlags::RESERVED) {
                run_end += 1;
            }
            for (_, order) in kmm_buddy::aligned_blocks(pfn, run_end) {
                counts[order] += 1;
            }
            pfn = run_end;
        }
        counts
    }
}

/// The zone index (into `Buddy::zones`) of a node's zone.
pub fn zone_index(node: usize, zone: ZoneType) -> usize {
    node * ZoneType::COUNT + zone as usize
}
