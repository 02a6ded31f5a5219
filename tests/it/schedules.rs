//! Schedules against a real PostgreSQL: exactly one job per fire time across worker
//! processes, catch-up after downtime on a manual clock, DST transitions, pause, resume
//! and manual triggers, and bad files refused with their location.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use coinpilot::clock::{Clock, ManualClock, SharedClock};
use coinpilot::schedule::{def, store, Scheduler};
use coinpilot::workflow::WorkflowEngine;

use crate::support::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A directory of definition files for one test.
struct DefsDir(PathBuf);

impl DefsDir {
    fn new(files: &[(&str, &str)]) -> DefsDir {
        let dir = std::env::temp_dir().join(format!(
            "cp-defs-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        DefsDir(dir)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for DefsDir {
    fn drop(&mut self) {
        let _ignored = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads `text` as a jobs file, syncs it at `now` and returns a scheduler on `clock`.
async fn scheduler_with(
    db: &TestDb,
    text: &str,
    clock: SharedClock,
    now: DateTime<Utc>,
) -> Scheduler {
    let dir = DefsDir::new(&[("s.toml", text)]);
    let reg = registry();
    let defs = def::load_dir(&dir.0, &reg, &[]).unwrap();
    store::sync(&db.pool, &defs, false, now).await.unwrap();
    Scheduler::new(db.pool.clone(), clock, reg, Vec::new())
}

async fn fire_times(db: &TestDb, schedule: &str) -> Vec<(DateTime<Utc>, String)> {
    sqlx::query_as(
        "SELECT fire_time, trigger FROM schedule_fires WHERE schedule = $1 ORDER BY fire_time",
    )
    .bind(schedule)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// The fire times of a schedule, oldest first, without their triggers.
async fn fire_instants(db: &TestDb, schedule: &str) -> Vec<DateTime<Utc>> {
    fire_times(db, schedule)
        .await
        .into_iter()
        .map(|f| f.0)
        .collect()
}

#[tokio::test]
async fn downtime_none_latest_and_all_behave_as_documented() {
    let db = TestDb::new().await;
    let t0 = utc("2025-09-01T00:00:00Z");
    let clock = ManualClock::new(t0);
    let text = r#"
[[schedule]]
name = "none"
cron = "* * * * *"
job = "noop"
catch_up = "none"
misfire_grace = "10s"
[[schedule]]
name = "latest"
cron = "* * * * *"
job = "noop"
catch_up = "latest"
misfire_grace = "10s"
[[schedule]]
name = "all"
cron = "* * * * *"
job = "noop"
catch_up = "all"
misfire_grace = "10s"
"#;
    let s = scheduler_with(&db, text, Arc::new(clock.clone()), t0).await;
    // Every worker was down from 00:00 to 00:05:30: fires 00:01 … 00:05 are all older
    // than the 10 s grace when the first tick comes.
    clock.set(utc("2025-09-01T00:05:30Z"));
    let r = s.tick().await.unwrap();
    assert_eq!(r.fired, 6, "{r:?}");
    assert!(
        fire_times(&db, "none").await.is_empty(),
        "none skips every missed fire"
    );
    assert_eq!(
        fire_times(&db, "latest").await,
        vec![(utc("2025-09-01T00:05:00Z"), "catch_up".to_string())],
        "latest fires the most recent once"
    );
    let all = fire_instants(&db, "all").await;
    assert_eq!(
        all,
        (1..=5)
            .map(|m| t0 + chrono::Duration::minutes(m))
            .collect::<Vec<_>>(),
        "all fires each, oldest first"
    );
    let missed: i64 = db
        .count("SELECT missed_total FROM schedules WHERE name = 'none'")
        .await;
    assert_eq!(missed, 5);
    // A second tick at the same instant fires nothing more; the next minute fires once each.
    assert_eq!(s.tick().await.unwrap().fired, 0);
    clock.set(utc("2025-09-01T00:06:00.005Z"));
    assert_eq!(s.tick().await.unwrap().fired, 3);
    let jobs: i64 = db
        .count("SELECT count(*) FROM jobs WHERE enqueued_by LIKE 'schedule:%'")
        .await;
    assert_eq!(jobs, 9);
}

/// Ticks every `step` of manual time from `from` to `to`.
async fn tick_through(
    s: &Scheduler,
    clock: &ManualClock,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: chrono::Duration,
) {
    let mut t = from;
    while t <= to {
        clock.set(t);
        s.tick().await.unwrap();
        t += step;
    }
}

#[tokio::test]
async fn dst_spring_forward_and_fall_back_in_new_york() {
    let db = TestDb::new().await;
    let start = utc("2025-03-08T12:00:00Z");
    let clock = ManualClock::new(start);
    let text = r#"
[[schedule]]
name = "gap"
cron = "30 2 * * *"
timezone = "America/New_York"
job = "noop"
misfire_grace = "15m"
[[schedule]]
name = "repeat"
cron = "30 1 * * *"
timezone = "America/New_York"
job = "noop"
misfire_grace = "15m"
"#;
    let s = scheduler_with(&db, text, Arc::new(clock.clone()), start).await;
    tick_through(
        &s,
        &clock,
        start,
        utc("2025-03-10T12:00:00Z"),
        chrono::Duration::minutes(5),
    )
    .await;
    let gap = fire_instants(&db, "gap").await;
    // 02:30 does not exist on 9 March: it fires at 03:00 EDT, the first instant after.
    assert_eq!(
        gap,
        vec![utc("2025-03-09T07:00:00Z"), utc("2025-03-10T06:30:00Z")]
    );

    let fall = utc("2025-11-01T12:00:00Z");
    clock.set(fall);
    sqlx::query("UPDATE schedules SET next_fire_at = $1 WHERE name = 'repeat'")
        .bind(utc("2025-11-02T05:30:00Z"))
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE schedules SET enabled = false WHERE name = 'gap'")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM schedule_fires")
        .execute(&db.pool)
        .await
        .unwrap();
    tick_through(
        &s,
        &clock,
        fall,
        utc("2025-11-03T12:00:00Z"),
        chrono::Duration::minutes(5),
    )
    .await;
    let repeat = fire_instants(&db, "repeat").await;
    // 01:30 happens twice on 2 November: it fires once, at the first (EDT) occurrence.
    assert_eq!(
        repeat,
        vec![utc("2025-11-02T05:30:00Z"), utc("2025-11-03T06:30:00Z")]
    );
}

#[tokio::test]
async fn concurrent_ticks_fire_each_time_once() {
    let db = TestDb::new().await;
    let t0 = utc("2025-09-01T00:00:00Z");
    let clock = ManualClock::new(t0);
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!(
            "[[schedule]]\nname = \"s{i}\"\ncron = \"* * * * * *\"\njob = \"noop\"\n"
        ));
    }
    let shared: SharedClock = Arc::new(clock.clone());
    let s = Arc::new(scheduler_with(&db, &text, shared, t0).await);
    for second in 1..=20 {
        clock.set(t0 + chrono::Duration::seconds(second));
        let ticks: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.tick().await.unwrap().fired })
            })
            .collect();
        let mut fired = 0;
        for t in ticks {
            fired += t.await.unwrap();
        }
        assert_eq!(
            fired, 50,
            "second {second}: one fire per schedule among four tickers"
        );
    }
    let dup: i64 = db.count("SELECT count(*) FROM (SELECT 1 FROM schedule_fires GROUP BY schedule, fire_time HAVING count(*) > 1) d").await;
    assert_eq!(dup, 0);
    assert_eq!(db.count("SELECT count(*) FROM jobs").await, 50 * 20);
}

