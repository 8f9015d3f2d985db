//! Bad input: every refusal of `__alloc_percpu`, `alloc_percpu` and
//! `free_percpu` returns its typed error with nothing changed — the same
//! counters, the allocator's check passing, and the live allocations
//! intact and still freeable. On plain memory (Miri runs these).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use common::{FakeCpu, SoftAreas, SoftBacking, ledger};
use kmm_hal::{Cpu, PAGE_SIZE};
use kmm_percpu::{
    FirstChunkOnly, PCPU_MAX_ALLOC, PCPU_UNIT_SIZE, Percpu, PercpuError, PercpuPtr, Template,
    define_per_cpu, setup_per_cpu_areas,
};

define_per_cpu! {
    static COUNT: shared AtomicU32 = AtomicU32::new(0);
}

/// Runs `f` on an allocator with one live allocation, checking that
/// nothing changed afterwards.
fn with_allocator(
    f: impl FnOnce(&Percpu<'_, FakeCpu, SoftAreas, SoftBacking>, PercpuPtr<u64>, &FakeCpu),
) {
    let cpu = FakeCpu::new(2);
    let l = ledger();
    let list = [COUNT.desc()];
    let areas =
        setup_per_cpu_areas(&cpu, &Template::from_vars(&list), SoftAreas(l.clone())).unwrap();
    let pcpu = Percpu::new(&areas, SoftBacking(l.clone())).unwrap();
    let live = pcpu.alloc_percpu::<u64>().unwrap();
    let p = areas.per_cpu_ptr(live, 1).unwrap();
    // SAFETY: live, ours.
    unsafe { p.as_ptr().write(0xfeed) };
    let before = pcpu.stats();
    f(&pcpu, live, &cpu);
    assert_eq!(pcpu.stats(), before, "a refusal changed the allocator");
    pcpu.check().unwrap();
    // SAFETY: still live.
    let v = unsafe { p.as_ptr().read() };
    assert_eq!(v, 0xfeed, "the live allocation was touched");
    pcpu.free_percpu(live).unwrap();
}

#[test]
fn size_zero() {
    with_allocator(|pcpu, _, _| {
        assert_eq!(pcpu.__alloc_percpu(0, 4), Err(PercpuError::ZeroSize));
        assert_eq!(pcpu.alloc_percpu::<[u32; 0]>(), Err(PercpuError::ZeroSize));
    });
}

#[test]
fn larger_than_a_page() {
    with_allocator(|pcpu, _, _| {
        assert_eq!(
            pcpu.__alloc_percpu(PCPU_MAX_ALLOC + 1, 4),
            Err(PercpuError::TooLarge {
                size: PAGE_SIZE + 1
            })
        );
        assert_eq!(
            pcpu.__alloc_percpu(usize::MAX, 4),
            Err(PercpuError::TooLarge { size: usize::MAX })
        );
        assert_eq!(
            pcpu.alloc_percpu::<[u8; PAGE_SIZE * 2]>(),
            Err(PercpuError::TooLarge {
                size: 2 * PAGE_SIZE
            })
        );
    });
}

#[test]
fn bad_alignments() {
    with_allocator(|pcpu, _, _| {
        for align in [0, 3, 6, 12, PAGE_SIZE + 4] {
            assert_eq!(
                pcpu.__alloc_percpu(8, align),
                Err(PercpuError::BadAlign { align })
            );
        }
        assert_eq!(
            pcpu.__alloc_percpu(8, 2 * PAGE_SIZE),
            Err(PercpuError::BadAlign {
                align: 2 * PAGE_SIZE
            })
        );
    });
    // A page-sized alignment is fine.
    with_allocator(|pcpu, _, _| {
        let p = pcpu.__alloc_percpu(8, PAGE_SIZE).unwrap();
        assert!(
            pcpu.areas()
                .per_cpu_ptr(p, 0)
                .unwrap()
                .as_ptr()
                .addr()
                .is_multiple_of(PAGE_SIZE)
        );
        pcpu.free_percpu(p).unwrap();
    });
}

#[test]
fn free_of_a_foreign_pointer() {
    with_allocator(|pcpu, live, _| {
        for cookie in [
            usize::MAX / 2,
            usize::MAX,
            live.raw().wrapping_add(PCPU_UNIT_SIZE * 1000),
        ] {
            assert_eq!(
                pcpu.free_percpu(PercpuPtr::<u8>::from_raw(cookie)),
                Err(PercpuError::Foreign),
                "{cookie:#x}"
            );
        }
        // A real address of a CPU's copy is not a per-CPU pointer either
        // (unless it happens to fall in a unit's offset range).
        let heap = Box::new(0u64);
        let addr = std::ptr::from_ref(&*heap).addr();
        let r = pcpu.free_percpu(PercpuPtr::<u8>::from_raw(addr));
        assert!(matches!(r, Err(PercpuError::Foreign)), "{r:?}");
    });
}

#[test]
fn free_of_a_static_variable() {
    with_allocator(|pcpu, _, _| {
        let p = pcpu.areas().ptr_of(&COUNT).unwrap();
        assert_eq!(pcpu.free_percpu(p), Err(PercpuError::StaticArea));
        assert_eq!(
            pcpu.free_percpu(p.byte_add(8)),
            Err(PercpuError::StaticArea)
        );
    });
}

#[test]
fn free_inside_an_allocation() {
    with_allocator(|pcpu, live, _| {
        for delta in [1, 2, 4, 7] {
            assert_eq!(
                pcpu.free_percpu(live.byte_add(delta)),
                Err(PercpuError::Interior),
                "+{delta}"
            );
        }
    });
}

#[test]
fn double_free_and_never_allocated() {
    with_allocator(|pcpu, live, _| {
        let other = pcpu.__alloc_percpu(32, 8).unwrap();
        pcpu.free_percpu(other).unwrap();
        let before = pcpu.stats();
        assert_eq!(pcpu.free_percpu(other), Err(PercpuError::NotLive));
        assert_eq!(pcpu.stats(), before);
        // Free space of the first chunk, never handed out.
        assert_eq!(
            pcpu.free_percpu(live.byte_add(PCPU_UNIT_SIZE / 2)),
            Err(PercpuError::NotLive)
        );
        // Re-allocation gets it back, zeroed.
        let again = pcpu.__alloc_percpu(32, 8).unwrap();
        assert_eq!(again, other);
        pcpu.free_percpu(again).unwrap();
    });
}

#[test]
fn double_free_in_a_later_chunk() {
    let cpu = FakeCpu::new(2);
    let l = ledger();
    let areas = setup_per_cpu_areas(&cpu, &Template::from_vars(&[]), SoftAreas(l.clone())).unwrap();
    let pcpu = Percpu::new(&areas, SoftBacking(l.clone())).unwrap();
    let pages = PCPU_UNIT_SIZE / PAGE_SIZE;
    let ptrs: Vec<_> = (0..pages + 1)
        .map(|_| pcpu.__alloc_percpu(PAGE_SIZE, PAGE_SIZE).unwrap())
        .collect();
    assert_eq!(pcpu.stats().chunks, 2, "the last one needed a second chunk");
    let last = *ptrs.last().unwrap();
    pcpu.free_percpu(last).unwrap();
    // The chunk is empty, kept as the spare: a second free is NotLive.
    assert_eq!(pcpu.stats().empty_chunks, 1);
    assert_eq!(pcpu.free_percpu(last), Err(PercpuError::NotLive));
    pcpu.shrink().unwrap();
    // Once the chunk is given back, the address is no chunk's.
    assert_eq!(pcpu.free_percpu(last), Err(PercpuError::Foreign));
    for p in &ptrs[..pages] {
        pcpu.free_percpu(*p).unwrap();
    }
    pcpu.check().unwrap();
    assert!(l.lock().unwrap().chunks.is_empty());
}

#[test]
fn interrupt_context_is_refused() {
    with_allocator(|pcpu, live, cpu| {
        let irq = cpu.irq_guard();
        assert_eq!(pcpu.__alloc_percpu(8, 8), Err(PercpuError::InInterrupt));
        assert_eq!(pcpu.free_percpu(live), Err(PercpuError::InInterrupt));
        assert_eq!(pcpu.shrink(), Err(PercpuError::InInterrupt));
        drop(irq);
    });
}

#[test]
fn backing_failures_leave_nothing_behind() {
    let cpu = FakeCpu::new(3);
    let l = ledger();
    let areas = setup_per_cpu_areas(&cpu, &Template::from_vars(&[]), SoftAreas(l.clone())).unwrap();
    let pcpu = Percpu::new(&areas, SoftBacking(l.clone())).unwrap();
    // Fill the first chunk.
    let ptrs: Vec<_> = (0..PCPU_UNIT_SIZE / PAGE_SIZE)
        .map(|_| pcpu.__alloc_percpu(PAGE_SIZE, PAGE_SIZE).unwrap())
        .collect();
    let before = pcpu.stats();
    assert_eq!(before.chunks, 1);
    // Creation fails.
    l.lock().unwrap().fail_create = true;
    assert_eq!(
        pcpu.__alloc_percpu(PAGE_SIZE, PAGE_SIZE),
        Err(PercpuError::OutOfMemory)
    );
    l.lock().unwrap().fail_create = false;
    assert_eq!(pcpu.stats(), before);
    // Population fails: nothing allocated; the new chunk stays as the spare.
    l.lock().unwrap().fail_populate = 1;
    assert_eq!(
        pcpu.__alloc_percpu(PAGE_SIZE, PAGE_SIZE),
        Err(PercpuError::OutOfMemory)
    );
    pcpu.check().unwrap();
    assert_eq!(l.lock().unwrap().pages, 0, "no page populated");
    assert_eq!(pcpu.stats().allocations, before.allocations);
    // The first chunk alone: OutOfMemory when full.
    let solo_cpu = FakeCpu::new(1);
    let solo =
        setup_per_cpu_areas(&solo_cpu, &Template::from_vars(&[]), SoftAreas(ledger())).unwrap();
    let first = Percpu::new(&solo, FirstChunkOnly).unwrap();
    let mut n = 0;
    while first.__alloc_percpu(PAGE_SIZE, PAGE_SIZE).is_ok() {
        n += 1;
    }
    assert_eq!(n, PCPU_UNIT_SIZE / PAGE_SIZE);
    assert_eq!(first.__alloc_percpu(4, 4), Err(PercpuError::OutOfMemory));
    for p in ptrs {
        pcpu.free_percpu(p).unwrap();
    }
    pcpu.shrink().unwrap();
    assert!(l.lock().unwrap().chunks.is_empty() && l.lock().unwrap().pages == 0);
    // Counters in dynamic memory are zeroed for every CPU.
    let c = pcpu.alloc_percpu::<AtomicU32>().unwrap();
    for id in 0..3 {
        // SAFETY: live, an atomic.
        let v = unsafe { areas.per_cpu_ptr(c, id).unwrap().as_ref() }.load(Ordering::Relaxed);
        assert_eq!(v, 0);
    }
    pcpu.free_percpu(c).unwrap();
}

#[test]
fn one_allocator_per_set_of_areas() {
    let cpu = FakeCpu::new(2);
    let l = ledger();
    let areas = setup_per_cpu_areas(&cpu, &Template::from_vars(&[]), SoftAreas(l.clone())).unwrap();
    let first = Percpu::new(&areas, FirstChunkOnly).unwrap();
    let p = first.alloc_percpu::<u64>().unwrap();
    // A second allocator would hand out `p`'s bytes again.
    assert!(matches!(
        Percpu::new(&areas, FirstChunkOnly),
        Err(PercpuError::AreasTaken)
    ));
    first.free_percpu(p).unwrap();
    drop(first);
    // Dropped with nothing in the first chunk: the areas are free again.
    let second = Percpu::new(&areas, FirstChunkOnly).unwrap();
    let q = second.alloc_percpu::<u64>().unwrap();
    drop(second);
    // Dropped holding `q`: a third allocator could hand it out again.
    assert!(matches!(
        Percpu::new(&areas, FirstChunkOnly),
        Err(PercpuError::AreasTaken)
    ));
    let _ = q;
}
