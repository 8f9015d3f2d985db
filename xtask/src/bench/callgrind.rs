//! Instructions per fast path, the figure a noisy machine repeats exactly:
//! `hot_path_driver MODE PAIRS` under `valgrind --tool=callgrind` at two
//! values of PAIRS, and the difference in instructions over the difference
//! in pairs (the machine's set-up, the same in both, cancels out).

use std::path::Path;

use crate::cmd::{self, Result, command};

use super::markdown::{Table, count};

/// A fast path: the driver's mode, what the table calls it, and the two
/// pair counts it runs at.
#[derive(Clone, Copy, Debug)]
pub struct FastPath {
    /// `hot_path_driver`'s first argument.
    pub mode: &'static str,
    /// The table's description.
    pub label: &'static str,
    /// The two values of PAIRS.
    pub pairs: (u64, u64),
}

/// Pair counts of the cheap paths: a second or two each under callgrind.
const CHEAP: (u64, u64) = (1_000_000, 2_000_000);
/// Pair counts of the paths that write page tables (about 2 300
/// instructions a pair on the mock).
const PTE: (u64, u64) = (200_000, 400_000);

/// The paths in the table, in order.
pub const PATHS: [FastPath; 14] = [
    FastPath {
        mode: "order0",
        label: "order-0 `alloc_pages` + `free_pages_page` (per-CPU lists)",
        pairs: CHEAP,
    },
    FastPath {
        mode: "bulk16",
        label: "`alloc_pages_bulk` + `release_pages` of 16, per page",
        pairs: CHEAP,
    },
    FastPath {
        mode: "bulk32",
        label: "`alloc_pages_bulk` + `release_pages` of 32, per page",
        pairs: CHEAP,
    },
    FastPath {
        mode: "bulk64",
        label: "`alloc_pages_bulk` + `release_pages` of 64, per page",
        pairs: CHEAP,
    },
    FastPath {
        mode: "cache",
        label: "`kmem_cache_alloc` + `kmem_cache_free`, 64 B",
        pairs: CHEAP,
    },
    FastPath {
        mode: "cache_bulk16",
        label: "`kmem_cache_alloc_bulk` + `kmem_cache_free_bulk` of 16, 64 B (per object)",
        pairs: CHEAP,
    },
    FastPath {
        mode: "cache_bulk32",
        label: "`kmem_cache_alloc_bulk` + `kmem_cache_free_bulk` of 32, 64 B (per object)",
        pairs: CHEAP,
    },
    FastPath {
        mode: "cache_bulk64",
        label: "`kmem_cache_alloc_bulk` + `kmem_cache_free_bulk` of 64, 64 B (per object)",
        pairs: CHEAP,
    },
    FastPath {
        mode: "kmalloc",
        label: "`kmalloc` + `kfree`, 64 B",
        pairs: CHEAP,
    },
    FastPath {
        mode: "global",
        label: "`GlobalAlloc` pair of `KmallocHeap`, 64 B",
        pairs: CHEAP,
    },
    FastPath {
        mode: "global_heap",
        label: "`GlobalAlloc` pair of the umbrella's `GlobalHeap`, 64 B",
        pairs: CHEAP,
    },
    FastPath {
        mode: "kmap_mapped",
        label: "`kmap` + `kunmap` of a HIGHMEM page already mapped",
        pairs: CHEAP,
    },
    FastPath {
        mode: "kmap_local",
        label: "`kmap_local_page` + `kunmap_local` of a HIGHMEM page",
        pairs: PTE,
    },
    FastPath {
        mode: "this_cpu_add",
        label: "`this_cpu` add on the mock (`IndexOps`; one operation, not a pair)",
        pairs: CHEAP,
    },
];

/// The instruction total callgrind reports on its standard error
/// (`==PID== Collected : N`).
pub fn parse_collected(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        let (_, n) = l.split_once("Collected :")?;
        n.trim().parse().ok()
    })
}

/// Instructions per pair between two runs `(pairs, instructions)`.
pub fn per_pair(low: (u64, u64), high: (u64, u64)) -> Result<f64> {
    if high.0 <= low.0 || high.1 < low.1 {
        return Err(format!(
            "{} instructions at {} pairs, {} at {}: no difference to divide",
            low.1, low.0, high.1, high.0
        ));
    }
    Ok((high.1 - low.1) as f64 / (high.0 - low.0) as f64)
}

