//! The Upbit live executor against a local server replaying the recorded Exchange API
//! answers (`tests/data/upbit/`): every request is signed (the JWT verifies with the
//! secret, `query_hash` covers exactly what was sent), the order carries our client order
//! id as `identifier`, partial fills are recorded, and a retried execution never POSTs twice.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::http::Method;
use chrono::{DateTime, Duration, Utc};
use coinpilot::domain::candle::Market;
use coinpilot::domain::money::{Krw, Price, Qty};
use coinpilot::live::{self, execute_live, reconcile, LiveAmount, LiveError, UpbitClient};
use coinpilot::market::UpbitConfig;
use coinpilot::paper::{self, AccountId, BuyAmount, OrderRequest, PaperConfig, Side};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::http_mock::{Mock, Reply, Seen};
use crate::support::*;

const SECRET: &str = "test-secret-key";
const ACCESS: &str = "test-access-key";

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-09-01T00:01:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn recorded(name: &str) -> Value {
    let path = format!("{}/tests/data/upbit/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The recorded `Order_info` answer with its trade list replaced by `trades`
/// (price, volume) and the totals made to agree.
fn order_info(state: &str, side: &str, trades: &[(&str, &str)]) -> String {
    let mut o = recorded("order_info_done.json");
    let template = o["trades"][0].clone();
    let mut volume = Decimal::ZERO;
    let list: Vec<Value> = trades
        .iter()
        .enumerate()
        .map(|(i, (p, v))| {
            let mut t = template.clone();
            volume += d(v);
            t["uuid"] = format!("trade-{i}").into();
            t["price"] = (*p).into();
            t["volume"] = (*v).into();
            t["funds"] = (d(p) * d(v)).to_string().into();
            t["side"] = side.into();
            t
        })
        .collect();
    o["state"] = state.into();
    o["side"] = side.into();
    o["executed_volume"] = volume.to_string().into();
    o["trades_count"] = list.len().into();
    o["trades"] = Value::Array(list);
    o.to_string()
}

/// What the exchange side checked on one request.
#[derive(Debug, Clone)]
struct Checked {
    method: Method,
    path: String,
    signed: bool,
    hash_ok: bool,
    identifier: Option<String>,
}

/// Verifies the signature and the query hash of a request as Upbit would.
fn check(s: &Seen) -> Checked {
    let token = s
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let claims = live::jwt::verify(token, SECRET);
    let signed = claims.as_ref().is_some_and(|c| c.access_key == ACCESS);
    // What was sent: the query string of a GET, the JSON body's pairs of a POST (its keys
    // come back sorted, the order the client sends them in).
    let (sent, identifier) = if s.method == Method::POST {
        let body: serde_json::Map<String, Value> = serde_json::from_str(&s.body).unwrap();
        let pairs: Vec<(&str, String)> = body
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap().to_string()))
            .collect();
        let id = body
            .get("identifier")
            .and_then(|v| v.as_str())
            .map(String::from);
        (live::jwt::query_string(&pairs), id)
    } else {
        (s.query.clone(), s.param("identifier"))
    };
    let hash_ok = match claims.as_ref().and_then(|c| c.query_hash.clone()) {
        Some(h) => {
            h == live::jwt::query_hash(&sent)
                && claims.as_ref().and_then(|c| c.query_hash_alg.as_deref()) == Some("SHA512")
        }
        None => sent.is_empty(),
    };
    Checked {
        method: s.method.clone(),
        path: s.path.clone(),
        signed,
        hash_ok,
        identifier,
    }
}

/// An exchange that knows no order until one is POSTed, then shows it partially filled
/// on the first look and done (two trades) from the second on.
struct Exchange {
    mock: Mock,
    checks: Arc<std::sync::Mutex<Vec<Checked>>>,
    posts: Arc<AtomicUsize>,
}

