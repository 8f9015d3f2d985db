//! Markdown tables and the number formats of docs/benchmarks.md: three
//! significant figures, times in the unit that keeps them below 1000,
//! intervals in the median's unit and precision.

use super::criterion::Estimate;

/// A Markdown table: a header row and rows of cells, rendered with
/// `| a | b |` lines.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells are left empty, extra ones dropped.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// The Markdown text, one line per row, ending in a newline.
    pub fn render(&self) -> String {
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut s = line(&self.header);
        s.push_str(&line(&vec!["---".to_string(); self.header.len()]));
        for r in &self.rows {
            s.push_str(&line(r));
        }
        s
    }
}

/// Decimals that give `x` `digits` significant figures.
fn decimals(x: f64, digits: i32) -> usize {
    if x == 0.0 || !x.is_finite() {
        return (digits - 1).max(0) as usize;
    }
    (digits - 1 - x.abs().log10().floor() as i32).max(0) as usize
}

/// `x` with `digits` significant figures (no exponent) and the decimals
/// used.
fn significant(x: f64, digits: i32) -> (String, usize) {
    let mut d = decimals(x, digits);
    let s = format!("{x:.d$}");
    // Rounding may add a digit (9.996 -> "10.00"): one decimal fewer.
    let rounded: f64 = s.parse().unwrap_or(x);
    if decimals(rounded, digits) < d {
        d = decimals(rounded, digits);
        return (format!("{x:.d$}"), d);
    }
    (s, d)
}

/// The unit a time of `ns` nanoseconds is shown in, and its size in ns.
fn unit(ns: f64) -> (&'static str, f64) {
    // Below 999.5 a value keeps three figures under 1000 once rounded.
    match ns.abs() {
        t if t < 999.5 => ("ns", 1.0),
        t if t < 999.5e3 => ("µs", 1e3),
        t if t < 999.5e6 => ("ms", 1e6),
        _ => ("s", 1e9),
    }
}

/// A time: `7.04 ns`, `52.8 µs`, `1.81 ms`.
pub fn time(ns: f64) -> String {
    let (u, scale) = unit(ns);
    format!("{} {u}", significant(ns / scale, 3).0)
}

/// A median and its interval in the median's unit and precision:
/// `52.8 µs (52.5 – 52.8)`.
pub fn time_ci(e: &Estimate) -> String {
    let (u, scale) = unit(e.median);
    let (m, d) = significant(e.median / scale, 3);
    let (lo, hi) = (e.lower / scale, e.upper / scale);
    format!("{m} {u} ({lo:.d$} – {hi:.d$})")
}

/// A number and its interval in the number's precision:
/// `54.4 (54.1 – 54.6)`.
pub fn number_ci(x: f64, lower: f64, upper: f64) -> String {
    let (m, d) = significant(x, 3);
    format!("{m} ({lower:.d$} – {upper:.d$})")
}

/// A ratio: three significant figures from 1 up (`1.85×`, `131×`), two
/// below (`0.56×`, `0.026×`).
pub fn ratio(x: f64) -> String {
    let digits = if x >= 0.995 { 3 } else { 2 };
    format!("{}×", significant(x, digits).0)
}

/// A plain number with three significant figures (`54.4`, `0.31`).
pub fn number(x: f64) -> String {
    significant(x, 3).0
}

/// A count with its thousands apart: `2 302`, `1 000 000`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut s = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push(' ');
        }
        s.push(c);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keep_three_figures_in_the_right_unit() {
        assert_eq!(time(7.0412), "7.04 ns");
        assert_eq!(time(183.4), "183 ns");
        assert_eq!(time(0.8512), "0.851 ns");
        assert_eq!(time(52_812.0), "52.8 µs");
        assert_eq!(time(1_812_345.0), "1.81 ms");
        assert_eq!(time(2.5e9), "2.50 s");
        // Rounding up to 1000 moves to the next unit.
        assert_eq!(time(999.7), "1.00 µs");
        assert_eq!(time(9.996), "10.0 ns");
    }

    #[test]
    fn an_interval_takes_the_median_s_unit_and_precision() {
        let e = Estimate {
            median: 52_812.0,
            lower: 52_512.3,
            upper: 52_834.9,
        };
        assert_eq!(time_ci(&e), "52.8 µs (52.5 – 52.8)");
        let e = Estimate {
            median: 88.4,
            lower: 41.6,
            upper: 108.2,
        };
        assert_eq!(time_ci(&e), "88.4 ns (41.6 – 108.2)");
    }

    #[test]
    fn ratios_and_counts() {
        assert_eq!(ratio(0.5632), "0.56×");
        assert_eq!(ratio(0.02612), "0.026×");
        assert_eq!(ratio(0.00781), "0.0078×");
        assert_eq!(ratio(1.0), "1.00×");
        assert_eq!(ratio(0.999), "0.999×");
        assert_eq!(ratio(0.9999), "1.00×");
        assert_eq!(ratio(14.62), "14.6×");
        assert_eq!(ratio(131.2), "131×");
        assert_eq!(number(54.43), "54.4");
        assert_eq!(number_ci(54.43, 54.12, 54.61), "54.4 (54.1 – 54.6)");
        assert_eq!(count(0), "0");
        assert_eq!(count(2302), "2 302");
        assert_eq!(count(1_000_000), "1 000 000");
    }

    #[test]
    fn a_table_renders_as_markdown() {
        let mut t = Table::new(["allocator", "median", "vs x"]);
        t.row(["kmm", "7.04 ns", "**0.56×**"]);
        t.row(["a|b"]);
        assert_eq!(
            t.render(),
            "| allocator | median | vs x |\n\
             | --- | --- | --- |\n\
             | kmm | 7.04 ns | **0.56×** |\n\
             | a\\|b |  |  |\n"
        );
    }
}
