//! The dashboard's handlers through `oneshot` on a real PostgreSQL: access control (login,
//! session, CSRF, roles, rate limit), search filters that must not be injectable, single and
//! bulk actions, and error pages that show nothing internal.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use coinpilot::clock::{self, SharedClock};
use coinpilot::defs::SourceFile;
use coinpilot::queue::{enqueue, enqueue_many, NewJob};
use coinpilot::web::accounts::{Account, Role};
use coinpilot::web::{self, AuthConfig, DashState, OpsState};
use coinpilot::workflow::WorkflowDef;
use serde_json::json;
use tower::ServiceExt;

use crate::support::{registry, TestDb};

const ADMIN_PW: &str = "correct horse battery staple";
const VIEWER_PW: &str = "viewer-pass-123";

struct Dash {
    db: TestDb,
    app: Router,
    clock: SharedClock,
}

async fn setup() -> Dash {
    setup_with(Vec::new()).await
}

async fn setup_with(workflows: Vec<WorkflowDef>) -> Dash {
    let db = TestDb::new().await;
    let clock = clock::system();
    let auth = AuthConfig {
        accounts: vec![
            Account::from_password("admin", Role::Admin, ADMIN_PW).unwrap(),
            Account::from_password("viewer", Role::Viewer, VIEWER_PW).unwrap(),
        ],
        secure_cookies: false,
        limiter: Default::default(),
    };
    let dash = DashState::new(db.pool.clone(), clock.clone(), registry(), workflows, auth);
    let ops = OpsState {
        pool: db.pool.clone(),
        clock: clock.clone(),
        metrics: None,
        metrics_token: Some(Arc::from("metrics-secret")),
    };
    Dash {
        app: web::app(dash, ops),
        db,
        clock,
    }
}

struct Reply {
    status: StatusCode,
    location: Option<String>,
    set_cookie: Option<String>,
    body: String,
}

