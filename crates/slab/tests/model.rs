//! Model-based property test: caches of many sizes, alignments and
//! constructors, kmalloc/krealloc/kfree, bad frees and reaping on several
//! CPUs, against the test kit's reference model
//! ([`kmm_testkit::model::slab`], shared with the `slab_ops` fuzz target; its
//! docs list what is checked after each step). Every live object is filled
//! with a pattern and checked; no two overlap; the statistics agree with the
//! model and `validate_cache` passes after every step; bad frees change
//! nothing; after freeing everything and shrinking, every page is back in the
//! buddy allocator.
//!
//! Failing cases are saved for regression: proptest writes the seed of a
//! failure to `tests/model.proptest-regressions` (beside this file) and
//! replays it first on every later run. Commit that file with the fix.

use kmm_slab::KmallocSizes;
use kmm_testkit::TestMachine;
use kmm_testkit::model::slab::{self, Config, Op, strategy};
use proptest::prelude::*;

const CPUS: usize = 2;
const CACHES: usize = 4;

fn run(specs: Vec<Op>, ops: Vec<Op>, linux26: bool) -> Result<(), TestCaseError> {
    let sizes = if linux26 {
        KmallocSizes::Linux26
    } else {
        KmallocSizes::Dense
    };
    // As `common::rig`, with the class table under test.
    let host = TestMachine::builder()
        .ram_mib(48)
        .cpus(CPUS)
        .no_reserve()
        .kmalloc_sizes(sizes)
        .build();
    host.slab();
    let config = Config {
        must_succeed: true,
        max_caches: CACHES,
    };
    let all: Vec<Op> = specs.into_iter().chain(ops).collect();
    slab::run(&host, config, &all)?;
    Ok(())
}

proptest! {
    #![proptest_config(kmm_testkit::model::proptest_config(32, 2))]

    #[test]
    fn slab_matches_the_model(
        specs in prop::collection::vec(strategy::create_cache(), CACHES),
        ops in prop::collection::vec(
            strategy::op(CPUS, CACHES),
            if cfg!(miri) { 5..20 } else { 1..250 },
        ),
        linux26 in prop::bool::weighted(0.25),
    ) {
        run(specs, ops, linux26)?;
    }
}
