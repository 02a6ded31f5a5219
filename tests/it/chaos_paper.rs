//! The fault suite's paper-trading burst: five `coinpilot worker` processes drain a few
//! thousand `execute_order` jobs for ONE paper account while a driver SIGKILLs and restarts
//! a worker several times. Afterwards the ledger is recomputed from `fills` and must match
//! the account and positions to the last digit; no client order id is filled twice; every
//! job ended completed, or discarded with a refusal (never a database error).
//! Sizes: `COINPILOT_PAPER_JOBS` [3000], `COINPILOT_PAPER_KILLS` [4]; `COINPILOT_SOAK_MINUTES`
//! turns the burst into a soak (see `soak`).

use std::process::Stdio;

use coinpilot::clock::{Clock, SystemClock};
use coinpilot::paper::job::ExecuteOrder;
use coinpilot::queue::{enqueue_many, HandlerRegistry, NewJob};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::chaos::env_or;
use crate::support::*;

const MARKETS: &[(&str, i64, &str)] = &[
    // (market, reference price in KRW, one quantity unit)
    ("KRW-BTC", 100_000_000, "0.0001"),
    ("KRW-ETH", 5_000_000, "0.002"),
];

/// The random order mix: buys by quantity and by notional (some under the 5,000 KRW
/// minimum, many over what the balance allows), sells of random size (many larger than the
/// position) or of the whole position, and client order ids reused on purpose: 8 % of jobs
/// repeat an earlier job verbatim, 4 % take an earlier id for a different order.
fn order_args(r: &mut fastrand::Rng, n: usize, decided_at: &str) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::with_capacity(n);
    for i in 0..n {
        let roll = r.u8(..100);
        if roll < 8 && !all.is_empty() {
            let earlier = all[r.usize(..all.len())].clone();
            all.push(earlier);
            continue;
        }
        let mut args = fresh_order(r, decided_at);
        let coid = if roll < 12 && !all.is_empty() {
            all[r.usize(..all.len())]["client_order_id"].clone()
        } else {
            json!(format!("burst-{i}"))
        };
        args["client_order_id"] = coid;
        all.push(args);
    }
    all
}

fn fresh_order(r: &mut fastrand::Rng, decided_at: &str) -> Value {
    let (market, price, unit) = MARKETS[r.usize(..MARKETS.len())];
    // The reference price moves up to ±5 % between orders.
    let price = Decimal::from(price) * Decimal::new(r.i64(9_500..=10_500), 4);
    let unit: Decimal = unit.parse().unwrap();
    let mut args = json!({
        "market": market, "price": price.to_string(), "decided_at": decided_at,
    });
    if r.u8(..100) < 50 {
        args["side"] = json!("buy");
        if r.bool() {
            args["quantity"] = json!((unit * Decimal::from(r.u32(1..=4))).to_string());
        } else {
            args["notional"] = json!(r.u32(3_000..=40_000).to_string());
        }
    } else {
        args["side"] = json!("sell");
        if r.u8(..100) >= 20 {
            args["quantity"] = json!((unit * Decimal::from(r.u32(1..=10))).to_string());
        }
        args["reason"] = json!("burst");
    }
    args
}

