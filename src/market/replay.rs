//! The replay market source (SPEC B1, the offline default): candles read once from a CSV in
//! any of the shared formats (`domain::candle_csv`), then served by time range as a live
//! source would serve pages. No network, no clock: callers ask for a range.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::MarketError;
use crate::domain::candle::{Candle, Interval};
use crate::domain::candle_csv::parse_candles;

/// Candles of one market and interval, ascending by open time.
#[derive(Debug, Clone)]
pub struct ReplaySource {
    interval: Interval,
    candles: Vec<Candle>,
}

impl ReplaySource {
    /// Parses `text` (named `file` in errors) with the domain's CSV parser.
    pub fn from_text(file: &str, text: &str, interval: Interval) -> Result<Self, MarketError> {
        // The parser returns ascending candles (it refuses out-of-order rows), which the
        // binary searches below rely on.
        let candles = parse_candles(file, text, interval)?;
        Ok(ReplaySource { interval, candles })
    }

    /// A source with no candles (for processes that never collect).
    pub fn empty(interval: Interval) -> Self {
        ReplaySource {
            interval,
            candles: Vec::new(),
        }
    }

    pub fn from_file(path: &Path, interval: Interval) -> Result<Self, MarketError> {
        let text = std::fs::read_to_string(path).map_err(|source| MarketError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_text(&path.display().to_string(), &text, interval)
    }

    pub fn interval(&self) -> Interval {
        self.interval
    }

    /// The candles with open time in `[from, to)`, ascending (two binary searches).
    pub fn range(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> &[Candle] {
        let lo = self.candles.partition_point(|c| c.open_time < from);
        let hi = self.candles.partition_point(|c| c.open_time < to);
        self.candles.get(lo..hi.max(lo)).unwrap_or(&[])
    }

    /// The candles completed by `now` (open + interval ≤ now): what a live source would
    /// have served at that instant, so replay never shows a forming candle as final.
    pub fn completed_by(&self, now: DateTime<Utc>) -> &[Candle] {
        let n = self
            .candles
            .partition_point(|c| c.close_time(self.interval) <= now);
        self.candles.get(..n).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "timestamp,open,high,low,close,volume\n\
        1756684800000,100,101,99,100,2\n\
        1756684860000,101,102,100,101,1\n\
        1756684920000,101,103,101,102,3\n";

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn replay_serves_ascending_ranges_and_only_completed_candles() {
        let r = ReplaySource::from_text("t.csv", CSV, Interval::M1).unwrap();
        let all = r.range(t("2025-09-01T00:00:00Z"), t("2025-09-01T01:00:00Z"));
        assert_eq!(all.len(), 3);
        assert!(all.windows(2).all(|w| w[0].open_time < w[1].open_time));
        let one = r.range(t("2025-09-01T00:01:00Z"), t("2025-09-01T00:02:00Z"));
        assert_eq!(one.len(), 1);
        assert_eq!(r.completed_by(t("2025-09-01T00:02:00Z")).len(), 2);
        assert_eq!(r.completed_by(t("2025-09-01T00:02:59Z")).len(), 2);
    }

    #[test]
    fn a_broken_row_is_an_error_naming_the_line() {
        let bad = "timestamp,open,high,low,close,volume\n1756684800000,100,x,99,100,2\n";
        let e = ReplaySource::from_text("b.csv", bad, Interval::M1).unwrap_err();
        assert!(e.to_string().contains("b.csv:2"), "{e}");
    }
}
