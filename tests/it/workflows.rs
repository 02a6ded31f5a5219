//! Workflows against a real PostgreSQL: `when` conditions, skip propagation, failure that
//! cancels what is pending, retry from the failed step, and a worker killed inside a step's
//! completion transaction.

use std::sync::Arc;

use coinpilot::defs::SourceFile;
use coinpilot::queue::{Handler, HandlerRegistry, JobContext, JobError, Outcome, Worker};
use coinpilot::workflow::{def, store, RunState, StepState, WorkflowDef, WorkflowEngine};
use serde_json::{json, Value};

use crate::support::*;

/// Fails permanently until the test opens its gate (a row in its own database).
struct Gate;
impl Handler for Gate {
    const KIND: &'static str = "gate";
    type Args = Value;
    async fn run(&self, ctx: &mut JobContext, _args: Value) -> Result<Outcome, JobError> {
        let open: bool = sqlx::query_scalar("SELECT open FROM test_gate")
            .fetch_one(&ctx.pool)
            .await?;
        if open {
            Ok(Outcome::output(json!({"passed": true})))
        } else {
            Err(JobError::permanent("the gate is closed"))
        }
    }
}

fn wf_registry() -> HandlerRegistry {
    let mut r = registry();
    r.register(Gate);
    r
}

fn workflow(text: &str) -> WorkflowDef {
    def::parse(
        &SourceFile::from_text("workflows/test.toml", text),
        &wf_registry(),
    )
    .expect("valid workflow")
}

/// The trade-cycle shape with `echo` steps whose outputs the test chooses.
fn trade_cycle(signal: &str, confirmed: bool) -> WorkflowDef {
    workflow(&format!(
        r#"
name = "trade-cycle"
[[step]]
id = "collect"
job = "echo"
[[step]]
id = "evaluate"
job = "echo"
after = ["collect"]
args = {{ signal = "{signal}" }}
[[step]]
id = "review"
job = "echo"
after = ["evaluate"]
when = "evaluate.signal == 'entry'"
args = {{ confirmed = {confirmed}, confidence = 70 }}
[[step]]
id = "buy"
job = "echo"
after = ["review"]
when = "review.confirmed == true and review.confidence >= 60"
[[step]]
id = "sell"
job = "echo"
after = ["evaluate"]
when = "evaluate.signal == 'exit'"
"#
    ))
}

struct Bundle {
    db: TestDb,
    engine: WorkflowEngine,
    worker: RunningWorker,
}

async fn setup() -> Bundle {
    setup_with(test_config("wf")).await
}

async fn setup_with(config: coinpilot::queue::WorkerConfig) -> Bundle {
    let db = TestDb::new().await;
    let registry = wf_registry();
    let engine = WorkflowEngine::new(registry.clone());
    let worker = Worker::new(
        db.pool.clone(),
        coinpilot::clock::system(),
        registry,
        config,
    )
    .with_hook(Arc::new(engine.clone()));
    Bundle {
        db,
        engine,
        worker: RunningWorker::start(worker),
    }
}

