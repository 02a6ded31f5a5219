//! `execute_order` (SPEC B6) for the bot: the `buy` and `sell` steps of the trade cycle,
//! and flatten orders. A fully specified order (with `client_order_id` and `price`, as
//! tests and tools send) goes straight to the paper executor (`paper::job::execute`).
//!
//! A buy: the entry from `review` (carrying `evaluate`'s signal) → the first price after the
//! decision from the market source → in the job's transaction: the account lock (the
//! executor's), the risk re-check, the fill or the stale-buy expiry, the entry counted on
//! the fill's day, the fill notified. A sell: the exit from `evaluate` (or a flatten) →
//! the whole position, under the client order id derived from the position (two exit
//! decisions cannot sell twice); its trade's PnL goes to the risk manager, which may start a
//! cooldown or reach the daily loss limit (both announced). Exits are never blocked.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;
use sqlx::PgConnection;

use super::evaluate::{announce_loss_limit, Evaluated};
use super::review::Reviewed;
use super::{market_of, output, parent, risk_store, Bot, BotError};
use crate::domain::candle::Market;
use crate::domain::money::{Krw, Price};
use crate::domain::risk::seoul_day;
use crate::market::source::Quote;
use crate::notify::{self, ExpiredNote, FillNote, Message, RiskEvent, RiskNote};
use crate::paper::job::ExecuteOrderArgs;
use crate::paper::{
    self, exit_client_order_id, AccountId, BuyAmount, Executed, Execution, OrderRequest, Side,
};
use crate::queue::handler::{Handler, JobContext, JobError, KindOptions, Outcome};

#[derive(Debug, Clone, Deserialize)]
pub struct BotOrderArgs {
    pub market: String,
    pub side: Side,
    pub parents: Option<Value>,
    /// A flatten (no parents): why, when it was decided, and the position it closes.
    pub reason: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub position_entry: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct ExecuteOrder {
    pub bot: Arc<Bot>,
}

impl Handler for ExecuteOrder {
    const KIND: &'static str = "execute_order";
    type Args = Value;

    fn options(&self) -> KindOptions {
        KindOptions {
            queue: "orders".into(),
            max_attempts: 10,
            timeout: std::time::Duration::from_secs(60),
            ..KindOptions::default()
        }
    }

    async fn run(&self, ctx: &mut JobContext, args: Value) -> Result<Outcome, JobError> {
        self.go(ctx, args).await.map_err(BotError::into_job)
    }
}

impl ExecuteOrder {
    async fn go(&self, ctx: &mut JobContext, args: Value) -> Result<Outcome, BotError> {
        let now = ctx.now();
        let done = if args.get("client_order_id").is_some() {
            if self.bot.live.is_some() {
                return Err(BotError::Invalid(
                    "a fully specified paper order cannot run on a --live worker".into(),
                ));
            }
            let direct: ExecuteOrderArgs = serde_json::from_value(args)
                .map_err(|e| JobError::permanent(format!("args: {e}")))?;
            let conn = ctx.tx().await?;
            paper::job::execute(conn, &direct, now, &self.bot.paper).await?
        } else {
            let order: BotOrderArgs = serde_json::from_value(args)
                .map_err(|e| JobError::permanent(format!("args: {e}")))?;
            match self.bot_order(ctx, order, now).await? {
                Ok(done) => done,
                Err(skipped) => {
                    return output(&serde_json::json!({"state": "skipped", "reason": skipped}))
                }
            }
        };
        output(&done)
    }
}

/// What a bot order is about, from its parents or its own args.
struct Intent {
    decided_at: DateTime<Utc>,
    notional: Option<Decimal>,
    reason: String,
    /// A sell closes the position entered then, or nothing (a late retry must not sell a
    /// newer position no rule decided to exit).
    position_entry: Option<DateTime<Utc>>,
}

impl ExecuteOrder {
    async fn bot_order(
        &self,
        ctx: &mut JobContext,
        args: BotOrderArgs,
        now: DateTime<Utc>,
    ) -> Result<Result<Executed, String>, BotError> {
        let market = market_of(&args.market)?;
        let intent = intent(&args)?;
        // The quote comes first, outside the transaction's locks (a live ticker call).
        let quote = match self
            .bot
            .source
            .price_after(&market, intent.decided_at, now)
            .await
        {
            Ok(q) => Some(q),
            Err(crate::market::MarketError::NotAvailable(_))
                if args.side == Side::Buy && now - intent.decided_at > self.bot.paper.buy_ttl =>
            {
                None // stale either way: recorded as expired below, never filled
            }
            Err(e) => return Err(e.into()),
        };
        let conn = ctx.tx().await?;
        let account = self.bot.account(conn, now).await?;
        match args.side {
            Side::Buy => self.buy(conn, account, &market, &intent, quote, now).await,
            Side::Sell => self.sell(conn, account, &market, &intent, quote, now).await,
        }
    }

