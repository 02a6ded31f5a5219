//! The queue across real worker processes: no job run twice at once, SIGKILL rescue.

use std::time::{Duration, Instant};

use coinpilot::clock::{Clock, SystemClock};
use coinpilot::queue::admin;
use coinpilot::queue::claim::{complete_batch, fail_one, AttemptError, CompletedJobs, Completion};
use coinpilot::queue::{enqueue, enqueue_many, JobState, NewJob};
use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_drain_20000_jobs_each_attempt_once() {
    let _heavy = one_heavy_test_at_a_time();
    let db = TestDb::new().await;
    let jobs: Vec<NewJob> = (0..20_000)
        .map(|_| NewJob::new("probe", json!({})))
        .collect();
    let mut c = db.pool.acquire().await.unwrap();
    enqueue_many(&mut c, SystemClock.now(), &jobs)
        .await
        .unwrap();
    drop(c);
    // The third claims ahead (prefetch): held-but-waiting jobs must not break the rule either.
    let mut workers: Vec<_> = (0..3)
        .map(|i| {
            let prefetch = if i == 2 { "50" } else { "0" };
            spawn_worker(
                &db,
                &format!("w{i}"),
                &["--concurrency", "10", "--prefetch", prefetch],
            )
        })
        .collect();
    eventually(600, "all 20,000 jobs finished", || async {
        db.count("SELECT count(*) FROM jobs WHERE state IN ('available', 'running')")
            .await
            == 0
    })
    .await;
    for w in &workers {
        signal(w, "-TERM");
    }
    for w in &mut workers {
        assert!(w.wait().unwrap().success(), "a worker exited with an error");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM jobs WHERE state = 'completed'")
            .await,
        20_000
    );
    let twice = db.count("SELECT count(*) FROM (SELECT job_id, attempt FROM probe_runs GROUP BY 1, 2 HAVING count(*) > 1) d").await;
    assert_eq!(twice, 0, "some (job, attempt) ran twice");
    assert_eq!(
        db.count("SELECT count(*) FROM probe_runs").await,
        20_000,
        "every job ran exactly once"
    );
    let per_worker = db
        .count("SELECT count(DISTINCT worker) FROM probe_runs")
        .await;
    assert_eq!(per_worker, 3, "all three workers took part");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_job_is_rescued_after_lease_and_its_late_completion_refused() {
    let _heavy = one_heavy_test_at_a_time();
    let db = TestDb::new().await;
    let lease = ["--lease", "2", "--rescue-interval", "0.5"];
    let mut a = spawn_worker(&db, "doomed", &lease);
    let id = {
        let mut c = db.pool.acquire().await.unwrap();
        let job = NewJob::new("probe", json!({"ms": 600_000, "slow_attempts": 1}));
        enqueue(&mut c, SystemClock.now(), &job).await.unwrap().id
    };
    eventually(60, "the first worker started the job", || async {
        db.count("SELECT count(*) FROM probe_runs WHERE worker = 'doomed'")
            .await
            == 1
    })
    .await;
    let old_token: i64 = sqlx::query_scalar("SELECT lease_token FROM jobs WHERE id = $1")
        .bind(id.0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    signal(&a, "-KILL");
    a.wait().unwrap();
    let killed_at = Instant::now();

    let mut b = spawn_worker(&db, "rescuer", &lease);
    eventually(60, "the job completed on the second worker", || async {
        db.count(&format!(
            "SELECT count(*) FROM jobs WHERE id = {} AND state = 'completed'",
            id.0
        ))
        .await
            == 1
    })
    .await;
    let waited = killed_at.elapsed();
    // Lease 2 s + rescuer interval + backoff 2 s ± 10 % + process start; bound is lease + 10 s.
    assert!(waited < Duration::from_secs(12), "rescue took {waited:?}");
    let mut conn = db.pool.acquire().await.unwrap();
    let job = admin::get_job(&mut conn, id, false).await.unwrap();
    assert_eq!(job.attempt, 2);
    assert_eq!(job.errors[0]["kind"], "rescued");
    let runs: Vec<(i32, String)> =
        sqlx::query_as("SELECT attempt, worker FROM probe_runs WHERE job_id = $1 ORDER BY attempt")
            .bind(id.0)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        runs,
        vec![(1, "doomed".to_string()), (2, "rescuer".to_string())]
    );

    // The dead lease cannot complete or fail the job any more.
    let late = complete_batch(
        &db.pool,
        SystemClock.now(),
        &[Completion {
            id,
            token: old_token,
            output: None,
            in_workflow_run: false,
        }],
        CompletedJobs::Keep,
    )
    .await
    .unwrap();
    assert!(late.is_empty());
    let err = AttemptError {
        attempt: 1,
        kind: "error",
        message: "late".into(),
        chain: vec![],
    };
    assert!(
        fail_one(&db.pool, id, old_token, SystemClock.now(), None, &err)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        admin::get_job(&mut conn, id, false).await.unwrap().state,
        JobState::Completed
    );

    signal(&b, "-TERM");
    assert!(b.wait().unwrap().success());
}
