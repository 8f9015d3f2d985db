//! `cargo xtask bench [ARGS...]`: the criterion benchmarks of `kmm-benches`
//! (kmm beside its crates.io peers; `cargo bench -p kmm-benches -- ARGS`),
//! with ARGS handed to criterion — a filter such as `order0`, or
//! options such as `--save-baseline main`. Never part of
//! the gate: benchmarks are measurements, not tests.
//!
//! `cargo xtask bench --report [OPTIONS] [-- ARGS...]` regenerates the
//! published comparison: it runs every bench (`cargo bench -p kmm-benches
//! -- ARGS`), reads criterion's results ([`criterion`]), rewrites the
//! generated regions of docs/benchmarks.md ([`regions`], the tables
//! [`published`] describes), draws docs/plots/*.svg ([`plot`]) and counts
//! the instructions of the fast paths under callgrind ([`callgrind`]).
//! A full run (no criterion ARGS) also puts the `heap_efficiency` binary's
//! table in its region. A table whose benches did not all run in this run (a filter in ARGS)
//! keeps what it had. OPTIONS:
//!
//! - `--doc PATH`: write PATH (and the plots beside it, in `plots/`)
//!   instead of docs/benchmarks.md;
//! - `--from-results`: run nothing; tabulate the results already in
//!   criterion's directory, whatever their age;
//! - `--no-instructions`: leave the instruction counts as they are;
//! - `--instructions-only`: only the instruction counts (no criterion run,
//!   no tables, no plots).

mod callgrind;
mod criterion;
mod markdown;
mod plot;
mod published;
mod regions;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cmd::{self, Result, command};
use crate::root;

use self::criterion::Results;
use self::published::{Generated, Lookup};

/// The package that holds the benchmarks.
pub const PACKAGE: &str = "kmm-benches";

/// The document the report rewrites, from the repository's root.
const DOC: &str = "docs/benchmarks.md";

/// The region of the instruction counts.
const INSTRUCTIONS: &str = "instructions";

/// The region of the heap-efficiency table (the `heap_efficiency` binary's
/// output, in a full run).
const EFFICIENCY: &str = "heap_efficiency";

/// The command that prints the heap-efficiency table.
const EFFICIENCY_CMD: [&str; 7] = [
    "run",
    "--release",
    "-p",
    PACKAGE,
    "--bin",
    "heap_efficiency",
    "--quiet",
];

/// The `cargo` arguments for a run with criterion arguments `args` (a leading
/// `--` is accepted and dropped, so `bench -- ARGS` works too). The
/// package's library and binaries are `bench = false`, so only the
/// criterion targets see ARGS (libtest refuses criterion's options).
fn cargo_args(args: &[String]) -> Vec<&str> {
    let args = match args.first().map(String::as_str) {
        Some("--") => &args[1..],
        _ => args,
    };
    let mut v = vec!["bench", "-p", PACKAGE, "--"];
    v.extend(args.iter().map(String::as_str));
    v
}

/// Where the criterion tables come from in a report.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    /// A run of every bench (with the criterion arguments).
    Run,
    /// The results already on disk.
    FromResults,
    /// None: the criterion tables and plots are left as they are.
    Skip,
}

/// A report's options.
#[derive(Debug, PartialEq)]
struct Report {
    /// The document to write (`None`: [`DOC`]).
    doc: Option<PathBuf>,
    /// Where the criterion tables come from.
    source: Source,
    /// Whether to count instructions.
    instructions: bool,
    /// Criterion arguments (after `--`).
    args: Vec<String>,
}

/// What `cargo xtask bench ARGS` was asked for.
#[derive(Debug, PartialEq)]
enum Task {
    /// `cargo bench -p kmm-benches -- ARGS`.
    Run(Vec<String>),
    /// `--report`.
    Report(Report),
}

