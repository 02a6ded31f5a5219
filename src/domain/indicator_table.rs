//! The indicator table `coinpilot indicators` writes: exactly the columns of the TA-Lib
//! reference files in `../shared/data/reference/` for that interval (same names and order,
//! an empty cell during warm-up), so any candle file can be checked against TA-Lib with
//! `compare_reference.py`. Rows are taken as consecutive, gaps and all, as TA-Lib does.
//! Built on the incremental indicators, the same ones the engine uses.

use std::fmt::Write as _;

use rust_decimal::prelude::ToPrimitive;

use super::candle::{Candle, Interval};
use super::indicators::{regime_distance, volume_ratio, Bollinger, Rsi, Sma};

/// Columns of the 1-minute reference file.
pub const MINUTE_COLUMNS: &str =
    "timestamp,close,volume,rsi14,rsi7,sma200,bb_upper,bb_middle,bb_lower,vol_sma20,vol_ratio";
/// Columns of the 1-hour reference file.
pub const HOUR_COLUMNS: &str = "timestamp,close,volume,rsi14,sma50,sma200,regime_d";

/// Prices enter the indicators as `f64` (SPEC B2). Decimal → f64 is exact for the integer
/// KRW prices and within one ulp for fractional volumes.
pub fn to_f64(d: rust_decimal::Decimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

fn cell(out: &mut String, v: Option<f64>) {
    out.push(',');
    if let Some(v) = v {
        // `{}` prints the shortest text that parses back to the same f64.
        let _ = write!(out, "{v}");
    }
}

/// Renders the table for `interval` (1m or 1h columns; any other interval gets the 1m set).
pub fn render(candles: &[Candle], interval: Interval) -> String {
    let mut out = String::with_capacity(candles.len() * 160);
    if interval == Interval::H1 {
        out.push_str(HOUR_COLUMNS);
        out.push('\n');
        render_hours(candles, &mut out);
    } else {
        out.push_str(MINUTE_COLUMNS);
        out.push('\n');
        render_minutes(candles, &mut out);
    }
    out
}

fn row_start(out: &mut String, c: &Candle, close: f64, volume: f64) {
    let _ = write!(
        out,
        "{},{close},{volume}",
        c.open_time.format("%Y-%m-%d %H:%M:%S")
    );
}

fn render_minutes(candles: &[Candle], out: &mut String) {
    let (mut rsi14, mut rsi7) = (Rsi::new(14), Rsi::new(7));
    let mut sma200 = Sma::new(200);
    let mut bb = Bollinger::new(20, 2.0);
    let mut vol_sma = Sma::new(20);
    for c in candles {
        let (close, volume) = (to_f64(c.close), to_f64(c.volume));
        row_start(out, c, close, volume);
        cell(out, rsi14.update(close));
        cell(out, rsi7.update(close));
        cell(out, sma200.update(close));
        let b = bb.update(close);
        cell(out, b.map(|b| b.upper));
        cell(out, b.map(|b| b.middle));
        cell(out, b.map(|b| b.lower));
        let vs = vol_sma.update(volume);
        cell(out, vs);
        cell(out, vs.and_then(|s| volume_ratio(volume, s)));
        out.push('\n');
    }
}

fn render_hours(candles: &[Candle], out: &mut String) {
    let mut rsi14 = Rsi::new(14);
    let (mut sma50, mut sma200) = (Sma::new(50), Sma::new(200));
    for c in candles {
        let (close, volume) = (to_f64(c.close), to_f64(c.volume));
        row_start(out, c, close, volume);
        cell(out, rsi14.update(close));
        let fast = sma50.update(close);
        let slow = sma200.update(close);
        cell(out, fast);
        cell(out, slow);
        cell(out, fast.zip(slow).and_then(|(f, s)| regime_distance(f, s)));
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::candle_csv::parse_candles;
    use std::path::PathBuf;

    fn shared_data() -> Option<PathBuf> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
        if dir.is_dir() {
            Some(dir)
        } else {
            eprintln!(
                "NOTICE: {} is absent; TA-Lib reference test skipped",
                dir.display()
            );
            None
        }
    }

    fn gunzip(path: &std::path::Path) -> String {
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(path)
            .output()
            .expect("run gzip -dc");
        assert!(out.status.success(), "gzip -dc {}", path.display());
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Every cell of ours against TA-Lib's: both empty, or within 1e-9 relative.
    fn check_against_reference(candles: &str, reference: &str, interval: Interval) {
        let Some(dir) = shared_data() else { return };
        let text = std::fs::read_to_string(dir.join(candles)).expect("read candles");
        let parsed = parse_candles(candles, &text, interval).expect("parse candles");
        let ours = render(&parsed, interval);
        let theirs = gunzip(&dir.join("reference").join(reference));
        let (ours, theirs): (Vec<&str>, Vec<&str>) =
            (ours.lines().collect(), theirs.lines().collect());
        assert_eq!(ours[0], theirs[0], "columns");
        assert_eq!(ours.len(), theirs.len(), "row count");
        let columns: Vec<&str> = theirs[0].split(',').collect();
        let (mut cells, mut worst) = (0usize, 0f64);
        for (row, (a, b)) in ours.iter().zip(&theirs).enumerate().skip(1) {
            for (col, (x, y)) in a.split(',').zip(b.split(',')).enumerate().skip(1) {
                let name = columns[col];
                assert_eq!(
                    x.is_empty(),
                    y.is_empty(),
                    "row {row} {name}: ours {x:?} TA-Lib {y:?}"
                );
                if x.is_empty() {
                    continue;
                }
                let (fx, fy): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                let err = if fy == 0.0 {
                    fx.abs()
                } else {
                    ((fx - fy) / fy).abs()
                };
                assert!(
                    err <= 1e-9,
                    "row {row} {name}: ours {x} TA-Lib {y} (rel {err:e})"
                );
                worst = worst.max(err);
                cells += 1;
            }
        }
        assert!(cells > 100_000, "only {cells} cells compared");
        eprintln!("{reference}: {cells} cells within 1e-9, worst relative error {worst:e}");
    }

    #[test]
    fn minute_indicators_match_talib_on_every_row() {
        check_against_reference(
            "upbit_KRW-BTC_1m_2025-09-01_2025-10-04.csv",
            "upbit_KRW-BTC_1m_talib.csv.gz",
            Interval::M1,
        );
    }

    #[test]
    fn hourly_indicators_match_talib_on_every_row() {
        check_against_reference(
            "upbit_KRW-BTC_1h_2022-01-01_2025-09-29.csv",
            "upbit_KRW-BTC_1h_talib.csv.gz",
            Interval::H1,
        );
    }
}
