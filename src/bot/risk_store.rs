//! The risk manager's state in PostgreSQL (SPEC B5): `risk_state` (per account: loss
//! streak, cooldown, kill switch) and `risk_days` (per account and Seoul day: starting
//! equity, realised PnL, entries). The rules themselves are `domain::risk::RiskState`'s:
//! this module loads a `RiskState` from the rows, lets the domain decide, and writes back.
//!
//! Lock order, within a trading transaction: the paper account row (taken by the
//! executor) → `risk_state` → `risk_days`; the day rows a fill creates (`ensure_day`) are
//! inserted under the account lock too, and nothing takes a risk row before the account's.
//! Readers (decisions, reports) take no locks.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::history::last_close_before;
use super::BotError;
use crate::domain::candle::Market;
use crate::domain::money::Krw;
use crate::domain::risk::{seoul_day, seoul_day_bounds, RiskConfig, RiskState};
use crate::paper::AccountId;

/// Creates the account's state row if missing. No lock beyond the insert's.
const ENSURE_STATE: &str = "INSERT INTO risk_state (account_id, updated_at) VALUES ($1, $2) \
     ON CONFLICT (account_id) DO NOTHING";

/// Creates the day's row; whoever comes first wins (the job at 00:00 Seoul, a decision or a
/// fill), the others insert nothing. No lock beyond the primary key's.
const CREATE_DAY: &str = "INSERT INTO risk_days (account_id, day, day_start_equity, \
     created_by, created_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (account_id, day) DO NOTHING RETURNING day";

/// The state and the day together, no locks (decisions read it).
const LOAD: &str = "SELECT s.loss_streak, s.cooldown_until, s.halted, d.day_start_equity, \
     d.realized_pnl, d.entries FROM risk_state s JOIN risk_days d USING (account_id) \
     WHERE s.account_id = $1 AND d.day = $2";
/// The same, locking both rows (`risk_state`, then the day's `risk_days`) for a fill that
/// changes them; taken after the account lock, so fills of one account serialise there.
const LOAD_LOCKED: &str = "SELECT s.loss_streak, s.cooldown_until, s.halted, \
     d.day_start_equity, d.realized_pnl, d.entries FROM risk_state s JOIN risk_days d \
     USING (account_id) WHERE s.account_id = $1 AND d.day = $2 FOR UPDATE";

/// Writes back what the domain decided. Runs under `LOAD_LOCKED`'s row locks.
const SAVE_STATE: &str = "UPDATE risk_state SET loss_streak = $2, cooldown_until = $3, \
     cooldown_ended_announced = cooldown_ended_announced AND cooldown_until IS NOT DISTINCT FROM $3, \
     updated_at = $4 WHERE account_id = $1";
const SAVE_DAY: &str = "UPDATE risk_days SET realized_pnl = $3, entries = $4 \
     WHERE account_id = $1 AND day = $2";

/// The kill switch (`trading halt|resume`).
const SET_HALTED: &str = "UPDATE risk_state SET halted = $2, halted_reason = $3, updated_at = $4 \
     WHERE account_id = $1 AND halted IS DISTINCT FROM $2 RETURNING account_id";

/// Marks the daily loss limit announced; returns a row only the first time.
const ANNOUNCE_LOSS_LIMIT: &str = "UPDATE risk_days SET loss_limit_announced = true \
     WHERE account_id = $1 AND day = $2 AND NOT loss_limit_announced RETURNING day";

/// Marks the day's start announced; returns its starting equity only the first time.
const ANNOUNCE_DAY_START: &str = "UPDATE risk_days SET start_announced = true \
     WHERE account_id = $1 AND day = $2 AND NOT start_announced RETURNING day_start_equity";

/// Marks an ended cooldown announced; returns its end only the first time.
const ANNOUNCE_COOLDOWN_END: &str = "UPDATE risk_state SET cooldown_ended_announced = true \
     WHERE account_id = $1 AND cooldown_until IS NOT NULL AND cooldown_until <= $2 \
     AND NOT cooldown_ended_announced RETURNING cooldown_until";

type Row = (i32, Option<DateTime<Utc>>, bool, Decimal, Decimal, i32);

