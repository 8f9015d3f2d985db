//! Fuzzes the SLAB allocator (with its `debug` checks on) with the operations
//! of its reference model (`kmm_testkit::model::slab`, shared with
//! `crates/slab/tests/model.rs`): caches of fuzzed sizes and alignments,
//! object allocations and frees, kmalloc / krealloc / kfree of fuzzed sizes,
//! bad frees (interior, wrong cache, foreign), reaping, and the bulk paths
//! (`kmem_cache_alloc_bulk` of up to 200 objects; `kmem_cache_free_bulk` of
//! up to 160, with a bad element — repeated, interior, foreign, another
//! cache's or kmalloc's block — refused with its index). Every live block
//! carries a pattern; after each step the model checks the statistics and
//! `validate_cache`; bad frees must be refused and change nothing. Each input
//! ends by freeing everything and destroying its caches, and every page must be
//! back in the buddy allocator with no debug report but the double frees the
//! input made on purpose — so the next input starts afresh on the same
//! allocators. The first byte picks the kmalloc class table: odd for Linux
//! 2.6's, even for the dense default (two machines, one per table).
#![no_main]

use std::sync::OnceLock;

use kmm_slab::KmallocSizes;
use kmm_testkit::model::slab::{Config, Model, Op};
use kmm_testkit::{Backing, TestMachine};
use libfuzzer_sys::fuzz_target;

/// 32 MiB, one CPU, zero watermarks, the slab allocator built with the
/// class table `sizes`.
fn build(sizes: KmallocSizes) -> TestMachine {
    let host = TestMachine::builder()
        .ram_mib(32)
        .backing(Backing::Software)
        .no_reserve()
        .kmalloc_sizes(sizes)
        .build();
    host.slab();
    host
}

/// The machine of `sizes`, built once.
fn host(sizes: KmallocSizes) -> &'static TestMachine {
    static DENSE: OnceLock<TestMachine> = OnceLock::new();
    static LINUX26: OnceLock<TestMachine> = OnceLock::new();
    match sizes {
        KmallocSizes::Linux26 => LINUX26.get_or_init(|| build(sizes)),
        _ => DENSE.get_or_init(|| build(sizes)),
    }
}

fuzz_target!(|data: &[u8]| {
    let config = Config {
        must_succeed: false,
        max_caches: 6,
    };
    let Some((&table, data)) = data.split_first() else {
        return;
    };
    let sizes = if table & 1 == 1 {
        KmallocSizes::Linux26
    } else {
        KmallocSizes::Dense
    };
    let mut model = Model::new(host(sizes), config);
    for op in data.chunks_exact(4) {
        let op = Op::decode([op[0], op[1], op[2], op[3]]);
        if let Err(e) = model.apply(&op) {
            panic!("{op:?}: {e}");
        }
    }
    if let Err(e) = model.finish() {
        panic!("at the end: {e}");
    }
});
