//! What docs/benchmarks.md shows of a criterion run: each generated
//! region's table (which benches, under which labels, compared with what)
//! and each plot's series. The ids are criterion's (`group/bench[/value]`),
//! as `benches/benches/*.rs` names them; a table whose benches did not all
//! run is not made, and its region keeps what it had.

use std::cell::RefCell;
use std::collections::BTreeSet;

use super::criterion::{Bench, Estimate, Results};
use super::markdown::{Table, count, number_ci, ratio, time, time_ci};

/// The results a table or plot is made from, recording which ids it asked
/// for and which of those did not run.
pub struct Lookup<'r> {
    results: &'r Results,
    used: RefCell<BTreeSet<String>>,
    missing: RefCell<Vec<String>>,
}

/// What [`Lookup::get`] gives for a bench that did not run (the table is
/// thrown away; NaN keeps the arithmetic going until then).
const NOT_RUN: Bench = Bench {
    estimate: Estimate {
        median: f64::NAN,
        lower: f64::NAN,
        upper: f64::NAN,
    },
    elements: None,
};

impl<'r> Lookup<'r> {
    /// A lookup in `results`.
    pub fn new(results: &'r Results) -> Lookup<'r> {
        Lookup {
            results,
            used: RefCell::default(),
            missing: RefCell::default(),
        }
    }

    /// Bench `id`'s result ([`NOT_RUN`] if it did not run: see
    /// [`Lookup::finish`]).
    pub fn get(&self, id: &str) -> Bench {
        self.used.borrow_mut().insert(id.to_string());
        match self.results.get(id) {
            Some(b) => *b,
            None => {
                let mut missing = self.missing.borrow_mut();
                if !missing.iter().any(|m| m == id) {
                    missing.push(id.to_string());
                }
                NOT_RUN
            }
        }
    }

    /// `made` if every bench asked for ran, else the ids that did not.
    pub fn finish<T>(&self, made: T) -> Result<T, Vec<String>> {
        let missing = self.missing.take();
        if missing.is_empty() {
            Ok(made)
        } else {
            Err(missing)
        }
    }

    /// Every id asked for so far.
    pub fn used(&self) -> BTreeSet<String> {
        self.used.borrow().clone()
    }
}

/// A region's new content: sentences for the line above the table (after
/// the provenance) and the table.
#[derive(Debug)]
pub struct Generated {
    /// Sentences such as "Fastest peer: talc." (may be empty).
    pub note: String,
    /// The table.
    pub table: Table,
}

/// A generated region and how its table is made.
pub struct TableSpec {
    /// The region's name in docs/benchmarks.md.
    pub region: &'static str,
    /// Makes the table from the results.
    pub build: fn(&Lookup<'_>) -> Generated,
}

/// How a row takes part in the comparisons of an [`Allocators`] table.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    /// One of kmm's paths: its ratios are in bold.
    Kmm,
    /// A peer, unlocked (or the only kind in the table).
    Peer,
    /// A peer's thread-safe variant.
    Locked,
    /// Shown, compared, never the fastest of anything.
    Other,
}

/// What a ratio column divides by.
enum Versus {
    /// The fastest row of this role.
    Fastest(Role),
    /// One bench: its id and the column's name for it.
    Bench(&'static str, &'static str),
}

/// The common table: one row per bench, its median and interval, the time
/// per element where the bench counts several, and ratios.
struct Allocators<'s> {
    /// The first column's header.
    first: &'s str,
    /// The median column's header (before "(95 % CI)").
    median: &'s str,
    /// The per-element column's header, if there is one.
    per_op: Option<&'s str>,
    /// Id, label, role.
    rows: Vec<(String, String, Role)>,
    /// The ratio columns.
    versus: Vec<Versus>,
}

/// A row of bench `name` in `group`, labelled with its name.
fn row(group: &str, name: &str, role: Role) -> (String, String, Role) {
    (format!("{group}/{name}"), name.to_string(), role)
}

