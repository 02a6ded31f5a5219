//! Where candles and prices come from (SPEC B1): the [`MarketSource`] trait and its replay
//! implementation. The collector and the executor see only the trait, so the offline demo,
//! the tests and live trading run the same handlers.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use super::replay::ReplaySource;
use super::MarketError;
use crate::domain::candle::{Candle, Interval, Market};
use crate::domain::money::Price;

/// A price and when it was quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub price: Price,
    pub at: DateTime<Utc>,
}

pub trait MarketSource: Send + Sync + std::fmt::Debug {
    /// "replay" | "upbit".
    fn name(&self) -> &'static str;

    /// Closed candles of `market` with open time in `[from, to)`, ascending, only those
    /// complete by `now`. Malformed rows are returned as they are: the caller screens them
    /// (`domain::candle::screen_page`) and keeps the rest of the page.
    fn candles<'a>(
        &'a self,
        market: &'a Market,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Candle>, MarketError>>;

    /// The reference price for an order decided at `decided_at` and executed at `now`: the
    /// first price after the decision (SPEC B6). Replay: the open of the first candle that
    /// opened at or after `decided_at`, quoted at its open time.
    fn price_after<'a>(
        &'a self,
        market: &'a Market,
        decided_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Quote, MarketError>>;
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
        Kind::Replay => Arc::new(Replay {
            market: market.clone(),
            minutes: ReplaySource::from_file(candles, interval)?,
        }),
        Kind::Upbit => {
            let cfg = super::upbit::UpbitConfig::with_base_url(upbit_base_url);
            Arc::new(super::upbit::UpbitSource::new(cfg)?)
        }
    })
}

/// The replay source of one market's 1-minute candles.
#[derive(Debug, Clone)]
pub struct Replay {
    pub market: Market,
    pub minutes: ReplaySource,
}

impl Replay {
    fn check(&self, market: &Market) -> Result<(), MarketError> {
        if *market == self.market {
            Ok(())
        } else {
            Err(MarketError::NotAvailable(format!(
                "the replay source serves {}, not {market}",
                self.market
            )))
        }
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
        Box::pin(async move {
            self.check(market)?;
            if interval != self.minutes.interval() {
                return Err(MarketError::NotAvailable(format!(
                    "the replay source serves {} candles, not {interval}",
                    self.minutes.interval()
                )));
            }
            let done = self.minutes.completed_by(now);
            let lo = done.partition_point(|c| c.open_time < from);
            let hi = done.partition_point(|c| c.open_time < to);
            Ok(done.get(lo..hi.max(lo)).unwrap_or(&[]).to_vec())
        })
    }

    fn price_after<'a>(
        &'a self,
        market: &'a Market,
        decided_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Quote, MarketError>> {
        Box::pin(async move {
            self.check(market)?;
            let next = self
                .minutes
                .range(decided_at, now + chrono::Duration::nanoseconds(1))
                .first()
                .ok_or_else(|| {
                    MarketError::NotAvailable(format!(
                        "no {market} trade between {decided_at} and {now} in the replay"
                    ))
                })?;
            let price = Price::new(next.open)
                .map_err(|e| MarketError::Payload(format!("replay candle open: {e}")))?;
            Ok(Quote {
                price,
                at: next.open_time,
            })
        })
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
        Replay {
            market: "KRW-BTC".parse().unwrap(),
            minutes: ReplaySource::from_text("t.csv", CSV, Interval::M1).unwrap(),
        }
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
        let m = r.market.clone();
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
        let m = r.market.clone();
        let decided = t("2025-09-01T00:01:00Z");
        let q = block(r.price_after(&m, decided, t("2025-09-01T00:01:05Z"))).unwrap();
        assert_eq!((q.price.value(), q.at), (Decimal::from(101), decided));
        let decided = t("2025-09-01T00:01:00.5Z");
        let e = block(r.price_after(&m, decided, t("2025-09-01T00:01:30Z"))).unwrap_err();
        assert!(matches!(e, MarketError::NotAvailable(_)), "{e}");
        let q = block(r.price_after(&m, decided, t("2025-09-01T00:02:00Z"))).unwrap();
        assert_eq!(q.price.value(), Decimal::from(102));
    }

    #[test]
    fn replay_refuses_another_market_or_interval() {
        let r = replay();
        let eth: Market = "KRW-ETH".parse().unwrap();
        let now = t("2025-09-02T00:00:00Z");
        let e = block(r.candles(&eth, Interval::M1, now, now, now)).unwrap_err();
        assert!(e.to_string().contains("KRW-ETH"), "{e}");
        let m = r.market.clone();
        let e = block(r.candles(&m, Interval::H1, now, now, now)).unwrap_err();
        assert!(e.to_string().contains("1h"), "{e}");
    }
}
