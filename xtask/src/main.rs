//! `cargo xtask`: the project's task runner.
//!
//! - `setup`: installs what is missing (the i686 Rust target, QEMU, the
//!   nightly toolchain's components, cargo-fuzz);
//! - `qemu [--pae] [--smp N] [--memory SIZE] [-- ARGS...]`: builds the
//!   example kernel and boots it (four CPUs and 2 GiB unless told otherwise);
//!   `qemu --minimal [--memory SIZE]`: the minimal kernel (one CPU);
//! - `test [--only WORD]... [--list]`: the gate (formatting, the Linux map,
//!   clippy, packaging, tests, fuzz runs, Miri, QEMU boots of both kernels),
//!   or the steps whose names contain WORD;
//! - `linux-map`: the gate's check of `docs/linux-map.md` alone;
//! - `bench [ARGS...]`: the criterion benchmarks, ARGS handed to criterion;
//!   `bench --report`: every bench and the instruction counts, and
//!   docs/benchmarks.md's tables and plots regenerated from them;
//! - `miri`: the library tests under Miri (nightly), all of them;
//! - `fuzz [TARGET] [SECONDS]`: a cargo-fuzz target (nightly).

mod bench;
mod cmd;
mod fuzz;
mod gate;
mod linux_map;
mod miri;
mod qemu;
mod setup;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup                   install what is missing (i686 target, qemu-system-i386, gcc-multilib,
                          the nightly toolchain with miri, rust-src, rustfmt and clippy, g++,
                          cargo-fuzz)
  qemu [--pae] [--smp N] [--memory SIZE] [-- ARGS]
                          build the example kernel and boot it in qemu-system-i386
                          with N CPUs (default 4) and SIZE of RAM (default 2G);
                          ARGS are appended to the kernel command line
  qemu --check [--pae] [--smp N] [--memory SIZE]
                          one boot step of the gate: boot and check the expected lines
  qemu --minimal [--memory SIZE] [--check]
                          build the minimal kernel (examples/minimal-kernel) and boot it
                          on one CPU; with --check, its gate step (512M or 2G)
  test [--only WORD]... [--list]
                          run the gate: fmt, the Linux map, clippy (host, i686, fuzz targets),
                          cargo package, cargo test, the fuzz targets built and each run for
                          25 s, a subset of the tests under Miri, QEMU boots (2-level and PAE,
                          16 MiB to 8 GiB, 1 and 4 CPUs), the panic path and the minimal
                          kernel; each step's time and the total.
                          --only WORD: setup and the steps whose names contain WORD
                          (e.g. fuzz, miri, qemu); --list: the steps' names
  linux-map               check docs/linux-map.md: every kmm item it names exists
                          and every Linux name has a row (a step of the gate)
  bench [ARGS]            run the criterion benchmarks (kmm beside its peers):
                          cargo bench -p kmm-benches -- ARGS (e.g. a group name)
  bench --report [--doc PATH] [--from-results] [--no-instructions] [--instructions-only] [-- ARGS]
                          run every bench (criterion ARGS after --), count the fast paths'
                          instructions under callgrind, and regenerate the tables and plots
                          of docs/benchmarks.md (or PATH); --from-results tabulates the results
                          already in target/criterion instead of running
  miri                    run every library test under Miri (nightly; the gate runs a subset)
  fuzz [TARGET] [SECONDS] run a cargo-fuzz target in fuzz/ (default buddy_ops, 60 s) on its
                          corpus fuzz/corpus/TARGET (kept between runs, ignored by git);
                          targets: buddy_ops, slab_ops, vmalloc_ops, pkmap_ops, percpu_ops";

/// The root of the repository (the parent of the xtask package).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `cargo xtask qemu …` ([`qemu::parse`] says what it takes): a boot, or
/// with `--check` the gate's boot of that configuration, checked.
///
/// When the i686 target or QEMU cannot be installed, a plain boot says why
/// and runs the walkthrough on the host mock instead (the same story without
/// QEMU); `--check` fails, as the gate must.
fn qemu_cli(args: &[String]) -> cmd::Result {
    let o = qemu::parse(args)?;
    if let Err(why) = setup::for_qemu() {
        if o.check {
            return Err(why);
        }
        eprintln!("xtask: cannot boot in QEMU: {why}");
        eprintln!(
            "xtask: running the walkthrough on the host mock instead (cargo run -p kmm --example walkthrough)"
        );
        return cmd::run(&mut cmd::command(
            &root(),
            "cargo",
            ["run", "-p", "kmm", "--example", "walkthrough"],
        ));
    }
    if o.check {
        gate::check_boot(&o)
    } else {
        qemu::run(&o)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(),
        Some("qemu") => qemu_cli(&args[1..]),
        Some("test") => gate::run(&args[1..]),
        Some("linux-map") => linux_map::run(),
        Some("bench") => bench::cli(&args[1..]),
        Some("miri") => miri::run(),
        Some("fuzz") => fuzz::cli(&args[1..]),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => {
            eprintln!("xtask: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