impl Bundle {
    async fn start(&self, def: &WorkflowDef, args: Value) -> i64 {
        let mut tx = self.db.pool.begin().await.unwrap();
        let id = self
            .engine
            .start_run(&mut tx, def, args, "test", chrono::Utc::now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        id
    }

    async fn wait_run(&self, id: i64, state: RunState) -> store::RunView {
        wait_run(&self.db.pool, id, state).await
    }

    /// Runs a trade cycle on an entry signal to success; its collect → evaluate → review →
    /// buy steps all completed.
    async fn entry_cycle(&self) -> (i64, store::RunView) {
        let run = self
            .start(&trade_cycle("entry", true), json!({"market": "KRW-BTC"}))
            .await;
        let v = self.wait_run(run, RunState::Succeeded).await;
        for step in ["collect", "evaluate", "review", "buy"] {
            assert_eq!(state_of(&v, step), StepState::Completed, "{step}");
        }
        (run, v)
    }
}

async fn wait_run(pool: &sqlx::PgPool, id: i64, state: RunState) -> store::RunView {
    eventually(30, &format!("run {id} {state}"), || {
        let pool = pool.clone();
        async move {
            let mut c = pool.acquire().await.unwrap();
            store::show_run(&mut c, id).await.unwrap().run.state == state
        }
    })
    .await;
    let mut c = pool.acquire().await.unwrap();
    store::show_run(&mut c, id).await.unwrap()
}

fn state_of(v: &store::RunView, step: &str) -> StepState {
    v.steps.iter().find(|s| s.step == step).unwrap().state
}

#[tokio::test]
async fn an_entry_signal_runs_review_then_buy_and_skips_sell() {
    let b = setup().await;
    let (_, v) = b.entry_cycle().await;
    assert_eq!(state_of(&v, "sell"), StepState::Skipped);
    // Run args reach every step; a step's own args win; a step sees its parents' outputs.
    let output = |step: &str| {
        let s = v.steps.iter().find(|s| s.step == step).unwrap();
        s.output.clone().unwrap()
    };
    let evaluate = output("evaluate");
    assert_eq!(
        (&evaluate["market"], &evaluate["signal"]),
        (&json!("KRW-BTC"), &json!("entry"))
    );
    assert_eq!(evaluate["parents"], json!({"collect": output("collect")}));
    assert_eq!(output("buy")["parents"]["review"], output("review"));
    b.worker.shutdown().await;
}

#[tokio::test]
async fn a_worker_that_deletes_completed_jobs_keeps_every_workflow_step() {
    let mut config = test_config("wf-deleting");
    config.completed = coinpilot::queue::claim::CompletedJobs::Delete;
    let b = setup_with(config).await;
    let (run, _) = b.entry_cycle().await;
    let kept =
        b.db.count(&format!(
            "SELECT count(*) FROM jobs WHERE workflow_run_id = {run} AND state = 'completed'"
        ))
        .await;
    assert_eq!(kept, 4, "each completed step's row (and output) stays");
    b.worker.shutdown().await;
}

#[tokio::test]
async fn a_false_condition_skips_the_step_and_every_step_below_it() {
    let b = setup().await;
    let run = b.start(&trade_cycle("none", true), json!({})).await;
    let v = b.wait_run(run, RunState::Succeeded).await;
    assert_eq!(state_of(&v, "evaluate"), StepState::Completed);
    for step in ["review", "buy", "sell"] {
        assert_eq!(state_of(&v, step), StepState::Skipped, "{step}");
    }
    let buy = v.steps.iter().find(|s| s.step == "buy").unwrap();
    assert!(
        buy.note
            .as_deref()
            .unwrap_or("")
            .contains("parent `review`"),
        "{:?}",
        buy.note
    );
    assert!(buy.job_id.is_none(), "a skipped step never gets a job");
    // A rejecting review skips only the buy.
    let run = b.start(&trade_cycle("entry", false), json!({})).await;
    let v = b.wait_run(run, RunState::Succeeded).await;
    assert_eq!(state_of(&v, "review"), StepState::Completed);
    assert_eq!(state_of(&v, "buy"), StepState::Skipped);
    b.worker.shutdown().await;
}

#[tokio::test]
async fn a_missing_field_makes_the_condition_false_and_is_recorded() {
    let b = setup().await;
    let def = workflow(
        "name = \"m\"\n[[step]]\nid = \"a\"\njob = \"noop\"\n[[step]]\nid = \"b\"\njob = \"echo\"\nafter = [\"a\"]\nwhen = \"a.signal == 'entry'\"\n",
    );
    let run = b.start(&def, json!({})).await;
    let v = b.wait_run(run, RunState::Succeeded).await;
    let step = v.steps.iter().find(|s| s.step == "b").unwrap();
    assert_eq!(step.state, StepState::Skipped);
    assert!(
        step.note
            .as_deref()
            .unwrap_or("")
            .contains("field `a.signal` is missing"),
        "{:?}",
        step.note
    );
    b.worker.shutdown().await;
}

#[tokio::test]
async fn a_discarded_step_fails_the_run_and_retry_resumes_from_it() {
    let b = setup().await;
    sqlx::raw_sql(
        "CREATE TABLE test_gate (open boolean NOT NULL); INSERT INTO test_gate VALUES (false)",
    )
    .execute(&b.db.pool)
    .await
    .unwrap();
    let def = workflow(
        r#"
name = "gated"
[[step]]
id = "first"
job = "echo"
args = { n = 1 }
[[step]]
id = "gate"
job = "gate"
after = ["first"]
[[step]]
id = "last"
job = "echo"
after = ["gate"]
"#,
    );
    let run = b.start(&def, json!({})).await;
    let v = b.wait_run(run, RunState::Failed).await;
    assert_eq!(state_of(&v, "first"), StepState::Completed);
    assert_eq!(state_of(&v, "gate"), StepState::Failed);
    assert_eq!(
        state_of(&v, "last"),
        StepState::Cancelled,
        "pending steps are cancelled"
    );
    let first_job = v.steps.iter().find(|s| s.step == "first").unwrap().job_id;
    let gate_job = v
        .steps
        .iter()
        .find(|s| s.step == "gate")
        .unwrap()
        .job_id
        .unwrap();

    sqlx::query("UPDATE test_gate SET open = true")
        .execute(&b.db.pool)
        .await
        .unwrap();
    let mut tx = b.db.pool.begin().await.unwrap();
    let retried = b
        .engine
        .retry_run(&mut tx, run, chrono::Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(retried, vec!["gate".to_string(), "last".to_string()]);
    let v = b.wait_run(run, RunState::Succeeded).await;
    assert_eq!(state_of(&v, "last"), StepState::Completed);
    let gate = v.steps.iter().find(|s| s.step == "gate").unwrap();
    assert_ne!(gate.job_id, Some(gate_job), "the retry runs a new job");
    let copied: Option<i64> = sqlx::query_scalar("SELECT copied_from FROM jobs WHERE id = $1")
        .bind(gate.job_id)
        .fetch_one(&b.db.pool)
        .await
        .unwrap();
    assert_eq!(
        copied,
        Some(gate_job),
        "the retried step's job links to the failed one"
    );
    assert_eq!(
        v.steps.iter().find(|s| s.step == "first").unwrap().job_id,
        first_job,
        "completed steps are not run again"
    );
    b.worker.shutdown().await;
}

#[tokio::test]
async fn a_child_with_two_parents_is_enqueued_once() {
    let b = setup().await;
    let def = workflow(
        "name = \"join\"\n[[step]]\nid = \"a\"\njob = \"echo\"\n[[step]]\nid = \"b\"\njob = \"echo\"\n[[step]]\nid = \"c\"\njob = \"echo\"\nafter = [\"a\", \"b\"]\n",
    );
    let mut runs = Vec::new();
    for _ in 0..20 {
        runs.push(b.start(&def, json!({})).await);
    }
    for run in &runs {
        b.wait_run(*run, RunState::Succeeded).await;
    }
    let per_run: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE workflow_step = 'c' GROUP BY workflow_run_id",
    )
    .fetch_all(&b.db.pool)
    .await
    .unwrap();
    assert_eq!(per_run.len(), 20);
    assert!(per_run.iter().all(|n| *n == 1), "{per_run:?}");
    b.worker.shutdown().await;
}

/// A worker process aborts inside a step's completion transaction (after the step was
/// marked completed and its child enqueued, before the commit). Nothing of it survives;
/// the job is rescued after its lease and completed by another worker, and the child is
/// enqueued exactly once.
#[tokio::test]
async fn a_worker_killed_inside_a_step_completion_leaves_no_stuck_run_and_no_double_child() {
    let _heavy = one_heavy_test_at_a_time();
    let Bundle { db, engine, worker } = setup().await;
    worker.shutdown().await; // only worker processes work in this test
    let def = workflow(
        "name = \"crash\"\n[[step]]\nid = \"a\"\njob = \"echo\"\n[[step]]\nid = \"b\"\njob = \"echo\"\nafter = [\"a\"]\n",
    );
    let mut tx = db.pool.begin().await.unwrap();
    let run = engine
        .start_run(&mut tx, &def, json!({}), "test", chrono::Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut doomed = coinpilot(&db)
        .args([
            "worker", "--name", "doomed", "--queues", "default", "--poll", "0.2", "--lease", "2",
        ])
        .env("COINPILOT_FAILPOINT", "workflow.step_completed")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Reaped)
        .unwrap();
    let status = tokio::task::spawn_blocking(move || doomed.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the failpoint aborts the worker");
    let children: i64 = db
        .count("SELECT count(*) FROM jobs WHERE workflow_step = 'b'")
        .await;
    assert_eq!(children, 0, "the aborted transaction enqueued nothing");

    let mut rescuer = spawn_worker(
        &db,
        "rescuer",
        &["--lease", "2", "--rescue-interval", "0.2"],
    );
    let v = wait_run(&db.pool, run, RunState::Succeeded).await;
    signal(&rescuer, "-TERM");
    rescuer.wait().unwrap();
    assert_eq!(state_of(&v, "b"), StepState::Completed);
    let children: i64 = db
        .count("SELECT count(*) FROM jobs WHERE workflow_step = 'b'")
        .await;
    assert_eq!(children, 1, "the child is enqueued exactly once");
    let attempts: i32 = sqlx::query_scalar("SELECT attempt FROM jobs WHERE workflow_step = 'a'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 2, "the rescued step ran a second attempt");
}
