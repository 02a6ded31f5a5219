//! `coinpilot bench queue` end to end on a small drain: it measures what ran, in a database
//! of its own, in both completion modes. No figure is time-asserted; the test checks that
//! each one was measured and that the flags reached the drain worker.

use serde_json::Value;

use crate::support::{coinpilot, TestDb};

fn bench(db: &TestDb, extra: &[&str]) -> Value {
    let out = coinpilot(db)
        .args([
            "bench",
            "queue",
            "--jobs",
            "300",
            "--concurrency",
            "4",
            "--prefetch",
            "50",
            "--single",
            "20",
            "--pickups",
            "5",
            "--json",
        ])
        .args(extra)
        .output()
        .expect("run coinpilot");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("one JSON line");
    serde_json::from_str(line).expect("bench prints JSON")
}

fn positive(r: &Value, field: &str) -> f64 {
    let v = r[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing: {r}"));
    assert!(v.is_finite() && v > 0.0, "{field} = {v}: {r}");
    v
}

#[tokio::test]
async fn a_small_drain_is_measured_keeping_or_deleting_completed_jobs() {
    let _one = crate::support::one_heavy_test_at_a_time();
    let db = TestDb::new().await;
    let kept = bench(&db, &[]);
    assert_eq!(kept["jobs"], 300);
    assert_eq!(kept["delete_completed"], false);
    for field in [
        "enqueue_bulk_jobs_per_s",
        "enqueue_single_jobs_per_s",
        "drain_jobs_per_s",
        "steady_drain_jobs_per_s",
        "worker_startup_ms",
        "worker_peak_rss_mib",
    ] {
        positive(&kept, field);
    }
    let p50 = positive(&kept, "pickup_latency_p50_ms");
    assert!(p50 <= positive(&kept, "pickup_latency_p99_ms"));

    let deleted = bench(&db, &["--delete-completed"]);
    assert_eq!(deleted["delete_completed"], true);
    positive(&deleted, "drain_jobs_per_s");
    positive(&deleted, "pickup_latency_p50_ms");
    positive(&deleted, "worker_peak_rss_mib");
    assert!(
        deleted["worker_startup_ms"].is_null() && deleted["steady_drain_jobs_per_s"].is_null(),
        "no rows say when the drain started: {deleted}"
    );
}