/// The day row of `at`'s Seoul day exists afterwards. Its starting equity is the balance
/// plus the open positions valued at the close of the last candle before the day began
/// (SPEC B8). Returns `Some(equity)` when this call created it.
pub async fn ensure_day(
    conn: &mut PgConnection,
    account: AccountId,
    at: DateTime<Utc>,
    created_by: &str,
    now: DateTime<Utc>,
) -> Result<Option<Krw>, BotError> {
    sqlx::query(ENSURE_STATE)
        .bind(account.0)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let day = seoul_day(at);
    if day_exists(conn, account, day).await? {
        return Ok(None);
    }
    let (start, _) = seoul_day_bounds(at);
    let equity = equity_before(conn, account, start).await?;
    let created: Option<NaiveDate> = sqlx::query_scalar(CREATE_DAY)
        .bind(account.0)
        .bind(day)
        .bind(equity.value())
        .bind(created_by)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(created.map(|_| equity))
}

async fn day_exists(
    conn: &mut PgConnection,
    account: AccountId,
    day: NaiveDate,
) -> Result<bool, BotError> {
    const EXISTS: &str =
        "SELECT EXISTS (SELECT 1 FROM risk_days WHERE account_id = $1 AND day = $2)";
    Ok(sqlx::query_scalar(EXISTS)
        .bind(account.0)
        .bind(day)
        .fetch_one(conn)
        .await?)
}

/// Balance + every open position at the last close before `start` (its cost when no
/// candle is stored yet).
pub async fn equity_before(
    conn: &mut PgConnection,
    account: AccountId,
    start: DateTime<Utc>,
) -> Result<Krw, BotError> {
    const POSITIONS: &str = "SELECT market, quantity, cost FROM positions WHERE account_id = $1";
    let mut equity = crate::paper::balance(conn, account).await?;
    let rows: Vec<(String, Decimal, Decimal)> = sqlx::query_as(POSITIONS)
        .bind(account.0)
        .fetch_all(&mut *conn)
        .await?;
    for (market, qty, cost) in rows {
        let market: Market = super::market_of(&market)?;
        equity += match last_close_before(conn, &market, start).await? {
            Some((_, close)) => Krw::new(qty * close),
            None => Krw::new(cost),
        };
    }
    Ok(equity)
}

/// The account's risk state on `at`'s Seoul day (the day row must exist: [`ensure_day`]).
pub async fn load(
    conn: &mut PgConnection,
    account: AccountId,
    at: DateTime<Utc>,
    lock: bool,
) -> Result<RiskState, BotError> {
    let (start, _) = seoul_day_bounds(at);
    let row: Option<Row> = sqlx::query_as(if lock { LOAD_LOCKED } else { LOAD })
        .bind(account.0)
        .bind(seoul_day(at))
        .fetch_optional(conn)
        .await?;
    let (streak, cooldown, halted, equity, pnl, entries) = row.ok_or_else(|| {
        BotError::Invalid(format!(
            "no risk row for account {} on {}",
            account.0,
            seoul_day(at)
        ))
    })?;
    let mut state = RiskState::new(start, Krw::new(equity));
    state.realized_pnl_today = Krw::new(pnl);
    state.entries_today = u32::try_from(entries).unwrap_or(0);
    state.loss_streak = u32::try_from(streak).unwrap_or(0);
    state.cooldown_until = cooldown;
    state.halted = halted;
    Ok(state)
}

