//! Fuzzes the buddy allocator with the operations of its reference model
//! (`kmm_testkit::model::buddy`, shared with `crates/buddy/tests/model.rs`):
//! allocations of every order and GFP zone on two CPUs and two nodes, frees
//! (hot and cold, on either CPU), extra references, bad frees, drains, bulk
//! allocations (`alloc_pages_bulk`, up to 79 slots, a live page kept in the
//! first) and bulk frees (`release_pages` of up to 71 live pages, with a bad
//! element — freed, reserved, interior, of a higher order, a duplicate — at a
//! chosen index, which must be the one refused). After
//! each step the model checks the allocator (no overlap, exact accounting);
//! each input ends by freeing everything, draining both CPUs and checking that
//! every zone is fully coalesced — so the allocator is back where it started
//! and is reused by the next input.
#![no_main]

use std::sync::OnceLock;

use kmm_testkit::model::buddy::{Model, Op};
use kmm_testkit::{Backing, TestMachine};
use libfuzzer_sys::fuzz_target;

const CPUS: usize = 2;

/// 24 MiB on two nodes (node 1 from 12 MiB), a BIOS hole, an unaligned ACPI
/// range, high memory from 20 MiB so all three zones exist.
fn host() -> &'static TestMachine {
    static HOST: OnceLock<TestMachine> = OnceLock::new();
    HOST.get_or_init(|| {
        TestMachine::builder()
            .ram_mib(24)
            .cpus(CPUS)
            .backing(Backing::Software)
            .bios_holes()
            .nodes(2)
            .highmem_mib(20)
            .min_free_kbytes(Some(256))
            .cpu_nodes(&[0, 1])
            .build()
    })
}

fuzz_target!(|data: &[u8]| {
    let host = host();
    let mut model = Model::new(false);
    for op in data.chunks_exact(3) {
        let op = Op::decode([op[0], op[1], op[2]], CPUS);
        if let Err(e) = model.apply(host, &op) {
            panic!("{op:?}: {e}");
        }
    }
    if let Err(e) = model.finish(host) {
        panic!("at the end: {e}");
    }
});
