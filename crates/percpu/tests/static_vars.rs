//! Static per-CPU variables: the template copied into one area per CPU,
//! each CPU's copy its own (through `per_cpu`, `get_cpu_var` and this-CPU
//! operations), offsets as Linux defines them, and every refusal of set-up
//! and access with nothing changed. On plain memory (Miri runs these) and,
//! for the buddy-allocated areas on their nodes, on the mock.

mod common;

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicUsize, Ordering};

use common::{FakeCpu, SoftAreas, ledger};
use kmm_hal::{Cpu, PAGE_SIZE};
use kmm_percpu::{
    BuddyAreas, NR_CPUS, PCPU_UNIT_SIZE, PercpuError, Template, define_per_cpu, setup_per_cpu_areas,
};
use kmm_testkit::TestMachine;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Stats {
    calls: u64,
    last: u16,
}

define_per_cpu! {
    static HITS: shared AtomicU32 = AtomicU32::new(5);
    static SMALL: shared AtomicU16 = AtomicU16::new(0);
    static STATS: Stats = Stats { calls: 1, last: 2 }, shared AtomicUsize = AtomicUsize::new(9);
    static UNLISTED: u32 = 0;
    static HUGE: [u8; PCPU_UNIT_SIZE - 1024] = [0; PCPU_UNIT_SIZE - 1024];
}

fn vars() -> [kmm_percpu::VarDesc; 3] {
    [HITS.desc(), SMALL.desc(), STATS.desc()]
}

#[test]
fn each_cpu_starts_from_the_template_and_keeps_its_own_copy() {
    let cpu = FakeCpu::new(3);
    let list = vars();
    let areas =
        setup_per_cpu_areas(&cpu, &Template::from_vars(&list), SoftAreas(ledger())).unwrap();
    for c in 0..3 {
        assert_eq!(areas.per_cpu(&HITS, c).unwrap().load(Ordering::Relaxed), 5);
        assert_eq!(areas.per_cpu(&STATS, c).unwrap().load(Ordering::Relaxed), 9);
    }
    for c in 0..3 {
        cpu.switch(c);
        let mut s = areas.get_cpu_var(&STATS).unwrap();
        assert_eq!(
            *s,
            Stats { calls: 1, last: 2 },
            "CPU {c} starts from the template"
        );
        assert_eq!(s.cpu_id(), c);
        assert!(cpu.preempt_count() > 0, "get_cpu_var keeps preemption off");
        s.calls += c as u64 * 10;
        s.last = c as u16;
        s.shared().fetch_add(c, Ordering::Relaxed);
        drop(s);
        assert_eq!(cpu.preempt_count(), 0, "put_cpu_var");
        let this = areas.this_cpu();
        this.add(&HITS, c as u32).unwrap();
        this.inc(&SMALL).unwrap();
        this.inc(&SMALL).unwrap();
        this.dec(&SMALL).unwrap();
    }
    for c in 0..3 {
        cpu.switch(c);
        let s = areas.get_cpu_var(&STATS).unwrap();
        assert_eq!(
            *s,
            Stats {
                calls: 1 + c as u64 * 10,
                last: c as u16
            }
        );
        drop(s);
        assert_eq!(
            areas.per_cpu(&HITS, c).unwrap().load(Ordering::Relaxed),
            5 + c as u32
        );
        assert_eq!(areas.per_cpu(&SMALL, c).unwrap().load(Ordering::Relaxed), 1);
        assert_eq!(
            areas.per_cpu(&STATS, c).unwrap().load(Ordering::Relaxed),
            9 + c
        );
        let this = areas.this_cpu();
        assert_eq!(this.read(&HITS), Ok(5 + c as u32));
        this.write(&HITS, 100).unwrap();
        assert_eq!(
            areas.per_cpu(&HITS, c).unwrap().load(Ordering::Relaxed),
            100
        );
    }
    // The template itself is never written.
    let fresh = FakeCpu::new(1);
    let again =
        setup_per_cpu_areas(&fresh, &Template::from_vars(&list), SoftAreas(ledger())).unwrap();
    assert_eq!(again.per_cpu(&HITS, 0).unwrap().load(Ordering::Relaxed), 5);
}

