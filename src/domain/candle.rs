//! Candles (OHLCV bars keyed by their UTC open time), the market and interval they belong
//! to, the validity rules a candle must pass before it is stored or traded on (SPEC B1),
//! and hourly aggregation from minute candles (SPEC B3).

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;

/// An exchange market such as `KRW-BTC`: quote currency, dash, base asset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Market(String);

impl Market {
    /// Upbit's KRW-BTC, the bot's default market.
    pub fn krw_btc() -> Market {
        Market("KRW-BTC".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Market {
    type Err = CandleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        };
        match s.split_once('-') {
            Some((quote, base)) if ok_part(quote) && ok_part(base) => Ok(Market(s.to_string())),
            _ => Err(CandleError::BadMarket(s.to_string())),
        }
    }
}

impl fmt::Display for Market {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A candle length Upbit serves (minute units and the hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interval {
    M1,
    M3,
    M5,
    M10,
    M15,
    M30,
    H1,
    H4,
}

impl Interval {
    pub fn minutes(self) -> i64 {
        match self {
            Interval::M1 => 1,
            Interval::M3 => 3,
            Interval::M5 => 5,
            Interval::M10 => 10,
            Interval::M15 => 15,
            Interval::M30 => 30,
            Interval::H1 => 60,
            Interval::H4 => 240,
        }
    }

    pub fn duration(self) -> Duration {
        Duration::minutes(self.minutes())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::M1 => "1m",
            Interval::M3 => "3m",
            Interval::M5 => "5m",
            Interval::M10 => "10m",
            Interval::M15 => "15m",
            Interval::M30 => "30m",
            Interval::H1 => "1h",
            Interval::H4 => "4h",
        }
    }
}

impl FromStr for Interval {
    type Err = CandleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "1m" => Interval::M1,
            "3m" => Interval::M3,
            "5m" => Interval::M5,
            "10m" => Interval::M10,
            "15m" => Interval::M15,
            "30m" => Interval::M30,
            "1h" | "60m" => Interval::H1,
            "4h" | "240m" => Interval::H4,
            _ => return Err(CandleError::BadInterval(s.to_string())),
        })
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One OHLCV bar. `open_time` is the candle's open (Upbit's `candle_date_time_utc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candle {
    pub open_time: DateTime<Utc>,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: Decimal,
}

impl Candle {
    /// When the candle is complete: the instant a decision on it can be made.
    pub fn close_time(&self, interval: Interval) -> DateTime<Utc> {
        self.open_time + interval.duration()
    }
}

/// Why a candle (or an identifier) is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CandleError {
    #[error("high {high} is below low {low}")]
    HighBelowLow { high: Decimal, low: Decimal },
    #[error("{field} must be positive, got {value}")]
    NonPositivePrice { field: &'static str, value: Decimal },
    #[error("{field} {value} lies outside [low, high]")]
    OutsideRange { field: &'static str, value: Decimal },
    #[error("volume must not be negative, got {0}")]
    NegativeVolume(Decimal),
    #[error("open time {open_time} is not aligned to the {interval} interval")]
    Misaligned {
        open_time: DateTime<Utc>,
        interval: Interval,
    },
    #[error("duplicate open time {0} in one page")]
    Duplicate(DateTime<Utc>),
    #[error("`{0}` is not a market (expected e.g. KRW-BTC)")]
    BadMarket(String),
    #[error("`{0}` is not an interval (expected 1m, 3m, 5m, 10m, 15m, 30m, 1h or 4h)")]
    BadInterval(String),
}

impl CandleError {
    /// The field the error is about, for messages naming file, line and field.
    pub fn field(&self) -> &'static str {
        match self {
            CandleError::HighBelowLow { .. } => "high",
            CandleError::NonPositivePrice { field, .. }
            | CandleError::OutsideRange { field, .. } => field,
            CandleError::NegativeVolume(_) => "volume",
            CandleError::Misaligned { .. } | CandleError::Duplicate(_) => "open_time",
            CandleError::BadMarket(_) => "market",
            CandleError::BadInterval(_) => "interval",
        }
    }
}

/// Checks one candle on its own: positive prices, low ≤ open/close ≤ high, volume ≥ 0,
/// open time on the interval's grid (Upbit's grid is UTC-aligned).
pub fn validate(c: &Candle, interval: Interval) -> Result<(), CandleError> {
    for (field, value) in [
        ("open", c.open),
        ("high", c.high),
        ("low", c.low),
        ("close", c.close),
    ] {
        if value <= Decimal::ZERO {
            return Err(CandleError::NonPositivePrice { field, value });
        }
    }
    if c.high < c.low {
        return Err(CandleError::HighBelowLow {
            high: c.high,
            low: c.low,
        });
    }
    for (field, value) in [("open", c.open), ("close", c.close)] {
        if value < c.low || value > c.high {
            return Err(CandleError::OutsideRange { field, value });
        }
    }
    if c.volume < Decimal::ZERO {
        return Err(CandleError::NegativeVolume(c.volume));
    }
    // Upbit's grid is UTC-aligned: whole seconds since the epoch divisible by the length.
    let aligned = c.open_time.timestamp_subsec_nanos() == 0
        && c.open_time.timestamp().rem_euclid(interval.minutes() * 60) == 0;
    if !aligned {
        return Err(CandleError::Misaligned {
            open_time: c.open_time,
            interval,
        });
    }
    Ok(())
}

/// A candle refused from a page, with its index in the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub index: usize,
    pub error: CandleError,
}

/// Splits a page (e.g. one Upbit response) into the valid candles and the rejected ones:
/// a malformed candle is reported, the rest of the page is kept (issue 5). The second
/// candle with an already-seen open time is the rejected duplicate.
pub fn screen_page(page: Vec<Candle>, interval: Interval) -> (Vec<Candle>, Vec<Rejected>) {
    let mut seen = HashSet::with_capacity(page.len());
    let mut kept = Vec::with_capacity(page.len());
    let mut rejected = Vec::new();
    for (index, c) in page.into_iter().enumerate() {
        let verdict = validate(&c, interval).and_then(|()| {
            if seen.insert(c.open_time) {
                Ok(())
            } else {
                Err(CandleError::Duplicate(c.open_time))
            }
        });
        match verdict {
            Ok(()) => kept.push(c),
            Err(error) => rejected.push(Rejected { index, error }),
        }
    }
    (kept, rejected)
}

/// Aggregates ascending minute candles into UTC hours: open of the first minute, max high,
/// min low, close of the last minute, summed volume (SPEC B3). An hour with at least one
/// minute yields a candle; missing minutes are simply absent, as on Upbit.
pub fn aggregate_hourly(minutes: &[Candle]) -> Vec<Candle> {
    let mut hours: Vec<Candle> = Vec::with_capacity(minutes.len() / 60 + 1);
    for m in minutes {
        // Truncate to the UTC hour with integer arithmetic: chrono's duration_trunc was a
        // measurable share of the whole backtest.
        let secs = m.open_time.timestamp();
        let hour = m.open_time
            - Duration::seconds(secs.rem_euclid(3600))
            - Duration::nanoseconds(i64::from(m.open_time.timestamp_subsec_nanos()));
        match hours.last_mut() {
            Some(h) if h.open_time == hour => {
                h.high = h.high.max(m.high);
                h.low = h.low.min(m.low);
                h.close = m.close;
                h.volume += m.volume;
            }
            _ => hours.push(Candle {
                open_time: hour,
                ..m.clone()
            }),
        }
    }
    hours
}

/// The given hourly candles, extended by aggregated hours where the given series has
/// none (SPEC B3). Both inputs ascending; the output is ascending with unique times.
pub fn extend_hourly(given: Vec<Candle>, aggregated: Vec<Candle>) -> Vec<Candle> {
    let have: HashSet<DateTime<Utc>> = given.iter().map(|c| c.open_time).collect();
    let mut all = given;
    all.extend(
        aggregated
            .into_iter()
            .filter(|c| !have.contains(&c.open_time)),
    );
    all.sort_by_key(|c| c.open_time);
    all
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(crate) fn candle(min: i64, o: i64, h: i64, l: i64, c: i64) -> Candle {
        Candle {
            open_time: Utc.with_ymd_and_hms(2025, 9, 1, 0, 0, 0).unwrap() + Duration::minutes(min),
            open: o.into(),
            high: h.into(),
            low: l.into(),
            close: c.into(),
            volume: 1.into(),
        }
    }

    #[test]
    fn high_below_low_is_refused_with_its_reason() {
        let err = validate(&candle(0, 100, 90, 95, 92), Interval::M1).unwrap_err();
        assert_eq!(err.field(), "high");
        assert_eq!(err.to_string(), "high 90 is below low 95");
    }

    #[test]
    fn non_positive_prices_and_misaligned_times_are_refused() {
        let err = validate(&candle(0, 0, 10, 0, 5), Interval::M1).unwrap_err();
        assert_eq!(err.field(), "open");
        let mut c = candle(0, 10, 10, 10, 10);
        c.open_time += Duration::seconds(30);
        assert!(matches!(
            validate(&c, Interval::M1),
            Err(CandleError::Misaligned { .. })
        ));
        assert!(matches!(
            validate(&candle(5, 10, 10, 10, 10), Interval::M30),
            Err(CandleError::Misaligned { .. })
        ));
    }

    #[test]
    fn a_page_keeps_good_candles_and_reports_bad_ones() {
        let page = vec![
            candle(0, 10, 12, 9, 11),
            candle(1, 10, 9, 12, 11),
            candle(0, 10, 12, 9, 11),
            candle(2, 10, 12, 9, 11),
        ];
        let (kept, rejected) = screen_page(page, Interval::M1);
        assert_eq!(kept.len(), 2);
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0].index, 1);
        assert!(matches!(rejected[1].error, CandleError::Duplicate(_)));
    }

    #[test]
    fn minutes_aggregate_into_utc_hours() {
        let mins = vec![
            candle(58, 10, 12, 9, 11),
            candle(59, 11, 15, 10, 14),
            candle(60, 14, 14, 8, 9),
            candle(61, 9, 13, 9, 12),
        ];
        let hours = aggregate_hourly(&mins);
        assert_eq!(hours.len(), 2);
        assert_eq!(hours[0].open, Decimal::from(10));
        assert_eq!(hours[0].high, Decimal::from(15));
        assert_eq!(hours[0].low, Decimal::from(9));
        assert_eq!(hours[0].close, Decimal::from(14));
        assert_eq!(hours[0].volume, Decimal::from(2));
        assert_eq!(hours[1].open_time, mins[2].open_time);
        assert_eq!(hours[1].close, Decimal::from(12));
    }

    #[test]
    fn given_hours_win_over_aggregated_ones() {
        let mins = vec![candle(0, 10, 12, 9, 11), candle(60, 1, 1, 1, 1)];
        let agg = aggregate_hourly(&mins);
        let given = vec![candle(0, 20, 22, 19, 21)];
        let all = extend_hourly(given, agg);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].open, Decimal::from(20));
        assert_eq!(all[1].open, Decimal::from(1));
    }

    #[test]
    fn markets_and_intervals_parse_once_at_the_edge() {
        assert_eq!("KRW-BTC".parse::<Market>().unwrap().as_str(), "KRW-BTC");
        assert!("krw-btc".parse::<Market>().is_err());
        assert!("KRWBTC".parse::<Market>().is_err());
        assert_eq!("30m".parse::<Interval>().unwrap(), Interval::M30);
        assert!("2m".parse::<Interval>().is_err());
    }
}
