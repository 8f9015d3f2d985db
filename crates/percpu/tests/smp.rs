//! Several CPUs of the mock at once, each thread bound to its CPU: every
//! CPU sees only its own copy of every per-CPU variable — static ones
//! through `get_cpu_var`, `per_cpu` and this-CPU operations, dynamic ones
//! through this-CPU operations and `per_cpu_ptr` — while all of them
//! allocate and free; chunks in the vmalloc area sit at the first chunk's
//! unit offsets, are populated on demand and given back; an interrupt
//! handler that re-enters finds its CPU's copy busy rather than aliased;
//! and the buddy allocator's `on_low` hook, run inside a chunk's creation
//! or population, frees per-CPU memory and finds allocation `Busy`.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use kmm_hal::{Cpu, PAGE_SIZE, PageTable, VirtAddr};
use kmm_mock::{Machine, MockCpu, MockFrames, MockPageTable};
use kmm_percpu::{
    BuddyAreas, PCPU_UNIT_SIZE, PerCpuAreas, Percpu, PercpuError, Template, VarDesc,
    VmallocBacking, define_per_cpu, setup_per_cpu_areas,
};
use kmm_testkit::TestMachine;
use kmm_vmalloc::Vmalloc;

define_per_cpu! {
    static HITS: shared AtomicU32 = AtomicU32::new(0);
    static LOCAL: usize = usize::MAX, shared AtomicUsize = AtomicUsize::new(0);
}

/// The areas of the registered `vars` (each CPU's from the buddy allocator,
/// on `nodes[cpu]` where given); the caller is bound to a CPU.
fn areas<'h>(
    host: &'h TestMachine,
    vars: &[VarDesc],
    nodes: &'h [u8],
) -> PerCpuAreas<'h, MockCpu, BuddyAreas<'h, MockCpu>> {
    setup_per_cpu_areas(
        host.cpu(),
        &Template::from_vars(vars),
        BuddyAreas::new(host.buddy(), nodes),
    )
    .unwrap()
}

/// vmalloc over the machine's kernel tables; the caller is bound to a CPU.
fn vmalloc(host: &TestMachine) -> Vmalloc<'_, MockPageTable, MockFrames, &Machine, MockCpu> {
    Vmalloc::new(
        host.slab(),
        host.kernel_tables(),
        host.machine(),
        host.machine().layout(),
    )
    .unwrap()
}

fn machine(cpus: usize) -> TestMachine {
    TestMachine::builder()
        .ram_mib(if cfg!(miri) { 24 } else { 64 })
        .highmem_mib(8)
        .cpus(cpus)
        .kernel_tables_mib(1)
        .build()
}

