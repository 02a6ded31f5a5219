//! Dashboard access: login and logout, sessions, the CSRF check and the login rate limit.
//!
//! - Session: a random 256-bit token in an `HttpOnly; SameSite=Strict; Path=/` cookie
//!   (`Secure` when `http.secure_cookies` is set), stored as its sha256 in
//!   `dashboard_sessions`, valid for [`SESSION_HOURS`].
//! - CSRF: a random token per session, embedded in every form (`csrf` field) or sent as
//!   `X-CSRF-Token`; every POST behind the login is refused (403) without it.
//! - Roles: only `admin` may POST (except `/logout`); `viewer` gets 403.
//! - Rate limit: [`MAX_FAILURES`] failed logins per client address per minute, then 429
//!   (the peer's address, or behind a trusted proxy the last `X-Forwarded-For` entry).
//!
//! Without a session, HTML pages redirect to `/login` (303) and `/api/…` answers 401.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use super::accounts::{random_hex, Role};
use super::dashboard::DashState;
use super::error::WebError;
use super::layout;

pub const COOKIE: &str = "coinpilot_session";
pub const SESSION_HOURS: i64 = 12;
pub const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Bulk filters carry at most a few KB; anything bigger is refused before parsing.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The logged-in person, as handlers see it.
#[derive(Debug, Clone)]
pub struct Session {
    pub username: String,
    pub role: Role,
    pub csrf: String,
}

impl Session {
    /// Who did it, as recorded on jobs, runs and fires.
    pub fn actor(&self) -> String {
        format!("dashboard:{}", self.username)
    }

    pub fn can_act(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Failed logins per client address, in memory: a restart forgets them, which only gives
/// an attacker one more minute's worth of tries.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl LoginLimiter {
    fn recent(q: &mut VecDeque<Instant>, now: Instant) -> usize {
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW)
        {
            q.pop_front();
        }
        q.len()
    }

    pub fn blocked(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(&ip)
            .is_some_and(|q| Self::recent(q, now) >= MAX_FAILURES)
    }

