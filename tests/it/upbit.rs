//! The Upbit market source against a local HTTP server (never the real Upbit): paging
//! newest first, `Remaining-Req` throttling, 429 back-off, 418 stop, error payloads, a
//! malformed candle in a page; and the `backfill` job end to end on the test database.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::http::Method;
use chrono::{DateTime, Duration, Utc};
use coinpilot::domain::candle::{Candle, Interval, Market};
use coinpilot::market::replay::ReplaySource;
use coinpilot::market::{
    self, backfill_job, backfill_range, Backfill, MarketError, MarketSource, Replay, UpbitConfig,
    UpbitSource,
};
use coinpilot::queue::runtime::WorkerEvent;
use coinpilot::queue::{enqueue, HandlerRegistry, Worker, WorkerConfig};
use rust_decimal::Decimal;

use crate::http_mock::{Mock, Reply, Seen};
use crate::support::*;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-09-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn btc() -> Market {
    "KRW-BTC".parse().unwrap()
}

fn fast(base: &str) -> UpbitConfig {
    UpbitConfig {
        backoff: StdDuration::from_millis(10),
        ..UpbitConfig::with_base_url(base)
    }
}

/// One candle as Upbit serializes it.
fn upbit_json(open_time: DateTime<Utc>, price: i64, high: i64, low: i64) -> serde_json::Value {
    serde_json::json!({
        "market": "KRW-BTC",
        "candle_date_time_utc": open_time.format("%Y-%m-%dT%H:%M:%S").to_string(),
        "opening_price": price, "high_price": high, "low_price": low, "trade_price": price,
        "timestamp": 0, "candle_acc_trade_price": 1.5, "candle_acc_trade_volume": 0.12345678,
        "unit": 1
    })
}

/// Serves `minutes` (offsets from t0) as Upbit does: the `count` newest before `to`,
/// newest first.
fn page_of(minutes: &[i64], s: &Seen, bad: Option<i64>) -> String {
    let to = DateTime::parse_from_rfc3339(&s.param("to").unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let count: usize = s.param("count").unwrap().parse().unwrap();
    let mut page: Vec<serde_json::Value> = minutes
        .iter()
        .rev()
        .map(|m| (m, t0() + Duration::minutes(*m)))
        .filter(|(_, t)| *t < to)
        .take(count)
        .map(|(m, t)| {
            if Some(*m) == bad {
                upbit_json(t, 100, 90, 95) // high < low
            } else {
                upbit_json(t, 100 + m, 100 + m + 1, 100 + m - 1)
            }
        })
        .collect();
    page.truncate(count);
    serde_json::Value::Array(page).to_string()
}

#[tokio::test]
async fn upbit_pages_newest_first_back_to_from_and_returns_ascending() {
    // 450 minutes with a hole of 5 (no trades): 445 candles over three pages.
    let minutes: Vec<i64> = (0..450).filter(|m| !(100..105).contains(m)).collect();
    let served = minutes.clone();
    let mock = Mock::start(move |s, _| Reply::ok(page_of(&served, s, None))).await;
    let src = UpbitSource::new(fast(&mock.base)).unwrap();
    let now = t0() + Duration::minutes(451);
    let got = src
        .candles(
            &btc(),
            Interval::M1,
            t0(),
            t0() + Duration::minutes(450),
            now,
        )
        .await
        .unwrap();
    assert_eq!(got.len(), minutes.len());
    assert!(got.windows(2).all(|w| w[0].open_time < w[1].open_time));
    assert_eq!(got[0].open_time, t0());
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3, "200 + 200 + 45 candles");
    // Quotation calls are unsigned GETs: no key ever leaves with them.
    assert!(reqs.iter().all(|r| r.method == Method::GET
        && !r.headers.contains_key("authorization")
        && r.body.is_empty()));
    assert!(reqs.iter().all(|r| r.path == "/v1/candles/minutes/1"
        && r.param("market").as_deref() == Some("KRW-BTC")
        && r.param("count").as_deref() == Some("200")));
    // Each page asks for what lies before the oldest candle of the previous one.
    let to = |i: usize| reqs[i].param("to").unwrap();
    assert_eq!(to(0), "2025-09-01T07:30:00Z");
    assert_eq!(
        to(1),
        (got[got.len() - 200].open_time)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    );
}

