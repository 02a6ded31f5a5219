//! Market data storage (SPEC B1): candles upserted by `(market, interval, open_time)`, the
//! ledger of confirmed-empty minutes, gap detection over both, and a replay source that
//! serves candle CSVs through the domain's parser; the [`MarketSource`] trait over replay and
//! the Upbit REST API (`upbit`, its pure parsers in `upbit_parse`), and the `backfill` job.
//!
//! It owns the `candles` and `empty_minutes` tables. Validation of a candle is the domain's
//! (`candle::screen_page`); this module only stores what passed and reports what did not.

pub mod backfill;
pub mod replay;
pub mod source;
mod store;
pub mod upbit;
pub mod upbit_parse;

pub use backfill::{backfill_job, backfill_range, Backfill, BackfillArgs, BackfillReport};
pub use source::{configured_source, MarketSource, Replay, DEFAULT_CANDLES};
pub use store::{find_gaps, load_candles, record_empty, store_page, Gap, StoreReport};
pub use upbit::{UpbitConfig, UpbitHttp, UpbitSource};

use crate::queue::JobError;

/// Errors of market data storage.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("{0}")]
    Csv(#[from] crate::domain::candle_csv::CsvError),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("market data not available: {0}")]
    NotAvailable(String),
    #[error("unusable market data: {0}")]
    Payload(String),
    #[error("gap detection from {from} to {to}: the range is empty or too long")]
    BadRange {
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    },
    /// HTTP 429 after the source's own back-off ran out; try again after `retry_after`.
    #[error("rate limited by the exchange; retry after {retry_after:?}")]
    RateLimited { retry_after: std::time::Duration },
    /// HTTP 418: the exchange has banned this client for a while. Stop and alert.
    #[error("banned by the exchange (HTTP 418): {detail}")]
    Banned { detail: String },
    /// Any other non-success status, with the exchange's error name and message.
    #[error("exchange answered HTTP {status}: {detail}")]
    Http { status: u16, detail: String },
    /// Connection, TLS or timeout failure: nothing was answered.
    #[error("cannot reach the exchange: {0}")]
    Transport(String),
}

impl MarketError {
    /// How a job handler fails on this error: a 429 waits as the exchange asked, a ban,
    /// bad input or a client error (4xx) is permanent, the rest is retried with backoff.
    pub fn into_job_error(self) -> JobError {
        let message = self.to_string();
        match self {
            MarketError::RateLimited { retry_after } => JobError::retry_after(message, retry_after),
            MarketError::Banned { .. } | MarketError::Csv(_) | MarketError::BadRange { .. } => {
                JobError::permanent(message)
            }
            MarketError::Http { status, .. } if (400..500).contains(&status) => {
                JobError::permanent(message)
            }
            MarketError::Sql(_)
            | MarketError::Io { .. }
            | MarketError::Http { .. }
            | MarketError::Transport(_)
            | MarketError::Payload(_)
            | MarketError::NotAvailable(_) => JobError::retry(message),
        }
    }
}
