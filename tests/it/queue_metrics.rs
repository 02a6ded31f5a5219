//! The queue gauges follow the table: a queue that drains is reported at depth 0 again,
//! not at its last non-zero value (which kept alerts firing and the HPA scaled up).

use coinpilot::queue::metrics::sample_depths;
use coinpilot::queue::{enqueue, NewJob};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::json;

use crate::support::*;

#[test]
fn a_drained_queue_is_reported_at_depth_zero() {
    // A recorder local to this thread (the global one is the process's to install), and a
    // runtime on the same thread so every metric call of the sampler sees it.
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let db = TestDb::new().await;
            let now = chrono::Utc::now();
            let mut c = db.pool.acquire().await.unwrap();
            for _ in 0..3 {
                let job = NewJob::new("noop", json!({})).with_queue("drain_probe");
                enqueue(&mut c, now, &job).await.unwrap();
            }
            sample_depths(&db.pool, now).await.unwrap();
            let text = handle.render();
            assert!(
                text.contains("coinpilot_queue_depth{queue=\"drain_probe\"} 3"),
                "{text}"
            );

            sqlx::query("DELETE FROM jobs")
                .execute(&mut *c)
                .await
                .unwrap();
            sample_depths(&db.pool, now).await.unwrap();
            let text = handle.render();
            assert!(
                text.contains("coinpilot_queue_depth{queue=\"drain_probe\"} 0"),
                "{text}"
            );
            assert!(
                text.contains("coinpilot_queue_oldest_available_seconds{queue=\"drain_probe\"} 0"),
                "{text}"
            );
        })
    });
}
