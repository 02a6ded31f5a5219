//! Test bundle: a real PostgreSQL for every test. Uses `DATABASE_URL` when set, else the
//! server on 127.0.0.1:5432, else starts a private cluster from the installed binaries in
//! a temp directory. Migrates a template database once per run and gives each test its
//! own `CREATE DATABASE … TEMPLATE`.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use coinpilot::clock::{ManualClock, SharedClock};
use coinpilot::db;
use coinpilot::queue::builtin::register_builtins;
use coinpilot::queue::runtime::WorkerEvent;
use coinpilot::queue::{enqueue_many, HandlerRegistry, JobId, NewJob, Worker, WorkerConfig};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

struct Harness {
    server: PgConnectOptions,
    template: String,
}

static HARNESS: OnceLock<Result<Harness, String>> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

fn harness() -> &'static Harness {
    let h = HARNESS.get_or_init(|| {
        // Its own thread and runtime: each #[tokio::test] has a runtime of its own.
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(setup())
        })
        .join()
        .map_err(|_| "harness setup panicked".to_string())
        .and_then(|r| r)
    });
    match h {
        Ok(h) => h,
        Err(e) => panic!("test database unavailable: {e}"),
    }
}

async fn reachable(opts: &PgConnectOptions) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(3), opts.connect()).await,
        Ok(Ok(_))
    )
}

async fn setup() -> Result<Harness, String> {
    let server = match std::env::var("DATABASE_URL") {
        Ok(u) if !u.is_empty() => u.parse::<PgConnectOptions>().map_err(|e| e.to_string())?,
        _ => {
            let local: PgConnectOptions = "postgres://postgres@127.0.0.1:5432/postgres"
                .parse()
                .map_err(|e: sqlx::Error| e.to_string())?;
            if reachable(&local).await {
                local
            } else {
                let base = std::env::temp_dir().join("coinpilot-test-cluster");
                let cluster = db::embedded::Cluster::at(&base).map_err(|e| e.to_string())?;
                cluster.ensure_running().await.map_err(|e| e.to_string())?;
                cluster.connect_options("postgres")
            }
        }
    };
    let mut admin = server
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    drop_stale_databases(&mut admin).await?;
    let template = format!("coinpilot_tpl_{}", std::process::id());
    exec(&mut admin, &format!("CREATE DATABASE \"{template}\"")).await?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(server.clone().database(&template))
        .await
        .map_err(|e| e.to_string())?;
    db::migrate(&pool).await.map_err(|e| e.to_string())?;
    pool.close().await;
    Ok(Harness { server, template })
}

async fn exec(conn: &mut sqlx::PgConnection, sql: &str) -> Result<(), String> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| format!("{sql}: {e}"))
}

/// Drops databases of earlier runs whose process is gone.
async fn drop_stale_databases(admin: &mut sqlx::PgConnection) -> Result<(), String> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'coinpilot\\_t%'")
            .fetch_all(&mut *admin)
            .await
            .map_err(|e| e.to_string())?;
    for name in names {
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            exec(
                admin,
                &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            )
            .await?;
        }
    }
    Ok(())
}

/// A fresh, migrated database for one test.
pub struct TestDb {
    pub pool: PgPool,
    pub opts: PgConnectOptions,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let h = harness();
        let name = format!(
            "coinpilot_t_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = h
            .server
            .connect()
            .await
            .expect("connect to the test server");
        exec(
            &mut admin,
            &format!("CREATE DATABASE \"{name}\" TEMPLATE \"{}\"", h.template),
        )
        .await
        .expect("create test database");
        admin.close().await.expect("close");
        let opts = h.server.clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect_with(opts.clone())
            .await
            .expect("connect to test database");
        TestDb { pool, opts }
    }

    /// A URL for child processes.
    pub fn url(&self) -> String {
        self.opts.to_url_lossy().to_string()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&self.pool)
            .await
            .expect(sql)
    }
}

