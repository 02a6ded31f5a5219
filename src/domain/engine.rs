//! The per-candle trading engine for one market: the step that backtest, paper and live
//! all run on each **closed** 1-minute candle, so they share the strategy, risk and order
//! code to the last rounding (DESIGN invariant 9, SPEC B8). Pure: the caller feeds candles
//! and the hourly context in time order and stores what comes out.
//!
//! Order within [`Engine::on_candle`] for candle t:
//! 1. at the first candle of a new Asia/Seoul day, the daily risk reset (equity = balance +
//!    position at the previous close);
//! 2. the order decided at t−1 fills at t's open ± slippage (at t's open time);
//! 3. the indicators take t's close; equity is marked at t's close;
//! 4. the decision at t's close: exits first, and only without a position an entry
//!    (signal → risk check → review → buy at t+1's open).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::candle::{Candle, Interval};
use super::config::StrategyConfig;
use super::indicator_table::to_f64;
use super::money::{Krw, MoneyError, Price, Qty};
use super::portfolio::{close_position, size_buy, BuyFill, ClosedTrade, OrderRefusal, Position};
use super::review::{review_entry, Review};
use super::risk::RiskState;
use super::strategy::{
    classify_regime, evaluate_entry, evaluate_exit, EntrySignal, ExitReason, Regime,
    SignalIndicators, Snapshot,
};

/// Who reviews entry signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewMode {
    /// The deterministic `rules` reviewer (SPEC B4), the backtest default.
    Rules,
    /// Every entry signal is confirmed (`--no-review`).
    Off,
}

/// What the caller knows about the hourly market at t's close.
#[derive(Debug, Clone, Copy)]
pub struct MarketContext<'a> {
    /// d of the last hour that closed at or before t's close; `None` before 200 hours.
    pub regime_distance: Option<f64>,
    /// The hourly candles closed at or before t's close, ascending (the reviewer's input).
    pub closed_hours: &'a [Candle],
}

/// An order decided at a close, filled at the next candle's open.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    Buy { notional: Krw },
    Sell { reason: ExitReason },
}

/// The decision taken at t's close.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decision {
    /// Nothing to do (no signal, or an input still undefined).
    None,
    Exit {
        reason: ExitReason,
    },
    Entry {
        review: Option<Review>,
    },
    RiskRefused {
        refusal: String,
    },
    ReviewRejected {
        review: Review,
    },
}

/// A round trip with the rule that closed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trade {
    #[serde(flatten)]
    pub trade: ClosedTrade,
    pub reason: ExitReason,
}

/// Everything one candle did.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub day_reset: bool,
    pub bought: Option<BuyFill>,
    pub buy_refused: Option<OrderRefusal>,
    pub sold: Option<Trade>,
    pub snapshot: Snapshot,
    pub regime: Option<Regime>,
    pub decision: Decision,
    /// Balance + position at t's close.
    pub equity: Krw,
    /// A position was held during t (after t's open fill).
    pub in_position: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("candle at {0}: {1}")]
    Money(DateTime<Utc>, MoneyError),
}

/// One market's trading state and the account it trades from.
#[derive(Debug, Clone)]
pub struct Engine {
    cfg: StrategyConfig,
    review: ReviewMode,
    interval: Interval,
    indicators: SignalIndicators,
    balance: Krw,
    position: Option<Position>,
    risk: Option<RiskState>,
    pending: Option<Pending>,
    last_close: Option<Price>,
}

impl Engine {
    pub fn new(cfg: StrategyConfig, review: ReviewMode, balance: Krw) -> Self {
        Engine {
            cfg,
            review,
            interval: Interval::M1,
            indicators: SignalIndicators::default(),
            balance,
            position: None,
            risk: None,
            pending: None,
            last_close: None,
        }
    }

    pub fn balance(&self) -> Krw {
        self.balance
    }

    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    pub fn risk(&self) -> Option<&RiskState> {
        self.risk.as_ref()
    }

    /// Balance plus the position valued at `price`.
    pub fn equity_at(&self, price: Option<Price>) -> Krw {
        match (&self.position, price) {
            (Some(p), Some(px)) => self.balance + p.qty * px,
            (Some(p), None) => self.balance + p.cost,
            (None, _) => self.balance,
        }
    }

