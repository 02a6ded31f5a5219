//! The offline `rules` reviewer (SPEC B4), the default: the pure
//! [`crate::domain::review::review_entry`] rule over the last 24 hourly
//! candles, wrapped as a [`Reviewer`]. No network, no model, no cost; deterministic, so a
//! backtest and the live bot decide alike. Every decision and note it makes says it came
//! from the offline rules reviewer, so no report can pass it off as an AI opinion.

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rust_decimal::Decimal;

use super::prompt::{position_line, regime_line};
use super::{AiDecision, AiError, MarketNote, MarketNoteRequest, ReviewRequest, Reviewer};
use crate::domain::candle::Candle;
use crate::domain::review::{review_entry, ReviewConfig, PROVIDER, WINDOW_HOURS};

/// The rule set's version: bump it when the rule changes, so old decisions stay readable.
pub const MODEL: &str = "rules-v1";
/// What every rules decision and note starts with.
pub const LABEL: &str = "[offline rules reviewer, no AI model]";

#[derive(Debug, Clone)]
pub struct RulesReviewer {
    cfg: ReviewConfig,
}

impl RulesReviewer {
    pub fn new(cfg: ReviewConfig) -> Self {
        RulesReviewer { cfg }
    }

    pub fn decide(&self, req: &ReviewRequest) -> AiDecision {
        let review = review_entry(&req.hourly, &self.cfg);
        AiDecision {
            provider: PROVIDER.to_string(),
            model: MODEL.to_string(),
            verdict: review.verdict,
            confidence: review.confidence,
            reasoning: format!("{LABEL} {}", review.reasoning),
            confirmed: review.confirmed,
            // No call is made: the rule runs in microseconds and is free.
            latency_ms: 0,
            input_tokens: None,
            output_tokens: None,
            cost_usd: Some(Decimal::ZERO),
            error: None,
        }
    }

    pub fn note(&self, req: &MarketNoteRequest) -> MarketNote {
        let ret = day_return_percent(&req.hourly).map_or_else(
            || "n/a (no hourly candles)".to_string(),
            |r| format!("{r:+.2} %"),
        );
        let positions = if req.positions.is_empty() {
            "open positions: none".to_string()
        } else {
            let lines: Vec<String> = req.positions.iter().map(position_line).collect();
            format!("open positions:\n{}", lines.join("\n"))
        };
        MarketNote {
            provider: PROVIDER.to_string(),
            model: MODEL.to_string(),
            note: format!(
                "{LABEL} {market} at {at}: regime {regime}; \
                 {WINDOW_HOURS} h return {ret}; {positions}",
                market = req.market,
                at = req.at.to_rfc3339(),
                regime = regime_line(req.regime, req.regime_distance),
            ),
            latency_ms: 0,
            input_tokens: None,
            output_tokens: None,
            cost_usd: Some(Decimal::ZERO),
            error: None,
        }
    }
}

/// The return over the last [`WINDOW_HOURS`] candles, first open → last close, in percent
/// (the same window the rule reads).
fn day_return_percent(hourly: &[Candle]) -> Option<Decimal> {
    let window = &hourly[hourly.len().saturating_sub(WINDOW_HOURS)..];
    let (first, last) = (window.first()?, window.last()?);
    if first.open.is_zero() {
        return None;
    }
    Some(((last.close / first.open - Decimal::ONE) * Decimal::ONE_HUNDRED).round_dp(2))
}

impl Reviewer for RulesReviewer {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn model(&self) -> &str {
        MODEL
    }

    fn review<'a>(&'a self, req: &'a ReviewRequest) -> BoxFuture<'a, Result<AiDecision, AiError>> {
        let decision = self.decide(req);
        async move { Ok(decision) }.boxed()
    }

    fn market_note<'a>(
        &'a self,
        req: &'a MarketNoteRequest,
    ) -> BoxFuture<'a, Result<MarketNote, AiError>> {
        let note = self.note(req);
        async move { Ok(note) }.boxed()
    }
}