fn from_ip(mut req: Request<Body>, ip: [u8; 4]) -> Request<Body> {
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
    req
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let h = |n: header::HeaderName| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (status, location, set_cookie) =
        (resp.status(), h(header::LOCATION), h(header::SET_COOKIE));
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        location,
        set_cookie,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().uri(path);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

fn post(path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Request<Body> {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(body)).unwrap()
}

/// A logged-in session: its cookie and the CSRF token its pages embed.
struct Login {
    cookie: String,
    csrf: String,
}

async fn login(d: &Dash, user: &str, pw: &str) -> Login {
    let r = send(
        &d.app,
        post("/login", None, &[("username", user), ("password", pw)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let set = r.set_cookie.expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let page = send(&d.app, get("/", Some(&cookie))).await;
    assert_eq!(page.status, StatusCode::OK);
    let at = page
        .body
        .find("name=\"csrf\" value=\"")
        .expect("a csrf field")
        + 19;
    let csrf = page.body[at..at + 64].to_string();
    Login { cookie, csrf }
}

async fn add_job(d: &Dash, kind: &str, args: serde_json::Value) -> i64 {
    let mut c = d.db.pool.acquire().await.unwrap();
    enqueue(&mut c, d.clock.now(), &NewJob::new(kind, args))
        .await
        .unwrap()
        .id
        .0
}

async fn discard_all(d: &Dash) {
    sqlx::query("UPDATE jobs SET state = 'discarded', finished_at = $1 WHERE state = 'available'")
        .bind(d.clock.now())
        .execute(&d.db.pool)
        .await
        .unwrap();
}

/// The job ids a jobs page links to.
fn listed_ids(body: &str) -> Vec<i64> {
    body.match_indices("<td class=\"num\"><a href=\"/jobs/")
        .filter_map(|(i, m)| {
            let rest = &body[i + m.len()..];
            rest[..rest.find('"')?].parse().ok()
        })
        .collect()
}

#[tokio::test]
async fn every_route_without_a_session_redirects_to_login_or_401s() {
    let d = setup().await;
    let id = add_job(&d, "noop", json!({})).await.to_string();
    let pages = [
        "/".to_string(),
        "/jobs".into(),
        "/jobs?state=discarded&q=x".into(),
        format!("/jobs/{id}"),
        "/schedules".into(),
        "/workflows".into(),
        "/workflows/runs/1".into(),
        "/trading".into(),
    ];
    for p in &pages {
        let r = send(&d.app, get(p, None)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "GET {p}");
        assert_eq!(r.location.as_deref(), Some("/login"), "GET {p}");
    }
    let actions = [
        format!("/jobs/{id}/retry"),
        format!("/jobs/{id}/cancel"),
        "/jobs/bulk".into(),
        "/queues/default/pause".into(),
        "/schedules/s/trigger".into(),
        "/workflows/w/run".into(),
        "/workflows/runs/1/retry".into(),
        "/logout".into(),
    ];
    for p in &actions {
        let r = send(&d.app, post(p, None, &[("action", "retry")])).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "POST {p}");
        assert_eq!(r.location.as_deref(), Some("/login"), "POST {p}");
    }
    // A forged cookie is no session either.
    let r = send(&d.app, get("/jobs", Some("coinpilot_session=00ff"))).await;
    assert_eq!(r.location.as_deref(), Some("/login"));
    assert_eq!(
        send(&d.app, get("/api/overview", None)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        d.db.count("SELECT count(*) FROM jobs").await,
        1,
        "nothing acted"
    );
    for open in ["/login", "/healthz", "/readyz"] {
        assert_eq!(
            send(&d.app, get(open, None)).await.status,
            StatusCode::OK,
            "{open}"
        );
    }
}

#[tokio::test]
async fn metrics_needs_the_bearer_token_when_one_is_set() {
    let d = setup().await;
    assert_eq!(
        send(&d.app, get("/metrics", None)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let with = |t: &str| {
        Request::builder()
            .uri("/metrics")
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&d.app, with("wrong")).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Past the token check; this test app has no recorder installed.
    assert_eq!(
        send(&d.app, with("metrics-secret")).await.status,
        StatusCode::NOT_FOUND
    );
    // A dashboard session is not a metrics token.
    let l = login(&d, "admin", ADMIN_PW).await;
    assert_eq!(
        send(&d.app, get("/metrics", Some(&l.cookie))).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn post_without_a_valid_csrf_token_is_forbidden() {
    let d = setup().await;
    let id = add_job(&d, "noop", json!({})).await;
    discard_all(&d).await;
    let l = login(&d, "admin", ADMIN_PW).await;
    let path = format!("/jobs/{id}/retry");
    let r = send(&d.app, post(&path, Some(&l.cookie), &[])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let wrong = "0".repeat(64);
    let r = send(&d.app, post(&path, Some(&l.cookie), &[("csrf", &wrong)])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Another session's token does not count either.
    let other = login(&d, "admin", ADMIN_PW).await;
    let r = send(
        &d.app,
        post(&path, Some(&l.cookie), &[("csrf", &other.csrf)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        d.db.count("SELECT count(*) FROM jobs").await,
        1,
        "no copy made"
    );
    let r = send(&d.app, post(&path, Some(&l.cookie), &[("csrf", &l.csrf)])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(d.db.count("SELECT count(*) FROM jobs").await, 2);
}

#[tokio::test]
async fn a_viewer_sees_but_cannot_act() {
    let d = setup().await;
    let id = add_job(&d, "noop", json!({})).await;
    let v = login(&d, "viewer", VIEWER_PW).await;
    let page = send(&d.app, get(&format!("/jobs/{id}"), Some(&v.cookie))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains("/cancel\""),
        "no action buttons for a viewer"
    );
    for p in [
        format!("/jobs/{id}/cancel"),
        "/queues/default/pause".to_string(),
    ] {
        let r = send(&d.app, post(&p, Some(&v.cookie), &[("csrf", &v.csrf)])).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{p}");
    }
    let r = send(
        &d.app,
        post(
            "/jobs/bulk",
            Some(&v.cookie),
            &[("csrf", &v.csrf), ("action", "cancel")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        d.db.count("SELECT count(*) FROM jobs WHERE state = 'available'")
            .await,
        1
    );
    assert_eq!(d.db.count("SELECT count(*) FROM queues").await, 0);
    // Logging out is not an action on the system: a viewer may.
    let r = send(
        &d.app,
        post("/logout", Some(&v.cookie), &[("csrf", &v.csrf)]),
    )
    .await;
    assert_eq!(r.location.as_deref(), Some("/login"));
    let r = send(&d.app, get("/", Some(&v.cookie))).await;
    assert_eq!(r.location.as_deref(), Some("/login"), "the session ended");
}

#[tokio::test]
async fn a_wrong_password_gets_no_session_and_repeated_failures_are_rate_limited() {
    let d = setup().await;
    let try_login = |user: &str, pw: &str, ip: [u8; 4]| {
        from_ip(
            post("/login", None, &[("username", user), ("password", pw)]),
            ip,
        )
    };
    let r = send(&d.app, try_login("admin", "wrong", [10, 0, 0, 1])).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.set_cookie.is_none());
    assert!(r.body.contains("Wrong username or password"));
    let r = send(&d.app, try_login("nobody", ADMIN_PW, [10, 0, 0, 1])).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        d.db.count("SELECT count(*) FROM dashboard_sessions").await,
        0
    );
    for _ in 0..3 {
        send(&d.app, try_login("admin", "wrong", [10, 0, 0, 1])).await;
    }
    // Five failures in the minute: even the right password is refused now, from that address.
    let r = send(&d.app, try_login("admin", ADMIN_PW, [10, 0, 0, 1])).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.set_cookie.is_none());
    let r = send(&d.app, try_login("admin", ADMIN_PW, [10, 0, 0, 2])).await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "another address is not blocked"
    );
}

#[tokio::test]
async fn text_filters_are_literal_and_injection_proof() {
    let d = setup().await;
    let sale = add_job(&d, "noop", json!({"promo": "50%_off"})).await;
    let plain = add_job(&d, "noop", json!({"promo": "500 off"})).await;
    let quoted = add_job(&d, "noop", json!({"note": "it's O'Brien"})).await;
    let l = login(&d, "admin", ADMIN_PW).await;
    let search = |q: &str| {
        let qs = form_urlencoded::Serializer::new(String::new())
            .append_pair("q", q)
            .finish();
        get(&format!("/jobs?{qs}"), Some(&l.cookie))
    };
    let cases: Vec<(String, Vec<i64>)> = vec![
        ("%_".into(), vec![sale]),
        ("50%".into(), vec![sale]),
        ("_".into(), vec![sale]),
        ("%".into(), vec![sale]),
        ("off".into(), vec![plain, sale]),
        ("O'Brien".into(), vec![quoted]),
        ("'".into(), vec![quoted]),
        ("'; DROP TABLE jobs; --".into(), vec![]),
        ("\\".into(), vec![]),
        ("x".repeat(10 * 1024), vec![]),
    ];
    for (q, want) in cases {
        let r = send(&d.app, search(&q)).await;
        assert_eq!(r.status, StatusCode::OK, "q={q:.40}");
        assert_eq!(listed_ids(&r.body), want, "q={q:.40}");
    }
    // Quotes and fragments in the exact-match filters are just values.
    let r = send(
        &d.app,
        get(
            "/jobs?kind=noop%27%20OR%201%3D1%20--&queue=%27",
            Some(&l.cookie),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(listed_ids(&r.body).is_empty());
    assert_eq!(
        d.db.count("SELECT count(*) FROM jobs").await,
        3,
        "table intact"
    );
}

#[tokio::test]
async fn jobs_pages_with_a_keyset_cursor() {
    let d = setup().await;
    let jobs: Vec<NewJob> = (0..120)
        .map(|i| NewJob::new("noop", json!({"i": i})))
        .collect();
    let mut c = d.db.pool.acquire().await.unwrap();
    let ids: Vec<i64> = enqueue_many(&mut c, d.clock.now(), &jobs)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id.0)
        .collect();
    drop(c);
    let l = login(&d, "admin", ADMIN_PW).await;
    let first = send(&d.app, get("/jobs", Some(&l.cookie))).await;
    let page1 = listed_ids(&first.body);
    assert_eq!(page1.len(), 50);
    assert_eq!(page1[0], *ids.iter().max().unwrap());
    let before = page1.last().unwrap();
    let second = send(
        &d.app,
        get(&format!("/jobs?before={before}"), Some(&l.cookie)),
    )
    .await;
    let page2 = listed_ids(&second.body);
    assert_eq!(page2.len(), 50);
    assert!(page2.iter().all(|id| id < before));
}

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
    let form = [
        ("csrf", l.csrf.as_str()),
        ("action", "retry"),
        ("state", "discarded"),
        ("kind", "noop"),
        ("q", "spring"),
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

#[tokio::test]
async fn error_pages_show_no_sql_or_internals() {
    let d = setup().await;
    let l = login(&d, "admin", ADMIN_PW).await;
    let r = send(&d.app, get("/jobs/987654321", Some(&l.cookie))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(&d.app, get("/jobs?state=bogus", Some(&l.cookie))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Break the database under the overview: the page must stay generic.
    sqlx::query("DROP TABLE workers")
        .execute(&d.db.pool)
        .await
        .unwrap();
    let r = send(&d.app, get("/", Some(&l.cookie))).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    for leak in [
        "workers",
        "relation",
        "SELECT",
        "does not exist",
        "sqlx",
        "database",
    ] {
        assert!(
            !r.body.contains(leak),
            "error page shows {leak:?}: {}",
            r.body
        );
    }
    assert!(r.body.contains("Something went wrong"));
}

#[tokio::test]
async fn pages_render_for_a_logged_in_admin() {
    let d = setup().await;
    let id = add_job(&d, "noop", json!({"k": "<script>alert(1)</script>"})).await;
    let l = login(&d, "admin", ADMIN_PW).await;
    for p in [
        "/",
        "/jobs",
        "/schedules",
        "/workflows",
        "/trading",
        "/api/overview",
    ] {
        let r = send(&d.app, get(p, Some(&l.cookie))).await;
        assert_eq!(r.status, StatusCode::OK, "{p}");
    }
    let r = send(&d.app, get(&format!("/jobs/{id}"), Some(&l.cookie))).await;
    assert!(!r.body.contains("<script>alert"), "args are escaped");
    assert!(r.body.contains("&lt;script&gt;"));
    let r = send(&d.app, get("/api/overview", Some(&l.cookie))).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["queues"][0]["queue"], "default");
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

#[tokio::test]
async fn schedules_pause_resume_and_trigger_and_workflows_run_cancel_retry() {
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
