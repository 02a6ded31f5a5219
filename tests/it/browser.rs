//! A real browser against a real server: headless Chromium, driven over WebDriver
//! (chromedriver + fantoccini), logs in, finds a discarded job, clicks *retry* and sees the
//! copy complete on an in-process worker, pauses a schedule and triggers a workflow.
//! Screenshots of each page go to `docs/screenshots/` with `COINPILOT_SCREENSHOTS=1`. Skipped, with a notice, when
//! `/usr/bin/chromedriver` is absent (`apt-get install -y chromium chromium-driver`).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coinpilot::clock;
use coinpilot::queue::{enqueue, NewJob, Worker};
use coinpilot::web::accounts::{Account, Role};
use coinpilot::web::{self, AuthConfig, DashState, OpsState};
use coinpilot::workflow::WorkflowEngine;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::dashboard::actions::sample_defs;
use crate::support::{registry, test_config, RunningWorker, TestDb};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const PASSWORD: &str = "browser-test-password";

/// chromedriver, killed when the test ends however it ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ignored = self.0.kill();
        let _ignored = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_browser(profile: &std::path::Path) -> (Driver, Client) {
    let port = free_port();
    let driver = Driver(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect::<Vec<_>>();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "args": args, "binary": "/usr/bin/chromium" }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return (driver, c),
            Err(e) if Instant::now() > deadline => panic!("chromedriver: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Screenshots go to `docs/screenshots/` with `COINPILOT_SCREENSHOTS=1` (to refresh the
/// README's pictures), else to a temp directory, so a test run leaves the checkout clean.
async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    let dir = if std::env::var_os("COINPILOT_SCREENSHOTS").is_some() {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
    } else {
        std::env::temp_dir().join("coinpilot-screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Waits, without reloading, until the current page's source contains `needle`.
async fn wait_source(c: &Client, needle: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let src = c.source().await.unwrap();
        if src.contains(needle) {
            return src;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {needle:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reloads `url` until its source contains `needle`.
async fn reload_until(c: &Client, url: &str, needle: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        c.goto(url).await.unwrap();
        let src = c.source().await.unwrap();
        if src.contains(needle) {
            return src;
        }
        assert!(Instant::now() < deadline, "{url} never showed {needle:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_browser_logs_in_retries_a_discarded_job_pauses_a_schedule_and_runs_a_workflow() {
    if !std::path::Path::new(CHROMEDRIVER).exists() {
        println!("SKIPPED: {CHROMEDRIVER} not found (apt-get install -y chromium chromium-driver)");
        return;
    }
    let db = TestDb::new().await;
    let (wf, schedules) = sample_defs();
    let clock = clock::system();
    coinpilot::schedule::store::sync(&db.pool, &schedules, false, clock.now())
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let job = enqueue(
        &mut conn,
        clock.now(),
        &NewJob::new("noop", json!({"order": "b-1"})),
    )
    .await
    .unwrap()
    .id
    .0;
    sqlx::query("UPDATE jobs SET state = 'discarded', finished_at = $2, errors = $3 WHERE id = $1")
        .bind(job)
        .bind(clock.now())
        .bind(json!([{"attempt": 1, "at": clock.now(), "message": "exchange timed out", "chain": []}]))
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    crate::dashboard::trading::seed_demo(&db.pool, clock.now()).await;
    let reg = registry();
    let auth = AuthConfig {
        accounts: vec![Account::from_password("admin", Role::Admin, PASSWORD).unwrap()],
        ..AuthConfig::default()
    };
    let dash = DashState::new(db.pool.clone(), clock.clone(), reg.clone(), vec![wf], auth);
    let ops = OpsState {
        pool: db.pool.clone(),
        clock: clock.clone(),
        metrics: None,
        metrics_token: None,
    };
    let stop = CancellationToken::new();
    let (addr, server) = web::serve(
        web::app(dash, ops),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        stop.clone(),
    )
    .await
    .unwrap();
    let worker = Worker::new(
        db.pool.clone(),
        clock.clone(),
        reg.clone(),
        test_config("browser"),
    )
    .with_hook(Arc::new(WorkflowEngine::new(reg)));
    let worker = RunningWorker::start(worker);
    let profile = std::env::temp_dir().join(format!(
        "cp-chromium-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let (_driver, c) = start_browser(&profile).await;
    let base = format!("http://{addr}");

    c.goto(&format!("{base}/jobs")).await.unwrap();
    assert!(
        c.current_url().await.unwrap().path() == "/login",
        "redirected to login"
    );
    shot(&c, "login").await;
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    click(&c, "form[action='/login'] button").await;
    reload_until(&c, &format!("{base}/"), "Overview", 10).await;
    shot(&c, "overview").await;

    c.goto(&format!("{base}/jobs?state=discarded"))
        .await
        .unwrap();
    shot(&c, "jobs").await;
    click(&c, &format!("a[href='/jobs/{job}']")).await;
    shot(&c, "job-detail").await;
    click(&c, &format!("form[action='/jobs/{job}/retry'] button")).await;
    // The click returns before the POST is answered: wait for the redirect's notice.
    let src = wait_source(&c, "enqueued copy", 20).await;
    assert!(src.contains(&format!("Job {job} is final")), "{src}");
    let copy: i64 = sqlx::query_scalar("SELECT id FROM jobs WHERE copied_from = $1")
        .bind(job)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    reload_until(&c, &format!("{base}/jobs/{copy}"), "b s-completed", 20).await;
    shot(&c, "job-retried").await;

    c.goto(&format!("{base}/schedules")).await.unwrap();
    click(&c, "form[action='/schedules/hourly/pause'] button").await;
    let src = reload_until(
        &c,
        &format!("{base}/schedules"),
        "/schedules/hourly/resume",
        10,
    )
    .await;
    assert!(src.contains("paused"));
    shot(&c, "schedules").await;

    c.goto(&format!("{base}/workflows")).await.unwrap();
    click(&c, "form[action='/workflows/pair/run'] button").await;
    wait_source(&c, "started.", 20).await;
    let run_url = c.current_url().await.unwrap();
    assert!(run_url.path().starts_with("/workflows/runs/"), "{run_url}");
    let run_page = format!("{base}{}", run_url.path());
    reload_until(&c, &run_page, "b s-succeeded", 30).await;
    shot(&c, "workflow-run").await;
    c.goto(&format!("{base}/workflows")).await.unwrap();
    shot(&c, "workflows").await;
    c.goto(&format!("{base}/trading")).await.unwrap();
    let src = c.source().await.unwrap();
    assert!(
        src.contains("equity curve") && src.contains("offline rules"),
        "{src}"
    );
    shot(&c, "trading").await;

    c.close().await.unwrap();
    worker.shutdown().await;
    stop.cancel();
    let _ignored = server.await;
    let _ignored = std::fs::remove_dir_all(&profile);
}
