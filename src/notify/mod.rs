//! Notifications (SPEC B7): what the bot tells a person — fills, expired orders, AI
//! decisions, market notes, risk events, alerts and the daily report — and the channels
//! that carry it: a Discord webhook, or files under `reports/` when no webhook is set, plus
//! an e-mail of the daily report over SMTP.
//!
//! Every message is one `notify` job (queue `notify`, [`MAX_ATTEMPTS`] attempts), enqueued
//! by its producer in the producer's transaction with [`enqueue`]; a failing channel
//! retries that job and never blocks trading. The e-mail of a daily report is a second
//! `notify` job with [`Channel::Email`], enqueued by the first one when it completes, so a
//! Discord post that succeeded is never repeated because SMTP failed.
//!
//! Options (see `config`): `COINPILOT_DISCORD_WEBHOOK_URL` (secret), `notify.reports_dir`
//! (default `reports`), `COINPILOT_SMTP_URL` (secret), `notify.email_recipients`,
//! `notify.email_from`.
//!
//! This module reads nothing from the database: producers hand it finished messages.

pub mod discord;
pub mod email;
pub mod embeds;
pub mod files;
pub mod job;
pub mod limits;
pub mod report;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::queue::{Enqueued, NewJob, QueueError};

pub use job::{Channel, Notify, NotifyArgs};
pub use report::ReportError;

/// The job kind and its queue.
pub const KIND: &str = "notify";
pub const QUEUE: &str = "notify";
/// Generous: a Discord or SMTP outage of a few hours should not lose a message (the
/// exponential backoff spreads ten attempts over hours).
pub const MAX_ATTEMPTS: i32 = 10;

/// One message to a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Fill(FillNote),
    OrderExpired(ExpiredNote),
    AiDecision(AiDecisionNote),
    MarketNote(MarketNoteMsg),
    Risk(RiskNote),
    Alert(AlertNote),
    DailyReport(Box<DailyReport>),
}

impl Message {
    /// The serde tag: names files and log lines.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Fill(_) => "fill",
            Message::OrderExpired(_) => "order_expired",
            Message::AiDecision(_) => "ai_decision",
            Message::MarketNote(_) => "market_note",
            Message::Risk(_) => "risk",
            Message::Alert(_) => "alert",
            Message::DailyReport(_) => "daily_report",
        }
    }

    /// The Asia/Seoul day the message is about (its event's; a report's own day), the
    /// unit of trading days everywhere. Stable across retries, so file names are too.
    pub fn day(&self) -> NaiveDate {
        let at = match self {
            Message::Fill(n) => n.filled_at,
            Message::OrderExpired(n) => n.expired_at,
            Message::AiDecision(n) => n.decided_at,
            Message::MarketNote(n) => n.at,
            Message::Risk(n) => n.at,
            Message::Alert(n) => n.at,
            Message::DailyReport(r) => return r.day,
        };
        crate::domain::risk::seoul_day(at)
    }
}

/// A paper or live fill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FillNote {
    /// `paper` or `live`.
    pub mode: String,
    pub market: String,
    /// `buy` or `sell`.
    pub side: String,
    pub price: Decimal,
    pub quantity: Decimal,
    pub fee: Decimal,
    pub client_order_id: String,
    pub filled_at: DateTime<Utc>,
    /// Why: the entry signal or the exit rule.
    pub reason: Option<String>,
    /// The trade's PnL, on a sell.
    pub pnl: Option<Decimal>,
    /// KRW balance after the fill.
    pub balance_after: Decimal,
}

/// A buy that went stale before it could be filled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpiredNote {
    pub market: String,
    pub client_order_id: String,
    pub decided_at: DateTime<Utc>,
    pub expired_at: DateTime<Utc>,
}

/// The AI reviewer's verdict on one entry signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiDecisionNote {
    pub market: String,
    pub provider: String,
    pub model: String,
    /// `CONFIRM` or `REJECT`.
    pub verdict: String,
    pub confidence: u8,
    /// Whether the entry goes ahead (CONFIRM at confidence ≥ 60).
    pub confirmed: bool,
    pub reasoning: String,
    pub decided_at: DateTime<Utc>,
    /// Set when the reviewer failed and the decision is the fallback REJECT.
    pub error: Option<String>,
}

