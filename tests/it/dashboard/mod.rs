//! The dashboard's handlers through `oneshot` on a real PostgreSQL: access control (login,
//! session, CSRF, roles, rate limit), search filters that must not be injectable and error
//! pages that show nothing internal here; single and bulk actions in `actions`.

pub(crate) mod actions;
mod login;
mod overview;
mod search;
pub(crate) mod trading;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use coinpilot::clock::{self, SharedClock};
use coinpilot::queue::{enqueue, enqueue_many, NewJob};
use coinpilot::web::accounts::{Account, Role};
use coinpilot::web::{self, AuthConfig, DashState, OpsState};
use coinpilot::workflow::WorkflowDef;
use serde_json::json;
use tower::ServiceExt;

use crate::support::{registry, TestDb};

pub(super) const ADMIN_PW: &str = "correct horse battery staple";
pub(super) const VIEWER_PW: &str = "viewer-pass-123";

pub(super) struct Dash {
    pub(super) db: TestDb,
    pub(super) app: Router,
    pub(super) clock: SharedClock,
}

pub(super) async fn setup() -> Dash {
    setup_with(Vec::new()).await
}

pub(super) async fn setup_with(workflows: Vec<WorkflowDef>) -> Dash {
    setup_full(workflows, false).await
}

pub(super) async fn setup_full(workflows: Vec<WorkflowDef>, trust_forwarded_for: bool) -> Dash {
    let db = TestDb::new().await;
    let clock = clock::system();
    let auth = AuthConfig {
        accounts: vec![
            Account::from_password("admin", Role::Admin, ADMIN_PW).unwrap(),
            Account::from_password("viewer", Role::Viewer, VIEWER_PW).unwrap(),
        ],
        secure_cookies: false,
        trust_forwarded_for,
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

pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) location: Option<String>,
    /// Every `Set-Cookie`, in order.
    pub(super) cookies: Vec<String>,
    pub(super) body: String,
}

pub(super) fn from_ip(mut req: Request<Body>, ip: [u8; 4]) -> Request<Body> {
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
    req
}

pub(super) async fn send(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let h = |n: header::HeaderName| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (status, location) = (resp.status(), h(header::LOCATION));
    let cookies = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        location,
        cookies,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub(super) fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().uri(path);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

pub(super) fn post(path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Request<Body> {
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
pub(super) struct Login {
    pub(super) cookie: String,
    pub(super) csrf: String,
}

/// The 64-hex `csrf` field a page embeds.
pub(super) fn csrf_field(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..at + 64].to_string()
}

/// The `name=value` part of the `Set-Cookie` for `name`, if the reply sets it.
pub(super) fn cookie_named(r: &Reply, name: &str) -> Option<String> {
    r.cookies
        .iter()
        .map(|c| c.split(';').next().unwrap().to_string())
        .find(|kv| kv.starts_with(&format!("{name}=")))
}

/// A browser's login POST: the login page's form token in the form and its cookie.
pub(super) async fn login_post(d: &Dash, user: &str, pw: &str) -> Request<Body> {
    let form = send(&d.app, get("/login", None)).await;
    assert_eq!(form.status, StatusCode::OK);
    let cookie = cookie_named(&form, "coinpilot_login_csrf").expect("a login form cookie");
    let csrf = csrf_field(&form.body);
    post(
        "/login",
        Some(&cookie),
        &[("username", user), ("password", pw), ("csrf", &csrf)],
    )
}

pub(super) async fn login(d: &Dash, user: &str, pw: &str) -> Login {
    let r = send(&d.app, login_post(d, user, pw).await).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let set = r
        .cookies
        .iter()
        .find(|c| c.starts_with("coinpilot_session="))
        .expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let page = send(&d.app, get("/", Some(&cookie))).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = csrf_field(&page.body);
    Login { cookie, csrf }
}

pub(super) async fn add_job(d: &Dash, kind: &str, args: serde_json::Value) -> i64 {
    let mut c = d.db.pool.acquire().await.unwrap();
    enqueue(&mut c, d.clock.now(), &NewJob::new(kind, args))
        .await
        .unwrap()
        .id
        .0
}

pub(super) async fn discard_all(d: &Dash) {
    sqlx::query("UPDATE jobs SET state = 'discarded', finished_at = $1 WHERE state = 'available'")
        .bind(d.clock.now())
        .execute(&d.db.pool)
        .await
        .unwrap();
}

/// The job ids a jobs page links to.
pub(super) fn listed_ids(body: &str) -> Vec<i64> {
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
