//! `collect_candles` (SPEC B1), the first step of the trade cycle: fetches the closed
//! 1-minute candles since the last stored one from the market source, upserts them
//! (`ON CONFLICT … DO UPDATE`), records the minutes the source confirmed empty, and
//! alerts when no new candle arrived for 5 minutes. Its output names the newest closed
//! candle, which `evaluate_signal` decides on.

use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::{market_of, output, Bot, BotError};
use crate::domain::candle::{Candle, Interval, Market};
use crate::market::{backfill_job, find_gaps, record_empty, store_page};
use crate::notify::{self, AlertNote, Message, Severity};
use crate::queue::handler::{Handler, JobContext, JobError, KindOptions, Outcome};

/// The longest range one collection fetches; older gaps are the backfill's.
const MAX_FETCH: i64 = 24 * 60;
/// No new candle for this long raises an alert (SPEC B7).
const STALE_AFTER: i64 = 5;

#[derive(Debug, Clone, Deserialize)]
pub struct CollectArgs {
    pub market: String,
    #[serde(default = "one_minute")]
    pub unit: String,
}

fn one_minute() -> String {
    "1m".into()
}

/// The step's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Collected {
    pub market: String,
    /// Open time of the newest stored closed candle: the one to decide on.
    pub candle: Option<DateTime<Utc>>,
    pub fetched: usize,
    pub written: u64,
    pub rejected: Vec<String>,
    pub empty_minutes: usize,
}

#[derive(Debug, Clone)]
pub struct CollectCandles {
    pub bot: Arc<Bot>,
}

impl Handler for CollectCandles {
    const KIND: &'static str = "collect_candles";
    type Args = CollectArgs;

    fn options(&self) -> KindOptions {
        KindOptions {
            queue: "market".into(),
            max_attempts: 5,
            timeout: std::time::Duration::from_secs(60),
            ..KindOptions::default()
        }
    }

    async fn run(&self, ctx: &mut JobContext, args: CollectArgs) -> Result<Outcome, JobError> {
        self.go(ctx, args).await.map_err(BotError::into_job)
    }
}

impl CollectCandles {
    async fn go(&self, ctx: &mut JobContext, args: CollectArgs) -> Result<Outcome, BotError> {
        let market = market_of(&args.market)?;
        if args.unit != "1m" {
            return Err(BotError::Invalid(format!(
                "args.unit: `{}` is not collected (the strategy trades 1m candles)",
                args.unit
            )));
        }
        let now = ctx.now();
        let job_id = ctx.job.id.0;
        let conn = ctx.tx().await?;
        let out = self.collect(conn, &market, now, job_id).await?;
        output(&out)
    }
}

impl CollectCandles {
    async fn collect(
        &self,
        conn: &mut PgConnection,
        market: &Market,
        now: DateTime<Utc>,
        job_id: i64,
    ) -> Result<Collected, BotError> {
        let to = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
        let last = super::history::newest_minute(conn, market).await?;
        let from = match last {
            Some(t) => (t + Duration::minutes(1)).max(to - Duration::minutes(MAX_FETCH)),
            None => to - self.bot.initial_lookback,
        };
        let page = if from < to {
            self.bot
                .source
                .candles(market, Interval::M1, from, to, now)
                .await?
        } else {
            Vec::new()
        };
        let fetched = page.len();
        let empty = confirmed_empty(&page, from);
        let report = store_page(conn, market, Interval::M1, page, now).await?;
        let rejected: Vec<String> = report
            .rejected
            .iter()
            .map(|r| format!("candle {} of the page: {}", r.index, r.error))
            .collect();
        for r in &rejected {
            tracing::warn!(market = %market, rejected = %r, "malformed candle rejected");
        }
        record_empty(conn, market, Interval::M1, &empty, now).await?;
        let newest = super::history::newest_minute(conn, market).await?;
        if let Some(t) = newest {
            // Gaps of the last day since the first stored candle (downtime beyond one
            // fetch) become unique backfill jobs: a gap keeps its key until it is filled.
            let horizon = t + Duration::minutes(1);
            let first = oldest_since(conn, market, horizon - Duration::days(1)).await?;
            for gap in find_gaps(conn, market, Interval::M1, first.unwrap_or(t), horizon).await? {
                let job = backfill_job(market, Interval::M1, gap);
                crate::queue::enqueue(&mut *conn, now, &job).await?;
            }
        }
        alert_if_stale(conn, market, newest, now, job_id).await?;
        Ok(Collected {
            market: market.to_string(),
            candle: newest,
            fetched,
            written: report.written,
            rejected,
            empty_minutes: empty.len(),
        })
    }
}

/// Minutes inside the fetched range that the source skipped although it served a later
/// candle: no trades happened (Upbit sends no candle then), so gap detection may stop
/// asking for them.
fn confirmed_empty(page: &[Candle], from: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut empty = Vec::new();
    let mut expect = from;
    for c in page {
        while expect < c.open_time {
            empty.push(expect);
            expect += Duration::minutes(1);
        }
        expect = expect.max(c.open_time + Duration::minutes(1));
    }
    empty
}

async fn oldest_since(
    conn: &mut PgConnection,
    market: &Market,
    since: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, BotError> {
    // No locks; the primary key's range for the market.
    const OLDEST: &str = "SELECT min(open_time) FROM candles WHERE market = $1 AND interval = '1m' AND open_time >= $2";
    Ok(sqlx::query_scalar(OLDEST)
        .bind(market.as_str())
        .bind(since)
        .fetch_one(conn)
        .await?)
}

/// One alert per market and hour while the newest candle is older than [`STALE_AFTER`]
/// minutes ([`notify::enqueue_once`]: a unique key alone held only until the alert was
/// posted, so every later cycle of the hour posted it again).
async fn alert_if_stale(
    conn: &mut PgConnection,
    market: &Market,
    newest: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    job_id: i64,
) -> Result<(), BotError> {
    let Some(newest) = newest else { return Ok(()) };
    let age = now - (newest + Duration::minutes(1));
    if age < Duration::minutes(STALE_AFTER) {
        return Ok(());
    }
    let hour = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    let msg = Message::Alert(AlertNote {
        severity: Severity::Warning,
        title: format!("No new {market} candle for {} minutes", age.num_minutes()),
        detail: format!("The newest stored candle opened at {newest}; collection job {job_id}."),
        at: now,
    });
    let key = format!("alert:stale-candles:{market}:{}", hour.timestamp());
    notify::enqueue_once(conn, now, &msg, key).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn candle(min: i64) -> Candle {
        Candle {
            open_time: Utc.with_ymd_and_hms(2025, 9, 1, 0, 0, 0).unwrap() + Duration::minutes(min),
            open: 1.into(),
            high: 1.into(),
            low: 1.into(),
            close: 1.into(),
            volume: 1.into(),
        }
    }

    #[test]
    fn skipped_minutes_before_a_served_candle_are_confirmed_empty() {
        let from = candle(0).open_time;
        let page = vec![candle(0), candle(2), candle(3), candle(6)];
        let empty = confirmed_empty(&page, from);
        assert_eq!(
            empty,
            vec![
                candle(1).open_time,
                candle(4).open_time,
                candle(5).open_time
            ]
        );
        // Nothing after the last served candle is confirmed: it may still arrive.
        assert!(confirmed_empty(&[], from).is_empty());
    }
}
