//! The trading page and its JSON twin, on a ledger made by the real paper executor
//! (`coinpilot::paper::{buy, sell}`) plus candles, AI decisions and risk rows inserted as
//! the bot would write them. Expected numbers are derived from the executor's fills, not
//! copied from the page.

use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use coinpilot::domain::candle::Market;
use coinpilot::domain::money::{Krw, Price, Qty};
use coinpilot::paper::{self, AccountId, BuyAmount, Fill, OrderRequest, PaperConfig};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgPool;

use super::*;

fn num(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn btc() -> Market {
    Market::krw_btc()
}

/// `1013394` → "1,013,394 KRW" (whole won only: the test picks amounts that are).
fn won(v: Decimal) -> String {
    assert!(v.fract().is_zero(), "{v} is not whole won");
    let digits = v.abs().trunc().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    let sign = if v < Decimal::ZERO { "-" } else { "" };
    format!("{sign}{out} KRW")
}

fn dec(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not a decimal string"))
        .parse()
        .unwrap()
}

async fn account(pool: &PgPool, at: DateTime<Utc>) -> AccountId {
    let mut c = pool.acquire().await.unwrap();
    paper::open_account(&mut c, "paper", Krw::new(Decimal::from(1_000_000)), at)
        .await
        .unwrap()
}

fn order(a: AccountId, coid: &str, price: &str, at: DateTime<Utc>, reason: &str) -> OrderRequest {
    OrderRequest {
        account: a,
        market: btc(),
        client_order_id: coid.into(),
        fill_price: Price::new(num(price)).unwrap(),
        decided_at: at,
        reason: Some(reason.into()),
        fill_time: Some(at),
    }
}

async fn buy(pool: &PgPool, req: &OrderRequest, qty: &str) -> Fill {
    let mut tx = pool.begin().await.unwrap();
    let amount = BuyAmount::Quantity(Qty::new(num(qty)).unwrap());
    let cfg = PaperConfig::default();
    let e = paper::buy(&mut tx, req, amount, req.decided_at, &cfg)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    e.fill().expect("a filled buy").clone()
}

async fn sell(pool: &PgPool, req: &OrderRequest) -> Fill {
    let mut tx = pool.begin().await.unwrap();
    let cfg = PaperConfig::default();
    let e = paper::sell(&mut tx, req, None, req.decided_at, &cfg)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    e.fill().expect("a filled sell").clone()
}

async fn candle(pool: &PgPool, open: DateTime<Utc>, close: &str) {
    sqlx::query(
        "INSERT INTO candles (market, interval, open_time, open, high, low, close, volume, updated_at)
         VALUES ('KRW-BTC', '1m', $1, $2, $2, $2, $2, 1, $1)",
    )
    .bind(open)
    .bind(num(close))
    .execute(pool)
    .await
    .unwrap();
}

fn spent(f: &Fill) -> Decimal {
    f.quantity.value() * f.price.value() + f.fee.value()
}

fn received(f: &Fill) -> Decimal {
    f.quantity.value() * f.price.value() - f.fee.value()
}

async fn ai_rows(pool: &PgPool, a: AccountId, now: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO ai_decisions (kind, market, provider, model, reasoning, latency_ms, decided_at, created_at)
         VALUES ('market_review', 'KRW-BTC', 'rules', 'rules-v1', 'Sideways <b>drift</b>.', 1, $1, $1)",
    )
    .bind(now - Duration::minutes(50))
    .execute(pool)
    .await
    .unwrap();
    let signal: i64 = sqlx::query_scalar(
        "INSERT INTO signals (account_id, market, candle_open_time, decided_at, signal, reason, close, created_at)
         VALUES ($1, 'KRW-BTC', $2, $2, 'entry', 'entry', 101000000, $2) RETURNING id",
    )
    .bind(a.0)
    .bind(now - Duration::minutes(20))
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO ai_decisions (signal_id, kind, market, provider, model, verdict, confidence,
             confirmed, reasoning, error, latency_ms, decided_at, created_at)
         VALUES ($1, 'entry_review', 'KRW-BTC', 'anthropic', 'claude-test', 'REJECT', 0, false,
             'Malformed output.', 'model output was not JSON', 812, $2, $2)",
    )
    .bind(signal)
    .bind(now - Duration::minutes(20))
    .execute(pool)
    .await
    .unwrap();
}

