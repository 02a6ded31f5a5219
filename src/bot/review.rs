//! `ai_review` (SPEC B4) in two modes. `entry` (a trade-cycle step): the entry signal
//! from `evaluate`, its indicators, the regime and the last 24 closed hours go to the
//! configured reviewer; the decision is saved in `ai_decisions` in the job's transaction —
//! the one that completes the step and so enqueues the buy — and **if it cannot be saved,
//! the job fails**. One decision per signal: a re-run finds it and asks no one again.
//! `market_review` (the hourly schedule): open positions and regime → a short note,
//! saved and posted; it never trades.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;

use super::evaluate::Evaluated;
use super::history::{closed_hours, last_close_before, view_at};
use super::{market_of, output, parent, Bot, BotError};
use crate::ai::{AiDecision, MarketNoteRequest, PositionSummary, ReviewRequest};
use crate::domain::candle::Market;
use crate::domain::review::{Verdict, WINDOW_HOURS};
use crate::domain::strategy::classify_regime;
use crate::notify::{self, AiDecisionNote, MarketNoteMsg, Message};
use crate::queue::handler::{Handler, JobContext, JobError, KindOptions, Outcome};

/// Saves one decision. The partial unique index on `signal_id` makes a second save of
/// the same signal's review conflict (and return nothing) instead of doubling it.
const INSERT_DECISION: &str = "INSERT INTO ai_decisions (signal_id, kind, market, provider, \
     model, verdict, confidence, confirmed, reasoning, error, latency_ms, input_tokens, \
     output_tokens, cost_usd, job_id, decided_at, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
     ON CONFLICT (signal_id) WHERE signal_id IS NOT NULL DO NOTHING RETURNING id";

const DECISION_OF_SIGNAL: &str = "SELECT id, verdict, confidence, confirmed FROM ai_decisions \
     WHERE signal_id = $1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Entry,
    MarketReview,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReviewArgs {
    pub market: String,
    #[serde(default)]
    pub mode: Mode,
    pub parents: Option<Value>,
}

/// The entry review's step output; the buy step reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reviewed {
    pub confirmed: bool,
    pub verdict: String,
    pub confidence: i16,
    pub decision_id: i64,
    pub provider: String,
    /// Carried forward from `evaluate` for the buy.
    pub signal: Evaluated,
}

#[derive(Debug, Clone)]
pub struct AiReview {
    pub bot: Arc<Bot>,
}

impl Handler for AiReview {
    const KIND: &'static str = "ai_review";
    type Args = ReviewArgs;

    fn options(&self) -> KindOptions {
        KindOptions {
            queue: "review".into(),
            max_attempts: 6,
            // SPEC B4's 40 s per call, one malformed-output retry, and the saves.
            timeout: std::time::Duration::from_secs(100),
            ..KindOptions::default()
        }
    }

    async fn run(&self, ctx: &mut JobContext, args: ReviewArgs) -> Result<Outcome, JobError> {
        self.go(ctx, args).await.map_err(BotError::into_job)
    }
}

impl AiReview {
    async fn go(&self, ctx: &mut JobContext, args: ReviewArgs) -> Result<Outcome, BotError> {
        let market = market_of(&args.market)?;
        let now = ctx.now();
        let job_id = ctx.job.id.0;
        match args.mode {
            Mode::Entry => {
                let signal: Evaluated = parent(&args.parents, "evaluate")?;
                output(&self.entry(ctx, &market, signal, now, job_id).await?)
            }
            Mode::MarketReview => {
                let id = self.market_review(ctx, &market, now, job_id).await?;
                output(&serde_json::json!({ "note_id": id }))
            }
        }
    }
}

impl AiReview {
    async fn entry(
        &self,
        ctx: &mut JobContext,
        market: &Market,
        signal: Evaluated,
        now: DateTime<Utc>,
        job_id: i64,
    ) -> Result<Reviewed, BotError> {
        let (Some(signal_id), Some(t)) = (signal.signal_id, signal.candle) else {
            return Err(BotError::Invalid(
                "args.parents.evaluate: not an entry signal".into(),
            ));
        };
        // Reads on a connection of their own: no transaction stays open during the
        // reviewer's call (up to 40 s), only the save below opens the job's.
        let mut read = ctx.pool.acquire().await?;
        let provider = self.bot.reviewer.provider();
        if let Some(done) = earlier(&mut read, signal_id, &signal, provider).await? {
            return Ok(done);
        }
        let req = self.request(&mut read, market, t, &signal).await?;
        drop(read);
        let decision = self
            .bot
            .reviewer
            .review(&req)
            .await
            .map_err(|e| BotError::Job(e.into_job_error()))?;
        let conn = ctx.tx().await?;
        let id = save(
            conn,
            Some(signal_id),
            market,
            &decision,
            job_id,
            req.decided_at,
            now,
        )
        .await?
        .ok_or_else(|| JobError::retry("a concurrent review saved this signal's decision first"))?;
        let note = Message::AiDecision(AiDecisionNote {
            market: market.to_string(),
            provider: decision.provider.clone(),
            model: decision.model.clone(),
            verdict: verdict_str(decision.verdict).into(),
            confidence: decision.confidence,
            confirmed: decision.confirmed,
            reasoning: decision.reasoning.clone(),
            decided_at: req.decided_at,
            error: decision.error.clone(),
        });
        notify::enqueue(conn, now, &note, Some(format!("ai-decision:{id}"))).await?;
        Ok(Reviewed {
            confirmed: decision.confirmed,
            verdict: verdict_str(decision.verdict).into(),
            confidence: i16::from(decision.confidence),
            decision_id: id,
            provider: decision.provider,
            signal,
        })
    }