    async fn buy(
        &self,
        conn: &mut PgConnection,
        account: AccountId,
        market: &Market,
        intent: &Intent,
        quote: Option<Quote>,
        now: DateTime<Utc>,
    ) -> Result<Result<Executed, String>, BotError> {
        let notional = intent.notional.ok_or_else(|| {
            BotError::Invalid("args.parents.review.signal.notional: missing".into())
        })?;
        lock_account(conn, account).await?;
        let fill_time = quote.map(|q| q.at).unwrap_or(now);
        risk_store::ensure_day(conn, account, fill_time, "fill", now).await?;
        // The re-check in the execution transaction (SPEC B5) against the decision's day.
        let decision_day = intent.decided_at - chrono::Duration::minutes(1);
        risk_store::ensure_day(conn, account, decision_day, "decision", now).await?;
        let open = paper::position(conn, account, market).await?.is_some();
        let risk = risk_store::load(conn, account, decision_day, false).await?;
        if let Err(refusal) = risk.check_entry(intent.decided_at, open, &self.bot.strategy.risk) {
            tracing::info!(%market, %refusal, "buy refused at execution by the risk manager");
            let msg = Message::Alert(crate::notify::AlertNote {
                severity: crate::notify::Severity::Warning,
                title: format!("{market} buy refused at execution"),
                detail: format!(
                    "The risk manager refused the confirmed entry decided at {}: {refusal}.",
                    intent.decided_at
                ),
                at: now,
            });
            let key = format!("refused:{}", buy_id(account, market, intent.decided_at));
            notify::enqueue(conn, now, &msg, Some(key)).await?;
            return Ok(Err(format!("refused by the risk manager: {refusal}")));
        }
        let req = self.request(
            account,
            market,
            buy_id(account, market, intent.decided_at),
            quote,
            intent,
            Side::Buy,
        )?;
        let done = match &self.bot.live {
            Some(client) => {
                let amount = crate::live::LiveAmount::Notional(Krw::new(notional));
                crate::live::execute_live(client, conn, &req, Side::Buy, amount, now)
                    .await
                    .map_err(|e| BotError::Job(e.into_job_error()))?
            }
            None => {
                let amount = BuyAmount::Notional(Krw::new(notional));
                paper::buy(conn, &req, amount, now, &self.bot.paper).await?
            }
        };
        if done.replayed {
            return Ok(Ok(done));
        }
        match &done.execution {
            Execution::Filled(fill) => {
                risk_store::record_entry_fill(conn, account, fill.filled_at, now).await?;
                self.notify_fill(conn, account, market, &done, None, now)
                    .await?;
            }
            Execution::Expired { client_order_id } => {
                let msg = Message::OrderExpired(ExpiredNote {
                    market: market.to_string(),
                    client_order_id: client_order_id.clone(),
                    decided_at: intent.decided_at,
                    expired_at: now,
                });
                notify::enqueue(conn, now, &msg, Some(format!("expired:{client_order_id}")))
                    .await?;
            }
        }
        Ok(Ok(done))
    }

