//! Bad input on the command line: a clear error naming what is wrong, a non-zero exit
//! code, nothing enqueued.

use crate::support::*;

fn run(db: &TestDb, args: &[&str]) -> (i32, String, String) {
    let out = coinpilot(db).args(args).output().expect("run coinpilot");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error_and_nothing_enqueued() {
    let db = TestDb::new().await;
    let cases: [(&[&str], &str); 4] = [
        (
            &["jobs", "enqueue", "no_such_kind"],
            "unknown job kind `no_such_kind`",
        ),
        (
            &["jobs", "enqueue", "sleep", "--args", r#"{"ms":"soon"}"#],
            "args for job kind `sleep` are invalid",
        ),
        (
            &["jobs", "enqueue", "sleep", "--args", "{ms: 1"],
            "--args is not valid JSON",
        ),
        (
            &[
                "jobs",
                "enqueue",
                "sleep",
                "--args",
                r#"{"ms":1}"#,
                "--run-at",
                "tomorrow",
            ],
            "--run-at",
        ),
    ];
    for (args, expected) in cases {
        let (code, _, err) = run(&db, args);
        assert_eq!(code, 2, "{args:?}: exit code; stderr: {err}");
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in {err:?}"
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn an_unreachable_database_is_named_in_the_error() {
    let db = TestDb::new().await;
    let out = coinpilot(&db)
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nowhere")
        .args(["jobs", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "stderr: {err}");
    assert!(
        err.contains("cannot connect to PostgreSQL at postgres://nobody@127.0.0.1:1/nowhere"),
        "{err}"
    );
}

#[tokio::test]
async fn enqueue_then_list_shows_the_job_as_json() {
    let db = TestDb::new().await;
    let (code, out, err) = run(
        &db,
        &[
            "jobs",
            "enqueue",
            "sleep",
            "--args",
            r#"{"ms":100}"#,
            "--unique-key",
            "k1",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let e: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let (_, out2, _) = run(
        &db,
        &[
            "jobs",
            "enqueue",
            "sleep",
            "--args",
            r#"{"ms":100}"#,
            "--unique-key",
            "k1",
            "--json",
        ],
    );
    let e2: serde_json::Value = serde_json::from_str(out2.trim()).unwrap();
    assert_eq!(
        (e2["id"].clone(), e2["duplicate"].clone()),
        (e["id"].clone(), serde_json::Value::Bool(true))
    );
    let (code, out, _) = run(&db, &["jobs", "list", "--json", "--kind", "sleep"]);
    assert_eq!(code, 0);
    let jobs: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["args"]["ms"], 100);
    assert_eq!(
        jobs[0]["enqueued_by"].as_str().unwrap().split(':').next(),
        Some("cli")
    );
}

/// A job enqueued by hand is due at once for a worker whose clock is behind the host's (the
/// demo's `up` replays 2025 at 60×): its run_at is that worker's last heartbeat, not the
/// host's now. With `--run-at` the time asked is kept.
#[tokio::test]
async fn a_job_enqueued_by_hand_is_due_for_a_worker_on_a_replayed_clock() {
    let db = TestDb::new().await;
    let beat = chrono::DateTime::parse_from_rfc3339("2025-09-22T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    sqlx::query(
        "INSERT INTO workers (name, queues, concurrency, started_at, heartbeat_at) \
         VALUES ('demo', '{default}', 10, $1, $1)",
    )
    .bind(beat)
    .execute(&db.pool)
    .await
    .unwrap();
    // Enqueues a `sleep` job through the CLI with `extra` flags; returns its stored run_at.
    let enqueue_run_at = |extra: &'static [&'static str]| {
        let mut args = vec![
            "jobs",
            "enqueue",
            "sleep",
            "--args",
            r#"{"ms":1}"#,
            "--json",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = run(&db, &args);
        assert_eq!(code, 0, "{err}");
        let e: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let id = e["id"].as_i64().unwrap();
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
                "SELECT run_at FROM jobs WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(enqueue_run_at(&[]).await, beat);
    let asked = enqueue_run_at(&["--run-at", "2025-09-22T13:00:00Z"]).await;
    assert_eq!(asked.to_rfc3339(), "2025-09-22T13:00:00+00:00");
}
