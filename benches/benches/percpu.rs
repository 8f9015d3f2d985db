//! Per-CPU benchmarks (`kmm-percpu` on the host mock):
//!
//! - `this_cpu/read`, `this_cpu/add`: a static per-CPU counter through the
//!   mock's this-CPU operations (the offset table by CPU id under a
//!   preemption guard, then an atomic access; on i386 each is one `%fs`
//!   instruction), beside `atomic/fetch_add`, a plain shared `AtomicUsize`
//!   (what a kernel would use without per-CPU data), and `this_cpu/add_ptr`,
//!   the same on a counter from `alloc_percpu`;
//! - `get_cpu_var`: the guard (preemption off, the slot's busy flag) and a
//!   write through it;
//! - `alloc_free/8`, `alloc_free/page`: `__alloc_percpu` + `free_percpu`
//!   of 8 bytes and of a page per CPU (zeroing every CPU's copy included).
//!
//! Run with `cargo bench -p kmm-benches --bench percpu`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use kmm_hal::PAGE_SIZE;
use kmm_percpu::{
    BuddyAreas, FirstChunkOnly, Percpu, Template, define_per_cpu, setup_per_cpu_areas,
};
use kmm_testkit::TestMachine;

define_per_cpu! {
    static HITS: shared AtomicU32 = AtomicU32::new(0);
    static LAST: usize = 0;
}

fn percpu(c: &mut Criterion) {
    let host = TestMachine::builder().ram_mib(32).cpus(2).build();
    let _cpu0 = host.bind(0);
    let vars = [HITS.desc(), LAST.desc()];
    let areas = setup_per_cpu_areas(
        host.cpu(),
        &Template::from_vars(&vars),
        BuddyAreas::new(host.buddy(), &[]),
    )
    .expect("per-CPU areas");
    let pcpu = Percpu::new(&areas, FirstChunkOnly).expect("the allocator");
    let this = areas.this_cpu();
    let dynamic = pcpu.alloc_percpu::<AtomicU32>().expect("a counter");

    let mut g = c.benchmark_group("this_cpu");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("read", |b| b.iter(|| black_box(this.read(&HITS).unwrap())));
    g.bench_function("add", |b| b.iter(|| this.add(&HITS, black_box(1)).unwrap()));
    g.bench_function("add_ptr", |b| {
        // SAFETY: `dynamic` lives until the end of the function.
        b.iter(|| unsafe { this.add_ptr(dynamic, black_box(1)) })
    });
    g.bench_function("get_cpu_var", |b| {
        b.iter(|| *areas.get_cpu_var(&LAST).unwrap() += black_box(1))
    });
    g.finish();

    let shared = AtomicUsize::new(0);
    let mut g = c.benchmark_group("atomic");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("fetch_add", |b| {
        b.iter(|| shared.fetch_add(black_box(1), Ordering::Relaxed))
    });
    g.finish();

    let mut g = c.benchmark_group("alloc_free");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, size) in [("8", 8), ("page", PAGE_SIZE)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let p = pcpu.__alloc_percpu(black_box(size), 8).unwrap();
                pcpu.free_percpu(p).unwrap();
            })
        });
    }
    g.finish();
    pcpu.free_percpu(dynamic).expect("the counter");
}

criterion_group!(benches, percpu);
criterion_main!(benches);
