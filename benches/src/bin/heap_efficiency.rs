//! Heap efficiency of kmm's `kmalloc` beside the peers of the slab benchmarks:
//! each allocator gets a heap of the same size (what kmm's buddy allocator can
//! hand out on a 64 MiB machine) and allocates random sizes (fixed seed) until
//! its first failure; the table gives the share of the heap the successful
//! requests add up to. Not a timing; see `kmm_benches::slab::efficiency`.
//!
//! Run with `cargo run --release -p kmm-benches --bin heap_efficiency`.

use kmm_benches::SEED;
use kmm_benches::slab::{EFFICIENCY_NAMES, KMM_RAM, efficiency};

fn main() {
    let variants = [("1–200 B", 1..=200), ("1–30 000 B", 1..=30_000)];
    let results: Vec<_> = variants
        .iter()
        .map(|(_, sizes)| efficiency(KMM_RAM, SEED, sizes.clone()))
        .collect();
    let heap = results[0].0;
    println!(
        "heap: {heap} bytes ({} pages of 4096; kmm: free pages of its buddy allocator on a {} MiB machine)\n",
        heap / 4096,
        KMM_RAM >> 20
    );
    print!("| allocator |");
    for (name, _) in &variants {
        print!(" requests of {name}: share of the heap in use at the first failure |");
    }
    println!("\n| --- |{}", " --- |".repeat(variants.len()));
    for (i, name) in EFFICIENCY_NAMES.iter().enumerate() {
        print!("| {name} |");
        for (heap, got) in &results {
            print!(
                " {:.1} % ({} bytes) |",
                got[i] as f64 * 100.0 / *heap as f64,
                got[i]
            );
        }
        println!();
    }
}
