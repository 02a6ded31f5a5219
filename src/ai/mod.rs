//! The AI reviewer (SPEC B4) behind one trait, [`Reviewer`]: it turns an entry signal into
//! a CONFIRM/REJECT decision with a confidence and reasoning, and the hourly market state
//! into a short note. Three providers: the offline, deterministic [`rules`] reviewer (the
//! default, labelled as such in every decision it makes), the Anthropic Messages API
//! ([`anthropic`]) and any OpenAI-compatible chat completions endpoint ([`openai`]).
//!
//! This module owns the provider calls and the interpretation of their answers, nothing
//! else: it does not touch the database, never trades and never retries a failed HTTP call
//! itself — it classifies the failure ([`AiError`]) and the job queue retries
//! ([`AiError::into_job_error`]). The one retry it does make is the SPEC's "malformed model
//! output is retried once": a reply the model got wrong is asked for again, and a second
//! bad reply becomes a REJECT with the error recorded.
//!
//! Options (`[ai]` in the config file, see `config`): `provider` — `rules` (default) |
//! `anthropic` | `openai`; `model` — [`anthropic::DEFAULT_MODEL`] / [`openai::DEFAULT_MODEL`];
//! `base_url` — `https://api.anthropic.com` / `https://api.openai.com/v1`. Keys come only
//! from the environment: `ANTHROPIC_API_KEY` / `OPENAI_API_KEY`, or `COINPILOT_AI_API_KEY`
//! for either. Calls time out after [`DEFAULT_TIMEOUT`] (SPEC B4: 40 s).

pub mod anthropic;
mod http;
pub mod llm;
pub mod openai;
mod parse;
pub mod price;
mod prompt;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::config::{AiConfig, AiProvider, Secrets};
use crate::domain::candle::Candle;
use crate::domain::review::{ReviewConfig, Verdict};
use crate::domain::strategy::{Regime, Snapshot};
use crate::queue::handler::JobError;

pub use anthropic::AnthropicReviewer;
pub use llm::{HttpReviewer, HttpSettings};
pub use openai::OpenAiReviewer;
pub use parse::{parse_anthropic_note, parse_anthropic_review, parse_openai_note};
pub use parse::{parse_openai_review, Reply};
pub use rules::RulesReviewer;

/// SPEC B4: a provider call that has not answered after this long is abandoned.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(40);

/// An entry signal to review.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewRequest {
    pub market: String,
    /// The decision time (close of candle t).
    pub decided_at: DateTime<Utc>,
    /// Candle t's close.
    pub close: Decimal,
    pub snapshot: Snapshot,
    pub regime: Option<Regime>,
    pub regime_distance: Option<f64>,
    /// The last 24 closed hourly candles, ascending.
    pub hourly: Vec<Candle>,
}

/// One open position as the market note shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionSummary {
    pub market: String,
    pub quantity: Decimal,
    pub entry_price: Decimal,
    pub entry_time: DateTime<Utc>,
    pub last_price: Decimal,
}

/// The hourly market review's input: regime, the last 24 hourly candles, open positions.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketNoteRequest {
    pub market: String,
    pub at: DateTime<Utc>,
    pub regime: Option<Regime>,
    pub regime_distance: Option<f64>,
    pub hourly: Vec<Candle>,
    pub positions: Vec<PositionSummary>,
}

/// One review, as saved in `ai_decisions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiDecision {
    /// "rules" | "anthropic" | "openai".
    pub provider: String,
    /// The model that answered (the provider's own name for it when it says), "rules-v1".
    pub model: String,
    pub verdict: Verdict,
    /// 0..=100; a model answer outside the range is malformed.
    pub confidence: u8,
    pub reasoning: String,
    /// verdict == CONFIRM and confidence ≥ `review.min_confidence` (60).
    pub confirmed: bool,
    /// Wall time of the whole review, both attempts when the first was malformed.
    pub latency_ms: i64,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    /// From [`price`]; `None` for a model without a known price; 0 for `rules`.
    pub cost_usd: Option<Decimal>,
    /// Set when the model's output was malformed twice: the decision is then REJECT, 0.
    pub error: Option<String>,
}

/// The hourly market note. Never a trade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketNote {
    pub provider: String,
    pub model: String,
    pub note: String,
    pub latency_ms: i64,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_usd: Option<Decimal>,
    /// Set when the model's note was unusable twice; `note` then says so.
    #[serde(default)]
    pub error: Option<String>,
}