    async fn request(
        &self,
        conn: &mut PgConnection,
        market: &Market,
        t: DateTime<Utc>,
        signal: &Evaluated,
    ) -> Result<ReviewRequest, BotError> {
        let view = view_at(conn, market, t).await?;
        let regime = view
            .regime_distance
            .map(|d| classify_regime(d, &self.bot.strategy.regime));
        let last = view.hours.len().saturating_sub(WINDOW_HOURS);
        Ok(ReviewRequest {
            market: market.to_string(),
            decided_at: signal.decided_at.unwrap_or(t + Duration::minutes(1)),
            close: view.candle.close,
            snapshot: view.snapshot,
            regime,
            regime_distance: view.regime_distance,
            hourly: view.hours.get(last..).unwrap_or(&[]).to_vec(),
        })
    }

    async fn market_review(
        &self,
        ctx: &mut JobContext,
        market: &Market,
        now: DateTime<Utc>,
        job_id: i64,
    ) -> Result<i64, BotError> {
        let mut read = ctx.pool.acquire().await?;
        let req = self.note_request(&mut read, market, now).await?;
        drop(read);
        let note = self
            .bot
            .reviewer
            .market_note(&req)
            .await
            .map_err(|e| BotError::Job(e.into_job_error()))?;
        let decision = AiDecision {
            provider: note.provider.clone(),
            model: note.model.clone(),
            verdict: Verdict::Reject,
            confidence: 0,
            reasoning: note.note.clone(),
            confirmed: false,
            latency_ms: note.latency_ms,
            input_tokens: note.input_tokens,
            output_tokens: note.output_tokens,
            cost_usd: note.cost_usd,
            error: note.error.clone(),
        };
        let conn = ctx.tx().await?;
        let id = save(conn, None, market, &decision, job_id, now, now)
            .await?
            .ok_or_else(|| JobError::retry("market note not saved"))?;
        let msg = Message::MarketNote(MarketNoteMsg {
            market: market.to_string(),
            provider: note.provider,
            model: note.model,
            at: now,
            regime: req.regime.map(|r| r.as_str().to_string()),
            note: note.note,
        });
        notify::enqueue(conn, now, &msg, Some(format!("market-note:{id}"))).await?;
        Ok(id)
    }

    async fn note_request(
        &self,
        conn: &mut PgConnection,
        market: &Market,
        now: DateTime<Utc>,
    ) -> Result<MarketNoteRequest, BotError> {
        let hours = closed_hours(conn, market, now).await?;
        let mut regime = crate::domain::strategy::RegimeIndicators::default();
        for h in &hours {
            regime.update(crate::domain::indicator_table::to_f64(h.close));
        }
        let distance = regime.distance();
        let account = self.bot.account(conn, now).await?;
        let mut positions = Vec::new();
        if let Some(p) = crate::paper::position(conn, account, market).await? {
            let last = last_close_before(conn, market, now).await?;
            positions.push(PositionSummary {
                market: market.to_string(),
                quantity: p.quantity.value(),
                entry_price: p.avg_price.value(),
                entry_time: p.entry_filled_at,
                last_price: last.map(|(_, c)| c).unwrap_or(p.avg_price.value()),
            });
        }
        let last = hours.len().saturating_sub(WINDOW_HOURS);
        Ok(MarketNoteRequest {
            market: market.to_string(),
            at: now,
            regime: distance.map(|d| classify_regime(d, &self.bot.strategy.regime)),
            regime_distance: distance,
            hourly: hours.get(last..).unwrap_or(&[]).to_vec(),
            positions,
        })
    }
}

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Confirm => "CONFIRM",
        Verdict::Reject => "REJECT",
    }
}

/// The decision an earlier run saved for this signal, as this step's output.
async fn earlier(
    conn: &mut PgConnection,
    signal_id: i64,
    signal: &Evaluated,
    provider: &str,
) -> Result<Option<Reviewed>, BotError> {
    let row: Option<(i64, Option<String>, Option<i16>, bool)> = sqlx::query_as(DECISION_OF_SIGNAL)
        .bind(signal_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|(id, verdict, confidence, confirmed)| Reviewed {
        confirmed,
        verdict: verdict.unwrap_or_default(),
        confidence: confidence.unwrap_or(0),
        decision_id: id,
        provider: provider.to_string(),
        signal: signal.clone(),
    }))
}

#[allow(clippy::too_many_arguments)]
async fn save(
    conn: &mut PgConnection,
    signal_id: Option<i64>,
    market: &Market,
    d: &AiDecision,
    job_id: i64,
    decided_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<i64>, BotError> {
    let kind = if signal_id.is_some() {
        "entry_review"
    } else {
        "market_review"
    };
    let verdict = signal_id.map(|_| verdict_str(d.verdict));
    let confidence = signal_id.map(|_| i16::from(d.confidence));
    Ok(sqlx::query_scalar(INSERT_DECISION)
        .bind(signal_id)
        .bind(kind)
        .bind(market.as_str())
        .bind(&d.provider)
        .bind(&d.model)
        .bind(verdict)
        .bind(confidence)
        .bind(d.confirmed && signal_id.is_some())
        .bind(&d.reasoning)
        .bind(&d.error)
        .bind(d.latency_ms.max(0))
        .bind(d.input_tokens)
        .bind(d.output_tokens)
        .bind(d.cost_usd)
        .bind(job_id)
        .bind(decided_at)
        .bind(now)
        .fetch_optional(conn)
        .await?)
}
