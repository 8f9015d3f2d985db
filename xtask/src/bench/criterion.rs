//! Criterion's results as the report reads them: for every benchmark,
//! `<criterion home>/<group>/<bench>[/<value>]/new/benchmark.json` (its id
//! and throughput) and `new/estimates.json` beside it (the statistics of the
//! latest run, in nanoseconds per iteration). The id is criterion's
//! `full_id` (`group/function/value`), so the directory names, which
//! criterion may shorten or change, do not matter.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

use crate::cmd::Result;

/// A median and its 95 % confidence interval, in nanoseconds per iteration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// The median's point estimate.
    pub median: f64,
    /// The interval's lower bound.
    pub lower: f64,
    /// The interval's upper bound.
    pub upper: f64,
}

/// One benchmark's latest result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bench {
    /// Time per iteration.
    pub estimate: Estimate,
    /// Elements per iteration, where the bench declares a throughput in
    /// elements (`Throughput::Elements`).
    pub elements: Option<u64>,
}

impl Bench {
    /// Time per element (per iteration if the bench counts none).
    pub fn per_element(&self) -> f64 {
        self.estimate.median / self.elements.unwrap_or(1).max(1) as f64
    }
}

/// The median of an `estimates.json`.
pub fn parse_estimates(json: &str) -> Result<Estimate> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let median = &v["median"];
    let ci = &median["confidence_interval"];
    let num = |x: &Value, what: &str| {
        x.as_f64()
            .filter(|n| n.is_finite())
            .ok_or_else(|| format!("no number at median.{what}"))
    };
    Ok(Estimate {
        median: num(&median["point_estimate"], "point_estimate")?,
        lower: num(&ci["lower_bound"], "confidence_interval.lower_bound")?,
        upper: num(&ci["upper_bound"], "confidence_interval.upper_bound")?,
    })
}

/// The id (`full_id`) and the elements per iteration of a `benchmark.json`.
pub fn parse_benchmark(json: &str) -> Result<(String, Option<u64>)> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let id = v["full_id"].as_str().ok_or("no full_id")?.to_string();
    let elements = v["throughput"]["Elements"].as_u64();
    Ok((id, elements))
}

/// Where criterion keeps its results for the workspace at `root`:
/// `$CRITERION_HOME`, else `criterion` in the target directory.
pub fn home(root: &Path) -> PathBuf {
    if let Some(h) = std::env::var_os("CRITERION_HOME") {
        return root.join(h);
    }
    target_dir(root).join("criterion")
}

/// The workspace's target directory: `$CARGO_TARGET_DIR`, else `target`.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => root.join(t),
        None => root.join("target"),
    }
}

/// Every benchmark's latest result, by id.
#[derive(Debug, Default)]
pub struct Results {
    benches: BTreeMap<String, Bench>,
}