#[test]
fn offsets_are_area_minus_template_base() {
    let cpu = FakeCpu::new(4);
    let list = vars();
    let areas =
        setup_per_cpu_areas(&cpu, &Template::from_vars(&list), SoftAreas(ledger())).unwrap();
    assert_eq!(areas.template_base(), 0, "a registration list has base 0");
    assert_eq!(areas.offsets().len(), 4);
    for c in 0..4 {
        let off = areas.offset(c).unwrap();
        let area = areas.area(c).unwrap().as_ptr().addr();
        assert_eq!(area, areas.template_base().wrapping_add(off));
        assert!(area.is_multiple_of(PAGE_SIZE));
        // A pointer plus the offset is the copy.
        let p = areas.ptr_of(&STATS).unwrap();
        let copy = areas.per_cpu_ptr(p, c).unwrap().as_ptr().addr();
        assert_eq!(copy, p.raw().wrapping_add(off));
        assert_eq!(
            copy,
            std::ptr::from_ref(areas.per_cpu_slot(&STATS, c).unwrap()).addr()
        );
    }
    assert!(areas.static_size() < PCPU_UNIT_SIZE);
    assert_eq!(areas.unit_size(), PCPU_UNIT_SIZE);
}

#[test]
fn get_cpu_var_is_not_handed_out_twice() {
    let cpu = FakeCpu::new(2);
    let list = vars();
    let areas =
        setup_per_cpu_areas(&cpu, &Template::from_vars(&list), SoftAreas(ledger())).unwrap();
    let held = areas.get_cpu_var(&STATS).unwrap();
    // A re-entry on this CPU (a hook, an interrupt handler) is refused.
    assert_eq!(areas.get_cpu_var(&STATS).err(), Some(PercpuError::Busy));
    assert!(areas.per_cpu_slot(&STATS, 0).unwrap().is_busy());
    assert!(!areas.per_cpu_slot(&STATS, 1).unwrap().is_busy());
    // The shared part stays readable meanwhile.
    assert_eq!(areas.per_cpu(&STATS, 0).unwrap().load(Ordering::Relaxed), 9);
    // Another variable is another slot.
    let other = areas.get_cpu_var(&HITS).unwrap();
    drop(other);
    drop(held);
    assert!(areas.get_cpu_var(&STATS).is_ok());
    assert_eq!(cpu.preempt_count(), 0);
}

#[test]
fn cpu_ids_past_the_possible_cpus_are_refused() {
    let cpu = FakeCpu::new(2);
    let list = vars();
    let areas =
        setup_per_cpu_areas(&cpu, &Template::from_vars(&list), SoftAreas(ledger())).unwrap();
    let no = PercpuError::NoSuchCpu {
        cpu: 2,
        possible: 2,
    };
    assert_eq!(areas.per_cpu(&HITS, 2).err(), Some(no));
    assert_eq!(areas.per_cpu_slot(&HITS, 2).err(), Some(no));
    let p = areas.ptr_of(&HITS).unwrap();
    assert_eq!(areas.per_cpu_ptr(p, 2).err(), Some(no));
    assert_eq!(areas.offset(2).err(), Some(no));
    assert_eq!(areas.area(2).err(), Some(no));
    assert_eq!(
        areas.offset(usize::MAX).err(),
        Some(PercpuError::NoSuchCpu {
            cpu: usize::MAX,
            possible: 2
        })
    );
    // Nothing changed.
    assert_eq!(areas.per_cpu(&HITS, 1).unwrap().load(Ordering::Relaxed), 5);
}

#[test]
fn a_variable_missing_from_the_template_is_refused() {
    let cpu = FakeCpu::new(1);
    let list = vars();
    let areas =
        setup_per_cpu_areas(&cpu, &Template::from_vars(&list), SoftAreas(ledger())).unwrap();
    assert_eq!(
        areas.ptr_of(&UNLISTED).err(),
        Some(PercpuError::NotRegistered)
    );
    assert_eq!(
        areas.per_cpu(&UNLISTED, 0).err(),
        Some(PercpuError::NotRegistered)
    );
    assert_eq!(
        areas.get_cpu_var(&UNLISTED).err(),
        Some(PercpuError::NotRegistered)
    );
    assert_eq!(cpu.preempt_count(), 0, "no guard left behind");
}

