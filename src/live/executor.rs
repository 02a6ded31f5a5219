//! `execute_live`: one order through the exchange, idempotent on the client order id, and
//! `reconcile`: the exchange's balances against the ledger.
//!
//! Order of checks, so a retry never places a second order: (1) booked in the ledger →
//! report it; (2) a stale buy → recorded expired, never sent; (3) known in `live_orders`
//! or on the exchange by `identifier` → resume polling it; (4) only then `POST /v1/orders`.

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use sqlx::PgConnection;

use super::exchange::{ExchangeOrder, UpbitClient};
use super::LiveError;
use crate::domain::money::{Krw, Price, Qty};
use crate::paper::{self, AccountId, BuyAmount, Executed, OrderRequest, Side};

/// How much to trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveAmount {
    /// A buy spending this much KRW (Upbit `ord_type=price`).
    Notional(Krw),
    /// A buy of about this quantity at the reference price, or a sell of exactly it.
    Quantity(Qty),
    /// A sell of the whole position.
    WholePosition,
}

/// Whether the ledger already has this client order id (no lock: read after the caller's
/// earlier writes; the paper functions re-check under the account lock).
const ORDER_BOOKED: &str = "SELECT EXISTS (SELECT 1 FROM orders WHERE client_order_id = $1)";

/// The exchange uuid of an order we placed before. No lock.
const LIVE_ORDER: &str = "SELECT exchange_uuid FROM live_orders WHERE client_order_id = $1";

/// Records or refreshes the exchange's view of an order. Row lock: this order's row.
const UPSERT_LIVE_ORDER: &str = "INSERT INTO live_orders (client_order_id, exchange_uuid, \
     market, side, state, executed_volume, paid_fee, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (client_order_id) DO UPDATE \
     SET state = EXCLUDED.state, executed_volume = EXCLUDED.executed_volume, \
     paid_fee = EXCLUDED.paid_fee, updated_at = EXCLUDED.updated_at";

/// Records the trades seen so far; one already recorded is left as it was.
const RECORD_LIVE_FILLS: &str = "INSERT INTO live_fills (trade_uuid, client_order_id, price, \
     volume, funds, recorded_at) SELECT t.u, $1, t.p, t.v, t.f, $6 \
     FROM UNNEST($2::text[], $3::numeric[], $4::numeric[], $5::numeric[]) AS t(u, p, v, f) \
     ON CONFLICT (trade_uuid) DO NOTHING";

/// Marks a live position dust. Row lock: the position row.
const MARK_DUST: &str =
    "UPDATE positions SET dust = true, updated_at = $3 WHERE account_id = $1 AND market = $2";

/// The ledger's holdings of an account, for reconciliation. No lock.
const HOLDINGS: &str = "SELECT market, quantity FROM positions WHERE account_id = $1";

/// Executes `req` on Upbit and books the fill into the ledger in the caller's transaction.
///
/// Everything is written on `conn`: the exchange order and its partial fills as they are
/// polled, the booking, and the dust mark. So on [`LiveError::Dust`] the caller should
/// commit (complete the job with the alert) rather than fail, or the mark rolls back; on
/// [`LiveError::StillOpen`] a rollback is harmless: the retry finds the order by identifier.
pub async fn execute_live(
    client: &UpbitClient,
    conn: &mut PgConnection,
    req: &OrderRequest,
    side: Side,
    amount: LiveAmount,
    now: DateTime<Utc>,
) -> Result<Executed, LiveError> {
    let cfg = client.orders;
    let booked: bool = sqlx::query_scalar(ORDER_BOOKED)
        .bind(&req.client_order_id)
        .fetch_one(&mut *conn)
        .await?;
    let stale = side == Side::Buy && now - req.decided_at > cfg.buy_ttl;
    if booked || stale {
        // The paper executor reports the earlier execution, or records the stale buy as
        // expired; either way before any amount is used, and nothing reaches the exchange.
        return Ok(match side {
            Side::Buy => paper::buy(conn, req, placeholder_buy(req), now, &cfg).await?,
            Side::Sell => paper::sell(conn, req, None, now, &cfg).await?,
        });
    }
    let params = order_params(conn, req, side, amount, now, client).await?;
    let order = find_or_place(client, conn, req, side, &params, now).await?;
    let order = poll_until_final(client, conn, req, side, order, now).await?;
    book(conn, client, req, side, &order, now).await
}

/// Any valid amount: `paper::buy` returns the earlier or expired execution before sizing.
fn placeholder_buy(req: &OrderRequest) -> BuyAmount {
    BuyAmount::Notional(Krw::new(req.fill_price.value()))
}