#[test]
fn every_cpu_sees_only_its_own_copies() {
    const CPUS: usize = 4;
    let rounds = if cfg!(miri) { 6 } else { 3000 };
    let host = machine(CPUS);
    let vars = [HITS.desc(), LOCAL.desc()];
    let (areas, vm) = {
        let _cpu0 = host.bind(0);
        (areas(&host, &vars, &[]), vmalloc(&host))
    };
    // SAFETY: `vm` maps its areas in these kernel tables.
    let backing = unsafe { VmallocBacking::new(&vm, host.kernel_tables(), host.buddy(), &[]) };
    let pcpu = Percpu::new(&areas, backing).unwrap();
    let (shared, filler) = {
        let _cpu0 = host.bind(0);
        let shared = pcpu.alloc_percpu::<AtomicUsize>().unwrap();
        // The first chunk's free pages taken, so the larger allocations
        // below always go to chunks in the vmalloc area, however the
        // threads interleave (not under Miri: see below).
        let filler: Vec<_> = if cfg!(miri) {
            Vec::new()
        } else {
            (1..PCPU_UNIT_SIZE / PAGE_SIZE)
                .map(|_| pcpu.__alloc_percpu(PAGE_SIZE, PAGE_SIZE).unwrap())
                .collect()
        };
        (shared, filler)
    };
    host.on_each_cpu(|cpu| {
        let this = areas.this_cpu();
        let mut live = Vec::new();
        for r in 0..rounds {
            {
                let mut v = areas.get_cpu_var(&LOCAL).unwrap();
                host.cpu().assert_preempt_disabled();
                assert_eq!(v.cpu_id(), cpu);
                let want = if r == 0 {
                    usize::MAX
                } else {
                    cpu * 100_000 + r - 1
                };
                assert_eq!(*v, want, "CPU {cpu} sees another CPU's copy");
                *v = cpu * 100_000 + r;
                v.shared().fetch_add(1, Ordering::Relaxed);
            }
            this.inc(&HITS).unwrap();
            // SAFETY: `shared` lives until the end of the test.
            unsafe { this.add_ptr(shared, cpu + 1) };
            // A dynamic counter of its own: only this CPU's copy moves.
            let p = pcpu.alloc_percpu::<AtomicUsize>().unwrap();
            // SAFETY: live until freed below.
            unsafe { this.add_ptr(p, cpu + 1) };
            for c in 0..CPUS {
                // SAFETY: live; an atomic, read from any CPU.
                let v =
                    unsafe { areas.per_cpu_ptr(p, c).unwrap().as_ref() }.load(Ordering::Relaxed);
                assert_eq!(v, if c == cpu { cpu + 1 } else { 0 }, "CPU {cpu}: copy {c}");
            }
            live.push(p);
            // Larger ones spill into chunks in the vmalloc area (not under
            // Miri: its software mock cannot dereference vmalloc addresses).
            if !cfg!(miri) && r % 2 == 0 {
                let big = pcpu
                    .__alloc_percpu(PAGE_SIZE / 2 + r % 100, 8)
                    .unwrap_or_else(|e| panic!("{e}: {:?}", pcpu.stats()));
                live.push(big.cast());
            }
            while live.len() > 24 {
                let q = live.swap_remove(r % live.len());
                pcpu.free_percpu(q).unwrap();
            }
        }
        for q in live {
            pcpu.free_percpu(q).unwrap();
        }
    });
    let _cpu0 = host.bind(0);
    for c in 0..CPUS {
        assert_eq!(
            areas.per_cpu(&HITS, c).unwrap().load(Ordering::Relaxed),
            rounds as u32
        );
        assert_eq!(
            areas.per_cpu(&LOCAL, c).unwrap().load(Ordering::Relaxed),
            rounds
        );
        // SAFETY: live; an atomic.
        let v = unsafe { areas.per_cpu_ptr(shared, c).unwrap().as_ref() }.load(Ordering::Relaxed);
        assert_eq!(v, rounds * (c + 1));
    }
    pcpu.free_percpu(shared).unwrap();
    for p in filler {
        pcpu.free_percpu(p).unwrap();
    }
    pcpu.check().unwrap();
    let s = pcpu.stats();
    assert_eq!((s.allocations, s.used_bytes), (0, 0));
    if !cfg!(miri) {
        assert!(s.created > 0, "vmalloc chunks were made: {s:?}");
    }
    pcpu.shrink().unwrap();
    assert_eq!(pcpu.stats().chunks, 1);
    // Given back on a CPU (vmalloc and the slab need one).
    drop(pcpu);
    drop(vm);
    drop(areas);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "the software mock cannot dereference vmalloc addresses"
)]
fn vmalloc_chunks_sit_at_the_first_chunks_offsets() {
    let host = machine(2);
    let cpu0 = host.bind(0);
    let areas = areas(&host, &[], &[]);
    let vm = vmalloc(&host);
    drop(cpu0);
    host.shrink_everywhere();
    let baseline = host.pages_out();
    let cpu0 = host.bind(0);
    {
        // SAFETY: `vm` maps its areas in these kernel tables.
        let backing = unsafe { VmallocBacking::new(&vm, host.kernel_tables(), host.buddy(), &[]) };
        let pcpu = Percpu::new(&areas, backing).unwrap();
        let per_unit = PCPU_UNIT_SIZE / PAGE_SIZE;
        // Fill the first chunk, then one small allocation in a new chunk.
        let mut ptrs: Vec<_> = (0..per_unit)
            .map(|_| pcpu.__alloc_percpu(PAGE_SIZE, PAGE_SIZE).unwrap())
            .collect();
        assert_eq!(pcpu.stats().chunks, 1);
        let small = pcpu.__alloc_percpu(4, 4).unwrap();
        let s = pcpu.stats();
        assert_eq!(s.chunks, 2);
        assert_eq!(
            s.populated_pages, 1,
            "populated on demand: one page per unit"
        );
        assert_eq!(vm.stats().areas, 1, "the chunk's region");
        ptrs.push(small);
        for _ in 0..2 * per_unit {
            ptrs.push(pcpu.__alloc_percpu(PAGE_SIZE, 8).unwrap());
        }
        assert_eq!(pcpu.stats().chunks, 4);
        // Every CPU's copy, written directly, is what the page tables map
        // at that address: the units are where the offsets say.
        for (i, &p) in ptrs.iter().enumerate() {
            for c in 0..2 {
                let a = areas.per_cpu_ptr(p, c).unwrap();
                assert_eq!(
                    a.as_ptr().addr(),
                    p.raw().wrapping_add(areas.offset(c).unwrap()),
                );
                let stamp = [(i as u8) ^ (c as u8 * 0x80); 4];
                // SAFETY: live allocation of at least 4 bytes.
                unsafe { a.as_ptr().cast::<[u8; 4]>().write(stamp) };
                let va = VirtAddr::from_ptr(a.as_ptr());
                if vm.is_vmalloc_addr(va) {
                    let mut buf = [0u8; 4];
                    host.kernel_tables()
                        .lock(host.cpu())
                        .pt
                        .read(va, &mut buf)
                        .unwrap();
                    assert_eq!(buf, stamp, "allocation {i}, CPU {c}");
                }
            }
        }
        for p in ptrs {
            pcpu.free_percpu(p).unwrap();
        }
        let s = pcpu.stats();
        assert_eq!(
            (s.chunks, s.empty_chunks, s.destroyed),
            (4, 3, 0),
            "nothing given back at the frees: {s:?}"
        );
        pcpu.check().unwrap();
        // The next allocation gives back the empty chunks beyond one spare.
        let p = pcpu.__alloc_percpu(4, 4).unwrap();
        let s = pcpu.stats();
        assert_eq!(
            (s.empty_chunks, s.destroyed),
            (1, 2),
            "one spare kept: {s:?}"
        );
        pcpu.free_percpu(p).unwrap();
        pcpu.check().unwrap();
        pcpu.shrink().unwrap();
        assert_eq!(pcpu.stats().chunks, 1);
        assert_eq!(pcpu.stats().populated_pages, 0);
    }
    vm.purge();
    assert_eq!(vm.stats().areas, 0, "every region given back");
    drop(cpu0);
    host.shrink_everywhere();
    assert_eq!(
        host.pages_out(),
        baseline,
        "every populated page given back"
    );
    let v = host.machine().tlb().violations();
    assert!(v.is_empty(), "{} stale uses, first {}", v.len(), v[0]);
    let _cpu0 = host.bind(0);
    drop(vm);
    drop(areas);
}