/// Reads `cargo xtask bench`'s arguments: a report if `--report` comes
/// before any `--`, else a plain run with every argument for criterion.
fn parse(args: &[String]) -> Result<Task> {
    let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let (options, rest) = args.split_at(split);
    if !options.iter().any(|a| a == "--report") {
        return Ok(Task::Run(args.to_vec()));
    }
    let mut r = Report {
        doc: None,
        source: Source::Run,
        instructions: true,
        args: rest.iter().skip(1).cloned().collect(),
    };
    let mut only = false;
    let mut it = options.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--report" => {}
            "--doc" => r.doc = Some(it.next().ok_or("--doc needs a path")?.into()),
            "--from-results" => r.source = Source::FromResults,
            "--no-instructions" => r.instructions = false,
            "--instructions-only" => only = true,
            other => {
                return Err(format!(
                    "bench --report: unknown option {other:?} (criterion's arguments go after `--`)"
                ));
            }
        }
    }
    if only {
        if r.source == Source::FromResults || !r.instructions {
            return Err(
                "--instructions-only goes with neither --from-results nor --no-instructions".into(),
            );
        }
        r.source = Source::Skip;
    }
    if r.source != Source::Run && !r.args.is_empty() {
        return Err(
            "criterion's arguments need a run: drop --from-results / --instructions-only".into(),
        );
    }
    Ok(Task::Report(r))
}

/// `cargo xtask bench …`: a plain run or a report.
pub fn cli(args: &[String]) -> Result {
    match parse(args)? {
        Task::Run(args) => cmd::run(&mut command(&root(), "cargo", cargo_args(&args))),
        Task::Report(r) => report(&root(), &r),
    }
}

/// The commit the numbers belong to: `git rev-parse --short HEAD`, marked
/// when files outside docs/ have uncommitted changes.
fn commit(root: &Path) -> Result<String> {
    let head = cmd::output(&mut command(root, "git", ["rev-parse", "--short", "HEAD"]))?;
    let status = cmd::output(&mut command(
        root,
        "git",
        [
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":(exclude)docs",
        ],
    ))?;
    let head = head.trim();
    Ok(if status.trim().is_empty() {
        format!("`{head}`")
    } else {
        format!("`{head}` with uncommitted changes")
    })
}

/// The region text of a generated table: where it comes from, the note,
/// the table.
fn region_text(provenance: &str, g: &Generated) -> String {
    let mut line = provenance.to_string();
    if !g.note.is_empty() {
        line.push(' ');
        line.push_str(&g.note);
    }
    format!("{line}\n\n{}", g.table.render())
}

/// A list of ids for a message: the first few and how many more.
fn some(ids: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut s = ids[..ids.len().min(SHOWN)].join(", ");
    if ids.len() > SHOWN {
        s.push_str(&format!(" and {} more", ids.len() - SHOWN));
    }
    s
}

/// What a report made and what it left.
#[derive(Default)]
struct Outcome {
    /// New region contents, by name.
    regions: BTreeMap<String, String>,
    /// Plots written.
    plots: Vec<PathBuf>,
    /// Regions and plots left as they were, and why.
    left: Vec<(String, String)>,
}

/// The criterion part: tables and plots from `results`.
fn tabulate(results: &Results, provenance: &str, plots_dir: &Path, out: &mut Outcome) -> Result {
    let mut used = BTreeSet::new();
    for spec in published::tables() {
        let l = Lookup::new(results);
        let made = (spec.build)(&l);
        used.extend(l.used());
        match l.finish(made) {
            Ok(g) => {
                out.regions
                    .insert(spec.region.to_string(), region_text(provenance, &g));
            }
            Err(missing) => out.left.push((
                spec.region.to_string(),
                format!("no results for {}", some(&missing)),
            )),
        }
    }
    for spec in published::plots() {
        let l = Lookup::new(results);
        let lines: Vec<plot::Line> = spec
            .series
            .iter()
            .map(|s| plot::Line {
                label: s.label.clone(),
                points: s
                    .points
                    .iter()
                    .map(|(x, id)| (*x, l.get(id).estimate.median / spec.y_unit))
                    .collect(),
            })
            .collect();
        used.extend(l.used());
        let path = plots_dir.join(spec.file);
        let lines = match l.finish(lines) {
            Ok(lines) => lines,
            Err(missing) => {
                let why = format!("no results for {}", some(&missing));
                out.left.push((path.display().to_string(), why));
                continue;
            }
        };
        let axes = plot::Axes {
            title: spec.title,
            x_desc: spec.x_desc,
            y_desc: spec.y_desc,
            x_base: spec.x_base,
        };
        let svg = plot::svg(axes, &lines)?;
        fs::create_dir_all(plots_dir).map_err(|e| format!("{}: {e}", plots_dir.display()))?;
        fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
        out.plots.push(path);
    }
    let unused: Vec<String> = results
        .ids()
        .filter(|id| !used.contains(*id))
        .map(String::from)
        .collect();
    if !unused.is_empty() {
        eprintln!(
            "xtask: results in no table or plot ({}): {}",
            unused.len(),
            some(&unused)
        );
    }
    Ok(())
}

