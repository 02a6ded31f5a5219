//! The SQL side of market data: page upserts, the empty-minute ledger and gap detection.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::MarketError;
use crate::domain::candle::{screen_page, Candle, Interval, Market, Rejected};

/// Upserts a page in one statement. Row locks: each inserted or updated candle row, until
/// the caller's transaction ends; two collectors storing the same minute serialise on it,
/// and the second one's values win (the later fetch of a forming candle is the fresher).
/// The `WHERE … IS DISTINCT FROM` skips rewriting rows that did not change.
const UPSERT_CANDLES: &str = "INSERT INTO candles (market, interval, open_time, open, high, \
     low, close, volume, updated_at) \
     SELECT $1, $2, t.*, $9 FROM UNNEST($3::timestamptz[], $4::numeric[], $5::numeric[], \
     $6::numeric[], $7::numeric[], $8::numeric[]) AS t \
     ON CONFLICT (market, interval, open_time) DO UPDATE SET open = EXCLUDED.open, \
     high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close, \
     volume = EXCLUDED.volume, updated_at = EXCLUDED.updated_at \
     WHERE (candles.open, candles.high, candles.low, candles.close, candles.volume) \
     IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, \
     EXCLUDED.volume)";

/// Records minutes confirmed empty; a minute already recorded is left as it is (no lock
/// held on it beyond the unique-index check).
const RECORD_EMPTY: &str = "INSERT INTO empty_minutes (market, interval, open_time, \
     confirmed_at) SELECT $1, $2, t, $4 FROM UNNEST($3::timestamptz[]) AS t \
     ON CONFLICT DO NOTHING";

/// Un-records empty minutes that a candle arrived for after all (a late trade, or a
/// confirmation that was wrong): the ledger must never hide a stored candle from readers
/// of "what is missing". Row locks: the deleted ledger rows, until the caller commits.
const UNRECORD_EMPTY: &str = "DELETE FROM empty_minutes WHERE market = $1 AND interval = $2 \
     AND open_time = ANY($3::timestamptz[])";

/// Missing open times in `[from, to)` on the interval's grid, neither stored nor confirmed
/// empty, merged into ranges (gaps and islands: consecutive missing slots share
/// `t − n × step`). No locks; reads the primary keys of both tables.
const FIND_GAPS: &str = "WITH missing AS ( \
     SELECT t FROM generate_series($3::timestamptz, $4::timestamptz - make_interval(mins => $5), \
     make_interval(mins => $5)) AS t \
     WHERE NOT EXISTS (SELECT 1 FROM candles c \
       WHERE c.market = $1 AND c.interval = $2 AND c.open_time = t) \
     AND NOT EXISTS (SELECT 1 FROM empty_minutes e \
       WHERE e.market = $1 AND e.interval = $2 AND e.open_time = t)), \
     islands AS (SELECT t, t - make_interval(mins => $5) * row_number() OVER (ORDER BY t) AS g \
       FROM missing) \
     SELECT min(t), max(t) + make_interval(mins => $5) FROM islands GROUP BY g ORDER BY 1";

/// Stored candles in `[from, to)`, ascending. No locks.
const LOAD_CANDLES: &str = "SELECT open_time, open, high, low, close, volume FROM candles \
     WHERE market = $1 AND interval = $2 AND open_time >= $3 AND open_time < $4 \
     ORDER BY open_time";

/// The longest range gap detection scans in one call (a year of minutes).
const MAX_SLOTS: i64 = 366 * 24 * 60;

/// What storing a page did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoreReport {
    /// Candles inserted or changed (an unchanged re-fetch counts 0).
    pub written: u64,
    /// Malformed candles, not stored, with their index in the page and the reason.
    pub rejected: Vec<Rejected>,
}