#[test]
fn an_interrupt_handler_finds_the_copy_busy() {
    let host = machine(1);
    let _cpu0 = host.bind(0);
    let vars = [HITS.desc(), LOCAL.desc()];
    let areas = areas(&host, &vars, &[]);
    let pcpu = Percpu::new(&areas, kmm_percpu::FirstChunkOnly).unwrap();
    let seen = std::cell::Cell::new(None);
    let handler = || {
        // Re-entering the held variable is refused, not aliased.
        let again = areas.get_cpu_var(&LOCAL).err();
        // This-CPU operations on a counter are fine in a handler.
        areas.this_cpu().inc(&HITS).unwrap();
        // The allocator is for process context.
        let alloc = pcpu.__alloc_percpu(8, 8).err();
        seen.set(Some((again, alloc)));
    };
    let cpu: &MockCpu = host.cpu();
    cpu.with_irq_handler(&handler, || {
        let mut v = areas.get_cpu_var(&LOCAL).unwrap();
        *v = 1;
        // Preemption is off, interrupts on: the handler runs here.
        cpu.raise_irq(0, 1);
        cpu.interrupt_point();
        *v += 1;
    });
    if MockCpu::delivers_irqs() {
        assert_eq!(
            seen.get(),
            Some((Some(PercpuError::Busy), Some(PercpuError::InInterrupt)))
        );
        assert_eq!(areas.this_cpu().read(&HITS), Ok(1));
    }
    assert_eq!(*areas.get_cpu_var(&LOCAL).unwrap(), 2);
    assert_eq!(cpu.preempt_count(), 0);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "the software mock cannot dereference vmalloc addresses"
)]
fn chunks_span_areas_on_distant_nodes() {
    // Two nodes: the areas lie tens of MiB apart, so each vmalloc chunk
    // spans that distance, with only the units' pages mapped — each on its
    // CPU's node.
    static NODES: [u8; 2] = [0, 1];
    let host = TestMachine::builder()
        .ram_mib(64)
        .nodes(2)
        .cpus(2)
        .cpu_nodes(&NODES)
        .kernel_tables_mib(1)
        .build();
    let _cpu0 = host.bind(0);
    let areas = areas(&host, &[], &NODES);
    let (a0, a1) = (
        areas.area(0).unwrap().as_ptr().addr(),
        areas.area(1).unwrap().as_ptr().addr(),
    );
    assert!(
        a0.abs_diff(a1) >= 16 << 20,
        "areas on different nodes: {a0:#x} {a1:#x}"
    );
    let vm = vmalloc(&host);
    {
        // SAFETY: `vm` maps its areas in these kernel tables.
        let backing =
            unsafe { VmallocBacking::new(&vm, host.kernel_tables(), host.buddy(), &NODES) };
        let pcpu = Percpu::new(&areas, backing).unwrap();
        let per_unit = PCPU_UNIT_SIZE / PAGE_SIZE;
        let ptrs: Vec<_> = (0..per_unit + 1)
            .map(|_| pcpu.__alloc_percpu(PAGE_SIZE, PAGE_SIZE).unwrap())
            .collect();
        let last = *ptrs.last().unwrap();
        assert_eq!(pcpu.stats().chunks, 2);
        assert_eq!(pcpu.stats().populated_pages, 1);
        let mem = host.buddy().mem();
        for (c, &node) in NODES.iter().enumerate() {
            let va = VirtAddr::from_ptr(areas.per_cpu_ptr(last, c).unwrap().as_ptr());
            assert!(vm.is_vmalloc_addr(va));
            let tr = host
                .kernel_tables()
                .lock(host.cpu())
                .pt
                .translate(va)
                .unwrap();
            let page = mem.pfn_to_page(tr.frame.pfn().unwrap()).unwrap();
            assert_eq!(page.node(), usize::from(node), "CPU {c}'s page");
            // Written directly, seen through the page tables.
            // SAFETY: a live page-sized allocation.
            unsafe {
                areas
                    .per_cpu_ptr(last, c)
                    .unwrap()
                    .as_ptr()
                    .write(0xA0 + c as u8)
            };
            let mut b = [0u8; 1];
            host.kernel_tables()
                .lock(host.cpu())
                .pt
                .read(va, &mut b)
                .unwrap();
            assert_eq!(b[0], 0xA0 + c as u8);
        }
        for p in ptrs {
            pcpu.free_percpu(p).unwrap();
        }
        pcpu.shrink().unwrap();
        pcpu.check().unwrap();
    }
    vm.purge();
    assert_eq!(vm.stats().areas, 0);
}