    /// Runs steps 1–4 (module doc) for the closed candle `c`.
    pub fn on_candle(&mut self, c: &Candle, ctx: &MarketContext<'_>) -> Result<Step, EngineError> {
        let money = |e| EngineError::Money(c.open_time, e);
        let open = Price::new(c.open).map_err(money)?;
        let close = Price::new(c.close).map_err(money)?;
        let day_reset = self.roll_day(c.open_time);
        let (mut bought, mut buy_refused, mut sold) = (None, None, None);
        match self.pending.take() {
            Some(Pending::Buy { notional }) => match self.fill_buy(notional, open, c.open_time) {
                Ok(fill) => bought = Some(fill),
                Err(FillError::Money(e)) => return Err(money(e)),
                Err(FillError::Refused(r)) => buy_refused = Some(r),
            },
            Some(Pending::Sell { reason }) => {
                sold = self.fill_sell(reason, open, c.open_time).map_err(money)?;
            }
            None => {}
        }
        let in_position = self.position.is_some();
        let snapshot = self.indicators.update(to_f64(c.close), to_f64(c.volume));
        self.last_close = Some(close);
        let regime = ctx
            .regime_distance
            .map(|d| classify_regime(d, &self.cfg.regime));
        let decision = self.decide(c, &snapshot, regime, ctx);
        Ok(Step {
            day_reset,
            bought,
            buy_refused,
            sold,
            snapshot,
            regime,
            decision,
            equity: self.equity_at(Some(close)),
            in_position,
        })
    }

    fn roll_day(&mut self, at: DateTime<Utc>) -> bool {
        if self.risk.as_ref().is_some_and(|r| !r.is_new_day(at)) {
            return false;
        }
        let equity = self.equity_at(self.last_close);
        match &mut self.risk {
            Some(r) => r.roll_day(at, equity),
            None => {
                self.risk = Some(RiskState::new(at, equity));
                false
            }
        }
    }

    fn fill_buy(
        &mut self,
        notional: Krw,
        open: Price,
        at: DateTime<Utc>,
    ) -> Result<BuyFill, FillError> {
        let orders = &self.cfg.orders;
        let fill = orders.buy_fill(open).map_err(FillError::Money)?;
        let b = size_buy(notional, fill, self.balance, orders).map_err(FillError::Refused)?;
        self.balance -= b.cost;
        self.position = Some(Position {
            qty: b.qty,
            entry_price: b.price,
            entry_time: at,
            entry_fee: b.fee,
            cost: b.cost,
        });
        if let Some(r) = &mut self.risk {
            r.record_entry_fill();
        }
        Ok(b)
    }

    fn fill_sell(
        &mut self,
        reason: ExitReason,
        open: Price,
        at: DateTime<Utc>,
    ) -> Result<Option<Trade>, MoneyError> {
        let Some(pos) = self.position.take() else {
            return Ok(None);
        };
        let fill = self.cfg.orders.sell_fill(open)?;
        let trade = close_position(&pos, fill, at, &self.cfg.orders);
        self.balance += trade.proceeds;
        if let Some(r) = &mut self.risk {
            r.record_trade(trade.pnl, at, &self.cfg.risk);
        }
        Ok(Some(Trade { trade, reason }))
    }

    fn decide(
        &mut self,
        c: &Candle,
        s: &Snapshot,
        regime: Option<Regime>,
        ctx: &MarketContext<'_>,
    ) -> Decision {
        let now = c.close_time(self.interval);
        if let Some(pos) = &self.position {
            let exit = evaluate_exit(
                pos.entry_price.value(),
                pos.entry_time,
                c.close,
                s.rsi14,
                now,
                &self.cfg.exit,
            );
            return match exit {
                Some(reason) => {
                    self.pending = Some(Pending::Sell { reason });
                    Decision::Exit { reason }
                }
                None => Decision::None,
            };
        }
        if evaluate_entry(s, regime, &self.cfg.entry) != EntrySignal::Entry {
            return Decision::None;
        }
        if let Some(Err(refusal)) = self
            .risk
            .as_ref()
            .map(|r| r.check_entry(now, false, &self.cfg.risk))
        {
            return Decision::RiskRefused {
                refusal: refusal.to_string(),
            };
        }
        let review = match self.review {
            ReviewMode::Off => None,
            ReviewMode::Rules => Some(review_entry(ctx.closed_hours, &self.cfg.review)),
        };
        if let Some(r) = review.as_ref().filter(|r| !r.confirmed) {
            return Decision::ReviewRejected { review: r.clone() };
        }
        self.pending = Some(Pending::Buy {
            notional: self.cfg.orders.notional(self.balance),
        });
        Decision::Entry { review }
    }

    /// Halts or resumes entries (the kill switch); exits continue either way.
    pub fn set_halted(&mut self, halted: bool) {
        if let Some(r) = &mut self.risk {
            r.halted = halted;
        }
    }

    /// The open position's quantity, zero without one.
    pub fn position_qty(&self) -> Qty {
        self.position.as_ref().map(|p| p.qty).unwrap_or(Qty::ZERO)
    }

    /// Starts from an open position, as paper/live do after loading state from the
    /// database (and tests that need one without crafting an entry signal).
    pub fn resume_with_position(&mut self, position: Position) {
        self.position = Some(position);
    }
}

enum FillError {
    Money(MoneyError),
    Refused(OrderRefusal),
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
