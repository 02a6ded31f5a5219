//! `coinpilot backtest`: drives the domain [`Engine`] over candle series without a
//! database, with the semantics of SPEC B8, and computes the report's metrics. The engine,
//! strategy, risk and order code are the ones paper and live run (DESIGN invariant 9);
//! this module only feeds candles in time order and keeps the hourly context honest (an
//! hour is visible from its close on, never earlier: no look-ahead).

pub mod chart;
pub mod metrics;
pub mod report;

use chrono::{DateTime, Utc};

use crate::domain::candle::{aggregate_hourly, extend_hourly, Candle, Interval};
use crate::domain::config::StrategyConfig;
use crate::domain::engine::{
    Decision, Engine, EngineError, MarketContext, ReviewMode, Step, Trade,
};
use crate::domain::indicator_table::to_f64;
use crate::domain::money::Krw;
use crate::domain::portfolio::Position;
use crate::domain::strategy::RegimeIndicators;

pub use metrics::Metrics;

/// What a backtest needs.
#[derive(Debug, Clone)]
pub struct BacktestInput {
    /// Closed 1-minute candles, ascending.
    pub minutes: Vec<Candle>,
    /// Given hourly candles (may be empty): extended with hours aggregated from the
    /// minutes where none exist (SPEC B3).
    pub hourly: Vec<Candle>,
    pub config: StrategyConfig,
    pub balance: Krw,
    pub review: ReviewMode,
}

/// Counts of the decisions taken, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecisionCounts {
    pub entry_signals: u32,
    pub entries: u32,
    pub review_rejected: u32,
    pub risk_refused: u32,
    pub buys_refused: u32,
}

/// What came out.
#[derive(Debug, Clone)]
pub struct BacktestOutcome {
    pub trades: Vec<Trade>,
    pub open_position: Option<Position>,
    pub final_balance: Krw,
    pub final_equity: Krw,
    /// Equity at each candle close, with that candle's open time.
    pub equity: Vec<(DateTime<Utc>, Krw)>,
    pub counts: DecisionCounts,
    pub metrics: Metrics,
    pub candles: usize,
    pub first: Option<DateTime<Utc>>,
    pub last: Option<DateTime<Utc>>,
}

/// Error of the backtest layer.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("no 1-minute candles to run on")]
    NoCandles,
}

/// Replays `input.minutes` through one engine; `on_step` sees every step (tests use it to
/// compare decisions).
pub fn run_with(
    input: BacktestInput,
    mut on_step: impl FnMut(&Candle, &Step),
) -> Result<BacktestOutcome, BacktestError> {
    if input.minutes.is_empty() {
        return Err(BacktestError::NoCandles);
    }
    let hourly = extend_hourly(input.hourly, aggregate_hourly(&input.minutes));
    let mut engine = Engine::new(input.config, input.review, input.balance);
    let mut regime = RegimeIndicators::default();
    let mut hours_closed = 0usize;
    let mut trades = Vec::new();
    let mut equity = Vec::with_capacity(input.minutes.len());
    let mut counts = DecisionCounts::default();
    let mut exposed = 0usize;
    for c in &input.minutes {
        let decided_at = c.close_time(Interval::M1);
        // An hour is known from its close on: feed every hour closed by t's close.
        while let Some(h) = hourly.get(hours_closed) {
            if h.close_time(Interval::H1) > decided_at {
                break;
            }
            regime.update(to_f64(h.close));
            hours_closed += 1;
        }
        let ctx = MarketContext {
            regime_distance: regime.distance(),
            closed_hours: &hourly[..hours_closed],
        };
        let step = engine.on_candle(c, &ctx)?;
        on_step(c, &step);
        count(&mut counts, &step);
        exposed += usize::from(step.in_position);
        equity.push((c.open_time, step.equity));
        if let Some(t) = step.sold {
            trades.push(t);
        }
    }
    let metrics = metrics::compute(input.balance, &equity, exposed);
    Ok(BacktestOutcome {
        final_balance: engine.balance(),
        final_equity: equity.last().map(|e| e.1).unwrap_or(input.balance),
        open_position: engine.position().cloned(),
        candles: input.minutes.len(),
        first: input.minutes.first().map(|c| c.open_time),
        last: input.minutes.last().map(|c| c.open_time),
        trades,
        equity,
        counts,
        metrics,
    })
}

/// [`run_with`] without a step observer.
pub fn run(input: BacktestInput) -> Result<BacktestOutcome, BacktestError> {
    run_with(input, |_, _| {})
}

fn count(counts: &mut DecisionCounts, step: &Step) {
    match &step.decision {
        Decision::Entry { .. } => {
            counts.entry_signals += 1;
            counts.entries += 1;
        }
        Decision::ReviewRejected { .. } => {
            counts.entry_signals += 1;
            counts.review_rejected += 1;
        }
        Decision::RiskRefused { .. } => {
            counts.entry_signals += 1;
            counts.risk_refused += 1;
        }
        Decision::None | Decision::Exit { .. } => {}
    }
    counts.buys_refused += u32::from(step.buy_refused.is_some());
}

#[cfg(test)]
mod tests;
