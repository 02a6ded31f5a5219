//! The Upbit REST market source (SPEC B1) and the HTTP plumbing every Upbit call shares:
//! `Remaining-Req` throttling, 429 back-off, 418 stop, error bodies as clear errors.
//!
//! Options ([`UpbitConfig`]): `base_url` [https://api.upbit.com] (a local server in tests),
//! `max_429_retries` [3]: 429s absorbed here before [`MarketError::RateLimited`] goes to the
//! caller, `backoff` [500 ms]: the first wait after a 429 without `Retry-After`, doubled
//! each time, `timeout` [10 s] per request.
//!
//! Throttling: when a response says `sec=0` (no request left in this second), the next
//! request through the same [`UpbitHttp`] waits a full second. Upbit counts its window from
//! the first request of the second, so a whole second is the wait that is always enough.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::future::BoxFuture;
use reqwest::{RequestBuilder, StatusCode};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::source::{MarketSource, Quote};
use super::upbit_parse::{parse_candles, parse_error, parse_remaining_req, parse_ticker};
use super::MarketError;
use crate::domain::candle::{Candle, Interval, Market};
use crate::domain::money::Price;

/// Upbit serves at most this many candles per request.
pub const PAGE_SIZE: usize = 200;

/// Options of the Upbit HTTP client (module docs).
#[derive(Debug, Clone)]
pub struct UpbitConfig {
    pub base_url: String,
    pub max_429_retries: u32,
    pub backoff: Duration,
    pub timeout: Duration,
}

impl Default for UpbitConfig {
    fn default() -> Self {
        UpbitConfig {
            base_url: "https://api.upbit.com".into(),
            max_429_retries: 3,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(10),
        }
    }
}

impl UpbitConfig {
    /// The defaults against another base URL (a local server in tests).
    pub fn with_base_url(base_url: impl Into<String>) -> Self {
        UpbitConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            ..UpbitConfig::default()
        }
    }
}

/// An HTTP client for one Upbit request group, with its throttle.
#[derive(Debug)]
pub struct UpbitHttp {
    http: reqwest::Client,
    cfg: UpbitConfig,
    /// No request before this instant (set when a response said `sec=0`).
    not_before: Mutex<Option<Instant>>,
    throttle_waits: AtomicU64,
}

