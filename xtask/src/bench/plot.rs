//! The SVG plots of docs/plots/: medians against a parameter, one line per
//! implementation, both axes logarithmic, drawn with plotters' SVG backend
//! (text is left to the browser's fonts).

use plotters::prelude::*;

use crate::cmd::Result;

/// One line of a plot: its legend label and its points (x, y).
#[derive(Clone, Debug)]
pub struct Line {
    /// The legend's label; a label starting with "kmm" is drawn wider.
    pub label: String,
    /// The points, in order of x.
    pub points: Vec<(f64, f64)>,
}

/// What a plot shows besides its lines.
#[derive(Clone, Copy, Debug)]
pub struct Axes<'a> {
    /// The caption.
    pub title: &'a str,
    /// The x axis' description.
    pub x_desc: &'a str,
    /// The y axis' description.
    pub y_desc: &'a str,
    /// The base of the x axis' logarithm (where its ticks fall).
    pub x_base: f64,
}

/// The size of every plot, in pixels.
const SIZE: (u32, u32) = (900, 500);
/// The width of the legend, right of the chart.
const LEGEND: u32 = 210;

/// Line colours (Tableau 10, red first: the first line is kmm's).
const COLOURS: [RGBColor; 8] = [
    RGBColor(225, 87, 89),
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(89, 161, 79),
    RGBColor(176, 122, 161),
    RGBColor(156, 117, 95),
    RGBColor(118, 183, 178),
    RGBColor(237, 201, 72),
];

/// The colour and the stroke width of line `i`, labelled `label`.
fn style(i: usize, label: &str) -> ShapeStyle {
    let width = if label.starts_with("kmm") { 3 } else { 2 };
    COLOURS[i % COLOURS.len()].stroke_width(width)
}

/// A tick label: whole numbers without decimals, others with three
/// significant figures.
fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        super::markdown::number(v)
    }
}

/// The smallest and largest of `values`, which must all be positive.
fn span(values: impl Iterator<Item = f64>) -> Result<(f64, f64)> {
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
        return Err("a plot needs positive, finite values".into());
    }
    Ok((lo, hi))
}

/// The SVG text of a plot of `lines`.
pub fn svg(axes: Axes<'_>, lines: &[Line]) -> Result<String> {
    let points = || lines.iter().flat_map(|l| l.points.iter().copied());
    let (x0, x1) = span(points().map(|p| p.0))?;
    let (y0, y1) = span(points().map(|p| p.1))?;
    let err = |e: &dyn std::fmt::Display| format!("drawing {:?}: {e}", axes.title);
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let root = root
            .titled(axes.title, ("sans-serif", 22))
            .map_err(|e| err(&e))?;
        let (plot, legend) = root.split_horizontally(SIZE.0 - LEGEND);
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (x0 / 1.2..x1 * 1.2).log_scale().base(axes.x_base),
                (y0 / 1.3..y1 * 1.3).log_scale(),
            )
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(238, 238, 238))
            .x_desc(axes.x_desc)
            .y_desc(axes.y_desc)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, line) in lines.iter().enumerate() {
            let style = style(i, &line.label);
            chart
                .draw_series(LineSeries::new(line.points.iter().copied(), style))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(
                    line.points
                        .iter()
                        .map(|&p| Circle::new(p, 3, style.filled())),
                )
                .map_err(|e| err(&e))?;
        }
        // The legend beside the chart, never over a line.
        for (i, line) in lines.iter().enumerate() {
            let style = style(i, &line.label);
            let y = 40 + 24 * i as i32;
            legend
                .draw(&PathElement::new(vec![(8, y), (32, y)], style))
                .map_err(|e| err(&e))?;
            legend
                .draw(&Text::new(
                    line.label.as_str(),
                    (40, y - 7),
                    ("sans-serif", 14),
                ))
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axes() -> Axes<'static> {
        Axes {
            title: "a plot title",
            x_desc: "bytes",
            y_desc: "ns",
            x_base: 2.0,
        }
    }

    #[test]
    fn a_plot_is_an_svg_with_its_labels() {
        let lines = [
            Line {
                label: "kmm (kmalloc)".into(),
                points: vec![(8.0, 5.0), (64.0, 5.5), (4096.0, 9.0)],
            },
            Line {
                label: "talc".into(),
                points: vec![(8.0, 6.0), (64.0, 6.2), (4096.0, 30.0)],
            },
        ];
        let s = svg(axes(), &lines).unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..40]);
        assert!(s.trim_end().ends_with("</svg>"));
        for text in ["kmm (kmalloc)", "talc", "bytes", "4096", "a plot title"] {
            assert!(s.contains(text), "no {text:?}");
        }
        // The same data draws the same file.
        assert_eq!(s, svg(axes(), &lines).unwrap());
    }

    #[test]
    fn ticks_drop_needless_decimals() {
        assert_eq!(tick(20.0), "20");
        assert_eq!(tick(4096.0), "4096");
        assert_eq!(tick(2.5), "2.50");
    }

    #[test]
    fn no_positive_data_is_an_error() {
        assert!(svg(axes(), &[]).is_err());
        let zero = Line {
            label: "x".into(),
            points: vec![(1.0, 0.0)],
        };
        assert!(svg(axes(), &[zero]).is_err());
    }
}
