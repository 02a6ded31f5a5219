//! The queue's behaviours, with in-process workers and a manual clock.

use std::time::Duration;

use chrono::Duration as Cd;
use coinpilot::clock::Clock;
use coinpilot::queue::admin::{self, JobFilter};
use coinpilot::queue::claim::{complete_batch, complete_one, CompletedJobs, Completion};
use coinpilot::queue::handler::{Handler, JobContext, JobError, Outcome};
use coinpilot::queue::prune::{prune_finished, PruneOptions};
use coinpilot::queue::runtime::WorkerEvent;
use coinpilot::queue::{enqueue, enqueue_many, JobEvent, JobId, JobState, NewJob, Worker};
use serde_json::json;

use crate::support::*;

async fn job_state(db: &TestDb, id: JobId) -> coinpilot::queue::Job {
    let mut c = db.pool.acquire().await.unwrap();
    admin::get_job(&mut c, id, false).await.unwrap()
}

async fn put(db: &TestDb, now: chrono::DateTime<chrono::Utc>, job: NewJob) -> JobId {
    let mut c = db.pool.acquire().await.unwrap();
    enqueue(&mut c, now, &job).await.unwrap().id
}

#[tokio::test]
async fn backoff_after_each_failure_follows_the_manual_clock() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let t0 = clock.now();
    let id = put(&db, t0, NewJob::new("flaky", json!({"fail_times": 2}))).await;
    let mut w = RunningWorker::start(Worker::new(
        db.pool.clone(),
        shared,
        registry(),
        test_config("w"),
    ));

    w.wait_for(20, |e| {
        *e == WorkerEvent::Failed {
            id,
            discarded: false,
        }
    })
    .await;
    let j = job_state(&db, id).await;
    assert_eq!((j.state, j.attempt), (JobState::Available, 1));
    let wait = (j.run_at - t0).num_milliseconds();
    assert!(
        (1800..=2200).contains(&wait),
        "first backoff 2 s ± 10 %, got {wait} ms"
    );
    assert_eq!(j.display_state(t0), "retrying");

    // Not due yet: nothing is claimed until the clock passes run_at.
    clock.advance(Cd::milliseconds(1700));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        job_state(&db, id).await.attempt,
        1,
        "claimed before its backoff elapsed"
    );

    clock.set(j.run_at);
    w.wait_for(20, |e| {
        *e == WorkerEvent::Failed {
            id,
            discarded: false,
        }
    })
    .await;
    let j2 = job_state(&db, id).await;
    let wait = (j2.run_at - clock.now()).num_milliseconds();
    assert!(
        (3600..=4400).contains(&wait),
        "second backoff 4 s ± 10 %, got {wait} ms"
    );

    clock.set(j2.run_at);
    w.wait_for(20, |e| *e == WorkerEvent::Completed(id)).await;
    let done = job_state(&db, id).await;
    assert_eq!((done.state, done.attempt), (JobState::Completed, 3));
    assert_eq!(
        done.errors.as_array().unwrap().len(),
        2,
        "one error entry per failed attempt"
    );
    assert_eq!(done.output.unwrap()["succeeded_on_attempt"], 3);
    w.shutdown().await;
}

struct SnoozeOnce;
impl Handler for SnoozeOnce {
    const KIND: &'static str = "snooze_once";
    type Args = serde_json::Value;
    async fn run(&self, ctx: &mut JobContext, _: Self::Args) -> Result<Outcome, JobError> {
        let snoozed: i64 = sqlx::query_scalar("SELECT count(*) FROM probe_runs WHERE job_id = $1")
            .bind(ctx.job.id.0)
            .fetch_one(&ctx.pool)
            .await?;
        sqlx::query("INSERT INTO probe_runs (job_id, attempt, worker, started_at) VALUES ($1, $2, 'snooze', $3)")
            .bind(ctx.job.id.0).bind(ctx.job.attempt).bind(ctx.now()).execute(&ctx.pool).await?;
        if snoozed == 0 {
            return Ok(Outcome::Snooze(ctx.now() + Cd::seconds(30)));
        }
        Ok(Outcome::done())
    }
}

