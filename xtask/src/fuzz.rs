//! `cargo xtask fuzz [TARGET] [SECONDS]`: the cargo-fuzz targets in `fuzz/`
//! (a workspace of its own, on the nightly toolchain), installing what they
//! need if it is missing.

use std::path::PathBuf;

use crate::cmd::{self, Result};
use crate::root;
use crate::setup::{self, nightly_cargo};

/// Every fuzz target (the `[[bin]]`s of `fuzz/Cargo.toml`; a test checks
/// the two lists agree).
pub const TARGETS: [&str; 5] = [
    "buddy_ops",
    "slab_ops",
    "vmalloc_ops",
    "pkmap_ops",
    "percpu_ops",
];
/// The target run when none is named.
const DEFAULT_TARGET: &str = "buddy_ops";
/// How long a run lasts when no time is given.
const DEFAULT_SECONDS: &str = "60";

/// The fuzz workspace.
fn dir() -> PathBuf {
    root().join("fuzz")
}

/// Runs one fuzz target for a while (`cargo xtask fuzz`). Its corpus is
/// `fuzz/corpus/TARGET` (ignored by git), kept from run to run so long runs
/// build on each other.
pub fn cli(args: &[String]) -> Result {
    let target = args.first().map_or(DEFAULT_TARGET, String::as_str);
    let seconds = args.get(1).map_or(DEFAULT_SECONDS, String::as_str);
    if !TARGETS.contains(&target) {
        return Err(format!(
            "fuzz: no target {target:?} (the targets: {})",
            TARGETS.join(", ")
        ));
    }
    if seconds.parse::<u64>().is_err() {
        return Err(format!("fuzz: SECONDS must be a number, got {seconds:?}"));
    }
    setup::for_fuzz()?;
    let time = format!("-max_total_time={seconds}");
    cmd::run(&mut nightly_cargo(
        &dir(),
        ["fuzz", "run", target, "--", &time],
    ))
}

#[cfg(test)]
mod tests {
    use super::TARGETS;

    /// The names of the `[[bin]]` sections of a Cargo.toml.
    fn bins(manifest: &str) -> Vec<String> {
        let mut in_bin = false;
        let mut names = Vec::new();
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin && let Some(v) = line.strip_prefix("name") {
                let v = v.trim_start().trim_start_matches('=').trim();
                names.push(v.trim_matches('"').to_string());
            }
        }
        names
    }

    #[test]
    fn every_target_is_listed() {
        let path = crate::root().join("fuzz/Cargo.toml");
        let manifest = std::fs::read_to_string(&path).expect("fuzz/Cargo.toml");
        let mut want = bins(&manifest);
        let mut have: Vec<String> = TARGETS.iter().map(|t| t.to_string()).collect();
        want.sort();
        have.sort();
        assert_eq!(
            have, want,
            "fuzz::TARGETS and the [[bin]]s of fuzz/Cargo.toml"
        );
    }
}
