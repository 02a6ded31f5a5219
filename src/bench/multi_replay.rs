//! A replay [`MarketSource`] that serves one file's candles under several market names,
//! so `coinpilot bench trade-cycle` can run M markets' trade cycles on real candles (the
//! bot's own `Replay` serves exactly one market and refuses the others).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use crate::domain::candle::{Candle, Interval, Market};
use crate::market::replay::ReplaySource;
use crate::market::source::{MarketSource, Quote, Replay};
use crate::market::MarketError;

/// The same candles for every market of `markets`; any other market is refused, as the
/// one-market replay refuses it.
#[derive(Debug, Clone)]
pub struct MultiReplay {
    markets: HashSet<Market>,
    replay: Replay,
}

impl MultiReplay {
    pub fn new(markets: &[Market], minutes: ReplaySource) -> Result<MultiReplay, MarketError> {
        let first = markets.first().cloned().ok_or_else(|| {
            MarketError::NotAvailable("a replay needs at least one market".into())
        })?;
        Ok(MultiReplay {
            markets: markets.iter().cloned().collect(),
            replay: Replay {
                market: first,
                minutes,
            },
        })
    }

    fn check(&self, market: &Market) -> Result<(), MarketError> {
        if self.markets.contains(market) {
            Ok(())
        } else {
            Err(MarketError::NotAvailable(format!(
                "the benchmark replay serves {} markets, not {market}",
                self.markets.len()
            )))
        }
    }
}

impl MarketSource for MultiReplay {
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
            let own = &self.replay.market;
            self.replay.candles(own, interval, from, to, now).await
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
            let own = &self.replay.market;
            self.replay.price_after(own, decided_at, now).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "timestamp,open,high,low,close,volume\n\
        1756684800000,100,101,99,100,2\n\
        1756684860000,101,102,100,101,1\n";

    fn block<T>(f: BoxFuture<'_, T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn every_named_market_gets_the_same_candles_and_others_are_refused() {
        let names: Vec<Market> = ["KRW-BTC", "KRW-X001"]
            .iter()
            .map(|m| m.parse().unwrap())
            .collect();
        let src = ReplaySource::from_text("t.csv", CSV, Interval::M1).unwrap();
        let r = MultiReplay::new(&names, src).unwrap();
        let from = DateTime::from_timestamp(1_756_684_800, 0).unwrap();
        let now = from + chrono::Duration::minutes(2);
        let a = block(r.candles(&names[0], Interval::M1, from, now, now)).unwrap();
        let b = block(r.candles(&names[1], Interval::M1, from, now, now)).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a, b);
        let q = block(r.price_after(&names[1], from, now)).unwrap();
        assert_eq!(q.price.value(), 100.into());
        let other: Market = "KRW-ETH".parse().unwrap();
        let e = block(r.candles(&other, Interval::M1, from, now, now)).unwrap_err();
        assert!(e.to_string().contains("KRW-ETH"), "{e}");
        assert!(MultiReplay::new(&[], ReplaySource::empty(Interval::M1)).is_err());
    }
}
