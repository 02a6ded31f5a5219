//! The `workers` table (`queue::presence`): which worker processes the dashboard lists.

use chrono::Duration as Cd;
use coinpilot::clock::Clock;
use coinpilot::queue::Worker;

use crate::support::*;

/// The `workers` row of name `same`: the start that wrote it (µs since the epoch).
async fn same_name_row(db: &TestDb) -> Option<i64> {
    sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
        "SELECT started_at FROM workers WHERE name = 'same'",
    )
    .fetch_optional(&db.pool)
    .await
    .unwrap()
    .map(|t| t.timestamp_micros())
}

#[tokio::test]
async fn workers_sharing_a_name_keep_it_listed_until_the_last_one_exits() {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let start = |shared| {
        let w = Worker::new(db.pool.clone(), shared, registry(), test_config("same"));
        RunningWorker::start(w)
    };
    let t0 = clock.now().timestamp_micros();
    let a = start(shared.clone());
    eventually(20, "the first start's row", || async {
        same_name_row(&db).await == Some(t0)
    })
    .await;
    clock.advance(Cd::seconds(1));
    let t1 = clock.now().timestamp_micros();
    let b = start(shared.clone());
    eventually(20, "the second start's row", || async {
        same_name_row(&db).await == Some(t1)
    })
    .await;
    // The second exits and removes the row it wrote; the first's heartbeat brings it back.
    b.shutdown().await;
    eventually(20, "the first worker listed again", || async {
        same_name_row(&db).await == Some(t0)
    })
    .await;
    clock.advance(Cd::seconds(1));
    let t2 = clock.now().timestamp_micros();
    let c = start(shared.clone());
    eventually(20, "the third start's row", || async {
        same_name_row(&db).await == Some(t2)
    })
    .await;
    // The first exits: the row is the third's now, so it stays.
    a.shutdown().await;
    assert_eq!(same_name_row(&db).await, Some(t2));
    c.shutdown().await;
    assert_eq!(same_name_row(&db).await, None);
}
