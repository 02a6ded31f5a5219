//! Pure parsers of Upbit Quotation payloads: minute candles, the ticker, the error body and
//! the `Remaining-Req` header. No I/O, so they are tested on the recorded payloads
//! (`tests/data/upbit/`) and fuzzed with arbitrary JSON.
//!
//! Numbers are read from their JSON text (`serde_json::value::RawValue`) straight into
//! `Decimal`, never through `f64`: `11436000.00000000` stays exact, and so does a volume
//! with more digits than a double holds.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::MarketError;
use crate::domain::candle::Candle;

/// One candle object as Upbit sends it; every field optional so a missing one is reported
/// by name rather than as serde's generic message.
#[derive(Deserialize)]
struct RawCandle<'a> {
    #[serde(borrow)]
    candle_date_time_utc: Option<&'a RawValue>,
    #[serde(borrow)]
    opening_price: Option<&'a RawValue>,
    #[serde(borrow)]
    high_price: Option<&'a RawValue>,
    #[serde(borrow)]
    low_price: Option<&'a RawValue>,
    #[serde(borrow)]
    trade_price: Option<&'a RawValue>,
    #[serde(borrow)]
    candle_acc_trade_volume: Option<&'a RawValue>,
}

fn payload(msg: String) -> MarketError {
    MarketError::Payload(msg)
}

/// A JSON number (or a string holding one, as the exchange API sends) as an exact Decimal.
pub fn decimal_field(raw: Option<&RawValue>, what: &str) -> Result<Decimal, MarketError> {
    let raw = raw
        .filter(|r| r.get() != "null")
        .ok_or_else(|| payload(format!("{what} is missing")))?;
    let text = raw.get();
    let text = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => inner,
        None => text,
    };
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str(text)
    };
    parsed.map_err(|e| payload(format!("{what} is not a decimal number (`{text}`): {e}")))
}

/// Upbit's `candle_date_time_utc` ("2020-02-20T11:19:00", no offset, UTC by definition).
fn utc_field(raw: Option<&RawValue>, what: &str) -> Result<DateTime<Utc>, MarketError> {
    let raw = raw.ok_or_else(|| payload(format!("{what} is missing")))?;
    let text: String = serde_json::from_str(raw.get())
        .map_err(|_| payload(format!("{what} is not a string: {}", raw.get())))?;
    NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S")
        .map(|naive| naive.and_utc())
        .map_err(|e| payload(format!("{what} `{text}` is not a UTC time: {e}")))
}

fn parse_candle(i: usize, raw: &RawValue) -> Result<Candle, MarketError> {
    let c: RawCandle<'_> = serde_json::from_str(raw.get())
        .map_err(|e| payload(format!("candle {i} is not a candle object: {e}")))?;
    let field = |name: &str| format!("candle {i}: `{name}`");
    Ok(Candle {
        open_time: utc_field(c.candle_date_time_utc, &field("candle_date_time_utc"))?,
        open: decimal_field(c.opening_price, &field("opening_price"))?,
        high: decimal_field(c.high_price, &field("high_price"))?,
        low: decimal_field(c.low_price, &field("low_price"))?,
        close: decimal_field(c.trade_price, &field("trade_price"))?,
        volume: decimal_field(c.candle_acc_trade_volume, &field("candle_acc_trade_volume"))?,
    })
}

/// A `/v1/candles/minutes/{unit}` body, in the order sent (newest first). Candles that
/// parse but break the domain rules (high < low, …) are returned for the caller to screen;
/// a row that does not parse at all fails the page, naming the row and the field.
pub fn parse_candles(body: &str) -> Result<Vec<Candle>, MarketError> {
    if let Some(detail) = parse_error(body) {
        return Err(payload(format!(
            "error payload instead of candles: {detail}"
        )));
    }
    let rows: Vec<&RawValue> = serde_json::from_str(body)
        .map_err(|e| payload(format!("candles: expected a JSON array: {e}")))?;
    rows.into_iter()
        .enumerate()
        .map(|(i, raw)| parse_candle(i, raw))
        .collect()
}

#[derive(Deserialize)]
struct RawTicker<'a> {
    market: Option<String>,
    trade_timestamp: Option<serde_json::Value>,
    #[serde(borrow)]
    trade_price: Option<&'a RawValue>,
}