async fn risk_rows(pool: &PgPool, a: AccountId, now: DateTime<Utc>, cooldown: DateTime<Utc>) {
    let day = coinpilot::domain::risk::seoul_day(now);
    sqlx::query(
        "INSERT INTO risk_state (account_id, loss_streak, cooldown_until, halted, halted_reason, updated_at)
         VALUES ($1, 3, $2, true, 'halted by ops', $3)",
    )
    .bind(a.0)
    .bind(cooldown)
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO risk_days (account_id, day, day_start_equity, realized_pnl, entries, created_by, created_at)
         VALUES ($1, $2, 1000000, -31500, 4, 'test', $3)",
    )
    .bind(a.0)
    .bind(day)
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
}

/// A few hours of a plausible bot for the browser test's screenshot: minute candles on a
/// drifting price, three round trips (two won, one stopped out), an open position, AI
/// decisions of both reviewers and today's risk row.
pub(crate) async fn seed_demo(pool: &PgPool, now: DateTime<Utc>) {
    let t0 = now - Duration::hours(6);
    let a = account(pool, t0).await;
    let price = |m: i64| {
        let wave = ((m as f64) / 40.0).sin() * 1_200_000.0 + (m as f64) * 2_000.0;
        Decimal::from(160_000_000i64 + wave as i64)
    };
    for m in 0..360 {
        candle(pool, t0 + Duration::minutes(m), &price(m).to_string()).await;
    }
    for (i, (entry, exit, reason)) in [
        (20, 70, "take_profit"),
        (130, 150, "stop_loss"),
        (200, 260, "rsi"),
    ]
    .into_iter()
    .enumerate()
    {
        let (at, out) = (t0 + Duration::minutes(entry), t0 + Duration::minutes(exit));
        buy(
            pool,
            &order(
                a,
                &format!("demo-b{i}"),
                &price(entry).to_string(),
                at,
                "entry",
            ),
            "0.002",
        )
        .await;
        sell(
            pool,
            &order(
                a,
                &format!("demo-s{i}"),
                &price(exit).to_string(),
                out,
                reason,
            ),
        )
        .await;
    }
    let at = t0 + Duration::minutes(330);
    buy(
        pool,
        &order(a, "demo-b9", &price(330).to_string(), at, "entry"),
        "0.0015",
    )
    .await;
    ai_rows(pool, a, now).await;
    let day = coinpilot::domain::risk::seoul_day(now);
    sqlx::query("INSERT INTO risk_state (account_id, loss_streak, updated_at) VALUES ($1, 0, $2)")
        .bind(a.0)
        .bind(now)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO risk_days (account_id, day, day_start_equity, realized_pnl, entries, created_by, created_at)
         SELECT $1, $2, 1000000, coalesce(sum(pnl), 0), 4, 'demo', $3 FROM trades WHERE account_id = $1",
    )
    .bind(a.0)
    .bind(day)
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_trading_page_shows_the_ledger_positions_trades_curve_decisions_and_risk() {
    let d = setup().await;
    let now = d.clock.now();
    let t0 = now - Duration::hours(3);
    let a = account(&d.db.pool, t0).await;
    let (b1, s1) = (t0 + Duration::minutes(10), t0 + Duration::minutes(60));
    let b2 = t0 + Duration::minutes(90);
    let first = buy(
        &d.db.pool,
        &order(a, "buy-1", "100000000", b1, "entry"),
        "0.005",
    )
    .await;
    candle(&d.db.pool, b1, "100000000").await;
    candle(&d.db.pool, s1 - Duration::minutes(1), "102000000").await;
    let exit = sell(
        &d.db.pool,
        &order(a, "sell-1", "102000000", s1, "take_profit"),
    )
    .await;
    let held = buy(
        &d.db.pool,
        &order(a, "buy-2", "101000000", b2, "entry"),
        "0.002",
    )
    .await;
    let last_open = now - Duration::minutes(5);
    candle(&d.db.pool, last_open, "103000000").await;
    ai_rows(&d.db.pool, a, now).await;
    let cooldown = now + Duration::hours(20);
    risk_rows(&d.db.pool, a, now, cooldown).await;

    let balance = Decimal::from(1_000_000) - spent(&first) + received(&exit) - spent(&held);
    let value = held.quantity.value() * num("103000000");
    let unrealized = value - spent(&held);
    let pnl = received(&exit) - spent(&first);
    let v = login(&d, "viewer", VIEWER_PW).await;
    let r = send(&d.app, get("/api/trading", Some(&v.cookie))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let j: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(dec(&j["account"]["balance"]), balance);
    assert_eq!(dec(&j["account"]["equity"]), balance + value);
    let pos = &j["positions"][0];
    assert_eq!(dec(&pos["quantity"]), held.quantity.value());
    assert_eq!(dec(&pos["last_close"]), num("103000000"));
    assert_eq!(dec(&pos["unrealized_pnl"]), unrealized);
    assert_eq!(j["positions"].as_array().unwrap().len(), 1);
    let trade = &j["trades"]["trades"][0];
    assert_eq!(dec(&trade["pnl"]), pnl);
    assert_eq!(dec(&trade["entry_price"]), first.price.value());
    assert_eq!(trade["exit_reason"], "take_profit");
    assert_eq!(j["trades"]["totals"]["count"], 1);
    assert_eq!(j["trades"]["totals"]["wins"], 1);

    let points = j["equity_curve"]["points"].as_array().unwrap();
    assert!(points.len() > 10, "{} points", points.len());
    // At the first fill the account holds cash and BTC at the fill price: only the fee lost.
    assert_eq!(
        dec(&points[0]["equity"]),
        Decimal::from(1_000_000) - first.fee.value()
    );
    assert_eq!(dec(&points[points.len() - 1]["equity"]), balance + value);
    let after_exit = points
        .iter()
        .find(|p| {
            let t: DateTime<Utc> = p["t"].as_str().unwrap().parse().unwrap();
            t >= s1 && t < b2
        })
        .expect("a point between the exit and the second buy");
    assert_eq!(
        dec(&after_exit["equity"]),
        Decimal::from(1_000_000) + pnl,
        "flat between trades: cash only"
    );

    let ai = j["ai_decisions"].as_array().unwrap();
    assert_eq!(ai.len(), 2);
    assert_eq!(ai[0]["provider"], "anthropic", "newest first");
    assert_eq!(ai[0]["error"], "model output was not JSON");
    assert_eq!(ai[1]["reviewer"], "offline rules");

    let risk = &j["risk"];
    assert_eq!(risk["halted"], true);
    assert_eq!(risk["loss_streak"], 3);
    assert_eq!(risk["cooldown_active"], true);
    assert_eq!(dec(&risk["realized_pnl_today"]), num("-31500"));
    assert_eq!(risk["entries_today"], 4);
    assert_eq!(
        risk["day_seoul"],
        coinpilot::domain::risk::seoul_day(now).to_string()
    );

    let page = send(&d.app, get("/trading", Some(&v.cookie))).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = &page.body;
    for want in [
        won(balance + value),
        won(balance),
        format!("+{}", won(pnl.round())),
        "offline rules".to_string(),
        "anthropic / claude-test".to_string(),
        "model output was not JSON".to_string(),
        "take_profit".to_string(),
        "halted by ops".to_string(),
        "-31,500 KRW".to_string(),
        "aria-label=\"equity curve\"".to_string(),
        format!("Seoul {}", coinpilot::domain::risk::seoul_day(now)),
    ] {
        assert!(html.contains(&want), "the page lacks {want:?}");
    }
    assert!(
        html.contains("Sideways &lt;b&gt;drift&lt;/b&gt;."),
        "reasoning is escaped"
    );
}

#[tokio::test]
async fn closed_trades_page_with_a_keyset_cursor() {
    let d = setup().await;
    let now = d.clock.now();
    let t0 = now - Duration::days(2);
    let a = account(&d.db.pool, t0).await;
    let n = 45;
    for i in 0..n {
        let at = t0 + Duration::minutes(10 * i);
        buy(
            &d.db.pool,
            &order(a, &format!("b{i}"), "100000000", at, "entry"),
            "0.001",
        )
        .await;
        let exit = at + Duration::minutes(5);
        sell(
            &d.db.pool,
            &order(a, &format!("s{i}"), "99000000", exit, "stop_loss"),
        )
        .await;
    }
    let l = login(&d, "admin", ADMIN_PW).await;
    let mut seen: Vec<(DateTime<Utc>, i64)> = Vec::new();
    let mut url = "/api/trading".to_string();
    let mut pages = 0;
    loop {
        let r = send(&d.app, get(&url, Some(&l.cookie))).await;
        assert_eq!(r.status, StatusCode::OK, "{url}: {}", r.body);
        let j: Value = serde_json::from_str(&r.body).unwrap();
        let trades = j["trades"]["trades"].as_array().unwrap();
        assert!(trades.len() <= 20);
        seen.extend(trades.iter().map(|t| {
            (
                t["exit_time"].as_str().unwrap().parse().unwrap(),
                t["id"].as_i64().unwrap(),
            )
        }));
        pages += 1;
        match j["trades"]["next"].as_str() {
            Some(next) => url = format!("/api/trading?trades_before={next}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), n as usize);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest exit first, no repeat"
    );
    // The HTML page links to the older page with the same cursor.
    let page = send(&d.app, get("/trading", Some(&l.cookie))).await;
    assert!(page.body.contains("Older trades"));
    assert!(page
        .body
        .contains("/trading?account=paper&amp;trades_before="));
    // Another account's name travels encoded in the links, and shows escaped.
    let r = send(&d.app, get("/trading?account=a%26b%3Cc", Some(&l.cookie))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("a&amp;b&lt;c"), "{}", r.body);
    let r = send(&d.app, get("/trading?trades_before=junk", Some(&l.cookie))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("trades_before"));
}

#[tokio::test]
async fn an_empty_database_renders_the_trading_page() {
    let d = setup().await;
    let l = login(&d, "viewer", VIEWER_PW).await;
    let page = send(&d.app, get("/trading", Some(&l.cookie))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("No paper account"));
    assert!(page.body.contains("No AI decision yet"));
    let r = send(&d.app, get("/api/trading", Some(&l.cookie))).await;
    assert_eq!(r.status, StatusCode::OK);
    let j: Value = serde_json::from_str(&r.body).unwrap();
    assert!(j["account"].is_null() && j["risk"].is_null());
    assert_eq!(j["positions"].as_array().unwrap().len(), 0);
    // An account with no fill yet: balance only, no curve, no risk row.
    account(&d.db.pool, d.clock.now()).await;
    let page = send(&d.app, get("/trading", Some(&l.cookie))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("1,000,000 KRW"));
    assert!(page.body.contains("No fill yet"));
    assert!(page.body.contains("No open position") && page.body.contains("No closed trade"));
    assert_eq!(
        send(&d.app, get("/api/trading", None)).await.status,
        StatusCode::UNAUTHORIZED
    );
}
