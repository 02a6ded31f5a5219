//! Candle CSV parsing as pure functions over text (the caller reads the file). Formats, told
//! apart by their header (see `../shared/data/SOURCES.md`):
//! - ccxt-style `timestamp,open,high,low,close,volume` with `YYYY-MM-DD HH:MM:SS` UTC open
//!   times (or epoch milliseconds);
//! - freqtrade/Binance exports `open_time_ms,open_time_utc,open,high,low,close,volume`;
//! - raw Upbit API dumps (`candle_date_time_utc`, `opening_price`, `high_price`,
//!   `low_price`, `trade_price`, `candle_acc_trade_volume`, …), newest first.
//!
//! Every candle is validated (SPEC B1); an error names the file, the 1-based line and the
//! field. The result is ascending by open time with no duplicates.

use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use rust_decimal::Decimal;

use super::candle::{validate, Candle, Interval};

/// A CSV that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {}{reason}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct CsvError {
    pub file: String,
    pub line: usize,
    pub field: Option<String>,
    pub reason: String,
}

/// How the open time is written.
#[derive(Debug, Clone, Copy)]
enum TimeFormat {
    /// `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DDTHH:MM:SS`, optionally with `Z`: UTC by the
    /// files' convention (the raw API's `candle_date_time_utc` has no zone suffix).
    Text,
    /// Epoch milliseconds.
    Millis,
    /// Either, decided per value (ccxt `timestamp` columns come both ways).
    Auto,
}

/// Column positions of the fields a candle needs.
#[derive(Debug, Clone, Copy)]
struct Layout {
    time: (usize, TimeFormat),
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: usize,
    newest_first: bool,
}

const FIELDS: [&str; 6] = ["open_time", "open", "high", "low", "close", "volume"];

fn layout(header: &[&str]) -> Result<Layout, String> {
    let find = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| header.iter().position(|h| h.trim() == *n))
    };
    let raw_api = find(&["candle_date_time_utc"]).is_some();
    let time = if let Some(i) = find(&["candle_date_time_utc"]) {
        (i, TimeFormat::Text)
    } else if let Some(i) = find(&["open_time_ms"]) {
        (i, TimeFormat::Millis)
    } else if let Some(i) = find(&["timestamp", "open_time", "date"]) {
        (i, TimeFormat::Auto)
    } else {
        return Err("no open-time column (timestamp, open_time_ms or candle_date_time_utc)".into());
    };
    let col = |names: &[&str], what: &str| {
        find(names).ok_or_else(|| format!("no `{what}` column in the header"))
    };
    Ok(Layout {
        time,
        open: col(&["open", "opening_price"], "open")?,
        high: col(&["high", "high_price"], "high")?,
        low: col(&["low", "low_price"], "low")?,
        close: col(&["close", "trade_price"], "close")?,
        volume: col(&["volume", "candle_acc_trade_volume"], "volume")?,
        newest_first: raw_api,
    })
}

fn parse_time(s: &str, format: TimeFormat) -> Result<DateTime<Utc>, String> {
    let millis = |s: &str| {
        s.parse::<i64>()
            .ok()
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
    };
    let text = |s: &str| {
        let s = s.strip_suffix('Z').unwrap_or(s);
        fast_datetime(s).or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
                .ok()
                .map(|n| n.and_utc())
        })
    };
    let parsed = match format {
        TimeFormat::Text => text(s),
        TimeFormat::Millis => millis(s),
        TimeFormat::Auto => millis(s).or_else(|| text(s)),
    };
    parsed.ok_or_else(|| format!("`{s}` is not a UTC time (YYYY-MM-DD HH:MM:SS or epoch ms)"))
}

/// Splits a row at commas into `out`, trimming cells only when they need it: the byte
/// loop is several times faster than `str::split` + `trim` on these short cells.
fn split_cells<'a>(row: &'a str, out: &mut Vec<&'a str>) {
    out.clear();
    let trim = |c: &'a str| {
        let b = c.as_bytes();
        match (b.first(), b.last()) {
            (Some(f), Some(l)) if f.is_ascii_whitespace() || l.is_ascii_whitespace() => c.trim(),
            _ => c,
        }
    };
    let mut start = 0;
    for (i, b) in row.bytes().enumerate() {
        if b == b',' {
            // Slicing at an ASCII comma is always on a char boundary.
            out.push(trim(&row[start..i]));
            start = i + 1;
        }
    }
    out.push(trim(&row[start..]));
}

