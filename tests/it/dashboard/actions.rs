//! Dashboard actions through the handlers: single and bulk job actions, schedules and
//! workflows; each recorded as `dashboard:<user>`.

use axum::http::StatusCode;
use coinpilot::defs::SourceFile;
use coinpilot::queue::NewJob;
use serde_json::json;

use super::*;
use crate::support::registry;

#[tokio::test]
async fn retry_of_a_discarded_job_enqueues_a_linked_copy() {
    let d = setup().await;
    let id = add_job(&d, "noop", json!({"x": 1})).await;
    discard_all(&d).await;
    let l = login(&d, "admin", ADMIN_PW).await;
    let r = send(
        &d.app,
        post(
            &format!("/jobs/{id}/retry"),
            Some(&l.cookie),
            &[("csrf", &l.csrf)],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.location.unwrap().starts_with(&format!("/jobs/{id}?msg=")));
    let (copy, state, by): (i64, String, String) =
        sqlx::query_as("SELECT id, state::text, enqueued_by FROM jobs WHERE copied_from = $1")
            .bind(id)
            .fetch_one(&d.db.pool)
            .await
            .unwrap();
    assert_ne!(copy, id);
    assert_eq!(state, "available");
    assert_eq!(by, "dashboard:admin");
    let original: String = sqlx::query_scalar("SELECT state::text FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&d.db.pool)
        .await
        .unwrap();
    assert_eq!(original, "discarded", "a final job is never revived");
    // Cancel on a final job is a conflict shown as a page, not a crash.
    let r = send(
        &d.app,
        post(
            &format!("/jobs/{id}/cancel"),
            Some(&l.cookie),
            &[("csrf", &l.csrf)],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn bulk_retry_copies_every_discarded_job_matching_the_filter_in_batches() {
    let d = setup().await;
    // More than one batch of 1000, plus jobs the filter must leave alone.
    let n = 1_234;
    let mut jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob::new("noop", json!({"batch": "spring", "i": i})))
        .collect();
    jobs.extend((0..7).map(|i| NewJob::new("noop", json!({"batch": "autumn", "i": i}))));
    let mut c = d.db.pool.acquire().await.unwrap();
    enqueue_many(&mut c, d.clock.now(), &jobs).await.unwrap();
    drop(c);
    discard_all(&d).await;
    add_job(&d, "noop", json!({"batch": "spring", "live": true})).await;
    let l = login(&d, "admin", ADMIN_PW).await;
    // A text filter's bulk action names the id range its page searched; here all of them.
    let (from, to): (i64, i64) = sqlx::query_as("SELECT min(id), max(id) FROM jobs")
        .fetch_one(&d.db.pool)
        .await
        .unwrap();
    let (from, to) = (from.to_string(), to.to_string());
    let form = [
        ("csrf", l.csrf.as_str()),
        ("action", "retry"),
        ("state", "discarded"),
        ("kind", "noop"),
        ("q", "spring"),
        ("from", &from),
        ("to", &to),
    ];
    let r = send(&d.app, post("/jobs/bulk", Some(&l.cookie), &form)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let copies = d
        .db
        .count("SELECT count(*) FROM jobs WHERE copied_from IS NOT NULL AND enqueued_by = 'dashboard:admin'")
        .await;
    assert_eq!(copies, n as i64);
    let distinct = d
        .db
        .count("SELECT count(DISTINCT c.copied_from) FROM jobs c JOIN jobs o ON o.id = c.copied_from WHERE o.args->>'batch' = 'spring' AND o.state = 'discarded'")
        .await;
    assert_eq!(distinct, n as i64, "each original copied once");
}

#[tokio::test]
async fn bulk_cancel_stops_the_matching_live_jobs() {
    let d = setup().await;
    for i in 0..5 {
        add_job(&d, "noop", json!({"i": i})).await;
    }
    let other = add_job(&d, "sleep", json!({})).await;
    let l = login(&d, "admin", ADMIN_PW).await;
    let form = [
        ("csrf", l.csrf.as_str()),
        ("action", "cancel"),
        ("kind", "noop"),
    ];
    let r = send(&d.app, post("/jobs/bulk", Some(&l.cookie), &form)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        d.db.count("SELECT count(*) FROM jobs WHERE state = 'cancelled'")
            .await,
        5
    );
    let st: String = sqlx::query_scalar("SELECT state::text FROM jobs WHERE id = $1")
        .bind(other)
        .fetch_one(&d.db.pool)
        .await
        .unwrap();
    assert_eq!(st, "available");
}

const PAIR: &str = r#"
name = "pair"
[[step]]
id = "first"
job = "noop"
[[step]]
id = "second"
job = "noop"
after = ["first"]
"#;

const SCHEDULES: &str = r#"
[[schedule]]
name = "hourly"
cron = "0 0 * * * *"
job = "noop"

[[schedule]]
name = "pair-daily"
cron = "0 0 3 * * *"
workflow = "pair"
"#;

async fn scalar(d: &Dash, sql: &str, bind: i64) -> String {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(bind)
        .fetch_one(&d.db.pool)
        .await
        .unwrap()
}

/// The `pair` workflow and two schedules (`hourly` enqueues noop, `pair-daily` runs `pair`).
pub(crate) fn sample_defs() -> (WorkflowDef, Vec<coinpilot::schedule::ScheduleDef>) {
    let reg = registry();
    let wf =
        coinpilot::workflow::def::parse(&SourceFile::from_text("workflows/pair.toml", PAIR), &reg)
            .unwrap();
    let dir = std::env::temp_dir().join(format!(
        "cp-dash-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("s.toml"), SCHEDULES).unwrap();
    let defs = coinpilot::schedule::def::load_dir(&dir, &reg, std::slice::from_ref(&wf)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (wf, defs)
}

#[tokio::test]
async fn schedules_pause_resume_and_trigger_and_workflows_run_cancel_retry() {
    let (wf, defs) = sample_defs();
    let d = setup_with(vec![wf]).await;
    coinpilot::schedule::store::sync(&d.db.pool, &defs, false, d.clock.now())
        .await
        .unwrap();
    let l = login(&d, "admin", ADMIN_PW).await;
    let act = |p: &str| post(p, Some(&l.cookie), &[("csrf", &l.csrf)]);
    let paused = || async {
        sqlx::query_scalar::<_, bool>("SELECT paused FROM schedules WHERE name = 'hourly'")
            .fetch_one(&d.db.pool)
            .await
            .unwrap()
    };
    assert_eq!(
        send(&d.app, act("/schedules/hourly/pause")).await.status,
        StatusCode::SEE_OTHER
    );
    assert!(paused().await);
    let page = send(&d.app, get("/schedules", Some(&l.cookie))).await;
    assert!(page.body.contains("/schedules/hourly/resume"));
    send(&d.app, act("/schedules/hourly/resume")).await;
    assert!(!paused().await);
    send(&d.app, act("/schedules/hourly/trigger")).await;
    assert_eq!(
        d.db.count("SELECT count(*) FROM schedule_fires WHERE schedule = 'hourly' AND triggered_by = 'dashboard:admin'").await,
        1
    );
    assert_eq!(
        d.db.count("SELECT count(*) FROM jobs WHERE kind = 'noop'")
            .await,
        1
    );
    send(&d.app, act("/schedules/pair-daily/trigger")).await;
    assert_eq!(d.db.count("SELECT count(*) FROM workflow_runs").await, 1);
    assert_eq!(
        send(&d.app, act("/schedules/nope/trigger")).await.status,
        StatusCode::NOT_FOUND
    );

    let r = send(&d.app, act("/workflows/pair/run")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let run: i64 = r.location.unwrap()["/workflows/runs/".len()..]
        .split('?')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        scalar(
            &d,
            "SELECT triggered_by FROM workflow_runs WHERE id = $1",
            run
        )
        .await,
        "dashboard:admin"
    );
    let page = send(
        &d.app,
        get(&format!("/workflows/runs/{run}"), Some(&l.cookie)),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<svg") && page.body.contains(">second<"));
    // Cancelling the step's job by hand ends its run in the same transaction.
    let job: i64 = sqlx::query_scalar("SELECT id FROM jobs WHERE workflow_run_id = $1")
        .bind(run)
        .fetch_one(&d.db.pool)
        .await
        .unwrap();
    send(&d.app, act(&format!("/jobs/{job}/cancel"))).await;
    assert_eq!(
        scalar(&d, "SELECT state FROM workflow_runs WHERE id = $1", run).await,
        "cancelled"
    );
    let r = send(&d.app, act(&format!("/workflows/runs/{run}/retry"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        scalar(&d, "SELECT state FROM workflow_runs WHERE id = $1", run).await,
        "running"
    );
    send(&d.app, act(&format!("/workflows/runs/{run}/cancel"))).await;
    assert_eq!(
        scalar(&d, "SELECT state FROM workflow_runs WHERE id = $1", run).await,
        "cancelled"
    );
    assert_eq!(
        send(&d.app, act("/workflows/unknown/run")).await.status,
        StatusCode::NOT_FOUND
    );
}

const NAP: &str = r#"
name = "nap"
[[step]]
id = "sleep"
job = "sleep"
"#;

/// `nap` needs `ms`, which only its schedule gives; `tick` enqueues a job with no args.
const NAP_SCHEDULES: &str = r#"
[[schedule]]
name = "nap-hourly"
cron = "0 0 * * * *"
workflow = "nap"
args = { ms = 1 }

[[schedule]]
name = "tick"
cron = "0 0 * * * *"
job = "noop"
"#;

async fn run_of(d: &Dash, location: Option<String>) -> (i64, serde_json::Value) {
    let loc = location.expect("a redirect");
    let run: i64 = loc["/workflows/runs/".len()..]
        .split('?')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let args = sqlx::query_scalar("SELECT args FROM workflow_runs WHERE id = $1")
        .bind(run)
        .fetch_one(&d.db.pool)
        .await
        .unwrap();
    (run, args)
}

#[tokio::test]
async fn run_now_passes_the_schedules_args_and_trigger_of_an_argless_job_works() {
    let reg = registry();
    let wf =
        coinpilot::workflow::def::parse(&SourceFile::from_text("workflows/nap.toml", NAP), &reg)
            .unwrap();
    let dir = std::env::temp_dir().join(format!("cp-nap-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("s.toml"), NAP_SCHEDULES).unwrap();
    let defs = coinpilot::schedule::def::load_dir(&dir, &reg, std::slice::from_ref(&wf)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let d = setup_with(vec![wf]).await;
    coinpilot::schedule::store::sync(&d.db.pool, &defs, false, d.clock.now())
        .await
        .unwrap();
    let l = login(&d, "admin", ADMIN_PW).await;
    let run_now = |args: Option<&str>| {
        let mut f = vec![("csrf", l.csrf.as_str())];
        f.extend(args.map(|a| ("args", a)));
        post("/workflows/nap/run", Some(&l.cookie), &f)
    };
    // The page offers the schedule's args in the form.
    let page = send(&d.app, get("/workflows", Some(&l.cookie))).await;
    assert!(
        page.body.contains("value=\"{&quot;ms&quot;:1}\""),
        "{}",
        page.body
    );
    // No args (the button alone, or an emptied field): the schedule's, as its fire would.
    for given in [None, Some(""), Some("  ")] {
        let r = send(&d.app, run_now(given)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{given:?}: {}", r.body);
        let (run, args) = run_of(&d, r.location).await;
        assert_eq!(args, json!({"ms": 1}), "{given:?}");
        let job_args: serde_json::Value =
            sqlx::query_scalar("SELECT args FROM jobs WHERE workflow_run_id = $1")
                .bind(run)
                .fetch_one(&d.db.pool)
                .await
                .unwrap();
        assert_eq!(job_args["ms"], 1);
    }
    let r = send(&d.app, run_now(Some("{\"ms\": 7}"))).await;
    assert_eq!(run_of(&d, r.location).await.1, json!({"ms": 7}));
    for bad in ["[1]", "{\"ms\":", "7"] {
        let r = send(&d.app, run_now(Some(bad))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.body.contains("args"), "{bad}: {}", r.body);
    }
    assert_eq!(d.db.count("SELECT count(*) FROM workflow_runs").await, 4);
    // A schedule whose job has no args at all triggers a job with empty args.
    let r = send(
        &d.app,
        post(
            "/schedules/tick/trigger",
            Some(&l.cookie),
            &[("csrf", &l.csrf)],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let args: serde_json::Value = sqlx::query_scalar("SELECT args FROM jobs WHERE kind = 'noop'")
        .fetch_one(&d.db.pool)
        .await
        .unwrap();
    assert_eq!(args, json!({}));
}