#[tokio::test]
async fn pause_resume_and_a_manual_trigger_recorded_as_such() {
    let db = TestDb::new().await;
    let t0 = utc("2025-09-01T00:00:00Z");
    let clock = ManualClock::new(t0);
    let s = scheduler_with(
        &db,
        "[[schedule]]\nname = \"p\"\ncron = \"* * * * *\"\njob = \"noop\"\n",
        Arc::new(clock.clone()),
        t0,
    )
    .await;
    let mut tx = db.pool.begin().await.unwrap();
    store::set_paused(&mut tx, "p", true, t0).await.unwrap();
    tx.commit().await.unwrap();
    clock.set(utc("2025-09-01T00:01:00Z"));
    assert_eq!(
        s.tick().await.unwrap().fired,
        0,
        "a paused schedule does not fire"
    );
    // A pause outlives a restart: syncing the file again keeps it.
    let reg = registry();
    let dir = DefsDir::new(&[(
        "s.toml",
        "[[schedule]]\nname = \"p\"\ncron = \"* * * * *\"\njob = \"noop\"\n",
    )]);
    store::sync(
        &db.pool,
        &def::load_dir(&dir.0, &reg, &[]).unwrap(),
        false,
        clock.now(),
    )
    .await
    .unwrap();
    let list = store::list(&db.pool, clock.now(), 2).await.unwrap();
    assert_eq!(list[0].status, "paused");
    assert!(list[0].next_fires_utc.is_empty());

    let workflows = HashMap::new();
    let engine = WorkflowEngine::new(reg.clone());
    let firing = coinpilot::schedule::Firing {
        registry: &reg,
        engine: &engine,
        workflows: &workflows,
    };
    let t = coinpilot::schedule::trigger_now(
        &db.pool,
        &firing,
        "p",
        utc("2025-09-01T00:01:10Z"),
        "cli:alice",
    )
    .await
    .unwrap();
    let by: String = sqlx::query_scalar("SELECT enqueued_by FROM jobs WHERE id = $1")
        .bind(t.job_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(by, "cli:alice");
    assert_eq!(
        fire_times(&db, "p").await,
        vec![(utc("2025-09-01T00:01:10Z"), "manual".to_string())]
    );

    let mut tx = db.pool.begin().await.unwrap();
    store::set_paused(&mut tx, "p", false, utc("2025-09-01T00:03:30Z"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    clock.set(utc("2025-09-01T00:03:30Z"));
    assert_eq!(
        s.tick().await.unwrap().fired,
        0,
        "the paused period is not caught up"
    );
    clock.set(utc("2025-09-01T00:04:00Z"));
    assert_eq!(s.tick().await.unwrap().fired, 1);
    let list = store::list(&db.pool, utc("2025-09-01T00:04:00Z"), 2)
        .await
        .unwrap();
    assert_eq!(list[0].status, "active");
    assert_eq!(
        list[0].next_fires_utc,
        vec![utc("2025-09-01T00:05:00Z"), utc("2025-09-01T00:06:00Z")]
    );
    assert_eq!(list[0].last_trigger.as_deref(), Some("cron"));
}

/// Three worker processes with a per-second schedule for a minute of real time: every fire
/// time in the window produced exactly one job, none missed.
#[tokio::test]
async fn a_per_second_schedule_fires_exactly_once_across_three_worker_processes() {
    let _heavy = one_heavy_test_at_a_time();
    let db = TestDb::new().await;
    let secs: u64 = std::env::var("COINPILOT_SCHEDULE_TEST_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let jobs = DefsDir::new(&[(
        "tick.toml",
        "[[schedule]]\nname = \"tick\"\ncron = \"* * * * * *\"\njob = \"noop\"\n",
    )]);
    let empty = DefsDir::new(&[]);
    let mut workers: Vec<_> = (0..3)
        .map(|i| {
            spawn_worker(
                &db,
                &format!("w{i}"),
                &[
                    "--jobs-dir",
                    jobs.path(),
                    "--workflows-dir",
                    empty.path(),
                    "--concurrency",
                    "2",
                ],
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    for w in &workers {
        signal(w, "-TERM");
    }
    for w in &mut workers {
        assert!(w.wait().unwrap().success());
    }
    let fires = fire_times(&db, "tick").await;
    assert!(
        fires.len() as u64 >= secs - 5,
        "only {} fires in {secs} s",
        fires.len()
    );
    for pair in fires.windows(2) {
        assert_eq!(
            pair[1].0 - pair[0].0,
            chrono::Duration::seconds(1),
            "a fire time was missed or doubled: {pair:?}"
        );
    }
    let jobs_per_fire: i64 = db
        .count("SELECT count(*) FROM jobs WHERE enqueued_by = 'schedule:tick'")
        .await;
    assert_eq!(jobs_per_fire, fires.len() as i64, "one job per fire time");
    let unfinished: i64 = db
        .count("SELECT count(*) FROM jobs WHERE state NOT IN ('completed')")
        .await;
    assert!(unfinished <= 1, "{unfinished} jobs left unfinished");
}

#[tokio::test]
async fn a_bad_schedule_file_stops_the_worker_with_its_location() {
    let db = TestDb::new().await;
    let jobs = DefsDir::new(&[("bad.toml", "[[schedule]]\nname = \"x\"\ncron = \"* * * * *\"\ntimezone = \"Mars/Base\"\njob = \"noop\"\n")]);
    let out = coinpilot(&db)
        .args(["worker", "--jobs-dir", jobs.path()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4: schedule[0].timezone"), "{err}");
    let rows: i64 = db.count("SELECT count(*) FROM schedules").await;
    assert_eq!(rows, 0, "nothing was synced");
}

#[tokio::test]
async fn prune_history_deletes_old_fires_and_finished_runs_only() {
    let db = TestDb::new().await;
    let now = chrono::Utc::now();
    let old = now - chrono::Duration::days(8);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO schedule_fires (schedule, fire_time, trigger, triggered_by, created_at)
         VALUES ('s', '{old}', 'cron', 'schedule:s', '{old}'), ('s', '{now}', 'cron', 'schedule:s', '{now}');
         INSERT INTO workflow_runs (workflow, state, definition, triggered_by, created_at, finished_at)
         VALUES ('w', 'succeeded', '{{}}', 't', '{old}', '{old}'),
                ('w', 'running', '{{}}', 't', '{old}', NULL),
                ('w', 'failed', '{{}}', 't', '{now}', '{now}');"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let mut reg = registry();
    coinpilot::schedule::register_kinds(&mut reg);
    let job = reg
        .new_job("prune_history", serde_json::json!({"days": 7}))
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let id = coinpilot::queue::enqueue(&mut conn, now, &job)
        .await
        .unwrap()
        .id;
    drop(conn);
    let mut w = RunningWorker::start(coinpilot::queue::Worker::new(
        db.pool.clone(),
        coinpilot::clock::system(),
        reg,
        test_config("prune"),
    ));
    w.wait_for(30, |e| {
        *e == coinpilot::queue::runtime::WorkerEvent::Completed(id)
    })
    .await;
    w.shutdown().await;
    assert_eq!(db.count("SELECT count(*) FROM schedule_fires").await, 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT state FROM workflow_runs ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, vec!["running".to_string(), "failed".to_string()]);
}

#[tokio::test]
async fn a_schedule_this_worker_cannot_fire_is_deferred_without_blocking_the_others() {
    let db = TestDb::new().await;
    let t0 = utc("2025-09-01T00:00:00Z");
    let clock = ManualClock::new(t0);
    // A newer worker synced a schedule of a kind (prune_history) this one lacks.
    let mut newer = registry();
    coinpilot::schedule::register_kinds(&mut newer);
    let dir = DefsDir::new(&[(
        "s.toml",
        "[[schedule]]\nname = \"a-new-kind\"\ncron = \"* * * * *\"\njob = \"prune_history\"\n\
         [[schedule]]\nname = \"plain\"\ncron = \"* * * * *\"\njob = \"noop\"\n",
    )]);
    store::sync(
        &db.pool,
        &def::load_dir(&dir.0, &newer, &[]).unwrap(),
        false,
        t0,
    )
    .await
    .unwrap();
    let older = Scheduler::new(
        db.pool.clone(),
        Arc::new(clock.clone()),
        registry(),
        Vec::new(),
    );
    clock.set(utc("2025-09-01T00:01:00Z"));
    let r = older.tick().await.unwrap();
    assert_eq!((r.fired, r.deferred, r.full), (1, 1, false), "{r:?}");
    assert_eq!(fire_times(&db, "plain").await.len(), 1);
    assert!(fire_times(&db, "a-new-kind").await.is_empty());
    // The newer worker fires what the older one left due.
    let newer = Scheduler::new(db.pool.clone(), Arc::new(clock.clone()), newer, Vec::new());
    assert_eq!(newer.tick().await.unwrap().fired, 1);
    assert_eq!(fire_times(&db, "a-new-kind").await.len(), 1);
}

#[tokio::test]
async fn resuming_a_schedule_that_is_not_paused_keeps_its_due_fire() {
    let db = TestDb::new().await;
    let t0 = utc("2025-09-01T00:00:00Z");
    let clock = ManualClock::new(t0);
    let s = scheduler_with(
        &db,
        "[[schedule]]\nname = \"p\"\ncron = \"* * * * *\"\njob = \"noop\"\n",
        Arc::new(clock.clone()),
        t0,
    )
    .await;
    let at = utc("2025-09-01T00:01:00.500Z");
    let mut tx = db.pool.begin().await.unwrap();
    store::set_paused(&mut tx, "p", false, at).await.unwrap();
    tx.commit().await.unwrap();
    clock.set(at);
    assert_eq!(s.tick().await.unwrap().fired, 1, "the 00:01 fire was kept");
}

#[tokio::test]
async fn sync_prune_refuses_a_directory_without_schedules() {
    let db = TestDb::new().await;
    let dir = DefsDir::new(&[(
        "s.toml",
        "[[schedule]]\nname = \"p\"\ncron = \"* * * * *\"\njob = \"noop\"\n",
    )]);
    let ok = coinpilot(&db)
        .args(["schedules", "sync", "--jobs-dir", dir.path()])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = coinpilot(&db)
        .args([
            "schedules",
            "sync",
            "--prune",
            "--jobs-dir",
            "/nonexistent/jobs",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no schedule"));
    let pruned = db
        .count("SELECT count(*) FROM schedules WHERE pruned")
        .await;
    assert_eq!(pruned, 0, "nothing was pruned");
}