impl UpbitHttp {
    pub fn new(cfg: UpbitConfig) -> Result<Self, MarketError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| MarketError::Transport(format!("cannot build the HTTP client: {e}")))?;
        Ok(UpbitHttp {
            http,
            cfg,
            not_before: Mutex::new(None),
            throttle_waits: AtomicU64::new(0),
        })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.base_url)
    }

    /// How many times a request waited for the next second because of `sec=0`.
    pub fn throttle_waits(&self) -> u64 {
        self.throttle_waits.load(Ordering::Relaxed)
    }

    async fn wait_for_throttle(&self) {
        let mut slot = self.not_before.lock().await;
        if let Some(at) = slot.take() {
            if at > Instant::now() {
                self.throttle_waits.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep_until(at).await;
            }
        }
    }

    async fn note_remaining(&self, resp: &reqwest::Response) {
        let header = resp
            .headers()
            .get("remaining-req")
            .and_then(|v| v.to_str().ok());
        if let Some(r) = header.and_then(parse_remaining_req) {
            if r.sec == 0 {
                *self.not_before.lock().await = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// Sends the request `build` makes (called again for each retry, so a signed request
    /// gets a fresh nonce) and returns the body of a success. 429 is retried with backoff
    /// up to `max_429_retries`, 418 fails at once, any other failure names the status and
    /// the exchange's error.
    pub async fn send(
        &self,
        build: impl Fn() -> Result<RequestBuilder, MarketError>,
    ) -> Result<String, MarketError> {
        let mut attempt = 0u32;
        loop {
            self.wait_for_throttle().await;
            let resp = build()?
                .send()
                .await
                .map_err(|e| MarketError::Transport(e.to_string()))?;
            self.note_remaining(&resp).await;
            let status = resp.status();
            let retry_after = retry_after(&resp);
            let body = resp
                .text()
                .await
                .map_err(|e| MarketError::Transport(format!("reading the body: {e}")))?;
            if status.is_success() {
                return Ok(body);
            }
            let wait = retry_after.unwrap_or(self.cfg.backoff * 2u32.saturating_pow(attempt));
            match status {
                StatusCode::TOO_MANY_REQUESTS if attempt < self.cfg.max_429_retries => {
                    tracing::warn!(attempt, ?wait, "Upbit answered 429; backing off");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    return Err(MarketError::RateLimited { retry_after: wait })
                }
                StatusCode::IM_A_TEAPOT => {
                    return Err(MarketError::Banned {
                        detail: error_detail(&body),
                    })
                }
                other => {
                    return Err(MarketError::Http {
                        status: other.as_u16(),
                        detail: error_detail(&body),
                    })
                }
            }
        }
    }
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get("retry-after")?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The exchange's `name: message`, else the start of the body.
fn error_detail(body: &str) -> String {
    parse_error(body).unwrap_or_else(|| body.chars().take(200).collect())
}

/// The Upbit Quotation API as a [`MarketSource`].
#[derive(Debug)]
pub struct UpbitSource {
    http: UpbitHttp,
}

impl UpbitSource {
    pub fn new(cfg: UpbitConfig) -> Result<Self, MarketError> {
        Ok(UpbitSource {
            http: UpbitHttp::new(cfg)?,
        })
    }

    pub fn http(&self) -> &UpbitHttp {
        &self.http
    }

    /// One page: up to 200 candles with open time before `to`, newest first.
    pub async fn page(
        &self,
        market: &Market,
        interval: Interval,
        to: DateTime<Utc>,
    ) -> Result<Vec<Candle>, MarketError> {
        let url = self
            .http
            .url(&format!("/v1/candles/minutes/{}", interval.minutes()));
        let to = to.to_rfc3339_opts(SecondsFormat::Secs, true);
        let count = PAGE_SIZE.to_string();
        let body = self
            .http
            .send(|| {
                Ok(self.http.client().get(&url).query(&[
                    ("market", market.as_str()),
                    ("count", count.as_str()),
                    ("to", to.as_str()),
                ]))
            })
            .await?;
        parse_candles(&body)
    }

    async fn fetch_range(
        &self,
        market: &Market,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Candle>, MarketError> {
        let end = to.min(now);
        let mut cursor = end;
        let mut out = Vec::new();
        // Each page moves the cursor back by at least one candle; the bound only stops a
        // misbehaving server from keeping us here (a page covers ≥ 200 slots otherwise).
        let slots = (end - from).num_minutes().max(0) / interval.minutes() + 1;
        let max_pages = slots / PAGE_SIZE as i64 + 2;
        for _ in 0..max_pages.max(1) {
            if cursor <= from {
                break;
            }
            let page = self.page(market, interval, cursor).await?;
            let Some(oldest) = page.iter().map(|c| c.open_time).min() else {
                break; // nothing older exists
            };
            out.extend(page.into_iter().filter(|c| {
                c.open_time >= from && c.open_time < to && c.close_time(interval) <= now
            }));
            if oldest >= cursor {
                break; // no progress: the server ignored `to`
            }
            cursor = oldest;
        }
        // Pages come newest first; a stable sort keeps duplicates for the caller's screen.
        out.sort_by_key(|c| c.open_time);
        Ok(out)
    }

    async fn ticker(&self, market: &Market, now: DateTime<Utc>) -> Result<Quote, MarketError> {
        let url = self.http.url("/v1/ticker");
        let body = self
            .http
            .send(|| {
                Ok(self
                    .http
                    .client()
                    .get(&url)
                    .query(&[("markets", market.as_str())]))
            })
            .await?;
        let t = parse_ticker(&body, market.as_str())?;
        let price = Price::new(t.price)
            .map_err(|e| MarketError::Payload(format!("ticker `trade_price`: {e}")))?;
        Ok(Quote {
            price,
            at: t.at.unwrap_or(now),
        })
    }
}

impl MarketSource for UpbitSource {
    fn name(&self) -> &'static str {
        "upbit"
    }

    fn candles<'a>(
        &'a self,
        market: &'a Market,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Candle>, MarketError>> {
        Box::pin(self.fetch_range(market, interval, from, to, now))
    }

    /// Live, the reference price is the latest trade when the order executes (SPEC B6).
    fn price_after<'a>(
        &'a self,
        market: &'a Market,
        _decided_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Quote, MarketError>> {
        Box::pin(self.ticker(market, now))
    }
}
