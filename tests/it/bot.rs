//! The bot end to end on a real PostgreSQL (issue 8): a day of real KRW-BTC minutes from
//! 2025-09-09, with the hourly history before it, replayed through the scheduled
//! `trade-cycle` workflow (the repository's own `jobs/market.toml` and
//! `workflows/trade-cycle.toml`) on a manual clock, one tick per minute. Signals → AI
//! decisions (offline rules) → paper fills → the daily report, and the trades must equal
//! `coinpilot backtest`'s on the same candles (the engine is the same code: DESIGN
//! invariant 9). Also: a failing `ai_decisions` insert fails the review job.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use coinpilot::backtest::{self, BacktestInput};
use coinpilot::bot::{self, alerts::AlertOnDiscard, Bot};
use coinpilot::clock::SharedClock;
use coinpilot::config::Config;
use coinpilot::domain::candle::{Candle, Interval, Market};
use coinpilot::domain::candle_csv::parse_candles;
use coinpilot::domain::config::StrategyConfig;
use coinpilot::domain::engine::ReviewMode;
use coinpilot::market::replay::ReplaySource;
use coinpilot::market::source::Replay;
use coinpilot::market::store_page;
use coinpilot::notify::Notify;
use coinpilot::queue::{HandlerRegistry, Worker};
use coinpilot::schedule::{self, Scheduler};
use coinpilot::workflow::WorkflowEngine;
use rust_decimal::Decimal;

use crate::support::{manual_clock, registry, test_config, RunningWorker, TestDb};

