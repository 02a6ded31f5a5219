//! Prometheus metrics of the queue, through the `metrics` facade. Per queue and kind:
//! enqueued, started, completed, failed, discarded, run time histogram; queue depth and
//! oldest available age are sampled from the table at scrape time ([`sample_depths`]).
//! Without an installed recorder every call here is a no-op.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

pub fn enqueued(queue: &str, kind: &str, n: u64) {
    metrics::counter!("coinpilot_jobs_enqueued_total", "queue" => queue.to_string(), "kind" => kind.to_string())
        .increment(n);
}

/// The outcomes a job run ends in (the `outcome` label of `coinpilot_jobs_finished_total`).
const OUTCOMES: [&str; 8] = [
    "completed",
    "failed",
    "discarded",
    "snoozed",
    "released",
    "stopped",
    "refused",
    "unrecorded",
];

/// One (queue, kind)'s run metrics, registered once.
struct KindHandles {
    started: metrics::Counter,
    run_seconds: metrics::Histogram,
    finished: [metrics::Counter; OUTCOMES.len()],
}

/// The worker's per-(queue, kind) metric handles. The macros build and hash the label set
/// at every call; a worker draining thousands of jobs a second looks its handles up here
/// instead (one map lookup by `&str`, no allocation).
#[derive(Default)]
pub struct RunMetrics {
    /// queue → kind → handles (nested so a lookup borrows `&str`, no key allocation).
    handles: Mutex<HashMap<String, HashMap<String, Arc<KindHandles>>>>,
}

impl RunMetrics {
    fn handles(&self, queue: &str, kind: &str) -> Arc<KindHandles> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map is still usable.
        let mut map = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = map.get(queue).and_then(|kinds| kinds.get(kind)) {
            return h.clone();
        }
        let labels = |extra: Option<&'static str>| {
            let mut l = vec![
                metrics::Label::new("queue", queue.to_string()),
                metrics::Label::new("kind", kind.to_string()),
            ];
            if let Some(outcome) = extra {
                l.push(metrics::Label::new("outcome", outcome));
            }
            l
        };
        let h = Arc::new(KindHandles {
            started: metrics::counter!("coinpilot_jobs_started_total", labels(None)),
            run_seconds: metrics::histogram!("coinpilot_job_run_seconds", labels(None)),
            finished: OUTCOMES
                .map(|o| metrics::counter!("coinpilot_jobs_finished_total", labels(Some(o)))),
        });
        map.entry(queue.to_string())
            .or_default()
            .insert(kind.to_string(), h.clone());
        h
    }

    pub fn started(&self, queue: &str, kind: &str) {
        self.handles(queue, kind).started.increment(1);
    }

    /// `outcome` is one of [`OUTCOMES`]; another value is counted through the macro.
    pub fn finished(&self, queue: &str, kind: &str, outcome: &'static str, secs: f64) {
        let h = self.handles(queue, kind);
        match OUTCOMES.iter().position(|o| *o == outcome) {
            Some(i) => h.finished[i].increment(1),
            None => metrics::counter!(
                "coinpilot_jobs_finished_total",
                "queue" => queue.to_string(), "kind" => kind.to_string(), "outcome" => outcome
            )
            .increment(1),
        }
        h.run_seconds.record(secs);
    }
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
static REPORTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

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