#[test]
fn set_up_refusals_give_everything_back() {
    let list = vars();
    let t = Template::from_vars(&list);
    let l = ledger();
    assert_eq!(
        setup_per_cpu_areas(&FakeCpu::new(0), &t, SoftAreas(l.clone())).err(),
        Some(PercpuError::TooManyCpus)
    );
    assert_eq!(
        setup_per_cpu_areas(&FakeCpu::new(NR_CPUS + 1), &t, SoftAreas(l.clone())).err(),
        Some(PercpuError::TooManyCpus)
    );
    let huge = [HITS.desc(), HUGE.desc()];
    assert_eq!(
        setup_per_cpu_areas(
            &FakeCpu::new(2),
            &Template::from_vars(&huge),
            SoftAreas(l.clone())
        )
        .err(),
        Some(PercpuError::StaticTooLarge)
    );
    l.lock().unwrap().fail_area = Some(2);
    assert_eq!(
        setup_per_cpu_areas(&FakeCpu::new(4), &t, SoftAreas(l.clone())).err(),
        Some(PercpuError::NoArea { cpu: 2 })
    );
    assert_eq!(
        l.lock().unwrap().areas,
        0,
        "the areas given so far went back"
    );
    // A variable listed twice is laid out once.
    let twice = [HITS.desc(), HITS.desc()];
    let cpu = FakeCpu::new(1);
    let areas =
        setup_per_cpu_areas(&cpu, &Template::from_vars(&twice), SoftAreas(ledger())).unwrap();
    assert!(areas.static_size() < 2 * size_of::<kmm_hal::PerCpu<(), AtomicU32>>());
}

#[test]
fn buddy_areas_sit_on_their_cpus_nodes() {
    static NODES: [u8; 4] = [0, 1, 0, 1];
    let host = TestMachine::builder()
        .ram_mib(if cfg!(miri) { 24 } else { 64 })
        .nodes(2)
        .cpus(4)
        .cpu_nodes(&NODES)
        .build();
    let _cpu0 = host.bind(0);
    let list = vars();
    let before = host.pages_out();
    {
        let areas = setup_per_cpu_areas(
            host.cpu(),
            &Template::from_vars(&list),
            BuddyAreas::new(host.buddy(), &NODES),
        )
        .unwrap();
        let mem = host.buddy().mem();
        for (c, &node) in NODES.iter().enumerate() {
            let va = kmm_hal::VirtAddr::from_ptr(areas.area(c).unwrap().as_ptr());
            let page = mem.virt_to_page(va).unwrap();
            assert_eq!(page.node(), usize::from(node), "CPU {c}'s area");
            assert_eq!(areas.per_cpu(&HITS, c).unwrap().load(Ordering::Relaxed), 5);
        }
        assert_eq!(host.pages_out() - before, 4 * PCPU_UNIT_SIZE / PAGE_SIZE);
    }
    assert_eq!(
        host.pages_out(),
        before,
        "every area back to the buddy allocator"
    );
}

/// A stand-in for the kernel's `.data..percpu` section: variables side by
/// side in one page-aligned static, bracketed like `__per_cpu_start` and
/// `__per_cpu_end`.
#[repr(C, align(4096))]
struct Section {
    hits: kmm_percpu::PerCpuVar<(), AtomicU32>,
    stats: kmm_percpu::PerCpuVar<Stats, AtomicUsize>,
}

static SECTION: Section = Section {
    // SAFETY: a static's initialiser: a constant, never written.
    hits: unsafe { kmm_percpu::PerCpuVar::__new((), AtomicU32::new(3)) },
    // SAFETY: as above.
    stats: unsafe {
        kmm_percpu::PerCpuVar::__new(Stats { calls: 4, last: 5 }, AtomicUsize::new(6))
    },
};