/// A half-open range `[from, to)` of open times with no candle and no empty-minute record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Screens a page with the domain rules and upserts the valid candles; malformed ones are
/// reported and the rest of the page kept (SPEC B1). Screening also drops duplicate times,
/// which one `ON CONFLICT DO UPDATE` statement could not take twice. A stored candle's
/// minute leaves the empty-minute ledger.
pub async fn store_page(
    conn: &mut PgConnection,
    market: &Market,
    interval: Interval,
    page: Vec<Candle>,
    now: DateTime<Utc>,
) -> Result<StoreReport, MarketError> {
    let (kept, rejected) = screen_page(page, interval);
    if kept.is_empty() {
        return Ok(StoreReport {
            written: 0,
            rejected,
        });
    }
    let col = |f: fn(&Candle) -> Decimal| kept.iter().map(f).collect::<Vec<_>>();
    let times: Vec<DateTime<Utc>> = kept.iter().map(|c| c.open_time).collect();
    let done = sqlx::query(UPSERT_CANDLES)
        .bind(market.as_str())
        .bind(interval.as_str())
        .bind(&times)
        .bind(col(|c| c.open))
        .bind(col(|c| c.high))
        .bind(col(|c| c.low))
        .bind(col(|c| c.close))
        .bind(col(|c| c.volume))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query(UNRECORD_EMPTY)
        .bind(market.as_str())
        .bind(interval.as_str())
        .bind(&times)
        .execute(&mut *conn)
        .await?;
    Ok(StoreReport {
        written: done.rows_affected(),
        rejected,
    })
}

/// Records open times confirmed to have no candle, so gap detection skips them.
pub async fn record_empty(
    conn: &mut PgConnection,
    market: &Market,
    interval: Interval,
    times: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Result<u64, MarketError> {
    let done = sqlx::query(RECORD_EMPTY)
        .bind(market.as_str())
        .bind(interval.as_str())
        .bind(times)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// The missing ranges of `[from, to)`. `from` is rounded up to the interval's grid.
pub async fn find_gaps(
    conn: &mut PgConnection,
    market: &Market,
    interval: Interval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Gap>, MarketError> {
    let step = interval.minutes();
    let start = align_up(from, step);
    let slots = (to - start).num_minutes() / step;
    if slots <= 0 || slots > MAX_SLOTS {
        return Err(MarketError::BadRange { from, to });
    }
    // Whole slots only: the end is start + slots × step, at or before `to`.
    let end = start + Duration::minutes(slots * step);
    let minutes = i32::try_from(step).map_err(|_| MarketError::BadRange { from, to })?;
    let rows: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(FIND_GAPS)
        .bind(market.as_str())
        .bind(interval.as_str())
        .bind(start)
        .bind(end)
        .bind(minutes)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(from, to)| Gap { from, to })
        .collect())
}

type CandleRow = (DateTime<Utc>, Decimal, Decimal, Decimal, Decimal, Decimal);

/// The stored candles of `[from, to)`, ascending.
pub async fn load_candles(
    conn: &mut PgConnection,
    market: &Market,
    interval: Interval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Candle>, MarketError> {
    let rows: Vec<CandleRow> = sqlx::query_as(LOAD_CANDLES)
        .bind(market.as_str())
        .bind(interval.as_str())
        .bind(from)
        .bind(to)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(open_time, open, high, low, close, volume)| Candle {
            open_time,
            open,
            high,
            low,
            close,
            volume,
        })
        .collect())
}

/// The first grid point at or after `t` (the grid is UTC-aligned, as Upbit's).
pub(crate) fn align_up(t: DateTime<Utc>, step_minutes: i64) -> DateTime<Utc> {
    let step = step_minutes * 60;
    let secs = t.timestamp();
    let rem = secs.rem_euclid(step);
    let base = secs - rem;
    let up = if rem == 0 && t.timestamp_subsec_nanos() == 0 {
        base
    } else {
        base + step
    };
    DateTime::from_timestamp(up, 0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_up_rounds_to_the_next_grid_point() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            align_up(t("2025-09-01T00:00:00Z"), 1),
            t("2025-09-01T00:00:00Z")
        );
        assert_eq!(
            align_up(t("2025-09-01T00:00:01Z"), 1),
            t("2025-09-01T00:01:00Z")
        );
        assert_eq!(
            align_up(t("2025-09-01T00:07:00Z"), 5),
            t("2025-09-01T00:10:00Z")
        );
    }
}
