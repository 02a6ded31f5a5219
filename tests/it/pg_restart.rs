//! PostgreSQL restarted (`pg_ctl restart -m fast`) in the middle of a drain and of a
//! per-second schedule: workers reconnect with back-off, no job is lost, no (job, attempt)
//! runs twice, and no fire time is doubled. Uses a private cluster of its own, so the
//! shared server is never restarted under other tests.

use coinpilot::clock::{Clock, SystemClock};
use coinpilot::db::embedded::Cluster;
use coinpilot::queue::{enqueue_many, NewJob};
use sqlx::{ConnectOptions, PgPool};

use crate::support::*;

async fn count(pool: &PgPool, sql: &'static str) -> Option<i64> {
    sqlx::query_scalar(sql).fetch_one(pool).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_drain_and_mid_schedule_loses_and_doubles_nothing() {
    let base = std::env::temp_dir().join(format!("cp-restart-{}", std::process::id()));
    let cluster = Cluster::at(&base).unwrap();
    // Stopped however the test ends: a failing run must not leave its server behind.
    let _stop = StopOnDrop(cluster.clone());
    cluster.ensure_running().await.unwrap();
    cluster.ensure_database("restart").await.unwrap();
    let opts = cluster.connect_options("restart");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(opts.clone())
        .await
        .unwrap();
    coinpilot::db::migrate(&pool).await.unwrap();
    let n = 10_000;
    let jobs: Vec<NewJob> = (0..n)
        .map(|_| NewJob::new("probe", serde_json::json!({"ms": 2})))
        .collect();
    let mut c = pool.acquire().await.unwrap();
    enqueue_many(&mut c, SystemClock.now(), &jobs)
        .await
        .unwrap();
    drop(c);

    let defs = std::env::temp_dir().join(format!("cp-restart-defs-{}", std::process::id()));
    std::fs::create_dir_all(&defs).unwrap();
    std::fs::write(
        defs.join("t.toml"),
        "[[schedule]]\nname = \"tick\"\ncron = \"* * * * * *\"\njob = \"noop\"\n",
    )
    .unwrap();
    let no_workflows = defs.join("none");
    let url = opts.to_url_lossy().to_string();
    let spawn = |name: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_coinpilot"))
            .args([
                "worker",
                "--name",
                name,
                "--queues",
                "default",
                "--concurrency",
                "4",
                "--poll",
                "0.2",
            ])
            .args([
                "--jobs-dir",
                defs.to_str().unwrap(),
                "--workflows-dir",
                no_workflows.to_str().unwrap(),
            ])
            .env("DATABASE_URL", &url)
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .spawn()
            .map(Reaped)
            .unwrap()
    };
    let mut workers = vec![spawn("r0"), spawn("r1")];
    // Restart mid-drain: as soon as the workers have made progress, not after a guess of
    // how long the drain takes (a quiet machine could finish it first).
    eventually(120, "the drain under way", || async {
        count(&pool, "SELECT count(*) FROM jobs WHERE state = 'completed'").await >= Some(500)
    })
    .await;
    for w in &mut workers {
        assert!(w.try_wait().unwrap().is_none(), "a worker exited at start");
    }
    let done_before = count(&pool, "SELECT count(*) FROM jobs WHERE state = 'completed'")
        .await
        .unwrap_or(0);
    let c2 = cluster.clone();
    tokio::task::spawn_blocking(move || c2.restart())
        .await
        .unwrap()
        .unwrap();
    eventually(300, "the drain finished after the restart", || async {
        count(
            &pool,
            "SELECT count(*) FROM jobs WHERE state IN ('available', 'running') AND kind = 'probe'",
        )
        .await
            == Some(0)
    })
    .await;
    // The schedule fires after the restart too: wait for a fire recorded after it.
    let restarted_at = chrono::Utc::now();
    eventually(60, "a fire after the restart", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM schedule_fires WHERE created_at > $1")
            .bind(restarted_at)
            .fetch_one(&pool)
            .await
            .is_ok_and(|n| n >= 2)
    })
    .await;
    for w in &workers {
        signal(w, "-TERM");
    }
    for w in &mut workers {
        assert!(
            w.wait().unwrap().success(),
            "a worker did not survive the restart"
        );
    }
    assert!(
        done_before < n,
        "the restart came after the drain had finished: {done_before}"
    );
    let completed = count(
        &pool,
        "SELECT count(*) FROM jobs WHERE state = 'completed' AND kind = 'probe'",
    )
    .await;
    assert_eq!(completed, Some(n), "every job completed");
    let twice = count(&pool, "SELECT count(*) FROM (SELECT 1 FROM probe_runs GROUP BY job_id, attempt HAVING count(*) > 1) d").await;
    assert_eq!(twice, Some(0));
    let fires: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT fire_time FROM schedule_fires ORDER BY fire_time")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(fires.len() >= 3, "{} fires", fires.len());
    for w in fires.windows(2) {
        assert!(w[1] > w[0], "a fire time was doubled: {w:?}");
    }
    let jobs_of_fires = count(
        &pool,
        "SELECT count(*) FROM jobs WHERE enqueued_by = 'schedule:tick'",
    )
    .await;
    assert_eq!(jobs_of_fires, Some(fires.len() as i64), "one job per fire");
    pool.close().await;
    let _ignored = std::fs::remove_dir_all(&defs);
}

struct StopOnDrop(Cluster);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Err(e) = self.0.stop() {
            eprintln!("stopping the test cluster: {e}");
        }
        let _ignored = std::fs::remove_dir_all(&self.0.base);
    }
}
