//! The fault suite's process chaos: workers killed with SIGKILL and restarted while they
//! drain; schedules fired by five workers. Bounded in time; the long versions run with
//! `COINPILOT_CHAOS_KILLS` / `COINPILOT_SCHEDULE_TEST_SECS` raised, or repeated for a
//! number of minutes by `soak` (`.ci/soak --soak MINUTES`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use coinpilot::clock::{Clock, SystemClock};
use coinpilot::queue::{enqueue_many, NewJob};
use serde_json::json;

use crate::support::*;

const LEASE_SECS: i64 = 2;

pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Three workers drain 20,000 probe jobs while a driver SIGKILLs a random one every two
/// seconds and starts a replacement. Every job completes, no (job, attempt) runs twice,
/// and every job a killed worker held is rescued within lease + 10 s of the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_workers_lose_nothing_and_are_rescued_within_the_lease() {
    let _heavy = one_heavy_test_at_a_time();
    let n = env_or("COINPILOT_CHAOS_JOBS", 20_000);
    let kills = env_or("COINPILOT_CHAOS_KILLS", 6);
    sigkill_drain(n, kills).await;
}

/// One round of the SIGKILL chaos against a fresh database (the test above; `soak` repeats
/// it). Returns the rescues checked against the lease bound.
pub async fn sigkill_drain(n: usize, kills: usize) -> usize {
    let db = TestDb::new().await;
    let jobs: Vec<NewJob> = (0..n)
        .map(|_| NewJob::new("probe", json!({"ms": 2})))
        .collect();
    let mut c = db.pool.acquire().await.unwrap();
    for chunk in jobs.chunks(5_000) {
        enqueue_many(&mut c, SystemClock.now(), chunk)
            .await
            .unwrap();
    }
    drop(c);
    let args = [
        "--concurrency",
        "10",
        "--lease",
        "2",
        "--rescue-interval",
        "0.5",
    ];
    let mut workers: Vec<(String, Reaped)> = (0..3)
        .map(|i| {
            let name = format!("w{i}-0");
            (name.clone(), spawn_worker(&db, &name, &args))
        })
        .collect();
    let mut killed_at: HashMap<String, DateTime<Utc>> = HashMap::new();
    // The first kill lands once the drain is under way (a signal, not a guess at its
    // speed), so it always hits running jobs; the rest follow every two seconds.
    eventually(120, "the drain under way", || async {
        db.count("SELECT count(*) FROM jobs WHERE state = 'completed'")
            .await
            >= 500
    })
    .await;
    for round in 1..=kills {
        if round > 1 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let i = fastrand::usize(..workers.len());
        let (name, child) = &mut workers[i];
        signal(child, "-KILL");
        killed_at.insert(name.clone(), Utc::now());
        child.wait().unwrap();
        let next = format!("w{i}-{round}");
        workers[i] = (next.clone(), spawn_worker(&db, &next, &args));
    }
    let started = Instant::now();
    eventually(600, "every job finished", || async {
        db.count("SELECT count(*) FROM jobs WHERE state IN ('available', 'running')")
            .await
            == 0
    })
    .await;
    for (_, w) in &workers {
        signal(w, "-TERM");
    }
    for (_, w) in &mut workers {
        assert!(w.wait().unwrap().success(), "a surviving worker failed");
    }
    eprintln!(
        "chaos: {n} jobs, {kills} kills, drained {:.1} s after the last kill",
        started.elapsed().as_secs_f64()
    );
    let completed = db
        .count("SELECT count(*) FROM jobs WHERE state = 'completed'")
        .await;
    assert_eq!(completed, n as i64, "every job completed");
    let twice = db
        .count("SELECT count(*) FROM (SELECT 1 FROM probe_runs GROUP BY job_id, attempt HAVING count(*) > 1) d")
        .await;
    assert_eq!(twice, 0, "a (job, attempt) ran twice");
    check_rescue_bound(&db, &killed_at).await
}

/// Every rescue of an attempt a killed worker ran happened within lease + 10 s of the kill.
async fn check_rescue_bound(db: &TestDb, killed_at: &HashMap<String, DateTime<Utc>>) -> usize {
    let rescues: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT p.worker, (e->>'at')::timestamptz
         FROM jobs j, jsonb_array_elements(j.errors) e, probe_runs p
         WHERE e->>'kind' = 'rescued' AND p.job_id = j.id AND p.attempt = (e->>'attempt')::int",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let (mut checked, mut lease_lost) = (0, 0);
    for (worker, at) in &rescues {
        // A live worker that could not renew in time (a loaded machine, a 2 s lease) stops
        // its handler itself and its job is rescued: allowed, and not a kill to time.
        let Some(kill) = killed_at.get(worker) else {
            lease_lost += 1;
            continue;
        };
        let delay = *at - *kill;
        assert!(
            delay <= chrono::Duration::seconds(LEASE_SECS + 10),
            "rescued {delay} after the kill of {worker}"
        );
        checked += 1;
    }
    assert!(
        checked > 0,
        "no rescue happened: the kills hit no running job"
    );
    eprintln!("chaos: {checked} rescues after kills, all within lease + 10 s; {lease_lost} leases lost by live workers");
    checked
}

/// Five workers and a per-second schedule: exactly one job per fire time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_workers_fire_a_per_second_schedule_once_per_second() {
    let _heavy = one_heavy_test_at_a_time();
    let secs = env_or("COINPILOT_SCHEDULE_TEST_SECS", 30) as u64;
    five_workers_per_second(secs).await;
}

/// Five workers run a per-second schedule for `secs` (the test above; `soak` runs it for
/// the soak's length). Returns the number of fires.
pub async fn five_workers_per_second(secs: u64) -> usize {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!(
        "cp-chaos-defs-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("tick.toml"),
        "[[schedule]]\nname = \"tick\"\ncron = \"* * * * * *\"\njob = \"noop\"\n",
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let mut workers: Vec<_> = (0..5)
        .map(|i| {
            // Two slots each: five workers' pools stay well inside max_connections.
            spawn_worker(
                &db,
                &format!("s{i}"),
                &["--jobs-dir", d, "--concurrency", "2"],
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    for w in &workers {
        signal(w, "-TERM");
    }
    for w in &mut workers {
        assert!(w.wait().unwrap().success());
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let times: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT fire_time FROM schedule_fires WHERE schedule = 'tick' ORDER BY fire_time",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(times.len() as u64 >= secs - 5, "only {} fires", times.len());
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], chrono::Duration::seconds(1), "{w:?}");
    }
    let jobs = db
        .count("SELECT count(*) FROM jobs WHERE enqueued_by = 'schedule:tick'")
        .await;
    assert_eq!(jobs, times.len() as i64, "exactly one job per fire time");
    times.len()
}
