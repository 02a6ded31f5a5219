//! `evaluate_signal` (SPEC B3): the strategy's decision at the close of the candle the
//! collector named. With a position it checks the exits; without one the entry rule, and
//! for an entry the risk manager first (no AI call for an entry it would refuse). The
//! decision is stored in `signals` — one row per (account, market, candle), so a second
//! run over the same candle finds it and answers `none` — and returned as the step output
//! `{"signal": "entry" | "exit" | "none", …}` the workflow's conditions read.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;

use super::collect::Collected;
use super::history::{view_at, MarketView};
use super::{market_of, output, parent, risk_store, Bot, BotError};
use crate::domain::candle::Market;
use crate::domain::money::Krw;
use crate::domain::strategy::{classify_regime, evaluate_entry, evaluate_exit, EntrySignal};
use crate::notify::{self, Message, RiskEvent, RiskNote};
use crate::paper::{self, AccountId};
use crate::queue::handler::{Handler, JobContext, JobError, KindOptions, Outcome};

/// Stores a decision. The unique (account, market, candle) key makes a second run over the
/// same candle insert nothing (no row returned); the insert locks only the new row.
const INSERT_SIGNAL: &str = "INSERT INTO signals (account_id, market, candle_open_time, \
     decided_at, signal, reason, close, regime, regime_distance, rsi14, rsi7, ma200, \
     bb_lower, bb_middle, bb_upper, volume_ratio, notional, job_id, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
     ON CONFLICT (account_id, market, candle_open_time) DO NOTHING RETURNING id";

#[derive(Debug, Clone, Deserialize)]
pub struct EvaluateArgs {
    pub market: String,
    pub parents: Option<Value>,
}

/// The step output; `review` and `buy`/`sell` read it (through their parents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluated {
    pub signal: String,
    pub reason: String,
    pub market: String,
    pub signal_id: Option<i64>,
    pub candle: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
    /// An entry's budget (20 % of the balance at the decision).
    pub notional: Option<Decimal>,
    /// An exit's position (its entry fill time): the sell closes that position or none.
    #[serde(default)]
    pub position_entry: Option<DateTime<Utc>>,
    pub regime: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EvaluateSignal {
    pub bot: Arc<Bot>,
}

impl Handler for EvaluateSignal {
    const KIND: &'static str = "evaluate_signal";
    type Args = EvaluateArgs;

    fn options(&self) -> KindOptions {
        KindOptions {
            queue: "market".into(),
            max_attempts: 5,
            timeout: std::time::Duration::from_secs(60),
            ..KindOptions::default()
        }
    }

    async fn run(&self, ctx: &mut JobContext, args: EvaluateArgs) -> Result<Outcome, JobError> {
        self.go(ctx, args).await.map_err(BotError::into_job)
    }
}

impl EvaluateSignal {
    async fn go(&self, ctx: &mut JobContext, args: EvaluateArgs) -> Result<Outcome, BotError> {
        let market = market_of(&args.market)?;
        let collected: Collected = parent(&args.parents, "collect")?;
        let now = ctx.now();
        let job_id = ctx.job.id.0;
        let out = match collected.candle {
            None => none(&market, "no candle stored yet"),
            Some(t) => {
                let conn = ctx.tx().await?;
                self.evaluate(conn, &market, t, now, job_id).await?
            }
        };
        output(&out)
    }
}

fn none(market: &Market, reason: &str) -> Evaluated {
    Evaluated {
        signal: "none".into(),
        reason: reason.into(),
        market: market.to_string(),
        signal_id: None,
        candle: None,
        decided_at: None,
        notional: None,
        position_entry: None,
        regime: None,
    }
}

impl EvaluateSignal {
    async fn evaluate(
        &self,
        conn: &mut PgConnection,
        market: &Market,
        t: DateTime<Utc>,
        now: DateTime<Utc>,
        job_id: i64,
    ) -> Result<Evaluated, BotError> {
        let cfg = &self.bot.strategy;
        let account = self.bot.account(conn, now).await?;
        let view = view_at(conn, market, t).await?;
        let decided_at = t + Duration::minutes(1);
        let regime = view
            .regime_distance
            .map(|d| classify_regime(d, &cfg.regime));
        let mut out = Evaluated {
            regime: regime.map(|r| r.as_str().to_string()),
            candle: Some(t),
            decided_at: Some(decided_at),
            ..none(market, "")
        };
        match paper::position(conn, account, market).await? {
            Some(pos) => {
                let exit = evaluate_exit(
                    pos.avg_price.value(),
                    pos.entry_filled_at,
                    view.candle.close,
                    view.snapshot.rsi14,
                    decided_at,
                    &cfg.exit,
                );
                out.position_entry = Some(pos.entry_filled_at);
                (out.signal, out.reason) = match exit {
                    Some(r) => ("exit".into(), r.as_str().into()),
                    None => ("none".into(), "holding: no exit rule holds".into()),
                };
            }
            None => {
                self.entry(conn, account, &view, regime, &mut out, now)
                    .await?
            }
        }
        match store(conn, account, market, &view, &out, job_id, now).await? {
            Some(id) => out.signal_id = Some(id),
            None => {
                return Ok(Evaluated {
                    reason: format!("candle {t} was already evaluated by an earlier run"),
                    ..none(market, "")
                })
            }
        }
        Ok(out)
    }

