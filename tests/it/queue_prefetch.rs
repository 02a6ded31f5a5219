//! Claiming ahead (`prefetch`): jobs claimed beyond the free slots wait in the worker with
//! their leases renewed, never run more handlers than the slots, are given back at once
//! at shutdown, and stop waiting when cancelled by hand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coinpilot::clock::Clock;
use coinpilot::queue::admin;
use coinpilot::queue::handler::{Handler, JobContext, JobError, Outcome};
use coinpilot::queue::runtime::WorkerEvent;
use coinpilot::queue::{JobEvent, JobId, JobState, NewJob, Worker};
use serde_json::json;

use crate::support::*;

/// Sleeps `ms` while counting the handlers running at once, and the most seen.
#[derive(Clone, Default)]
struct Gauge {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    runs: Arc<AtomicUsize>,
}

#[derive(serde::Deserialize)]
struct GaugeArgs {
    ms: u64,
}

impl Handler for Gauge {
    const KIND: &'static str = "gauge";
    type Args = GaugeArgs;
    async fn run(&self, _: &mut JobContext, a: GaugeArgs) -> Result<Outcome, JobError> {
        let running = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(running, Ordering::SeqCst);
        self.runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(a.ms)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(Outcome::done())
    }
}

async fn put_gauges(
    db: &TestDb,
    now: chrono::DateTime<chrono::Utc>,
    n: usize,
    ms: u64,
) -> Vec<JobId> {
    let jobs: Vec<NewJob> = (0..n)
        .map(|_| NewJob::new("gauge", json!({ "ms": ms })))
        .collect();
    enqueue_all(db, now, &jobs).await
}

fn worker(
    db: &TestDb,
    shared: coinpilot::clock::SharedClock,
    gauge: &Gauge,
    slots: usize,
    prefetch: usize,
) -> Worker {
    let mut r = registry();
    r.register(gauge.clone());
    let mut cfg = test_config("prefetcher");
    cfg.concurrency = slots;
    cfg.prefetch = prefetch;
    cfg.shutdown_grace = Duration::from_millis(300);
    Worker::new(db.pool.clone(), shared, r, cfg)
}

async fn running(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM jobs WHERE state = 'running'")
        .await
}

#[tokio::test]
async fn claimed_ahead_jobs_wait_for_a_slot_and_all_complete() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let gauge = Gauge::default();
    let ids = put_gauges(&db, clock.now(), 30, 40).await;
    let mut w = RunningWorker::start(worker(&db, shared, &gauge, 2, 10));
    // The claims take the 2 slots and 10 ahead (two loops, 6 each): 12 leases at once, far
    // more than 2.
    eventually(20, "jobs claimed ahead", || async {
        running(&db).await >= 12
    })
    .await;
    assert!(
        running(&db).await <= 12,
        "never more than slots + prefetch held"
    );
    w.wait_for_all(
        60,
        ids.iter().map(|id| WorkerEvent::Completed(*id)).collect(),
    )
    .await;
    assert_eq!(
        gauge.max.load(Ordering::SeqCst),
        2,
        "never more handlers than slots"
    );
    assert_eq!(gauge.runs.load(Ordering::SeqCst), 30, "each job ran once");
    let attempts = db
        .count("SELECT sum(attempt) FROM jobs WHERE state = 'completed'")
        .await;
    assert_eq!(attempts, 30, "one attempt each");
    w.shutdown().await;
}

#[tokio::test]
async fn shutdown_gives_unstarted_jobs_back_at_once_with_their_attempt() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let gauge = Gauge::default();
    put_gauges(&db, clock.now(), 6, 60_000).await;
    let mut w = RunningWorker::start(worker(&db, shared, &gauge, 1, 5));
    eventually(20, "six jobs held", || async { running(&db).await == 6 }).await;
    w.wait_for(20, |e| matches!(e, WorkerEvent::Claimed(_)))
        .await;
    eventually(20, "one handler running", || async {
        gauge.now.load(Ordering::SeqCst) == 1
    })
    .await;
    w.shutdown().await;
    let rows: Vec<(i64, i32)> =
        sqlx::query_as("SELECT id, attempt FROM jobs WHERE state = 'available' ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        rows.len(),
        6,
        "the running job (past the grace) and the five waiting ones are back"
    );
    assert!(
        rows.iter().all(|(_, attempt)| *attempt == 0),
        "attempts given back: {rows:?}"
    );
    assert_eq!(
        gauge.runs.load(Ordering::SeqCst),
        1,
        "the waiting jobs never started"
    );
}

#[tokio::test]
async fn a_waiting_job_cancelled_by_hand_never_runs() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let gauge = Gauge::default();
    let ids = put_gauges(&db, clock.now(), 3, 1_500).await;
    let mut w = RunningWorker::start(worker(&db, shared, &gauge, 1, 2));
    eventually(20, "three jobs held", || async { running(&db).await == 3 }).await;
    let last = ids[2];
    let mut tx = db.pool.begin().await.unwrap();
    admin::stop_job(&mut tx, last, clock.now(), JobEvent::Cancel, "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    w.wait_for(20, |e| *e == WorkerEvent::Stopped(last)).await;
    w.wait_for_all(
        30,
        ids[..2]
            .iter()
            .map(|id| WorkerEvent::Completed(*id))
            .collect(),
    )
    .await;
    assert_eq!(
        gauge.runs.load(Ordering::SeqCst),
        2,
        "the cancelled job never started"
    );
    let mut c = db.pool.acquire().await.unwrap();
    let j = admin::get_job(&mut c, last, false).await.unwrap();
    assert_eq!(j.state, JobState::Cancelled);
    w.shutdown().await;
}