/// Enqueues `jobs` in one committed transaction; their ids in input order.
pub async fn enqueue_all(
    db: &TestDb,
    now: chrono::DateTime<chrono::Utc>,
    jobs: &[NewJob],
) -> Vec<JobId> {
    let mut tx = db.pool.begin().await.expect("begin");
    let ids = enqueue_many(&mut tx, now, jobs)
        .await
        .expect("enqueue_many");
    tx.commit().await.expect("commit");
    ids.into_iter().map(|e| e.id).collect()
}

pub fn registry() -> HandlerRegistry {
    let mut r = HandlerRegistry::new();
    register_builtins(&mut r);
    r
}

pub fn manual_clock() -> (ManualClock, SharedClock) {
    let c = ManualClock::new(
        chrono::DateTime::parse_from_rfc3339("2025-09-09T00:00:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc),
    );
    (c.clone(), Arc::new(c))
}

/// Fast settings for tests: short poll and lease, so waits are short.
pub fn test_config(name: &str) -> WorkerConfig {
    let mut c = WorkerConfig::new(name, &["default", "maintenance"]);
    c.poll_interval = Duration::from_millis(50);
    c.lease = Duration::from_secs(3);
    c.rescue_interval = Duration::from_millis(200);
    c.shutdown_grace = Duration::from_secs(5);
    c
}

/// An in-process worker running until its token fires.
pub struct RunningWorker {
    pub stop: CancellationToken,
    pub events: broadcast::Receiver<WorkerEvent>,
    pub handle: tokio::task::JoinHandle<()>,
}

impl RunningWorker {
    pub fn start(worker: Worker) -> RunningWorker {
        let stop = CancellationToken::new();
        let events = worker.events();
        let s = stop.clone();
        let handle = tokio::spawn(async move { worker.run(s).await.expect("worker run") });
        RunningWorker {
            stop,
            events,
            handle,
        }
    }

    /// Waits for an event matching `pred` (panics after `secs`).
    pub async fn wait_for(
        &mut self,
        secs: u64,
        mut pred: impl FnMut(&WorkerEvent) -> bool,
    ) -> WorkerEvent {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(ev)) if pred(&ev) => return ev,
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(e)) => panic!("worker events closed: {e}"),
                Err(_) => panic!("no matching worker event within {secs} s"),
            }
        }
    }

    /// Waits until every one of `expected` has happened, in any order.
    pub async fn wait_for_all(&mut self, secs: u64, mut expected: Vec<WorkerEvent>) {
        while !expected.is_empty() {
            let ev = self.wait_for(secs, |e| expected.contains(e)).await;
            expected.retain(|e| *e != ev);
        }
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        self.handle.await.expect("worker task");
    }
}

/// Polls `check` until true (panics after `secs`). For conditions with no event to wait on
/// (other processes' work).
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `coinpilot` process with the test database.
pub fn coinpilot(db: &TestDb) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coinpilot"));
    // No definition files unless a test gives its own (`--jobs-dir`, `--workflows-dir`):
    // the repository's schedules would otherwise fire into every test database.
    let none = std::env::temp_dir().join("coinpilot-test-no-definitions");
    c.env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .env("COINPILOT_JOBS_DIR", &none)
        .env("COINPILOT_WORKFLOWS_DIR", &none);
    c
}

/// A child process that is killed when dropped, so a failing test leaves no worker behind
/// (an orphan keeps its connections and competes with the tests that follow).
pub struct Reaped(pub Child);

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _already_gone = self.0.kill();
            let _reaped = self.0.wait();
        }
    }
}

pub fn spawn_worker(db: &TestDb, name: &str, extra: &[&str]) -> Reaped {
    Reaped(
        coinpilot(db)
            .args([
                "worker", "--name", name, "--queues", "default", "--poll", "0.2",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn worker process"),
    )
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} failed");
}

static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Tests that start several worker processes run one at a time: their connection pools
/// together pass the server's `max_connections` (100 by default) when two such tests
/// overlap. Held for the whole test, across its awaits, by design.
pub fn one_heavy_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}