/// The last trade of a market per `/v1/ticker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticker {
    pub price: Decimal,
    /// `trade_timestamp` (ms since the epoch), when present and valid.
    pub at: Option<DateTime<Utc>>,
}

/// The ticker of `market` in a `/v1/ticker` body.
pub fn parse_ticker(body: &str, market: &str) -> Result<Ticker, MarketError> {
    if let Some(detail) = parse_error(body) {
        return Err(payload(format!(
            "error payload instead of a ticker: {detail}"
        )));
    }
    let rows: Vec<RawTicker<'_>> = serde_json::from_str(body)
        .map_err(|e| payload(format!("ticker: expected a JSON array of objects: {e}")))?;
    let entry = rows
        .iter()
        .find(|t| t.market.as_deref() == Some(market))
        .ok_or_else(|| payload(format!("ticker: no entry for {market}")))?;
    Ok(Ticker {
        price: decimal_field(entry.trade_price, "ticker `trade_price`")?,
        at: entry
            .trade_timestamp
            .as_ref()
            .and_then(serde_json::Value::as_i64)
            .and_then(DateTime::from_timestamp_millis),
    })
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    name: Option<serde_json::Value>,
    message: Option<String>,
}

/// `{"error":{"name":…,"message":…}}` as "name: message"; `None` for any other body.
pub fn parse_error(body: &str) -> Option<String> {
    // Only an object: serde would also read a one-element array into the struct.
    if !body.trim_start().starts_with('{') {
        return None;
    }
    let e: ErrorBody = serde_json::from_str(body).ok()?;
    if e.error.name.is_none() && e.error.message.is_none() {
        return None;
    }
    let name = match e.error.name {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => "unnamed error".into(),
    };
    Some(match e.error.message {
        Some(m) => format!("{name}: {m}"),
        None => name,
    })
}

/// The `Remaining-Req` header: requests left in this group's current second and minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemainingReq {
    pub group: String,
    pub min: Option<u32>,
    pub sec: u32,
}

