//! vmalloc benchmarks: `kmm-vmalloc` on the host mock beside a first-fit
//! reference (`kmm_benches::vmalloc::FirstFit`: busy ranges in a `BTreeMap`,
//! walked from the start of the range for the first gap that fits), on the
//! same machine set-up (see `kmm_benches::vmalloc` for the drivers and
//! `docs/benchmarks.md` for the results):
//!
//! 1. `vmalloc_vfree_<N>_live`: `vmalloc` of 1, 16 and 256 pages and its
//!    `vfree`, with N = 100, 1 000, 10 000 and 100 000 areas already live.
//!    The live areas are one page each but reserved with
//!    `get_vm_area(PAGE_SIZE)` (addresses and a descriptor, no pages):
//!    100 000 live one-page `vmalloc` areas would need 400 MiB of RAM, and
//!    for the address search and the area trees an area is an area. They
//!    are allocated first, so they pack the bottom of the range.
//! 2. `map_ram_<P>_pages`: `vm_map_ram` + `vm_unmap_ram` of 1 and 4 pages
//!    beside `vmap` + `vunmap` of the same pages.
//!
//! Before the groups, the run prints how many kernel-wide TLB flushes 10 000
//! `vfree`s caused (a count, not a timing; `count_flushes`).
//!
//! Every machine has 64 MiB of software-backed RAM (the `mmap` backing makes
//! one host mapping per mapped page and hits host limits), about 940 MiB of
//! vmalloc addresses, and 2 MiB of page-table pages.
//!
//! Run with `cargo bench -p kmm-benches --bench vmalloc` (or
//! `cargo xtask bench vmalloc`); criterion's arguments follow.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kmm_benches::vmalloc::{
    FirstFit, VmHost, count_flushes, map_ram_pair, vmalloc_free_pair, vmap_pair,
};

/// Bench names, as they appear in reports.
const KMM: &str = "kmm";
const FIRST_FIT: &str = "first_fit_btreemap";

/// Live areas in the background of workload 1.
const LIVE: [usize; 4] = [100, 1_000, 10_000, 100_000];
/// Pages per benched `vmalloc`.
const SIZES: [usize; 3] = [1, 16, 256];
/// Pages per benched `vm_map_ram` / `vmap`.
const MAP_SIZES: [usize; 2] = [1, 4];

/// Workload 1: vmalloc + vfree with `live` areas live, kmm and the reference.
fn vmalloc_vfree(c: &mut Criterion) {
    for live in LIVE {
        let mut g = c.benchmark_group(format!("vmalloc_vfree_{live}_live"));
        g.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements(1));
        {
            let host = VmHost::new();
            let _cpu0 = host.bind();
            let vm = host.vmalloc();
            let background = host.reserve_live(&vm, live);
            for pages in SIZES {
                g.bench_with_input(BenchmarkId::new(KMM, pages), &pages, |b, &n| {
                    b.iter(|| vmalloc_free_pair(&vm, n))
                });
            }
            host.release_live(&vm, background);
        }
        {
            let host = VmHost::new();
            let _cpu0 = host.bind();
            let mut ff = FirstFit::new(&host);
            ff.reserve_live(live);
            for pages in SIZES {
                g.bench_with_input(BenchmarkId::new(FIRST_FIT, pages), &pages, |b, &n| {
                    b.iter(|| ff.vmalloc_free_pair(n))
                });
            }
        }
        g.finish();
    }
}

/// Workload 2: vm_map_ram + vm_unmap_ram beside vmap + vunmap of the same
/// pages.
fn map_ram(c: &mut Criterion) {
    let host = VmHost::new();
    let _cpu0 = host.bind();
    let vm = host.vmalloc();
    for n in MAP_SIZES {
        let pages = host.pages(n);
        let mut g = c.benchmark_group(format!("map_ram_{n}_pages"));
        g.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements(1));
        g.bench_function("kmm_vm_map_ram", |b| b.iter(|| map_ram_pair(&vm, &pages)));
        g.bench_function("kmm_vmap", |b| b.iter(|| vmap_pair(&vm, &pages)));
        g.finish();
        host.free_pages(pages);
    }
}

/// Not a timing: the kernel-wide flushes of 10 000 one-page vfrees.
fn flushes(_: &mut Criterion) {
    let c = count_flushes(10_000, 1);
    println!(
        "vmalloc: {} vfrees of one page ({} pages of addresses each) made {} kernel-wide \
         flushes (vmalloc counted {}); lazy_max_pages {} allows at most {}",
        c.vfrees,
        c.pages_per_vfree,
        c.kernel_flushes,
        c.vm_flushes,
        c.lazy_max_pages,
        c.batches()
    );
}

criterion_group!(benches, flushes, vmalloc_vfree, map_ram);
criterion_main!(benches);