    pub fn record_failure(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Bound the memory an address sweep can take: drop idle entries now and then.
        if map.len() > 10_000 {
            map.retain(|_, q| Self::recent(q, now) > 0);
        }
        map.entry(ip).or_default().push_back(now);
    }
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(value: &str, max_age: i64, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Starts a session; returns the cookie's token.
async fn create_session(
    pool: &PgPool,
    username: &str,
    role: Role,
    now: DateTime<Utc>,
) -> Result<String, WebError> {
    let token = random_hex(32).map_err(|e| WebError::Internal(e.to_string()))?;
    let csrf = random_hex(32).map_err(|e| WebError::Internal(e.to_string()))?;
    // Expired sessions go here rather than in a background service: logins are rare.
    sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO dashboard_sessions (token_hash, username, role, csrf_token, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(token_hash(&token))
    .bind(username)
    .bind(role.as_str())
    .bind(csrf)
    .bind(now)
    .bind(now + chrono::Duration::hours(SESSION_HOURS))
    .execute(pool)
    .await?;
    Ok(token)
}

async fn find_session(
    pool: &PgPool,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<Session>, WebError> {
    let row = sqlx::query(
        "SELECT username, role, csrf_token FROM dashboard_sessions
         WHERE token_hash = $1 AND expires_at > $2",
    )
    .bind(token_hash(token))
    .bind(now)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let role: String = r.try_get("role")?;
    let Some(role) = Role::parse(&role) else {
        return Ok(None);
    };
    Ok(Some(Session {
        username: r.try_get("username")?,
        role,
        csrf: r.try_get("csrf_token")?,
    }))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthenticated(path: &str) -> Response {
    if path.starts_with("/api/") {
        (StatusCode::UNAUTHORIZED, "login required\n").into_response()
    } else {
        Redirect::to("/login").into_response()
    }
}

/// Middleware on every dashboard route but `/login`: a valid session, and on POST a valid
/// CSRF token and (except `/logout`) the admin role.
pub async fn require_session(State(st): State<DashState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let session = match cookie_value(req.headers(), COOKIE) {
        Some(t) => find_session(&st.pool, &t, st.clock.now()).await,
        None => Ok(None),
    };
    let session = match session {
        Ok(Some(s)) => s,
        Ok(None) => return unauthenticated(&path),
        Err(e) => return e.into_response(),
    };
    // Every state-changing method, not only POST, needs the CSRF token and the role.
    let mut req = if !req.method().is_safe() {
        match check_post(req, &session, &path).await {
            Ok(r) => r,
            Err(e) => return e.into_response(),
        }
    } else {
        req
    };
    req.extensions_mut().insert(session);
    next.run(req).await
}

/// Reads the form body to find its `csrf` field, then hands the body on unchanged.
async fn check_post(req: Request, session: &Session, path: &str) -> Result<Request, WebError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| WebError::BadRequest("the form is too large".into()))?;
    let given = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            form_urlencoded::parse(&bytes)
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.into_owned())
        });
    // An empty stored token must never match an empty field: fail closed.
    let valid = !session.csrf.is_empty()
        && given.is_some_and(|g| constant_time_eq(g.as_bytes(), session.csrf.as_bytes()));
    if !valid {
        return Err(WebError::Forbidden("missing or wrong CSRF token"));
    }
    if path != "/logout" && !session.can_act() {
        return Err(WebError::Forbidden("this account is read-only"));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

pub async fn login_page() -> Html<String> {
    Html(layout::login_page(None).into_string())
}

/// The client's address: the peer's, or with `trust_forwarded_for` the last address in
/// `X-Forwarded-For` (the one the trusted proxy appended; earlier ones are the client's
/// own claims).
fn client_ip(peer: Option<&ConnectInfo<SocketAddr>>, headers: &HeaderMap, trust: bool) -> IpAddr {
    let forwarded = trust
        .then(|| {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|a| a.trim().parse::<IpAddr>().ok())
                .next_back()
        })
        .flatten();
    forwarded
        .or(peer.map(|c| c.0.ip()))
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

pub async fn login(
    State(st): State<DashState>,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    let peer = info.as_ref().map(|e| &e.0);
    let ip = client_ip(peer, &headers, st.auth.trust_forwarded_for);
    if st.auth.limiter.blocked(ip) {
        return Err(WebError::RateLimited);
    }
    let account = st
        .auth
        .accounts
        .iter()
        .find(|a| a.username == form.username);
    let ok = match account {
        Some(a) => a.verify(form.password).await,
        None => false,
    };
    let Some(account) = account.filter(|_| ok) else {
        st.auth.limiter.record_failure(ip);
        // The username is not a secret; the password is never logged.
        tracing::warn!(username = %form.username, client = %ip, "dashboard login failed");
        let page = layout::login_page(Some("Wrong username or password."));
        return Ok((StatusCode::UNAUTHORIZED, Html(page.into_string())).into_response());
    };
    let token = create_session(&st.pool, &account.username, account.role, st.clock.now()).await?;
    tracing::info!(username = %account.username, client = %ip, "dashboard login");
    let cookie = set_cookie(&token, SESSION_HOURS * 3600, st.auth.secure_cookies);
    Ok(with_cookie(Redirect::to("/").into_response(), &cookie))
}

fn with_cookie(mut resp: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

pub async fn logout(State(st): State<DashState>, headers: HeaderMap) -> Result<Response, WebError> {
    if let Some(t) = cookie_value(&headers, COOKIE) {
        sqlx::query("DELETE FROM dashboard_sessions WHERE token_hash = $1")
            .bind(token_hash(&t))
            .execute(&st.pool)
            .await?;
    }
    let cookie = set_cookie("", 0, st.auth.secure_cookies);
    Ok(with_cookie(Redirect::to("/login").into_response(), &cookie))
}