impl Allocators<'_> {
    fn build(&self, l: &Lookup<'_>) -> Generated {
        let benches: Vec<Bench> = self.rows.iter().map(|(id, ..)| l.get(id)).collect();
        let mut note = Vec::new();
        // Each ratio column: its header and the median it divides by.
        let mut columns = Vec::new();
        for v in &self.versus {
            match *v {
                Versus::Fastest(role) => {
                    let fastest = self
                        .rows
                        .iter()
                        .zip(&benches)
                        .filter(|((.., r), _)| *r == role)
                        .min_by(|(_, a), (_, b)| a.estimate.median.total_cmp(&b.estimate.median));
                    let Some(((_, label, _), b)) = fastest else {
                        continue;
                    };
                    let what = match role {
                        Role::Locked => "Fastest locked peer",
                        _ => "Fastest peer",
                    };
                    note.push(format!("{what}: {label}."));
                    columns.push((format!("vs {label}"), b.estimate.median, true));
                }
                Versus::Bench(id, label) => {
                    columns.push((format!("vs {label}"), l.get(id).estimate.median, false));
                }
            }
        }
        let mut header = vec![self.first.to_string(), format!("{} (95 % CI)", self.median)];
        header.extend(self.per_op.map(String::from));
        header.extend(columns.iter().map(|(h, ..)| h.clone()));
        let mut table = Table::new(header);
        for ((_, label, role), b) in self.rows.iter().zip(&benches) {
            let mut cells = vec![label.clone(), time_ci(&b.estimate)];
            if self.per_op.is_some() {
                cells.push(match b.elements {
                    Some(n) if n > 1 => time(b.per_element()),
                    _ => "—".to_string(),
                });
            }
            for (_, by, bold) in &columns {
                let r = ratio(b.estimate.median / by);
                cells.push(if *bold && *role == Role::Kmm {
                    format!("**{r}**")
                } else {
                    r
                });
            }
            table.row(cells);
        }
        Generated {
            note: note.join(" "),
            table,
        }
    }
}

/// The page allocators (part 1), kmm's two paths first.
fn page_rows(group: &str) -> Vec<(String, String, Role)> {
    vec![
        row(group, "kmm_pcp", Role::Kmm),
        row(group, "kmm_bypass", Role::Kmm),
        row(group, "bitmap-allocator", Role::Peer),
        row(group, "buddy_system_allocator", Role::Peer),
    ]
}

/// The heap peers of part 2, unlocked.
const HEAP_PEERS: [&str; 4] = [
    "slabmalloc",
    "talc",
    "linked_list_allocator",
    "buddy_system_allocator",
];

/// A part-1 or part-2 table compared with the fastest peer.
fn versus_peers<'s>(
    median: &'s str,
    per_op: Option<&'s str>,
    rows: Vec<(String, String, Role)>,
) -> Allocators<'s> {
    Allocators {
        first: "allocator",
        median,
        per_op,
        rows,
        versus: vec![Versus::Fastest(Role::Peer)],
    }
}

/// `kmalloc` beside the unlocked heap peers.
fn kmalloc_rows(group: &str) -> Vec<(String, String, Role)> {
    let mut rows = vec![row(group, "kmm_kmalloc", Role::Kmm)];
    rows.extend(HEAP_PEERS.iter().map(|p| row(group, p, Role::Peer)));
    rows
}

fn order0_alloc_free(l: &Lookup<'_>) -> Generated {
    let rows = page_rows("order0_alloc_free");
    versus_peers("median per alloc+free pair", None, rows).build(l)
}

/// The bulk sizes of `bulk_pages` (`benches/benches/page_alloc.rs`).
const BULK_SIZES: [u64; 3] = [16, 32, 64];

