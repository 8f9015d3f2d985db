//! `cargo xtask bench [ARGS...]`: the criterion benchmarks of `kmm-benches`
//! (kmm beside its crates.io peers), with ARGS handed to criterion — a filter
//! such as `order0`, or options such as `--save-baseline main`. Never part of
//! the gate: benchmarks are measurements, not tests.

use crate::cmd::{self, Result, command};
use crate::root;

/// The package that holds the benchmarks.
pub const PACKAGE: &str = "kmm-benches";

/// The `cargo` arguments for a run with criterion arguments `args` (a leading
/// `--` is accepted and dropped, so `bench -- ARGS` works too).
fn cargo_args(args: &[String]) -> Vec<&str> {
    let args = match args.first().map(String::as_str) {
        Some("--") => &args[1..],
        _ => args,
    };
    let mut v = vec!["bench", "-p", PACKAGE, "--"];
    v.extend(args.iter().map(String::as_str));
    v
}

/// Runs `cargo bench -p kmm-benches -- ARGS`.
pub fn cli(args: &[String]) -> Result {
    cmd::run(&mut command(&root(), "cargo", cargo_args(args)))
}

#[cfg(test)]
mod tests {
    use super::cargo_args;

    #[test]
    fn arguments_go_to_criterion() {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(cargo_args(&[]), ["bench", "-p", "kmm-benches", "--"]);
        let want = ["bench", "-p", "kmm-benches", "--", "order0", "--quick"];
        assert_eq!(cargo_args(&s(&["order0", "--quick"])), want);
        assert_eq!(cargo_args(&s(&["--", "order0", "--quick"])), want);
    }
}
