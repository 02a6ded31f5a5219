//! Prometheus metrics of the queue, through the `metrics` facade. Per queue and kind:
//! enqueued, started, completed, failed, discarded, run time histogram; queue depth and
//! oldest available age are sampled from the table at scrape time ([`sample_depths`]).
//! Without an installed recorder every call here is a no-op.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

pub fn enqueued(queue: &str, kind: &str, n: u64) {
    metrics::counter!("coinpilot_jobs_enqueued_total", "queue" => queue.to_string(), "kind" => kind.to_string())
        .increment(n);
}

pub fn started(queue: &str, kind: &str) {
    metrics::counter!("coinpilot_jobs_started_total", "queue" => queue.to_string(), "kind" => kind.to_string())
        .increment(1);
}

/// `outcome` is one of completed, failed (will retry), discarded, snoozed, released.
pub fn finished(queue: &str, kind: &str, outcome: &'static str, secs: f64) {
    metrics::counter!(
        "coinpilot_jobs_finished_total",
        "queue" => queue.to_string(), "kind" => kind.to_string(), "outcome" => outcome
    )
    .increment(1);
    metrics::histogram!("coinpilot_job_run_seconds", "queue" => queue.to_string(), "kind" => kind.to_string())
        .record(secs);
}

pub fn rescued(n: u64) {
    metrics::counter!("coinpilot_jobs_rescued_total").increment(n);
}

pub fn lease_lost(queue: &str, kind: &str) {
    metrics::counter!("coinpilot_leases_lost_total", "queue" => queue.to_string(), "kind" => kind.to_string())
        .increment(1);
}

/// Per queue: available jobs due now, and the age of the oldest one. Reads the claim index
/// only (`jobs_claim_idx`), so it stays cheap with millions of finished rows.
const DEPTHS: &str = "
SELECT queue, count(*) AS depth, min(run_at) AS oldest
FROM jobs WHERE state = 'available' AND run_at <= $1
GROUP BY queue";

/// Queues whose gauges this process has set: a queue that drained has no row in
/// [`DEPTHS`] and must be set back to 0, or its last non-zero depth would stay exported
/// for ever (stuck alerts, an HPA that never scales down).
static REPORTED: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());

/// Sets the depth gauges from the table.
pub async fn sample_depths(pool: &PgPool, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(DEPTHS).bind(now).fetch_all(pool).await?;
    let mut seen = BTreeSet::new();
    for row in rows {
        let queue: String = row.try_get("queue")?;
        let depth: i64 = row.try_get("depth")?;
        let oldest: Option<DateTime<Utc>> = row.try_get("oldest")?;
        let age = oldest.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
        metrics::gauge!("coinpilot_queue_depth", "queue" => queue.clone()).set(depth as f64);
        metrics::gauge!("coinpilot_queue_oldest_available_seconds", "queue" => queue.clone())
            .set(age);
        seen.insert(queue);
    }
    // A poisoned lock only means another scrape panicked mid-update; the set is still usable.
    let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
    for queue in reported.difference(&seen) {
        metrics::gauge!("coinpilot_queue_depth", "queue" => queue.clone()).set(0.0);
        metrics::gauge!("coinpilot_queue_oldest_available_seconds", "queue" => queue.clone())
            .set(0.0);
    }
    reported.extend(seen);
    Ok(())
}
