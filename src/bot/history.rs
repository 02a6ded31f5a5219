//! The market as the strategy sees it at a decision: the 1-minute indicators at candle t
//! and the regime of the hours closed by t's close, rebuilt from stored candles with the
//! same domain indicator code the backtest feeds (SPEC B2, B3, B8; no look-ahead: nothing
//! after t is loaded).
//!
//! RSI is path-dependent (Wilder smoothing), so the indicators are replayed over a window
//! of [`WINDOW_MINUTES`] candles ending at t: the start's influence on RSI decays as
//! (13/14)^n, far below f64 resolution after a day, so decisions equal the backtest's over
//! the whole history.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgConnection;

use super::BotError;
use crate::domain::candle::{aggregate_hourly, extend_hourly, Candle, Interval, Market};
use crate::domain::indicator_table::to_f64;
use crate::domain::strategy::{RegimeIndicators, SignalIndicators, Snapshot};
use crate::market::load_candles;

/// 1-minute candles replayed through the indicators before a decision.
pub const WINDOW_MINUTES: i64 = 1440;
/// Hours of context for the regime (SMA200 of hourly closes, with margin for gaps).
pub const REGIME_HOURS: i64 = 260;

/// What the strategy sees at the close of candle t.
#[derive(Debug, Clone)]
pub struct MarketView {
    pub candle: Candle,
    pub snapshot: Snapshot,
    pub regime_distance: Option<f64>,
    /// Hourly candles closed by t's close, ascending (the reviewer's input is the last 24).
    pub hours: Vec<Candle>,
}

/// The view at the close of the stored 1-minute candle opening at `t`.
pub async fn view_at(
    conn: &mut PgConnection,
    market: &Market,
    t: DateTime<Utc>,
) -> Result<MarketView, BotError> {
    let end = t + Duration::minutes(1);
    let minutes = load_candles(
        conn,
        market,
        Interval::M1,
        end - Duration::minutes(WINDOW_MINUTES),
        end,
    )
    .await?;
    let candle = minutes
        .last()
        .filter(|c| c.open_time == t)
        .cloned()
        .ok_or_else(|| BotError::Invalid(format!("no stored {market} 1m candle at {t}")))?;
    let mut ind = SignalIndicators::default();
    let mut snapshot = Snapshot::default();
    for c in &minutes {
        snapshot = ind.update(to_f64(c.close), to_f64(c.volume));
    }
    let hours = closed_hours(conn, market, end).await?;
    let mut regime = RegimeIndicators::default();
    for h in &hours {
        regime.update(to_f64(h.close));
    }
    Ok(MarketView {
        candle,
        snapshot,
        regime_distance: regime.distance(),
        hours,
    })
}

/// Hourly candles closed by `at`: the stored 1h candles, extended by hours aggregated from
/// stored minutes where none is stored (SPEC B3). Minutes are only loaded after the last
/// stored hour, so a long hourly history costs one small query.
pub async fn closed_hours(
    conn: &mut PgConnection,
    market: &Market,
    at: DateTime<Utc>,
) -> Result<Vec<Candle>, BotError> {
    let from = at - Duration::hours(REGIME_HOURS);
    let stored = load_candles(conn, market, Interval::H1, from, at).await?;
    let minutes_from = stored
        .last()
        .map(|h| h.open_time + Duration::hours(1))
        .unwrap_or(from);
    let minutes = load_candles(conn, market, Interval::M1, minutes_from, at).await?;
    let mut hours = extend_hourly(stored, aggregate_hourly(&minutes));
    hours.retain(|h| h.close_time(Interval::H1) <= at);
    Ok(hours)
}

/// The open time of the newest stored 1-minute candle. No locks; reads the primary key's
/// last entry for the market (an index-only backward scan).
pub async fn newest_minute(
    conn: &mut PgConnection,
    market: &Market,
) -> Result<Option<DateTime<Utc>>, BotError> {
    const NEWEST: &str = "SELECT max(open_time) FROM candles WHERE market = $1 AND interval = '1m'";
    Ok(sqlx::query_scalar(NEWEST)
        .bind(market.as_str())
        .fetch_one(conn)
        .await?)
}

/// The close of the last stored 1-minute candle that opened before `at` (the previous
/// candle's close of SPEC B8's day-start equity).
pub async fn last_close_before(
    conn: &mut PgConnection,
    market: &Market,
    at: DateTime<Utc>,
) -> Result<Option<(DateTime<Utc>, rust_decimal::Decimal)>, BotError> {
    // No locks; a backward primary-key scan from `at`.
    const LAST_CLOSE: &str = "SELECT open_time, close FROM candles \
         WHERE market = $1 AND interval = '1m' AND open_time < $2 \
         ORDER BY open_time DESC LIMIT 1";
    Ok(sqlx::query_as(LAST_CLOSE)
        .bind(market.as_str())
        .bind(at)
        .fetch_optional(conn)
        .await?)
}
