//! The daily jobs (SPEC B5, B7): `reset_daily_risk` at 00:00 Asia/Seoul creates the day's
//! risk row (unless a decision or fill of the day already did) and announces the day's
//! starting equity and any cooldown that ended; `daily_report` at 00:05 gathers the
//! previous day's [`DailyReport`] from the database and posts it (`notify`), chart and all.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use sqlx::PgConnection;

use super::{market_of, risk_store, Bot, BotError};
use crate::domain::candle::{Interval, Market};
use crate::domain::risk::{seoul_day, seoul_day_bounds};
use crate::market::load_candles;
use crate::notify::{
    self, DailyReport, Marker, Message, PricePoint, ReportPosition, ReportTrade, RiskEvent,
    RiskNote,
};
use crate::paper::AccountId;
use crate::queue::handler::{Handler, JobContext, JobError, KindOptions, Outcome};

#[derive(Debug, Clone, Deserialize)]
pub struct ResetArgs {
    /// The market whose last candle values the open positions [KRW-BTC].
    #[serde(default = "default_market")]
    pub market: String,
}

fn default_market() -> String {
    "KRW-BTC".into()
}

#[derive(Debug, Clone)]
pub struct ResetDailyRisk {
    pub bot: Arc<Bot>,
}

impl Handler for ResetDailyRisk {
    const KIND: &'static str = "reset_daily_risk";
    type Args = ResetArgs;

    fn options(&self) -> KindOptions {
        KindOptions {
            queue: "maintenance".into(),
            max_attempts: 10,
            ..KindOptions::default()
        }
    }

    async fn run(&self, ctx: &mut JobContext, args: ResetArgs) -> Result<Outcome, JobError> {
        self.reset(ctx, args).await.map_err(BotError::into_job)
    }
}

/// How long the reset waits for the last candle of the previous day (SPEC B8 values the
/// day's starting equity at that candle's close; it is collected a few seconds after
/// midnight). After that it uses the newest close it has.
const WAIT_FOR_LAST_CANDLE: i64 = 10;