fn spawn_order_worker(db: &TestDb, name: &str) -> Reaped {
    Reaped(
        coinpilot(db)
            // Refusals are logged at warn, a few thousand of them: only errors here.
            .env("RUST_LOG", "error")
            .args([
                "worker", "--name", name, "--queues", "orders", "--poll", "0.2",
            ])
            .args([
                "--concurrency",
                "4",
                "--lease",
                "2",
                "--rescue-interval",
                "0.5",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn worker process"),
    )
}

async fn enqueue_orders(db: &TestDb, all_args: &[Value]) {
    let mut reg = HandlerRegistry::new();
    reg.register(ExecuteOrder::default());
    let jobs: Vec<NewJob> = all_args
        .iter()
        .map(|a| reg.new_job("execute_order", a.clone()).unwrap())
        .collect();
    let mut c = db.pool.acquire().await.unwrap();
    for chunk in jobs.chunks(2_000) {
        enqueue_many(&mut c, SystemClock.now(), chunk)
            .await
            .unwrap();
    }
}

async fn finished(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM jobs WHERE state IN ('completed', 'discarded')")
        .await
}

/// What one burst did, for the report line and the soak's totals.
pub struct Burst {
    pub jobs: usize,
    pub kills: usize,
    pub fills: i64,
    pub refused: i64,
    pub rescued: i64,
}

/// One burst against a fresh database: enqueue, drain under kills, check the ledger.
pub async fn paper_burst(seed: u64, n: usize, kills: usize) -> Burst {
    let db = TestDb::new().await;
    let mut c = db.pool.acquire().await.unwrap();
    let start = coinpilot::paper::default_balance();
    coinpilot::paper::open_account(&mut c, "paper", start, SystemClock.now())
        .await
        .unwrap();
    drop(c);
    // Decided an hour ahead, so no buy goes stale on a slow machine: expiry has its own
    // test (`paper::execute_order_jobs_expire_stale_buys_and_exit_once`).
    let decided = (SystemClock.now() + chrono::Duration::hours(1)).to_rfc3339();
    let mut r = fastrand::Rng::with_seed(seed);
    enqueue_orders(&db, &order_args(&mut r, n, &decided)).await;
    let mut workers: Vec<Reaped> = (0..5)
        .map(|i| spawn_order_worker(&db, &format!("p{i}-0")))
        .collect();
    // Kills are paced by progress (a signal, not a guess at speed): kill k lands once
    // k / (kills + 2) of the jobs are done, so every kill hits a drain under way.
    for round in 1..=kills {
        let target = (round * n / (kills + 2)) as i64;
        eventually(300, "the drain to progress", || async {
            finished(&db).await >= target
        })
        .await;
        let i = r.usize(..workers.len());
        signal(&workers[i], "-KILL");
        workers[i].wait().unwrap();
        workers[i] = spawn_order_worker(&db, &format!("p{i}-{round}"));
    }
    eventually(600, "every order job finished", || async {
        finished(&db).await == n as i64
    })
    .await;
    for w in &workers {
        signal(w, "-TERM");
    }
    for w in &mut workers {
        assert!(w.wait().unwrap().success(), "a surviving worker failed");
    }
    let burst = check_ledger(&db, start.value(), n, kills).await;
    eprintln!(
        "chaos_paper: {n} jobs, {kills} kills, {} fills, {} refused, {} rescues",
        burst.fills, burst.refused, burst.rescued
    );
    burst
}

async fn check_ledger(db: &TestDb, start: Decimal, n: usize, kills: usize) -> Burst {
    let balance: Decimal = sqlx::query_scalar("SELECT balance FROM accounts WHERE name = 'paper'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(balance >= Decimal::ZERO, "balance {balance}");
    assert_exactly_equal(
        db,
        "(SELECT balance FROM accounts WHERE name = 'paper')",
        &format!("'{start}'::numeric - {BUYS} + {SELLS}"),
        "balance against the fills",
    )
    .await;
    check_positions(db).await;
    check_trades(db).await;
    check_each_id_filled_once(db).await;
    let refused = check_job_outcomes(db, n).await;
    let fills = db.count("SELECT count(*) FROM fills").await;
    let rescued = db
        .count("SELECT count(*) FROM jobs j, jsonb_array_elements(j.errors) e WHERE e->>'kind' = 'rescued'")
        .await;
    assert!(
        kills == 0 || rescued > 0,
        "no rescue happened: the kills hit no running job"
    );
    assert!(fills > 0 && refused > 0, "{fills} fills, {refused} refused");
    Burst {
        jobs: n,
        kills,
        fills,
        refused,
        rescued,
    }
}

/// Every market's open quantity is Σ buy fills − Σ sell fills (no row when that is zero).
async fn check_positions(db: &TestDb) {
    let rows: Vec<(String, Decimal, Option<Decimal>)> = sqlx::query_as(
        "SELECT o.market,
                sum(CASE o.side WHEN 'buy' THEN f.quantity ELSE -f.quantity END),
                (SELECT p.quantity FROM positions p WHERE p.market = o.market)
         FROM fills f JOIN orders o USING (client_order_id) GROUP BY o.market",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (market, from_fills, held) in rows {
        assert_eq!(
            held.unwrap_or(Decimal::ZERO),
            from_fills,
            "{market}: position against the fills"
        );
    }
}

/// What the buy fills cost and what the sell fills brought in, as SQL expressions.
const BUYS: &str = "(SELECT coalesce(sum(f.price * f.quantity + f.fee), 0)
     FROM fills f JOIN orders o USING (client_order_id) WHERE o.side = 'buy')";
const SELLS: &str = "(SELECT coalesce(sum(f.price * f.quantity - f.fee), 0)
     FROM fills f JOIN orders o USING (client_order_id) WHERE o.side = 'sell')";

/// Compares two amounts in PostgreSQL's exact `numeric`. A sum of amounts that each use
/// 28 significant digits can need more than a `Decimal` holds, so adding or even reading
/// such sums in Rust rounds at the last places: once, 30572729.617286890485000000001
/// against …0485 for the same stored values.
async fn assert_exactly_equal(db: &TestDb, left: &str, right: &str, what: &str) {
    let sql = format!("SELECT ({left})::text, ({right})::text, ({left}) = ({right})");
    let (l, r, equal): (String, String, bool) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(equal, "{what}: {l} != {r}");
}

/// One trade per sell fill, with that fill's proceeds; and every buy's cost is still held
/// (open positions' cost) or was closed (trades' cost), to the last digit.
async fn check_trades(db: &TestDb) {
    let trades = db.count("SELECT count(*) FROM trades").await;
    let sell_fills = db
        .count("SELECT count(*) FROM fills JOIN orders USING (client_order_id) WHERE side = 'sell'")
        .await;
    assert_eq!(trades, sell_fills, "one trade per sell fill");
    assert_exactly_equal(
        db,
        "(SELECT coalesce(sum(proceeds), 0) FROM trades)",
        SELLS,
        "trades' proceeds against the sell fills",
    )
    .await;
    assert_exactly_equal(
        db,
        "(SELECT coalesce(sum(cost), 0) FROM positions) + (SELECT coalesce(sum(cost), 0) FROM trades)",
        BUYS,
        "buy cost = open cost + closed cost",
    )
    .await;
}

/// At most one order and one fill per client order id (the keys), and at most one job
/// that made a fill for it: every other job with that id replayed the fill.
async fn check_each_id_filled_once(db: &TestDb) {
    let doubled = db
        .count(
            "SELECT count(*) FROM (SELECT args->>'client_order_id' FROM jobs
             WHERE state = 'completed' AND output->>'replayed' = 'false'
             GROUP BY 1 HAVING count(*) > 1) d",
        )
        .await;
    assert_eq!(doubled, 0, "a client order id was executed by two jobs");
    let fresh = db
        .count(
            "SELECT count(*) FROM jobs WHERE state = 'completed' AND output->>'replayed' = 'false'",
        )
        .await;
    let orders = db.count("SELECT count(*) FROM orders").await;
    assert_eq!(fresh, orders, "one fresh execution per recorded order");
    let orphan_replays = db
        .count(
            "SELECT count(*) FROM jobs j WHERE state = 'completed'
             AND output->>'replayed' = 'true'
             AND NOT EXISTS (SELECT 1 FROM orders o
                             WHERE o.client_order_id = j.args->>'client_order_id')",
        )
        .await;
    assert_eq!(
        orphan_replays, 0,
        "a replay of an order that does not exist"
    );
}

