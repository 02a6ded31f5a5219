//! The market-source trait (SPEC B1): what the collector, the backfill and the executor ask
//! of a market — closed candles of a range, and the reference price of an order — with the
//! replay implementation here and the Upbit one in `upbit.rs`.
//!
//! A source only fetches: it neither screens nor stores. Malformed candles come back as
//! the exchange sent them, so the caller can report them and keep the rest of the page.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use super::replay::ReplaySource;
use super::MarketError;
use crate::domain::candle::{Candle, Interval, Market};
use crate::domain::money::Price;

/// A source of candles and prices for one or more markets.
pub trait MarketSource: Send + Sync + std::fmt::Debug {
    /// `"replay"` or `"upbit"`: the label reports and logs show.
    fn name(&self) -> &'static str;

    /// Closed candles of `market` with open time in `[from, to)`, ascending, only those
    /// complete by `now`. The source pages internally (Upbit: count=200, `to`, newest
    /// first → reversed). Malformed rows are returned as they are; the caller screens
    /// them with `domain::candle::screen_page` (keeping the rest of the page).
    fn candles<'a>(
        &'a self,
        market: &'a Market,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Candle>, MarketError>>;

    /// The reference price for an order decided at `decided_at`, executed at `now`:
    /// replay = the open of the first candle with open_time >= decided_at that has opened
    /// by `now` (error NotAvailable if none yet); upbit = GET /v1/ticker trade_price.
    fn price_after<'a>(
        &'a self,
        market: &'a Market,
        decided_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Price, MarketError>>;
}

/// The shipped 1m sample (data/SOURCES.md): the replay default, relative to the working
/// directory.
pub const DEFAULT_CANDLES: &str = "data/upbit_KRW-BTC_1m_2025-09-20_2025-09-23.csv";

/// The source `market.source` names: replay of `market`'s `interval` candles from the CSV
/// `candles`, or the Upbit REST API at `upbit_base_url`.
pub fn configured_source(
    kind: crate::config::MarketSource,
    market: &Market,
    interval: Interval,
    candles: &Path,
    upbit_base_url: &str,
) -> Result<Arc<dyn MarketSource>, MarketError> {
    use crate::config::MarketSource as Kind;
    Ok(match kind {
        Kind::Replay => {
            let src = ReplaySource::from_file(candles, interval)?;
            Arc::new(Replay::new(market.clone(), src))
        }
        Kind::Upbit => {
            let cfg = super::upbit::UpbitConfig::with_base_url(upbit_base_url);
            Arc::new(super::upbit::UpbitSource::new(cfg)?)
        }
    })
}

/// The replay source of one market's candles (usually 1m) as a [`MarketSource`].
#[derive(Debug, Clone)]
pub struct Replay {
    market: Market,
    source: ReplaySource,
}

impl Replay {
    pub fn new(market: Market, source: ReplaySource) -> Self {
        Replay { market, source }
    }

    pub fn market(&self) -> &Market {
        &self.market
    }

    /// Refuses a market or interval this replay does not hold: asking the BTC file for ETH
    /// must not silently answer with BTC candles.
    fn check(&self, market: &Market, interval: Interval) -> Result<(), MarketError> {
        if market != &self.market {
            return Err(MarketError::NotAvailable(format!(
                "the replay source holds {}, not {market}",
                self.market
            )));
        }
        if interval != self.source.interval() {
            return Err(MarketError::NotAvailable(format!(
                "the replay source holds {} candles, not {interval}",
                self.source.interval()
            )));
        }
        Ok(())
    }

    fn candles_now(
        &self,
        market: &Market,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Candle>, MarketError> {
        self.check(market, interval)?;
        Ok(self
            .source
            .range(from, to)
            .iter()
            .take_while(|c| c.close_time(interval) <= now)
            .cloned()
            .collect())
    }

    fn price_now(
        &self,
        market: &Market,
        decided_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Price, MarketError> {
        self.check(market, self.source.interval())?;
        let next = self
            .source
            .range(decided_at, now + chrono::Duration::nanoseconds(1))
            .first()
            .ok_or_else(|| {
                MarketError::NotAvailable(format!(
                    "no {market} candle opened between {decided_at} and {now}"
                ))
            })?;
        Price::new(next.open).map_err(|e| {
            MarketError::Payload(format!("open of the candle at {}: {e}", next.open_time))
        })
    }
}

impl MarketSource for Replay {
    fn name(&self) -> &'static str {
        "replay"
    }

    fn candles<'a>(
        &'a self,
        market: &'a Market,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Candle>, MarketError>> {
        let out = self.candles_now(market, interval, from, to, now);
        Box::pin(async move { out })
    }

    fn price_after<'a>(
        &'a self,
        market: &'a Market,
        decided_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Price, MarketError>> {
        let out = self.price_now(market, decided_at, now);
        Box::pin(async move { out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    const CSV: &str = "timestamp,open,high,low,close,volume\n\
        1756684800000,100,101,99,100,2\n\
        1756684860000,101,102,100,101,1\n\
        1756684920000,102,103,101,102,3\n";

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn replay() -> Replay {
        let src = ReplaySource::from_text("t.csv", CSV, Interval::M1).unwrap();
        Replay::new("KRW-BTC".parse().unwrap(), src)
    }

    fn block<T>(f: BoxFuture<'_, T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn replay_candles_are_the_range_closed_by_now() {
        let r = replay();
        let m = r.market().clone();
        let (from, to) = (t("2025-09-01T00:00:00Z"), t("2025-09-01T01:00:00Z"));
        let got = block(r.candles(&m, Interval::M1, from, to, t("2025-09-01T00:02:30Z"))).unwrap();
        assert_eq!(
            got.len(),
            2,
            "the third minute is still forming at 00:02:30"
        );
        let got = block(r.candles(&m, Interval::M1, from, to, t("2025-09-01T00:03:00Z"))).unwrap();
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn replay_price_is_the_next_open_once_it_has_opened() {
        let r = replay();
        let m = r.market().clone();
        let decided = t("2025-09-01T00:01:00Z");
        let p = block(r.price_after(&m, decided, t("2025-09-01T00:01:05Z"))).unwrap();
        assert_eq!(p.value(), Decimal::from(101));
        let decided = t("2025-09-01T00:01:00.5Z");
        let e = block(r.price_after(&m, decided, t("2025-09-01T00:01:30Z"))).unwrap_err();
        assert!(matches!(e, MarketError::NotAvailable(_)), "{e}");
        let p = block(r.price_after(&m, decided, t("2025-09-01T00:02:00Z"))).unwrap();
        assert_eq!(p.value(), Decimal::from(102));
    }

    #[test]
    fn replay_refuses_another_market_or_interval() {
        let r = replay();
        let eth: Market = "KRW-ETH".parse().unwrap();
        let now = t("2025-09-02T00:00:00Z");
        let e = block(r.candles(&eth, Interval::M1, now, now, now)).unwrap_err();
        assert!(e.to_string().contains("KRW-ETH"), "{e}");
        let m = r.market().clone();
        let e = block(r.candles(&m, Interval::H1, now, now, now)).unwrap_err();
        assert!(e.to_string().contains("1h"), "{e}");
    }
}