    async fn sell(
        &self,
        conn: &mut PgConnection,
        account: AccountId,
        market: &Market,
        intent: &Intent,
        quote: Option<Quote>,
        now: DateTime<Utc>,
    ) -> Result<Result<Executed, String>, BotError> {
        lock_account(conn, account).await?;
        let Some(pos) = paper::position(conn, account, market).await? else {
            tracing::info!(%market, "exit decided but no position is open: nothing to sell");
            return Ok(Err("no open position".into()));
        };
        if intent
            .position_entry
            .is_some_and(|e| e != pos.entry_filled_at)
        {
            tracing::info!(%market, "the position this exit was decided for is closed already");
            return Ok(Err(
                "the position this exit was decided for is closed already".into(),
            ));
        }
        let id = exit_client_order_id(account, market, pos.entry_filled_at);
        let fill_time = quote.map(|q| q.at).unwrap_or(now);
        risk_store::ensure_day(conn, account, fill_time, "fill", now).await?;
        let req = self.request(account, market, id, quote, intent, Side::Sell)?;
        let done = match &self.bot.live {
            Some(client) => match self.live_sell(client, conn, market, &req, now).await? {
                Ok(done) => done,
                Err(skipped) => return Ok(Err(skipped)),
            },
            None => paper::sell(conn, &req, None, now, &self.bot.paper).await?,
        };
        if done.replayed {
            return Ok(Ok(done));
        }
        let Some(fill) = done.fill() else {
            return Ok(Ok(done));
        };
        let pnl = trade_pnl(conn, &fill.client_order_id).await?;
        self.notify_fill(conn, account, market, &done, Some(pnl), now)
            .await?;
        self.trade_closed(conn, account, pnl, fill.filled_at, now)
            .await?;
        Ok(Ok(done))
    }

    /// A live sell of the whole position. A position under Upbit's minimum was marked dust
    /// in this transaction: the mark is kept (the job completes) and a person is told.
    async fn live_sell(
        &self,
        client: &crate::live::UpbitClient,
        conn: &mut PgConnection,
        market: &Market,
        req: &OrderRequest,
        now: DateTime<Utc>,
    ) -> Result<Result<Executed, String>, BotError> {
        let amount = crate::live::LiveAmount::WholePosition;
        match crate::live::execute_live(client, conn, req, Side::Sell, amount, now).await {
            Ok(done) => Ok(Ok(done)),
            Err(e @ crate::live::LiveError::Dust { .. }) => {
                let msg = Message::Alert(crate::notify::AlertNote {
                    severity: crate::notify::Severity::Warning,
                    title: format!("{market} position is dust"),
                    detail: e.to_string(),
                    at: now,
                });
                let key = format!("dust:{}", req.client_order_id);
                notify::enqueue(conn, now, &msg, Some(key)).await?;
                Ok(Err(format!("dust: {e}")))
            }
            Err(e) => Err(BotError::Job(e.into_job_error())),
        }
    }

    /// A trade's PnL reaches the risk manager (on the exit fill's day); a cooldown it starts
    /// and a daily loss limit it reaches are announced once.
    async fn trade_closed(
        &self,
        conn: &mut PgConnection,
        account: AccountId,
        pnl: Krw,
        exit_time: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), BotError> {
        let cfg = &self.bot.strategy.risk;
        let effects = risk_store::record_trade(conn, account, pnl, exit_time, cfg, now).await?;
        if let Some(until) = effects.cooldown_started {
            let msg = Message::Risk(RiskNote {
                event: RiskEvent::CooldownStarted { until },
                at: now,
                detail: format!(
                    "{} losing trades in a row: no entries until {until}.",
                    cfg.max_consecutive_losses
                ),
            });
            let key = format!("risk:cooldown:{}:{}", account.0, until.timestamp());
            notify::enqueue(conn, now, &msg, Some(key)).await?;
        }
        if let Some((pnl, limit)) = effects.loss_limit {
            announce_loss_limit(conn, account, seoul_day(exit_time), pnl, limit, now).await?;
        }
        Ok(())
    }