const MINUTES: &str = "../shared/data/upbit_KRW-BTC_1m_2025-09-01_2025-10-04.csv";
const HOURS: &str = "../shared/data/upbit_KRW-BTC_1h_2022-01-01_2025-09-29.csv";
const DAY: &str = "2025-09-09";

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The rows of a ccxt-style CSV whose timestamp lies in `[from, to)` (string compare on
/// `YYYY-MM-DD HH:MM:SS`), as CSV text.
fn slice(path: &str, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut lines = text.lines();
    let mut out = format!("{}\n", lines.next().unwrap());
    for l in lines.filter(|l| l.get(..19).is_some_and(|ts| ts >= from && ts < to)) {
        out.push_str(l);
        out.push('\n');
    }
    out
}

struct Bench {
    db: TestDb,
    worker: RunningWorker,
    scheduler: Scheduler,
    clock: coinpilot::clock::ManualClock,
    minutes: Vec<Candle>,
    hours: Vec<Candle>,
    reports: PathBuf,
}

fn bot_registry(source: Replay, reports: &Path) -> HandlerRegistry {
    let mut reg = registry();
    let bot = Bot {
        source: Arc::new(source),
        ..Bot::inert()
    };
    bot::register(&mut reg, Arc::new(bot));
    let mut cfg = Config::default();
    cfg.notify.reports_dir = Some(reports.to_path_buf());
    reg.register(Notify::from_config(&cfg, &Default::default()).unwrap());
    reg
}

async fn setup() -> Bench {
    let db = TestDb::new().await;
    let market = Market::krw_btc();
    let minutes_csv = slice(MINUTES, &format!("{DAY} 00:00:00"), "2025-09-10 00:00:00");
    let hours_csv = slice(HOURS, "2025-07-01 00:00:00", "2025-09-08 20:00:00");
    let minutes = parse_candles("minutes", &minutes_csv, Interval::M1).unwrap();
    let hours = parse_candles("hours", &hours_csv, Interval::H1).unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    store_page(
        &mut conn,
        &market,
        Interval::H1,
        hours.clone(),
        t("2025-09-08T20:00:00Z"),
    )
    .await
    .unwrap();
    drop(conn);
    let replay = Replay {
        market,
        minutes: ReplaySource::from_text("minutes", &minutes_csv, Interval::M1).unwrap(),
    };
    let reports = std::env::temp_dir().join(format!("coinpilot-bot-{}", std::process::id()));
    let reg = bot_registry(replay, &reports);
    let workflows = coinpilot::workflow::def::load_dir(Path::new("workflows"), &reg).unwrap();
    // Only the trade-cycle schedule: the repository's file, as shipped.
    let jobs = std::env::temp_dir().join(format!("coinpilot-bot-jobs-{}", std::process::id()));
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::copy("jobs/market.toml", jobs.join("market.toml")).unwrap();
    let defs = schedule::def::load_dir(&jobs, &reg, &workflows).unwrap();
    let (clock, shared): (_, SharedClock) = manual_clock();
    clock.set(t(&format!("{DAY}T00:00:00Z")));
    schedule::store::sync(&db.pool, &defs, false, shared.now())
        .await
        .unwrap();
    let scheduler = Scheduler::new(db.pool.clone(), shared.clone(), reg.clone(), workflows);
    let mut config = test_config("bot");
    config.queues = [
        "default",
        "market",
        "review",
        "orders",
        "notify",
        "maintenance",
    ]
    .iter()
    .map(|q| (q.to_string(), None))
    .collect();
    let engine = Arc::new(WorkflowEngine::new(reg.clone()));
    let hook = Arc::new(AlertOnDiscard { inner: engine });
    let worker =
        RunningWorker::start(Worker::new(db.pool.clone(), shared, reg, config).with_hook(hook));
    Bench {
        db,
        worker,
        scheduler,
        clock,
        minutes,
        hours,
        reports,
    }
}

impl Bench {
    /// Waits until no job is left to run (every run of this minute has finished).
    async fn settle(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let open = self
                .db
                .count("SELECT count(*) FROM jobs WHERE state NOT IN ('completed', 'discarded', 'cancelled')")
                .await;
            if open == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{open} jobs still open at {}",
                self.clock_now()
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Ticks the scheduler at 5 s past each minute in `minutes` (from the day's start) and
    /// lets each run finish.
    async fn replay(&self, minutes: std::ops::RangeInclusive<i64>) {
        let start = t(&format!("{DAY}T00:00:00Z"));
        for minute in minutes {
            self.clock
                .set(start + Duration::minutes(minute) + Duration::seconds(5));
            let fired = self.scheduler.tick().await.unwrap().fired;
            assert_eq!(fired, 1, "one trade-cycle run per minute (minute {minute})");
            self.settle().await;
        }
    }

    fn clock_now(&self) -> DateTime<Utc> {
        coinpilot::clock::Clock::now(&self.clock)
    }
}

type TradeRow = (
    DateTime<Utc>,
    Decimal,
    DateTime<Utc>,
    Decimal,
    Decimal,
    Decimal,
    String,
);

#[tokio::test]
async fn a_replayed_day_trades_exactly_as_the_backtest_and_reports() {
    let _one = crate::support::one_heavy_test_at_a_time();
    let b = setup().await;
    let start = t(&format!("{DAY}T00:00:00Z"));
    for minute in 1..=1440 {
        b.clock
            .set(start + Duration::minutes(minute) + Duration::seconds(5));
        let fired = b.scheduler.tick().await.unwrap().fired;
        assert_eq!(fired, 1, "one trade-cycle run per minute (minute {minute})");
        b.settle().await;
    }
    let discarded =
        b.db.count("SELECT count(*) FROM jobs WHERE state = 'discarded'")
            .await;
    assert_eq!(discarded, 0, "no job failed for good");
    assert_eq!(
        b.db.count("SELECT count(*) FROM signals").await,
        1440,
        "one signal per candle"
    );

    let expected = backtest::run(BacktestInput {
        minutes: b.minutes.clone(),
        hourly: b.hours.clone(),
        config: StrategyConfig::default(),
        balance: coinpilot::domain::money::Krw::new(Decimal::from(1_000_000)),
        review: ReviewMode::Rules,
    })
    .unwrap();
    assert!(!expected.trades.is_empty(), "the chosen day must trade");
    let live: Vec<TradeRow> = sqlx::query_as(
        "SELECT entry_time, entry_price, exit_time, exit_price, quantity, pnl, exit_reason \
         FROM trades ORDER BY exit_time",
    )
    .fetch_all(&b.db.pool)
    .await
    .unwrap();
    let want: Vec<TradeRow> = expected
        .trades
        .iter()
        .map(|tr| {
            let c = &tr.trade;
            (
                c.entry_time,
                c.entry_price.value(),
                c.exit_time,
                c.exit_price.value(),
                c.qty.value(),
                c.pnl.value(),
                tr.reason.as_str().to_string(),
            )
        })
        .collect();
    assert_eq!(live, want, "paper trades equal the backtest's");
    // Every entry signal the risk manager allowed was reviewed, by the labelled rules reviewer.
    let reviews =
        b.db.count(
            "SELECT count(*) FROM ai_decisions WHERE kind = 'entry_review' AND provider = 'rules'",
        )
        .await;
    let counts = expected.counts;
    assert_eq!(reviews, i64::from(counts.entries + counts.review_rejected));
    let fills = b.db.count("SELECT count(*) FROM fills").await;
    assert_eq!(
        fills,
        2 * want.len() as i64 + i64::from(expected.open_position.is_some())
    );
    // Each fill and decision was announced (files: no webhook configured).
    let notes =
        b.db.count("SELECT count(*) FROM jobs WHERE kind = 'notify' AND state = 'completed'")
            .await;
    assert!(
        notes >= fills + reviews,
        "{notes} notifications for {fills} fills and {reviews} reviews"
    );

    // The daily report of the Seoul day 2025-09-09 (UTC 09-08 15:00 → 09-09 15:00).
    let mut conn = b.db.pool.acquire().await.unwrap();
    let job = coinpilot::queue::NewJob::new(
        "daily_report",
        serde_json::json!({"day": DAY, "market": "KRW-BTC"}),
    )
    .with_queue("maintenance");
    coinpilot::queue::enqueue(&mut conn, b.clock_now(), &job)
        .await
        .unwrap();
    drop(conn);
    b.settle().await;
    let out: serde_json::Value =
        sqlx::query_scalar("SELECT output FROM jobs WHERE kind = 'daily_report'")
            .fetch_one(&b.db.pool)
            .await
            .unwrap();
    let seoul_end = t(&format!("{DAY}T15:00:00Z"));
    let in_day = want.iter().filter(|w| w.2 < seoul_end).count();
    assert_eq!(out["trades"], serde_json::json!(in_day), "{out}");
    let files: Vec<String> = std::fs::read_dir(&b.reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let png = files
        .iter()
        .find(|f| f.contains("daily_report") && f.ends_with(".png"));
    let png = png.unwrap_or_else(|| panic!("no report chart among {files:?}"));
    let bytes = std::fs::read(b.reports.join(png)).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let _ignored = std::fs::remove_dir_all(&b.reports);
    b.worker.shutdown().await;
}

/// SPEC B4: if the decision cannot be saved, the job fails. A trigger makes the insert into
/// `ai_decisions` fail: the review attempt fails with the database's error, nothing is
/// bought, and the job waits for its retry; once the table accepts rows again the retry
/// saves the decision and the buy fills.
#[tokio::test]
async fn a_decision_that_cannot_be_saved_fails_the_review_job() {
    let b = setup().await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'ai_decisions is read-only in this test'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON ai_decisions FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(&b.db.pool)
    .await
    .unwrap();
    let start = t(&format!("{DAY}T00:00:00Z"));
    let failed_review =
        "SELECT count(*) FROM jobs WHERE kind = 'ai_review' AND state = 'available' \
         AND errors::text LIKE '%read-only in this test%'";
    let mut minute = 0;
    while b.db.count(failed_review).await == 0 {
        minute += 1;
        assert!(
            minute <= 400,
            "no entry signal reached the review by minute {minute}"
        );
        b.clock
            .set(start + Duration::minutes(minute) + Duration::seconds(5));
        b.scheduler.tick().await.unwrap();
        // Settle, except for a review waiting for its retry.
        for _ in 0..5000 {
            let open = b.db.count("SELECT count(*) FROM jobs WHERE state IN ('available', 'running') AND run_at <= (SELECT max(run_at) FROM jobs WHERE kind = 'collect_candles')").await;
            if open == 0 || b.db.count(failed_review).await > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    assert_eq!(b.db.count("SELECT count(*) FROM ai_decisions").await, 0);
    assert_eq!(
        b.db.count("SELECT count(*) FROM fills").await,
        0,
        "nothing bought without a saved decision"
    );
    let run_state: String = sqlx::query_scalar("SELECT r.state FROM workflow_runs r JOIN jobs j ON j.workflow_run_id = r.id WHERE j.kind = 'ai_review'")
        .fetch_one(&b.db.pool)
        .await
        .unwrap();
    assert_eq!(run_state, "running", "the run waits for the review's retry");
    sqlx::raw_sql("DROP TRIGGER refuse ON ai_decisions")
        .execute(&b.db.pool)
        .await
        .unwrap();
    // The retry is due after its backoff: move the clock past it (still within the buy's TTL).
    b.clock.set(b.clock_now() + Duration::seconds(30));
    b.settle().await;
    assert_eq!(
        b.db.count("SELECT count(*) FROM ai_decisions WHERE kind = 'entry_review'")
            .await,
        1
    );
    assert_eq!(
        b.db.count("SELECT count(*) FROM fills").await,
        1,
        "the retried review led to the buy"
    );
    b.worker.shutdown().await;
}

/// The kill switch (SPEC B5): while halted, an entry signal is refused before any review,
/// with the reason stored; exits are never blocked (none needed here: nothing is held).
#[tokio::test]
async fn a_halted_bot_refuses_entries_and_says_why() {
    let b = setup().await;
    let mut conn = b.db.pool.acquire().await.unwrap();
    let now = b.clock_now();
    let account = coinpilot::paper::open_account(
        &mut conn,
        "paper",
        coinpilot::paper::default_balance(),
        now,
    )
    .await
    .unwrap();
    coinpilot::bot::risk_store::set_halted(&mut conn, account, true, Some("test"), now)
        .await
        .unwrap();
    drop(conn);
    // The first entry of the day is decided at 04:49's close (the backtest fills it at 04:50).
    b.replay(1..=300).await;
    assert_eq!(
        b.db.count("SELECT count(*) FROM fills").await,
        0,
        "nothing bought while halted"
    );
    assert_eq!(
        b.db.count("SELECT count(*) FROM ai_decisions WHERE kind = 'entry_review'")
            .await,
        0
    );
    let refused = b
        .db
        .count("SELECT count(*) FROM signals WHERE signal = 'none' AND reason LIKE '%trading is halted%'")
        .await;
    assert!(
        refused >= 1,
        "the refused entry signal is stored with its reason"
    );
    b.worker.shutdown().await;
}

fn minute(at: &str, close: i64) -> Candle {
    Candle {
        open_time: t(at),
        open: close.into(),
        high: close.into(),
        low: close.into(),
        close: close.into(),
        volume: 1.into(),
    }
}

/// SPEC B5/B8: at 00:00 Seoul the reset job creates the day's row with the balance plus the
/// open position valued at the previous day's last close — it waits (snoozes) for that
/// candle, which is collected seconds after midnight — and announces the day once.
#[tokio::test]
async fn the_daily_reset_values_the_position_at_the_last_close_and_announces_once() {
    let db = TestDb::new().await;
    let market = Market::krw_btc();
    let (clock, shared) = manual_clock();
    let midnight = t("2025-09-09T15:00:00Z"); // 00:00 on 2025-09-10 in Seoul
    clock.set(midnight);
    let mut conn = db.pool.acquire().await.unwrap();
    let account = coinpilot::paper::open_account(
        &mut conn,
        "paper",
        coinpilot::paper::default_balance(),
        midnight,
    )
    .await
    .unwrap();
    let req = coinpilot::paper::OrderRequest {
        account,
        market: market.clone(),
        client_order_id: "buy-held-over-midnight".into(),
        fill_price: coinpilot::domain::money::Price::new(Decimal::from(100_000_000)).unwrap(),
        decided_at: midnight,
        reason: None,
        fill_time: Some(t("2025-09-09T14:00:00Z")),
    };
    let qty = coinpilot::domain::money::Qty::new(Decimal::new(1, 3)).unwrap(); // 0.001 BTC
    coinpilot::paper::buy(
        &mut conn,
        &req,
        coinpilot::paper::BuyAmount::Quantity(qty),
        midnight,
        &Default::default(),
    )
    .await
    .unwrap();
    let balance = coinpilot::paper::balance(&mut conn, account).await.unwrap();
    store_page(
        &mut conn,
        &market,
        Interval::M1,
        vec![minute("2025-09-09T14:58:00Z", 90_000_000)],
        midnight,
    )
    .await
    .unwrap();
    let mut reg = registry();
    bot::register(&mut reg, Arc::new(Bot::inert()));
    let mut config = test_config("reset");
    config.queues = vec![("maintenance".into(), None)];
    let mut w = RunningWorker::start(Worker::new(db.pool.clone(), shared, reg, config));
    let job = coinpilot::queue::NewJob::new("reset_daily_risk", serde_json::json!({}))
        .with_queue("maintenance");
    let id = coinpilot::queue::enqueue(&mut conn, midnight, &job)
        .await
        .unwrap()
        .id;
    w.wait_for(30, |e| {
        *e == coinpilot::queue::runtime::WorkerEvent::Snoozed(id)
    })
    .await;
    assert_eq!(
        db.count("SELECT count(*) FROM risk_days").await,
        0,
        "no row before the last candle"
    );
    // The trade cycle stores 23:59's candle; the reset's next try sees it.
    store_page(
        &mut conn,
        &market,
        Interval::M1,
        vec![minute("2025-09-09T14:59:00Z", 80_000_000)],
        midnight,
    )
    .await
    .unwrap();
    clock.set(midnight + Duration::seconds(11));
    w.wait_for(30, |e| {
        *e == coinpilot::queue::runtime::WorkerEvent::Completed(id)
    })
    .await;
    let equity: Decimal =
        sqlx::query_scalar("SELECT day_start_equity FROM risk_days WHERE day = '2025-09-10'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        equity,
        balance.value() + Decimal::new(1, 3) * Decimal::from(80_000_000)
    );
    let announce =
        "SELECT count(*) FROM jobs WHERE kind = 'notify' AND args::text LIKE '%day_started%'";
    assert_eq!(db.count(announce).await, 1);
    // A second run (a manual trigger) creates and announces nothing more.
    let again = coinpilot::queue::enqueue(&mut conn, clock_now(&clock), &job)
        .await
        .unwrap()
        .id;
    w.wait_for(30, |e| {
        *e == coinpilot::queue::runtime::WorkerEvent::Completed(again)
    })
    .await;
    assert_eq!(db.count(announce).await, 1, "the day is announced once");
    assert_eq!(db.count("SELECT count(*) FROM risk_days").await, 1);
    w.shutdown().await;
}

fn clock_now(c: &coinpilot::clock::ManualClock) -> DateTime<Utc> {
    coinpilot::clock::Clock::now(c)
}