/// `cargo xtask bench --report`.
fn report(root: &Path, r: &Report) -> Result {
    let doc = r.doc.clone().unwrap_or_else(|| root.join(DOC));
    let text = fs::read_to_string(&doc).map_err(|e| format!("{}: {e}", doc.display()))?;
    // Every region this report fills must be there before the long run.
    let present: Vec<String> = regions::find(&text)
        .map_err(|e| format!("{}: {e}", doc.display()))?
        .into_iter()
        .map(|r| r.name)
        .collect();
    let mut wanted: Vec<&str> = Vec::new();
    if r.source != Source::Skip {
        wanted.extend(published::tables().iter().map(|t| t.region));
    }
    if r.source == Source::Run && r.args.is_empty() {
        wanted.push(EFFICIENCY);
    }
    if r.instructions {
        wanted.push(INSTRUCTIONS);
    }
    let absent: Vec<&str> = wanted
        .into_iter()
        .filter(|w| !present.iter().any(|p| p == w))
        .collect();
    if !absent.is_empty() {
        return Err(format!(
            "{}: no generated region for {} (a line `{}` … `{}` each)",
            doc.display(),
            absent.join(", "),
            regions::start_marker("NAME"),
            regions::END_MARKER
        ));
    }
    let commit = commit(root)?;
    let mut out = Outcome::default();
    let home = criterion::home(root);
    match r.source {
        Source::Run => {
            let start = SystemTime::now();
            let args = cargo_args(&r.args);
            cmd::run(&mut command(root, "cargo", &args))?;
            let results = Results::load(&home, Some(start))?;
            let shown = if r.args.is_empty() {
                &args[..args.len() - 1]
            } else {
                &args[..]
            };
            let provenance = format!(
                "At {commit}: `cargo {}` (run by `cargo xtask bench --report`).",
                shown.join(" ")
            );
            let plots = doc.parent().unwrap_or(Path::new(".")).join("plots");
            tabulate(&results, &provenance, &plots, &mut out)?;
            if r.args.is_empty() {
                // The efficiency table is not a timing: it belongs to the same
                // run only in a full one.
                let table = cmd::run_capture(&mut command(root, "cargo", EFFICIENCY_CMD))?;
                let text = format!(
                    "At {commit}: `cargo {}` (run by `cargo xtask bench --report`).\n\n{}",
                    EFFICIENCY_CMD[..6].join(" "),
                    table.trim_end()
                );
                out.regions.insert(EFFICIENCY.to_string(), text);
            }
        }
        Source::FromResults => {
            let results = Results::load(&home, None)?;
            if results.is_empty() {
                return Err(format!("no criterion results in {}", home.display()));
            }
            let provenance = format!(
                "At {commit}: the results found in `{}` (`cargo xtask bench --report --from-results`).",
                home.strip_prefix(root).unwrap_or(&home).display()
            );
            let plots = doc.parent().unwrap_or(Path::new(".")).join("plots");
            tabulate(&results, &provenance, &plots, &mut out)?;
        }
        Source::Skip => {}
    }
    if r.instructions {
        if cmd::which("valgrind").is_some() {
            let driver = criterion::target_dir(root).join("release/hot_path_driver");
            let table = callgrind::measure(root, &driver)?;
            let text = format!("At {commit}: {}\n\n{}", callgrind::method(), table.render());
            out.regions.insert(INSTRUCTIONS.to_string(), text);
        } else {
            out.left.push((
                INSTRUCTIONS.to_string(),
                "valgrind is not installed (`apt-get install valgrind`)".to_string(),
            ));
        }
    }
    let new_text = regions::replace(&text, &out.regions)?;
    if new_text != text {
        fs::write(&doc, &new_text).map_err(|e| format!("{}: {e}", doc.display()))?;
    }
    let names: Vec<&str> = out.regions.keys().map(String::as_str).collect();
    eprintln!(
        "xtask: {}: {} region(s) regenerated: {}",
        doc.display(),
        names.len(),
        names.join(", ")
    );
    for p in &out.plots {
        eprintln!("xtask: wrote {}", p.display());
    }
    for (what, why) in &out.left {
        eprintln!("xtask: left as it was: {what} ({why})");
    }
    if r.source == Source::Run && r.args.is_empty() && !out.left.is_empty() {
        return Err(format!(
            "a full run left {} region(s) or plot(s) as they were: see above",
            out.left.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn arguments_go_to_criterion() {
        assert_eq!(cargo_args(&[]), ["bench", "-p", "kmm-benches", "--"]);
        let want = ["bench", "-p", "kmm-benches", "--", "order0", "--quick"];
        assert_eq!(cargo_args(&s(&["order0", "--quick"])), want);
        assert_eq!(cargo_args(&s(&["--", "order0", "--quick"])), want);
    }

    #[test]
    fn without_report_everything_is_criterion_s() {
        for args in [&[][..], &["order0", "--quick"], &["--", "--doc", "x"]] {
            assert_eq!(parse(&s(args)).unwrap(), Task::Run(s(args)));
        }
    }

    /// The report `args` ask for.
    fn report_of(args: &[&str]) -> Report {
        match parse(&s(args)).unwrap() {
            Task::Report(r) => r,
            t => panic!("{args:?}: {t:?}"),
        }
    }

    #[test]
    fn report_options() {
        let r = report_of(&["--report"]);
        assert_eq!(
            r,
            Report {
                doc: None,
                source: Source::Run,
                instructions: true,
                args: vec![],
            }
        );
        let r = report_of(&[
            "--report",
            "--doc",
            "/tmp/b.md",
            "--no-instructions",
            "--",
            "--quick",
            "kmalloc_size",
        ]);
        assert_eq!(r.doc, Some(PathBuf::from("/tmp/b.md")));
        assert!(!r.instructions);
        assert_eq!(r.args, ["--quick", "kmalloc_size"]);
        let r = report_of(&["--report", "--instructions-only"]);
        assert_eq!((r.source, r.instructions), (Source::Skip, true));
        let r = report_of(&["--from-results", "--report"]);
        assert_eq!(r.source, Source::FromResults);

        for bad in [
            &["--report", "--quick"][..],
            &["--report", "--doc"],
            &["--report", "--from-results", "--", "order0"],
            &["--report", "--instructions-only", "--no-instructions"],
        ] {
            assert!(parse(&s(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_region_says_where_its_numbers_come_from() {
        let mut table = markdown::Table::new(["a"]);
        table.row(["1"]);
        let g = Generated {
            note: "Fastest peer: talc.".into(),
            table,
        };
        assert_eq!(
            region_text("At `abc1234`: `cargo bench -p kmm-benches`.", &g),
            "At `abc1234`: `cargo bench -p kmm-benches`. Fastest peer: talc.\n\n| a |\n| --- |\n| 1 |\n"
        );
        let ids = s(&["a", "b", "c", "d", "e"]);
        assert_eq!(some(&ids), "a, b, c and 2 more");
        assert_eq!(some(&ids[..2]), "a, b");
    }
}