    fn request(
        &self,
        account: AccountId,
        market: &Market,
        client_order_id: String,
        quote: Option<Quote>,
        intent: &Intent,
        side: Side,
    ) -> Result<OrderRequest, BotError> {
        let orders = &self.bot.strategy.orders;
        // Without a quote the order can only expire; the price is then never used.
        let reference = match quote {
            Some(q) => q.price,
            None => Price::new(Decimal::ONE)?,
        };
        let fill_price = match side {
            Side::Buy => orders.buy_fill(reference)?,
            Side::Sell => orders.sell_fill(reference)?,
        };
        Ok(OrderRequest {
            account,
            market: market.clone(),
            client_order_id,
            fill_price,
            decided_at: intent.decided_at,
            reason: Some(intent.reason.clone()),
            fill_time: quote.map(|q| q.at),
        })
    }

    async fn notify_fill(
        &self,
        conn: &mut PgConnection,
        account: AccountId,
        market: &Market,
        done: &Executed,
        pnl: Option<Krw>,
        now: DateTime<Utc>,
    ) -> Result<(), BotError> {
        let Some(fill) = done.fill() else {
            return Ok(());
        };
        let balance = paper::balance(conn, account).await?;
        let msg = Message::Fill(FillNote {
            mode: if self.bot.live.is_some() {
                "live"
            } else {
                "paper"
            }
            .into(),
            market: market.to_string(),
            side: fill.side.as_str().into(),
            price: fill.price.value(),
            quantity: fill.quantity.value(),
            fee: fill.fee.value(),
            client_order_id: fill.client_order_id.clone(),
            filled_at: fill.filled_at,
            reason: None,
            pnl: pnl.map(Krw::value),
            balance_after: balance.value(),
        });
        notify::enqueue(
            conn,
            now,
            &msg,
            Some(format!("fill:{}", fill.client_order_id)),
        )
        .await?;
        Ok(())
    }
}

fn intent(args: &BotOrderArgs) -> Result<Intent, BotError> {
    if args.parents.is_none() {
        let decided_at = args
            .decided_at
            .ok_or_else(|| BotError::Invalid("args.decided_at: required without parents".into()))?;
        if args.side == Side::Buy {
            return Err(BotError::Invalid(
                "a buy needs the trade-cycle's review step".into(),
            ));
        }
        let reason = args.reason.clone().unwrap_or_else(|| "manual".into());
        return Ok(Intent {
            decided_at,
            notional: None,
            reason,
            position_entry: args.position_entry,
        });
    }
    let signal: Evaluated = match args.side {
        Side::Buy => {
            let r: Reviewed = parent(&args.parents, "review")?;
            if !r.confirmed {
                return Err(BotError::Invalid(
                    "args.parents.review: not confirmed".into(),
                ));
            }
            r.signal
        }
        Side::Sell => parent(&args.parents, "evaluate")?,
    };
    let decided_at = signal
        .decided_at
        .ok_or_else(|| BotError::Invalid("the signal has no decision time".into()))?;
    Ok(Intent {
        decided_at,
        notional: signal.notional,
        reason: signal.reason,
        position_entry: signal.position_entry,
    })
}

/// The client order id of the entry decided at `decided_at`: a re-run of the buy step, or
/// a second run over the same candle, names the same order.
fn buy_id(account: AccountId, market: &Market, decided_at: DateTime<Utc>) -> String {
    format!(
        "buy:{}:{}:{}",
        account.0,
        market,
        decided_at.timestamp_micros()
    )
}

/// Takes the account lock first, as every order does (see `paper::sql`), so the risk
/// re-check reads a state no other order of the account can change before this commits.
async fn lock_account(conn: &mut PgConnection, account: AccountId) -> Result<(), BotError> {
    // Row lock on the account until the job's transaction ends (`paper::sql::LOCK_ACCOUNT`
    // takes it again, a no-op within the same transaction).
    const LOCK: &str = "SELECT id FROM accounts WHERE id = $1 FOR UPDATE";
    sqlx::query(LOCK).bind(account.0).execute(conn).await?;
    Ok(())
}

async fn trade_pnl(conn: &mut PgConnection, exit_id: &str) -> Result<Krw, BotError> {
    // No lock: the trade was inserted by this transaction (unique exit id index).
    const PNL: &str = "SELECT pnl FROM trades WHERE exit_client_order_id = $1";
    let pnl: Decimal = sqlx::query_scalar(PNL)
        .bind(exit_id)
        .fetch_one(conn)
        .await?;
    Ok(Krw::new(pnl))
}
