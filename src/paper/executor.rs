//! `buy` and `sell`: one order in the caller's transaction. Each takes the account lock, looks
//! for an earlier order under the same client order id (a retry: report it, change nothing),
//! takes the position lock, computes with `domain::portfolio`, and only then writes. A
//! refusal returns before the first write, so a refused order changes nothing.

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use sqlx::PgConnection;

use super::sql;
use super::{
    AccountId, BuyAmount, Executed, Execution, Fill, OrderRequest, PaperConfig, PaperError, Side,
};
use crate::domain::candle::Market;
use crate::domain::money::{Krw, Price, Qty};
use crate::domain::portfolio::{close_position, size_buy, BuyFill, ClosedTrade, Position};

/// An open position as stored: `cost` = Σ (quantity × fill + fee) of the buys it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPosition {
    pub quantity: Qty,
    pub avg_price: Price,
    pub entry_filled_at: DateTime<Utc>,
    pub fees: Krw,
    pub cost: Krw,
}

type PositionRow = (Decimal, Decimal, DateTime<Utc>, Decimal, Decimal);

impl OpenPosition {
    fn from_row(r: PositionRow) -> Result<Self, PaperError> {
        Ok(OpenPosition {
            quantity: Qty::new(r.0)?,
            avg_price: Price::new(r.1)?,
            entry_filled_at: r.2,
            fees: Krw::new(r.3),
            cost: Krw::new(r.4),
        })
    }
}

/// Buys `amount` at `req.fill_price`. A buy decided more than `cfg.buy_ttl` before `now` is
/// recorded as expired and not filled; one under the minimum or over the balance is refused.
pub async fn buy(
    conn: &mut PgConnection,
    req: &OrderRequest,
    amount: BuyAmount,
    now: DateTime<Utc>,
    cfg: &PaperConfig,
) -> Result<Executed, PaperError> {
    let balance = lock_account(conn, req.account).await?;
    if let Some(done) = find_earlier(conn, req, Side::Buy).await? {
        return Ok(done);
    }
    let (notional, quantity) = match amount {
        BuyAmount::Notional(n) => (Some(n.value()), None),
        BuyAmount::Quantity(q) => (None, Some(q.value())),
    };
    let record = OrderRow {
        side: Side::Buy,
        notional,
        quantity,
        now,
    };
    if now - req.decided_at > cfg.buy_ttl {
        if !insert_order(conn, req, &record, "expired").await? {
            return replay(conn, req, Side::Buy).await;
        }
        let client_order_id = req.client_order_id.clone();
        return Ok(fresh(Execution::Expired { client_order_id }));
    }
    let sized = size(amount, req.fill_price, balance, cfg)?;
    let held = lock_position(conn, req).await?;
    if !insert_order(conn, req, &record, "filled").await? {
        return replay(conn, req, Side::Buy).await;
    }
    let at = req.fill_time.unwrap_or(now);
    let position = add_to_position(held, &sized, at);
    write_position(conn, req, &position, now).await?;
    set_balance(conn, req.account, balance - sized.cost, now).await?;
    let fill = Fill {
        client_order_id: req.client_order_id.clone(),
        side: Side::Buy,
        price: sized.price,
        quantity: sized.qty,
        fee: sized.fee,
        filled_at: at,
    };
    insert_fill(conn, &fill).await?;
    Ok(fresh(Execution::Filled(fill)))
}

