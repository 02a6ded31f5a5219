//! Rendering of a [`DailyReport`]: a PNG (price with entry/exit markers above, the equity
//! curve below, drawn with plotters into memory and encoded with `image`) and the same
//! report as markdown (CLI, e-mail body, file sink). Pure: no I/O, no clock.

use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};
use image::ImageEncoder as _;
use plotters::prelude::*;

use super::embeds::{krw, report_summary};
use super::{DailyReport, PricePoint};
use crate::backtest::chart::register_embedded_font;
use crate::domain::indicator_table::to_f64;

pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 800;
/// The price panel's share of the height; the equity curve gets the rest.
const PRICE_PANEL: u32 = 480;

#[derive(Debug, thiserror::Error)]
#[error("cannot render the daily report chart: {0}")]
pub struct ReportError(pub String);

/// The chart as PNG bytes, [`WIDTH`]×[`HEIGHT`]. A day without points still renders (empty
/// panels saying so), so a quiet day gets its report too.
pub fn render_png(r: &DailyReport) -> Result<Vec<u8>, ReportError> {
    if !register_embedded_font() {
        return Err(ReportError("the embedded font does not load".into()));
    }
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    draw(r, &mut rgb).map_err(ReportError)?;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, WIDTH, HEIGHT, image::ColorType::Rgb8)
        .map_err(|e| ReportError(format!("PNG encoding: {e}")))?;
    Ok(png)
}

/// x axis: hours since the earliest point of either series.
struct Axis {
    t0: DateTime<Utc>,
    x_max: f64,
}

impl Axis {
    fn of(r: &DailyReport) -> Axis {
        let times = r.prices.iter().chain(&r.equity).map(|p| p.t);
        let t0 = times.clone().min();
        let t1 = times.max();
        match (t0, t1) {
            (Some(t0), Some(t1)) => Axis {
                t0,
                x_max: hours(t0, t1).max(1.0),
            },
            // A whole day of nothing: 24 empty hours from the report's own day.
            _ => Axis {
                t0: r
                    .day
                    .and_hms_opt(0, 0, 0)
                    .map_or(DateTime::UNIX_EPOCH, |d| d.and_utc()),
                x_max: 24.0,
            },
        }
    }
    fn x(&self, t: DateTime<Utc>) -> f64 {
        hours(self.t0, t)
    }
    fn label(&self, x: f64) -> String {
        (self.t0 + Duration::seconds((x * 3600.0) as i64))
            .format("%H:%M")
            .to_string()
    }
}

fn hours(t0: DateTime<Utc>, t: DateTime<Utc>) -> f64 {
    (t - t0).num_seconds() as f64 / 3600.0
}

/// Low and high of `values` padded 5 % (at least 1), or 0..1 when there are none.
fn y_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.05).max(1.0);
    (lo - pad)..(hi + pad)
}

fn series(axis: &Axis, points: &[PricePoint]) -> Vec<(f64, f64)> {
    points.iter().map(|p| (axis.x(p.t), to_f64(p.v))).collect()
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(r: &DailyReport, rgb: &mut [u8]) -> Result<(), String> {
    let axis = Axis::of(r);
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    let drawn = (|| -> DrawResult {
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(PRICE_PANEL);
        price_panel(r, &axis, &top)?;
        equity_panel(r, &axis, &bottom)?;
        root.present()?;
        Ok(())
    })();
    drawn.map_err(|e| e.to_string())
}

type Area<'b> = DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>;
type Panel<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A captioned panel with the shared time axis and a mesh, ready for series.
fn panel<'a, 'b>(
    area: &'a Area<'b>,
    caption: String,
    caption_size: u32,
    axis: &Axis,
    ys: std::ops::Range<f64>,
) -> Result<Panel<'a, 'b>, Box<dyn std::error::Error + 'a>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", caption_size))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(100)
        .build_cartesian_2d(0f64..axis.x_max, ys)?;
    chart
        .configure_mesh()
        .x_labels(12)
        .x_label_formatter(&|x| axis.label(*x))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 13))
        .draw()?;
    Ok(chart)
}