/// The `POST /v1/orders` parameters, alphabetical (the order `query_hash` covers).
async fn order_params(
    conn: &mut PgConnection,
    req: &OrderRequest,
    side: Side,
    amount: LiveAmount,
    now: DateTime<Utc>,
    client: &UpbitClient,
) -> Result<Vec<(&'static str, String)>, LiveError> {
    let minimum = client.orders.orders.min_order_krw;
    let buy = |notional: Decimal| {
        // Upbit takes whole KRW for a market buy; rounding down never overspends.
        let notional = notional.round_dp_with_strategy(0, RoundingStrategy::ToZero);
        if notional < minimum {
            return Err(LiveError::BelowMinimum { notional, minimum });
        }
        Ok(vec![
            ("identifier", req.client_order_id.clone()),
            ("market", req.market.to_string()),
            ("ord_type", "price".to_string()),
            ("price", notional.to_string()),
            ("side", "bid".to_string()),
        ])
    };
    match (side, amount) {
        (Side::Buy, LiveAmount::Notional(n)) => buy(n.value()),
        (Side::Buy, LiveAmount::Quantity(q)) => buy((q * req.fill_price).value()),
        (Side::Sell, LiveAmount::Quantity(q)) => {
            sell_params(conn, req, Some(q), now, minimum).await
        }
        (Side::Sell, LiveAmount::WholePosition) => sell_params(conn, req, None, now, minimum).await,
        (side, amount) => Err(LiveError::InvalidRequest(format!(
            "a {} cannot take {amount:?}",
            side.as_str()
        ))),
    }
}

/// A market sell of `qty` (the whole position when `None`). Under the minimum order the
/// position is marked dust instead: Upbit would refuse the order.
async fn sell_params(
    conn: &mut PgConnection,
    req: &OrderRequest,
    qty: Option<Qty>,
    now: DateTime<Utc>,
    minimum: Decimal,
) -> Result<Vec<(&'static str, String)>, LiveError> {
    let held = paper::position(conn, req.account, &req.market)
        .await?
        .ok_or_else(|| paper::PaperError::NoPosition(req.market.to_string()))?;
    let qty = match qty {
        Some(q) if q > held.quantity => {
            return Err(paper::PaperError::SellExceedsPosition {
                market: req.market.to_string(),
                requested: q,
                held: held.quantity,
            }
            .into())
        }
        Some(q) => q,
        None => held.quantity,
    };
    let notional = (qty * req.fill_price).value();
    if notional < minimum {
        mark_dust(conn, req, now).await?;
        return Err(LiveError::Dust {
            market: req.market.to_string(),
            notional,
            minimum,
        });
    }
    Ok(vec![
        ("identifier", req.client_order_id.clone()),
        ("market", req.market.to_string()),
        ("ord_type", "market".into()),
        ("side", "ask".into()),
        ("volume", qty.value().normalize().to_string()),
    ])
}

async fn mark_dust(
    conn: &mut PgConnection,
    req: &OrderRequest,
    now: DateTime<Utc>,
) -> Result<(), LiveError> {
    sqlx::query(MARK_DUST)
        .bind(req.account.0)
        .bind(req.market.as_str())
        .bind(now)
        .execute(conn)
        .await?;
    tracing::warn!(market = %req.market, "live position under the minimum order marked dust");
    Ok(())
}

