//! The overview's counts on a large table (`web::counts`): live states exact on every
//! request, final states from a snapshot that a request refreshes in the background and
//! never waits for.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use coinpilot::web::counts::{FinalCounts, EXACT_BELOW_ROWS};
use serde_json::Value;

use super::*;

async fn large(refresh: Duration) -> Dash {
    let db = TestDb::new().await;
    let clock = clock::system();
    let auth = AuthConfig {
        accounts: vec![Account::from_password("admin", Role::Admin, ADMIN_PW).unwrap()],
        ..AuthConfig::default()
    };
    let mut dash = DashState::new(db.pool.clone(), clock.clone(), registry(), Vec::new(), auth);
    dash.final_counts = Arc::new(FinalCounts::with_refresh(refresh));
    let ops = OpsState {
        pool: db.pool.clone(),
        clock: clock.clone(),
        metrics: None,
        metrics_token: None,
    };
    // Past the exact-count threshold: finished jobs in their own queue.
    sqlx::query(
        "INSERT INTO jobs (kind, queue, run_at, state, created_at, finished_at)
         SELECT 'noop', 'bulk', $1, 'completed', $1, $1 FROM generate_series(1, $2)",
    )
    .bind(clock.now())
    .bind(EXACT_BELOW_ROWS + 500)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE jobs").execute(&db.pool).await.unwrap();
    Dash {
        app: web::app(dash, ops),
        db,
        clock,
    }
}

/// (available, discarded) of queue `default`, and whether the counts are a snapshot.
async fn default_counts(d: &Dash, l: &Login) -> (i64, i64, bool) {
    let r = send(&d.app, get("/api/overview", Some(&l.cookie))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    let q = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "default")
        .cloned()
        .unwrap_or(Value::Null);
    let n = |i: usize| q["counts"][i].as_i64().unwrap_or(0);
    (n(0), n(3), !v["final_counts_as_of"].is_null())
}

#[tokio::test]
async fn on_a_large_table_live_counts_are_exact_and_final_ones_a_snapshot() {
    let d = large(Duration::from_secs(3600)).await;
    let l = login(&d, "admin", ADMIN_PW).await;
    for i in 0..3 {
        add_job(&d, "noop", json!({ "i": i })).await;
    }
    let first = send(&d.app, get("/api/overview", Some(&l.cookie))).await;
    let v: Value = serde_json::from_str(&first.body).unwrap();
    let bulk = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "bulk")
        .unwrap();
    assert_eq!(
        bulk["counts"][2],
        EXACT_BELOW_ROWS + 500,
        "the first snapshot is exact"
    );
    assert_eq!(default_counts(&d, &l).await, (3, 0, true));
    sqlx::query("UPDATE jobs SET state = 'discarded', finished_at = now() WHERE id = (SELECT min(id) FROM jobs WHERE state = 'available')")
        .execute(&d.db.pool)
        .await
        .unwrap();
    add_job(&d, "noop", json!({})).await;
    // Available is exact at once; the discard waits for the snapshot's refresh.
    assert_eq!(default_counts(&d, &l).await, (3, 0, true));
    let page = send(&d.app, get("/", Some(&l.cookie))).await;
    assert!(page.body.contains("counts as of"), "the page says so");
}

#[tokio::test]
async fn a_stale_snapshot_is_refreshed_in_the_background() {
    let d = large(Duration::ZERO).await;
    let l = login(&d, "admin", ADMIN_PW).await;
    add_job(&d, "noop", json!({})).await;
    assert_eq!(default_counts(&d, &l).await, (1, 0, true));
    discard_all(&d).await;
    // Each request answers from the snapshot it has and starts a refresh; one of the
    // next ones sees the refreshed numbers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = default_counts(&d, &l).await;
        if got == (0, 1, true) {
            break;
        }
        assert_eq!(got.0, 0, "live counts are exact");
        assert!(Instant::now() < deadline, "never refreshed: {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_small_table_is_counted_exactly_on_every_request() {
    let d = setup().await;
    let l = login(&d, "admin", ADMIN_PW).await;
    add_job(&d, "noop", json!({})).await;
    assert_eq!(default_counts(&d, &l).await, (1, 0, false));
    discard_all(&d).await;
    assert_eq!(default_counts(&d, &l).await, (0, 1, false));
}