fn price_panel(r: &DailyReport, axis: &Axis, area: &Area<'_>) -> DrawResult {
    let prices = series(axis, &r.prices);
    let marker_prices = r.markers.iter().map(|m| to_f64(m.price));
    let ys = y_range(prices.iter().map(|p| p.1).chain(marker_prices));
    let empty = if prices.is_empty() { " (no data)" } else { "" };
    let caption = format!(
        "{} {} ({}) — price, ▲ buy ▼ sell, times UTC{empty}",
        r.market, r.day, r.mode
    );
    let mut chart = panel(area, caption, 22, axis, ys).map_err(|e| e.to_string())?;
    chart.draw_series(LineSeries::new(prices, &BLUE))?;
    let green = RGBColor(0x2E, 0xCC, 0x71);
    for m in &r.markers {
        let at = (axis.x(m.t), to_f64(m.price));
        if m.side.eq_ignore_ascii_case("buy") {
            chart.draw_series(std::iter::once(TriangleMarker::new(at, 9, green.filled())))?;
        } else {
            // plotters has no downward triangle: a 180° one drawn by hand.
            chart.draw_series(std::iter::once(EmptyElement::at(at) + down_triangle()))?;
        }
    }
    Ok(())
}

fn down_triangle() -> Polygon<(i32, i32)> {
    Polygon::new(vec![(-8, -7), (8, -7), (0, 8)], RED.filled())
}

fn equity_panel(r: &DailyReport, axis: &Axis, area: &Area<'_>) -> DrawResult {
    let equity = series(axis, &r.equity);
    let ys = y_range(equity.iter().map(|p| p.1));
    let mut chart = panel(area, "Equity (KRW)".into(), 18, axis, ys).map_err(|e| e.to_string())?;
    chart.draw_series(LineSeries::new(equity, &MAGENTA))?;
    Ok(())
}

/// The report as markdown: summary table, trades, open positions, and who reviewed.
pub fn render_markdown(r: &DailyReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are discarded on purpose.
    let _infallible = write_markdown(r, &mut out);
    out
}

fn write_markdown(r: &DailyReport, out: &mut String) -> std::fmt::Result {
    let t = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    writeln!(
        out,
        "# Daily report {} — {} ({})\n",
        r.day, r.market, r.mode
    )?;
    writeln!(out, "Asia/Seoul day {}. Reviewer: {}.\n", r.day, r.reviewer)?;
    writeln!(out, "| | |\n|---|---|")?;
    for (name, value) in report_summary(r) {
        writeln!(out, "| {name} | {} |", cell(&value))?;
    }
    writeln!(out, "\n## Trades\n")?;
    if r.trades.is_empty() {
        writeln!(out, "No closed trades.")?;
    } else {
        writeln!(
            out,
            "| Entry | Entry price | Exit | Exit price | Quantity | PnL | Exit reason |\n|---|---|---|---|---|---|---|"
        )?;
        for tr in &r.trades {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                t(tr.entry_time),
                krw(tr.entry_price),
                t(tr.exit_time),
                krw(tr.exit_price),
                tr.quantity.normalize(),
                krw(tr.pnl),
                cell(&tr.exit_reason)
            )?;
        }
    }
    writeln!(out, "\n## Open positions\n")?;
    if r.open_positions.is_empty() {
        writeln!(out, "None.")?;
    } else {
        writeln!(
            out,
            "| Market | Quantity | Entry | Entry price | Last price | Unrealised PnL |\n|---|---|---|---|---|---|"
        )?;
        for p in &r.open_positions {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                cell(&p.market),
                p.quantity.normalize(),
                t(p.entry_time),
                krw(p.entry_price),
                krw(p.last_price),
                krw(p.unrealized_pnl)
            )?;
        }
    }
    Ok(())
}

/// A table cell: a `|` or a newline would break the row.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}