/// Sells `quantity` (the whole position when `None`) at `req.fill_price`. Exits never
/// expire. A sell larger than the position is refused; a full sell deletes the position;
/// every sell records the trade it closes (its share of the position's cost and fees).
pub async fn sell(
    conn: &mut PgConnection,
    req: &OrderRequest,
    quantity: Option<Qty>,
    now: DateTime<Utc>,
    cfg: &PaperConfig,
) -> Result<Executed, PaperError> {
    let balance = lock_account(conn, req.account).await?;
    if let Some(done) = find_earlier(conn, req, Side::Sell).await? {
        return Ok(done);
    }
    let held = lock_position(conn, req)
        .await?
        .ok_or_else(|| PaperError::NoPosition(req.market.to_string()))?;
    let qty = match quantity {
        Some(q) => round_qty(q, cfg)?,
        None => held.quantity,
    };
    if qty > held.quantity {
        return Err(PaperError::SellExceedsPosition {
            market: req.market.to_string(),
            requested: qty,
            held: held.quantity,
        });
    }
    let record = OrderRow {
        side: Side::Sell,
        notional: None,
        quantity: Some(qty.value()),
        now,
    };
    if !insert_order(conn, req, &record, "filled").await? {
        return replay(conn, req, Side::Sell).await;
    }
    let (sold, rest) = split_position(&held, qty)?;
    let at = req.fill_time.unwrap_or(now);
    let trade = close_position(&sold, req.fill_price, at, &cfg.orders);
    match rest {
        Some(rest) => write_position(conn, req, &rest, now).await?,
        None => delete_position(conn, req).await?,
    }
    set_balance(conn, req.account, balance + trade.proceeds, now).await?;
    let fill = Fill {
        client_order_id: req.client_order_id.clone(),
        side: Side::Sell,
        price: req.fill_price,
        quantity: qty,
        fee: trade.exit_fee,
        filled_at: at,
    };
    insert_fill(conn, &fill).await?;
    insert_trade(conn, req, &trade).await?;
    Ok(fresh(Execution::Filled(fill)))
}

/// The open position of `account` in `market` (no lock: for reports and tests).
pub async fn position(
    conn: &mut PgConnection,
    account: AccountId,
    market: &Market,
) -> Result<Option<OpenPosition>, PaperError> {
    let row: Option<PositionRow> = sqlx::query_as(sql::POSITION)
        .bind(account.0)
        .bind(market.as_str())
        .fetch_optional(conn)
        .await?;
    row.map(OpenPosition::from_row).transpose()
}

fn fresh(execution: Execution) -> Executed {
    Executed {
        execution,
        replayed: false,
    }
}

fn round_qty(q: Qty, cfg: &PaperConfig) -> Result<Qty, PaperError> {
    let scale = cfg.orders.qty_decimals;
    let rounded = Qty::new(
        q.value()
            .round_dp_with_strategy(scale, RoundingStrategy::ToZero),
    )?;
    if rounded.is_zero() {
        return Err(PaperError::ZeroQuantity(scale));
    }
    Ok(rounded)
}

/// Sizes a buy with the domain arithmetic. A quantity is rounded down to 8 decimals and
/// priced as the notional quantity × fill, which `size_buy` divides back to that quantity
/// exactly (both are short decimals), so both forms share one set of rules.
fn size(
    amount: BuyAmount,
    fill: Price,
    balance: Krw,
    cfg: &PaperConfig,
) -> Result<BuyFill, PaperError> {
    let notional = match amount {
        BuyAmount::Notional(n) => n,
        BuyAmount::Quantity(q) => round_qty(q, cfg)? * fill,
    };
    let sized = size_buy(notional, fill, balance, &cfg.orders)?;
    if sized.qty.is_zero() {
        return Err(PaperError::ZeroQuantity(cfg.orders.qty_decimals));
    }
    Ok(sized)
}

/// The position after a buy: quantities, costs and fees add up; the average price is the
/// quantity-weighted fill price, Σ(q × fill) / Σq, with fees kept apart; the entry time
/// stays the first fill's (it names the exit order).
fn add_to_position(held: Option<OpenPosition>, b: &BuyFill, now: DateTime<Utc>) -> OpenPosition {
    let (quantity, fees, cost, entry) = match held {
        Some(h) => (
            h.quantity.value() + b.qty.value(),
            h.fees + b.fee,
            h.cost + b.cost,
            h.entry_filled_at,
        ),
        None => (b.qty.value(), b.fee, b.cost, now),
    };
    let avg = (cost - fees).value() / quantity;
    OpenPosition {
        // Both are sums of positives, so the constructors' rules hold.
        quantity: Qty::new(quantity).unwrap_or(b.qty),
        avg_price: Price::new(avg).unwrap_or(b.price),
        entry_filled_at: entry,
        fees,
        cost,
    }
}

