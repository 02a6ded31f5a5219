//! Secrets are never logged: every variable of `config::secrets::SECRET_VARS` is set to a
//! distinctive value, `RUST_LOG=debug`, and real `coinpilot` processes do what touches
//! them — a worker serving /metrics (asked with a wrong and the right token) runs jobs that
//! fail and panic, a dashboard takes failed and successful logins over HTTP, `config check`
//! prints the config. Then every byte those processes wrote to stdout and stderr is searched
//! for each secret value and for the passwords typed at the login form: none may appear.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use coinpilot::clock::{Clock, SystemClock};
use coinpilot::config::secrets::SECRET_VARS;
use coinpilot::queue::{enqueue_many, NewJob};
use coinpilot::web::accounts::hash_password;
use serde_json::json;
use sqlx::ConnectOptions;

use crate::support::*;

/// A distinctive value per secret (the run's tag keeps them unlike anything else).
struct Values {
    tag: String,
    admin_password: String,
    database_url: String,
    database_password: String,
}

/// The password part of `scheme://user:password@host/…`, if any.
fn url_password(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let creds = &authority[..authority.rfind('@')?];
    creds.split_once(':').map(|(_, p)| p.to_string())
}

impl Values {
    fn new(db: &TestDb) -> Values {
        let tag = format!("{:016x}", fastrand::u64(..));
        // A server given with a password keeps it (that is the secret then); the local one
        // trusts its clients, so a password is added, sent and ignored, for the processes
        // to leak.
        let url = db.url();
        let database_url = match url_password(&url) {
            Some(_) => url,
            None => db
                .opts
                .clone()
                .password(&format!("dbpw{tag}"))
                .to_url_lossy()
                .to_string(),
        };
        let database_password = url_password(&database_url).expect("a password in the URL");
        Values {
            admin_password: format!("admin-pw-{tag}"),
            database_url,
            database_password,
            tag,
        }
    }

    fn of(&self, var: &str) -> String {
        match var {
            "DATABASE_URL" => self.database_url.clone(),
            // The hash wins over the plain password: it is what the login checks.
            "COINPILOT_DASHBOARD_PASSWORD_HASH" => hash_password(&self.admin_password).unwrap(),
            "COINPILOT_DASHBOARD_VIEWER_PASSWORD_HASH" => {
                hash_password(&format!("viewer-pw-{}", self.tag)).unwrap()
            }
            "COINPILOT_DISCORD_WEBHOOK_URL" => {
                format!("http://127.0.0.1:9/api/webhooks/1/hook{}", self.tag)
            }
            // A usable URL (the notifier is built at start); its password is the secret.
            "COINPILOT_SMTP_URL" => format!("smtp://cp:smtppw{}@127.0.0.1:9", self.tag),
            other => format!("{}-{}", other.to_ascii_lowercase(), self.tag),
        }
    }

    /// What must never appear: each secret, or for the URL its password.
    fn forbidden(&self, env: &[(String, String)]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| match k.as_str() {
                "DATABASE_URL" => (k.clone(), self.database_password.clone()),
                "COINPILOT_SMTP_URL" => (k.clone(), format!("smtppw{}", self.tag)),
                _ => (k.clone(), v.clone()),
            })
            .collect();
        out.push(("typed admin password".into(), self.admin_password.clone()));
        out.push(("typed wrong password".into(), format!("wrong-{}", self.tag)));
        out
    }
}

struct Logs {
    dir: PathBuf,
    next: usize,
}

impl Logs {
    /// Runs `cmd` with its stdout and stderr in files of their own.
    fn spawn(&mut self, mut cmd: Command) -> Reaped {
        self.next += 1;
        let out = std::fs::File::create(self.dir.join(format!("{}.out", self.next))).unwrap();
        let err = std::fs::File::create(self.dir.join(format!("{}.err", self.next))).unwrap();
        Reaped(
            cmd.stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .spawn()
                .unwrap(),
        )
    }

