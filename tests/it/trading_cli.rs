//! `coinpilot trading halt|resume|flatten|status` and `report daily` as an operator runs
//! them: a separate process against the test database.

use chrono::{DateTime, Utc};
use coinpilot::domain::candle::{Candle, Interval, Market};
use coinpilot::domain::money::{Price, Qty};
use coinpilot::market::store_page;
use coinpilot::paper::{self, BuyAmount, OrderRequest, PaperConfig};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::support::{coinpilot, TestDb};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn run(db: &TestDb, args: &[&str]) -> Value {
    let out = coinpilot(db)
        .arg("--json")
        .args(args)
        .output()
        .expect("run coinpilot");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn halt_and_resume_persist_the_kill_switch_and_announce_it() {
    let db = TestDb::new().await;
    let halted = run(&db, &["trading", "halt", "--reason", "maintenance"]);
    assert_eq!(
        (&halted["halted"], &halted["changed"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    assert_eq!(
        run(&db, &["trading", "halt"])["changed"],
        Value::Bool(false),
        "a second halt changes nothing"
    );
    let status = run(&db, &["trading", "status"]);
    assert_eq!(status["halted"], Value::Bool(true));
    assert_eq!(status["halted_reason"], Value::String("maintenance".into()));
    assert_eq!(
        db.count("SELECT count(*) FROM risk_state WHERE halted")
            .await,
        1
    );
    assert_eq!(
        run(&db, &["trading", "resume"])["changed"],
        Value::Bool(true)
    );
    assert_eq!(
        db.count("SELECT count(*) FROM risk_state WHERE halted")
            .await,
        0
    );
    let notes = db.count("SELECT count(*) FROM jobs WHERE kind = 'notify' AND (args::text LIKE '%halted%' OR args::text LIKE '%resumed%')").await;
    assert_eq!(notes, 2, "halt and resume are each announced once");
}

#[tokio::test]
async fn flatten_enqueues_one_sell_per_position_once() {
    let db = TestDb::new().await;
    let market = Market::krw_btc();
    let mut tx = db.pool.begin().await.unwrap();
    let now = t("2025-09-09T01:00:00Z");
    let account = paper::open_account(&mut tx, "paper", paper::default_balance(), now)
        .await
        .unwrap();
    let req = OrderRequest {
        account,
        market: market.clone(),
        client_order_id: "buy-1".into(),
        fill_price: Price::new(Decimal::from(150_000_000)).unwrap(),
        decided_at: now,
        reason: None,
        fill_time: None,
    };
    let qty = BuyAmount::Quantity(Qty::new(Decimal::new(1, 3)).unwrap());
    paper::buy(&mut tx, &req, qty, now, &PaperConfig::default())
        .await
        .unwrap();
    let candle = Candle {
        open_time: t("2025-09-09T01:00:00Z"),
        open: 150_000_000.into(),
        high: 150_000_000.into(),
        low: 150_000_000.into(),
        close: 150_000_000.into(),
        volume: 1.into(),
    };
    store_page(&mut tx, &market, Interval::M1, vec![candle], now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let first = run(&db, &["trading", "flatten"]);
    assert_eq!(first["positions"], Value::from(1));
    let again = run(&db, &["trading", "flatten"]);
    assert_eq!(
        first["jobs"], again["jobs"],
        "a second flatten finds the same sell job"
    );
    let args: Value = sqlx::query_scalar("SELECT args FROM jobs WHERE kind = 'execute_order'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        (&args["side"], &args["reason"]),
        (&Value::from("sell"), &Value::from("flatten"))
    );
    // Decided at the market's clock: the newest candle's close, not the host's time.
    assert_eq!(args["decided_at"], Value::from("2025-09-09T01:01:00Z"));
}

#[tokio::test]
async fn report_daily_renders_markdown_and_a_png_for_any_day() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("coinpilot-report-cli-{}", std::process::id()));
    let out = coinpilot(&db)
        .args(["report", "daily", "--date", "2025-09-09", "--output"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2025-09-09"), "{stdout}");
    let png = std::fs::read(dir.join("daily-report-KRW-BTC-2025-09-09.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let _ignored = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn live_trading_refuses_to_start_on_replayed_prices_or_without_keys() {
    let db = TestDb::new().await;
    let replay = coinpilot(&db).args(["worker", "--live"]).output().unwrap();
    let err = String::from_utf8_lossy(&replay.stderr);
    assert!(
        !replay.status.success() && err.contains("--live needs market.source"),
        "{err}"
    );
    let upbit = coinpilot(&db)
        .env("COINPILOT_MARKET_SOURCE", "upbit")
        .env_remove("COINPILOT_UPBIT_ACCESS_KEY")
        .env_remove("COINPILOT_UPBIT_SECRET_KEY")
        .args(["worker", "--live"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&upbit.stderr);
    assert!(!upbit.status.success() && err.contains("--live"), "{err}");
}