/// The recorded pages (tests/data/upbit), 240 real candles, served by `to` as Upbit does.
fn recorded_candles() -> Vec<serde_json::Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/upbit");
    let mut all = Vec::new();
    for f in ["candles_1m_page2.json", "candles_1m_page1.json"] {
        let text = std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
        let page: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        all.extend(page); // newest first: page 2 holds the later minutes
    }
    all
}

#[tokio::test]
async fn recorded_upbit_pages_come_back_whole_and_exact() {
    let all = recorded_candles();
    let served = all.clone();
    let mock = Mock::start(move |s, _| {
        let to = s.param("to").unwrap();
        let to = to.trim_end_matches('Z');
        let page: Vec<_> = served
            .iter()
            .filter(|c| c["candle_date_time_utc"].as_str().unwrap() < to)
            .take(200)
            .cloned()
            .collect();
        Reply::ok(serde_json::Value::Array(page).to_string())
    })
    .await;
    let src = UpbitSource::new(fast(&mock.base)).unwrap();
    let from = DateTime::parse_from_rfc3339("2020-02-20T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let to = from + Duration::minutes(240);
    let got = src
        .candles(&btc(), Interval::M1, from, to, to)
        .await
        .unwrap();
    assert_eq!(got.len(), all.len());
    assert_eq!(mock.requests().len(), 2);
    // The oldest recorded candle, digit for digit as the exchange sent it.
    let oldest = all.last().unwrap();
    assert_eq!(got[0].open_time, from);
    assert_eq!(got[0].open.to_string(), oldest["opening_price"].to_string());
    assert_eq!(
        got[0].volume.to_string(),
        oldest["candle_acc_trade_volume"].to_string()
    );
    let (kept, rejected) = coinpilot::domain::candle::screen_page(got, Interval::M1);
    assert_eq!((kept.len(), rejected.len()), (240, 0));
}

#[tokio::test]
async fn upbit_excludes_the_forming_candle() {
    let served: Vec<i64> = (0..10).collect();
    let mock = Mock::start(move |s, _| Reply::ok(page_of(&served, s, None))).await;
    let src = UpbitSource::new(fast(&mock.base)).unwrap();
    let now = t0() + Duration::minutes(9) + Duration::seconds(30);
    let got = src
        .candles(
            &btc(),
            Interval::M1,
            t0(),
            t0() + Duration::minutes(10),
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        got.len(),
        9,
        "minute 9 closes at 00:10 and is still forming at 00:09:30"
    );
}

#[tokio::test]
async fn remaining_req_sec_zero_makes_the_next_request_wait() {
    let served: Vec<i64> = (0..300).collect();
    let mock = Mock::start(move |s, i| {
        let r = Reply::ok(page_of(&served, s, None));
        let sec = if i == 0 { 0 } else { 9 };
        r.header(
            "Remaining-Req",
            format!("group=candles; min=599; sec={sec}"),
        )
    })
    .await;
    let src = UpbitSource::new(fast(&mock.base)).unwrap();
    let now = t0() + Duration::minutes(300);
    let got = src
        .candles(&btc(), Interval::M1, t0(), now, now)
        .await
        .unwrap();
    assert_eq!(got.len(), 300);
    assert_eq!(
        src.http().throttle_waits(),
        1,
        "only the request after sec=0 waits"
    );
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    // Loosely: the second request came in a later second than the first.
    assert!(reqs[1].at - reqs[0].at >= StdDuration::from_millis(900));
}

#[tokio::test]
async fn a_429_with_remaining_req_backs_off_then_succeeds() {
    let served: Vec<i64> = (0..5).collect();
    let mock = Mock::start(move |s, i| {
        if i < 2 {
            Reply::status(
                429,
                r#"{"error":{"name":"too_many_requests","message":"Too many"}}"#,
            )
            .header("Remaining-Req", "group=candles; min=0; sec=0")
        } else {
            Reply::ok(page_of(&served, s, None))
        }
    })
    .await;
    let src = UpbitSource::new(fast(&mock.base)).unwrap();
    let now = t0() + Duration::minutes(5);
    let got = src
        .candles(&btc(), Interval::M1, t0(), now, now)
        .await
        .unwrap();
    assert_eq!(got.len(), 5, "nothing lost to the back-off");
    assert_eq!(mock.requests().len(), 3);
}

#[tokio::test]
async fn persistent_429_gives_rate_limited_with_the_servers_retry_after() {
    // The first 429 has no Retry-After (the configured back-off applies); the last one
    // asks for 7 s, which the job's next attempt must honour.
    let mock = Mock::start(|_, i| {
        let r = Reply::status(429, "{}");
        if i == 1 {
            r.header("Retry-After", "7")
        } else {
            r
        }
    })
    .await;
    let cfg = UpbitConfig {
        max_429_retries: 1,
        ..fast(&mock.base)
    };
    let src = UpbitSource::new(cfg).unwrap();
    let now = t0() + Duration::minutes(5);
    let e = src
        .candles(&btc(), Interval::M1, t0(), now, now)
        .await
        .unwrap_err();
    match e {
        MarketError::RateLimited { retry_after } => {
            assert_eq!(retry_after, StdDuration::from_secs(7))
        }
        other => panic!("expected RateLimited, got {other}"),
    }
    assert_eq!(mock.requests().len(), 2);
    let je = MarketError::RateLimited {
        retry_after: StdDuration::from_secs(7),
    }
    .into_job_error();
    assert_eq!(je.retry_after, Some(StdDuration::from_secs(7)));
    assert!(!je.permanent);
}

#[tokio::test]
async fn a_418_stops_at_once_with_banned() {
    let mock = Mock::start(|_, _| {
        Reply::status(
            418,
            r#"{"error":{"name":"banned","message":"IP blocked for 60s"}}"#,
        )
    })
    .await;
    let src = UpbitSource::new(fast(&mock.base)).unwrap();
    let now = t0() + Duration::minutes(5);
    let e = src
        .candles(&btc(), Interval::M1, t0(), now, now)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, MarketError::Banned { detail } if detail.contains("IP blocked")),
        "{e}"
    );
    assert_eq!(mock.requests().len(), 1, "no retry after a ban");
    assert!(e.into_job_error().permanent);
}

