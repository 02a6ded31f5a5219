//! Where candles and prices come from (SPEC B1): the [`MarketSource`] trait and its replay
//! implementation. The collector and the executor see only the trait, so the offline demo,
//! the tests and live trading run the same handlers.

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