/// Plain `[-]digits[.digits]` with at most 18 significant digits, read into an `i64`
/// mantissa: exact, and several times faster than the general parser that handles
/// everything else (exponents, 28 digits, underscores).
fn fast_decimal(s: &str) -> Option<Decimal> {
    let (neg, digits) = match s.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        b => (false, b),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let (mut mantissa, mut scale, mut seen_dot, mut count) = (0i64, 0u32, false, 0usize);
    for &c in digits {
        match c {
            // 18 digits always fit an i64; a 19th might not.
            b'0'..=b'9' if count == 18 => return None,
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + i64::from(c - b'0');
                count += 1;
                scale += u32::from(seen_dot);
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => return None,
        }
    }
    if count == 0 {
        return None;
    }
    Some(Decimal::new(if neg { -mantissa } else { mantissa }, scale))
}

/// `YYYY-MM-DD HH:MM:SS` (or with `T`) read digit by digit: chrono's format parser costs
/// more than the rest of a row, and a month of minutes has 47,598 of them.
fn fast_datetime(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b' ' | b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date =
        chrono::NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(5..7)?, num(8..10)?)?;
    let time = chrono::NaiveTime::from_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?;
    Some(date.and_time(time).and_utc())
}

/// Parses a candle CSV. `file` only names the source in errors.
pub fn parse_candles(file: &str, text: &str, interval: Interval) -> Result<Vec<Candle>, CsvError> {
    parse_candles_from(file, text, interval, None)
}

/// [`parse_candles`], skipping rows that open before `from` (only their time is read):
/// a backtest needs a few hundred hours before its first minute, not years of them.
pub fn parse_candles_from(
    file: &str,
    text: &str,
    interval: Interval,
    from: Option<DateTime<Utc>>,
) -> Result<Vec<Candle>, CsvError> {
    let err = |line: usize, field: Option<&str>, reason: String| CsvError {
        file: file.to_string(),
        line,
        field: field.map(str::to_string),
        reason,
    };
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = match lines.next() {
        Some((_, h)) => h.trim_start_matches('\u{feff}').split(',').collect(),
        None => return Err(err(1, None, "empty file: no header".into())),
    };
    let lay = layout(&header).map_err(|r| err(1, None, r))?;
    let width = header.len();
    let mut candles = Vec::with_capacity(text.len() / 60);
    let mut line_of = Vec::with_capacity(text.len() / 60);
    let mut cells: Vec<&str> = Vec::with_capacity(width);
    for (i, row) in lines {
        let line = i + 1;
        if row.is_empty() || row.bytes().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        split_cells(row, &mut cells);
        if cells.len() != width {
            return Err(err(
                line,
                None,
                format!("{} cells, the header has {width}", cells.len()),
            ));
        }
        if let Some(from) = from {
            let t = parse_time(cells[lay.time.0], lay.time.1)
                .map_err(|r| err(line, Some(FIELDS[0]), r))?;
            if t < from {
                continue;
            }
        }
        let c = parse_row(&cells, &lay).map_err(|(f, r)| err(line, Some(f), r))?;
        validate(&c, interval).map_err(|e| err(line, Some(e.field()), e.to_string()))?;
        candles.push(c);
        line_of.push(line);
    }
    if lay.newest_first {
        candles.reverse();
        line_of.reverse();
    }
    check_order(&candles, &line_of).map_err(|(line, reason)| err(line, Some(FIELDS[0]), reason))?;
    Ok(candles)
}

/// Strictly ascending open times, or the line of the first that is not.
fn check_order(candles: &[Candle], line_of: &[usize]) -> Result<(), (usize, String)> {
    for k in 1..candles.len() {
        if candles[k].open_time <= candles[k - 1].open_time {
            let what = if candles[k].open_time == candles[k - 1].open_time {
                "duplicate"
            } else {
                "out-of-order"
            };
            return Err((
                line_of[k],
                format!("{what} open time {}", candles[k].open_time),
            ));
        }
    }
    Ok(())
}

