//! `cargo xtask miri`: the library tests under Miri on the nightly toolchain.

use crate::cmd::{self, Result, command};
use crate::root;

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
/// direct map, which needs permissive provenance.
const MIRIFLAGS: &str = "-Zmiri-permissive-provenance";
/// Property-test cases per test under Miri, unless PROPTEST_CASES says otherwise
/// (Miri is orders of magnitude slower than native code).
const MIRI_PROPTEST_CASES: &str = "16";

/// Installs Miri and `rust-src` on nightly if missing, then runs the tests.
pub fn run() -> Result {
    let root = root();
    let nightly = |args: &[&str]| {
        let mut c = command(&root, "rustup", args);
        c.env_remove("RUSTUP_TOOLCHAIN");
        c
    };
    let toolchains = cmd::output(&mut nightly(&["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("xtask: installing the nightly toolchain with miri and rust-src");
        cmd::run(&mut nightly(&[
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "miri,rust-src",
        ]))?;
    }
    let installed = cmd::output(&mut nightly(&[
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    for component in ["miri", "rust-src"] {
        if !installed.lines().any(|l| l.starts_with(component)) {
            eprintln!("xtask: adding {component} to the nightly toolchain");
            cmd::run(&mut nightly(&[
                "component",
                "add",
                "--toolchain",
                "nightly",
                component,
            ]))?;
        }
    }
    let mut args = vec!["+nightly", "miri", "test"];
    for c in CRATES {
        args.extend(["-p", c]);
    }
    let flags = match std::env::var("MIRIFLAGS") {
        Ok(f) if !f.trim().is_empty() => format!("{f} {MIRIFLAGS}"),
        _ => MIRIFLAGS.to_string(),
    };
    let mut c = command(&root, "cargo", &args);
    c.env_remove("RUSTUP_TOOLCHAIN").env("MIRIFLAGS", flags);
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.env("PROPTEST_CASES", MIRI_PROPTEST_CASES);
    }
    cmd::run(&mut c)
}
