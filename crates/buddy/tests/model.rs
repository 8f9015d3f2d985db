//! Model-based property test: random alloc / free / reference / bad free /
//! drain sequences over mixed orders, GFP zones, two nodes and several CPUs,
//! against the test kit's reference model of the live blocks
//! ([`kmm_testkit::model::buddy`], shared with the `buddy_ops` fuzz target;
//! its docs list what is checked after each step). After freeing everything
//! and draining every CPU's lists, every zone is fully coalesced.
//!
//! Failing cases are saved for regression: proptest writes the seed of a
//! failure to `tests/model.proptest-regressions` (beside this file) and
//! replays it first on every later run. Commit that file with the fix.

mod common;

use common::{no_reserve, rig};
use kmm_buddy::BuddyConfig;
use kmm_testkit::model::buddy::{self, Op};
use proptest::prelude::*;

const CPUS: usize = 3;

fn run(
    ops: Vec<Op>,
    config: BuddyConfig<'static>,
    exact_failures: bool,
) -> Result<(), TestCaseError> {
    let host = rig(40, 32, CPUS, true, config);
    buddy::run(&host, &ops, exact_failures)?;
    Ok(())
}

fn config() -> ProptestConfig {
    kmm_testkit::model::proptest_config(48, 2)
}

fn len() -> std::ops::Range<usize> {
    if cfg!(miri) { 5..20 } else { 1..300 }
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(buddy::op(CPUS, 2), len())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn buddy_matches_the_model(ops in ops()) {
        run(ops, no_reserve(), true)?;
    }

    #[test]
    fn buddy_matches_the_model_with_watermarks(ops in ops()) {
        run(ops, BuddyConfig::default(), false)?;
    }

    #[test]
    fn buddy_matches_the_model_without_pcp(ops in ops()) {
        run(ops, BuddyConfig { bypass_pcp: true, ..no_reserve() }, true)?;
    }
}