/// The order placed under this identifier before (by us, or by an attempt that crashed
/// before recording it), else a new one.
async fn find_or_place(
    client: &UpbitClient,
    conn: &mut PgConnection,
    req: &OrderRequest,
    side: Side,
    params: &[(&'static str, String)],
    now: DateTime<Utc>,
) -> Result<ExchangeOrder, LiveError> {
    let known: Option<String> = sqlx::query_scalar(LIVE_ORDER)
        .bind(&req.client_order_id)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(order) = client.order_by_identifier(&req.client_order_id).await? {
        record(conn, req, side, &order, now).await?;
        return Ok(order);
    }
    if let Some(uuid) = known {
        // We recorded it, yet the exchange does not know it: placing again could double it.
        return Err(LiveError::InvalidRequest(format!(
            "order {} (exchange uuid {uuid}) is recorded here but unknown to the exchange",
            req.client_order_id
        )));
    }
    let order = client.place_order(params).await?;
    record(conn, req, side, &order, now).await?;
    Ok(order)
}

async fn poll_until_final(
    client: &UpbitClient,
    conn: &mut PgConnection,
    req: &OrderRequest,
    side: Side,
    mut order: ExchangeOrder,
    now: DateTime<Utc>,
) -> Result<ExchangeOrder, LiveError> {
    let mut polls = 0;
    while !order.is_final() {
        if polls >= client.max_polls {
            return Err(LiveError::StillOpen {
                client_order_id: req.client_order_id.clone(),
                state: order.state,
                polls,
            });
        }
        tokio::time::sleep(client.poll_interval).await;
        polls += 1;
        order = client
            .order_by_identifier(&req.client_order_id)
            .await?
            .ok_or_else(|| {
                LiveError::InvalidRequest(format!(
                    "order {} vanished from the exchange while polling",
                    req.client_order_id
                ))
            })?;
        record(conn, req, side, &order, now).await?;
    }
    Ok(order)
}

/// Stores the exchange's view of the order and the trades seen so far.
async fn record(
    conn: &mut PgConnection,
    req: &OrderRequest,
    side: Side,
    o: &ExchangeOrder,
    now: DateTime<Utc>,
) -> Result<(), LiveError> {
    sqlx::query(UPSERT_LIVE_ORDER)
        .bind(&req.client_order_id)
        .bind(&o.uuid)
        .bind(req.market.as_str())
        .bind(side.as_str())
        .bind(&o.state)
        .bind(o.executed_volume)
        .bind(o.paid_fee)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let col = |f: fn(&super::ExchangeTrade) -> Decimal| o.trades.iter().map(f).collect::<Vec<_>>();
    sqlx::query(RECORD_LIVE_FILLS)
        .bind(&req.client_order_id)
        .bind(o.trades.iter().map(|t| t.uuid.clone()).collect::<Vec<_>>())
        .bind(col(|t| t.price))
        .bind(col(|t| t.volume))
        .bind(col(|t| t.funds))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Books a final order into the ledger at its average fill price (Σ funds / Σ volume, to 8
/// decimals). The fee booked is the ledger's configured rate (0.05 %, Upbit's KRW-market
/// fee); the exchange's `paid_fee` stays in `live_orders`, where reconciliation can see it.
async fn book(
    conn: &mut PgConnection,
    client: &UpbitClient,
    req: &OrderRequest,
    side: Side,
    o: &ExchangeOrder,
    now: DateTime<Utc>,
) -> Result<Executed, LiveError> {
    let volume: Decimal = o.trades.iter().map(|t| t.volume).sum();
    let funds: Decimal = o.trades.iter().map(|t| t.funds).sum();
    if o.executed_volume <= Decimal::ZERO || volume <= Decimal::ZERO {
        return Err(LiveError::NotFilled {
            client_order_id: req.client_order_id.clone(),
            state: o.state.clone(),
        });
    }
    // Rounded to 8 decimals so quantity × price is exact and the paper sizing divides it
    // back to the executed quantity to the last digit (a 28-digit quotient would not).
    let avg = Price::new((funds / volume).round_dp(8)).map_err(paper::PaperError::from)?;
    let qty = Qty::new(o.executed_volume).map_err(paper::PaperError::from)?;
    let at_fill = OrderRequest {
        fill_price: avg,
        ..req.clone()
    };
    let cfg = client.orders;
    Ok(match side {
        Side::Buy => paper::buy(conn, &at_fill, BuyAmount::Quantity(qty), now, &cfg).await?,
        Side::Sell => paper::sell(conn, &at_fill, Some(qty), now, &cfg).await?,
    })
}

/// A holding that differs between the exchange and the ledger.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// `KRW` or the base asset (`BTC`).
    pub asset: String,
    pub exchange: Decimal,
    pub ledger: Decimal,
}

/// `GET /v1/accounts` against the ledger of `account`: KRW against the balance, each asset
/// against the position in `KRW-<asset>`. Empty when they agree (alert on anything else).
pub async fn reconcile(
    client: &UpbitClient,
    conn: &mut PgConnection,
    account: AccountId,
) -> Result<Vec<Difference>, LiveError> {
    let exchange = client.accounts().await?;
    let krw = paper::balance(conn, account).await?.value();
    let rows: Vec<(String, Decimal)> = sqlx::query_as(HOLDINGS)
        .bind(account.0)
        .fetch_all(&mut *conn)
        .await?;
    let mut ledger: std::collections::BTreeMap<String, Decimal> = rows
        .into_iter()
        .map(|(m, q)| (m.strip_prefix("KRW-").unwrap_or(&m).to_string(), q))
        .collect();
    ledger.insert("KRW".into(), krw);
    let mut assets: std::collections::BTreeSet<String> = ledger.keys().cloned().collect();
    assets.extend(exchange.iter().map(|b| b.currency.clone()));
    let held = |a: &str| {
        exchange
            .iter()
            .filter(|b| b.currency == a)
            .map(|b| b.total)
            .sum::<Decimal>()
    };
    Ok(assets
        .into_iter()
        .filter_map(|asset| {
            let (ex, led) = (
                held(&asset),
                ledger.get(&asset).copied().unwrap_or_default(),
            );
            (ex != led).then_some(Difference {
                asset,
                exchange: ex,
                ledger: led,
            })
        })
        .collect())
}
