//! Logging in: the login form's own CSRF token, wrong passwords and unknown names (same
//! argon2 cost, same answer), the rate limit per client address (and `X-Forwarded-For`
//! only behind a trusted proxy), session expiry, and the generated first password.

use axum::http::StatusCode;
use coinpilot::web::auth::login_target;

use super::*;

/// The login POST from `ip`, with a fresh login form's token.
async fn attempt(d: &Dash, user: &str, pw: &str, ip: [u8; 4]) -> Reply {
    send(&d.app, from_ip(login_post(d, user, pw).await, ip)).await
}

fn session_cookie(r: &Reply) -> Option<String> {
    cookie_named(r, "coinpilot_session")
}

#[tokio::test]
async fn a_login_post_without_the_login_pages_token_is_refused() {
    let d = setup().await;
    let form = send(&d.app, get("/login", None)).await;
    let cookie = cookie_named(&form, "coinpilot_login_csrf").expect("a form cookie");
    let set = form
        .cookies
        .iter()
        .find(|c| c.starts_with(&cookie))
        .unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/login"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    let token = csrf_field(&form.body);
    assert_eq!(cookie, format!("coinpilot_login_csrf={token}"));
    let creds = [("username", "admin"), ("password", ADMIN_PW)];
    let with = |cookie: Option<&str>, csrf: Option<&str>| {
        let mut f = creds.to_vec();
        if let Some(c) = csrf {
            f.push(("csrf", c));
        }
        post("/login", cookie, &f)
    };
    let other = "0".repeat(64);
    let forged = format!("coinpilot_login_csrf={other}");
    let refused = [
        ("no token, no cookie", with(None, None)),
        ("a token without its cookie", with(None, Some(&token))),
        ("the cookie without the token", with(Some(&cookie), None)),
        (
            "a token that is not the cookie's",
            with(Some(&cookie), Some(&other)),
        ),
        (
            "a forged pair's cookie only",
            with(Some(&forged), Some(&token)),
        ),
        ("empty both", with(Some("coinpilot_login_csrf="), Some(""))),
    ];
    for (what, req) in refused {
        let r = send(&d.app, req).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}");
        assert!(session_cookie(&r).is_none(), "{what}");
        assert!(r.body.contains("log in again"), "{what}: {}", r.body);
        assert!(r.body.contains("name=\"csrf\""), "{what}: a fresh form");
    }
    assert_eq!(
        d.db.count("SELECT count(*) FROM dashboard_sessions").await,
        0
    );
    // The right pair logs in, and the spent form token is cleared.
    let r = send(&d.app, with(Some(&cookie), Some(&token))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(session_cookie(&r).is_some());
    assert_eq!(
        cookie_named(&r, "coinpilot_login_csrf").as_deref(),
        Some("coinpilot_login_csrf=")
    );
    // Refusals for a missing token are not failed passwords: the address is not blocked.
    for _ in 0..6 {
        send(&d.app, from_ip(with(None, None), [10, 1, 1, 1])).await;
    }
    let r = attempt(&d, "admin", ADMIN_PW, [10, 1, 1, 1]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[test]
fn an_unknown_name_is_verified_against_a_real_hash_and_never_accepted() {
    let accounts = vec![
        Account::from_password("admin", Role::Admin, ADMIN_PW).unwrap(),
        Account::from_password("viewer", Role::Viewer, VIEWER_PW).unwrap(),
    ];
    let (a, known) = login_target(&accounts, "viewer").unwrap();
    assert!(known && a.username == "viewer");
    for unknown in ["nobody", "", "admin ", "Admin", "viewerx"] {
        let (decoy, known) = login_target(&accounts, unknown).unwrap();
        assert!(!known, "{unknown:?}");
        // The decoy is a configured account: its verify costs exactly a real one's.
        assert!(accounts.iter().any(|a| std::ptr::eq(a, decoy)));
    }
    assert!(login_target(&[], "admin").is_none());
}

#[tokio::test]
async fn an_unknown_name_with_a_real_password_answers_like_a_wrong_password() {
    let d = setup().await;
    let wrong = attempt(&d, "admin", "wrong", [10, 0, 0, 7]).await;
    let unknown = attempt(&d, "nobody", ADMIN_PW, [10, 0, 0, 8]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, wrong.status);
    let strip = |b: &str| b.replace(&csrf_field(b), "");
    assert_eq!(
        strip(&unknown.body),
        strip(&wrong.body),
        "same page bar the form token"
    );
    assert!(session_cookie(&unknown).is_none());
}

#[tokio::test]
async fn a_wrong_password_gets_no_session_and_repeated_failures_are_rate_limited() {
    let d = setup().await;
    let r = attempt(&d, "admin", "wrong", [10, 0, 0, 1]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(session_cookie(&r).is_none());
    assert!(r.body.contains("Wrong username or password"));
    let r = attempt(&d, "nobody", ADMIN_PW, [10, 0, 0, 1]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        d.db.count("SELECT count(*) FROM dashboard_sessions").await,
        0
    );
    for _ in 0..3 {
        attempt(&d, "admin", "wrong", [10, 0, 0, 1]).await;
    }
    // Five failures in the minute: even the right password is refused now, from that address.
    let r = attempt(&d, "admin", ADMIN_PW, [10, 0, 0, 1]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(session_cookie(&r).is_none());
    let r = attempt(&d, "admin", ADMIN_PW, [10, 0, 0, 2]).await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "another address is not blocked"
    );
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
    async fn attempt(d: &Dash, xff: &str) -> Reply {
        let mut req = from_ip(login_post(d, "admin", "wrong").await, [10, 9, 9, 9]);
        req.headers_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
        send(&d.app, req).await
    }
    // Not trusted: a client cannot dodge the limit by inventing addresses.
    let d = setup_full(Vec::new(), false).await;
    for i in 0..5 {
        attempt(&d, &format!("192.0.2.{i}")).await;
    }
    let r = attempt(&d, "192.0.2.99").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // Trusted: the proxy's last entry is the client; one client's failures do not lock out
    // everyone behind the same proxy, and a forged first entry changes nothing.
    let d = setup_full(Vec::new(), true).await;
    for i in 0..5 {
        attempt(&d, &format!("203.0.113.{i}, 198.51.100.7")).await;
    }
    let r = attempt(&d, "198.51.100.7").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = attempt(&d, "198.51.100.8").await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "another client is not blocked"
    );
}
