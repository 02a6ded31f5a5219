//! The paper executor against the real PostgreSQL (SPEC B6): concurrent orders serialise on
//! the account and position locks, one client order id fills once, refusals change nothing.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use coinpilot::domain::candle::Market;
use coinpilot::domain::money::{Krw, Price, Qty};
use coinpilot::paper::job::ExecuteOrder;
use coinpilot::paper::{
    self, AccountId, BuyAmount, Executed, Execution, OrderRequest, PaperConfig, PaperError,
};
use coinpilot::queue::runtime::WorkerEvent;
use coinpilot::queue::{enqueue, HandlerRegistry, Worker, WorkerConfig};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::Connection;

use crate::support::*;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-09-09T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn btc() -> Market {
    "KRW-BTC".parse().unwrap()
}

/// A fresh database with one account holding `balance` KRW.
async fn setup(balance: &str) -> (TestDb, AccountId) {
    let db = TestDb::new().await;
    let mut c = db.pool.acquire().await.unwrap();
    let id = paper::open_account(&mut c, "test", Krw::new(d(balance)), t0())
        .await
        .unwrap();
    (db, id)
}

fn request(account: AccountId, coid: &str, price: &str) -> OrderRequest {
    OrderRequest {
        account,
        market: btc(),
        client_order_id: coid.to_string(),
        fill_price: Price::new(d(price)).unwrap(),
        decided_at: t0(),
        reason: Some("test".into()),
        fill_time: None,
    }
}

fn qty(s: &str) -> BuyAmount {
    BuyAmount::Quantity(Qty::new(d(s)).unwrap())
}

/// One buy in its own transaction, committed when it succeeds.
async fn buy_once(
    db: &TestDb,
    req: &OrderRequest,
    amount: BuyAmount,
    now: DateTime<Utc>,
) -> Result<Executed, PaperError> {
    let mut tx = db.pool.begin().await.unwrap();
    let r = paper::buy(&mut tx, req, amount, now, &PaperConfig::default()).await;
    if r.is_ok() {
        tx.commit().await.unwrap();
    }
    r
}

async fn sell_once(
    db: &TestDb,
    req: &OrderRequest,
    q: Option<&str>,
) -> Result<Executed, PaperError> {
    let mut tx = db.pool.begin().await.unwrap();
    let q = q.map(|s| Qty::new(d(s)).unwrap());
    let r = paper::sell(&mut tx, req, q, t0(), &PaperConfig::default()).await;
    if r.is_ok() {
        tx.commit().await.unwrap();
    }
    r
}

async fn balance(db: &TestDb, a: AccountId) -> Decimal {
    let mut c = db.pool.acquire().await.unwrap();
    paper::balance(&mut c, a).await.unwrap().value()
}

async fn position(db: &TestDb, a: AccountId) -> Option<paper::OpenPosition> {
    let mut c = db.pool.acquire().await.unwrap();
    paper::position(&mut c, a, &btc()).await.unwrap()
}

