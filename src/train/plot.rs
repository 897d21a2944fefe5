//! PNG plots of runs and experiments (plotters' bitmap backend, text from an embedded 14 KB
//! subset of DejaVu Sans — printable ASCII plus ± · θ σ ρ η – — − — so no system font is needed).
//! DejaVu fonts are free (Bitstream Vera licence; see the Debian `fonts-dejavu-core` copyright).

use crate::error::{Error, Result};
use crate::io::hf::write_atomic;
use plotters::prelude::*;
use std::path::Path;

static FONT: &[u8] = include_bytes!("DejaVuSans-subset.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is ours and valid; a failure would only lose the text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One line of a panel: `(x, y)` points, and optionally a ± band per point.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Half-width of an error bar at each point (same length as `points`), if any.
    pub err: Option<Vec<f64>>,
}

/// A chart: title, axis labels, series; `categories` names the x positions 0, 1, … instead
/// of numbers (for per-set accuracy).
#[derive(Clone, Debug, Default)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub categories: Vec<String>,
    /// The y axis's range (before the small margin), when panels should share one; else fitted
    /// to the data.
    pub y_range: Option<(f64, f64)>,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Model { file: path.display().to_string(), message: format!("cannot draw the plot: {e}") }
}

/// Panels per row of a figure: more go on further rows.
const PANELS_PER_ROW: usize = 3;

/// Draw the panels side by side (up to three per row, then further rows) and write the PNG
/// atomically, compressed hard: plots are committed with experiment results.
pub fn write_png(path: &Path, title: &str, panels: &[Panel]) -> Result<()> {
    register_font();
    let (pw, ph) = (560u32, 420u32);
    let n = panels.len().max(1);
    let (cols, rows) = (n.min(PANELS_PER_ROW), n.div_ceil(PANELS_PER_ROW));
    let (w, h) = (pw * cols as u32, ph * rows as u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(|e| plot_err(path, e))?;
        let areas = root.split_evenly((rows, cols));
        for (panel, area) in panels.iter().zip(areas) {
            draw_panel(&area, panel).map_err(|e| plot_err(path, e))?;
        }
        root.present().map_err(|e| plot_err(path, e))?;
    }
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Best, FilterType::Adaptive)
        .write_image(&buf, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| plot_err(path, e))?;
    write_atomic(path, &png)
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw_panel(area: &Area<'_>, p: &Panel) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let pts = p.series.iter().flat_map(|s| {
        s.points.iter().enumerate().map(move |(i, &(x, y))| {
            let e = s.err.as_ref().map(|e| e[i]).unwrap_or(0.0);
            (x, y - e, y + e)
        })
    });
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, lo, hi) in pts.filter(|(x, lo, hi)| x.is_finite() && lo.is_finite() && hi.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(lo);
        y1 = y1.max(hi);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if let Some((lo, hi)) = p.y_range.filter(|(lo, hi)| lo.is_finite() && hi.is_finite() && lo < hi) {
        (y0, y1) = (lo, hi);
    }
    let cat = !p.categories.is_empty();
    if cat {
        (x0, x1) = (-0.5, p.categories.len() as f64 - 0.5);
    } else if x1 - x0 < 1e-9 {
        // One x (a single evaluation, at the last step): centred, not on the left edge.
        let half = (x0.abs() * 0.1).max(1.0);
        (x0, x1) = (x0 - half, x0 + half);
    }
    // One y value (every point equal): a visible band around it rather than a 0.002-wide one.
    let pad = if y1 - y0 < 1e-9 { (y0.abs() * 0.05).max(0.05) } else { ((y1 - y0) * 0.08).max(1e-3) };
    // Categorical panels (accuracy per set) get headroom for the legend, which would otherwise
    // cover the highest points (a row per series in the upper right corner).
    let room = if cat { (y1 - y0 + 2.0 * pad) * 0.12 * p.series.len().min(8) as f64 } else { 0.0 };
    let (y0, y1) = (y0 - pad, y1 + pad + room);
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let cats = p.categories.clone();
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(p.x_label.as_str()).y_desc(p.y_label.as_str()).label_style(("sans-serif", 12));
    let fmt = move |x: &f64| -> String {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < cats.len() {
            cats[i as usize].clone()
        } else if cats.is_empty() {
            short_number(*x)
        } else {
            String::new()
        }
    };
    if cat {
        mesh.x_labels(p.categories.len() * 2 + 1);
    }
    let yfmt = |y: &f64| short_number(*y);
    mesh.x_label_formatter(&fmt).y_label_formatter(&yfmt).draw()?;
    let n = p.series.len().max(1) as f64;
    // The k-th series has the k-th colour in every panel; an empty one is skipped (no legend).
    for (k, s) in p.series.iter().enumerate().filter(|(_, s)| !s.points.is_empty()) {
        let color = COLORS[k % COLORS.len()];
        // Categorical panels: each series is offset a little so error bars do not overlap.
        let dx = if cat { (k as f64 - (n - 1.0) / 2.0) * 0.6 / n } else { 0.0 };
        let points: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (x + dx, y)).collect();
        // Few points (short runs, categories) are drawn as dots as well, so a single one shows.
        if cat || points.len() <= 20 {
            chart.draw_series(points.iter().map(|&(x, y)| Circle::new((x, y), 3, color.filled())))?;
        }
        let anno =
            chart.draw_series(LineSeries::new(if cat { vec![] } else { points.clone() }, color.stroke_width(2)))?;
        anno.label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3)));
        if let Some(err) = &s.err {
            chart.draw_series(
                points
                    .iter()
                    .zip(err)
                    .map(|(&(x, y), &e)| PathElement::new(vec![(x, y - e), (x, y + e)], color.stroke_width(2))),
            )?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

/// An axis number without float noise: integers as such, others with up to 4 significant digits.
fn short_number(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 && x.abs() < 1e9 {
        return format!("{}", x.round() as i64);
    }
    let s = format!("{:.4}", x);
    let t = s.trim_end_matches('0').trim_end_matches('.');
    if t == "0" || t == "-0" {
        format!("{x:.1e}")
    } else {
        t.to_string()
    }
}
