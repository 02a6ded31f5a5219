//! STAND-IN (replaced by the `ai` branch at merge): the AI reviewer interface and the
//! offline `rules` reviewer, just enough for the bot handlers to build against.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::candle::Candle;
use crate::domain::review::{review_entry, ReviewConfig, Verdict};
use crate::domain::strategy::{Regime, Snapshot};
use crate::queue::handler::JobError;

pub struct ReviewRequest {
    pub market: String,
    pub decided_at: DateTime<Utc>,
    pub close: Decimal,
    pub snapshot: Snapshot,
    pub regime: Option<Regime>,
    pub regime_distance: Option<f64>,
    pub hourly: Vec<Candle>,
}

pub struct PositionSummary {
    pub market: String,
    pub quantity: Decimal,
    pub entry_price: Decimal,
    pub entry_time: DateTime<Utc>,
    pub last_price: Decimal,
}

pub struct MarketNoteRequest {
    pub market: String,
    pub at: DateTime<Utc>,
    pub regime: Option<Regime>,
    pub regime_distance: Option<f64>,
    pub hourly: Vec<Candle>,
    pub positions: Vec<PositionSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiDecision {
    pub provider: String,
    pub model: String,
    pub verdict: Verdict,
    pub confidence: u8,
    pub reasoning: String,
    pub confirmed: bool,
    pub latency_ms: i64,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_usd: Option<Decimal>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketNote {
    pub provider: String,
    pub model: String,
    pub note: String,
    pub latency_ms: i64,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_usd: Option<Decimal>,
}

#[derive(Debug, thiserror::Error)]
pub enum AiError {
    #[error("rate limited")]
    RateLimited {
        retry_after: Option<std::time::Duration>,
    },
    #[error("overloaded ({status})")]
    Overloaded { status: u16 },
    #[error("{0}")]
    Permanent(String),
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Transport(String),
    #[error("{0}")]
    Config(String),
}

impl AiError {
    pub fn into_job_error(self) -> JobError {
        match self {
            AiError::Permanent(_) | AiError::Config(_) => JobError::permanent(self.to_string()),
            other => JobError::retry(other.to_string()),
        }
    }
}

pub trait Reviewer: Send + Sync + std::fmt::Debug {
    fn provider(&self) -> &'static str;
    fn model(&self) -> &str;
    fn review<'a>(&'a self, req: &'a ReviewRequest) -> BoxFuture<'a, Result<AiDecision, AiError>>;
    fn market_note<'a>(
        &'a self,
        req: &'a MarketNoteRequest,
    ) -> BoxFuture<'a, Result<MarketNote, AiError>>;
}

#[derive(Debug)]
pub struct Rules(pub ReviewConfig);

impl Reviewer for Rules {
    fn provider(&self) -> &'static str {
        "rules"
    }
    fn model(&self) -> &str {
        "rules-v1"
    }
    fn review<'a>(&'a self, req: &'a ReviewRequest) -> BoxFuture<'a, Result<AiDecision, AiError>> {
        Box::pin(async move {
            let r = review_entry(&req.hourly, &self.0);
            Ok(AiDecision {
                provider: "rules".into(),
                model: "rules-v1".into(),
                verdict: r.verdict,
                confidence: r.confidence,
                reasoning: r.reasoning,
                confirmed: r.confirmed,
                latency_ms: 0,
                input_tokens: None,
                output_tokens: None,
                cost_usd: None,
                error: None,
            })
        })
    }
    fn market_note<'a>(
        &'a self,
        req: &'a MarketNoteRequest,
    ) -> BoxFuture<'a, Result<MarketNote, AiError>> {
        Box::pin(async move {
            Ok(MarketNote {
                provider: "rules".into(),
                model: "rules-v1".into(),
                note: format!("regime {:?}, {} positions", req.regime, req.positions.len()),
                latency_ms: 0,
                input_tokens: None,
                output_tokens: None,
                cost_usd: None,
            })
        })
    }
}

pub fn from_config(
    _cfg: &crate::config::AiConfig,
    _secrets: &crate::config::Secrets,
    review: ReviewConfig,
) -> Result<Arc<dyn Reviewer>, AiError> {
    Ok(Arc::new(Rules(review)))
}
