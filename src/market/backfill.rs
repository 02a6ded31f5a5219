//! Backfill (SPEC B1): fetch a range of candles from a [`MarketSource`], store them, and
//! record as empty the slots the source confirmed have no candle, so gap detection stops
//! asking for them and a backfill terminates.
//!
//! [`backfill_range`] is shared by the `backfill` job kind ([`Backfill`], queue `market`)
//! and the `coinpilot backfill` command. It walks the range in windows of one Upbit page
//! (200 slots), so memory stays bounded and the command can show progress per window.
//!
//! Args of the job: `{ "market": "KRW-BTC", "interval": "1m", "from": "…Z", "to": "…Z" }`,
//! unique per (market, interval, from, to) while live.

use std::sync::Arc;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::source::MarketSource;
use super::store::{align_up, record_empty, store_page, Gap};
use super::upbit::PAGE_SIZE;
use super::MarketError;
use crate::domain::candle::{Interval, Market};
use crate::queue::handler::{Handler, JobContext, JobError, KindOptions, Outcome};
use crate::queue::NewJob;

/// The job kind name.
pub const KIND: &str = "backfill";

/// The queue backfills run on, apart from trading so a long backfill delays no order.
pub const QUEUE: &str = "market";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillArgs {
    pub market: String,
    pub interval: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// The job that fills `gap` (for the collector to enqueue after gap detection).
pub fn backfill_job(market: &Market, interval: Interval, gap: Gap) -> NewJob {
    let args = BackfillArgs {
        market: market.to_string(),
        interval: interval.to_string(),
        from: gap.from,
        to: gap.to,
    };
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let key = format!("{KIND}:{market}:{interval}:{}:{}", ts(gap.from), ts(gap.to));
    NewJob::new(KIND, serde_json::json!(args))
        .with_queue(QUEUE)
        .with_unique_key(key)
}

/// A rejected candle as reported: where, which field, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedCandle {
    pub open_time: DateTime<Utc>,
    pub field: &'static str,
    pub reason: String,
}

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackfillReport {
    pub source: String,
    /// Candles the source returned (valid or not).
    pub fetched: usize,
    /// Candles inserted or changed.
    pub stored: u64,
    pub rejected: Vec<RejectedCandle>,
    /// Slots newly recorded in the empty-minute ledger.
    pub confirmed_empty: u64,
    /// Windows fetched (one Upbit page each, roughly).
    pub windows: usize,
}

/// Progress after each window: the report so far and the end of the window just done.
pub type Progress<'a> = dyn FnMut(&BackfillReport, DateTime<Utc>) + Send + 'a;

/// Fetches `[from, to)` window by window and stores it on `conn`; slots of a window that
/// are complete by `now` and that the source returned no candle for are recorded empty.
#[allow(clippy::too_many_arguments)] // the job args, parsed, plus conn, source, clock and progress
pub async fn backfill_range(
    conn: &mut sqlx::PgConnection,
    source: &dyn MarketSource,
    market: &Market,
    interval: Interval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
    progress: &mut Progress<'_>,
) -> Result<BackfillReport, MarketError> {
    if from >= to {
        return Err(MarketError::BadRange { from, to });
    }
    let step = interval.duration();
    let window = step * PAGE_SIZE as i32;
    let mut report = BackfillReport {
        source: source.name().to_string(),
        ..BackfillReport::default()
    };
    let mut start = align_up(from, interval.minutes());
    while start < to && start + step <= now {
        let end = (start + window).min(to);
        let page = source.candles(market, interval, start, end, now).await?;
        report.fetched += page.len();
        let times: Vec<DateTime<Utc>> = page.iter().map(|c| c.open_time).collect();
        let stored = store_page(conn, market, interval, page, now).await?;
        report.stored += stored.written;
        report
            .rejected
            .extend(stored.rejected.iter().map(|r| RejectedCandle {
                open_time: times.get(r.index).copied().unwrap_or(start),
                field: r.error.field(),
                reason: r.error.to_string(),
            }));
        // A malformed candle still says the slot is not empty: it is rejected, not absent.
        let seen: std::collections::HashSet<_> = times.into_iter().collect();
        let empty = empty_slots(start, end, step, now, &seen);
        report.confirmed_empty += record_empty(conn, market, interval, &empty, now).await?;
        report.windows += 1;
        progress(&report, end);
        start = end;
    }
    Ok(report)
}

/// The grid slots of `[start, end)` complete by `now` that no returned candle occupies.
fn empty_slots(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    step: Duration,
    now: DateTime<Utc>,
    seen: &std::collections::HashSet<DateTime<Utc>>,
) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut t = start;
    while t < end && t + step <= now {
        if !seen.contains(&t) {
            out.push(t);
        }
        t += step;
    }
    out
}

/// The `backfill` handler with its source.
#[derive(Debug, Clone)]
pub struct Backfill {
    pub source: Arc<dyn MarketSource>,
}

impl Handler for Backfill {
    const KIND: &'static str = KIND;
    type Args = BackfillArgs;

    fn options(&self) -> KindOptions {
        KindOptions {
            queue: QUEUE.into(),
            ..KindOptions::default()
        }
    }

    async fn run(&self, ctx: &mut JobContext, args: BackfillArgs) -> Result<Outcome, JobError> {
        let market: Market = args
            .market
            .parse()
            .map_err(|e| JobError::permanent(format!("backfill `market`: {e}")))?;
        let interval: Interval = args
            .interval
            .parse()
            .map_err(|e| JobError::permanent(format!("backfill `interval`: {e}")))?;
        let now = ctx.now();
        let conn = ctx.tx().await?;
        let report = backfill_range(
            conn,
            self.source.as_ref(),
            &market,
            interval,
            args.from,
            args.to,
            now,
            &mut |_, _| {},
        )
        .await
        .map_err(MarketError::into_job_error)?;
        let output = serde_json::to_value(&report).map_err(|e| JobError::retry(e.to_string()))?;
        Ok(Outcome::output(output))
    }
}