/// Instructions per pair as the table shows them: whole, or with a tenth
/// where a path's work is not the same every pair.
pub fn format_per_pair(x: f64) -> String {
    let whole = x.round();
    if (x - whole).abs() < 0.05 {
        count(whole as u64)
    } else {
        format!("{x:.1}")
    }
}

/// The command line of one run, for the docs and for messages.
pub fn command_line(driver: &str, mode: &str, pairs: &str) -> String {
    format!("valgrind --tool=callgrind --callgrind-out-file=/dev/null {driver} {mode} {pairs}")
}

/// Runs `driver MODE PAIRS` under callgrind and returns its instructions.
fn instructions(root: &Path, driver: &Path, mode: &str, pairs: u64) -> Result<u64> {
    let mut c = command(
        root,
        "valgrind",
        [
            "--tool=callgrind".as_ref(),
            "--callgrind-out-file=/dev/null".as_ref(),
            driver.as_os_str(),
            mode.as_ref(),
            pairs.to_string().as_ref(),
        ],
    );
    let what = command_line(&driver.display().to_string(), mode, &pairs.to_string());
    let out = c
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot start `{what}`: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("`{what}` failed ({}):\n{stderr}", out.status));
    }
    parse_collected(&stderr).ok_or_else(|| format!("`{what}`: no \"Collected :\" line"))
}

/// Builds the driver (release) and measures every path of [`PATHS`]; the
/// table of instructions per pair.
pub fn measure(root: &Path, driver: &Path) -> Result<Table> {
    cmd::run(&mut command(
        root,
        "cargo",
        [
            "build",
            "--release",
            "-p",
            "kmm-benches",
            "--bin",
            "hot_path_driver",
        ],
    ))?;
    let mut table = Table::new(["path", "driver mode", "instructions per pair"]);
    for p in PATHS {
        let (a, b) = p.pairs;
        eprintln!("xtask: callgrind: {} at {a} and {b} pairs", p.mode);
        let low = instructions(root, driver, p.mode, a)?;
        let high = instructions(root, driver, p.mode, b)?;
        let per = per_pair((a, low), (b, high))?;
        table.row([
            p.label.to_string(),
            format!("`{}`", p.mode),
            format_per_pair(per),
        ]);
    }
    Ok(table)
}

/// The sentence above the table: how the counts were taken.
pub fn method() -> String {
    let mut counts: Vec<(u64, u64)> = Vec::new();
    for p in PATHS {
        if !counts.contains(&p.pairs) {
            counts.push(p.pairs);
        }
    }
    let runs: Vec<String> = counts
        .iter()
        .map(|&(a, b)| {
            let modes: Vec<&str> = PATHS
                .iter()
                .filter(|p| p.pairs == (a, b))
                .map(|p| p.mode)
                .collect();
            format!("{} and {} ({})", count(a), count(b), modes.join(", "))
        })
        .collect();
    format!(
        "`{}`, PAIRS = {}; each row is the difference in instructions ÷ the difference in PAIRS (for the `bulkN` modes PAIRS counts pages, N to a call).",
        command_line("target/release/hot_path_driver", "MODE", "PAIRS"),
        runs.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collected_line_gives_the_total() {
        let stderr = "==4242== Callgrind, a call-graph generating cache profiler\n\
                      ==4242== \n\
                      ==4242== Events    : Ir\n\
                      ==4242== Collected : 375397526\n\
                      ==4242== \n\
                      ==4242== I   refs:      375,397,526\n";
        assert_eq!(parse_collected(stderr), Some(375_397_526));
        assert_eq!(parse_collected("==1== I   refs: 12\n"), None);
    }

    #[test]
    fn per_pair_is_the_difference_over_the_pairs() {
        let per = per_pair((1_000_000, 197_397_526), (2_000_000, 375_397_526)).unwrap();
        assert_eq!(per, 178.0);
        assert_eq!(format_per_pair(per), "178");
        assert_eq!(format_per_pair(2302.0), "2 302");
        assert_eq!(format_per_pair(175.25), "175.2");
        assert!(per_pair((2, 10), (1, 20)).is_err());
        assert!(per_pair((1, 20), (2, 10)).is_err());
    }

    #[test]
    fn the_method_names_every_count() {
        let m = method();
        assert!(
            m.contains("PAIRS = 1 000 000 and 2 000 000 (order0, bulk16, bulk32, bulk64, cache"),
            "{m}"
        );
        assert!(m.contains("this_cpu_add); 200 000"), "{m}");
        assert!(m.contains("200 000 and 400 000 (kmap_local)"), "{m}");
    }
}