async fn exchange(side: &'static str) -> Exchange {
    let checks: Arc<std::sync::Mutex<Vec<Checked>>> = Arc::default();
    let posts = Arc::new(AtomicUsize::new(0));
    let posted = Arc::new(AtomicBool::new(false));
    let looks = Arc::new(AtomicUsize::new(0));
    let (c, p) = (checks.clone(), posts.clone());
    let mock = Mock::start(move |s, _| {
        c.lock().unwrap().push(check(s));
        match (s.method.as_str(), s.path.as_str()) {
            ("POST", "/v1/orders") => {
                p.fetch_add(1, Ordering::SeqCst);
                posted.store(true, Ordering::SeqCst);
                let mut o = recorded("order_new_wait.json");
                o["side"] = side.into();
                Reply::ok(o.to_string()).header("Remaining-Req", "group=order; min=59; sec=7")
            }
            ("GET", "/v1/order") if !posted.load(Ordering::SeqCst) => Reply::status(
                404,
                r#"{"error":{"name":"order_not_found","message":"주문을 찾지 못했습니다."}}"#,
            ),
            ("GET", "/v1/order") => {
                let trades = [("4280000.0", "0.01"), ("4290000.0", "0.0133")];
                if looks.fetch_add(1, Ordering::SeqCst) == 0 {
                    Reply::ok(order_info("wait", side, &trades[..1]))
                } else {
                    Reply::ok(order_info("done", side, &trades))
                }
            }
            ("GET", "/v1/accounts") => Reply::ok(recorded("accounts.json").to_string()),
            _ => Reply::status(
                404,
                r#"{"error":{"name":"not_found","message":"no route"}}"#,
            ),
        }
    })
    .await;
    Exchange {
        mock,
        checks,
        posts,
    }
}

fn client(base: &str, max_polls: u32) -> UpbitClient {
    let mut c = UpbitClient::new(UpbitConfig::with_base_url(base), ACCESS, SECRET).unwrap();
    c.poll_interval = StdDuration::from_millis(10);
    c.max_polls = max_polls;
    c
}

fn btc() -> Market {
    "KRW-BTC".parse().unwrap()
}

fn request(account: AccountId, id: &str, reference: &str) -> OrderRequest {
    OrderRequest {
        account,
        market: btc(),
        client_order_id: id.into(),
        fill_price: Price::new(d(reference)).unwrap(),
        decided_at: t0(),
        reason: None,
        fill_time: None,
    }
}