impl ResetDailyRisk {
    async fn reset(&self, ctx: &mut JobContext, args: ResetArgs) -> Result<Outcome, BotError> {
        let now = ctx.now();
        let (start, _) = seoul_day_bounds(now);
        let market = market_of(&args.market)?;
        let conn = ctx.tx().await?;
        let last = start - Duration::minutes(1);
        if now < start + Duration::minutes(WAIT_FOR_LAST_CANDLE)
            && !risk_store::candle_known(conn, &market, last).await?
        {
            // The attempt is given back: waiting is not a failure.
            return Ok(Outcome::Snooze(now + Duration::seconds(10)));
        }
        let account = self.bot.account(conn, now).await?;
        let created = risk_store::ensure_day(conn, account, now, "reset_daily_risk", now).await?;
        let day = seoul_day(now);
        if let Some(equity) = risk_store::announce_day_start(conn, account, day).await? {
            let msg = Message::Risk(RiskNote {
                event: RiskEvent::DayStarted {
                    day,
                    equity: equity.value(),
                },
                at: now,
                detail: format!("Trading day {day} (Asia/Seoul) starts with {equity} KRW equity."),
            });
            notify::enqueue(
                conn,
                now,
                &msg,
                Some(format!("risk:day:{}:{day}", account.0)),
            )
            .await?;
        }
        let ended = risk_store::announce_cooldown_end(conn, account, now).await?;
        if let Some(until) = ended {
            let msg = Message::Risk(RiskNote {
                event: RiskEvent::CooldownEnded,
                at: now,
                detail: format!("The loss cooldown ended at {until}: entries are allowed again."),
            });
            let key = format!("risk:cooldown-end:{}:{}", account.0, until.timestamp());
            notify::enqueue(conn, now, &msg, Some(key)).await?;
        }
        Ok(Outcome::output(serde_json::json!({
            "day": day, "created": created.is_some(), "cooldown_ended": ended,
        })))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReportArgs {
    /// The Seoul day to report; default the day before the job runs.
    pub day: Option<NaiveDate>,
    pub market: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DailyReportJob {
    pub bot: Arc<Bot>,
}

impl Handler for DailyReportJob {
    const KIND: &'static str = "daily_report";
    type Args = ReportArgs;

    fn options(&self) -> KindOptions {
        KindOptions {
            queue: "maintenance".into(),
            max_attempts: 5,
            ..KindOptions::default()
        }
    }

    async fn run(&self, ctx: &mut JobContext, args: ReportArgs) -> Result<Outcome, JobError> {
        self.report(ctx, args).await.map_err(BotError::into_job)
    }
}

impl DailyReportJob {
    async fn report(&self, ctx: &mut JobContext, args: ReportArgs) -> Result<Outcome, BotError> {
        let now = ctx.now();
        let day = args
            .day
            .unwrap_or_else(|| seoul_day(now - Duration::days(1)));
        let market = market_of(args.market.as_deref().unwrap_or("KRW-BTC"))?;
        let conn = ctx.tx().await?;
        let report = gather(conn, &self.bot, &market, day, now).await?;
        let summary = serde_json::json!({
            "day": day, "trades": report.trades.len(), "pnl": report.realized_pnl,
            "equity": report.equity_end,
        });
        let msg = Message::DailyReport(Box::new(report));
        notify::enqueue(
            conn,
            now,
            &msg,
            Some(format!("daily-report:{market}:{day}")),
        )
        .await?;
        Ok(Outcome::output(summary))
    }
}

type TradeRow = (
    DateTime<Utc>,
    Decimal,
    DateTime<Utc>,
    Decimal,
    Decimal,
    Decimal,
    String,
);
type FillRow = (DateTime<Utc>, String, Decimal, Decimal, Decimal);

/// The report of Seoul day `day` for the bot's account in `market`.
pub async fn gather(
    conn: &mut PgConnection,
    bot: &Bot,
    market: &Market,
    day: NaiveDate,
    now: DateTime<Utc>,
) -> Result<DailyReport, BotError> {
    let account = bot.account(conn, now).await?;
    let start_of = |d: NaiveDate| {
        d.and_hms_opt(12, 0, 0)
            .map(|noon| seoul_day_bounds(noon.and_utc()))
            .ok_or_else(|| BotError::Invalid(format!("day {d} out of range")))
    };
    let (start, end) = start_of(day)?;
    let trades = trades_between(conn, account, market, start, end).await?;
    let candles = load_candles(conn, market, Interval::M1, start, end).await?;
    let equity = equity_curve(conn, account, market, &candles, now).await?;
    let (wins, losses) = trades.iter().fold((0, 0), |(w, l), t| {
        (
            w + u32::from(t.pnl > Decimal::ZERO),
            l + u32::from(t.pnl < Decimal::ZERO),
        )
    });
    let realized_pnl = trades.iter().map(|t| t.pnl).sum();
    let last_close = candles.last().map(|c| c.close);
    let open_positions = positions(conn, account, last_close).await?;
    let (confirms, rejects, avg) = ai_counts(conn, market, start, end).await?;
    let equity_start = match risk_day_equity(conn, account, day).await? {
        Some(e) => e,
        None => equity.first().map(|p| p.v).unwrap_or(Decimal::ZERO),
    };
    Ok(DailyReport {
        day,
        market: market.to_string(),
        mode: "paper".into(),
        reviewer: reviewer_label(bot),
        equity_start,
        equity_end: equity.last().map(|p| p.v).unwrap_or(equity_start),
        realized_pnl,
        unrealized_pnl: open_positions.iter().map(|p| p.unrealized_pnl).sum(),
        wins,
        losses,
        max_drawdown_pct: max_drawdown_pct(&equity),
        ai_confirms: confirms,
        ai_rejects: rejects,
        ai_avg_confidence: avg,
        regime: last_regime(conn, market, end).await?,
        open_positions,
        prices: candles
            .iter()
            .map(|c| PricePoint {
                t: c.open_time,
                v: c.close,
            })
            .collect(),
        markers: markers(conn, account, market, start, end).await?,
        equity,
        trades,
    })
}

fn reviewer_label(bot: &Bot) -> String {
    match bot.reviewer.provider() {
        "rules" => "rules (offline, deterministic)".into(),
        p => format!("{p} ({})", bot.reviewer.model()),
    }
}

async fn trades_between(
    conn: &mut PgConnection,
    account: AccountId,
    market: &Market,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<ReportTrade>, BotError> {
    // No locks (a report reads); `trades_account_exit_idx`.
    const TRADES: &str = "SELECT entry_time, entry_price, exit_time, exit_price, quantity, pnl, \
         exit_reason FROM trades WHERE account_id = $1 AND market = $2 AND exit_time >= $3 \
         AND exit_time < $4 ORDER BY exit_time, id";
    let rows: Vec<TradeRow> = sqlx::query_as(TRADES)
        .bind(account.0)
        .bind(market.as_str())
        .bind(start)
        .bind(end)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(entry_time, entry_price, exit_time, exit_price, quantity, pnl, exit_reason)| {
                ReportTrade {
                    entry_time,
                    entry_price,
                    exit_time,
                    exit_price,
                    quantity,
                    pnl,
                    exit_reason,
                }
            },
        )
        .collect())
}

/// Every fill of the account in `market` after `from`, ascending:
/// (time, side, price, quantity, fee).
async fn fills_after(
    conn: &mut PgConnection,
    account: AccountId,
    market: &Market,
    from: DateTime<Utc>,
) -> Result<Vec<FillRow>, BotError> {
    // No locks; fills joined to their orders by the client order id primary keys.
    const FILLS: &str = "SELECT f.filled_at, o.side, f.price, f.quantity, f.fee FROM fills f \
         JOIN orders o USING (client_order_id) WHERE o.account_id = $1 AND o.market = $2 \
         AND f.filled_at >= $3 ORDER BY f.filled_at";
    Ok(sqlx::query_as(FILLS)
        .bind(account.0)
        .bind(market.as_str())
        .bind(from)
        .fetch_all(conn)
        .await?)
}

/// Equity at each candle close of the day, reconstructed backwards from today's balance and
/// position through the fills after each close (exact: the ledger's own numbers).
async fn equity_curve(
    conn: &mut PgConnection,
    account: AccountId,
    market: &Market,
    candles: &[crate::domain::candle::Candle],
    now: DateTime<Utc>,
) -> Result<Vec<PricePoint>, BotError> {
    let Some(first) = candles.first() else {
        return Ok(Vec::new());
    };
    let mut cash = crate::paper::balance(conn, account).await?.value();
    let mut qty = crate::paper::position(conn, account, market)
        .await?
        .map(|p| p.quantity.value())
        .unwrap_or(Decimal::ZERO);
    let mut fills = fills_after(conn, account, market, first.open_time).await?;
    let mut points = Vec::with_capacity(candles.len());
    for c in candles.iter().rev() {
        let close_time = c.close_time(Interval::M1).min(now);
        // Undo the fills after this close to get the holdings at it.
        while fills.last().is_some_and(|f| f.0 >= close_time) {
            if let Some((_, side, price, q, fee)) = fills.pop() {
                if side == "buy" {
                    cash += q * price + fee;
                    qty -= q;
                } else {
                    cash -= q * price - fee;
                    qty += q;
                }
            }
        }
        points.push(PricePoint {
            t: c.open_time,
            v: cash + qty * c.close,
        });
    }
    points.reverse();
    Ok(points)
}

/// The largest peak-to-trough fall of `equity`, in % (SPEC B8's definition).
pub fn max_drawdown_pct(equity: &[PricePoint]) -> f64 {
    let mut peak = Decimal::ZERO;
    let mut worst = 0.0f64;
    for p in equity {
        peak = peak.max(p.v);
        if peak > Decimal::ZERO {
            let dd = crate::domain::indicator_table::to_f64((peak - p.v) / peak) * 100.0;
            worst = worst.max(dd);
        }
    }
    worst
}

async fn positions(
    conn: &mut PgConnection,
    account: AccountId,
    last_close: Option<Decimal>,
) -> Result<Vec<ReportPosition>, BotError> {
    // No locks; the account's positions by primary key prefix.
    const POSITIONS: &str = "SELECT market, quantity, avg_price, entry_filled_at, cost \
         FROM positions WHERE account_id = $1 ORDER BY market";
    let rows: Vec<(String, Decimal, Decimal, DateTime<Utc>, Decimal)> = sqlx::query_as(POSITIONS)
        .bind(account.0)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(market, quantity, entry_price, entry_time, cost)| {
            let last_price = last_close.unwrap_or(entry_price);
            ReportPosition {
                market,
                quantity,
                entry_price,
                entry_time,
                last_price,
                unrealized_pnl: quantity * last_price - cost,
            }
        })
        .collect())
}

