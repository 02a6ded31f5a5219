//! STAND-IN (replaced by the `notify` branch at merge): the message types and `enqueue`,
//! just enough for the bot handlers to build against.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::queue::handler::{Handler, JobContext, JobError, KindOptions, Outcome};
use crate::queue::{Enqueued, NewJob, QueueError};

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FillNote {
    pub mode: String,
    pub market: String,
    pub side: String,
    pub price: Decimal,
    pub quantity: Decimal,
    pub fee: Decimal,
    pub client_order_id: String,
    pub filled_at: DateTime<Utc>,
    pub reason: Option<String>,
    pub pnl: Option<Decimal>,
    pub balance_after: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpiredNote {
    pub market: String,
    pub client_order_id: String,
    pub decided_at: DateTime<Utc>,
    pub expired_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiDecisionNote {
    pub market: String,
    pub provider: String,
    pub model: String,
    pub verdict: String,
    pub confidence: u8,
    pub confirmed: bool,
    pub reasoning: String,
    pub decided_at: DateTime<Utc>,
    pub error: Option<String>,
}

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
pub enum Severity {
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertNote {
    pub severity: Severity,
    pub title: String,
    pub detail: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyReport {
    pub day: NaiveDate,
    pub market: String,
    pub mode: String,
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
    pub prices: Vec<PricePoint>,
    pub equity: Vec<PricePoint>,
    pub markers: Vec<Marker>,
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
    pub side: String,
}

pub async fn enqueue(
    conn: &mut sqlx::PgConnection,
    now: DateTime<Utc>,
    message: &Message,
    unique_key: Option<String>,
) -> Result<Enqueued, QueueError> {
    let args =
        serde_json::to_value(message).map_err(|e| QueueError::InvalidInput(e.to_string()))?;
    let mut job = NewJob::new("notify", args).with_queue("notify");
    if let Some(k) = unique_key {
        job = job.with_unique_key(k);
    }
    crate::queue::enqueue::enqueue(conn, now, &job).await
}

#[derive(Debug, Default)]
pub struct Notify;

impl Handler for Notify {
    const KIND: &'static str = "notify";
    type Args = Message;
    fn options(&self) -> KindOptions {
        KindOptions {
            queue: "notify".into(),
            ..KindOptions::default()
        }
    }
    async fn run(&self, _ctx: &mut JobContext, msg: Message) -> Result<Outcome, JobError> {
        tracing::info!(?msg, "notify (stand-in)");
        Ok(Outcome::done())
    }
}
