//! The AI reviewers against local servers (never the real services): a scripted axum
//! server answers with the recorded Anthropic payloads in `tests/data/anthropic/` and
//! hand-written error cases, and records every request so the tests can check what was
//! sent (headers, forced tool or schema, the 24 hourly candles in the prompt).

mod anthropic;
mod openai;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Duration as ChronoDuration;
use coinpilot::ai::{HttpSettings, MarketNoteRequest, PositionSummary, ReviewRequest};
use coinpilot::domain::candle::{Candle, Interval};
use coinpilot::domain::candle_csv::parse_candles;
use coinpilot::domain::indicators::Bands;
use coinpilot::domain::strategy::{Regime, Snapshot};
use rust_decimal::Decimal;
use serde_json::Value;

/// The key the tests configure; no error or debug output may contain it.
pub const KEY: &str = "sk-test-key-never-shown-0123456789";

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Canned {
    pub fn json(status: u16, body: &Value) -> Self {
        Canned {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    /// No answer at all: the handler waits forever.
    pub fn never() -> Self {
        Canned {
            status: 0,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What the server received.
#[derive(Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<Canned>>,
    received: Mutex<Vec<Received>>,
}

pub struct Server {
    pub base_url: String,
    script: Arc<Script>,
}

impl Server {
    /// The requests received so far.
    pub fn received(&self) -> Vec<Received> {
        std::mem::take(&mut *self.script.received.lock().unwrap())
    }
}

/// Serves `answers` in order, one per request; a request past the script gets a 599 so
/// an unexpected extra call shows up as a wrong result.
pub async fn serve(answers: Vec<Canned>) -> Server {
    let script = Arc::new(Script {
        answers: Mutex::new(answers.into()),
        received: Mutex::default(),
    });
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        base_url: format!("http://{addr}"),
        script,
    }
}

async fn answer(
    State(script): State<Arc<Script>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    script.received.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        headers,
        body,
    });
    let Some(canned) = script.answers.lock().unwrap().pop_front() else {
        return (StatusCode::from_u16(599).unwrap(), "script exhausted").into_response();
    };
    if canned.status == 0 {
        return std::future::pending().await;
    }
    let mut headers = HeaderMap::new();
    for (k, v) in &canned.headers {
        headers.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    (
        StatusCode::from_u16(canned.status).unwrap(),
        headers,
        canned.body,
    )
        .into_response()
}

/// A server that accepts connections and never answers.
pub async fn silent_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}")
}

pub fn settings(base_url: &str, model: &str) -> HttpSettings {
    HttpSettings {
        base_url: base_url.to_string(),
        api_key: Some(KEY.to_string()),
        model: model.to_string(),
        timeout: Duration::from_secs(10),
        min_confidence: 60,
    }
}

/// 24 real hourly KRW-BTC candles (the shipped sample, 2025-09-09 00:00–23:00 UTC).
pub fn real_hourly() -> Vec<Candle> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/upbit_KRW-BTC_1h_2025-09-08_2025-09-19.csv"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let all = parse_candles(path, &text, Interval::H1).unwrap();
    all[24..48].to_vec()
}

pub fn review_request() -> ReviewRequest {
    let hourly = real_hourly();
    let last = hourly.last().unwrap();
    ReviewRequest {
        market: "KRW-BTC".into(),
        decided_at: last.open_time + ChronoDuration::hours(1),
        close: last.close,
        snapshot: Snapshot {
            close: 150_000_000.0,
            rsi14: Some(27.5),
            rsi7: Some(18.25),
            ma200: Some(151_000_000.0),
            bands: Some(Bands {
                upper: 153_000_000.0,
                middle: 151_500_000.0,
                lower: 150_100_000.0,
            }),
            volume_ratio: Some(2.4),
        },
        regime: Some(Regime::Bull),
        regime_distance: Some(0.0125),
        hourly,
    }
}

pub fn note_request() -> MarketNoteRequest {
    let req = review_request();
    MarketNoteRequest {
        market: req.market.clone(),
        at: req.decided_at,
        regime: req.regime,
        regime_distance: req.regime_distance,
        positions: vec![PositionSummary {
            market: "KRW-BTC".into(),
            quantity: Decimal::new(12, 4),
            entry_price: Decimal::from(150_000_000),
            entry_time: req.decided_at - ChronoDuration::hours(5),
            last_price: req.close,
        }],
        hourly: req.hourly,
    }
}

/// The prompt line of one candle, as the reviewers must send it.
pub fn candle_line(c: &Candle) -> String {
    format!(
        "{},{},{},{},{},{}",
        c.open_time.format("%Y-%m-%dT%H:%MZ"),
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume
    )
}

/// Every one of the 24 hourly candles is in `prompt`, oldest first.
pub fn assert_prompt_has_the_24_candles(prompt: &str, req: &ReviewRequest) {
    assert_eq!(req.hourly.len(), 24);
    let mut from = 0;
    for c in &req.hourly {
        let line = candle_line(c);
        let at = prompt[from..]
            .find(&line)
            .unwrap_or_else(|| panic!("candle {line} missing or out of order in:\n{prompt}"));
        from += at + line.len();
    }
    assert!(prompt.contains("RSI(14): 27.50") && prompt.contains("BULL (close is +1.25 %"));
}

/// A header the server received, as a string.
pub fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}
