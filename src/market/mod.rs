//! Market data storage (SPEC B1): candles upserted by `(market, interval, open_time)`, the
//! ledger of confirmed-empty minutes, gap detection over both, and a replay source that
//! serves candle CSVs through the domain's parser.
//!
//! It owns the `candles` and `empty_minutes` tables. Validation of a candle is the domain's
//! (`candle::screen_page`); this module only stores what passed and reports what did not.

pub mod replay;
pub mod source;
mod store;

pub use store::{find_gaps, load_candles, record_empty, store_page, Gap, StoreReport};

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
}
