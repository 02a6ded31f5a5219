//! Backtest metrics (SPEC B8): max drawdown of the equity marked at every close, Sharpe of
//! daily Asia/Seoul equity returns × √365 (risk-free rate 0), exposure.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::indicator_table::to_f64;
use crate::domain::money::Krw;
use crate::domain::risk::seoul_day_bounds;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// Largest peak-to-trough fall of equity, in % of the peak.
    pub max_drawdown_pct: f64,
    /// `None` with fewer than two daily returns or no variation.
    pub sharpe: Option<f64>,
    /// Share of candles with an open position, in %.
    pub exposure_pct: f64,
    pub days: usize,
}

pub fn compute(start: Krw, equity: &[(DateTime<Utc>, Krw)], exposed: usize) -> Metrics {
    let (max_drawdown_pct, returns) = (max_drawdown_pct(equity), daily_returns(start, equity));
    Metrics {
        max_drawdown_pct,
        sharpe: sharpe(&returns),
        exposure_pct: if equity.is_empty() {
            0.0
        } else {
            100.0 * exposed as f64 / equity.len() as f64
        },
        days: returns.len(),
    }
}

fn max_drawdown_pct(equity: &[(DateTime<Utc>, Krw)]) -> f64 {
    let mut peak = Decimal::MIN;
    let mut worst = Decimal::ZERO;
    let mut prev = None;
    for (_, e) in equity {
        let e = e.value();
        // Flat stretches (no position) repeat the same equity: nothing new to measure, and
        // the division is the loop's main cost.
        if prev == Some(e) {
            continue;
        }
        prev = Some(e);
        peak = peak.max(e);
        if peak > Decimal::ZERO && e < peak {
            worst = worst.max((peak - e) / peak);
        }
    }
    to_f64(worst * Decimal::ONE_HUNDRED)
}

/// Return of each Seoul day's closing equity over the previous day's (the first day over
/// the starting balance).
fn daily_returns(start: Krw, equity: &[(DateTime<Utc>, Krw)]) -> Vec<f64> {
    let mut closes: Vec<Decimal> = Vec::new();
    let mut day = None;
    for (t, e) in equity {
        match (day, closes.last_mut()) {
            (Some((start, end)), Some(last)) if *t >= start && *t < end => *last = e.value(),
            _ => {
                closes.push(e.value());
                day = Some(seoul_day_bounds(*t));
            }
        }
    }
    let mut prev = start.value();
    closes
        .into_iter()
        .map(|c| {
            let r = if prev.is_zero() {
                0.0
            } else {
                to_f64(c / prev) - 1.0
            };
            prev = c;
            r
        })
        .collect()
}

/// Mean over the sample standard deviation (n − 1, as pandas and freqtrade) × √365.
fn sharpe(returns: &[f64]) -> Option<f64> {
    if returns.len() < 2 {
        return None;
    }
    let n = returns.len() as f64;
    let mean = returns.iter().sum::<f64>() / n;
    let var = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let sd = var.sqrt();
    (sd > 0.0).then(|| mean / sd * 365f64.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn series(values: &[(i64, i64)]) -> Vec<(DateTime<Utc>, Krw)> {
        let t0 = Utc.with_ymd_and_hms(2025, 9, 1, 0, 0, 0).unwrap();
        values
            .iter()
            .map(|&(h, v)| (t0 + Duration::hours(h), Krw::new(v.into())))
            .collect()
    }

    #[test]
    fn drawdown_is_the_largest_fall_from_a_peak() {
        let e = series(&[(0, 100), (1, 120), (2, 90), (3, 130), (4, 110)]);
        assert!((max_drawdown_pct(&e) - 25.0).abs() < 1e-12);
    }

    #[test]
    fn daily_returns_use_seoul_days() {
        // 14:00 and 15:00 UTC fall on different Seoul days.
        let e = series(&[(14, 110), (15, 121)]);
        let r = daily_returns(Krw::new(100.into()), &e);
        assert_eq!(r.len(), 2);
        assert!((r[0] - 0.1).abs() < 1e-12 && (r[1] - 0.1).abs() < 1e-12);
        assert_eq!(sharpe(&r), None, "no variation: undefined");
        let s = sharpe(&[0.01, -0.01, 0.02]).unwrap();
        assert!((s - (0.02 / 3.0) / 0.015275252316519466 * 365f64.sqrt()).abs() < 1e-9);
    }
}
