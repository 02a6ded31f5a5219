//! The overview's job counts per (queue, state), kept cheap at a million rows.
//!
//! - Live states (`available`, `running`) are counted exactly on every request, each
//!   through its own partial index (`jobs_claim_idx`, `jobs_lease_idx`): they are the
//!   small, moving part an operator watches.
//! - Final states (`completed`, `discarded`, `cancelled`) need a pass over the whole table
//!   (~0.25 s at 1M rows on 2 cores, far more with 50 requests doing it at once). While the
//!   table is small (planner estimate under [`EXACT_BELOW_ROWS`]) they are counted exactly
//!   too. Above it, from a per-process snapshot: the first request takes it, later ones
//!   read it and, when it is older than [`REFRESH`], start one background refresh (never
//!   more than one at a time) and answer with the snapshot they have. The page says how
//!   old the snapshot is.
//!
//! Options: `EXACT_BELOW_ROWS` [100,000], `REFRESH` [10 s] — constants, not settings.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::error::WebError;

/// Below this many rows (the planner's estimate) final states are counted per request.
pub const EXACT_BELOW_ROWS: i64 = 100_000;
/// A snapshot older than this is refreshed in the background.
pub const REFRESH: Duration = Duration::from_secs(10);

/// The planner's row estimate from the last ANALYZE (autovacuum keeps it fresh); −1 when
/// the table was never analyzed. A catalog read, no lock on `jobs`.
const ROWS_ESTIMATE: &str = "SELECT reltuples::int8 FROM pg_class WHERE oid = 'jobs'::regclass";

/// Each arm matches one partial index's predicate exactly, so each is a small index
/// scan (an `IN` over both made the planner choose a full parallel scan: 120 ms at 1M).
const LIVE_COUNTS: &str = "SELECT queue, 'available' AS state, count(*) FROM jobs
 WHERE state = 'available' GROUP BY queue
 UNION ALL
 SELECT queue, 'running', count(*) FROM jobs WHERE state = 'running' GROUP BY queue";

/// One (parallel) pass over the table; plain snapshot read, no lock.
const FINAL_COUNTS: &str = "SELECT queue, state::text, count(*) FROM jobs
 WHERE state IN ('completed', 'discarded', 'cancelled') GROUP BY 1, 2";

/// (queue, state, count) rows.
pub type CountRows = Vec<(String, String, i64)>;

#[derive(Debug, Clone)]
struct Snapshot {
    taken: Instant,
    at: DateTime<Utc>,
    rows: CountRows,
}

/// The per-process final-state snapshot (one per `DashState`).
#[derive(Debug)]
pub struct FinalCounts {
    snapshot: Mutex<Option<Snapshot>>,
    refreshing: AtomicBool,
    refresh: Duration,
}

impl Default for FinalCounts {
    fn default() -> Self {
        FinalCounts::with_refresh(REFRESH)
    }
}

/// The counts, and when the final-state part was taken (`None`: exact, now).
#[derive(Debug, Clone)]
pub struct Counts {
    pub rows: CountRows,
    pub final_as_of: Option<DateTime<Utc>>,
}

async fn final_counts(pool: &PgPool) -> Result<CountRows, sqlx::Error> {
    sqlx::query_as(FINAL_COUNTS).fetch_all(pool).await
}

impl FinalCounts {
    /// A snapshot refreshed when older than `refresh` (tests use zero).
    pub fn with_refresh(refresh: Duration) -> FinalCounts {
        FinalCounts {
            snapshot: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            refresh,
        }
    }

    /// How old a snapshot may get before a refresh starts.
    pub fn refresh_every(&self) -> Duration {
        self.refresh
    }

    fn current(&self) -> Option<Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn store(&self, rows: CountRows, at: DateTime<Utc>) {
        let snap = Snapshot {
            taken: Instant::now(),
            at,
            rows,
        };
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some(snap);
    }

    /// Starts a background refresh unless one is running.
    fn refresh_in_background(self: &Arc<Self>, pool: &PgPool, now: DateTime<Utc>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (me, pool) = (Arc::clone(self), pool.clone());
        tokio::spawn(async move {
            match final_counts(&pool).await {
                Ok(rows) => me.store(rows, now),
                // The old snapshot stays; the next request past REFRESH tries again.
                Err(e) => tracing::warn!(error = %e, "overview: final-state counts failed"),
            }
            me.refreshing.store(false, Ordering::Release);
        });
    }

    /// Every (queue, state) count, live exact and final per the module's rules.
    pub async fn load(
        self: &Arc<Self>,
        pool: &PgPool,
        now: DateTime<Utc>,
    ) -> Result<Counts, WebError> {
        let mut rows: CountRows = sqlx::query_as(LIVE_COUNTS).fetch_all(pool).await?;
        let estimate: i64 = sqlx::query_scalar(ROWS_ESTIMATE).fetch_one(pool).await?;
        if estimate < EXACT_BELOW_ROWS {
            rows.extend(final_counts(pool).await?);
            return Ok(Counts {
                rows,
                final_as_of: None,
            });
        }
        let snap = match self.current() {
            Some(s) => {
                if s.taken.elapsed() >= self.refresh {
                    self.refresh_in_background(pool, now);
                }
                s
            }
            None => {
                let fresh = final_counts(pool).await?;
                self.store(fresh.clone(), now);
                Snapshot {
                    taken: Instant::now(),
                    at: now,
                    rows: fresh,
                }
            }
        };
        rows.extend(snap.rows);
        Ok(Counts {
            rows,
            final_as_of: Some(snap.at),
        })
    }
}