/// `bulk_pages`: kmm's bulk order-0 alloc+free against its single pair, per
/// page (the goal of issue 12: at most half).
fn bulk_pages(l: &Lookup<'_>) -> Generated {
    let g = "bulk_pages";
    let single = l.get(&format!("{g}/single"));
    let mut table = Table::new([
        "path",
        "median per call pair (95 % CI)",
        "per page",
        "per page ÷ single pair",
    ]);
    table.row([
        "`alloc_pages` + `free_pages_page` (single pair)".to_string(),
        time_ci(&single.estimate),
        time(single.per_element()),
        ratio(1.0),
    ]);
    for n in BULK_SIZES {
        let b = l.get(&format!("{g}/bulk_{n}"));
        table.row([
            format!("`alloc_pages_bulk` + `release_pages` of {n}"),
            time_ci(&b.estimate),
            time(b.per_element()),
            format!("**{}**", ratio(b.per_element() / single.per_element())),
        ]);
    }
    Generated {
        note: "Time per page of one bulk allocation of N order-0 pages and one bulk free of the \
               same N, against one single order-0 pair, both through the per-CPU lists."
            .into(),
        table,
    }
}

fn random_orders(l: &Lookup<'_>) -> Generated {
    let rows = page_rows("random_orders");
    versus_peers("median per sequence", Some("per operation"), rows).build(l)
}

fn exhaust_refill(l: &Lookup<'_>) -> Generated {
    let rows = page_rows("exhaust_refill_64MiB");
    versus_peers("median per cycle", Some("per page"), rows).build(l)
}

fn exhaust_refill_random(l: &Lookup<'_>) -> Generated {
    let rows = page_rows("exhaust_refill_random_1GiB");
    versus_peers("median per cycle", Some("per page"), rows).build(l)
}

fn init_4gib(l: &Lookup<'_>) -> Generated {
    let g = "init_4GiB";
    let rows = vec![
        row(g, "kmm", Role::Kmm),
        row(g, "bitmap-allocator", Role::Peer),
        row(g, "buddy_system_allocator", Role::Peer),
    ];
    versus_peers("median per build", None, rows).build(l)
}

fn slab_hot(l: &Lookup<'_>) -> Generated {
    let g = "slab_hot_64B";
    let mut rows = vec![
        row(g, "kmm_cache", Role::Kmm),
        row(g, "kmm_kmalloc", Role::Kmm),
        row(g, "kmm_globalalloc", Role::Kmm),
    ];
    rows.extend(HEAP_PEERS.iter().map(|p| row(g, p, Role::Peer)));
    rows.extend(
        HEAP_PEERS
            .iter()
            .map(|p| row(g, &format!("{p}_locked"), Role::Locked)),
    );
    Allocators {
        first: "allocator",
        median: "median per alloc+free pair",
        per_op: None,
        rows,
        versus: vec![Versus::Fastest(Role::Peer), Versus::Fastest(Role::Locked)],
    }
    .build(l)
}

fn kmalloc_random(l: &Lookup<'_>) -> Generated {
    let rows = kmalloc_rows("kmalloc_random_8-4096B");
    versus_peers("median per sequence", Some("per step"), rows).build(l)
}

fn random_actions_200(l: &Lookup<'_>) -> Generated {
    let rows = kmalloc_rows("random_actions_200B");
    versus_peers("median per sequence", Some("per step"), rows).build(l)
}

fn random_actions_30000(l: &Lookup<'_>) -> Generated {
    let rows = kmalloc_rows("random_actions_30000B");
    versus_peers("median per sequence", Some("per step"), rows).build(l)
}

fn two_threads(l: &Lookup<'_>) -> Generated {
    let g = "two_threads_64B";
    let mut rows = vec![
        row(g, "kmm_cache", Role::Kmm),
        row(g, "kmm_kmalloc", Role::Kmm),
    ];
    rows.extend(HEAP_PEERS.iter().map(|p| row(g, p, Role::Peer)));
    rows.push(row(g, "reference_talc_per_thread", Role::Other));
    let mut made =
        versus_peers("median per iteration: one pair on each thread", None, rows).build(l);
    made.note = format!("The peers behind their locks. {}", made.note);
    made
}

/// The object counts of the `slab_bulk` group.
const SLAB_BULK_SIZES: [u32; 3] = [16, 32, 64];