impl Results {
    /// The results under `home` (see [`home`]); with `since`, only those
    /// written at or after it (the benches of this run, not leftovers of an
    /// earlier one). A missing `home` is no results.
    pub fn load(home: &Path, since: Option<SystemTime>) -> Result<Results> {
        let mut found = BTreeMap::<String, (SystemTime, Bench)>::new();
        let mut dirs = vec![home.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                // A result is `new/` with both files; any other folder
                // (a bench may be called `new` too) is searched.
                let estimates = path.join("estimates.json");
                let read = || {
                    let bench = fs::read_to_string(path.join("benchmark.json")).ok()?;
                    Some((bench, fs::read_to_string(&estimates).ok()?))
                };
                let Some((bench, est)) = read().filter(|_| e.file_name() == "new") else {
                    dirs.push(path);
                    continue;
                };
                let written = fs::metadata(&estimates)
                    .and_then(|m| m.modified())
                    .map_err(|e| format!("{}: {e}", estimates.display()))?;
                if since.is_some_and(|s| written < s) {
                    continue;
                }
                let at = |e: String| format!("{}: {e}", path.display());
                let (id, elements) = parse_benchmark(&bench).map_err(at)?;
                let estimate = parse_estimates(&est).map_err(at)?;
                let b = Bench { estimate, elements };
                if found.get(&id).is_none_or(|(t, _)| *t < written) {
                    found.insert(id, (written, b));
                }
            }
        }
        let benches = found.into_iter().map(|(id, (_, b))| (id, b)).collect();
        Ok(Results { benches })
    }

    /// Results from a list (for tests).
    #[cfg(test)]
    pub fn from_list(list: impl IntoIterator<Item = (String, Bench)>) -> Results {
        Results {
            benches: list.into_iter().collect(),
        }
    }

    /// The result of bench `id`.
    pub fn get(&self, id: &str) -> Option<&Bench> {
        self.benches.get(id)
    }

    /// The ids of every result.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.benches.keys().map(String::as_str)
    }

    /// No results at all.
    pub fn is_empty(&self) -> bool {
        self.benches.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An `estimates.json` as criterion 0.8 writes it (trimmed to two
    /// statistics).
    const ESTIMATES: &str = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":16.7,"upper_bound":18.6},"point_estimate":17.6,"standard_error":0.48},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":16.826116883869098,"upper_bound":18.003519635099913},"point_estimate":17.543549323473353,"standard_error":0.2576354471419227}}"#;

    fn benchmark_json(group: &str, function: &str, value: Option<&str>, elements: u64) -> String {
        let full = match value {
            Some(v) => format!("{group}/{function}/{v}"),
            None => format!("{group}/{function}"),
        };
        let value = value.map_or("null".into(), |v| format!("\"{v}\""));
        format!(
            r#"{{"group_id":"{group}","function_id":"{function}","value_str":{value},"throughput":{{"Elements":{elements}}},"full_id":"{full}","directory_name":"{full}","title":"{full}"}}"#
        )
    }

    #[test]
    fn estimates_give_the_median_and_its_interval() {
        let e = parse_estimates(ESTIMATES).unwrap();
        assert_eq!(
            e,
            Estimate {
                median: 17.543549323473353,
                lower: 16.826116883869098,
                upper: 18.003519635099913
            }
        );
        assert!(parse_estimates(r#"{"mean":{}}"#).is_err());
        assert!(parse_estimates("not json").is_err());
    }

    #[test]
    fn benchmark_json_gives_the_id_and_the_elements() {
        let json = benchmark_json("smp_slab_64B", "kmm", Some("2"), 2);
        assert_eq!(
            parse_benchmark(&json).unwrap(),
            ("smp_slab_64B/kmm/2".to_string(), Some(2))
        );
        let none = r#"{"group_id":"this_cpu","function_id":"add","value_str":null,"throughput":null,"full_id":"this_cpu/add","directory_name":"this_cpu/add","title":"this_cpu/add"}"#;
        assert_eq!(
            parse_benchmark(none).unwrap(),
            ("this_cpu/add".to_string(), None)
        );
        assert!(parse_benchmark("{}").is_err());
    }

    /// Writes a result as criterion lays it out, `new` and `base`.
    fn write(home: &Path, dir: &str, json: &str, modified: SystemTime) {
        for sub in ["new", "base"] {
            let d = home.join(dir).join(sub);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("benchmark.json"), json).unwrap();
            let f = fs::File::create(d.join("estimates.json")).unwrap();
            std::io::Write::write_all(&mut &f, ESTIMATES.as_bytes()).unwrap();
            f.set_modified(modified).unwrap();
        }
    }

    #[test]
    fn results_load_by_id_and_age() {
        let home = std::env::temp_dir().join(format!("xtask-criterion-{}", std::process::id()));
        let _ = fs::remove_dir_all(&home);
        let now = SystemTime::now();
        let old = now - Duration::from_secs(3600);
        write(&home, "g/a", &benchmark_json("g", "a", None, 1), now);
        write(
            &home,
            "g/b/16",
            &benchmark_json("g", "b", Some("16"), 4),
            now,
        );
        write(&home, "h/c", &benchmark_json("h", "c", None, 1), old);
        // A bench called `new`: its results are in `new/new`.
        write(&home, "g/new", &benchmark_json("g", "new", None, 1), now);
        fs::create_dir_all(home.join("report")).unwrap();

        let all = Results::load(&home, None).unwrap();
        assert_eq!(
            all.ids().collect::<Vec<_>>(),
            ["g/a", "g/b/16", "g/new", "h/c"]
        );
        let b = all.get("g/b/16").unwrap();
        assert_eq!(b.elements, Some(4));
        assert_eq!(b.per_element(), b.estimate.median / 4.0);

        let fresh = Results::load(&home, Some(now - Duration::from_secs(60))).unwrap();
        assert_eq!(fresh.ids().collect::<Vec<_>>(), ["g/a", "g/b/16", "g/new"]);
        assert!(
            Results::load(&home.join("absent"), None)
                .unwrap()
                .is_empty()
        );
        fs::remove_dir_all(&home).unwrap();
    }
}
