//! The Upbit live executor (SPEC B6): orders placed on the exchange under our client order
//! id (`identifier`), polled until `done` or `cancel`, then booked into the same ledger as
//! paper orders (`orders`, `fills`, `trades`, `positions`, `accounts`) by the paper
//! executor's functions at the exchange's average fill price.
//!
//! It owns `live_orders` (the exchange's uuid and last polled state of each order) and
//! `live_fills` (each trade of a partially filled order). It never decides: callers (the
//! `execute_order` job with `--live`) pass the decision. Only with keys; never in tests
//! against anything but a local server.

mod exchange;
mod executor;
pub mod jwt;

pub use exchange::{
    parse_accounts, parse_order, Balance, ExchangeOrder, ExchangeTrade, UpbitClient,
    ACCESS_KEY_VAR, SECRET_KEY_VAR,
};
pub use executor::{execute_live, reconcile, Difference, LiveAmount};

use crate::market::MarketError;
use crate::paper::PaperError;
use crate::queue::JobError;

/// Errors of the live executor.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("live trading needs {ACCESS_KEY_VAR} and {SECRET_KEY_VAR}")]
    NoKeys,
    #[error("{0}")]
    Market(#[from] MarketError),
    #[error("{0}")]
    Ledger(#[from] PaperError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// A sell worth less than Upbit's minimum order cannot be placed: the position is
    /// marked dust (alert on it) and left alone.
    #[error("sell of {market} worth {notional} KRW is under the {minimum} KRW minimum: position marked dust")]
    Dust {
        market: String,
        notional: rust_decimal::Decimal,
        minimum: rust_decimal::Decimal,
    },
    #[error("buy of {notional} KRW is under the {minimum} KRW minimum")]
    BelowMinimum {
        notional: rust_decimal::Decimal,
        minimum: rust_decimal::Decimal,
    },
    /// The exchange cancelled the order with nothing filled.
    #[error("order {client_order_id} ended `{state}` with nothing filled")]
    NotFilled {
        client_order_id: String,
        state: String,
    },
    /// Still open after the polls allowed; the next attempt finds it by identifier.
    #[error("order {client_order_id} is still `{state}` after {polls} polls")]
    StillOpen {
        client_order_id: String,
        state: String,
        polls: u32,
    },
    #[error("{0}")]
    InvalidRequest(String),
}

impl LiveError {
    /// How an `execute_order` job fails on this error: exchange errors as [`MarketError`]
    /// says, an open order and a database error retry, refusals are permanent.
    pub fn into_job_error(self) -> JobError {
        match self {
            LiveError::Market(e) => e.into_job_error(),
            LiveError::StillOpen { .. } | LiveError::Sql(_) => JobError::retry(self.to_string()),
            LiveError::Ledger(PaperError::Sql(_)) => JobError::retry(self.to_string()),
            other => JobError::permanent(other.to_string()),
        }
    }
}
