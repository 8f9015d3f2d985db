//! Miri on the nightly toolchain: `cargo xtask miri` runs the library tests
//! (all of [`CRATES`]); the gate runs a subset ([`GATE_TESTS`]) that fits in
//! a few minutes.

use std::process::Command;
use std::time::Instant;

use crate::cmd::{self, Result};
use crate::root;
use crate::setup::{self, nightly_cargo};

/// The library crates, the mock and the test kit: their tests run under Miri
/// (the mock in its pure-software mode; the buddy and slab integration tests
/// also run the test kit's one unsafe part, which owns their allocators) and,
/// in the gate, as a 32-bit host.
pub const CRATES: [&str; 10] = [
    "kmm-hal",
    "kmm-i386",
    "kmm-mock",
    "kmm-page-frame",
    "kmm-buddy",
    "kmm-slab",
    "kmm-vmalloc",
    "kmm-pkmap",
    "kmm-percpu",
    "kmm-testkit",
];
/// Miri flags: the page-table code turns integers into pointers through a
/// direct map, which needs permissive provenance; and the tests see
/// `PROPTEST_CASES` (Miri hides the host's environment from the program
/// unless a variable is forwarded).
const MIRIFLAGS: &str = "-Zmiri-permissive-provenance -Zmiri-env-forward=PROPTEST_CASES";
/// Property-test cases per test under Miri in `cargo xtask miri`, unless
/// PROPTEST_CASES says otherwise (Miri is orders of magnitude slower than
/// native code). The model tests run fewer: their own count under Miri
/// (`kmm_testkit::model::proptest_config`), which PROPTEST_CASES only lowers.
const MIRI_PROPTEST_CASES: &str = "16";
/// Property-test cases per test in the gate's Miri step: one case of each
/// model test.
const GATE_PROPTEST_CASES: &str = "1";

/// One test the gate runs under Miri: a package, one of its integration
/// test targets, and the name of one test in it (run with `--exact`).
#[derive(Debug, Clone, Copy)]
pub struct GateTest {
    /// The package.
    pub package: &'static str,
    /// The integration test target (`--test`).
    pub target: &'static str,
    /// The test's name.
    pub name: &'static str,
}

const fn gate_test(package: &'static str, target: &'static str, name: &'static str) -> GateTest {
    GateTest {
        package,
        target,
        name,
    }
}

/// The gate's Miri subset, one case of each property test
/// ([`GATE_PROPTEST_CASES`]): under four minutes on two cores, chosen to
/// reach each allocator's unsafe core on the mock's software backing. The
/// model-based tests of buddy (split, coalesce, the per-CPU lists, two
/// nodes), vmalloc (areas, the page-table fill, vmap, vm_map_ram), pkmap
/// (kmap, kmap_local, kmap_atomic, so the i386 page-table writes through
/// the direct map) and the per-CPU chunk allocator, and of vmalloc's two
/// trees (the augmented rbtree, the free areas). The slab model takes over
/// ten minutes a case under Miri, so the slab allocator is reached through
/// its bad-free test (object and descriptor lookup) and through vmalloc,
/// which takes its descriptors from kmalloc. Everything else of [`CRATES`] (the paging
/// model, the slab model, the SMP and interrupt tests, …) runs in `cargo
/// xtask miri`.
pub const GATE_TESTS: [GateTest; 7] = [
    gate_test("kmm-buddy", "model", "buddy_matches_the_model"),
    gate_test("kmm-slab", "bad_input", "bad_frees_are_refused"),
    gate_test("kmm-vmalloc", "model", "vmalloc_matches_the_model"),
    gate_test("kmm-pkmap", "model", "pkmap_matches_the_model"),
    gate_test("kmm-percpu", "model", "allocator_matches_the_model"),
    gate_test("kmm-vmalloc", "rbtree_model", "tree_matches_a_btreemap"),
    gate_test(
        "kmm-vmalloc",
        "free_area_model",
        "free_areas_match_the_interval_model",
    ),
];

/// `cargo +nightly miri test ARGS` with the flags kmm's tests need
/// ([`MIRIFLAGS`] added to any the caller set) and `PROPTEST_CASES=cases`.
fn miri_test(args: &[&str], cases: &str) -> Command {
    let flags = match std::env::var("MIRIFLAGS") {
        Ok(f) if !f.trim().is_empty() => format!("{f} {MIRIFLAGS}"),
        _ => MIRIFLAGS.to_string(),
    };
    eprintln!("xtask: MIRIFLAGS={flags:?} PROPTEST_CASES={cases}");
    let mut c = nightly_cargo(&root(), ["miri", "test"]);
    c.args(args)
        .env("MIRIFLAGS", flags)
        .env("PROPTEST_CASES", cases);
    c
}

/// `cargo xtask miri`: installs the nightly toolchain's components if
/// missing ([`setup::for_miri`]), then runs every test of [`CRATES`] under
/// Miri.
pub fn run() -> Result {
    setup::for_miri()?;
    let mut args = Vec::new();
    for c in CRATES {
        args.extend(["-p", c]);
    }
    let cases = std::env::var("PROPTEST_CASES").unwrap_or_else(|_| MIRI_PROPTEST_CASES.into());
    cmd::run(&mut miri_test(&args, &cases))
}

/// Gate step: each test of [`GATE_TESTS`] under Miri. A test that no longer
/// exists (renamed, say) fails the step rather than running nothing.
pub fn gate() -> Result {
    let mut times = Vec::new();
    for t in GATE_TESTS {
        let args = ["-p", t.package, "--test", t.target, "--", "--exact", t.name];
        let started = Instant::now();
        let out = cmd::run_capture(&mut miri_test(&args, GATE_PROPTEST_CASES))?;
        if !out.contains("test result: ok. 1 passed") {
            return Err(format!(
                "Miri ran no test {} in {} --test {}: was it renamed? (update miri::GATE_TESTS)",
                t.name, t.package, t.target
            ));
        }
        times.push((t, started.elapsed()));
    }
    for (t, d) in times {
        eprintln!(
            "xtask: miri: {:6.1}s  {} --test {} {}",
            d.as_secs_f64(),
            t.package,
            t.target,
            t.name
        );
    }
    Ok(())
}
