//! `--delete-completed` (`CompletedJobs::Delete`): a job completed without an output and
//! outside a workflow run leaves no row; every other outcome is kept as before, and the
//! lease token still decides whether a completion is taken.

use std::time::Duration;

use coinpilot::clock::Clock;
use coinpilot::queue::claim::{
    claim_batch, complete_batch, complete_one, CompletedJobs, CompletedRow, Completion,
};
use coinpilot::queue::handler::{Handler, JobContext, JobError, Outcome};
use coinpilot::queue::runtime::WorkerEvent;
use coinpilot::queue::{JobId, JobState, NewJob, Worker};
use serde_json::json;

use crate::support::*;

/// Writes a `probe_runs` row through the job's own transaction and returns no output.
struct WritesInItsTransaction;
impl Handler for WritesInItsTransaction {
    const KIND: &'static str = "writes_in_tx";
    type Args = serde_json::Value;
    async fn run(&self, ctx: &mut JobContext, _: serde_json::Value) -> Result<Outcome, JobError> {
        let id = ctx.job.id.0;
        sqlx::query("INSERT INTO probe_runs (job_id, attempt, worker, started_at) VALUES ($1, 1, 'tx', now())")
            .bind(id)
            .execute(ctx.tx().await?)
            .await?;
        Ok(Outcome::done())
    }
}

async fn mark_in_workflow(db: &TestDb, id: JobId) {
    sqlx::query("UPDATE jobs SET workflow_run_id = 4242, workflow_step = 'step' WHERE id = $1")
        .bind(id.0)
        .execute(&db.pool)
        .await
        .unwrap();
}

async fn row_state(db: &TestDb, id: JobId) -> Option<JobState> {
    sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
        .bind(id.0)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_deleting_worker_keeps_only_outputs_workflow_steps_and_failures() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let now = clock.now();
    let plain = enqueue_all(&db, now, &vec![NewJob::new("noop", json!({})); 20]).await;
    let mut kept = enqueue_all(
        &db,
        now,
        &[
            NewJob::new("echo", json!({"kept": "for its output"})),
            NewJob::new("noop", json!({"step": true})),
        ],
    )
    .await;
    mark_in_workflow(&db, kept[1]).await;
    let in_tx = enqueue_all(&db, now, &[NewJob::new("writes_in_tx", json!({}))]).await[0];
    let failed = enqueue_all(
        &db,
        now,
        &[NewJob::new("no_such_kind", json!({})).with_max_attempts(1)],
    )
    .await[0];

    let mut reg = registry();
    reg.register(WritesInItsTransaction);
    let mut config = test_config("deleter");
    config.completed = CompletedJobs::Delete;
    let mut w = RunningWorker::start(Worker::new(db.pool.clone(), shared, reg, config));
    let mut expected: Vec<WorkerEvent> = plain
        .iter()
        .chain(&kept)
        .chain([&in_tx])
        .map(|id| WorkerEvent::Completed(*id))
        .collect();
    expected.push(WorkerEvent::Failed {
        id: failed,
        discarded: true,
    });
    w.wait_for_all(30, expected).await;
    w.shutdown().await;

    for id in plain.iter().chain([&in_tx]) {
        assert_eq!(row_state(&db, *id).await, None, "job {id:?} was deleted");
    }
    let probe = db
        .count(&format!(
            "SELECT count(*) FROM probe_runs WHERE job_id = {}",
            in_tx.0
        ))
        .await;
    assert_eq!(
        probe, 1,
        "the handler's own write committed with the deletion"
    );
    let output: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT output FROM jobs WHERE id = $1 AND state = 'completed'")
            .bind(kept[0].0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(output, Some(json!({"kept": "for its output"})));
    let step = kept.remove(1);
    assert_eq!(row_state(&db, step).await, Some(JobState::Completed));
    assert_eq!(row_state(&db, failed).await, Some(JobState::Discarded));
}

fn completion(id: JobId, token: i64, output: Option<serde_json::Value>) -> Completion {
    Completion {
        id,
        token,
        output,
        in_workflow_run: false,
    }
}

#[tokio::test]
async fn a_deleting_completion_still_needs_the_current_lease() {
    let db = TestDb::new().await;
    let (clock, _) = manual_clock();
    let now = clock.now();
    let jobs: Vec<NewJob> = (1..=5)
        .map(|n| NewJob::new("noop", json!({ "n": n })))
        .collect();
    let ids = enqueue_all(&db, now, &jobs).await;
    mark_in_workflow(&db, ids[1]).await;
    mark_in_workflow(&db, ids[4]).await;
    let claimed = claim_batch(&db.pool, "default", now, 5, "w", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 5);
    let job = |id: JobId| claimed.iter().find(|j| j.id == id).unwrap().clone();
    let token = |id: JobId| job(id).lease_token.unwrap();

    // A stale token deletes nothing.
    let stale = completion(ids[0], token(ids[0]) + 1_000_000, None);
    let done = complete_batch(&db.pool, now, &[stale], CompletedJobs::Delete)
        .await
        .unwrap();
    assert!(done.is_empty());
    assert_eq!(row_state(&db, ids[0]).await, Some(JobState::Running));

    // A mixed batch: the workflow step (lower id) and the job with an output are kept,
    // each output on its own row; the plain job goes. Its repeat is refused.
    let mut step = completion(ids[1], token(ids[1]), None);
    step.in_workflow_run = true;
    let batch = [
        completion(ids[2], token(ids[2]), Some(json!({"for": 2}))),
        step,
        completion(ids[0], token(ids[0]), None),
    ];
    let mut done = complete_batch(&db.pool, now, &batch, CompletedJobs::Delete)
        .await
        .unwrap();
    done.sort();
    assert_eq!(done, vec![ids[0], ids[1], ids[2]]);
    assert_eq!(row_state(&db, ids[0]).await, None);
    assert_eq!(row_state(&db, ids[1]).await, Some(JobState::Completed));
    let output: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT output FROM jobs WHERE id = $1 AND state = 'completed'")
            .bind(ids[2].0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(output, Some(json!({"for": 2})));
    let again = complete_batch(
        &db.pool,
        now,
        &[completion(ids[0], token(ids[0]), None)],
        CompletedJobs::Delete,
    )
    .await
    .unwrap();
    assert!(again.is_empty(), "a repeated completion is refused");

    // In the handler's transaction: a stale token changes nothing, the current one deletes
    // the plain job, and the workflow step is completed and kept.
    let mut tx = db.pool.begin().await.unwrap();
    let plain = job(ids[3]);
    let refused = complete_one(&mut tx, &plain, 7, now, None, CompletedJobs::Delete)
        .await
        .unwrap();
    assert!(refused.is_none());
    let gone = complete_one(
        &mut tx,
        &plain,
        token(ids[3]),
        now,
        None,
        CompletedJobs::Delete,
    )
    .await
    .unwrap();
    let kept = complete_one(
        &mut tx,
        &job(ids[4]),
        token(ids[4]),
        now,
        None,
        CompletedJobs::Delete,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(gone, Some(CompletedRow::Deleted(id)) if id == ids[3]));
    assert!(matches!(kept, Some(CompletedRow::Kept(ref j)) if j.state == JobState::Completed));
    assert_eq!(row_state(&db, ids[3]).await, None);
    assert_eq!(row_state(&db, ids[4]).await, Some(JobState::Completed));
}
