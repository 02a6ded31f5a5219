//! The `execute_order` job (queue `orders`): one order decision executed by the paper
//! executor in the job's own transaction, so the fill and the job's completion commit
//! together. A retried or re-enqueued job with the same client order id finds the earlier
//! fill and does nothing more (DESIGN invariant 6).
//!
//! Args: `{ "account"?: "paper", "market": "KRW-BTC", "side": "buy"|"sell",
//! "client_order_id": "…", "price": "150000000", "quantity"?: "0.001", "notional"?: "200000",
//! "decided_at": "2025-09-01T00:01:00Z", "reason"?: "take_profit" }`. `price` is the
//! reference price (the first price after the decision); the handler applies the slippage
//! of `[orders]` against us. A buy needs exactly one of `quantity` and `notional`; a sell
//! with neither sells the whole position.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;

use sqlx::PgConnection;

use super::{
    buy, default_balance, open_account, sell, BuyAmount, Executed, OrderRequest, PaperConfig,
    PaperError, Side,
};
use crate::domain::candle::Market;
use crate::domain::money::{Krw, Price, Qty};
use crate::queue::handler::{Handler, JobContext, JobError, KindOptions, Outcome};

/// The account orders go to when the job names none.
pub const DEFAULT_ACCOUNT: &str = "paper";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteOrderArgs {
    #[serde(default = "default_account")]
    pub account: String,
    pub market: String,
    pub side: Side,
    pub client_order_id: String,
    pub price: Decimal,
    pub quantity: Option<Decimal>,
    pub notional: Option<Decimal>,
    pub decided_at: DateTime<Utc>,
    pub reason: Option<String>,
    /// When `price` was quoted; the fill is recorded then (default: at execution).
    pub price_time: Option<DateTime<Utc>>,
}

fn default_account() -> String {
    DEFAULT_ACCOUNT.to_string()
}

/// The `execute_order` handler with its executor options.
#[derive(Debug, Clone, Default)]
pub struct ExecuteOrder {
    pub config: PaperConfig,
}

impl Handler for ExecuteOrder {
    const KIND: &'static str = "execute_order";
    type Args = ExecuteOrderArgs;

    fn options(&self) -> KindOptions {
        KindOptions {
            queue: "orders".into(),
            ..KindOptions::default()
        }
    }

    async fn run(&self, ctx: &mut JobContext, args: ExecuteOrderArgs) -> Result<Outcome, JobError> {
        let now = ctx.now();
        let conn = ctx.tx().await?;
        let done = execute(conn, &args, now, &self.config).await?;
        let output = serde_json::to_value(&done).map_err(|e| JobError::retry(e.to_string()))?;
        Ok(Outcome::output(output))
    }
}

/// Executes one fully specified order in `conn` (the job's transaction).
pub async fn execute(
    conn: &mut PgConnection,
    args: &ExecuteOrderArgs,
    now: DateTime<Utc>,
    cfg: &PaperConfig,
) -> Result<Executed, JobError> {
    let account = open_account(conn, &args.account, default_balance(), now).await?;
    let (req, side) = request(args, account, cfg).map_err(JobError::permanent)?;
    match side {
        Side::Buy => {
            let amount = buy_amount(args).map_err(JobError::permanent)?;
            buy(conn, &req, amount, now, cfg).await
        }
        Side::Sell => {
            let qty = args.quantity.map(Qty::new).transpose();
            let qty = qty.map_err(|e| JobError::permanent(e.to_string()))?;
            sell(conn, &req, qty, now, cfg).await
        }
    }
    .map_err(job_error)
}

/// A refusal will not change on retry: the job is discarded with the reason. A database
/// error may be transient and is retried.
pub fn job_error(e: PaperError) -> JobError {
    match e {
        PaperError::Sql(_) => JobError::from(e),
        other => JobError::permanent(other.to_string()),
    }
}

fn request(
    args: &ExecuteOrderArgs,
    account: super::AccountId,
    cfg: &PaperConfig,
) -> Result<(OrderRequest, Side), String> {
    let market: Market = args.market.parse().map_err(|e| format!("{e}"))?;
    let reference = Price::new(args.price).map_err(|e| e.to_string())?;
    let fill = match args.side {
        Side::Buy => cfg.orders.buy_fill(reference),
        Side::Sell => cfg.orders.sell_fill(reference),
    }
    .map_err(|e| e.to_string())?;
    let req = OrderRequest {
        account,
        market,
        client_order_id: args.client_order_id.clone(),
        fill_price: fill,
        decided_at: args.decided_at,
        reason: args.reason.clone(),
        fill_time: args.price_time,
    };
    Ok((req, args.side))
}

fn buy_amount(args: &ExecuteOrderArgs) -> Result<BuyAmount, String> {
    match (args.quantity, args.notional) {
        (Some(q), None) => Ok(BuyAmount::Quantity(Qty::new(q).map_err(|e| e.to_string())?)),
        (None, Some(n)) if n > Decimal::ZERO => Ok(BuyAmount::Notional(Krw::new(n))),
        _ => Err("a buy needs exactly one of `quantity` and a positive `notional`".into()),
    }
}