/// The decimals a sold part's share of cost and fees is rounded to (a trillionth of a
/// won). A share computed to `Decimal`'s full 28 digits made cost − share need more digits
/// than a `Decimal` holds, so the remainder was rounded and the parts missed the whole by
/// ~1e-26 (`chaos_paper`, once its ledger check was done in exact `numeric`). Rounded,
/// cost − share is exact.
const SHARE_DP: u32 = 12;

/// Splits the held position into the part sold (with its pro-rata share of cost and fees,
/// to [`SHARE_DP`] decimals) and what remains (`None` for a full sell). The remainder gets
/// cost − share, so the sum of the parts is the whole to the last digit.
fn split_position(
    held: &OpenPosition,
    qty: Qty,
) -> Result<(Position, Option<OpenPosition>), PaperError> {
    let sold = |cost: Krw, fees: Krw| Position {
        qty,
        entry_price: held.avg_price,
        entry_time: held.entry_filled_at,
        entry_fee: fees,
        cost,
    };
    if qty == held.quantity {
        return Ok((sold(held.cost, held.fees), None));
    }
    let share = qty.value() / held.quantity.value();
    let part = |whole: Krw| Krw::new(whole.times(share).value().round_dp(SHARE_DP));
    let (cost, fees) = (part(held.cost), part(held.fees));
    let rest = OpenPosition {
        quantity: Qty::new(held.quantity.value() - qty.value())?,
        avg_price: held.avg_price,
        entry_filled_at: held.entry_filled_at,
        fees: held.fees - fees,
        cost: held.cost - cost,
    };
    Ok((sold(cost, fees), Some(rest)))
}

async fn lock_account(conn: &mut PgConnection, account: AccountId) -> Result<Krw, PaperError> {
    let b: Option<Decimal> = sqlx::query_scalar(sql::LOCK_ACCOUNT)
        .bind(account.0)
        .fetch_optional(conn)
        .await?;
    b.map(Krw::new).ok_or(PaperError::NoAccount(account.0))
}

async fn lock_position(
    conn: &mut PgConnection,
    req: &OrderRequest,
) -> Result<Option<OpenPosition>, PaperError> {
    let row: Option<PositionRow> = sqlx::query_as(sql::LOCK_POSITION)
        .bind(req.account.0)
        .bind(req.market.as_str())
        .fetch_optional(conn)
        .await?;
    row.map(OpenPosition::from_row).transpose()
}

type OrderFound = (
    i64,
    String,
    String,
    String,
    Option<Decimal>,
    Option<Decimal>,
    Option<Decimal>,
    Option<DateTime<Utc>>,
);

/// The earlier execution under this client order id, if any. The same id for a different
/// account, market or side is a caller bug, reported rather than hidden.
async fn find_earlier(
    conn: &mut PgConnection,
    req: &OrderRequest,
    side: Side,
) -> Result<Option<Executed>, PaperError> {
    let row: Option<OrderFound> = sqlx::query_as(sql::FIND_ORDER)
        .bind(&req.client_order_id)
        .fetch_optional(conn)
        .await?;
    let Some((account, market, stored_side, state, price, qty, fee, at)) = row else {
        return Ok(None);
    };
    let reused = || PaperError::ClientOrderIdReused(req.client_order_id.clone());
    if account != req.account.0 || market != req.market.as_str() || stored_side != side.as_str() {
        return Err(reused());
    }
    let client_order_id = req.client_order_id.clone();
    let execution = match (state.as_str(), price, qty, fee, at) {
        ("expired", ..) => Execution::Expired { client_order_id },
        ("filled", Some(price), Some(qty), Some(fee), Some(filled_at)) => Execution::Filled(Fill {
            client_order_id,
            side,
            price: Price::new(price)?,
            quantity: Qty::new(qty)?,
            fee: Krw::new(fee),
            filled_at,
        }),
        _ => return Err(reused()),
    };
    Ok(Some(Executed {
        execution,
        replayed: true,
    }))
}