/// `slab_bulk`: each bulk alloc+free, its time per object, and that
/// against the single pair of the same group (issue 12's goal: at most
/// half).
fn slab_bulk(l: &Lookup<'_>) -> Generated {
    let g = "slab_bulk";
    let single = l.get(&format!("{g}/kmm_cache")).estimate;
    let mut table = Table::new([
        "calls, 64 B objects",
        "median per call (95 % CI)",
        "per object",
        "per object ÷ single pair",
    ]);
    table.row([
        "`kmm_cache`: `kmem_cache_alloc` + `kmem_cache_free`".to_string(),
        time_ci(&single),
        time(single.median),
        ratio(1.0),
    ]);
    for n in SLAB_BULK_SIZES {
        let b = l.get(&format!("{g}/kmm_cache_bulk/{n}"));
        let per = b.estimate.median / f64::from(n);
        table.row([
            format!(
                "`kmm_cache_bulk/{n}`: `kmem_cache_alloc_bulk` + `kmem_cache_free_bulk` of {n}"
            ),
            time_ci(&b.estimate),
            time(per),
            format!("**{}**", ratio(per / single.median)),
        ]);
    }
    Generated {
        note: "The goal is at most 0.50× per object.".into(),
        table,
    }
}

/// The object sizes of the `kmalloc_size` group.
const SIZES: [u32; 10] = [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// `kmalloc_size`: one row per size, one column per allocator (medians),
/// and kmm against the fastest peer at that size.
fn kmalloc_size(l: &Lookup<'_>) -> Generated {
    let mut header = vec!["bytes", "kmm_kmalloc"];
    header.extend(HEAP_PEERS);
    header.push("kmm vs the fastest peer");
    let mut table = Table::new(header);
    for size in SIZES {
        let kmm = l
            .get(&format!("kmalloc_size/kmm_kmalloc/{size}"))
            .estimate
            .median;
        let peers: Vec<f64> = HEAP_PEERS
            .iter()
            .map(|p| l.get(&format!("kmalloc_size/{p}/{size}")).estimate.median)
            .collect();
        let fastest = peers.iter().copied().fold(f64::INFINITY, f64::min);
        let mut cells = vec![size.to_string(), time(kmm)];
        cells.extend(peers.iter().map(|&p| time(p)));
        cells.push(ratio(kmm / fastest));
        table.row(cells);
    }
    Generated {
        note: "Medians per alloc+free pair; the fastest peer is taken at each size.".into(),
        table,
    }
}

/// The background sizes and request sizes of the `vmalloc_vfree_*` groups.
const VM_LIVE: [u64; 4] = [100, 1_000, 10_000, 100_000];
const VM_PAGES: [u32; 3] = [1, 16, 256];
/// The bench names of the two vmalloc implementations.
const VM_KMM: &str = "kmm";
const VM_FIRST_FIT: &str = "first_fit_btreemap";

fn vm_id(live: u64, who: &str, pages: u32) -> String {
    format!("vmalloc_vfree_{live}_live/{who}/{pages}")
}

/// `vmalloc_vfree_*`: kmm and first fit at each background and size.
fn vmalloc_vfree(l: &Lookup<'_>) -> Generated {
    let mut table = Table::new([
        "live areas",
        "pages",
        "kmm (95 % CI)",
        "first fit (95 % CI)",
        "kmm ÷ first fit",
    ]);
    for live in VM_LIVE {
        for pages in VM_PAGES {
            let kmm = l.get(&vm_id(live, VM_KMM, pages)).estimate;
            let ff = l.get(&vm_id(live, VM_FIRST_FIT, pages)).estimate;
            table.row([
                count(live),
                pages.to_string(),
                time_ci(&kmm),
                time_ci(&ff),
                ratio(kmm.median / ff.median),
            ]);
        }
    }
    Generated {
        note: "Medians per `vmalloc` + `vfree` pair.".into(),
        table,
    }
}

/// The cost at the largest background over the cost at the smallest.
fn vmalloc_growth(l: &Lookup<'_>) -> Generated {
    let (few, many) = (VM_LIVE[0], VM_LIVE[VM_LIVE.len() - 1]);
    let mut table = Table::new(["pages", "kmm", "first fit"]);
    for pages in VM_PAGES {
        let growth = |who| {
            let m = l.get(&vm_id(many, who, pages)).estimate.median;
            ratio(m / l.get(&vm_id(few, who, pages)).estimate.median)
        };
        table.row([pages.to_string(), growth(VM_KMM), growth(VM_FIRST_FIT)]);
    }
    Generated {
        note: format!(
            "Each implementation's median at {} live areas ÷ its median at {}.",
            count(many),
            count(few)
        ),
        table,
    }
}

/// `map_ram_*`: `vm_map_ram` against `vmap` of the same pages.
fn map_ram(l: &Lookup<'_>) -> Generated {
    let mut table = Table::new([
        "pages",
        "`vm_map_ram` + `vm_unmap_ram` (95 % CI)",
        "`vmap` + `vunmap` (95 % CI)",
        "vmap ÷ vm_map_ram",
    ]);
    for pages in [1, 4] {
        let ram = l
            .get(&format!("map_ram_{pages}_pages/kmm_vm_map_ram"))
            .estimate;
        let vmap = l.get(&format!("map_ram_{pages}_pages/kmm_vmap")).estimate;
        table.row([
            pages.to_string(),
            time_ci(&ram),
            time_ci(&vmap),
            ratio(vmap.median / ram.median),
        ]);
    }
    Generated {
        note: String::new(),
        table,
    }
}

fn kmap(l: &Lookup<'_>) -> Generated {
    let rows = [
        ("kmap_kunmap/mapped", "`kmap`+`kunmap`, already mapped"),
        ("kmap_kunmap/new", "`kmap`+`kunmap`, not yet mapped"),
        ("kmap_local/pair", "`kmap_local_page`+`kunmap_local`"),
    ];
    Allocators {
        first: "pair",
        median: "median per pair",
        per_op: None,
        rows: rows
            .iter()
            .map(|(id, label)| (id.to_string(), label.to_string(), Role::Kmm))
            .collect(),
        versus: vec![Versus::Bench("kmap_kunmap/mapped", "the mapped pair")],
    }
    .build(l)
}

fn percpu(l: &Lookup<'_>) -> Generated {
    let rows = [
        (
            "atomic/fetch_add",
            "`atomic/fetch_add` (one shared counter, uncontended)",
        ),
        ("this_cpu/read", "`this_cpu/read`"),
        ("this_cpu/add", "`this_cpu/add`"),
        (
            "this_cpu/add_ptr",
            "`this_cpu/add_ptr` (a counter from `alloc_percpu`)",
        ),
        (
            "this_cpu/get_cpu_var",
            "`this_cpu/get_cpu_var` (guard + write)",
        ),
        (
            "alloc_free/8",
            "`alloc_free/8` (`__alloc_percpu` + `free_percpu`, 8 B)",
        ),
        (
            "alloc_free/page",
            "`alloc_free/page` (a page per CPU, each zeroed)",
        ),
    ];
    Allocators {
        first: "bench",
        median: "median",
        per_op: None,
        rows: rows
            .iter()
            .map(|(id, label)| (id.to_string(), label.to_string(), Role::Other))
            .collect(),
        versus: vec![Versus::Bench("atomic/fetch_add", "`atomic/fetch_add`")],
    }
    .build(l)
}

/// `smp_*`: throughput on one thread and on two, and the scaling.
fn smp(l: &Lookup<'_>) -> Generated {
    let rows = [
        ("smp_order0_pair", "kmm", "kmm"),
        (
            "smp_order0_pair",
            "buddy_system_allocator_locked",
            "buddy_system_allocator (locked)",
        ),
        (
            "smp_order0_pair",
            "bitmap-allocator_locked",
            "bitmap-allocator (spin lock)",
        ),
        ("smp_slab_64B", "kmm", "kmm"),
        ("smp_slab_64B", "talc_locked", "talc (locked)"),
        (
            "smp_slab_64B",
            "slabmalloc_locked",
            "slabmalloc (spin lock)",
        ),
        (
            "smp_slab_64B",
            "reference_talc_per_thread",
            "reference: talc per thread, unshared",
        ),
        ("smp_mix_cross_free", "kmm", "kmm"),
        ("smp_mix_cross_free", "talc_locked", "talc (locked)"),
        (
            "smp_mix_cross_free",
            "buddy_system_allocator_locked",
            "buddy_system_allocator (locked)",
        ),
    ];
    let mut table = Table::new([
        "workload / allocator",
        "1 thread (95 % CI)",
        "2 threads (95 % CI)",
        "2 ÷ 1",
    ]);
    // Million steps per second (all threads together) from a bench's
    // median, and its interval.
    let rate = |b: &Bench| {
        let steps = b.elements.unwrap_or(1) as f64 * 1e3;
        let e = &b.estimate;
        (steps / e.median, steps / e.upper, steps / e.lower)
    };
    for (group, name, label) in rows {
        let one = rate(&l.get(&format!("{group}/{name}/1")));
        let two = rate(&l.get(&format!("{group}/{name}/2")));
        let bold = |s: String| if name == "kmm" { format!("**{s}**") } else { s };
        table.row([
            format!("`{group}` {label}"),
            number_ci(one.0, one.1, one.2),
            number_ci(two.0, two.1, two.2),
            bold(ratio(two.0 / one.0)),
        ]);
    }
    Generated {
        note: "Million steps per second, all threads together (2.0× is perfect scaling).".into(),
        table,
    }
}

/// Every generated table of docs/benchmarks.md made from criterion's
/// results, by region.
pub fn tables() -> Vec<TableSpec> {
    let t = |region, build| TableSpec { region, build };
    vec![
        t("order0_alloc_free", order0_alloc_free),
        t("random_orders", random_orders),
        t("exhaust_refill_64MiB", exhaust_refill),
        t("exhaust_refill_random_1GiB", exhaust_refill_random),
        t("init_4GiB", init_4gib),
        t("bulk_pages", bulk_pages),
        t("slab_hot_64B", slab_hot),
        t("kmalloc_random_8-4096B", kmalloc_random),
        t("random_actions_200B", random_actions_200),
        t("random_actions_30000B", random_actions_30000),
        t("two_threads_64B", two_threads),
        t("slab_bulk", slab_bulk),
        t("kmalloc_size", kmalloc_size),
        t("vmalloc_vfree", vmalloc_vfree),
        t("vmalloc_growth", vmalloc_growth),
        t("map_ram", map_ram),
        t("kmap", kmap),
        t("percpu", percpu),
        t("smp", smp),
    ]
}

/// A line of a plot: its label and its points (x, bench id).
pub struct Series {
    /// The legend's label.
    pub label: String,
    /// x and the bench whose median is y.
    pub points: Vec<(f64, String)>,
}

/// A plot of medians against a parameter, both axes logarithmic.
pub struct PlotSpec {
    /// The file name under docs/plots/.
    pub file: &'static str,
    /// The caption.
    pub title: &'static str,
    /// The x axis' description.
    pub x_desc: &'static str,
    /// The y axis' description.
    pub y_desc: &'static str,
    /// The base of the x axis' logarithm.
    pub x_base: f64,
    /// Nanoseconds per unit of y.
    pub y_unit: f64,
    /// The lines.
    pub series: Vec<Series>,
}

/// Every plot linked from docs/benchmarks.md.
pub fn plots() -> Vec<PlotSpec> {
    let mut by_size = vec![Series {
        label: "kmm (kmalloc)".into(),
        points: SIZES
            .iter()
            .map(|&s| (f64::from(s), format!("kmalloc_size/kmm_kmalloc/{s}")))
            .collect(),
    }];
    by_size.extend(HEAP_PEERS.iter().map(|p| {
        Series {
            label: p.to_string(),
            points: SIZES
                .iter()
                .map(|&s| (f64::from(s), format!("kmalloc_size/{p}/{s}")))
                .collect(),
        }
    }));
    let mut by_live = Vec::new();
    for (who, label) in [(VM_KMM, "kmm"), (VM_FIRST_FIT, "first fit")] {
        for pages in VM_PAGES {
            let unit = if pages == 1 { "page" } else { "pages" };
            by_live.push(Series {
                label: format!("{label}, {pages} {unit}"),
                points: VM_LIVE
                    .iter()
                    .map(|&live| (live as f64, vm_id(live, who, pages)))
                    .collect(),
            });
        }
    }
    vec![
        PlotSpec {
            file: "kmalloc_size.svg",
            title: "One allocation and its free, by object size",
            x_desc: "object size (bytes)",
            y_desc: "median per alloc+free pair (ns)",
            x_base: 2.0,
            y_unit: 1.0,
            series: by_size,
        },
        PlotSpec {
            file: "vmalloc_live.svg",
            title: "vmalloc + vfree, by live areas",
            x_desc: "live vmalloc areas",
            y_desc: "median per vmalloc+vfree pair (µs)",
            x_base: 10.0,
            y_unit: 1e3,
            series: by_live,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::criterion::Estimate;

    fn bench(median: f64, elements: Option<u64>) -> Bench {
        Bench {
            estimate: Estimate {
                median,
                lower: median * 0.99,
                upper: median * 1.01,
            },
            elements,
        }
    }

    fn results(list: &[(&str, f64, Option<u64>)]) -> Results {
        Results::from_list(list.iter().map(|&(id, m, e)| (id.to_string(), bench(m, e))))
    }

    #[test]
    fn the_fastest_peer_sets_the_ratio_and_kmm_is_in_bold() {
        let r = results(&[
            ("random_orders/kmm_pcp", 52_800.0, Some(4102)),
            ("random_orders/kmm_bypass", 55_900.0, Some(4102)),
            ("random_orders/bitmap-allocator", 2_050_000.0, Some(4102)),
            ("random_orders/buddy_system_allocator", 58_200.0, Some(4102)),
        ]);
        let l = Lookup::new(&r);
        let g = l.finish(random_orders(&l)).unwrap();
        assert_eq!(g.note, "Fastest peer: buddy_system_allocator.");
        assert_eq!(
            g.table.render(),
            "| allocator | median per sequence (95 % CI) | per operation | vs buddy_system_allocator |\n\
             | --- | --- | --- | --- |\n\
             | kmm_pcp | 52.8 µs (52.3 – 53.3) | 12.9 ns | **0.91×** |\n\
             | kmm_bypass | 55.9 µs (55.3 – 56.5) | 13.6 ns | **0.96×** |\n\
             | bitmap-allocator | 2.05 ms (2.03 – 2.07) | 500 ns | 35.2× |\n\
             | buddy_system_allocator | 58.2 µs (57.6 – 58.8) | 14.2 ns | 1.00× |\n"
        );
    }

    #[test]
    fn locked_peers_get_a_column_of_their_own() {
        let mut list = vec![
            ("slab_hot_64B/kmm_cache".to_string(), 5.35),
            ("slab_hot_64B/kmm_kmalloc".to_string(), 5.45),
            ("slab_hot_64B/kmm_globalalloc".to_string(), 5.63),
        ];
        for (i, p) in HEAP_PEERS.iter().enumerate() {
            list.push((format!("slab_hot_64B/{p}"), 4.84 + i as f64));
            list.push((format!("slab_hot_64B/{p}_locked"), 16.0 - i as f64));
        }
        let r = Results::from_list(list.into_iter().map(|(id, m)| (id, bench(m, Some(1)))));
        let l = Lookup::new(&r);
        let g = l.finish(slab_hot(&l)).unwrap();
        assert_eq!(
            g.note,
            "Fastest peer: slabmalloc. Fastest locked peer: buddy_system_allocator_locked."
        );
        let text = g.table.render();
        assert!(text.starts_with(
            "| allocator | median per alloc+free pair (95 % CI) | vs slabmalloc | vs buddy_system_allocator_locked |\n"
        ));
        assert!(text.contains("| kmm_cache | 5.35 ns (5.30 – 5.40) | **1.11×** | **0.41×** |\n"));
        assert!(
            text.contains("| talc_locked | 15.0 ns (14.8 – 15.2) | 3.10× | 1.15× |\n"),
            "{text}"
        );
    }

    #[test]
    fn a_bench_that_did_not_run_leaves_the_table_unmade() {
        let r = results(&[
            ("init_4GiB/kmm", 1.81e6, None),
            ("init_4GiB/buddy_system_allocator", 13_800.0, None),
        ]);
        let l = Lookup::new(&r);
        let made = init_4gib(&l);
        assert_eq!(l.finish(made).unwrap_err(), ["init_4GiB/bitmap-allocator"]);
        assert_eq!(l.used().len(), 3);
    }

    #[test]
    fn slab_bulk_divides_per_object_by_the_single_pair() {
        let mut list = vec![("slab_bulk/kmm_cache".to_string(), bench(6.0, Some(1)))];
        for n in SLAB_BULK_SIZES {
            // 2 ns per object at every size.
            list.push((
                format!("slab_bulk/kmm_cache_bulk/{n}"),
                bench(2.0 * f64::from(n), Some(u64::from(n))),
            ));
        }
        let r = Results::from_list(list);
        let l = Lookup::new(&r);
        let text = l.finish(slab_bulk(&l)).unwrap().table.render();
        assert!(
            text.contains("| `kmm_cache_bulk/32`: `kmem_cache_alloc_bulk` + `kmem_cache_free_bulk` of 32 | 64.0 ns (63.4 – 64.6) | 2.00 ns | **0.33×** |"),
            "{text}"
        );
        assert!(text.contains("| 6.00 ns | 1.00× |"), "{text}");
    }

    #[test]
    fn smp_shows_throughput_and_scaling() {
        let mut list = Vec::new();
        for (group, names) in [
            (
                "smp_order0_pair",
                &[
                    "kmm",
                    "buddy_system_allocator_locked",
                    "bitmap-allocator_locked",
                ][..],
            ),
            (
                "smp_slab_64B",
                &[
                    "kmm",
                    "talc_locked",
                    "slabmalloc_locked",
                    "reference_talc_per_thread",
                ],
            ),
            (
                "smp_mix_cross_free",
                &["kmm", "talc_locked", "buddy_system_allocator_locked"],
            ),
        ] {
            for n in names {
                // 20 ns per step on one thread; two threads take 11 ns for
                // two steps.
                list.push((format!("{group}/{n}/1"), bench(20.0, Some(1))));
                list.push((format!("{group}/{n}/2"), bench(11.0, Some(2))));
            }
        }
        let r = Results::from_list(list);
        let l = Lookup::new(&r);
        let text = l.finish(smp(&l)).unwrap().table.render();
        assert!(
            text.contains(
                "| `smp_order0_pair` kmm | 50.0 (49.5 – 50.5) | 182 (180 – 184) | **3.64×** |"
            ),
            "{text}"
        );
    }

    #[test]
    fn every_plot_and_table_names_benches_of_the_suites() {
        // Each id is group/bench[/value], and no two tables share a region.
        let empty = Results::default();
        let l = Lookup::new(&empty);
        let mut regions = BTreeSet::new();
        for t in tables() {
            assert!(regions.insert(t.region), "{}", t.region);
            (t.build)(&l);
        }
        for p in plots() {
            assert!(p.file.ends_with(".svg"));
            for s in &p.series {
                for (_, id) in &s.points {
                    l.get(id);
                }
            }
        }
        for id in l.used() {
            let parts = id.split('/').count();
            assert!((2..=3).contains(&parts), "{id}");
        }
    }
}