/// The hourly market review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketNoteMsg {
    pub market: String,
    pub provider: String,
    pub model: String,
    pub at: DateTime<Utc>,
    pub regime: Option<String>,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskNote {
    pub event: RiskEvent,
    pub at: DateTime<Utc>,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RiskEvent {
    CooldownStarted { until: DateTime<Utc> },
    CooldownEnded,
    DailyLossLimit { pnl: Decimal, limit: Decimal },
    DayStarted { day: NaiveDate, equity: Decimal },
    Halted,
    Resumed,
    Flattened { positions: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

/// SPEC B7 alerts: a trading job discarded, no new candle, an Upbit 418, a mismatch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertNote {
    pub severity: Severity,
    pub title: String,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// One Asia/Seoul day of trading, gathered by the `daily_report` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyReport {
    /// The Asia/Seoul day reported.
    pub day: NaiveDate,
    pub market: String,
    pub mode: String,
    /// Who reviewed the entries, e.g. `rules (offline)`: shown on every report.
    pub reviewer: String,
    pub equity_start: Decimal,
    pub equity_end: Decimal,
    pub realized_pnl: Decimal,
    pub unrealized_pnl: Decimal,
    pub trades: Vec<ReportTrade>,
    pub wins: u32,
    pub losses: u32,
    pub max_drawdown_pct: f64,
    pub ai_confirms: u32,
    pub ai_rejects: u32,
    pub ai_avg_confidence: Option<f64>,
    pub regime: Option<String>,
    pub open_positions: Vec<ReportPosition>,
    /// Closes, at most 1,440 points.
    pub prices: Vec<PricePoint>,
    pub equity: Vec<PricePoint>,
    pub markers: Vec<Marker>,
}

impl DailyReport {
    /// Wins over decided trades, in %; `None` without any.
    pub fn win_rate_pct(&self) -> Option<f64> {
        let decided = self.wins + self.losses;
        (decided > 0).then(|| f64::from(self.wins) * 100.0 / f64::from(decided))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportTrade {
    pub entry_time: DateTime<Utc>,
    pub entry_price: Decimal,
    pub exit_time: DateTime<Utc>,
    pub exit_price: Decimal,
    pub quantity: Decimal,
    pub pnl: Decimal,
    pub exit_reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportPosition {
    pub market: String,
    pub quantity: Decimal,
    pub entry_price: Decimal,
    pub entry_time: DateTime<Utc>,
    pub last_price: Decimal,
    pub unrealized_pnl: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PricePoint {
    pub t: DateTime<Utc>,
    pub v: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    pub t: DateTime<Utc>,
    pub price: Decimal,
    /// `buy` or `sell`.
    pub side: String,
}

/// Errors of the notification layer. None of them carries a webhook or SMTP URL: both
/// are secrets.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("config `{key}`: {message}")]
    Config { key: &'static str, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("message does not serialize: {0}")]
    Json(#[from] serde_json::Error),
}

/// The job a producer enqueues for `message` (primary channel).
pub fn new_job(message: &Message, unique_key: Option<String>) -> Result<NewJob, QueueError> {
    let args = NotifyArgs {
        message: message.clone(),
        channel: Channel::Primary,
    };
    let args = serde_json::to_value(&args)
        .map_err(|e| QueueError::InvalidInput(format!("notify message: {e}")))?;
    let job = NewJob::new(KIND, args)
        .with_queue(QUEUE)
        .with_max_attempts(MAX_ATTEMPTS);
    Ok(match unique_key {
        Some(k) => job.with_unique_key(k),
        None => job,
    })
}

/// Enqueues one `notify` job (queue `notify`) in the caller's transaction, with an
/// optional unique key so a re-run producer cannot notify twice.
pub async fn enqueue(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    message: &Message,
    unique_key: Option<String>,
) -> Result<Enqueued, QueueError> {
    crate::queue::enqueue(conn, now, &new_job(message, unique_key)?).await
}

/// Claims `key` for good: true the first time, false ever after. Locks: the key's row.
const CLAIM_ONCE: &str =
    "INSERT INTO notify_once (key, sent_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING RETURNING key";

/// Enqueues `message` only if `key` was never used before, in the caller's transaction (so a
/// rolled-back producer leaves the key unused). For notes a producer would otherwise repeat
/// on every run once the previous note's job finished (a unique key holds only while its job
/// is live). `None` when the key was used already.
pub async fn enqueue_once(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    message: &Message,
    key: String,
) -> Result<Option<Enqueued>, QueueError> {
    let first: Option<String> = sqlx::query_scalar(CLAIM_ONCE)
        .bind(&key)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    if first.is_none() {
        return Ok(None);
    }
    enqueue(conn, now, message, Some(key)).await.map(Some)
}

#[cfg(test)]
mod tests;