/// A concurrent twin committed first (our insert found the id taken): report its result.
async fn replay(
    conn: &mut PgConnection,
    req: &OrderRequest,
    side: Side,
) -> Result<Executed, PaperError> {
    find_earlier(conn, req, side)
        .await?
        .ok_or_else(|| PaperError::ClientOrderIdReused(req.client_order_id.clone()))
}

struct OrderRow {
    side: Side,
    notional: Option<Decimal>,
    quantity: Option<Decimal>,
    now: DateTime<Utc>,
}

/// Records the order; false when the client order id is already taken.
async fn insert_order(
    conn: &mut PgConnection,
    req: &OrderRequest,
    o: &OrderRow,
    state: &str,
) -> Result<bool, PaperError> {
    let inserted: Option<String> = sqlx::query_scalar(sql::INSERT_ORDER)
        .bind(&req.client_order_id)
        .bind(req.account.0)
        .bind(req.market.as_str())
        .bind(o.side.as_str())
        .bind(o.notional)
        .bind(o.quantity)
        .bind(state)
        .bind(req.decided_at)
        .bind(o.now)
        .bind(req.reason.as_deref())
        .fetch_optional(conn)
        .await?;
    Ok(inserted.is_some())
}

async fn insert_fill(conn: &mut PgConnection, f: &Fill) -> Result<(), PaperError> {
    sqlx::query(sql::INSERT_FILL)
        .bind(&f.client_order_id)
        .bind(f.price.value())
        .bind(f.quantity.value())
        .bind(f.fee.value())
        .bind(f.filled_at)
        .execute(conn)
        .await?;
    Ok(())
}

async fn set_balance(
    conn: &mut PgConnection,
    account: AccountId,
    balance: Krw,
    now: DateTime<Utc>,
) -> Result<(), PaperError> {
    sqlx::query(sql::SET_BALANCE)
        .bind(account.0)
        .bind(balance.value())
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

async fn write_position(
    conn: &mut PgConnection,
    req: &OrderRequest,
    p: &OpenPosition,
    now: DateTime<Utc>,
) -> Result<(), PaperError> {
    sqlx::query(sql::UPSERT_POSITION)
        .bind(req.account.0)
        .bind(req.market.as_str())
        .bind(p.quantity.value())
        .bind(p.avg_price.value())
        .bind(p.entry_filled_at)
        .bind(p.fees.value())
        .bind(p.cost.value())
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

async fn delete_position(conn: &mut PgConnection, req: &OrderRequest) -> Result<(), PaperError> {
    sqlx::query(sql::DELETE_POSITION)
        .bind(req.account.0)
        .bind(req.market.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

async fn insert_trade(
    conn: &mut PgConnection,
    req: &OrderRequest,
    t: &ClosedTrade,
) -> Result<(), PaperError> {
    sqlx::query(sql::INSERT_TRADE)
        .bind(&req.client_order_id)
        .bind(req.account.0)
        .bind(req.market.as_str())
        .bind(t.entry_time)
        .bind(t.entry_price.value())
        .bind(t.exit_time)
        .bind(t.exit_price.value())
        .bind(t.qty.value())
        .bind(t.entry_fee.value())
        .bind(t.exit_fee.value())
        .bind(t.cost.value())
        .bind(t.proceeds.value())
        .bind(t.pnl.value())
        .bind(req.reason.as_deref().unwrap_or("exit"))
        .execute(conn)
        .await?;
    Ok(())
}
