//! The trading bot's job handlers (SPEC B3–B7): `collect_candles`, `evaluate_signal`,
//! `ai_review`, `execute_order`, `reset_daily_risk` and `daily_report`, plus the alert hook
//! on discarded trading jobs. The `trade-cycle` workflow owns the chain collect → evaluate
//! → review → buy / sell: each handler reads what it needs from its parents' outputs (the
//! `parents` key of its args), writes through the job's transaction and returns its own
//! output; only notifications are enqueued by handlers (`notify` jobs, same transaction).
//!
//! The decisions are the domain's (`domain::strategy`, `domain::risk`,
//! `domain::portfolio`), the same code the backtest runs (DESIGN invariant 9); this layer
//! only loads the state from PostgreSQL, calls the domain and stores what it decided.
//! It owns the `signals`, `ai_decisions`, `risk_state` and `risk_days` tables.

pub mod alerts;
mod collect;
pub mod daily;
mod evaluate;
mod execute;
pub mod history;
mod review;
pub mod risk_store;
pub mod setup;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgConnection;

use crate::ai::Reviewer;
use crate::domain::candle::Market;
use crate::domain::config::StrategyConfig;
use crate::domain::money::{Krw, MoneyError};
use crate::market::source::MarketSource;
use crate::market::MarketError;
use crate::paper::{AccountId, PaperConfig, PaperError};
use crate::queue::handler::{HandlerRegistry, JobError};
use crate::queue::QueueError;

pub use collect::CollectCandles;
pub use daily::{DailyReportJob, ResetDailyRisk};
pub use evaluate::EvaluateSignal;
pub use execute::ExecuteOrder;
pub use review::AiReview;

/// The job kinds whose discard raises an alert (SPEC B7).
pub const TRADING_KINDS: &[&str] = &[
    "collect_candles",
    "evaluate_signal",
    "ai_review",
    "execute_order",
];

/// Everything the handlers share.
#[derive(Debug, Clone)]
pub struct Bot {
    pub strategy: StrategyConfig,
    pub source: Arc<dyn MarketSource>,
    pub reviewer: Arc<dyn Reviewer>,
    pub paper: PaperConfig,
    /// The paper account the bot trades (opened on first use).
    pub account: String,
    pub starting_balance: Krw,
    /// How far back the collector fetches when no candle is stored yet.
    pub initial_lookback: chrono::Duration,
    /// `--live`: orders go to Upbit (`live::execute_live`), booked in the same ledger.
    pub live: Option<Arc<crate::live::UpbitClient>>,
}

impl Bot {
    pub async fn account(
        &self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> Result<AccountId, BotError> {
        Ok(crate::paper::open_account(conn, &self.account, self.starting_balance, now).await?)
    }
}

/// Registers every bot kind on `registry` (replacing the plain paper `execute_order`).
pub fn register(registry: &mut HandlerRegistry, bot: Arc<Bot>) {
    registry.register(CollectCandles { bot: bot.clone() });
    registry.register(EvaluateSignal { bot: bot.clone() });
    registry.register(AiReview { bot: bot.clone() });
    registry.register(ExecuteOrder { bot: bot.clone() });
    registry.register(ResetDailyRisk { bot: bot.clone() });
    registry.register(crate::market::Backfill {
        source: bot.source.clone(),
    });
    registry.register(DailyReportJob { bot });
}

/// Errors of the bot layer.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Market(#[from] MarketError),
    #[error(transparent)]
    Paper(#[from] PaperError),
    #[error(transparent)]
    Money(#[from] MoneyError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Args or a parent's output that cannot be used; retrying will not help.
    #[error("{0}")]
    Invalid(String),
    /// A failure already classified (an AI provider's, a paper order's).
    #[error("{0}")]
    Job(JobError),
}

impl BotError {
    /// Invalid input and refusals are permanent; the database and the network are retried.
    /// (Not a `From`: `JobError` converts every error as retryable, and `?` would pick it.)
    pub fn into_job(self) -> JobError {
        match self {
            BotError::Invalid(m) => JobError::permanent(m),
            BotError::Market(m) => market_job_error(m),
            BotError::Paper(PaperError::Sql(s)) => JobError::from(s),
            BotError::Paper(p) => JobError::permanent(p.to_string()),
            BotError::Money(m) => JobError::permanent(m.to_string()),
            BotError::Sql(s) => JobError::from(s),
            BotError::Queue(q) => JobError::from(q),
            BotError::Job(j) => j,
        }
    }
}

/// Market data that is not there yet is worth a quick retry; the rest follows the error.
fn market_job_error(e: MarketError) -> JobError {
    match e {
        MarketError::NotAvailable(m) => JobError::retry_after(m, std::time::Duration::from_secs(5)),
        other => other.into_job_error(),
    }
}

impl From<JobError> for BotError {
    fn from(e: JobError) -> Self {
        BotError::Job(e)
    }
}

/// A step output as JSON (serializing our own types cannot fail but is not unwrapped).
fn output<T: serde::Serialize>(v: &T) -> Result<crate::queue::handler::Outcome, BotError> {
    serde_json::to_value(v)
        .map(crate::queue::handler::Outcome::output)
        .map_err(|e| BotError::Invalid(format!("step output: {e}")))
}

/// The market the configuration trades (`market.market`).
pub fn market_of_config(cfg: &crate::config::Loaded) -> Result<Market, BotError> {
    market_of(&cfg.config.market.market)
}

/// The market named in a job's args.
fn market_of(name: &str) -> Result<Market, BotError> {
    name.parse()
        .map_err(|e| BotError::Invalid(format!("args.market: {e}")))
}

/// The output of parent step `step` from a workflow step's args, deserialized.
fn parent<T: DeserializeOwned>(parents: &Option<Value>, step: &str) -> Result<T, BotError> {
    let out = parents.as_ref().and_then(|p| p.get(step)).ok_or_else(|| {
        BotError::Invalid(format!(
            "args.parents.{step}: missing (run it in the trade-cycle workflow)"
        ))
    })?;
    serde_json::from_value(out.clone())
        .map_err(|e| BotError::Invalid(format!("args.parents.{step}: {e}")))
}