/// Every job completed, or was discarded on its first refusal with the reason; none was
/// discarded for a database error (a CHECK violation would be one). Returns the refusals.
async fn check_job_outcomes(db: &TestDb, n: usize) -> i64 {
    let completed = db
        .count("SELECT count(*) FROM jobs WHERE state = 'completed'")
        .await;
    let discarded: Vec<(String, String)> = sqlx::query_as(
        "SELECT errors->-1->>'kind', errors->-1->>'message' FROM jobs WHERE state = 'discarded'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(completed + discarded.len() as i64, n as i64);
    let refusal = [
        "buy refused:",
        "exceeds the position",
        "no open position",
        "already used for a different order",
        "rounds to zero",
    ];
    for (kind, message) in &discarded {
        assert_eq!(kind, "permanent", "{message}");
        assert!(
            refusal.iter().any(|r| message.contains(r)),
            "discarded without a refusal reason: {message}"
        );
    }
    discarded.len() as i64
}

/// 3,000 orders from five processes against one account, four SIGKILLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paper_burst_from_five_killed_workers_keeps_the_ledger_exact() {
    let _heavy = one_heavy_test_at_a_time();
    let n = env_or("COINPILOT_PAPER_JOBS", 3_000);
    let kills = env_or("COINPILOT_PAPER_KILLS", 4);
    let seed = env_or("COINPILOT_CHAOS_SEED", 20_261_202) as u64;
    paper_burst(seed, n, kills).await;
}
