//! Heap efficiency of kmm beside the peers of the slab benchmarks: each
//! allocator gets a heap of the same size (what kmm's buddy allocator can
//! hand out on a 64 MiB machine before the slab allocator exists) and
//! allocates until its first failure; the table gives the share of the heap
//! the live requests add up to then. Three columns: uniform sizes of 1–200
//! and 1–30 000 bytes (fixed seed), and talc's own method (see
//! `kmm_benches::slab::talc_method`). Not a timing; see
//! `kmm_benches::slab::efficiency`.
//!
//! Run with `cargo run --release -p kmm-benches --bin heap_efficiency`.

use kmm_benches::SEED;
use kmm_benches::slab::{
    EFFICIENCY_NAMES, KMM_RAM, TALC_MAX_ALLOC, TALC_REALLOC_MULTI, efficiency,
    efficiency_talc_method,
};

/// Rounds of talc's method (talc runs 300 on its 128 MiB heap).
const TALC_ROUNDS: usize = 50;

fn main() {
    let variants = [("1–200 B", 1..=200), ("1–30 000 B", 1..=30_000)];
    let results: Vec<_> = variants
        .iter()
        .map(|(_, sizes)| efficiency(KMM_RAM, SEED, sizes.clone()))
        .collect();
    let heap = results[0].0;
    let (talc_heap, talc) = efficiency_talc_method(KMM_RAM, SEED, TALC_ROUNDS);
    assert_eq!(talc_heap, heap);
    println!(
        "heap: {heap} bytes ({} pages of 4096; kmm: free pages of its buddy allocator on a {} MiB machine)\n",
        heap / 4096,
        KMM_RAM >> 20
    );
    print!("| allocator |");
    for (name, _) in &variants {
        print!(" {name} |");
    }
    println!(
        " talc's method (sizes ≤ {TALC_MAX_ALLOC} B, reallocations ≤ {} B, {TALC_ROUNDS} rounds) |",
        TALC_MAX_ALLOC * TALC_REALLOC_MULTI
    );
    println!("| --- |{}", " --- |".repeat(variants.len() + 1));
    for (i, name) in EFFICIENCY_NAMES.iter().enumerate() {
        print!("| {name} |");
        for (heap, got) in &results {
            print!(" {:.1} % |", got[i] as f64 * 100.0 / *heap as f64);
        }
        match talc[i] {
            Some(used) => println!(
                " {:.1} % |",
                used as f64 * 100.0 / (TALC_ROUNDS * heap) as f64
            ),
            None => println!(" — |"),
        }
    }
}