/// Why a provider call failed. Messages never carry the API key.
#[derive(Debug, thiserror::Error)]
pub enum AiError {
    /// HTTP 429: wait `retry_after` (the server's `retry-after`) before the next attempt.
    #[error("AI provider rate limit (429){}", after_note(retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// HTTP 529 (Anthropic `overloaded_error`) or another 5xx: back off and retry.
    #[error("AI provider overloaded or failing (HTTP {status})")]
    Overloaded { status: u16 },
    /// Never retried: spend/credit limit, 401/403, an invalid request.
    #[error("AI provider refused the request: {0}")]
    Permanent(String),
    #[error("AI provider did not answer in time")]
    Timeout,
    #[error("AI provider unreachable: {0}")]
    Transport(String),
    /// Missing key, bad base_url, unknown provider setting.
    #[error("AI reviewer configuration: {0}")]
    Config(String),
}

fn after_note(retry_after: &Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |d| {
        format!(", retry after {} s", d.as_secs_f64())
    })
}

impl AiError {
    /// How the job queue treats the failure: 429 waits the server's `retry-after`,
    /// overload/timeout/transport back off as usual, the rest fail the job for good.
    pub fn into_job_error(self) -> JobError {
        let message = self.to_string();
        match self {
            AiError::RateLimited {
                retry_after: Some(after),
            } => JobError::retry_after(message, after),
            AiError::RateLimited { retry_after: None }
            | AiError::Overloaded { .. }
            | AiError::Timeout
            | AiError::Transport(_) => JobError::retry(message),
            AiError::Permanent(_) | AiError::Config(_) => JobError::permanent(message),
        }
    }
}

/// An AI reviewer. Implementations are cheap to share (`Arc<dyn Reviewer>`).
pub trait Reviewer: Send + Sync + std::fmt::Debug {
    fn provider(&self) -> &'static str;
    fn model(&self) -> &str;
    /// Reviews an entry signal. Malformed model output is retried once inside, then
    /// returned as Ok(REJECT, confidence 0, error = Some(..)).
    fn review<'a>(&'a self, req: &'a ReviewRequest) -> BoxFuture<'a, Result<AiDecision, AiError>>;
    /// The hourly market review: open positions and regime → a short note. Never trades.
    fn market_note<'a>(
        &'a self,
        req: &'a MarketNoteRequest,
    ) -> BoxFuture<'a, Result<MarketNote, AiError>>;
}

/// The environment variable either HTTP provider falls back to for its key.
pub const GENERIC_KEY_VAR: &str = "COINPILOT_AI_API_KEY";

/// Builds the configured reviewer. `review` carries `min_confidence` for every provider
/// and the rule parameters for `rules`.
pub fn from_config(
    cfg: &AiConfig,
    secrets: &Secrets,
    review: ReviewConfig,
) -> Result<Arc<dyn Reviewer>, AiError> {
    let key = |var: &str| {
        secrets
            .get(var)
            .or_else(|| secrets.get(GENERIC_KEY_VAR))
            .map(str::to_string)
    };
    let model = |default: &str| cfg.model.clone().unwrap_or_else(|| default.to_string());
    Ok(match cfg.provider {
        AiProvider::Rules => Arc::new(RulesReviewer::new(review)),
        AiProvider::Anthropic => Arc::new(AnthropicReviewer::new(HttpSettings {
            base_url: cfg
                .base_url
                .clone()
                .unwrap_or_else(|| anthropic::DEFAULT_BASE_URL.into()),
            api_key: Some(
                key("ANTHROPIC_API_KEY")
                    .ok_or_else(|| missing_key("anthropic", "ANTHROPIC_API_KEY"))?,
            ),
            model: model(anthropic::DEFAULT_MODEL),
            timeout: DEFAULT_TIMEOUT,
            min_confidence: review.min_confidence,
        })?),
        AiProvider::Openai => {
            let base_url = cfg
                .base_url
                .clone()
                .unwrap_or_else(|| openai::DEFAULT_BASE_URL.into());
            let api_key = key("OPENAI_API_KEY");
            // A local OpenAI-compatible server (Ollama, llama.cpp) may need no key.
            if api_key.is_none() && base_url == openai::DEFAULT_BASE_URL {
                return Err(missing_key("openai", "OPENAI_API_KEY"));
            }
            Arc::new(OpenAiReviewer::new(HttpSettings {
                base_url,
                api_key,
                model: model(openai::DEFAULT_MODEL),
                timeout: DEFAULT_TIMEOUT,
                min_confidence: review.min_confidence,
            })?)
        }
    })
}

fn missing_key(provider: &str, var: &str) -> AiError {
    AiError::Config(format!(
        "ai.provider `{provider}` needs {var} (or {GENERIC_KEY_VAR}) in the environment"
    ))
}

/// What the model said in one reply, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelVerdict {
    pub verdict: Verdict,
    pub confidence: u8,
    pub reasoning: String,
}

#[cfg(test)]
mod tests;
