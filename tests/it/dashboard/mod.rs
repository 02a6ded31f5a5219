//! The dashboard's handlers through `oneshot` on a real PostgreSQL: access control (login,
//! session, CSRF, roles, rate limit), search filters that must not be injectable and error
//! pages that show nothing internal here; single and bulk actions in `actions`.

pub(crate) mod actions;
mod trading;

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

async fn setup_full(workflows: Vec<WorkflowDef>, trust_forwarded_for: bool) -> Dash {
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
    pub(super) set_cookie: Option<String>,
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

pub(super) async fn login(d: &Dash, user: &str, pw: &str) -> Login {
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

#[tokio::test]
async fn an_expired_session_is_no_session() {
    let d = setup().await;
    let l = login(&d, "admin", ADMIN_PW).await;
    assert_eq!(
        send(&d.app, get("/", Some(&l.cookie))).await.status,
        StatusCode::OK
    );
    // Only the token's hash is stored, never the token itself.
    let token = l.cookie.split('=').nth(1).unwrap().to_string();
    assert_eq!(
        d.db.count(&format!(
            "SELECT count(*) FROM dashboard_sessions WHERE encode(token_hash, 'hex') = '{token}' OR csrf_token = '{token}'"
        ))
        .await,
        0
    );
    sqlx::query("UPDATE dashboard_sessions SET expires_at = $1")
        .bind(d.clock.now() - chrono::Duration::seconds(1))
        .execute(&d.db.pool)
        .await
        .unwrap();
    let r = send(&d.app, get("/", Some(&l.cookie))).await;
    assert_eq!(r.location.as_deref(), Some("/login"));
}

#[tokio::test]
async fn with_no_password_configured_one_is_generated_once_and_only_its_hash_stored() {
    let db = TestDb::new().await;
    let now = clock::system().now();
    let none = coinpilot::config::Secrets::from_env(&|_| None);
    let first = web::accounts::resolve(&db.pool, &none, true, now)
        .await
        .unwrap();
    let password = first.generated_password.expect("a generated password");
    assert!(password.len() >= 32);
    let stored: String = sqlx::query_scalar("SELECT password_hash FROM dashboard_users")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2") && !stored.contains(&password));
    let again = web::accounts::resolve(&db.pool, &none, true, now)
        .await
        .unwrap();
    assert!(again.generated_password.is_none(), "printed once only");
    assert!(again.accounts[0].verify(password.clone()).await);
    assert!(!again.accounts[0].verify("guess".into()).await);
    // A configured password wins over the stored one; the viewer comes from its own variable.
    let env = |k: &str| match k {
        "COINPILOT_DASHBOARD_PASSWORD" => Some("from-env".to_string()),
        "COINPILOT_DASHBOARD_VIEWER_PASSWORD_HASH" => Some(stored.clone()),
        _ => None,
    };
    let set = coinpilot::config::Secrets::from_env(&env);
    let r = web::accounts::resolve(&db.pool, &set, true, now)
        .await
        .unwrap();
    assert!(r.generated_password.is_none());
    assert_eq!(r.accounts.len(), 2);
    assert!(r.accounts[0].verify("from-env".into()).await);
    assert_eq!(r.accounts[1].role, Role::Viewer);
    assert!(r.accounts[1].verify(password).await);
    let bad = |k: &str| (k == "COINPILOT_DASHBOARD_PASSWORD_HASH").then(|| "plain".to_string());
    let bad = coinpilot::config::Secrets::from_env(&bad);
    assert!(web::accounts::resolve(&db.pool, &bad, true, now)
        .await
        .is_err());
}

#[tokio::test]
async fn x_forwarded_for_counts_only_behind_a_trusted_proxy() {
    let attempt = |xff: &str| {
        let mut req = from_ip(
            post(
                "/login",
                None,
                &[("username", "admin"), ("password", "wrong")],
            ),
            [10, 9, 9, 9],
        );
        req.headers_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
        req
    };
    // Not trusted: a client cannot dodge the limit by inventing addresses.
    let d = setup_full(Vec::new(), false).await;
    for i in 0..5 {
        send(&d.app, attempt(&format!("192.0.2.{i}"))).await;
    }
    let r = send(&d.app, attempt("192.0.2.99")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // Trusted: the proxy's last entry is the client; one client's failures do not lock out
    // everyone behind the same proxy, and a forged first entry changes nothing.
    let d = setup_full(Vec::new(), true).await;
    for i in 0..5 {
        send(&d.app, attempt(&format!("203.0.113.{i}, 198.51.100.7"))).await;
    }
    let r = send(&d.app, attempt("198.51.100.7")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = send(&d.app, attempt("198.51.100.8")).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "another client is not blocked"
    );
}