    /// The entry rule, then the risk manager at the decision's day (SPEC B5, B8).
    async fn entry(
        &self,
        conn: &mut PgConnection,
        account: AccountId,
        view: &MarketView,
        regime: Option<crate::domain::strategy::Regime>,
        out: &mut Evaluated,
        now: DateTime<Utc>,
    ) -> Result<(), BotError> {
        let cfg = &self.bot.strategy;
        match evaluate_entry(&view.snapshot, regime, &cfg.entry) {
            EntrySignal::Undefined => {
                out.reason = "warm-up: an indicator or the regime is not defined yet".into();
                return Ok(());
            }
            EntrySignal::No => {
                out.reason = "no entry signal".into();
                return Ok(());
            }
            EntrySignal::Entry => {}
        }
        let t = view.candle.open_time;
        risk_store::ensure_day(conn, account, t, "decision", now).await?;
        let risk = risk_store::load(conn, account, t, false).await?;
        let decided_at = t + Duration::minutes(1);
        if let Err(refusal) = risk.check_entry(decided_at, false, &cfg.risk) {
            out.reason = format!("entry signal refused by the risk manager: {refusal}");
            if let crate::domain::risk::Refusal::DailyLossLimit { pnl, limit } = &refusal {
                announce_loss_limit(conn, account, risk.day, *pnl, *limit, now).await?;
            }
            return Ok(());
        }
        let balance = paper::balance(conn, account).await?;
        let notional = cfg.orders.notional(balance).value();
        if notional < cfg.orders.min_order_krw {
            // SPEC B8: no order below the minimum; no AI call for an entry that cannot fill.
            out.reason = format!(
                "entry signal, but 20 % of the balance ({notional} KRW) is below the {} KRW minimum",
                cfg.orders.min_order_krw
            );
            return Ok(());
        }
        out.signal = "entry".into();
        out.reason = "entry rule holds".into();
        out.notional = Some(notional);
        Ok(())
    }
}

/// Announces the day's loss limit once (the first refusal or trade that reaches it).
pub(super) async fn announce_loss_limit(
    conn: &mut PgConnection,
    account: AccountId,
    day: chrono::NaiveDate,
    pnl: Krw,
    limit: Krw,
    now: DateTime<Utc>,
) -> Result<(), BotError> {
    if !risk_store::announce_loss_limit(conn, account, day).await? {
        return Ok(());
    }
    let msg = Message::Risk(RiskNote {
        event: RiskEvent::DailyLossLimit {
            pnl: pnl.value(),
            limit: limit.value(),
        },
        at: now,
        detail: format!("Realised PnL {pnl} KRW today reached the −{limit} KRW limit: no more entries on {day}."),
    });
    let key = format!("risk:loss-limit:{}:{day}", account.0);
    notify::enqueue(conn, now, &msg, Some(key)).await?;
    Ok(())
}

async fn store(
    conn: &mut PgConnection,
    account: AccountId,
    market: &Market,
    view: &MarketView,
    out: &Evaluated,
    job_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<i64>, BotError> {
    let s = &view.snapshot;
    let band = |f: fn(&crate::domain::indicators::Bands) -> f64| s.bands.as_ref().map(f);
    Ok(sqlx::query_scalar(INSERT_SIGNAL)
        .bind(account.0)
        .bind(market.as_str())
        .bind(view.candle.open_time)
        .bind(out.decided_at)
        .bind(&out.signal)
        .bind(&out.reason)
        .bind(view.candle.close)
        .bind(&out.regime)
        .bind(view.regime_distance)
        .bind(s.rsi14)
        .bind(s.rsi7)
        .bind(s.ma200)
        .bind(band(|b| b.lower))
        .bind(band(|b| b.middle))
        .bind(band(|b| b.upper))
        .bind(s.volume_ratio)
        .bind(out.notional)
        .bind(job_id)
        .bind(now)
        .fetch_optional(conn)
        .await?)
}