/// Parses `group=candles; min=1799; sec=29`. `None` when `sec` is absent or not a number:
/// then the caller does not throttle on it (the 429 handling still applies).
pub fn parse_remaining_req(header: &str) -> Option<RemainingReq> {
    let parts: HashMap<&str, &str> = header
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    Some(RemainingReq {
        group: parts.get("group").unwrap_or(&"").to_string(),
        min: parts.get("min").and_then(|m| m.parse().ok()),
        sec: parts.get("sec")?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_every_digit() {
        let body = r#"[{"candle_date_time_utc":"2020-02-25T06:41:00",
            "opening_price":11436000.00000000,"high_price":11443000.0,
            "low_price":11428000.0,"trade_price":"11443000.5",
            "candle_acc_trade_volume":0.123456789012345678901}]"#;
        let c = &parse_candles(body).unwrap()[0];
        assert_eq!(c.open.to_string(), "11436000.00000000");
        assert_eq!(c.close.to_string(), "11443000.5");
        assert_eq!(c.volume.to_string(), "0.123456789012345678901");
        assert_eq!(c.open_time.to_rfc3339(), "2020-02-25T06:41:00+00:00");
    }

    #[test]
    fn a_missing_or_bad_field_is_named() {
        let body = r#"[{"candle_date_time_utc":"2020-02-25T06:41:00","opening_price":1,
            "high_price":1,"low_price":1,"trade_price":1}]"#;
        let e = parse_candles(body).unwrap_err().to_string();
        assert!(
            e.contains("candle 0") && e.contains("candle_acc_trade_volume"),
            "{e}"
        );
        let body = body.replace(
            "\"trade_price\":1",
            "\"trade_price\":true,\"candle_acc_trade_volume\":1",
        );
        let e = parse_candles(&body).unwrap_err().to_string();
        assert!(e.contains("trade_price"), "{e}");
        let e = parse_candles(r#"[{"candle_date_time_utc":"yesterday"}]"#).unwrap_err();
        assert!(e.to_string().contains("candle_date_time_utc"), "{e}");
    }

    #[test]
    fn error_payloads_read_as_name_and_message() {
        let body = r#"{"error":{"message":"market not found","name":404}}"#;
        assert_eq!(parse_error(body).unwrap(), "404: market not found");
        let body = r#"{"error":{"name":"too_many_requests","message":"slow down"}}"#;
        assert_eq!(parse_error(body).unwrap(), "too_many_requests: slow down");
        assert!(parse_error("[]").is_none());
        assert!(parse_error(r#"[{"error":{"name":"n"}}]"#).is_none());
        assert!(parse_error(r#"{"error":{"unit":1}}"#).is_none());
        let e = parse_candles(body).unwrap_err().to_string();
        assert!(e.contains("too_many_requests: slow down"), "{e}");
    }

    #[test]
    fn remaining_req_header_parses() {
        let r = parse_remaining_req("group=candles; min=599; sec=0").unwrap();
        assert_eq!(
            r,
            RemainingReq {
                group: "candles".into(),
                min: Some(599),
                sec: 0
            }
        );
        assert!(parse_remaining_req("group=default").is_none());
        assert!(parse_remaining_req("garbage").is_none());
    }

    #[test]
    fn ticker_trade_price_is_exact() {
        let body = r#"[{"market":"KRW-BTC","trade_price":47551000.0,"timestamp":1}]"#;
        let t = parse_ticker(body, "KRW-BTC").unwrap();
        assert_eq!((t.price.to_string(), t.at), ("47551000.0".into(), None));
        assert!(parse_ticker(body, "KRW-ETH").is_err());
        assert!(parse_ticker("[]", "KRW-BTC").is_err());
    }
}

#[cfg(test)]
mod recorded {
    //! The parsers on real recorded payloads (`tests/data/upbit/SOURCES.md`).
    use super::*;
    use crate::domain::candle::{screen_page, Interval};

    const PAGE1: &str = include_str!("../../tests/data/upbit/candles_1m_page1.json");
    const TICKER: &str = include_str!("../../tests/data/upbit/ticker.json");

    #[test]
    fn a_recorded_page_parses_newest_first_and_passes_screening() {
        let page = parse_candles(PAGE1).unwrap();
        assert_eq!(page.len(), 200);
        assert!(page.windows(2).all(|w| w[0].open_time > w[1].open_time));
        assert_eq!(page[0].open_time.to_rfc3339(), "2020-02-20T11:19:00+00:00");
        assert_eq!(page[0].open.to_string(), "11509000.0");
        assert_eq!(page[0].volume.to_string(), "2.63267824");
        let (kept, rejected) = screen_page(page, Interval::M1);
        assert_eq!((kept.len(), rejected.len()), (200, 0));
    }

    #[test]
    fn a_recorded_ticker_gives_the_string_trade_price() {
        let t = parse_ticker(TICKER, "KRW-BTC").unwrap();
        assert_eq!(t.price.to_string(), "148601000.00000000");
        assert_eq!(t.at.unwrap().timestamp_millis(), 1751606040365);
        assert_ne!(
            parse_ticker(TICKER, "KRW-ETH").unwrap(),
            parse_ticker(TICKER, "KRW-BTC").unwrap()
        );
    }
}

#[cfg(test)]
mod fuzz {
    //! Arbitrary JSON, biased towards the keys the parsers look for, never panics a parser:
    //! a body is parsed or refused with a payload error.
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    const KEYS: [&str; 12] = [
        "candle_date_time_utc",
        "opening_price",
        "high_price",
        "low_price",
        "trade_price",
        "candle_acc_trade_volume",
        "market",
        "error",
        "name",
        "message",
        "unit",
        "x",
    ];

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(Value::from),
            "[0-9eE.+-]{0,30}".prop_map(Value::String),
            "20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}".prop_map(Value::String),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(prop::sample::select(KEYS.to_vec()), inner, 0..8)
                    .prop_map(|m| Value::Object(
                        m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                    )),
            ]
        })
    }

    fn is_payload<T>(r: Result<T, MarketError>) -> bool {
        !matches!(r, Err(ref e) if !matches!(e, MarketError::Payload(_)))
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_arbitrary_json(v in arb_json()) {
            let body = v.to_string();
            prop_assert!(is_payload(parse_candles(&body)));
            prop_assert!(is_payload(parse_ticker(&body, "KRW-BTC")));
            parse_error(&body);
        }

        #[test]
        fn parsers_never_panic_on_arbitrary_text(body in ".{0,200}") {
            prop_assert!(is_payload(parse_candles(&body)));
            prop_assert!(is_payload(parse_ticker(&body, "KRW-BTC")));
            parse_remaining_req(&body);
        }
    }
}