#[tokio::test]
async fn snooze_gives_the_attempt_back_and_runs_at_the_asked_time() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let mut reg = registry();
    reg.register(SnoozeOnce);
    let id = put(&db, clock.now(), NewJob::new("snooze_once", json!({}))).await;
    let mut w = RunningWorker::start(Worker::new(db.pool.clone(), shared, reg, test_config("w")));
    w.wait_for(20, |e| *e == WorkerEvent::Snoozed(id)).await;
    let j = job_state(&db, id).await;
    assert_eq!(
        (j.state, j.attempt),
        (JobState::Available, 0),
        "attempt given back"
    );
    assert_eq!(j.run_at, clock.now() + Cd::seconds(30));
    assert!(
        j.errors.as_array().unwrap().is_empty(),
        "a snooze is not an error"
    );
    clock.advance(Cd::seconds(30));
    w.wait_for(20, |e| *e == WorkerEvent::Completed(id)).await;
    assert_eq!(job_state(&db, id).await.attempt, 1);
    w.shutdown().await;
}

#[tokio::test]
async fn unique_key_duplicates_return_the_live_job() {
    let db = TestDb::new().await;
    let (clock, _) = manual_clock();
    let job = NewJob::new("noop", json!({})).with_unique_key("collect:KRW-BTC:1m:2025-09-01T00:05");
    let mut c = db.pool.acquire().await.unwrap();
    let a = enqueue(&mut c, clock.now(), &job).await.unwrap();
    let b = enqueue(&mut c, clock.now(), &job).await.unwrap();
    assert!(!a.duplicate && b.duplicate);
    assert_eq!(a.id, b.id);
    let bulk = enqueue_many(
        &mut c,
        clock.now(),
        &[job.clone(), NewJob::new("noop", json!({})), job.clone()],
    )
    .await
    .unwrap();
    assert_eq!(bulk.len(), 3);
    assert!(bulk[0].duplicate && bulk[0].id == a.id && !bulk[1].duplicate && bulk[2].duplicate);
    // Once the holder is final, the key is free again.
    let mut tx = db.pool.begin().await.unwrap();
    admin::stop_job(&mut tx, a.id, clock.now(), JobEvent::Cancel, "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let again = enqueue(&mut c, clock.now(), &job).await.unwrap();
    assert!(!again.duplicate && again.id != a.id);
}

#[tokio::test]
async fn enqueue_in_a_rolled_back_transaction_is_never_seen() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let mut tx = db.pool.begin().await.unwrap();
    let id = enqueue(&mut tx, clock.now(), &NewJob::new("noop", json!({})))
        .await
        .unwrap()
        .id;
    tx.rollback().await.unwrap();
    let kept = put(&db, clock.now(), NewJob::new("noop", json!({}))).await;
    let mut w = RunningWorker::start(Worker::new(
        db.pool.clone(),
        shared,
        registry(),
        test_config("w"),
    ));
    w.wait_for(20, |e| *e == WorkerEvent::Completed(kept)).await;
    w.shutdown().await;
    assert_eq!(
        db.count(&format!("SELECT count(*) FROM jobs WHERE id = {}", id.0))
            .await,
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM jobs").await, 1);
}

#[tokio::test]
async fn a_panicking_handler_fails_one_attempt_and_the_worker_goes_on() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let bad = put(
        &db,
        clock.now(),
        NewJob::new("probe", json!({"panic": true})).with_max_attempts(1),
    )
    .await;
    let good = put(&db, clock.now(), NewJob::new("noop", json!({}))).await;
    let mut w = RunningWorker::start(Worker::new(
        db.pool.clone(),
        shared,
        registry(),
        test_config("w"),
    ));
    w.wait_for_all(
        20,
        vec![
            WorkerEvent::Failed {
                id: bad,
                discarded: true,
            },
            WorkerEvent::Completed(good),
        ],
    )
    .await;
    let j = job_state(&db, bad).await;
    assert_eq!(j.state, JobState::Discarded);
    assert_eq!(j.errors[0]["kind"], "panic");
    assert!(j.errors[0]["message"]
        .as_str()
        .unwrap()
        .contains("probe asked to panic"));
    let third = put(&db, clock.now(), NewJob::new("noop", json!({}))).await;
    w.wait_for(20, |e| *e == WorkerEvent::Completed(third))
        .await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_handler_past_its_timeout_fails_the_attempt() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let id = put(
        &db,
        clock.now(),
        NewJob::new("sleep", json!({"ms": 10_000}))
            .with_timeout_ms(200)
            .with_max_attempts(1),
    )
    .await;
    let mut w = RunningWorker::start(Worker::new(
        db.pool.clone(),
        shared,
        registry(),
        test_config("w"),
    ));
    w.wait_for(20, |e| {
        *e == WorkerEvent::Failed {
            id,
            discarded: true,
        }
    })
    .await;
    let j = job_state(&db, id).await;
    assert_eq!(j.errors[0]["kind"], "timeout");
    assert!(j.errors[0]["message"].as_str().unwrap().contains("200 ms"));
    w.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_running_jobs() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let ids = [
        put(&db, clock.now(), NewJob::new("sleep", json!({"ms": 400}))).await,
        put(&db, clock.now(), NewJob::new("sleep", json!({"ms": 400}))).await,
    ];
    let mut w = RunningWorker::start(Worker::new(
        db.pool.clone(),
        shared,
        registry(),
        test_config("w"),
    ));
    w.wait_for_all(20, ids.iter().map(|id| WorkerEvent::Claimed(*id)).collect())
        .await;
    w.shutdown().await;
    for id in ids {
        assert_eq!(job_state(&db, id).await.state, JobState::Completed);
    }
}

