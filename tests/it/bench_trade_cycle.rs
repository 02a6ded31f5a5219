//! `coinpilot bench trade-cycle` on a real PostgreSQL (issue 8's benchmark), on a short
//! window of the shipped sample that trades: every tick fires one run per market, each run
//! stores its signal, the entry is reviewed by the rules reviewer and filled, and the
//! figures come from what actually ran. No figure is time-asserted.

use coinpilot::bench::trade_cycle::{measure, TradeCycleBenchArgs};
use coinpilot::cli::CliError;

use crate::support::TestDb;

fn args(minutes: usize, markets: usize) -> TradeCycleBenchArgs {
    TradeCycleBenchArgs {
        minutes,
        markets,
        concurrency: 4,
        candles: "data/upbit_KRW-BTC_1m_2025-09-20_2025-09-23.csv".into(),
        hourly: "data/upbit_KRW-BTC_1h_2025-09-08_2025-09-19.csv".into(),
        // Three minutes before the demo's first entry: the decision on the 12:07 candle.
        start: "2025-09-22T12:05:00Z".parse().unwrap(),
        poll: 1.0,
        strategy: "strategy.toml".into(),
    }
}

#[tokio::test]
async fn two_markets_run_the_whole_cycle_every_tick() {
    let _one = crate::support::one_heavy_test_at_a_time();
    let db = TestDb::new().await;
    let a = args(5, 2);
    let r = measure(&db.pool, &a).await.unwrap();
    assert_eq!(r.runs, 10);
    assert_eq!(r.discarded, 0, "{r:?}");
    assert_eq!(r.signals, 10, "one signal per market and tick: {r:?}");
    // Both markets see the same candles, so both enter, are reviewed and buy.
    assert_eq!(r.entry_signals, 2, "{r:?}");
    assert_eq!(r.ai_decisions, 2, "{r:?}");
    assert_eq!(r.fills, 2, "{r:?}");
    assert!(r.notifications >= 4, "a decision and a fill each: {r:?}");
    let per_market: Vec<(String, i64)> =
        sqlx::query_as("SELECT market, count(*) FROM signals GROUP BY market ORDER BY market")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        per_market,
        vec![("KRW-BTC".to_string(), 5), ("KRW-X001".to_string(), 5)]
    );
    assert!(r.tick_p50_ms > 0.0 && r.tick_p50_ms <= r.tick_p99_ms);
    assert!(r.tick_p99_ms <= r.tick_max_ms && r.runs_per_s > 0.0);
    let runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workflow_runs WHERE state = 'succeeded'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(runs, 10, "every run finished within its tick");
}

#[tokio::test]
async fn a_window_past_the_replay_is_refused_naming_the_flag() {
    let db = TestDb::new().await;
    let e = measure(&db.pool, &args(100_000, 1)).await.unwrap_err();
    assert!(
        matches!(&e, CliError::BadInput(m) if m.contains("--minutes")),
        "{e}"
    );
    let e = measure(&db.pool, &args(5, 0)).await.unwrap_err();
    assert!(
        matches!(&e, CliError::BadInput(m) if m.contains("--markets")),
        "{e}"
    );
}
