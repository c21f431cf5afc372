//! The comparison as a PNG bar chart (plotters): single-stream and 4-stream
//! throughput of every path, in the order measured.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::overlay::Row;

/// Where Debian's `fonts-dejavu-core` puts the font the chart's text uses.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Draws `rows` into a PNG at `path`.
pub fn draw(rows: &[Row], path: &Path) -> Result<()> {
    let font = std::fs::read(FONT)
        .with_context(|| format!("cannot read {FONT} (apt-get install fonts-dejavu-core)"))?;
    // The font must live as long as plotters' registry: for the process.
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("{FONT} is not a usable font"))?;
    let height = 90 + 56 * rows.len() as u32;
    let root = BitMapBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = rows
        .iter()
        .map(|r| r.gbps_1.max(r.gbps_4))
        .fold(1.0, f64::max)
        * 1.12;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "TCP throughput, two nodes, one run (Gbit/s)",
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(270)
        .build_cartesian_2d(0.0..max, (0..rows.len()).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_label_style(("sans-serif", 16))
        .x_label_style(("sans-serif", 14))
        .y_label_formatter(&|v| match v {
            // Segment 0 is at the bottom: the first row measured is drawn on top.
            SegmentValue::CenterOf(i) if *i < rows.len() => rows[rows.len() - 1 - *i].path.clone(),
            _ => String::new(),
        })
        .x_desc("Gbit/s")
        .draw()?;
    let one = RGBColor(31, 119, 180);
    let four = RGBColor(255, 127, 14);
    chart
        .draw_series(rows.iter().rev().enumerate().map(|(i, r)| {
            Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (r.gbps_1, SegmentValue::CenterOf(i)),
                ],
                one.filled(),
            )
        }))?
        .label("1 stream")
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], one.filled()));
    chart
        .draw_series(rows.iter().rev().enumerate().map(|(i, r)| {
            Rectangle::new(
                [
                    (0.0, SegmentValue::CenterOf(i)),
                    (r.gbps_4, SegmentValue::Exact(i + 1)),
                ],
                four.filled(),
            )
        }))?
        .label("4 streams")
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], four.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, gbps_1: f64, gbps_4: f64) -> Row {
        Row {
            path: path.into(),
            gbps_1,
            gbps_4,
            rtt_p50_us: 1.0,
            rtt_p99_us: 2.0,
            cpu_s_per_gb: 1.0,
        }
    }

    #[test]
    fn draws_a_png_with_every_path() {
        let rows = [
            row("kernel VXLAN", 15.0, 18.3),
            row("shoal encrypted (AES-256-GCM)", 4.5, 4.8),
            row("nebula 1.6.1", 0.46, 0.53),
        ];
        let path = std::env::temp_dir().join(format!("shoal-chart-{}.png", std::process::id()));
        draw(&rows, &path).unwrap();
        let png = std::fs::read(&path).unwrap();
        let _ = std::fs::copy(&path, std::env::temp_dir().join("shoal-chart-last.png"));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // 1100 pixels wide, as drawn (IHDR width, big-endian at byte 16).
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 1100);
    }
}