async fn account(db: &TestDb, balance: &str) -> AccountId {
    let mut c = db.pool.acquire().await.unwrap();
    paper::open_account(&mut c, "live", Krw::new(d(balance)), t0())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_live_buy_is_signed_polled_through_partial_fills_and_booked_once() {
    let db = TestDb::new().await;
    let ex = exchange("bid").await;
    let acct = account(&db, "1000000").await;
    let cl = client(&ex.mock.base, 10);
    let req = request(acct, "buy-1", "4280000");
    let now = t0() + Duration::seconds(5);
    let mut tx = db.pool.begin().await.unwrap();
    let amount = LiveAmount::Notional(Krw::new(d("100000")));
    let done = execute_live(&cl, &mut tx, &req, Side::Buy, amount, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let fill = done.fill().unwrap();
    assert!(!done.replayed);
    assert_eq!(fill.quantity.value(), d("0.0233"));
    // Average of the two trades: Σ funds / Σ volume.
    let avg = ((d("42800") + d("57057")) / d("0.0233")).round_dp(8);
    assert_eq!(fill.price.value(), avg);
    assert_eq!(
        db.count("SELECT count(*) FROM live_fills").await,
        2,
        "both partial fills"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM live_orders WHERE state = 'done'")
            .await,
        1
    );
    let pos = paper::position(&mut db.pool.acquire().await.unwrap(), acct, &btc())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pos.quantity.value(), d("0.0233"));

    let checks = ex.checks.lock().unwrap().clone();
    assert!(
        checks.iter().all(|c| c.signed),
        "every request verifies: {checks:?}"
    );
    assert!(
        checks.iter().all(|c| c.hash_ok),
        "query_hash covers what was sent: {checks:?}"
    );
    let post = checks.iter().find(|c| c.method == Method::POST).unwrap();
    assert_eq!(
        (post.path.as_str(), post.identifier.as_deref()),
        ("/v1/orders", Some("buy-1"))
    );
    let body: Value = serde_json::from_str(
        &ex.mock
            .requests()
            .iter()
            .find(|s| s.method == Method::POST)
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(body["ord_type"], "price");
    assert_eq!(body["price"], "100000");
    assert_eq!(body["side"], "bid");
    assert!(body.get("volume").is_none(), "a market buy sends no volume");

    // The job runs again (e.g. its completion was lost): same answer, no second order.
    let mut tx = db.pool.begin().await.unwrap();
    let again = execute_live(&cl, &mut tx, &req, Side::Buy, amount, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.fill(), done.fill());
    assert_eq!(ex.posts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_retry_after_a_lost_attempt_finds_the_order_by_identifier_and_does_not_post_twice() {
    let db = TestDb::new().await;
    let ex = exchange("bid").await;
    let acct = account(&db, "1000000").await;
    let req = request(acct, "buy-2", "4280000");
    let now = t0() + Duration::seconds(5);
    let amount = LiveAmount::Notional(Krw::new(d("100000")));
    // The first attempt places the order, then gives up while it is open, and its
    // transaction (with our record of the order) is rolled back: as after a crash.
    let mut tx = db.pool.begin().await.unwrap();
    let e = execute_live(
        &client(&ex.mock.base, 0),
        &mut tx,
        &req,
        Side::Buy,
        amount,
        now,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, LiveError::StillOpen { .. }), "{e}");
    assert!(!e.into_job_error().permanent, "an open order is retried");
    tx.rollback().await.unwrap();
    assert_eq!(db.count("SELECT count(*) FROM live_orders").await, 0);

    let mut tx = db.pool.begin().await.unwrap();
    let done = execute_live(
        &client(&ex.mock.base, 10),
        &mut tx,
        &req,
        Side::Buy,
        amount,
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(done.fill().unwrap().quantity.value(), d("0.0233"));
    assert_eq!(
        ex.posts.load(Ordering::SeqCst),
        1,
        "found by identifier, not placed again"
    );
    assert_eq!(db.count("SELECT count(*) FROM fills").await, 1);
}

#[tokio::test]
async fn a_stale_buy_is_recorded_expired_and_never_sent() {
    let db = TestDb::new().await;
    let ex = exchange("bid").await;
    let acct = account(&db, "1000000").await;
    let req = request(acct, "buy-3", "4280000");
    let late = t0() + Duration::minutes(3);
    let mut tx = db.pool.begin().await.unwrap();
    let amount = LiveAmount::Notional(Krw::new(d("100000")));
    let done = execute_live(
        &client(&ex.mock.base, 10),
        &mut tx,
        &req,
        Side::Buy,
        amount,
        late,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(done.fill().is_none(), "{done:?}");
    assert!(
        ex.mock.requests().is_empty(),
        "nothing reached the exchange"
    );
}

/// An account holding `qty` BTC bought at 4,280,000 (through the paper ledger).
async fn holding(
    db: &TestDb,
    qty: &str,
) -> (AccountId, sqlx::pool::PoolConnection<sqlx::Postgres>) {
    let acct = account(db, "1000000").await;
    let mut c = db.pool.acquire().await.unwrap();
    let entry = request(acct, "entry", "4280000");
    let qty = BuyAmount::Quantity(Qty::new(d(qty)).unwrap());
    paper::buy(&mut c, &entry, qty, t0(), &PaperConfig::default())
        .await
        .unwrap();
    (acct, c)
}

/// Holds `qty` BTC, then sells it all live at `reference`.
async fn sell_all(
    db: &TestDb,
    ex: &Exchange,
    qty: &str,
    reference: &str,
) -> Result<paper::Executed, LiveError> {
    let (acct, mut c) = holding(db, qty).await;
    let exit = request(acct, "exit", reference);
    let now = t0() + Duration::minutes(10);
    let cl = client(&ex.mock.base, 10);
    execute_live(
        &cl,
        &mut c,
        &exit,
        Side::Sell,
        LiveAmount::WholePosition,
        now,
    )
    .await
}

#[tokio::test]
async fn a_live_sell_under_the_minimum_marks_the_position_dust() {
    let db = TestDb::new().await;
    let ex = exchange("ask").await;
    // The price fell: 0.002 × 2,000,000 = 4,000 KRW, under Upbit's 5,000.
    let e = sell_all(&db, &ex, "0.002", "2000000").await.unwrap_err();
    assert!(
        matches!(&e, LiveError::Dust { notional, .. } if *notional == d("4000")),
        "{e}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM positions WHERE dust").await,
        1
    );
    assert!(ex.mock.requests().is_empty(), "no order placed");
    assert!(e.into_job_error().permanent);
}

#[tokio::test]
async fn a_live_sell_is_a_market_ask_of_the_position_volume() {
    let db = TestDb::new().await;
    let ex = exchange("ask").await;
    let done = sell_all(&db, &ex, "0.0233", "4280000").await.unwrap();
    assert_eq!(done.fill().unwrap().quantity.value(), d("0.0233"));
    let reqs = ex.mock.requests();
    let post = reqs.iter().find(|s| s.method == Method::POST).unwrap();
    let body: Value = serde_json::from_str(&post.body).unwrap();
    assert_eq!(
        (body["side"].as_str(), body["ord_type"].as_str()),
        (Some("ask"), Some("market"))
    );
    assert_eq!(body["volume"], "0.0233");
    assert!(body.get("price").is_none(), "a market sell sends no price");
    assert_eq!(
        db.count("SELECT count(*) FROM positions").await,
        0,
        "sold out"
    );
    assert_eq!(db.count("SELECT count(*) FROM trades").await, 1);
}

#[tokio::test]
async fn reconciliation_returns_the_differences_with_the_ledger() {
    let db = TestDb::new().await;
    let ex = exchange("bid").await;
    // The ledger agrees on KRW and BTC (recorded accounts.json) but knows no ETH.
    let acct = account(&db, "5000.34202336").await;
    sqlx::query(
        "INSERT INTO positions (account_id, market, quantity, avg_price, entry_filled_at, fees, \
         cost, updated_at) VALUES ($1, 'KRW-BTC', 0.00048, 20870000, $2, 0, 10017.6, $2)",
    )
    .bind(acct.0)
    .bind(t0())
    .execute(&db.pool)
    .await
    .unwrap();
    let mut c = db.pool.acquire().await.unwrap();
    let diffs = reconcile(&client(&ex.mock.base, 1), &mut c, acct)
        .await
        .unwrap();
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert_eq!(diffs[0].asset, "ETH");
    assert_eq!(
        (diffs[0].exchange, diffs[0].ledger),
        (d("0.00935861"), Decimal::ZERO)
    );
    let checks = ex.checks.lock().unwrap().clone();
    assert!(checks.iter().all(|c| c.signed && c.hash_ok), "{checks:?}");
}

#[test]
fn live_trading_refuses_to_start_without_keys() {
    let e = UpbitClient::new(UpbitConfig::default(), "", SECRET).unwrap_err();
    assert!(e.to_string().contains("COINPILOT_UPBIT_ACCESS_KEY"), "{e}");
}

#[tokio::test]
async fn a_live_sell_larger_than_the_position_is_refused_before_the_exchange() {
    let db = TestDb::new().await;
    let ex = exchange("ask").await;
    let (acct, mut c) = holding(&db, "0.0233").await;
    let exit = request(acct, "exit", "4280000");
    let too_much = LiveAmount::Quantity(Qty::new(d("1")).unwrap());
    let cl = client(&ex.mock.base, 10);
    let e = execute_live(&cl, &mut c, &exit, Side::Sell, too_much, t0())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("exceeds the position"), "{e}");
    assert!(ex.mock.requests().is_empty());
    let pos = paper::position(&mut c, acct, &btc())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pos.quantity.value(), d("0.0233"), "unchanged");
}
