//! `cargo xtask miri`: the library tests under Miri on the nightly toolchain.

use std::process::Command;

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
