//! Highmem mapping benchmarks (`kmm-pkmap` on the host mock, software
//! backing; see `kmm_benches::pkmap` for the drivers and
//! `docs/benchmarks.md` for the results and the instruction counts):
//!
//! - `kmap_kunmap/mapped`: a HIGHMEM page another user keeps mapped (a
//!   count up and down under the pkmap lock, no page-table write);
//! - `kmap_kunmap/new`: a different page each time (a new pkmap entry and
//!   its page-table write; every LAST_PKMAP pairs a wrap-around runs
//!   `flush_all_zero_pkmaps`, one kernel-wide flush);
//! - `kmap_local`: `kmap_local_page` + `kunmap_local` (a fixmap slot's PTE
//!   written and cleared, one local flush).
//!
//! On the mock a page-table write goes through the simulated i386 tables and
//! the per-CPU TLB checker, which is most of the last two pairs' time; the
//! hot-path driver's instruction counts separate kmm's own code from it.
//!
//! Run with `cargo bench -p kmm-benches --bench pkmap`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use kmm_benches::pkmap::{KmapHost, kmap_local_pair, kmap_pair};

fn pkmap(c: &mut Criterion) {
    let host = KmapHost::new();
    let _cpu0 = host.bind();
    let pk = host.pkmap();
    let pages = host.highmem_pages(2048);
    let mut g = c.benchmark_group("kmap_kunmap");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    pk.kmap(pages[0]).expect("the holder's kmap");
    g.bench_function("mapped", |b| b.iter(|| kmap_pair(&pk, pages[0])));
    let mut i = 1;
    g.bench_function("new", |b| {
        b.iter(|| {
            i = 1 + (i % (pages.len() - 1));
            kmap_pair(&pk, pages[i]);
        })
    });
    g.finish();
    let mut g = c.benchmark_group("kmap_local");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("pair", |b| b.iter(|| kmap_local_pair(&pk, pages[1])));
    g.finish();
    pk.kunmap(pages[0]).expect("the holder's kunmap");
}

criterion_group!(benches, pkmap);
criterion_main!(benches);
