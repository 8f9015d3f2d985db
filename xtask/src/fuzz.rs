//! The cargo-fuzz targets in `fuzz/` (a workspace of its own, on the nightly
//! toolchain): `cargo xtask fuzz [TARGET] [SECONDS]` for a long run, and the
//! gate's steps (formatting, clippy, a build of every target and a short run
//! of each).

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
/// How long the gate runs each target.
pub const GATE_SECONDS: u64 = 25;
/// How long one input may take in the gate's runs before libFuzzer calls it
/// a hang (its default is 20 minutes; an input takes milliseconds).
const GATE_INPUT_TIMEOUT: u64 = 60;

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

/// Gate step: the fuzz targets are formatted (`cargo +nightly fmt --check`).
pub fn fmt_check() -> Result {
    cmd::run(&mut nightly_cargo(&dir(), ["fmt", "--check"]))
}

/// Gate step: clippy on the fuzz targets, warnings denied.
pub fn clippy() -> Result {
    cmd::run(&mut nightly_cargo(
        &dir(),
        ["clippy", "--all-targets", "--", "-D", "warnings"],
    ))
}

/// Gate step: every fuzz target built as `cargo fuzz run` builds it
/// (release, with AddressSanitizer and libFuzzer's coverage).
pub fn build() -> Result {
    cmd::run(&mut nightly_cargo(&dir(), ["fuzz", "build"]))
}

/// Where the gate's run of `target` keeps its corpus: under `fuzz/target`
/// (ignored by git), emptied before each run, so a run starts from nothing
/// and never writes into `fuzz/corpus`.
fn gate_corpus(target: &str) -> PathBuf {
    dir().join("target/gate-corpus").join(target)
}

/// Gate step: `target` fuzzed for [`GATE_SECONDS`] from an empty corpus; a
/// crash (a panic, a failed model check, an AddressSanitizer report, a leak,
/// an input running past a minute or out of memory) fails the step, and libFuzzer leaves
/// the input in `fuzz/artifacts/TARGET/`.
pub fn gate_run(target: &'static str) -> Result {
    let corpus = gate_corpus(target);
    if corpus.exists() {
        std::fs::remove_dir_all(&corpus)
            .map_err(|e| format!("cannot empty {}: {e}", corpus.display()))?;
    }
    std::fs::create_dir_all(&corpus)
        .map_err(|e| format!("cannot create {}: {e}", corpus.display()))?;
    let time = format!("-max_total_time={GATE_SECONDS}");
    let hang = format!("-timeout={GATE_INPUT_TIMEOUT}");
    let corpus_arg = corpus.to_string_lossy().into_owned();
    cmd::run(&mut nightly_cargo(
        &dir(),
        ["fuzz", "run", target, &corpus_arg, "--", &time, &hang],
    ))
    .map_err(|e| {
        format!(
            "{e}; libFuzzer left the input in fuzz/artifacts/{target}/ \
             (replay it: `cd fuzz && cargo +nightly fuzz run {target} artifacts/{target}/<file>`)"
        )
    })
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
