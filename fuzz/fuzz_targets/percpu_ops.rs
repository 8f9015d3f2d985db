//! Fuzzes the dynamic per-CPU allocator on a two-CPU mock with chunks in the
//! vmalloc area: `__alloc_percpu` of random sizes and alignments (bad ones
//! included), `free_percpu` of live allocations, bad frees (inside an
//! allocation, twice, a static variable, anything), and this-CPU adds on
//! live counters.
//!
//! After each step: the call returned what the model predicts (a refusal
//! its error, with nothing changed), `Percpu::check` passes, and every CPU's
//! copy of every live allocation still holds its stamp (nothing else wrote
//! it; copies never overlap). Each input ends by freeing everything and
//! giving the empty chunks back, so the next starts afresh.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use kmm_hal::PAGE_SIZE;
use kmm_mock::{CpuBinding, Machine, MockCpu, MockFrames, MockPageTable};
use kmm_percpu::{
    BuddyAreas, PCPU_MIN_ALLOC_SIZE, PerCpuAreas, Percpu, PercpuError, PercpuPtr, Template,
    VmallocBacking, define_per_cpu, setup_per_cpu_areas,
};
use kmm_testkit::TestMachine;
use kmm_vmalloc::Vmalloc;
use libfuzzer_sys::fuzz_target;

type Vm = Vmalloc<'static, MockPageTable, MockFrames, &'static Machine, MockCpu>;
type Areas = PerCpuAreas<'static, MockCpu, BuddyAreas<'static, MockCpu>>;
type Backing =
    VmallocBacking<'static, 'static, MockPageTable, MockFrames, &'static Machine, MockCpu>;
type Pc = Percpu<'static, MockCpu, BuddyAreas<'static, MockCpu>, Backing>;

const CPUS: usize = 2;

define_per_cpu! {
    static COUNT: shared AtomicU32 = AtomicU32::new(0);
}

struct World {
    areas: &'static Areas,
    pcpu: &'static Pc,
    _cpu0: CpuBinding,
}

fn host() -> &'static TestMachine {
    static HOST: OnceLock<TestMachine> = OnceLock::new();
    HOST.get_or_init(|| {
        TestMachine::builder()
            .ram_mib(32)
            .highmem_mib(8)
            .cpus(CPUS)
            .kernel_tables_mib(1)
            .build()
    })
}

thread_local! {
    static WORLD: World = {
        let host = host();
        let cpu0 = host.bind(0);
        static VARS: OnceLock<[kmm_percpu::VarDesc; 1]> = OnceLock::new();
        let vars = VARS.get_or_init(|| [COUNT.desc()]);
        let areas: &'static Areas = Box::leak(Box::new(
            setup_per_cpu_areas(
                host.cpu(),
                &Template::from_vars(vars),
                BuddyAreas::new(host.buddy(), &[]),
            )
            .expect("per-CPU areas"),
        ));
        let vm: &'static Vm = Box::leak(Box::new(
            Vmalloc::new(host.slab(), host.kernel_tables(), host.machine(), host.machine().layout())
                .expect("vmalloc"),
        ));
        // SAFETY: `vm` maps its areas in these kernel tables.
        let backing = unsafe { VmallocBacking::new(vm, host.kernel_tables(), host.buddy(), &[]) };
        let pcpu: &'static Pc =
            Box::leak(Box::new(Percpu::new(areas, backing).expect("the allocator")));
        World { areas, pcpu, _cpu0: cpu0 }
    };
}

fuzz_target!(|data: &[u8]| {
    WORLD.with(|w| run(w, data));
});

fn copy(w: &World, cookie: usize, cpu: usize, len: usize) -> &'static mut [u8] {
    let p = w
        .areas
        .per_cpu_ptr(PercpuPtr::<u8>::from_raw(cookie), cpu)
        .expect("a possible CPU");
    // SAFETY: a live allocation of `len` bytes (the model's), used only here.
    unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), len) }
}