fn parse_row(cells: &[&str], lay: &Layout) -> Result<Candle, (&'static str, String)> {
    let num = |idx: usize, field: &'static str| {
        let s = cells[idx];
        fast_decimal(s)
            .ok_or(())
            .or_else(|()| Decimal::from_str(s))
            .or_else(|_| Decimal::from_scientific(s))
            .map_err(|_| (field, format!("`{s}` is not a number")))
    };
    let open_time = parse_time(cells[lay.time.0], lay.time.1).map_err(|r| (FIELDS[0], r))?;
    Ok(Candle {
        open_time,
        open: num(lay.open, FIELDS[1])?,
        high: num(lay.high, FIELDS[2])?,
        low: num(lay.low, FIELDS[3])?,
        close: num(lay.close, FIELDS[4])?,
        volume: num(lay.volume, FIELDS[5])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CCXT: &str = "timestamp,open,high,low,close,volume\n\
        2025-09-01 00:00:00,150700000.0,150803000.0,150640000.0,150803000.0,1.51931528\n\
        2025-09-01 00:01:00,150803000.0,150838000.0,150705000.0,150836000.0,0.8461566\n";

    #[test]
    fn ccxt_files_parse_with_utc_open_times() {
        let c = parse_candles("a.csv", CCXT, Interval::M1).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].open_time.to_rfc3339(), "2025-09-01T00:00:00+00:00");
        assert_eq!(c[1].volume.to_string(), "0.8461566");
    }

    #[test]
    fn raw_api_files_are_reordered_oldest_first() {
        let text = "market,candle_date_time_utc,candle_date_time_kst,opening_price,high_price,low_price,trade_price,timestamp,candle_acc_trade_price,candle_acc_trade_volume,unit\n\
            KRW-BTC,2025-01-26T18:30:00,2025-01-27T03:30:00,157795000,157795000,157740000,157740000,1737916708624,384643635.70851,2.43770689,30\n\
            KRW-BTC,2025-01-26T18:00:00,2025-01-27T03:00:00,157690000,157795000,157630000,157795000,1737916194635,1974884085.23559,12.52078169,30\n";
        let c = parse_candles("raw.csv", text, Interval::M30).unwrap();
        assert_eq!(c[0].open_time.to_rfc3339(), "2025-01-26T18:00:00+00:00");
        assert_eq!(c[1].close, Decimal::from(157740000));
    }

    #[test]
    fn a_broken_row_names_file_line_and_field() {
        let text = format!("{CCXT}2025-09-01 00:02:00,150836000.0,abc,150705000.0,150836000.0,1\n");
        let e = parse_candles("m.csv", &text, Interval::M1).unwrap_err();
        assert_eq!(e.line, 4);
        assert_eq!(e.field.as_deref(), Some("high"));
        assert_eq!(
            e.to_string(),
            "m.csv:4: field `high`: `abc` is not a number"
        );
        let short = format!("{CCXT}2025-09-01 00:02:00,1,2\n");
        let e = parse_candles("m.csv", &short, Interval::M1).unwrap_err();
        assert!(e.to_string().contains("m.csv:4: 3 cells"), "{e}");
    }

    #[test]
    fn a_high_below_low_candle_is_an_error_on_its_line() {
        let text = format!("{CCXT}2025-09-01 00:02:00,100,90,95,92,1\n");
        let e = parse_candles("m.csv", &text, Interval::M1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "m.csv:4: field `high`: high 90 is below low 95"
        );
    }

    #[test]
    fn the_fast_time_path_agrees_with_chrono_and_refuses_nonsense() {
        let t = parse_time("2025-09-01 23:59:07", TimeFormat::Auto).unwrap();
        assert_eq!(t.to_rfc3339(), "2025-09-01T23:59:07+00:00");
        let t = parse_time("2025-01-26T18:30:00Z", TimeFormat::Text).unwrap();
        assert_eq!(t.to_rfc3339(), "2025-01-26T18:30:00+00:00");
        assert_eq!(
            parse_time("1756684800000", TimeFormat::Auto)
                .unwrap()
                .to_rfc3339(),
            "2025-09-01T00:00:00+00:00"
        );
        for bad in [
            "2025-13-01 00:00:00",
            "2025-02-30 00:00:00",
            "2025-09-01 24:00:00",
            "2025-09-01 0a:00:00",
        ] {
            assert!(parse_time(bad, TimeFormat::Auto).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_fast_decimal_path_equals_the_general_parser() {
        for s in [
            "0",
            "150700000.0",
            "0.8461566",
            "-12.5",
            "1.51931528",
            "007",
            "999999999999999999",
        ] {
            assert_eq!(fast_decimal(s), Some(Decimal::from_str(s).unwrap()), "{s}");
            assert_eq!(
                fast_decimal(s).unwrap().scale(),
                Decimal::from_str(s).unwrap().scale(),
                "{s}"
            );
        }
        for s in [
            "",
            "-",
            ".",
            "1.2.3",
            "1e5",
            "12a",
            "1234567890123456789",
            "+1",
            " 1",
        ] {
            assert_eq!(fast_decimal(s), None, "{s}");
        }
    }

    #[test]
    fn rows_before_from_are_skipped() {
        let from = parse_time("2025-09-01 00:01:00", TimeFormat::Text).unwrap();
        let c = parse_candles_from("a.csv", CCXT, Interval::M1, Some(from)).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].open_time, from);
    }

    #[test]
    fn duplicates_and_bad_times_are_errors() {
        let text = format!("{CCXT}2025-09-01 00:01:00,100,100,100,100,1\n");
        let e = parse_candles("m.csv", &text, Interval::M1).unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.reason.contains("duplicate"), "{e}");
        let text = format!("{CCXT}yesterday,100,100,100,100,1\n");
        let e = parse_candles("m.csv", &text, Interval::M1).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("open_time"));
        let e = parse_candles("m.csv", "a,b\n", Interval::M1).unwrap_err();
        assert_eq!(e.line, 1);
    }
}
