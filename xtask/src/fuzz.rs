//! `cargo xtask fuzz [TARGET] [SECONDS]`: the cargo-fuzz targets in `fuzz/`
//! (nightly), installing cargo-fuzz if it is missing.

use crate::cmd::{self, Result, command};
use crate::root;

/// The target run when none is named.
const DEFAULT_TARGET: &str = "buddy_ops";
/// How long a run lasts when no time is given.
const DEFAULT_SECONDS: &str = "60";

/// Runs one fuzz target for a while.
pub fn cli(args: &[String]) -> Result {
    let target = args.first().map_or(DEFAULT_TARGET, String::as_str);
    let seconds = args.get(1).map_or(DEFAULT_SECONDS, String::as_str);
    if seconds.parse::<u64>().is_err() {
        return Err(format!("fuzz: SECONDS must be a number, got {seconds:?}"));
    }
    let root = root();
    let fuzz_dir = root.join("fuzz");
    let listed = {
        let mut c = command(&root, "cargo", ["+nightly", "fuzz", "--version"]);
        c.env_remove("RUSTUP_TOOLCHAIN");
        cmd::output(&mut c).is_ok()
    };
    if !listed {
        eprintln!("xtask: installing cargo-fuzz (nightly)");
        let mut c = command(
            &root,
            "cargo",
            ["+nightly", "install", "cargo-fuzz", "--locked"],
        );
        c.env_remove("RUSTUP_TOOLCHAIN");
        cmd::run(&mut c)?;
    }
    let time = format!("-max_total_time={seconds}");
    let mut c = command(
        &fuzz_dir,
        "cargo",
        ["+nightly", "fuzz", "run", target, "--", &time],
    );
    c.env_remove("RUSTUP_TOOLCHAIN");
    cmd::run(&mut c)
}
