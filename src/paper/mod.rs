//! The paper executor (SPEC B6): orders filled against a simulated account in PostgreSQL,
//! with the same order arithmetic as the backtest (`domain::portfolio`).
//!
//! It owns the `accounts`, `positions`, `orders`, `fills` and `trades` tables. Each order
//! runs in the caller's transaction (a job's `ctx.tx()`), locks the account row and then the
//! position row `FOR UPDATE`, and is keyed by its client order id, so concurrent orders
//! serialise and a retried one finds its earlier fill (DESIGN invariants 5 and 6). It knows
//! nothing about strategy or risk: callers decide, this module only executes.
//!
//! Options ([`PaperConfig`]): the `[orders]` arithmetic of `strategy.toml`, and
//! `buy_ttl` [2 min]: a buy decided longer ago than that is recorded as expired, not filled.

mod executor;
pub mod job;
mod sql;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::domain::candle::Market;
use crate::domain::money::{Krw, MoneyError, Price, Qty};
use crate::domain::portfolio::{OrderConfig, OrderRefusal};

pub use executor::{buy, position, sell, OpenPosition};

/// Errors of the paper executor. Refusals leave the database unchanged.
#[derive(Debug, thiserror::Error)]
pub enum PaperError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("no paper account with id {0}")]
    NoAccount(i64),
    #[error("buy refused: {0}")]
    Refused(#[from] OrderRefusal),
    #[error("sell of {requested} exceeds the position of {held} in {market}")]
    SellExceedsPosition {
        market: String,
        requested: Qty,
        held: Qty,
    },
    #[error("no open position in {0} to sell")]
    NoPosition(String),
    #[error("order quantity rounds to zero at {0} decimals")]
    ZeroQuantity(u32),
    #[error("client order id {0} was already used for a different order")]
    ClientOrderIdReused(String),
    #[error("stored value is not a valid amount: {0}")]
    Money(#[from] MoneyError),
}

/// The executor's options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperConfig {
    pub orders: OrderConfig,
    /// A buy older than this at execution is stale (SPEC B6); exits never expire.
    pub buy_ttl: Duration,
}

impl Default for PaperConfig {
    fn default() -> Self {
        PaperConfig {
            orders: OrderConfig::default(),
            buy_ttl: Duration::minutes(2),
        }
    }
}

/// The starting balance of a paper account (SPEC B6).
pub fn default_balance() -> Krw {
    Krw::new(Decimal::from(1_000_000))
}

/// A row of `accounts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct AccountId(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

/// How much to buy: a quantity, or a KRW budget sized with the domain arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuyAmount {
    Quantity(Qty),
    Notional(Krw),
}

/// What every order carries. `fill_price` already includes slippage (SPEC B6/B8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    pub account: AccountId,
    pub market: Market,
    pub client_order_id: String,
    pub fill_price: Price,
    pub decided_at: DateTime<Utc>,
    pub reason: Option<String>,
    /// When the reference price was quoted (replay: the next candle's open time); the fill,
    /// the position's entry and the trade's exit are recorded at that time. `None`: the
    /// execution's `now` (a live quote).
    pub fill_time: Option<DateTime<Utc>>,
}

/// A row of `fills`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fill {
    pub client_order_id: String,
    pub side: Side,
    pub price: Price,
    pub quantity: Qty,
    pub fee: Krw,
    pub filled_at: DateTime<Utc>,
}

/// What became of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Execution {
    Filled(Fill),
    /// A stale buy, recorded and never filled.
    Expired {
        client_order_id: String,
    },
}

/// An execution and whether it was found from an earlier run (`replayed`) rather than made now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Executed {
    #[serde(flatten)]
    pub execution: Execution,
    pub replayed: bool,
}

impl Executed {
    pub fn fill(&self) -> Option<&Fill> {
        match &self.execution {
            Execution::Filled(f) => Some(f),
            Execution::Expired { .. } => None,
        }
    }
}

/// The client order id of the exit of a position: derived from the position's entry fill,
/// so two exit decisions for the same position name the same order and cannot sell twice.
/// It names the position's *full* exit: a partial sell needs an id of its own, or the later
/// full exit would replay it.
pub fn exit_client_order_id(account: AccountId, market: &Market, entry: DateTime<Utc>) -> String {
    format!("sell:{}:{}:{}", account.0, market, entry.timestamp_micros())
}

/// The account named `name`, opened with `balance` if it does not exist yet.
pub async fn open_account(
    conn: &mut PgConnection,
    name: &str,
    balance: Krw,
    now: DateTime<Utc>,
) -> Result<AccountId, PaperError> {
    let created: Option<i64> = sqlx::query_scalar(sql::OPEN_ACCOUNT)
        .bind(name)
        .bind(balance.value())
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    let id = match created {
        Some(id) => id,
        None => {
            sqlx::query_scalar(sql::ACCOUNT_BY_NAME)
                .bind(name)
                .fetch_one(&mut *conn)
                .await?
        }
    };
    Ok(AccountId(id))
}

/// `paper reset`: the account's balance becomes `balance` and its positions are dropped.
pub async fn reset_account(
    conn: &mut PgConnection,
    name: &str,
    balance: Krw,
    now: DateTime<Utc>,
) -> Result<AccountId, PaperError> {
    let id: i64 = sqlx::query_scalar(sql::RESET_ACCOUNT)
        .bind(name)
        .bind(balance.value())
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query(sql::DELETE_POSITIONS)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(AccountId(id))
}

/// The account's KRW balance (no lock: for reports and tests).
pub async fn balance(conn: &mut PgConnection, account: AccountId) -> Result<Krw, PaperError> {
    let b: Option<Decimal> = sqlx::query_scalar(sql::ACCOUNT_BALANCE)
        .bind(account.0)
        .fetch_optional(conn)
        .await?;
    b.map(Krw::new).ok_or(PaperError::NoAccount(account.0))
}