/// The reclaim hook of [`a_buddy_on_low_hook_reenters_the_allocator`]: runs
/// the armed closure once.
static REENTER: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>> = std::sync::OnceLock::new();
static ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn on_low(_: &kmm_buddy::Zone<'_>) {
    if ARMED.swap(false, Ordering::Relaxed)
        && let Some(f) = REENTER.get()
    {
        f();
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "the software mock cannot dereference vmalloc addresses"
)]
fn a_buddy_on_low_hook_reenters_the_allocator() {
    // The buddy allocator's `on_low` hook runs inside the backing's page
    // allocations (a chunk being created or populated): from there
    // `free_percpu` works and `alloc_percpu` is `Busy`, never a deadlock.
    kmm_mock::watchdog(
        "on_low re-entering percpu",
        std::time::Duration::from_secs(60),
        || {
            static HOOK: fn(&kmm_buddy::Zone<'_>) = on_low;
            let host: &'static TestMachine = Box::leak(Box::new(
                TestMachine::builder()
                    .ram_mib(64)
                    .highmem_mib(8)
                    .cpus(1)
                    .kernel_tables_mib(1)
                    .buddy_config(kmm_buddy::BuddyConfig {
                        on_low: Some(&HOOK),
                        ..Default::default()
                    })
                    .build(),
            ));
            let _cpu0 = host.bind(0);
            let areas = Box::leak(Box::new(areas(host, &[], &[])));
            let vm = Box::leak(Box::new(vmalloc(host)));
            // SAFETY: `vm` maps its areas in these kernel tables.
            let backing =
                unsafe { VmallocBacking::new(vm, host.kernel_tables(), host.buddy(), &[]) };
            let pcpu = Box::leak(Box::new(Percpu::new(areas, backing).unwrap()));
            let pcpu = &*pcpu;
            let mut first: Vec<_> = (0..PCPU_UNIT_SIZE / PAGE_SIZE)
                .map(|_| pcpu.__alloc_percpu(PAGE_SIZE, PAGE_SIZE).unwrap())
                .collect();
            let victim = first.pop().unwrap().raw();
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let seen2 = seen.clone();
            assert!(
                REENTER
                    .set(Box::new(move || {
                        let p = kmm_percpu::PercpuPtr::<u8>::from_raw(victim);
                        seen2.lock().unwrap().push((
                            pcpu.free_percpu(p),
                            pcpu.alloc_percpu::<u64>().err(),
                            pcpu.shrink().err(),
                            pcpu.check(),
                        ));
                    }))
                    .is_ok()
            );
            // Every zone below its low watermark: the next page allocation
            // takes the slow path and calls the hook.
            let buddy = host.buddy();
            let lows = || buddy.zones().iter().map(|z| z.low_events()).sum::<usize>();
            let start = lows();
            let mut hog = Vec::new();
            while lows() == start {
                hog.push(
                    buddy
                        .alloc_pages(kmm_buddy::Gfp::KERNEL | kmm_buddy::Gfp::HIGHMEM, 0)
                        .expect("above min"),
                );
            }
            ARMED.store(true, Ordering::Relaxed);
            // A new chunk: vmalloc and the buddy allocator run the hook.
            let p = pcpu.__alloc_percpu(PAGE_SIZE, PAGE_SIZE).unwrap();
            assert!(!ARMED.load(Ordering::Relaxed), "the hook ran");
            assert_eq!(
                *seen.lock().unwrap(),
                [(
                    Ok(()),
                    Some(PercpuError::Busy),
                    Some(PercpuError::Busy),
                    Ok(())
                )]
            );
            pcpu.check().unwrap();
            let s = pcpu.stats();
            assert_eq!((s.allocations, s.chunks), (first.len() + 1, 2));
            for page in hog {
                buddy.free_pages_page(page, 0).unwrap();
            }
            for q in first.into_iter().chain([p]) {
                pcpu.free_percpu(q).unwrap();
            }
            assert_eq!(pcpu.shrink(), Ok(1));
            pcpu.check().unwrap();
            let s = pcpu.stats();
            assert_eq!((s.chunks, s.allocations, s.used_bytes), (1, 0, 0));
        },
    );
}
