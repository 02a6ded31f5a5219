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
//! - Login form: its own CSRF token (double submit: a hidden field and a `SameSite=Strict`
//!   cookie on `/login`), so another site cannot log a browser in; an unknown username
//!   costs the same argon2 verify as a known one ([`login_target`]).
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

use super::accounts::{random_hex, Account, Role};
use super::dashboard::DashState;
use super::error::WebError;
use super::layout;

pub const COOKIE: &str = "coinpilot_session";
/// The login form's token, also sent as this cookie (scoped to `/login`); a login POST
/// whose `csrf` field does not match it is refused (403).
pub const LOGIN_CSRF_COOKIE: &str = "coinpilot_login_csrf";
/// How long a login form stays usable.
const LOGIN_FORM_SECS: i64 = 3600;
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
    /// The login page's form token (see [`LOGIN_CSRF_COOKIE`]).
    #[serde(default)]
    pub csrf: String,
}

pub async fn login_page(State(st): State<DashState>) -> Result<Response, WebError> {
    login_form(&st, StatusCode::OK, None)
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
    let expected = cookie_value(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    // The form must come from our own login page (login CSRF: another site must not log a
    // browser into an account of its choosing). Checked before the costly verify.
    if expected.is_empty() || !constant_time_eq(form.csrf.as_bytes(), expected.as_bytes()) {
        tracing::info!(client = %ip, "dashboard login refused: no valid login form token");
        return login_form(
            &st,
            StatusCode::FORBIDDEN,
            Some("The login form expired or came from elsewhere; please log in again."),
        );
    }
    let (target, known) = login_target(&st.auth.accounts, &form.username)
        .map_or((None, false), |(a, k)| (Some(a), k));
    // An unknown name still pays for one argon2 verify (against a real account's hash,
    // the result thrown away), so the answer's timing does not tell which names exist.
    let verified = match target {
        Some(a) => a.verify(form.password).await,
        None => false,
    };
    let Some(account) = target.filter(|_| known && verified) else {
        st.auth.limiter.record_failure(ip);
        // The username is not a secret; the password is never logged.
        tracing::warn!(username = %form.username, client = %ip, "dashboard login failed");
        return login_form(
            &st,
            StatusCode::UNAUTHORIZED,
            Some("Wrong username or password."),
        );
    };
    let token = create_session(&st.pool, &account.username, account.role, st.clock.now()).await?;
    tracing::info!(username = %account.username, client = %ip, "dashboard login");
    let cookie = set_cookie(&token, SESSION_HOURS * 3600, st.auth.secure_cookies);
    let resp = with_cookie(Redirect::to("/").into_response(), &cookie);
    // The login form's token has served; a new form gets a new one.
    let spent = login_csrf_cookie("", 0, st.auth.secure_cookies);
    Ok(with_cookie(resp, &spent))
}

/// The account a login attempt verifies against, and whether it is the one named: every
/// name is compared (in constant time each, no early exit); an unknown name gets the first
/// account as a decoy, whose hash has the very parameters a real verify pays for. `None`
/// only when no account is configured at all.
pub fn login_target<'a>(accounts: &'a [Account], username: &str) -> Option<(&'a Account, bool)> {
    let mut named = None;
    for a in accounts {
        if constant_time_eq(a.username.as_bytes(), username.as_bytes()) {
            named = Some(a);
        }
    }
    match named {
        Some(a) => Some((a, true)),
        None => accounts.first().map(|a| (a, false)),
    }
}

fn login_csrf_cookie(value: &str, max_age: i64, secure: bool) -> String {
    format!(
        "{LOGIN_CSRF_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/login; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The login page with a fresh form token, in the form and in its cookie (double submit:
/// a cross-site form has neither our cookie, which is SameSite=Strict, nor its value).
fn login_form(
    st: &DashState,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, WebError> {
    let token = random_hex(32).map_err(|e| WebError::Internal(e.to_string()))?;
    let page = layout::login_page(error, &token);
    let resp = (status, Html(page.into_string())).into_response();
    let cookie = login_csrf_cookie(&token, LOGIN_FORM_SECS, st.auth.secure_cookies);
    Ok(with_cookie(resp, &cookie))
}

fn with_cookie(mut resp: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
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