#[tokio::test]
async fn shutdown_past_the_grace_period_releases_jobs_with_the_attempt_given_back() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let id = put(
        &db,
        clock.now(),
        NewJob::new("sleep", json!({"ms": 60_000})),
    )
    .await;
    let mut cfg = test_config("w");
    cfg.shutdown_grace = Duration::from_millis(200);
    let mut w = RunningWorker::start(Worker::new(db.pool.clone(), shared, registry(), cfg));
    w.wait_for(20, |e| *e == WorkerEvent::Claimed(id)).await;
    w.shutdown().await;
    let j = job_state(&db, id).await;
    assert_eq!((j.state, j.attempt), (JobState::Available, 0));
    assert!(j.run_at <= clock.now(), "released jobs are due at once");
}

#[tokio::test]
async fn pruning_keeps_what_is_younger_than_its_horizon() {
    let db = TestDb::new().await;
    let (clock, _) = manual_clock();
    let now = clock.now();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(put(&db, now, NewJob::new("noop", json!({}))).await);
    }
    // (state, finished hours ago): old completed, young completed, young discarded, old discarded.
    for (id, (state, hours)) in ids.iter().zip([
        ("completed", 25),
        ("completed", 23),
        ("discarded", 48),
        ("discarded", 24 * 8),
    ]) {
        sqlx::query("UPDATE jobs SET state = $2::job_state, finished_at = $3 WHERE id = $1")
            .bind(id.0)
            .bind(state)
            .bind(now - Cd::hours(hours))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let n = prune_finished(
        &db.pool,
        now,
        &PruneOptions {
            batch: 1,
            ..PruneOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(n, 2);
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM jobs ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, vec![ids[1].0, ids[2].0]);
}

#[tokio::test]
async fn a_paused_queue_is_not_claimed_from() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    admin::set_queue_paused(&db.pool, "default", true, clock.now())
        .await
        .unwrap();
    let id = put(&db, clock.now(), NewJob::new("noop", json!({}))).await;
    let mut w = RunningWorker::start(Worker::new(
        db.pool.clone(),
        shared,
        registry(),
        test_config("w"),
    ));
    // Several poll rounds (50 ms each) pass without a claim.
    w.wait_for(20, |e| matches!(e, WorkerEvent::RescuerRan { .. }))
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(job_state(&db, id).await.state, JobState::Available);
    admin::set_queue_paused(&db.pool, "default", false, clock.now())
        .await
        .unwrap();
    w.wait_for(20, |e| *e == WorkerEvent::Completed(id)).await;
    w.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_running_job_stops_its_handler_and_refuses_its_completion() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let id = put(
        &db,
        clock.now(),
        NewJob::new("sleep", json!({"ms": 60_000})),
    )
    .await;
    let mut w = RunningWorker::start(Worker::new(
        db.pool.clone(),
        shared,
        registry(),
        test_config("w"),
    ));
    w.wait_for(20, |e| *e == WorkerEvent::Claimed(id)).await;
    let token = job_state(&db, id).await.lease_token.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    admin::stop_job(&mut tx, id, clock.now(), JobEvent::Cancel, "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    w.wait_for(20, |e| *e == WorkerEvent::Stopped(id)).await;
    let done = complete_batch(
        &db.pool,
        clock.now(),
        &[Completion {
            id,
            token,
            output: None,
            in_workflow_run: false,
        }],
        CompletedJobs::Keep,
    )
    .await
    .unwrap();
    assert!(
        done.is_empty(),
        "a completion under a dead lease is refused"
    );
    assert_eq!(job_state(&db, id).await.state, JobState::Cancelled);
    w.shutdown().await;
}

#[tokio::test]
async fn a_final_job_is_retried_as_a_linked_copy() {
    let db = TestDb::new().await;
    let (clock, _) = manual_clock();
    let id = put(&db, clock.now(), NewJob::new("noop", json!({"x": 1}))).await;
    let mut tx = db.pool.begin().await.unwrap();
    admin::stop_job(&mut tx, id, clock.now(), JobEvent::DiscardByHand, "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let r = admin::retry_job(&db.pool, id, clock.now(), "test")
        .await
        .unwrap();
    let admin::Retried::Copied { copy, .. } = r else {
        panic!("expected a copy, got {r:?}")
    };
    let c = job_state(&db, copy.id).await;
    assert_eq!(
        (c.copied_from, c.args.clone(), c.state),
        (Some(id.0), json!({"x": 1}), JobState::Available)
    );
    assert_eq!(
        job_state(&db, id).await.state,
        JobState::Discarded,
        "the original stays final"
    );
    let listed = admin::list_jobs(
        &db.pool,
        &JobFilter {
            state: Some(JobState::Discarded),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(listed.len(), 1);
}

struct WritesThenFails;
impl Handler for WritesThenFails {
    const KIND: &'static str = "writes_then_fails";
    type Args = bool;
    async fn run(&self, ctx: &mut JobContext, fail: bool) -> Result<Outcome, JobError> {
        let id = ctx.job.id.0;
        sqlx::query("INSERT INTO probe_runs (job_id, attempt, worker, started_at) VALUES ($1, 1, 'tx', now())")
            .bind(id).execute(ctx.tx().await?).await?;
        ctx.enqueue(NewJob::new("noop", json!({"follow_up_of": id})))
            .await?;
        if fail {
            return Err(JobError::permanent("decided not to keep it"));
        }
        Ok(Outcome::done())
    }
}

#[tokio::test]
async fn a_handlers_writes_and_follow_ups_commit_with_its_completion_or_not_at_all() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let mut reg = registry();
    reg.register(WritesThenFails);
    let ok = put(
        &db,
        clock.now(),
        NewJob::new("writes_then_fails", json!(false)),
    )
    .await;
    let bad = put(
        &db,
        clock.now(),
        NewJob::new("writes_then_fails", json!(true)),
    )
    .await;
    let mut w = RunningWorker::start(Worker::new(db.pool.clone(), shared, reg, test_config("w")));
    w.wait_for_all(
        20,
        vec![
            WorkerEvent::Completed(ok),
            WorkerEvent::Failed {
                id: bad,
                discarded: true,
            },
        ],
    )
    .await;
    w.shutdown().await;
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM probe_runs WHERE job_id = {}",
            ok.0
        ))
        .await,
        1
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM probe_runs WHERE job_id = {}",
            bad.0
        ))
        .await,
        0
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM jobs WHERE args->>'follow_up_of' = '{}'",
            ok.0
        ))
        .await,
        1
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM jobs WHERE args->>'follow_up_of' = '{}'",
            bad.0
        ))
        .await,
        0
    );
    // A completion in a transaction under a lost lease is refused too.
    let ok_job = job_state(&db, ok).await;
    let mut tx = db.pool.begin().await.unwrap();
    assert!(complete_one(
        &mut tx,
        &ok_job,
        12345,
        clock.now(),
        None,
        CompletedJobs::Keep
    )
    .await
    .unwrap()
    .is_none());
}

#[tokio::test]
async fn a_handler_whose_lease_cannot_be_renewed_is_stopped_before_the_lease_expires() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let id = put(
        &db,
        clock.now(),
        NewJob::new("sleep", json!({"ms": 60_000})),
    )
    .await;
    let mut cfg = test_config("w");
    cfg.lease = Duration::from_millis(1500);
    let mut w = RunningWorker::start(Worker::new(db.pool.clone(), shared, registry(), cfg));
    w.wait_for(20, |e| *e == WorkerEvent::Claimed(id)).await;
    // A stalled database: the row is locked, so every renewal blocks.
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(id.0)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let locked_at = std::time::Instant::now();
    w.wait_for(20, |e| *e == WorkerEvent::Stopped(id)).await;
    let stopped_after = locked_at.elapsed();
    // The last renewal happened at most lease/3 before the lock; the watchdog must fire
    // before that renewal's lease (1.5 s) runs out.
    assert!(
        stopped_after < Duration::from_millis(1500),
        "stopped after {stopped_after:?}"
    );
    blocker.rollback().await.unwrap();
    w.shutdown().await;
}