async fn ai_counts(
    conn: &mut PgConnection,
    market: &Market,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(u32, u32, Option<f64>), BotError> {
    // No locks; `ai_decisions_decided_idx`.
    const COUNTS: &str = "SELECT count(*) FILTER (WHERE verdict = 'CONFIRM'), \
         count(*) FILTER (WHERE verdict = 'REJECT'), avg(confidence)::float8 FROM ai_decisions \
         WHERE kind = 'entry_review' AND market = $1 AND decided_at >= $2 AND decided_at < $3";
    let (c, r, avg): (i64, i64, Option<f64>) = sqlx::query_as(COUNTS)
        .bind(market.as_str())
        .bind(start)
        .bind(end)
        .fetch_one(conn)
        .await?;
    let n = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    Ok((n(c), n(r), avg))
}

async fn risk_day_equity(
    conn: &mut PgConnection,
    account: AccountId,
    day: NaiveDate,
) -> Result<Option<Decimal>, BotError> {
    // No locks; primary key.
    const EQUITY: &str =
        "SELECT day_start_equity FROM risk_days WHERE account_id = $1 AND day = $2";
    Ok(sqlx::query_scalar(EQUITY)
        .bind(account.0)
        .bind(day)
        .fetch_optional(conn)
        .await?)
}

async fn last_regime(
    conn: &mut PgConnection,
    market: &Market,
    end: DateTime<Utc>,
) -> Result<Option<String>, BotError> {
    // No locks; `signals_decided_idx` backwards.
    const REGIME: &str = "SELECT regime FROM signals WHERE market = $1 AND decided_at <= $2 \
         ORDER BY decided_at DESC LIMIT 1";
    Ok(sqlx::query_scalar::<_, Option<String>>(REGIME)
        .bind(market.as_str())
        .bind(end)
        .fetch_optional(conn)
        .await?
        .flatten())
}

async fn markers(
    conn: &mut PgConnection,
    account: AccountId,
    market: &Market,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<Marker>, BotError> {
    let fills = fills_after(conn, account, market, start).await?;
    Ok(fills
        .into_iter()
        .filter(|f| f.0 < end)
        .map(|(t, side, price, _, _)| Marker { t, price, side })
        .collect())
}
