//! Dashboard form fields: arbitrary urlencoded (and not even urlencoded) bodies POSTed to
//! every form route of the real router through `oneshot`, with and without the session's
//! CSRF token, valid and invalid path segments. Never a 500; a rejected form (4xx) writes
//! nothing — a digest of every dashboard-writable table is the same before and after.

use axum::body::Body;
use axum::http::{header, Method, Request};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;

use crate::dashboard::actions::sample_defs;
use crate::dashboard::{add_job, discard_all, login, send, setup_with, Dash, ADMIN_PW};

/// Stands for the session's CSRF token in generated fields.
const CSRF: &str = "<csrf>";

/// Every table a dashboard action or a login writes.
const SNAPSHOT: &str = "SELECT concat_ws('/', \
    (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM jobs t), \
    (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM queues t), \
    (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM schedules t), \
    (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM schedule_fires t), \
    (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM workflow_runs t), \
    (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM workflow_steps t), \
    (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM dashboard_users t), \
    (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM dashboard_sessions t))";

#[derive(Debug, Clone)]
struct FormCase {
    path: String,
    body: Result<Vec<(String, String)>, Vec<u8>>,
    content_type: Option<&'static str>,
}

fn segment(known: Vec<String>) -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(known),
        1 => super::noise(12),
        1 => "\\PC{0,12}",
    ]
    .prop_map(|s| form_urlencoded::byte_serialize(s.as_bytes()).collect())
    .boxed()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn path(mut ids: Vec<String>) -> impl Strategy<Value = String> {
    ids.extend(strings(&[
        "0",
        "-1",
        "1",
        "99999999999999999999",
        "abc",
        "",
    ]));
    let id = segment(ids);
    let action = segment(strings(&[
        "retry", "cancel", "discard", "delete", "run", "pause", "resume", "trigger", "Retry",
    ]));
    let name = segment(strings(&[
        "default",
        "orders",
        "hourly",
        "pair",
        "pair-daily",
        "nope",
    ]));
    let valid = prop::sample::select(strings(&[
        "/jobs/bulk",
        "/queues/default/pause",
        "/queues/default/resume",
        "/schedules/hourly/pause",
        "/schedules/hourly/resume",
        "/schedules/hourly/trigger",
        "/schedules/pair-daily/trigger",
        "/workflows/pair/run",
        "/workflows/runs/1/retry",
        "/workflows/runs/1/cancel",
    ]));
    let job_action = prop::sample::select(strings(&["retry", "cancel", "discard"]));
    let valid_job = (id.clone(), job_action).prop_map(|(i, a)| format!("/jobs/{i}/{a}"));
    prop_oneof![
        2 => valid,
        2 => valid_job,
        1 => Just("/jobs/bulk".to_string()),
        1 => Just("/login".to_string()),
        1 => (id.clone(), action.clone()).prop_map(|(i, a)| format!("/jobs/{i}/{a}")),
        1 => (name.clone(), action.clone()).prop_map(|(n, a)| format!("/queues/{n}/{a}")),
        1 => (name.clone(), action.clone()).prop_map(|(n, a)| format!("/schedules/{n}/{a}")),
        1 => (id, action).prop_map(|(i, a)| format!("/workflows/runs/{i}/{a}")),
        1 => name.prop_map(|n| format!("/workflows/{n}/run")),
    ]
}

fn field() -> impl Strategy<Value = (String, String)> {
    let key = prop_oneof![
        4 => prop::sample::select(vec![
            "csrf", "action", "state", "kind", "queue", "q", "args", "username", "password", "ids",
        ])
        .prop_map(str::to_string),
        1 => super::noise(8),
    ];
    let value = prop_oneof![
        3 => prop::sample::select(vec![
            CSRF, "retry", "cancel", "discard", "available", "discarded", "noop", "default",
            "admin", "{}", "{\"x\":1}", "[", "", "%", "' OR 1=1 --", "\u{0}",
        ])
        .prop_map(str::to_string),
        1 => super::noise(30),
        1 => "\\PC{0,30}",
    ];
    (key, value)
}

fn form_case(ids: Vec<String>) -> impl Strategy<Value = FormCase> {
    // Most bodies carry the session's token, so the handlers behind the CSRF check see
    // them; a few drop it, or are not urlencoded at all.
    let fields = (
        prop::bool::weighted(0.8),
        prop::collection::vec(field(), 0..6),
    )
        .prop_map(|(with_csrf, mut f)| {
            if with_csrf {
                f.insert(0, ("csrf".to_string(), CSRF.to_string()));
            }
            f
        });
    let body = prop_oneof![
        4 => fields.prop_map(Ok),
        1 => prop::collection::vec(any::<u8>(), 0..80).prop_map(Err),
    ];
    let ct = prop::sample::select(vec![
        Some("application/x-www-form-urlencoded"),
        Some("application/x-www-form-urlencoded"),
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        None,
    ]);
    (path(ids), body, ct).prop_map(|(path, body, content_type)| FormCase {
        path,
        body,
        content_type,
    })
}

fn request(case: &FormCase, cookie: &str, csrf: &str) -> Request<Body> {
    let body = match &case.body {
        Ok(fields) => form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                fields
                    .iter()
                    .map(|(k, v)| (k, if v == CSRF { csrf } else { v })),
            )
            .finish()
            .into_bytes(),
        Err(raw) => raw.clone(),
    };
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(&case.path)
        .header(header::COOKIE, cookie);
    if let Some(ct) = case.content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    b.body(Body::from(body)).unwrap()
}

async fn seeded() -> Dash {
    let (wf, defs) = sample_defs();
    let d = setup_with(vec![wf]).await;
    coinpilot::schedule::store::sync(&d.db.pool, &defs, false, d.clock.now())
        .await
        .unwrap();
    for n in 0..3 {
        add_job(&d, "echo", json!({ "n": n })).await;
    }
    discard_all(&d).await;
    for _ in 0..3 {
        add_job(&d, "noop", json!({})).await;
    }
    d
}

async fn snapshot(d: &Dash) -> String {
    sqlx::query_scalar(SNAPSHOT)
        .fetch_one(&d.db.pool)
        .await
        .unwrap()
}

#[test]
fn arbitrary_form_posts_never_500_and_rejected_ones_write_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (d, l, ids) = rt.block_on(async {
        let d = seeded().await;
        let l = login(&d, "admin", ADMIN_PW).await;
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM jobs ORDER BY id")
            .fetch_all(&d.db.pool)
            .await
            .unwrap();
        (d, l, ids)
    });
    let ids = ids.iter().map(i64::to_string).collect();
    let mut runner = TestRunner::new(Config::default());
    let (rejected, accepted) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let outcome = runner.run(&form_case(ids), |case| {
        let (status, before, after) = rt.block_on(async {
            let before = snapshot(&d).await;
            let r = send(&d.app, request(&case, &l.cookie, &l.csrf)).await;
            (r.status, before, snapshot(&d).await)
        });
        if status.is_server_error() {
            return Err(TestCaseError::fail(format!("{status} for {case:?}")));
        }
        if status.is_client_error() {
            rejected.set(rejected.get() + 1);
            if before != after {
                return Err(TestCaseError::fail(format!(
                    "{status} but tables changed: {case:?}"
                )));
            }
        } else {
            accepted.set(accepted.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    let (rejected, accepted) = (rejected.get(), accepted.get());
    eprintln!("props::forms: {rejected} rejected forms wrote nothing, {accepted} accepted, no 500");
    assert!(
        rejected > 0 && accepted > 0,
        "the generator should give both outcomes"
    );
}