fn run(w: &World, data: &[u8]) {
    let pcpu = w.pcpu;
    // cookie -> (size, stamp)
    let mut live: BTreeMap<usize, (usize, u8)> = BTreeMap::new();
    let mut freed: Vec<usize> = Vec::new();
    let mut next = 1u8;
    for &[k, a, b] in data.as_chunks::<3>().0 {
        let before = pcpu.stats();
        match k % 8 {
            0..=2 => {
                let size = match k % 3 {
                    0 => usize::from(a) % 64,
                    1 => usize::from(a) * 16 + usize::from(b) % 16,
                    _ => usize::from(u16::from_le_bytes([a, b])) % (PAGE_SIZE + 64),
                };
                let align = match b % 16 {
                    15 => 3 * usize::from(a | 1),
                    s => 1 << (s % 14),
                };
                let r = pcpu.__alloc_percpu(size, align);
                match r {
                    Ok(p) => {
                        assert!(size > 0 && size <= PAGE_SIZE && align <= PAGE_SIZE);
                        for cpu in 0..CPUS {
                            let c = copy(w, p.raw(), cpu, size);
                            assert!(c.iter().all(|&x| x == 0), "not zeroed");
                            assert!(c.as_ptr().addr().is_multiple_of(align), "misaligned");
                            c.fill(next);
                        }
                        assert!(
                            live.insert(p.raw(), (size, next)).is_none(),
                            "handed out twice"
                        );
                        freed.retain(|&f| f != p.raw());
                        next = next.wrapping_add(1).max(1);
                    }
                    Err(PercpuError::ZeroSize) => assert_eq!(size, 0),
                    Err(PercpuError::TooLarge { .. }) => assert!(size > PAGE_SIZE),
                    Err(PercpuError::BadAlign { .. }) => {
                        assert!(!align.is_power_of_two() || align > PAGE_SIZE)
                    }
                    Err(PercpuError::OutOfMemory) => {}
                    Err(e) => panic!("alloc({size}, {align}): {e}"),
                }
                if r.is_err() {
                    assert_eq!(pcpu.stats().allocations, before.allocations);
                }
            }
            3 | 4 => {
                if let Some((&c, _)) = live.iter().nth(usize::from(a) % live.len().max(1)) {
                    let (size, stamp) = live.remove(&c).expect("live");
                    for cpu in 0..CPUS {
                        assert!(
                            copy(w, c, cpu, size).iter().all(|&x| x == stamp),
                            "overwritten"
                        );
                    }
                    pcpu.free_percpu(PercpuPtr::<u8>::from_raw(c))
                        .expect("a live allocation");
                    freed.push(c);
                }
            }
            5 => {
                // Bad frees: refused, nothing changed.
                let cookie = match a % 4 {
                    0 if !live.is_empty() => {
                        let (&c, &(size, _)) =
                            live.iter().nth(usize::from(b) % live.len()).unwrap();
                        c + 1
                            + usize::from(b)
                                % size
                                    .next_multiple_of(PCPU_MIN_ALLOC_SIZE)
                                    .saturating_sub(1)
                                    .max(1)
                    }
                    1 if !freed.is_empty() => freed[usize::from(b) % freed.len()],
                    2 => w.areas.ptr_of(&COUNT).expect("registered").raw(),
                    _ => usize::from(u16::from_le_bytes([a, b])) << 12,
                };
                if !live.contains_key(&cookie) {
                    let r = pcpu.free_percpu(PercpuPtr::<u8>::from_raw(cookie));
                    assert!(
                        matches!(
                            r,
                            Err(PercpuError::Foreign
                                | PercpuError::StaticArea
                                | PercpuError::Interior
                                | PercpuError::NotLive)
                        ),
                        "bad free of {cookie:#x}: {r:?}"
                    );
                    assert_eq!(pcpu.stats(), before, "a refused free changed something");
                }
            }
            6 => {
                // A this-CPU add on a live allocation of at least 4 bytes,
                // aligned: only this CPU's copy changes.
                let pick = live
                    .iter()
                    .find(|(c, (s, _))| *s >= 4 && c.is_multiple_of(4))
                    .map(|(&c, &(s, st))| (c, s, st));
                if let Some((c, size, stamp)) = pick {
                    let this = w.areas.this_cpu();
                    let p = PercpuPtr::<AtomicU32>::from_raw(c);
                    // SAFETY: live, aligned, at least an `AtomicU32`.
                    unsafe { this.add_ptr(p, u32::from(a)) };
                    let old = u32::from_le_bytes([stamp; 4]);
                    // SAFETY: as above.
                    let v0 = unsafe { w.areas.per_cpu_ptr(p, 0).unwrap().as_ref() }
                        .load(Ordering::Relaxed);
                    assert_eq!(v0, old.wrapping_add(u32::from(a)));
                    // SAFETY: as above.
                    unsafe { this.add_ptr(p, 0u32.wrapping_sub(u32::from(a))) };
                    assert!(
                        copy(w, c, 1, size).iter().all(|&x| x == stamp),
                        "CPU 1's copy moved"
                    );
                }
            }
            _ => {
                pcpu.shrink().expect("process context");
            }
        }
        pcpu.check().unwrap_or_else(|e| panic!("check: {e}"));
        assert_eq!(pcpu.stats().allocations, live.len());
    }
    for (c, _) in live {
        pcpu.free_percpu(PercpuPtr::<u8>::from_raw(c))
            .expect("a live allocation");
    }
    pcpu.shrink().expect("process context");
    let s = pcpu.stats();
    assert_eq!((s.chunks, s.allocations, s.used_bytes), (1, 0, 0));
}
