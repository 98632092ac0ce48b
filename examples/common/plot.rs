//! Loss curves as an SVG line chart (plotters' pure-Rust SVG backend), shared by the
//! examples.
#![allow(dead_code)] // shared by several examples; each uses part of it

use plotters::prelude::*;

/// Draws `curves` (name, value per step) on a log-scale y axis spanning `y_range`
/// (values outside are clamped) to an SVG at `path`.
pub fn loss_curves(
    path: &std::path::Path,
    caption: &str,
    y_desc: &str,
    y_range: (f64, f64),
    curves: &[(String, Vec<f64>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let steps = curves.iter().map(|(_, c)| c.len()).max().unwrap_or(1);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0..steps, (y_range.0..y_range.1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(y_desc)
        .draw()?;
    for (k, (name, curve)) in curves.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let points = curve
            .iter()
            .enumerate()
            .map(|(i, &v)| (i, v.clamp(y_range.0, y_range.1)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}