#[tokio::test]
async fn an_upbit_error_payload_is_a_clear_error() {
    let mock = Mock::start(|_, _| {
        Reply::status(404, r#"{"error":{"name":404,"message":"Code not found"}}"#)
    })
    .await;
    let src = UpbitSource::new(fast(&mock.base)).unwrap();
    let now = t0() + Duration::minutes(5);
    let e = src
        .candles(&btc(), Interval::M1, t0(), now, now)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "exchange answered HTTP 404: 404: Code not found"
    );
    assert!(
        e.into_job_error().permanent,
        "a 4xx will not change on retry"
    );
    // The same payload with a 200 is still an error, not an empty page.
    let mock =
        Mock::start(|_, _| Reply::ok(r#"{"error":{"name":"x","message":"bad market"}}"#)).await;
    let src = UpbitSource::new(fast(&mock.base)).unwrap();
    let e = src
        .candles(&btc(), Interval::M1, t0(), now, now)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("x: bad market"), "{e}");
}

#[tokio::test]
async fn a_page_with_a_high_below_low_candle_keeps_the_rest() {
    let served: Vec<i64> = (0..10).collect();
    let mock = Mock::start(move |s, _| Reply::ok(page_of(&served, s, Some(4)))).await;
    let src = UpbitSource::new(fast(&mock.base)).unwrap();
    let db = TestDb::new().await;
    let mut c = db.pool.acquire().await.unwrap();
    let now = t0() + Duration::minutes(10);
    let r = backfill_range(
        &mut c,
        &src,
        &btc(),
        Interval::M1,
        t0(),
        now,
        now,
        &mut |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!((r.fetched, r.stored), (10, 9));
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(r.rejected[0].open_time, t0() + Duration::minutes(4));
    assert_eq!(r.rejected[0].field, "high");
    assert_eq!(
        r.confirmed_empty, 0,
        "a rejected candle's minute is not empty"
    );
    assert_eq!(db.count("SELECT count(*) FROM candles").await, 9);
}

/// The replay sample with minutes 3 and 7 missing from the file.
fn replay_with_holes() -> Replay {
    let mut csv = String::from("timestamp,open,high,low,close,volume\n");
    for m in (0..10).filter(|m| *m != 3 && *m != 7) {
        let ms = (t0() + Duration::minutes(m)).timestamp_millis();
        csv.push_str(&format!("{ms},100,101,99,100,1\n"));
    }
    Replay {
        market: btc(),
        minutes: ReplaySource::from_text("holes.csv", &csv, Interval::M1).unwrap(),
    }
}

fn candle(minute: i64) -> Candle {
    let p = Decimal::from_str("100").unwrap();
    Candle {
        open_time: t0() + Duration::minutes(minute),
        open: p,
        high: p,
        low: p,
        close: p,
        volume: Decimal::ONE,
    }
}

#[tokio::test]
async fn backfill_job_fills_the_gap_records_empty_minutes_and_terminates() {
    let db = TestDb::new().await;
    let mut c = db.pool.acquire().await.unwrap();
    let end = t0() + Duration::minutes(10);
    // The collector stored minutes 0, 1 and 9; 2..9 is the gap.
    let stored = vec![candle(0), candle(1), candle(9)];
    market::store_page(&mut c, &btc(), Interval::M1, stored, t0())
        .await
        .unwrap();
    let gaps = market::find_gaps(&mut c, &btc(), Interval::M1, t0(), end)
        .await
        .unwrap();
    assert_eq!(gaps.len(), 1);
    let job = backfill_job(&btc(), Interval::M1, gaps[0]);
    let (clock, shared) = manual_clock();
    clock.set(end + Duration::minutes(1));
    let first = enqueue(&mut c, t0(), &job).await.unwrap();
    let again = enqueue(&mut c, t0(), &job).await.unwrap();
    assert!(
        again.duplicate && again.id == first.id,
        "one live backfill per gap"
    );

    let mut reg = HandlerRegistry::new();
    reg.register(Backfill {
        source: Arc::new(replay_with_holes()),
    });
    let mut cfg = WorkerConfig::new("w", &["market"]);
    cfg.poll_interval = StdDuration::from_millis(50);
    let mut w = RunningWorker::start(Worker::new(db.pool.clone(), shared, reg, cfg));
    w.wait_for(20, |e| *e == WorkerEvent::Completed(first.id))
        .await;
    w.shutdown().await;

    let out: serde_json::Value = sqlx::query_scalar("SELECT output FROM jobs WHERE id = $1")
        .bind(first.id.0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(out["confirmed_empty"], 2, "{out}");
    assert_eq!(out["stored"], 5, "{out}");
    assert_eq!(db.count("SELECT count(*) FROM candles").await, 8);
    assert_eq!(db.count("SELECT count(*) FROM empty_minutes").await, 2);
    let gaps = market::find_gaps(&mut c, &btc(), Interval::M1, t0(), end)
        .await
        .unwrap();
    assert!(gaps.is_empty(), "gap detection stops asking: {gaps:?}");
}

#[tokio::test]
async fn a_late_candle_for_an_empty_minute_removes_the_empty_record() {
    let db = TestDb::new().await;
    let mut c = db.pool.acquire().await.unwrap();
    let t = t0() + Duration::minutes(3);
    market::record_empty(&mut c, &btc(), Interval::M1, &[t], t0())
        .await
        .unwrap();
    assert_eq!(db.count("SELECT count(*) FROM empty_minutes").await, 1);
    market::store_page(&mut c, &btc(), Interval::M1, vec![candle(3)], t0())
        .await
        .unwrap();
    assert_eq!(db.count("SELECT count(*) FROM empty_minutes").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM candles").await, 1);
}

fn run_cli(db: &TestDb, envs: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = coinpilot(db);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.env_remove("COINPILOT_CONFIG")
        .arg("backfill")
        .args(args);
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_cli_over_the_shipped_replay_sample_is_idempotent() {
    let db = TestDb::new().await;
    let args = [
        "--market",
        "KRW-BTC",
        "--interval",
        "1m",
        "--from",
        "2025-09-20T00:00:00Z",
        "--to",
        "2025-09-20T06:00:00Z",
        "--json",
    ];
    let env = [("COINPILOT_MARKET_SOURCE", "replay")];
    let out = tokio::task::block_in_place(|| run_cli(&db, &env, &args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("\rbackfill KRW-BTC 1m:"),
        "a progress line: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["source"], "replay");
    assert_eq!(report["fetched"], 360, "{report}");
    assert_eq!(report["stored"], 360, "{report}");
    assert_eq!(db.count("SELECT count(*) FROM candles").await, 360);
    let again = tokio::task::block_in_place(|| run_cli(&db, &env, &args));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        (report["fetched"].as_u64(), report["stored"].as_u64()),
        (Some(360), Some(0))
    );
    assert_eq!(db.count("SELECT count(*) FROM candles").await, 360);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_cli_from_upbit_reports_rejected_candles_and_empty_minutes() {
    // Minutes 0..10 of 2025-09-01 without minute 6 (no trades); minute 2 is malformed.
    let served: Vec<i64> = (0..10).filter(|m| *m != 6).collect();
    let mock = Mock::start(move |s, _| Reply::ok(page_of(&served, s, Some(2)))).await;
    let db = TestDb::new().await;
    let env = [
        ("COINPILOT_MARKET_SOURCE", "upbit"),
        ("COINPILOT_UPBIT_BASE_URL", mock.base.as_str()),
    ];
    let args = [
        "--market",
        "KRW-BTC",
        "--from",
        "2025-09-01T00:00:00Z",
        "--to",
        "2025-09-01T00:10:00Z",
    ];
    let out = tokio::task::block_in_place(|| run_cli(&db, &env, &args));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("fetched 9, stored 8, rejected 1, confirmed empty 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rejected 2025-09-01 00:02:00 UTC (high): high 90 is below low 95"),
        "{stdout}"
    );
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn backfill_cli_refuses_a_bad_range_naming_the_flag() {
    let db = TestDb::new().await;
    for (from, expected) in [
        ("2025-09-02", "--from"),
        ("yesterday", "--from `yesterday`"),
    ] {
        let args = ["--market", "KRW-BTC", "--from", from, "--to", "2025-09-01"];
        let out = run_cli(&db, &[], &args);
        assert_eq!(out.status.code(), Some(2), "bad input exits 2");
        assert!(String::from_utf8_lossy(&out.stderr).contains(expected));
    }
    let args = [
        "--market",
        "KRW-BTC",
        "--from",
        "2025-09-01",
        "--to",
        "2025-09-02",
    ];
    let out = run_cli(
        &db,
        &[],
        &[&args[..], &["--candles", "/nonexistent.csv"]].concat(),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read /nonexistent.csv"), "{stderr}");
}