/// Buys from their own connections at once (not the pool: separate sessions racing for the
/// same rows), each in its own transaction, committed when it succeeds.
async fn concurrent_buys(
    db: &TestDb,
    orders: Vec<(OrderRequest, BuyAmount)>,
) -> Vec<Result<Executed, PaperError>> {
    let mut tasks = Vec::new();
    for (req, amount) in orders {
        let opts = db.opts.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = sqlx::PgConnection::connect_with(&opts).await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            let r = paper::buy(&mut tx, &req, amount, t0(), &PaperConfig::default()).await;
            if r.is_ok() {
                tx.commit().await.unwrap();
            }
            r
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn ten_concurrent_buys_sum_to_55() {
    let (db, acct) = setup("1000000000").await;
    let price = "10000000.5";
    let orders = (1..=10)
        .map(|n| {
            (
                request(acct, &format!("buy-{n}"), price),
                qty(&n.to_string()),
            )
        })
        .collect();
    let mut spent = Decimal::ZERO;
    for r in concurrent_buys(&db, orders).await {
        let fill = r.unwrap().fill().cloned().unwrap();
        spent += fill.quantity.value() * fill.price.value() + fill.fee.value();
    }
    let p = position(&db, acct).await.unwrap();
    assert_eq!(p.quantity.value(), d("55"));
    assert_eq!(
        p.avg_price.value(),
        d(price),
        "quantity-weighted fill price"
    );
    let gross = d("55") * d(price);
    let fees = gross * d("0.0005");
    assert_eq!(p.fees.value(), fees, "fees booked separately, exact");
    assert_eq!(spent, gross + fees);
    assert_eq!(balance(&db, acct).await, d("1000000000") - spent);
    assert_eq!(db.count("SELECT count(*) FROM fills").await, 10);
}

#[tokio::test]
async fn average_price_is_quantity_weighted_and_fees_are_apart() {
    let (db, acct) = setup("10000000").await;
    buy_once(&db, &request(acct, "a", "100000"), qty("1"), t0())
        .await
        .unwrap();
    buy_once(&db, &request(acct, "b", "130000"), qty("2"), t0())
        .await
        .unwrap();
    let p = position(&db, acct).await.unwrap();
    assert_eq!(p.avg_price.value(), d("120000"));
    assert_eq!(p.fees.value(), d("50") + d("130"));
    assert_eq!(p.cost.value(), d("360000") + d("180"));
    assert_eq!(p.entry_filled_at, t0());
}

#[tokio::test]
async fn a_sell_larger_than_the_position_is_refused_and_changes_nothing() {
    let (db, acct) = setup("1000000").await;
    buy_once(&db, &request(acct, "b1", "100000"), qty("2"), t0())
        .await
        .unwrap();
    let before = (balance(&db, acct).await, position(&db, acct).await);
    let err = sell_once(&db, &request(acct, "s1", "110000"), Some("2.00000001"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PaperError::SellExceedsPosition { .. }),
        "{err}"
    );
    assert_eq!(
        (balance(&db, acct).await, position(&db, acct).await),
        before
    );
    assert_eq!(
        db.count("SELECT count(*) FROM orders WHERE side = 'sell'")
            .await,
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM trades").await, 0);
}

#[tokio::test]
async fn the_same_client_order_id_twice_fills_once() {
    let (db, acct) = setup("1000000").await;
    let req = request(acct, "same", "100000");
    let first = buy_once(&db, &req, qty("1"), t0()).await.unwrap();
    let again = buy_once(&db, &req, qty("1"), t0()).await.unwrap();
    assert!(!first.replayed && again.replayed);
    assert_eq!(
        first.fill(),
        again.fill(),
        "the retry reports the earlier fill"
    );
    assert_eq!(position(&db, acct).await.unwrap().quantity.value(), d("1"));
    assert_eq!(db.count("SELECT count(*) FROM fills").await, 1);
}

#[tokio::test]
async fn the_same_client_order_id_concurrently_fills_once() {
    let (db, acct) = setup("1000000").await;
    let orders = (0..5)
        .map(|_| (request(acct, "twin", "100000"), qty("1")))
        .collect();
    let mut fresh = 0;
    for r in concurrent_buys(&db, orders).await {
        fresh += usize::from(!r.unwrap().replayed);
    }
    assert_eq!(
        fresh, 1,
        "exactly one execution filled, the others replayed it"
    );
    assert_eq!(db.count("SELECT count(*) FROM fills").await, 1);
    assert_eq!(position(&db, acct).await.unwrap().quantity.value(), d("1"));
    assert_eq!(balance(&db, acct).await, d("1000000") - d("100050"));
}

#[tokio::test]
async fn a_stale_buy_expires_and_is_never_filled() {
    let (db, acct) = setup("1000000").await;
    let req = request(acct, "late", "100000");
    let late = t0() + Duration::minutes(2) + Duration::seconds(1);
    let r = buy_once(&db, &req, qty("1"), late).await.unwrap();
    assert!(matches!(r.execution, Execution::Expired { .. }));
    // Its retry, now fresh enough by the clock of a buggy caller, still does not fill.
    let again = buy_once(&db, &req, qty("1"), t0()).await.unwrap();
    assert!(again.replayed && matches!(again.execution, Execution::Expired { .. }));
    assert_eq!(
        db.count("SELECT count(*) FROM orders WHERE state = 'expired'")
            .await,
        1
    );
    assert_eq!(db.count("SELECT count(*) FROM fills").await, 0);
    assert!(position(&db, acct).await.is_none());
    // Exactly two minutes is not stale.
    let edge = request(acct, "edge", "100000");
    let ok = buy_once(&db, &edge, qty("1"), t0() + Duration::minutes(2)).await;
    assert!(ok.unwrap().fill().is_some());
}

#[tokio::test]
async fn a_full_sell_deletes_the_position_and_records_the_trade() {
    let (db, acct) = setup("1000000").await;
    let buy = buy_once(&db, &request(acct, "b", "100000"), qty("1.5"), t0())
        .await
        .unwrap();
    let entry = buy.fill().unwrap().filled_at;
    let coid = paper::exit_client_order_id(acct, &btc(), entry);
    let sold = sell_once(&db, &request(acct, &coid, "110000"), None)
        .await
        .unwrap();
    assert!(position(&db, acct).await.is_none());
    let cost = d("150000") + d("75");
    let proceeds = d("165000") - d("82.5");
    let (pnl, reason): (Decimal, String) =
        sqlx::query_as("SELECT pnl, exit_reason FROM trades WHERE exit_client_order_id = $1")
            .bind(&coid)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(pnl, proceeds - cost);
    assert_eq!(reason, "test");
    assert_eq!(sold.fill().unwrap().fee.value(), d("82.5"));
    assert_eq!(balance(&db, acct).await, d("1000000") - cost + proceeds);
    // A second exit decision for the same position names the same order: no second sale.
    let again = sell_once(&db, &request(acct, &coid, "120000"), None)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(db.count("SELECT count(*) FROM trades").await, 1);
}

#[tokio::test]
async fn a_partial_sell_reduces_the_position_and_keeps_cost_exact() {
    let (db, acct) = setup("1000000").await;
    buy_once(&db, &request(acct, "b", "100000"), qty("3"), t0())
        .await
        .unwrap();
    sell_once(&db, &request(acct, "s1", "100000"), Some("1"))
        .await
        .unwrap();
    let p = position(&db, acct).await.unwrap();
    assert_eq!(p.quantity.value(), d("2"));
    assert_eq!(p.avg_price.value(), d("100000"));
    let trade_cost: Decimal = sqlx::query_scalar("SELECT cost FROM trades")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        trade_cost + p.cost.value(),
        d("300150"),
        "the parts sum to the whole"
    );
}

#[tokio::test]
async fn a_buy_over_the_balance_is_refused_and_the_balance_never_goes_negative() {
    let (db, acct) = setup("100000").await;
    // 1 × 100,000 + 50 fee is 50 KRW more than the balance.
    let err = buy_once(&db, &request(acct, "big", "100000"), qty("1"), t0())
        .await
        .unwrap_err();
    assert!(matches!(err, PaperError::Refused(_)), "{err}");
    assert_eq!(balance(&db, acct).await, d("100000"));
    assert_eq!(db.count("SELECT count(*) FROM orders").await, 0);
    let small = buy_once(&db, &request(acct, "small", "100"), qty("49"), t0()).await;
    assert!(
        matches!(small, Err(PaperError::Refused(_))),
        "4,900 KRW is under the minimum"
    );
    // The CHECK backs the code: a direct overdraft is rejected by the database.
    let overdraft = sqlx::query("UPDATE accounts SET balance = balance - 100001")
        .execute(&db.pool)
        .await;
    assert!(overdraft.is_err());
}

#[tokio::test]
async fn a_notional_buy_uses_the_domain_sizing() {
    let (db, acct) = setup("1000000").await;
    let amount = BuyAmount::Notional(Krw::new(d("200000")));
    let r = buy_once(&db, &request(acct, "n", "150075000"), amount, t0())
        .await
        .unwrap();
    let f = r.fill().unwrap();
    assert_eq!(f.quantity.value(), d("0.00133266"));
    assert_eq!(f.fee.value(), d("99.99947475"));
    assert_eq!(
        balance(&db, acct).await,
        d("1000000") - d("200098.94897475")
    );
}

#[tokio::test]
async fn reset_sets_the_balance_and_drops_positions() {
    let (db, acct) = setup("1000000").await;
    buy_once(&db, &request(acct, "b", "100000"), qty("1"), t0())
        .await
        .unwrap();
    let mut c = db.pool.acquire().await.unwrap();
    let same = paper::reset_account(&mut c, "test", Krw::new(d("500000")), t0())
        .await
        .unwrap();
    assert_eq!(same, acct);
    assert_eq!(balance(&db, acct).await, d("500000"));
    assert!(position(&db, acct).await.is_none());
}

/// Runs `execute_order` jobs with these args through a real in-process worker (queue
/// `orders`) and returns their outputs in enqueue order.
async fn run_order_jobs(db: &TestDb, all_args: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let (_clock, shared) = manual_clock();
    let mut reg = HandlerRegistry::new();
    reg.register(ExecuteOrder::default());
    let mut ids = Vec::new();
    for args in all_args {
        let job = reg.new_job("execute_order", args.clone()).unwrap();
        assert_eq!(job.queue, "orders");
        let mut c = db.pool.acquire().await.unwrap();
        ids.push(enqueue(&mut c, t0(), &job).await.unwrap().id);
    }
    let mut cfg = WorkerConfig::new("w", &["orders"]);
    cfg.poll_interval = std::time::Duration::from_millis(50);
    // One slot: the jobs run one after another, in order.
    cfg.concurrency = 1;
    let mut w = RunningWorker::start(Worker::new(db.pool.clone(), shared, reg, cfg));
    w.wait_for_all(
        20,
        ids.iter().map(|id| WorkerEvent::Completed(*id)).collect(),
    )
    .await;
    w.shutdown().await;
    sqlx::query_scalar("SELECT output FROM jobs WHERE id = ANY($1) ORDER BY id")
        .bind(ids.iter().map(|i| i.0).collect::<Vec<_>>())
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

/// The manual clock's start (`support::manual_clock`), which is also `t0()` here.
fn now_rfc3339() -> String {
    t0().to_rfc3339()
}

#[tokio::test]
async fn an_execute_order_job_run_twice_fills_once() {
    let db = TestDb::new().await;
    let args = json!({
        "market": "KRW-BTC", "side": "buy", "client_order_id": "job-buy-1",
        "price": "100000000", "notional": "200000", "decided_at": now_rfc3339(),
    });
    let outputs = run_order_jobs(&db, &[args.clone(), args]).await;
    assert_eq!(db.count("SELECT count(*) FROM fills").await, 1);
    assert_eq!(db.count("SELECT count(*) FROM positions").await, 1);
    let replayed: Vec<bool> = outputs.iter().map(|o| o["replayed"] == true).collect();
    assert_eq!(replayed, vec![false, true], "{outputs:?}");
    // The fill includes the 5 bps buy slippage the handler applies to the reference price.
    let price = |o: &serde_json::Value| d(o["price"].as_str().unwrap());
    assert!(
        outputs.iter().all(|o| price(o) == d("100050000")),
        "{outputs:?}"
    );
}

#[tokio::test]
async fn execute_order_jobs_expire_stale_buys_and_exit_once() {
    let db = TestDb::new().await;
    let stale = (t0() - Duration::minutes(3)).to_rfc3339();
    let buy = |id: &str, at: &str| {
        json!({"market": "KRW-BTC", "side": "buy", "client_order_id": id,
               "price": "100000000", "quantity": "0.001", "decided_at": at})
    };
    let bought = run_order_jobs(&db, &[buy("b1", &now_rfc3339()), buy("b0", &stale)]).await;
    assert_eq!(bought[1]["state"], "expired", "{bought:?}");
    let mut c = db.pool.acquire().await.unwrap();
    let acct = paper::open_account(&mut c, "paper", paper::default_balance(), t0())
        .await
        .unwrap();
    let coid = paper::exit_client_order_id(acct, &btc(), t0());
    // Two exit decisions for the same position: the same derived id, one sale.
    let sell = json!({"market": "KRW-BTC", "side": "sell", "client_order_id": coid,
                      "price": "110000000", "decided_at": now_rfc3339(),
                      "reason": "take_profit"});
    let sold = run_order_jobs(&db, &[sell.clone(), sell]).await;
    assert_eq!(sold[1]["replayed"], true, "{sold:?}");
    assert_eq!(db.count("SELECT count(*) FROM trades").await, 1);
    assert_eq!(db.count("SELECT count(*) FROM positions").await, 0);
}

#[tokio::test]
async fn concurrent_buys_over_the_balance_never_overdraw_it() {
    // Room for four buys of 1 unit at 100,000 (100,050 each with the fee), not five.
    let (db, acct) = setup("450000").await;
    let orders = (0..8)
        .map(|n| (request(acct, &format!("over-{n}"), "100000"), qty("1")))
        .collect();
    let results = concurrent_buys(&db, orders).await;
    let filled = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(filled, 4);
    assert_eq!(balance(&db, acct).await, d("450000") - d("4") * d("100050"));
    assert_eq!(position(&db, acct).await.unwrap().quantity.value(), d("4"));
}

#[tokio::test]
async fn paper_reset_cli_sets_the_balance() {
    let db = TestDb::new().await;
    let out = coinpilot(&db)
        .args(["paper", "reset", "--balance", "250000", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: Decimal = sqlx::query_scalar("SELECT balance FROM accounts WHERE name = 'paper'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(b, d("250000"));
    let bad = coinpilot(&db)
        .args(["paper", "reset", "--balance", "-1"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
