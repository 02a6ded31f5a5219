//! Bulk enqueue: large batches (the `COPY` path, `queue::enqueue_copy`) keep ids in input
//! order, every column exactly as given whatever characters the args hold, invisible until
//! the caller commits, and wake the workers; small or keyed batches (`UNNEST`) give each
//! input its own row and answer a repeated key with the first input's job.

use std::time::Duration;

use chrono::Duration as Cd;
use coinpilot::clock::Clock;
use coinpilot::queue::enqueue_copy::COPY_FROM_JOBS;
use coinpilot::queue::runtime::WorkerEvent;
use coinpilot::queue::{enqueue, enqueue_many, NewJob, Worker};
use serde_json::{json, Value};

use crate::support::*;

/// Args whose text needs escaping in COPY's format, and columns set or left null.
fn tricky_jobs(n: usize, now: chrono::DateTime<chrono::Utc>) -> Vec<NewJob> {
    (0..n)
        .map(|i| {
            let args = json!({
                "i": i,
                "text": "tab\there\nnew line\r\\N back\\slash \"quoted\" 한글 🚀",
                "nested": {"list": [1, "\\t", null]},
            });
            let mut job =
                NewJob::new("noop", args).with_queue(if i % 2 == 0 { "even" } else { "odd" });
            job.priority = (i % 3) as i16;
            if i % 5 == 0 {
                job.run_at = Some(now + Cd::hours(1));
            }
            if i % 7 == 0 {
                job.timeout_ms = Some(1_234);
                job.enqueued_by = Some("test\tby".into());
            }
            job
        })
        .collect()
}

#[tokio::test]
async fn a_large_batch_is_stored_exactly_and_in_input_order() {
    let db = TestDb::new().await;
    let (clock, _) = manual_clock();
    let now = clock.now();
    let jobs = tricky_jobs(COPY_FROM_JOBS + 7, now);
    let mut tx = db.pool.begin().await.unwrap();
    let got = enqueue_many(&mut tx, now, &jobs).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(got.len(), jobs.len());
    assert!(got.iter().all(|e| !e.duplicate));
    let ids: Vec<i64> = got.iter().map(|e| e.id.0).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids ascend in input order"
    );
    type Row = (
        i64,
        String,
        Value,
        i16,
        chrono::DateTime<chrono::Utc>,
        Option<i32>,
        Option<String>,
        chrono::DateTime<chrono::Utc>,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, queue, args, priority, run_at, timeout_ms, enqueued_by, created_at, state::text
         FROM jobs ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), jobs.len());
    for ((row, job), id) in rows.iter().zip(&jobs).zip(&ids) {
        let (rid, queue, args, priority, run_at, timeout, by, created, state) = row;
        assert_eq!(rid, id);
        assert_eq!(queue, &job.queue);
        assert_eq!(args, &job.args, "args round-trip exactly");
        assert_eq!(*priority, job.priority);
        assert_eq!(*run_at, job.run_at.unwrap_or(now));
        assert_eq!(*timeout, job.timeout_ms);
        assert_eq!(by, &job.enqueued_by);
        assert_eq!(*created, now);
        assert_eq!(state, "available");
    }
}

#[tokio::test]
async fn a_large_batch_in_a_rolled_back_transaction_is_never_seen() {
    let db = TestDb::new().await;
    let (clock, _) = manual_clock();
    let jobs = tricky_jobs(COPY_FROM_JOBS, clock.now());
    let mut tx = db.pool.begin().await.unwrap();
    enqueue_many(&mut tx, clock.now(), &jobs).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(db.count("SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn a_large_batch_wakes_an_idle_worker_without_waiting_for_its_poll() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let mut cfg = test_config("w");
    // Only the NOTIFY can wake it within the test's wait.
    cfg.poll_interval = Duration::from_secs(3_600);
    let mut w = RunningWorker::start(Worker::new(db.pool.clone(), shared, registry(), cfg));
    // Once it listens, and a claim round after that found nothing, only the NOTIFY of the
    // commit below can wake it within the test's wait.
    w.wait_for(20, |e| *e == WorkerEvent::Listening).await;
    w.wait_for(20, |e| *e == WorkerEvent::Idle).await;
    let jobs: Vec<NewJob> = (0..COPY_FROM_JOBS)
        .map(|_| NewJob::new("noop", json!({})))
        .collect();
    let mut tx = db.pool.begin().await.unwrap();
    let got = enqueue_many(&mut tx, clock.now(), &jobs).await.unwrap();
    tx.commit().await.unwrap();
    let first = got[0].id;
    w.wait_for(30, |e| *e == WorkerEvent::Completed(first))
        .await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_bulk_enqueue_returns_each_input_its_own_row_and_repeats_of_a_key_the_first() {
    let db = TestDb::new().await;
    let (clock, _) = manual_clock();
    let keyed = |n: i64, key: &str| NewJob::new("noop", json!({ "n": n })).with_unique_key(key);
    let jobs = vec![
        NewJob::new("noop", json!({ "n": 0 })),
        keyed(1, "k1"),
        NewJob::new("noop", json!({ "n": 2 })),
        keyed(3, "k1"),
        keyed(4, "k2"),
        NewJob::new("noop", json!({ "n": 5 })),
    ];
    let mut c = db.pool.acquire().await.unwrap();
    let got = enqueue_many(&mut c, clock.now(), &jobs).await.unwrap();
    let dup: Vec<bool> = got.iter().map(|e| e.duplicate).collect();
    assert_eq!(dup, [false, false, false, true, false, false]);
    assert_eq!(
        got[3].id, got[1].id,
        "a repeated key answers with the first input's job"
    );
    for (i, e) in got.iter().enumerate().filter(|(_, e)| !e.duplicate) {
        let n: i64 = sqlx::query_scalar("SELECT (args->>'n')::bigint FROM jobs WHERE id = $1")
            .bind(e.id.0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(n, i as i64, "input {i} got the row of input {n}");
    }
    assert_eq!(db.count("SELECT count(*) FROM jobs").await, 5);
}

/// Two claim loops (the default) and no poll within the test: every job enqueued one by
/// one, while the previous job's completion still makes a claim round run, must be
/// claimed on its NOTIFY alone. A wake that lands while the other loop holds the free
/// slots mid-round used to be lost until the poll (`queue::wake`).
#[tokio::test]
async fn no_wake_up_is_lost_between_two_claim_loops() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let mut cfg = test_config("w");
    cfg.poll_interval = Duration::from_secs(3_600);
    assert!(cfg.claimers >= 2, "the race needs two claim loops");
    let mut w = RunningWorker::start(Worker::new(db.pool.clone(), shared, registry(), cfg));
    w.wait_for(20, |e| *e == WorkerEvent::Listening).await;
    let mut c = db.pool.acquire().await.unwrap();
    for _ in 0..150 {
        let id = enqueue(&mut c, clock.now(), &NewJob::new("noop", json!({})))
            .await
            .unwrap()
            .id;
        w.wait_for(20, |e| *e == WorkerEvent::Completed(id)).await;
    }
    w.shutdown().await;
}

/// `RESERVE_IDS` and the `UNNEST` insert name the identity's sequence literally
/// (`jobs_id_seq`, looked up per row it cost ten times more): a migration that renamed the
/// table or its identity would break both, so this fails first.
#[tokio::test]
async fn the_job_id_sequence_has_the_name_the_bulk_paths_use() {
    let db = TestDb::new().await;
    let same: Option<bool> = sqlx::query_scalar(
        "SELECT pg_get_serial_sequence('jobs', 'id')::regclass = 'jobs_id_seq'::regclass",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(same, Some(true));
}