#[test]
fn a_section_template_uses_template_addresses_as_pointers() {
    let start = std::ptr::from_ref(&SECTION).cast::<u8>();
    let end = start.wrapping_add(size_of::<Section>());
    // SAFETY: `SECTION` holds only per-CPU variables, is page-aligned and
    // never written.
    let t = unsafe { Template::from_section(start, end) };
    let cpu = FakeCpu::new(3);
    let areas = setup_per_cpu_areas(&cpu, &t, SoftAreas(ledger())).unwrap();
    assert_eq!(
        areas.template_base(),
        start.addr(),
        "the base is __per_cpu_start"
    );
    // A variable's per-CPU pointer is its template address (Linux's rule).
    let p = areas.ptr_of(&SECTION.stats).unwrap();
    assert_eq!(p.raw(), std::ptr::from_ref(&SECTION.stats).addr());
    for c in 0..3 {
        let copy = areas.per_cpu_ptr(p, c).unwrap().as_ptr().addr();
        assert_eq!(
            copy,
            areas.area(c).unwrap().as_ptr().addr() + (p.raw() - start.addr())
        );
        assert_eq!(
            areas
                .per_cpu(&SECTION.hits, c)
                .unwrap()
                .load(Ordering::Relaxed),
            3
        );
        cpu.switch(c);
        let mut s = areas.get_cpu_var(&SECTION.stats).unwrap();
        assert_eq!(*s, Stats { calls: 4, last: 5 });
        s.calls = c as u64;
        drop(s);
        areas.this_cpu().add(&SECTION.hits, c as u32).unwrap();
    }
    for c in 0..3 {
        assert_eq!(
            areas
                .per_cpu(&SECTION.hits, c)
                .unwrap()
                .load(Ordering::Relaxed),
            3 + c as u32
        );
        assert_eq!(
            areas
                .per_cpu(&SECTION.stats, c)
                .unwrap()
                .load(Ordering::Relaxed),
            6
        );
    }
    // A variable outside the section is refused.
    assert_eq!(
        areas.per_cpu(&HITS, 0).err(),
        Some(PercpuError::NotRegistered)
    );
    // The template itself is untouched: a new set-up starts from it again.
    let one = FakeCpu::new(1);
    let again = setup_per_cpu_areas(&one, &t, SoftAreas(ledger())).unwrap();
    assert_eq!(
        again
            .per_cpu(&SECTION.hits, 0)
            .unwrap()
            .load(Ordering::Relaxed),
        3
    );
    assert_eq!(
        *again.get_cpu_var(&SECTION.stats).unwrap(),
        Stats { calls: 4, last: 5 }
    );
}

#[test]
fn bootmem_areas_come_from_reserved_low_memory() {
    // 8–9 MiB is kept from the buddy allocator; a bootmem over it gives the
    // areas, as at boot before the buddy allocator runs.
    const BASE: u64 = 8 << 20;
    let host = TestMachine::builder()
        .ram_mib(if cfg!(miri) { 24 } else { 32 })
        .reserve(BASE, 1 << 20)
        .build();
    let _cpu0 = host.bind(0);
    let regions = [kmm_page_frame::Region::new(
        BASE,
        1 << 20,
        kmm_page_frame::RegionKind::Usable,
    )];
    let mut bm =
        kmm_page_frame::Bootmem::new(&regions, kmm_hal::PhysAddr::new(BASE + (1 << 20))).unwrap();
    let dm = host.buddy().mem().direct_map();
    let list = vars();
    {
        // SAFETY: `dm` is the machine's direct map, and 8–9 MiB is reserved
        // from the buddy allocator: only this bootmem hands it out.
        let alloc = unsafe { kmm_percpu::BootmemAreas::new(&mut bm, dm) };
        let areas = setup_per_cpu_areas(host.cpu(), &Template::from_vars(&list), alloc).unwrap();
        let va = kmm_hal::VirtAddr::from_ptr(areas.area(0).unwrap().as_ptr());
        let pa = host
            .buddy()
            .mem()
            .page_to_phys(host.buddy().mem().virt_to_page(va).unwrap())
            .unwrap();
        assert!((BASE..BASE + (1 << 20)).contains(&pa.as_u64()), "{pa}");
        assert_eq!(areas.per_cpu(&HITS, 0).unwrap().load(Ordering::Relaxed), 5);
    }
    assert_eq!(bm.allocated_pages(), (PCPU_UNIT_SIZE / PAGE_SIZE) as u64);
}