async fn save(
    conn: &mut PgConnection,
    account: AccountId,
    state: &RiskState,
    now: DateTime<Utc>,
) -> Result<(), BotError> {
    let count =
        |n: u32| i32::try_from(n).map_err(|_| BotError::Invalid(format!("count {n} overflows")));
    sqlx::query(SAVE_STATE)
        .bind(account.0)
        .bind(count(state.loss_streak)?)
        .bind(state.cooldown_until)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query(SAVE_DAY)
        .bind(account.0)
        .bind(state.day)
        .bind(state.realized_pnl_today.value())
        .bind(count(state.entries_today)?)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// An entry filled at `fill_time`: it counts on the fill's day (SPEC B8).
pub async fn record_entry_fill(
    conn: &mut PgConnection,
    account: AccountId,
    fill_time: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), BotError> {
    let mut state = load(conn, account, fill_time, true).await?;
    state.record_entry_fill();
    save(conn, account, &state, now).await
}

/// What a closed trade changed.
#[derive(Debug, Clone, PartialEq)]
pub struct TradeEffects {
    pub cooldown_started: Option<DateTime<Utc>>,
    /// The daily loss limit is reached (announce it once: [`announce_loss_limit`]).
    pub loss_limit: Option<(Krw, Krw)>,
}

/// A trade closed with `pnl` at `exit_time`: its PnL counts on the exit fill's day, a loss
/// extends the streak and the third starts the cooldown (the domain's rule).
pub async fn record_trade(
    conn: &mut PgConnection,
    account: AccountId,
    pnl: Krw,
    exit_time: DateTime<Utc>,
    cfg: &RiskConfig,
    now: DateTime<Utc>,
) -> Result<TradeEffects, BotError> {
    let mut state = load(conn, account, exit_time, true).await?;
    let before = state.cooldown_until;
    state.record_trade(pnl, exit_time, cfg);
    save(conn, account, &state, now).await?;
    let limit = state.day_start_equity.times(cfg.daily_loss_limit);
    Ok(TradeEffects {
        cooldown_started: state.cooldown_until.filter(|u| Some(*u) != before),
        loss_limit: (state.realized_pnl_today <= -limit)
            .then_some((state.realized_pnl_today, limit)),
    })
}

/// Whether this call is the first to announce the day's loss limit.
pub async fn announce_loss_limit(
    conn: &mut PgConnection,
    account: AccountId,
    day: NaiveDate,
) -> Result<bool, BotError> {
    Ok(sqlx::query_scalar::<_, NaiveDate>(ANNOUNCE_LOSS_LIMIT)
        .bind(account.0)
        .bind(day)
        .fetch_optional(conn)
        .await?
        .is_some())
}

/// The day's starting equity if its start was not announced yet (marked announced now):
/// whoever created the row (the reset job, a decision, a fill), the reset job announces it.
pub async fn announce_day_start(
    conn: &mut PgConnection,
    account: AccountId,
    day: NaiveDate,
) -> Result<Option<Krw>, BotError> {
    let equity: Option<Decimal> = sqlx::query_scalar(ANNOUNCE_DAY_START)
        .bind(account.0)
        .bind(day)
        .fetch_optional(conn)
        .await?;
    Ok(equity.map(Krw::new))
}

/// Whether the 1-minute candle opening at `t` is stored or confirmed empty.
pub async fn candle_known(
    conn: &mut PgConnection,
    market: &Market,
    t: DateTime<Utc>,
) -> Result<bool, BotError> {
    const KNOWN: &str = "SELECT EXISTS (SELECT 1 FROM candles WHERE market = $1 \
         AND interval = '1m' AND open_time = $2) OR EXISTS (SELECT 1 FROM empty_minutes \
         WHERE market = $1 AND interval = '1m' AND open_time = $2)";
    Ok(sqlx::query_scalar(KNOWN)
        .bind(market.as_str())
        .bind(t)
        .fetch_one(conn)
        .await?)
}

/// The end of a cooldown that ended by `now` and was not announced yet (the "cooldown
/// reset" of SPEC B5), marked announced.
pub async fn announce_cooldown_end(
    conn: &mut PgConnection,
    account: AccountId,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, BotError> {
    Ok(sqlx::query_scalar(ANNOUNCE_COOLDOWN_END)
        .bind(account.0)
        .bind(now)
        .fetch_optional(conn)
        .await?)
}

/// Sets the kill switch; `true` if it changed.
pub async fn set_halted(
    conn: &mut PgConnection,
    account: AccountId,
    halted: bool,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool, BotError> {
    sqlx::query(ENSURE_STATE)
        .bind(account.0)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let changed: Option<i64> = sqlx::query_scalar(SET_HALTED)
        .bind(account.0)
        .bind(halted)
        .bind(reason)
        .bind(now)
        .fetch_optional(conn)
        .await?;
    Ok(changed.is_some())
}
