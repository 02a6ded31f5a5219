//! `--equity-png`: the equity curve as a PNG, drawn with `plotters` on its bitmap backend
//! with the `ab_glyph` text renderer and a font embedded in the binary (DESIGN: charts
//! must render on a slim image without fontconfig or freetype).

use std::path::Path;
use std::sync::OnceLock;

use chrono::{DateTime, Duration, Utc};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::domain::indicator_table::to_f64;
use crate::domain::money::Krw;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Registers the embedded font as plotters' `sans-serif`, once per process; false when it
/// does not load. Every chart of the crate (this one, the daily report) calls it first.
pub(crate) fn register_embedded_font() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| register_font("sans-serif", FontStyle::Normal, FONT).is_ok())
}

#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {reason}")]
pub struct ChartError {
    pub path: String,
    pub reason: String,
}

/// Draws `equity` (candle open time, equity) into a 1200×500 PNG at `path`.
pub fn equity_png(path: &Path, equity: &[(DateTime<Utc>, Krw)]) -> Result<(), ChartError> {
    let fail = |reason: String| ChartError {
        path: path.display().to_string(),
        reason,
    };
    if !register_embedded_font() {
        return Err(fail("the embedded font does not load".into()));
    }
    let (Some(first), Some(last)) = (equity.first(), equity.last()) else {
        return Err(fail("no equity points".into()));
    };
    let t0 = first.0;
    // x in hours since the first candle: plain f64 keeps plotters' datetime feature out.
    let hours = |t: DateTime<Utc>| (t - t0).num_seconds() as f64 / 3600.0;
    let values: Vec<(f64, f64)> = equity
        .iter()
        .map(|(t, e)| (hours(*t), to_f64(e.value())))
        .collect();
    let (lo, hi) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &(_, v)| (l.min(v), h.max(v)));
    let pad = ((hi - lo) * 0.05).max(1.0);
    let x_max = hours(last.0).max(1.0);
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Equity (KRW), marked at every candle close",
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(90)
            .build_cartesian_2d(0f64..x_max, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_labels(8)
            .x_label_formatter(&|x| {
                (t0 + Duration::seconds((*x * 3600.0) as i64))
                    .format("%m-%d %H:%M")
                    .to_string()
            })
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(("sans-serif", 13))
            .draw()?;
        chart.draw_series(LineSeries::new(values.iter().copied(), &BLUE))?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| fail(e.to_string()))
}