    fn all(&self) -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(&self.dir).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            all.push_str(&String::from_utf8_lossy(&bytes));
        }
        all
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn process(db: &TestDb, env: &[(String, String)], dir: &Path) -> Command {
    let mut c = coinpilot(db);
    c.current_dir(dir)
        .env_remove("COINPILOT_CONFIG")
        .env("COINPILOT_NOTIFY_EMAIL_RECIPIENTS", "ops@example.com")
        .env("RUST_LOG", "debug");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    eventually(60, "the HTTP server up", || async {
        matches!(http.get(format!("{base}/healthz")).send().await, Ok(r) if r.status().is_success())
    })
    .await;
}

/// Posts the login form as a browser does: the login page's CSRF token in the form and its
/// twin cookie.
async fn post_login(http: &reqwest::Client, base: &str, pw: &str) -> reqwest::Response {
    let page = http.get(format!("{base}/login")).send().await.unwrap();
    let cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(coinpilot::web::auth::LOGIN_CSRF_COOKIE))
        .and_then(|c| c.split(';').next())
        .expect("the login page sets its CSRF cookie")
        .to_string();
    let html = page.text().await.unwrap();
    let token = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the login form carries a CSRF token")
        .to_string();
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("username", "admin"), ("password", pw), ("csrf", &token)])
        .finish();
    http.post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookie)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn exercise_worker(db: &TestDb, http: &reqwest::Client, base: &str, token: &str) {
    wait_healthy(http, base).await;
    let metrics = |t: String| http.get(format!("{base}/metrics")).bearer_auth(t).send();
    let wrong = metrics("not-the-token".into()).await.unwrap();
    assert_eq!(wrong.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert!(metrics(token.to_string())
        .await
        .unwrap()
        .status()
        .is_success());
    let jobs = [
        NewJob::new("flaky", json!({"fail_times": 5})).with_max_attempts(1),
        NewJob::new("probe", json!({"panic": true})).with_max_attempts(1),
        NewJob::new("noop", json!({})),
    ];
    let mut c = db.pool.acquire().await.unwrap();
    enqueue_many(&mut c, SystemClock.now(), &jobs)
        .await
        .unwrap();
    drop(c);
    eventually(60, "the failing jobs discarded", || async {
        db.count("SELECT count(*) FROM jobs WHERE state IN ('discarded', 'completed')")
            .await
            == 3
    })
    .await;
    assert_eq!(
        db.count("SELECT count(*) FROM jobs WHERE state = 'discarded'")
            .await,
        2
    );
}

/// Logs in (failing twice first) and returns the session cookie, a secret of its own.
async fn exercise_dashboard(http: &reqwest::Client, base: &str, v: &Values) -> String {
    wait_healthy(http, base).await;
    let failed = post_login(http, base, &format!("wrong-{}", v.tag)).await;
    assert_eq!(
        failed.status(),
        reqwest::StatusCode::UNAUTHORIZED,
        "a failed login"
    );
    // The plain variable is shadowed by the hash: typing it fails too, and is not logged.
    let plain = v.of("COINPILOT_DASHBOARD_PASSWORD");
    assert_eq!(
        post_login(http, base, &plain).await.status(),
        reqwest::StatusCode::UNAUTHORIZED
    );
    let ok = post_login(http, base, &v.admin_password).await;
    assert_eq!(ok.status(), reqwest::StatusCode::SEE_OTHER, "logged in");
    let cookie = ok.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let page = http
        .get(format!("{base}/jobs"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    cookie
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_log_at_debug_level() {
    let _heavy = one_heavy_test_at_a_time();
    let db = TestDb::new().await;
    let v = Values::new(&db);
    let env: Vec<(String, String)> = SECRET_VARS
        .iter()
        .map(|(k, _)| (k.to_string(), v.of(k)))
        .collect();
    let dir = std::env::temp_dir().join(format!("cp-secrets-{}-{}", std::process::id(), v.tag));
    std::fs::create_dir_all(&dir).unwrap();
    let mut logs = Logs {
        dir: dir.join("logs"),
        next: 0,
    };
    std::fs::create_dir_all(&logs.dir).unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let (wport, dport) = (free_port(), free_port());
    let mut worker = process(&db, &env, &dir);
    worker.args(["worker", "--queues", "default", "--poll", "0.2"]);
    worker.args(["--listen", &format!("127.0.0.1:{wport}")]);
    let mut worker = logs.spawn(worker);
    let mut dash = process(&db, &env, &dir);
    dash.args(["dashboard", "--listen", &format!("127.0.0.1:{dport}")]);
    let mut dash = logs.spawn(dash);
    let token = v.of("COINPILOT_METRICS_TOKEN");
    exercise_worker(&db, &http, &format!("http://127.0.0.1:{wport}"), &token).await;
    let session = exercise_dashboard(&http, &format!("http://127.0.0.1:{dport}"), &v).await;
    let session = session.split_once('=').unwrap().1.to_string();
    for p in [&worker, &dash] {
        signal(p, "-TERM");
    }
    assert!(worker.wait().unwrap().success(), "worker exit");
    assert!(dash.wait().unwrap().success(), "dashboard exit");
    for args in [&["config", "check"][..], &["config", "check", "--json"]] {
        let mut check = process(&db, &env, &dir);
        check.args(args);
        assert!(logs.spawn(check).wait().unwrap().success(), "{args:?}");
    }

    let all = logs.all();
    assert!(
        all.contains("dashboard login failed") && all.contains("DEBUG"),
        "the processes logged at debug level: {} bytes",
        all.len()
    );
    assert!(
        all.contains("****"),
        "config check's masked secrets are in the logs searched"
    );
    let mut forbidden = v.forbidden(&env);
    forbidden.push(("the session token".into(), session));
    for (what, secret) in forbidden {
        let leak = all.lines().find(|l| l.contains(&secret));
        assert!(leak.is_none(), "{what} leaked into the logs: {leak:?}");
    }
    eprintln!(
        "secrets_logs: {} secrets, 2 typed passwords and a session token, {} bytes of logs, none found",
        env.len(),
        all.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A database URL's password stays hidden in every form the URL may take — in the
/// authority, as a `password=` query parameter, in a URL without a scheme — on every path
/// that prints the URL: a worker that cannot connect or cannot parse it, `db info`, `config
/// check`. (Before the fix, the last two forms were printed as given.)
#[test]
fn a_database_password_is_hidden_in_every_form_of_the_url() {
    let tag = format!("{:016x}", fastrand::u64(..));
    let pw = format!("urlpw{tag}");
    let urls = [
        format!("postgres://cp:{pw}@127.0.0.1:9/cp"),
        format!("postgres://cp@127.0.0.1:9/cp?sslmode=disable&password={pw}"),
        format!("cp:{pw}@127.0.0.1:9/cp"),
        format!("postgres://cp:{pw}@127.0.0.1:notaport/cp"),
    ];
    let dir = std::env::temp_dir().join(format!("cp-secrets-url-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut runs = 0;
    for url in &urls {
        for args in [
            &["worker", "--queues", "default"][..],
            &["db", "info"],
            &["config", "check"],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_coinpilot"))
                .current_dir(&dir)
                .env_remove("COINPILOT_CONFIG")
                .env("DATABASE_URL", url)
                .env("RUST_LOG", "debug")
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if args[0] == "worker" {
                assert!(
                    !out.status.success(),
                    "a worker without a database must fail"
                );
            }
            let leak = all.lines().find(|l| l.contains(&pw));
            assert!(leak.is_none(), "`{args:?}` printed the password: {leak:?}");
            runs += 1;
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!(
        "secrets_logs: {} URL forms × 3 commands = {runs} runs, password never shown",
        urls.len()
    );
}
